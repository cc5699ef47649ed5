#!/bin/sh
# cnf train when things go wrong: a diverging run, SIGINT / SIGTERM, --save-every, --resume with
# changed options, output paths that cannot be written. After each, an existing --out is either
# the old file byte for byte or a complete new one that `cnf eval` loads, and no temporary file
# is left. Usage: test_cli_robust.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
small="--hidden 8-8 --solver rk4 --steps 4 --test-n 200 --batch 32 --seed 3"
meta() { # file key: the metadata value
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
print(json.loads(b[8:8 + n])["__metadata__"].get(sys.argv[2], ""))
PY
}
json_field() { # output-file key
  python3 -c 'import json,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(o[sys.argv[2]])' "$1" "$2"
}
no_temp_files() {
  if ls -a "$tmp" | grep -q '\.tmp\.'; then fail "temporary file left: $(ls -a "$tmp")"; fi
}
expect() { # expected status, words the message must contain, command...
  want=$1; words=$2; shift 2
  set +e; "$@" > "$tmp/o" 2> "$tmp/e"; got=$?; set -e
  [ "$got" -eq "$want" ] || fail "$* exited $got, not $want: $(cat "$tmp/e")"
  for w in $words; do grep -q -- "$w" "$tmp/e" || fail "$*: message lacks '$w': $(cat "$tmp/e")"; done
}

# A base model to resume and to overwrite.
"$cnf" train --data moons --iters 10 $small --val-every 5 --out "$tmp/m.safetensors" > /dev/null \
  || fail "base run"
cp "$tmp/m.safetensors" "$tmp/m.orig"

# 1. A diverging run (learning rate far too large): non-zero exit, the JSON line with status
# "diverged", and --out replaced by a complete model of its last good parameters.
cp "$tmp/m.orig" "$tmp/d.safetensors"
set +e
"$cnf" train --data 8gaussians --iters 30 --lr 100 --json --out "$tmp/d.safetensors" \
  > "$tmp/div" 2> "$tmp/div.err"
st=$?
set -e
[ "$st" -eq 1 ] || fail "diverging run exited $st"
grep -q "diverged at iteration 1" "$tmp/div.err" || fail "no named error: $(cat "$tmp/div.err")"
grep -q "learning rate" "$tmp/div.err" || fail "no advice: $(cat "$tmp/div.err")"
[ "$(json_field "$tmp/div" status)" = diverged ] || fail "status: $(tail -1 "$tmp/div")"
[ "$(meta "$tmp/d.safetensors" train.status)" = diverged ] || fail "metadata train.status"
meta "$tmp/d.safetensors" train.stop_reason | grep -q "iteration 1" || fail "metadata reason"
"$cnf" eval --model "$tmp/d.safetensors" --data 8gaussians -n 100 > /dev/null \
  || fail "the saved last good model does not load"
no_temp_files

