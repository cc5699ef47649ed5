#!/bin/sh
# The model commands end to end on a tiny model: train with --out/--plot/--json, resume
# bit-identically, eval/sample/plot a saved model, gradcheck --json, and clear errors with a
# non-zero exit for bad input. Usage: test_cli_train.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
small="--hidden 8-8 --solver rk4 --steps 4 --test-n 200 --batch 32 --val-every 10 --seed 3"

# Train, with the JSON summary as the last line.
"$cnf" train --data moons --iters 20 $small --out "$tmp/full.safetensors" \
  --plot "$tmp/p.png" --json > "$tmp/out" || fail "train exit status"
python3 - "$tmp/out" <<'PY'
import json, math, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
for k in ("iters", "seconds", "train_loss", "test_nll", "nfe_forward", "nfe_backward"):
    assert k in o, k
assert o["iters"] == 20 and math.isfinite(o["test_nll"]), o
PY
[ -s "$tmp/p.png" ] || fail "no picture"

# Resume from iteration 10: the file after 20 iterations is byte for byte the same.
"$cnf" train --data moons --iters 10 $small --out "$tmp/half.safetensors" > /dev/null \
  || fail "half run"
"$cnf" train --resume "$tmp/half.safetensors" --iters 20 --out "$tmp/resumed.safetensors" \
  > /dev/null || fail "resume run"
cmp "$tmp/full.safetensors" "$tmp/resumed.safetensors" || fail "resumed model differs"

# Mixed precision is an option of the model and is kept in its file.
"$cnf" train --data moons --iters 5 $small --precision mixed --out "$tmp/mixed.safetensors" \
  > /dev/null || fail "train --precision mixed"
"$cnf" eval --model "$tmp/mixed.safetensors" --data moons -n 100 > /dev/null || fail "eval mixed"

# Use the saved model.
"$cnf" eval --model "$tmp/full.safetensors" --data moons -n 300 --json > "$tmp/eval" \
  || fail "eval"
python3 - "$tmp/eval" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert all(k in o for k in ("nll", "nll_stderr", "n", "nfe_per_solve", "solves", "seconds")), o
assert o["n"] == 300 and o["solves"] == 1 and o["nfe_per_solve"] > 0 and "nfe" not in o, o
PY
# NFE is per solve (the mean over the batches of rows), not the sum over them: three batches of
# 100 rows cost about what one solve of 300 rows does, not three times as much.
"$cnf" eval --model "$tmp/full.safetensors" --data moons -n 300 --batch 100 --json \
  > "$tmp/eval3" || fail "eval --batch 100"
python3 - "$tmp/eval" "$tmp/eval3" <<'PY'
import json, sys
one, three = (json.loads(open(p).read().splitlines()[-1]) for p in sys.argv[1:])
assert three["solves"] == 3, three
assert 0.5 < three["nfe_per_solve"] / one["nfe_per_solve"] < 1.5, (one, three)
PY
"$cnf" sample --model "$tmp/full.safetensors" -n 50 --out "$tmp/s.csv" > /dev/null || fail "csv"
[ "$(wc -l < "$tmp/s.csv")" -eq 50 ] || fail "csv rows"
"$cnf" sample --model "$tmp/full.safetensors" -n 50 --out "$tmp/s.npy" > /dev/null || fail "npy"
[ "$(wc -c < "$tmp/s.npy")" -eq $((128 + 50 * 2 * 8)) ] || fail "npy size"
"$cnf" plot --model "$tmp/full.safetensors" --data moons -n 500 --out "$tmp/q.png" > /dev/null \
  || fail "plot"

# Solvers compared on the trained flow: every method listed, with its log-p error and NFE.
"$cnf" solvers --model "$tmp/full.safetensors" --data moons -n 100 --steps 8 --tols 1e-4 \
  --json > "$tmp/sv" || fail "solvers --model"
python3 - "$tmp/sv" <<'PY'
import json, math, sys
runs = json.loads(open(sys.argv[1]).read().splitlines()[-1])
methods = {r["method"] for r in runs}
assert methods == {"euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5", "cvode-adams",
                   "cvode-bdf"}, methods
for r in runs:
    assert r["nfe"] > 0 and r["error"] is not None and math.isfinite(r["error"]), r
