#!/bin/sh
# Counts too large for memory: every option that sizes a buffer, given 2^60, 2^63 and 2^64 - 1,
# ends with exit 1 or 2 and a message on stderr naming the option or the size — never a crash
# signal (an n * 2 * sizeof(double) that wraps to a small buffer overflows it) nor a hang or an
# attempt to allocate terabytes. Usage: test_cli_sizes.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$cnf" train --data 8gaussians --iters 2 --hidden 4 --solver rk4 --steps 2 --test-n 50 \
  --batch 16 --out "$tmp/m.safetensors" > /dev/null || fail "training the tiny model"

# expect WORD COMMAND...: exit 1 or 2 within 60 s, WORD (the option or the size) on stderr.
expect() {
  word="$1"
  shift
  set +e
  timeout 60 "$cnf" "$@" > "$tmp/out" 2> "$tmp/err"
  rc=$?
  set -e
  [ "$rc" -ne 124 ] || fail "cnf $*: still running after 60 s"
  [ "$rc" -lt 128 ] || fail "cnf $*: killed by signal $((rc - 128)): $(cat "$tmp/err")"
  [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ] || fail "cnf $*: exit $rc, not 1 or 2"
  grep -q -e "$word" "$tmp/err" || fail "cnf $*: stderr does not name $word: $(cat "$tmp/err")"
}

m="$tmp/m.safetensors"
for n in 1152921504606846976 9223372036854775808 18446744073709551615; do
  expect "-n $n" eval --model "$m" --data 8gaussians -n "$n"
  expect "-n $n" plot --model "$m" --data 8gaussians -n "$n" --out "$tmp/p.png"
  expect "-n $n" sample --model "$m" -n "$n" --out "$tmp/s.csv"
  expect "-n $n" solvers --model "$m" --data 8gaussians -n "$n"
  expect "--test-n $n" train --data 8gaussians --iters 2 --hidden 4 --test-n "$n"
  expect "--batch $n" train --data 8gaussians --iters 2 --hidden 4 --batch "$n"
  # Architecture sizes reach the library, which names what it could not allocate.
  expect "MLP widths" train --data 8gaussians --iters 2 --hidden "4-$n"
  expect "$n blocks" train --data 8gaussians --iters 2 --hidden 4 --blocks "$n"
  expect "$n flow steps" train --data 8gaussians --iters 2 --model maf --hidden 4 --layers "$n"
  expect "$n repeats" bench --quick --cases rhs --repeats "$n"
done
# Addressable but more than the machine's memory (2^40 points: 16 TB): refused before allocating.
expect "memory" eval --model "$m" --data 8gaussians -n 1099511627776
expect "memory" train --data 8gaussians --iters 2 --hidden 4 --test-n 1099511627776
[ ! -e "$tmp/p.png" ] && [ ! -e "$tmp/s.csv" ] || fail "an output file was written"
echo "every huge count refused with a message"