# 2. SIGINT during training: the iteration finishes, --out is saved, exit 130, the file loads.
# The run is long enough to be interrupted; the signal goes after its first log line.
interrupt() { # signal, output file, then the train arguments
  sig=$1; out=$2; shift 2
  "$cnf" train "$@" > "$out" 2> "$out.err" &
  pid=$!
  pids="$pids $pid"
  i=0
  until grep -q '^iter' "$out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 600 ] || fail "no log line from the run to interrupt"; sleep 0.05
  done
  kill -s "$sig" "$pid"
  [ $# -eq 0 ] || true
}
running() { # pid: still running (not yet exited: a zombie has exited)
  [ -e "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
wait_for() { # pid: its exit status into $st, failing after ~60 s
  i=0
  while running "$1"; do
    i=$((i + 1)); [ $i -lt 1200 ] || fail "run $1 did not stop after a signal"; sleep 0.05
  done
  set +e; wait "$1"; st=$?; set -e
}
long="--data moons --iters 100000000 $small --val-every 0 --log-every 1"
cp "$tmp/m.orig" "$tmp/i.safetensors"
interrupt INT "$tmp/int" $long --out "$tmp/i.safetensors" --json
wait_for "$pid"
[ "$st" -eq 130 ] || fail "SIGINT: exit $st, not 130: $(cat "$tmp/int.err")"
[ "$(json_field "$tmp/int" status)" = interrupted ] || fail "SIGINT status: $(tail -1 "$tmp/int")"
[ "$(meta "$tmp/i.safetensors" train.status)" = interrupted ] || fail "SIGINT metadata"
"$cnf" eval --model "$tmp/i.safetensors" --data moons -n 100 > /dev/null || fail "SIGINT model"
it=$(meta "$tmp/i.safetensors" train.iter)
[ "$it" -ge 1 ] || fail "SIGINT saved iteration $it"
# ... and it resumes from there.
"$cnf" train --resume "$tmp/i.safetensors" --iters $((it + 2)) > /dev/null || fail "resume after SIGINT"
no_temp_files

# SIGTERM does the same.
interrupt TERM "$tmp/term" $long --out "$tmp/t.safetensors"
wait_for "$pid"
[ "$st" -eq 130 ] || fail "SIGTERM: exit $st"
"$cnf" eval --model "$tmp/t.safetensors" --data moons -n 100 > /dev/null || fail "SIGTERM model"

# A second signal exits at once: the earlier file is the old one byte for byte, or a complete
# new one; no temporary file either way.
cp "$tmp/m.orig" "$tmp/two.safetensors"
interrupt INT "$tmp/two" $long --out "$tmp/two.safetensors"
kill -s INT "$pid" 2>/dev/null || true
wait_for "$pid"
[ "$st" -eq 130 ] || fail "two signals: exit $st"
cmp -s "$tmp/two.safetensors" "$tmp/m.orig" \
  || "$cnf" eval --model "$tmp/two.safetensors" --data moons -n 100 > /dev/null \
  || fail "two signals: --out is neither the old file nor a complete new one"
no_temp_files

# A second signal that comes while the model is being written (a large one, so the write takes
# a while) waits for the write to finish, whichever thread receives it: with helper threads in
# the MLP's pool the signal may go to one of them, where a blocked mask on the writer did not
# hold it off and the temporary file was left behind.
mkdir "$tmp/w"
CNF_NUM_THREADS=3 "$cnf" train --data moons --iters 100000000 --hidden 1200-1200-1200 --solver rk4 \
  --steps 1 --test-n 20 --batch 16 --val-every 0 --log-every 1 --out "$tmp/w/big.safetensors" \
  > "$tmp/w.out" 2>&1 &
pid=$!
pids="$pids $pid"
i=0
until grep -q '^iter' "$tmp/w.out" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 1200 ] || fail "no log line from the large run"; sleep 0.05
done
kill -s INT "$pid"
i=0
until ls -a "$tmp/w" | grep -q '\.tmp\.'; do
  i=$((i + 1)); [ $i -lt 3000 ] || fail "the large run's write never started"; sleep 0.01
done
kill -s INT "$pid"
wait_for "$pid"
[ "$st" -eq 130 ] || fail "second signal during the write: exit $st"
if ls -a "$tmp/w" | grep -q '\.tmp\.'; then fail "second signal during the write left its temporary file"; fi
[ "$(meta "$tmp/w/big.safetensors" train.status)" = interrupted ] \
  || fail "second signal during the write: the model file is not complete"

# --plot-every with reverse KL draws the target's picture (there is no data set to sample).
"$cnf" train --objective reverse-kl --target banana --hidden 8-8 --solver rk4 --steps 4 \
  --test-n 200 --plot "$tmp/rk.png" --plot-every 2 --iters 4 > /dev/null 2> "$tmp/rk.err" \
  || fail "reverse-kl --plot-every: $(cat "$tmp/rk.err")"
[ -s "$tmp/rk.png" ] || fail "reverse-kl --plot-every wrote no picture"

# 3. --save-every: a run killed outright (SIGKILL, nothing to catch) leaves its last checkpoint.
# It is done in a directory of its own: a SIGKILL during a write can leave the writer's
# temporary file (never a partial checkpoint), which no process can clean up.
mkdir "$tmp/k"
"$cnf" train $long --save-every 3 --out "$tmp/k/ck.safetensors" > "$tmp/ck" 2>&1 &
pid=$!
pids="$pids $pid"
i=0
until grep -q '^iter 7/' "$tmp/ck" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 1200 ] || fail "--save-every run made no progress"; sleep 0.05
done
kill -9 "$pid"
wait_for "$pid"
it=$(meta "$tmp/k/ck.safetensors" train.iter)
[ "$it" -ge 6 ] && [ $((it % 3)) -eq 0 ] || fail "--save-every checkpoint at iteration $it"
"$cnf" eval --model "$tmp/k/ck.safetensors" --data moons -n 100 > /dev/null || fail "checkpoint"
expect 2 "--save-every" "$cnf" train --data moons --iters 5 --save-every 2

# --max-seconds ends a run as planned: exit 0, status "time_limit", validated at the stop.
"$cnf" train --data moons --iters 100000000 $small --max-seconds 0.3 --json > "$tmp/tl" \
  || fail "--max-seconds exit status"
[ "$(json_field "$tmp/tl" status)" = time_limit ] || fail "time limit: $(tail -1 "$tmp/tl")"
[ "$(json_field "$tmp/tl" test_nll)" != None ] || fail "no validation at the time limit"

# 4. --resume applies the run-time options it is given and says so: RK4 with 3 steps is 12
# field evaluations per solve (the base model trained with 4 steps: 16).
"$cnf" train --resume "$tmp/m.safetensors" --iters 12 --solver rk4 --steps 3 --json \
  > "$tmp/res" || fail "resume --solver rk4 --steps 3"
grep -q "applied --solver rk4, --steps 3" "$tmp/res" || fail "banner: $(head -2 "$tmp/res")"
[ "$(json_field "$tmp/res" nfe_forward)" = 12.0 ] || [ "$(json_field "$tmp/res" nfe_forward)" = 12 ] \
  || fail "resumed NFE $(json_field "$tmp/res" nfe_forward), not 12"
"$cnf" train --resume "$tmp/m.safetensors" --iters 12 --solver dopri5 --json > "$tmp/res2" \
  || fail "resume --solver dopri5"
[ "$(json_field "$tmp/res2" nfe_forward)" != 16.0 ] || fail "--solver dopri5 not applied"
# ... refuses architecture changes, naming them, and leaves --out alone.
cp "$tmp/m.orig" "$tmp/keep.safetensors"
expect 2 "--hidden 16-16 --act" "$cnf" train --resume "$tmp/m.safetensors" --iters 20 \
  --hidden 16-16 --act softplus --out "$tmp/keep.safetensors"
expect 2 "--blocks" "$cnf" train --resume "$tmp/m.safetensors" --iters 20 --blocks 2
# ... and fewer (or as many) total iterations than the checkpoint has.
expect 2 "iteration 10" "$cnf" train --resume "$tmp/m.safetensors" --iters 5 \
  --out "$tmp/keep.safetensors"
expect 2 "iteration 10" "$cnf" train --resume "$tmp/m.safetensors" --iters 10
grep -q "0.0000" "$tmp/o" && fail "a refused resume printed figures"
cmp "$tmp/keep.safetensors" "$tmp/m.orig" || fail "a refused run touched --out"

# 5. Output paths are checked before any work: nothing trained, nothing created.
expect 2 "/nonexistent/dir" "$cnf" train --data 8gaussians --out /nonexistent/dir/m.safetensors
grep -q '^iter' "$tmp/o" && fail "trained before finding the bad --out"
expect 2 "--plot" "$cnf" train --data 8gaussians --plot /nonexistent/p.png
expect 2 "directory" "$cnf" train --data 8gaussians --out "$tmp"
expect 2 "--out" "$cnf" sample --model "$tmp/m.safetensors" --out /nonexistent/s.csv
expect 2 "--out" "$cnf" plot --model "$tmp/m.safetensors" --data moons --out /nonexistent/p.png
printf 'a,b\n1,2\n3,4\n5,6\n' > "$tmp/rows.csv"
expect 2 "--scores" "$cnf" eval --model "$tmp/m.safetensors" --data "$tmp/rows.csv" \
  --scores /nonexistent/s.csv

# 6. Flow matching holds T fixed at 1 by default and refuses a trained T.
"$cnf" train --objective flow-matching --data moons --iters 3 --hidden 8-8 --batch 32 \
  --test-n 100 --out "$tmp/fm.safetensors" > /dev/null || fail "flow matching"
[ "$(meta "$tmp/fm.safetensors" user.T)" = 1 ] && [ "$(meta "$tmp/fm.safetensors" user.train-T)" = 0 ] \
  || fail "flow matching T: $(meta "$tmp/fm.safetensors" user.T) $(meta "$tmp/fm.safetensors" user.train-T)"
expect 2 "train-T" "$cnf" train --objective flow-matching --data moons --train-T
expect 2 "fixed T" "$cnf" train --objective flow-matching --resume "$tmp/m.safetensors" --iters 20

no_temp_files
echo "cli robustness: all checks passed"