PY

# gradcheck --json has the four keys.
"$cnf" gradcheck --hidden 6 --batch 3 --directions 1 --json > "$tmp/gc" || fail "gradcheck"
python3 - "$tmp/gc" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
for k in ("backprop_vs_fd", "adjoint_vs_fd", "cvodes_vs_fd", "backsolve_vs_fd"):
    assert k in o, k
assert o["backprop_vs_fd"] < 1e-6 and o["adjoint_vs_fd"] < 1e-4, o
PY

# Discrete flows go through the same commands.
for m in realnvp nsf; do
  "$cnf" train --model $m --layers 2 --hidden 8 --data moons --iters 20 --batch 32 --test-n 200 \
    --out "$tmp/$m.safetensors" --json > "$tmp/d.out" || fail "train --model $m"
  "$cnf" eval --model "$tmp/$m.safetensors" --data moons -n 200 > /dev/null || fail "eval $m"
  "$cnf" plot --model "$tmp/$m.safetensors" --data moons -n 200 --out "$tmp/$m.png" > /dev/null \
    || fail "plot $m"
  "$cnf" gradcheck --model $m --layers 2 --hidden 6 --dim 3 --json > "$tmp/g.out" || fail "gc $m"
  python3 -c 'import json,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert o["backprop_vs_fd"] < 1e-6, o' "$tmp/g.out"
done

# The two other objectives.
"$cnf" train --objective reverse-kl --target banana --iters 20 --hidden 8-8 --batch 64 \
  --test-n 500 --val-every 10 --plot "$tmp/rkl.png" --json > "$tmp/rkl" || fail "reverse-kl"
python3 - "$tmp/rkl" <<'PY'
import json, math, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
for k in ("elbo", "log_z_estimate", "ess_fraction", "seconds", "log_z_true"):
    assert k in o and math.isfinite(o[k]), (k, o)
assert 0 < o["ess_fraction"] <= 1 and abs(o["log_z_true"] - math.log(4 * math.pi)) < 1e-12, o
PY
[ -s "$tmp/rkl.png" ] || fail "no reverse-kl picture"
printf 'x1,x2,y\n' > "$tmp/lr.csv"
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  printf '%s,%s,%s\n' "$i" "$((i % 5))" "$((i % 2))" >> "$tmp/lr.csv"
done
"$cnf" train --objective reverse-kl --target-csv "$tmp/lr.csv" --iters 5 --hidden 8 --batch 32 \
  --test-n 200 --json > "$tmp/lr" || fail "reverse-kl --target-csv"
python3 -c 'import json,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert "log_z_true" not in o and o["ess_fraction"] > 0, o' "$tmp/lr"
"$cnf" train --objective flow-matching --fm-variant otcfm --data moons --iters 20 --hidden 8-8 \
  --batch 64 --test-n 200 --out "$tmp/fm.safetensors" --json > "$tmp/fm" || fail "flow-matching"
python3 -c 'import json,math,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert math.isfinite(o["test_nll"]), o' "$tmp/fm"
"$cnf" eval --model "$tmp/fm.safetensors" --data moons -n 200 > /dev/null || fail "eval fm"
# Flow matching on a data file: the CLI trains the preprocessing wrapper there, whose CNF the
# objective reaches through the flow interface (regressing in the standardised space); cnf eval
# then loads the model with its preprocessing and scores the file.
python3 - "$tmp/fm.csv" <<'PY'
import random, sys
random.seed(5)
with open(sys.argv[1], "w") as f:
    f.write("a,b,c\n")
    for i in range(150):
        x = random.gauss(0, 1)
        f.write(f"{100 + 20 * x:.4f},{x * x + random.gauss(0, 0.3):.4f},{random.gauss(-3, 0.1):.4f}\n")
PY
"$cnf" train --data "$tmp/fm.csv" --objective flow-matching --iters 10 --hidden 8-8 --batch 32 \
  --out "$tmp/fmcsv.safetensors" --json > "$tmp/fmcsv" || fail "flow-matching on a data file"
