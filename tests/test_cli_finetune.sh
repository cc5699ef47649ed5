#!/bin/sh
# cnf train's learning-rate schedule (--lr-schedule, --lr-final) and flow matching followed by
# maximum-likelihood fine-tuning (--fine-tune, --fine-tune-lr), end to end on tiny models.
# Usage: test_cli_finetune.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
small="--hidden 8-8 --solver rk4 --steps 4 --test-n 200 --batch 32 --seed 3"

# The cosine schedule by iterations: lr at the first, middle and last iterations.
"$cnf" train --data moons --iters 21 $small --val-every 0 --log-every 1 --lr 1e-2 \
  --lr-schedule cosine --lr-final 1e-4 > "$tmp/cos" || fail "cosine run"
grep -q '^iter 1/21 .* lr 0.01 ' "$tmp/cos" || fail "first lr: $(grep '^iter 1/' "$tmp/cos")"
grep -q '^iter 11/21 .* lr 0.00505 ' "$tmp/cos" || fail "middle lr: $(grep '^iter 11/' "$tmp/cos")"
grep -q '^iter 21/21 .* lr 0.0001 ' "$tmp/cos" || fail "last lr: $(grep '^iter 21/' "$tmp/cos")"
# Bad schedule settings: exit 2 with a message.
for bad in "--lr-final 1e-4" "--lr-schedule linear" "--lr-schedule cosine --lr-final 1" \
           "--fine-tune 0.5" "--objective flow-matching --fine-tune 1" \
           "--objective flow-matching --fine-tune -0.1" "--val-n 5"; do
  set +e
  "$cnf" train --data moons --iters 4 $small $bad > /dev/null 2> "$tmp/err"
  st=$?
  set -e
  [ "$st" = 2 ] || fail "$bad: exit $st"
  [ -s "$tmp/err" ] || fail "$bad: no message"
done

# A small 3-column CSV: a curved and a bimodal column.
python3 - "$tmp/d.csv" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    f.write("a,b,c\n")
    for i in range(400):
        x, y = random.gauss(0, 1), random.gauss(0, 1)
        f.write("%g,%g,%g\n" % (x, x * x + 0.3 * y, random.choice([-1, 1]) * 2 + 0.3 * random.gauss(0, 1)))
PY
fm="--objective flow-matching --hidden 16-16 --batch 64 --log-every 5 --seed 2"

# --fine-tune 0.5 of 20 iterations: 10 of flow matching, then 10 of maximum likelihood with the
# Hutchinson trace (3 dimensions); the JSON counts both; the model loads in cnf eval.
"$cnf" train --data "$tmp/d.csv" $fm --iters 20 --val-every 5 --fine-tune 0.5 --json \
  --out "$tmp/ft.safetensors" > "$tmp/ft" || fail "fine-tune run"
grep -q '^fine-tuning by maximum likelihood: iterations 11 to 20, lr 0.0001, hutchinson-rademacher trace' \
  "$tmp/ft" || fail "no fine-tuning line: $(cat "$tmp/ft")"
grep -q '^iter 10/10 .* nfe 0/0' "$tmp/ft" || fail "flow matching phase"
grep -q '^iter 20/20 .* nfe [1-9]' "$tmp/ft" || fail "maximum-likelihood phase"
python3 - "$tmp/ft" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert o["status"] == "ok" and o["iters"] == 20, o
assert o["fm_iters"] == 10 and o["ml_iters"] == 10, o
PY
"$cnf" eval --model "$tmp/ft.safetensors" --data "$tmp/d.csv" --json > "$tmp/e" || fail "eval"

# Fine-tuning lowers the NLL of the rows (80% of them the training rows) against flow matching
# alone for as many iterations in all, by a wide margin (measured: 5.12 -> 4.27 nats).
"$cnf" train --data "$tmp/d.csv" $fm --iters 400 --val-every 50 --out "$tmp/fm.safetensors" \
  > /dev/null || fail "flow matching alone"
"$cnf" train --data "$tmp/d.csv" $fm --iters 400 --val-every 50 --fine-tune 0.5 \
  --fine-tune-lr 3e-3 --out "$tmp/ft2.safetensors" > /dev/null || fail "fine-tune 400"
"$cnf" eval --model "$tmp/fm.safetensors" --data "$tmp/d.csv" --json | tail -1 > "$tmp/e1"
"$cnf" eval --model "$tmp/ft2.safetensors" --data "$tmp/d.csv" --json | tail -1 > "$tmp/e2"
python3 - "$tmp/e1" "$tmp/e2" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["nll"]
b = json.load(open(sys.argv[2]))["nll"]
assert b < a - 0.3, (a, b)
PY
# --val-n: validation on the first N validation rows (40 here): all of them give the default's
# figure, 10 another one on the same parameters (validation does not change the training).
for v in 0 40 10; do
  "$cnf" train --data "$tmp/d.csv" $fm --iters 10 --val-every 5 --val-n $v > "$tmp/v$v" \
    || fail "--val-n $v"
  grep '^iter 5/10' "$tmp/v$v" | sed 's/.*it\/s//' > "$tmp/l$v"
done
[ -s "$tmp/l0" ] || fail "no validation line"
cmp -s "$tmp/l0" "$tmp/l40" || fail "--val-n 40 (all rows) differs: $(cat "$tmp/l0" "$tmp/l40")"
cmp -s "$tmp/l0" "$tmp/l10" && fail "--val-n 10 validated on all rows"
grep -q '^validating on 10 of the 40 validation rows' "$tmp/v10" || fail "no --val-n line"
echo ok
