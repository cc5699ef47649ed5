#!/bin/sh
# `cnf gradcheck`: the four gradients of three small CNFs agree with finite differences to 1e-6
# with the default tolerances (the CVODES adjoint included) and the command exits 0; it exits 1,
# naming the method and its figure, when a gradient is further off than its threshold (forced
# with a tiny --tol and with an absurd finite-difference step); sizes that cannot be addressed
# exit 2 with a message instead of crashing. Usage: test_gradcheck_cli.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$cnf" gradcheck --help > "$tmp/help" || fail "--help exit status"
for word in --tol "Exit status" "1e-6" backprop adjoint cvodes backsolve; do
  grep -q -- "$word" "$tmp/help" || fail "--help does not mention $word"
done

# The three configurations, default batch, directions and tolerances: exit 0, every figure
# present and <= 1e-6.
for cfg in "--dim 2 --act tanh --time concatsquash --trace exact" \
           "--dim 5 --act softplus --time concat --trace hutchinson-rademacher" \
           "--dim 3 --act tanh --time concatsquash --trace hutchinson-gauss"; do
  # shellcheck disable=SC2086
  "$cnf" gradcheck --seed 7 --json $cfg > "$tmp/out" 2> "$tmp/err" \
    || fail "gradcheck $cfg exited non-zero: $(cat "$tmp/err")"
  python3 - "$tmp/out" "$cfg" <<'PY' || fail "gradcheck $cfg figures"
import json, sys
v = json.loads(open(sys.argv[1]).read().splitlines()[-1])
keys = ("backprop_vs_fd", "adjoint_vs_fd", "cvodes_vs_fd", "backsolve_vs_fd")
bad = {k: v.get(k) for k in keys if v.get(k) is None or not v[k] <= 1e-6}
assert not bad, (sys.argv[2], bad)
print(sys.argv[2], "ok:", v)
PY
done

# Forced failures: exit 1 and stderr naming the method and its figure.
expect_exit() { # status, pattern, args...
  want="$1"; pattern="$2"; shift 2
  set +e; "$cnf" gradcheck "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?; set -e
  [ "$rc" -eq "$want" ] || fail "'$*' exited $rc, not $want: $(cat "$tmp/err")"
  grep -q -- "$pattern" "$tmp/err" || fail "'$*': stderr lacks '$pattern': $(cat "$tmp/err")"
}
expect_exit 1 "cvodes gradient (cvode-adams) differs from finite differences by [0-9.e+-]* (max rel diff), above its threshold 1e-15" \
  --seed 7 --tol 1e-15
expect_exit 1 "backprop gradient (dopri5) differs .* above its threshold 1e-06" --seed 7 --fd-step 0.5
expect_exit 1 "backprop gradient differs .* above its threshold 1e-15" --model planar --tol 1e-15
# The JSON line is still the last line of stdout when the check fails.
"$cnf" gradcheck --seed 7 --tol 1e-15 --json 2> /dev/null | tail -n 1 | grep -q '"cvodes_vs_fd":' \
  || fail "no JSON line on a failed check"

# Bad options and sizes that cannot be addressed: exit 2 with a message.
expect_exit 2 "too large to address" --batch 1152921504606846976
expect_exit 2 "too many to address" --directions 1152921504606846976
expect_exit 2 "too large to address" --model planar --batch 1152921504606846976
expect_exit 2 "too many to address" --model planar --directions 1152921504606846976
expect_exit 2 "--tol >= 0" --tol -1
echo "cnf gradcheck CLI ok"