python3 -c 'import json,math,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert o["status"] == "ok" and o["iters"] == 10 and math.isfinite(o["test_nll"]), o' "$tmp/fmcsv"
"$cnf" eval --model "$tmp/fmcsv.safetensors" --data "$tmp/fm.csv" --json > "$tmp/fmeval" \
  || fail "eval of a flow-matching model of a data file"
python3 -c 'import json,math,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert o["n"] == 150 and math.isfinite(o["nll"]), o' "$tmp/fmeval"
# A data file: the banner names the CNF inside the preprocessing and its solver, the log lines
# show the NFE and T, validation is on the validation rows and called so, and the JSON's
# train_loss is the mean of the last 100 iterations' losses (not the run's mean).
"$cnf" train --data "$tmp/fm.csv" --iters 150 --hidden 8-8 --batch 32 --val-every 50 \
  --log-every 1 --lr 1e-2 --json > "$tmp/dfile" 2> "$tmp/dfile.err" || fail "train on a data file"
grep -q "^cnf train: .*, cnf flow with [0-9]* parameters, dopri5 (rtol 1e-05, atol 1e-05), exact trace, T 0.5 (trained), .*(preprocessing of the 3 columns: standardised)" \
  "$tmp/dfile" || fail "banner: $(head -2 "$tmp/dfile")"
grep -q "^iter 150/150 .* nfe [0-9]*/[0-9]*  T [0-9.]* .* val nll " "$tmp/dfile" \
  || fail "log line: $(grep '^iter 150' "$tmp/dfile")"
if grep -q "test nll" "$tmp/dfile"; then fail "validation called test nll"; fi
python3 - "$tmp/dfile" <<'PY'
import json, re, sys
lines = open(sys.argv[1]).read().splitlines()
o = json.loads(lines[-1])
loss = [float(m.group(1)) for l in lines if (m := re.match(r"iter \d+/150  loss (\S+)", l))]
assert len(loss) == 150, len(loss)
last = sum(loss[-100:]) / 100
assert abs(o["train_loss"] - last) < 1e-3, (o["train_loss"], last, sum(loss) / 150)
assert o["best_iter"] in (50, 100, 150) and o["val_nll"] is not None, o
PY
# --val-frac 0: no validation rows, so nothing is selected (never on the test rows); --patience
# needs them.
"$cnf" train --data "$tmp/fm.csv" --iters 20 --hidden 8-8 --batch 32 --val-every 10 \
  --val-frac 0 --json > "$tmp/noval" || fail "train --val-frac 0"
grep -q "no validation rows (--val-frac 0): no model selection" "$tmp/noval" || fail "no note"
if grep -q "nll .* +-\|kept the parameters" "$tmp/noval"; then
  fail "--val-frac 0 validated: $(cat "$tmp/noval")"
fi
python3 -c 'import json,math,sys; o=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert o["val_nll"] is None and o["best_iter"] is None and math.isfinite(o["test_nll"]) and o["iters"] == 20, o' "$tmp/noval"
# A progress line on stderr (not a terminal here) every --progress-every seconds until the first
# log line.
"$cnf" train --data moons --iters 12 $small --log-every 5 --progress-every 1e-9 \
  > "$tmp/prog" 2> "$tmp/prog.err" || fail "--progress-every"
[ "$(grep -c "^cnf train: iter [1-4]/12 .* (first log line at iteration 5)" "$tmp/prog.err")" -eq 4 ] \
  || fail "progress lines: $(cat "$tmp/prog.err")"
if grep -q "iter \([5-9]\|1[0-2]\)/12" "$tmp/prog.err"; then fail "progress after the log line"; fi
# --max-seconds is the wall-clock budget of the whole command, the final validation and test
# evaluation included (they used to come on top: +33% here). The bound is loose (25% and 0.3 s
# for the process start) so that a loaded machine does not fail it; quiet runs are within 1-2%.
python3 - "$tmp/d8.csv" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write(",".join(f"x{j}" for j in range(8)) + "\n")
    for i in range(6000):
        x = random.gauss(0, 1)
        f.write(",".join(f"{x * (j % 3) + 0.3 * x * x + random.gauss(0, 0.5):.4f}"
                         for j in range(8)) + "\n")
