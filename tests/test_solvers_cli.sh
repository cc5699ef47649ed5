#!/bin/sh
# Issue 3, point 6: `cnf solvers` prints the JSON array as the last line of stdout, documents
# every option in --help, and rejects bad options with exit status 2 and a message naming the
# valid choices. Usage: test_solvers_cli.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$cnf" solvers --help > "$tmp/help" || fail "--help exit status"
for word in --problem --methods --steps --tols --atol --json --help linear rotation sin1d gaussian \
    robertson euler midpoint rk4 bosh3 dopri5 tsit5 cvode-adams cvode-bdf; do
  grep -q -- "$word" "$tmp/help" || fail "--help does not mention $word"
done

# Check the last stdout line: a JSON array with one object per run and the documented keys.
check_json() { # file, expected number of runs, methods that must have finite errors
  python3 - "$@" <<'PY'
import json, math, sys
path, n_expected, need = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
runs = json.loads(open(path).read().splitlines()[-1])
assert isinstance(runs, list) and len(runs) == n_expected, (len(runs), n_expected)
for r in runs:
    assert ("steps" in r) != ("rtol" in r), r
    for k in ("method", "nfe", "accepted", "rejected", "seconds", "error"):
        assert k in r, (k, r)
    assert r["nfe"] >= r["accepted"] > 0 or "status" in r, r
    assert (r["error"] is None) == ("status" in r), r
for m in need:
    errs = [r["error"] for r in runs if r["method"] == m]
    assert errs and all(e is not None and math.isfinite(e) for e in errs), (m, errs)
print(path, "ok:", len(runs), "runs")
PY
}

"$cnf" solvers --problem linear --json > "$tmp/linear" || fail "linear exit status"
check_json "$tmp/linear" 27 euler,midpoint,rk4,bosh3,dopri5,tsit5,cvode-adams,cvode-bdf \
  || fail "linear JSON"
"$cnf" solvers --problem robertson --json > "$tmp/rob" || fail "robertson exit status"
check_json "$tmp/rob" 27 cvode-bdf || fail "robertson JSON"
"$cnf" solvers --problem gaussian --methods rk4,tsit5 --steps 8,16 --tols=1e-5 --json \
  > "$tmp/gauss" || fail "gaussian exit status"
check_json "$tmp/gauss" 3 rk4,tsit5 || fail "gaussian JSON"
tail -n 1 "$tmp/gauss" | grep -q '"error_logp"' || fail "gaussian JSON lacks error_logp"
"$cnf" solvers --problem robertson --methods cvode-bdf,dopri5 --tols 1e-6 --atol 1e-10 --json \
  > "$tmp/rob2" || fail "robertson --atol exit status"
check_json "$tmp/rob2" 2 cvode-bdf,dopri5 || fail "robertson --atol JSON"
tail -n 1 "$tmp/rob2" | grep -q '"atol":1e-10' || fail "robertson JSON lacks atol"

# Bad input: exit status 2 and a message on stderr (naming the valid choices where there are).
expect_usage_error() { # pattern, args...
  pattern="$1"; shift
  set +e; "$cnf" solvers "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?; set -e
  [ "$rc" -eq 2 ] || fail "'$*' exited $rc, not 2"
  grep -q -- "$pattern" "$tmp/err" || fail "'$*': stderr lacks '$pattern': $(cat "$tmp/err")"
}
expect_usage_error "sin1d" --problem nope
expect_usage_error "cvode-bdf" --methods rk4,rk45
expect_usage_error "positive integer" --steps 16,0
expect_usage_error "not a finite number" --tols 1e-3,abc
expect_usage_error "empty item" --tols 1e-3,,1e-6
expect_usage_error "positive tolerance" --tols -1e-3
expect_usage_error "unknown option" --bogus
expect_usage_error "needs a value" --problem
expect_usage_error "one positive number" --atol 1e-9,1e-8

# --model: a tiny trained flow; cvode-bdf (with the flow's J·v) solves it, and a point count that
# cannot be addressed exits 2 with a message instead of crashing.
"$cnf" train --data 8gaussians --iters 2 --hidden 4 --batch 16 --test-n 16 \
  --out "$tmp/m.safetensors" > /dev/null || fail "training the tiny model"
"$cnf" solvers --model "$tmp/m.safetensors" --data 8gaussians -n 20 --methods cvode-bdf,dopri5 \
  --json > "$tmp/model" || fail "--model exit status"
check_json "$tmp/model" 6 cvode-bdf,dopri5 || fail "--model JSON"
set +e
"$cnf" solvers --model "$tmp/m.safetensors" --data 8gaussians -n 1152921504606846976 \
  > "$tmp/out" 2> "$tmp/err"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "huge -n exited $rc, not 2"
grep -q -- "-n 1152921504606846976 is too large" "$tmp/err" || fail "huge -n: $(cat "$tmp/err")"
echo "cnf solvers CLI ok"