PY
python3 - "$cnf" "$tmp/d8.csv" "$tmp/budget" <<'PY' || fail "--max-seconds: $(tail -3 "$tmp/budget")"
import json, subprocess, sys, time
cnf, data, out = sys.argv[1:]
def run(*extra):
    t = time.monotonic()
    r = subprocess.run([cnf, "train", "--data", data, "--val-frac", "0.3", "--test-frac", "0.3",
                        "--json", *extra], stdout=open(out, "w"), stderr=subprocess.STDOUT)
    return r, time.monotonic() - t
# The budget must hold more than the work that does not shrink with it (loading, one
# iteration, the final evaluations): 2 s, or 3 times that work on a slow (sanitizer) build.
r, fixed = run("--iters", "1")
assert r.returncode == 0, r.returncode
S = round(max(2.0, 3 * fixed), 1)
r, wall = run("--iters", "1000000", "--max-seconds", str(S))
o = json.loads(open(out).read().splitlines()[-1])
assert r.returncode == 0, r.returncode
assert o["status"] == "time_limit" and o["max_seconds"] == S and "max-seconds" in o["stop_reason"], o
assert o["seconds"] <= wall and 0.5 * S <= wall <= 1.25 * S + 0.3, (wall, o)
assert o["test_nll"] is not None and o["iters"] >= 1, o
PY
"$cnf" train --help > "$tmp/help"
grep -q "wall-clock budget of the whole command" "$tmp/help" || fail "--help: --max-seconds"
grep -q "mean loss.*of the last 100 iterations" "$tmp/help" || fail "--help: train_loss"
grep -q "With --val-frac 0 there are no validation rows" "$tmp/help" || fail "--help: val-frac"
# --help lists the objectives from the library's list.
"$cnf" train --help > "$tmp/help"
for o in ml flow-matching reverse-kl; do grep -q -- "$o:" "$tmp/help" || fail "--help lacks $o"; done

# Bad input: a clear message and a non-zero exit, never a crash.
expect() { # expected status, words the message must contain, command...
  want=$1; words=$2; shift 2
  set +e; "$@" > "$tmp/o" 2> "$tmp/e"; got=$?; set -e
  [ "$got" -eq "$want" ] || fail "$* exited $got, not $want"
  for w in $words; do grep -q -- "$w" "$tmp/e" || fail "$*: message lacks '$w': $(cat "$tmp/e")"; done
}
expect 2 "unknown 8gaussians" "$cnf" train --data no-such-set --iters 1
expect 2 "--data" "$cnf" train --iters 1
expect 2 "unknown" "$cnf" train --data moons --act relu7
expect 2 "unknown" "$cnf" train --data moons --model transformer
expect 2 "unknown" "$cnf" train --objective reverse-kl --target volcano
expect 2 "--target" "$cnf" train --objective reverse-kl --data moons --target banana
expect 2 "objective" "$cnf" train --objective magic --data moons
expect 2 "realnvp velocity" "$cnf" train --model realnvp --objective flow-matching --data moons \
  --iters 2
expect 2 "precision" "$cnf" train --data moons --precision single
printf 'x,y\n1,2\n3,1\n' > "$tmp/badlabel.csv"
expect 1 "label" "$cnf" train --objective reverse-kl --target-csv "$tmp/badlabel.csv"
expect 2 "finite" "$cnf" train --data moons --lr abc
expect 2 "--patience --val-frac" "$cnf" train --data "$tmp/fm.csv" --val-frac 0 --patience 3 \
  --iters 5
expect 2 "--max-seconds" "$cnf" train --data moons --max-seconds -1
head -c 300 "$tmp/full.safetensors" > "$tmp/trunc.safetensors"
expect 1 "trunc.safetensors" "$cnf" eval --model "$tmp/trunc.safetensors" --data moons
printf 'garbage that is not a model' > "$tmp/junk.safetensors"
expect 1 "junk.safetensors" "$cnf" eval --model "$tmp/junk.safetensors" --data moons
expect 1 "missing.safetensors" "$cnf" eval --model "$tmp/missing.safetensors" --data moons
expect 2 "--out" "$cnf" sample --model "$tmp/full.safetensors" --out "$tmp/s.txt"
expect 2 "unknown" "$cnf" solvers --model "$tmp/full.safetensors" --data nowhere
echo "cli train/eval/sample/plot/gradcheck: all checks passed"
