#!/bin/sh
# cnf train/eval on data files (issue 7): a CSV with --out/--json, eval --scores writing one log p
# per row in row order on 1e5 rows with memory that grows only with the data (acceptance 4),
# eval --split test reproducing the training run's test NLL, and every file of the malformed
# corpus rejected with a message naming it and a non-zero exit (acceptance 3).
# Usage: test_cli_data.sh path/to/cnf path/to/make_corpus
set -eu
cnf="$1"
make_corpus="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1e5 rows of a correlated 3-D Gaussian with a header, and the first 1e4 of them.
python3 - "$tmp" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1] + "/big.csv", "w") as f:
    f.write("a,b,c\n")
    for i in range(100000):
        u, v = random.gauss(0, 1), random.gauss(0, 1)
        f.write("%.6f,%.6f,%.6f\n" % (u, 0.8 * u + 0.6 * v, 5.0))  # c is constant
lines = open(sys.argv[1] + "/big.csv").read().splitlines()
open(sys.argv[1] + "/small.csv", "w").write("\n".join(lines[:10001]) + "\n")
open(sys.argv[1] + "/rev.csv", "w").write("\n".join([lines[0]] + lines[1:2001][::-1]) + "\n")
PY
small="--model maf --layers 2 --hidden 8 --batch 64 --val-every 20 --seed 2"
"$cnf" train --data "$tmp/small.csv" --iters 40 $small --out "$tmp/m.safetensors" --json \
  > "$tmp/train" || fail "train on a CSV"
python3 - "$tmp/train" <<'PY'
import json, math, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert o["model"] == "maf" and o["n_train"] == 8000 and o["n_test"] == 1000, o
assert math.isfinite(o["test_nll"]) and o["best_iter"] > 0, o
PY
grep -q "modelled in 2 dimensions" "$tmp/train" || fail "the constant column was not dropped"

# MNIST's files have no extension: a bare name that is no toy set but an existing file is data.
python3 - "$tmp" <<'PY'
import random, struct, sys
random.seed(3)
with open(sys.argv[1] + "/train-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, 200, 4, 4) + bytes(random.randrange(256) for _ in range(3200)))
PY
cnf_abs="$(cd "$(dirname "$cnf")" && pwd)/$(basename "$cnf")"
(cd "$tmp" && "$cnf_abs" train --data train-images-idx3-ubyte --dequantize 256 --iters 2 \
  --model maf --layers 1 --hidden 4 --batch 32 > idx.out) || fail "train on an IDX file without extension"
grep -q "modelled in 16 dimensions" "$tmp/idx.out" || fail "the IDX file was not read as data"

# The training run's test rows, evaluated again from the model file: the same NLL.
"$cnf" eval --model "$tmp/m.safetensors" --data "$tmp/small.csv" --split test --json \
  > "$tmp/ev" || fail "eval --split test"
python3 - "$tmp/train" "$tmp/ev" <<'PY'
import json, sys
t = json.loads(open(sys.argv[1]).read().splitlines()[-1])
e = json.loads(open(sys.argv[2]).read().splitlines()[-1])
assert e["n"] == 1000 and abs(e["nll"] - t["test_nll"]) < 1e-9, (t, e)
PY

# Scores: one per row, in order (the first 2000 rows reversed give the reversed scores), and the
# memory for 1e5 rows exceeds that for 1e4 rows by no more than a few times the extra bytes.
python3 - "$cnf" "$tmp" <<'PY'
import resource, subprocess, sys, os
cnf, tmp = sys.argv[1], sys.argv[2]
def run(name):
    subprocess.run([cnf, "eval", "--model", tmp + "/m.safetensors", "--data", tmp + "/" + name,
                    "--scores", tmp + "/" + name + ".scores"], check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
r_small = run("small.csv")
r_big = run("big.csv")
big = [float(x) for x in open(tmp + "/big.csv.scores")]
assert len(big) == 100000, len(big)
run("rev.csv")
rev = [float(x) for x in open(tmp + "/rev.csv.scores")]
# A row's score is the same function of the row wherever it sits, but not to the bit: GEMM
# kernels block the batch into tiles and may round a row at a tile edge differently from one in
# the middle (OpenBLAS's Haswell and Zen kernels do, by an ulp or so), and the reversed file puts
# every row at another position. So: the same scores in the same order to a relative 1e-12 (a few
# thousand ulp; a row out of place differs by far more, these scores spread over several nats).
exp = big[:2000][::-1]
assert len(rev) == len(exp), (len(rev), len(exp))
bad = [(i, a, b) for i, (a, b) in enumerate(zip(rev, exp)) if abs(a - b) > 1e-12 * max(abs(a), abs(b), 1.0)]
assert not bad, "scores are not in row order: %d rows differ, first %r" % (len(bad), bad[:3])
# ... and rows out of place would be caught: the scores are not all alike.
assert max(exp) - min(exp) > 1e-3, (min(exp), max(exp))
extra = os.path.getsize(tmp + "/big.csv") - os.path.getsize(tmp + "/small.csv")
assert r_big - r_small < 8 * extra, (r_small, r_big, extra)
print("eval --scores on 1e5 rows: %.1f MB more resident than on 1e4 rows (file +%.1f MB)"
      % ((r_big - r_small) / 1e6, extra / 1e6))
PY

# Every malformed file: exit status 1, a message naming the file and the problem, for train
# and for eval.
"$make_corpus" "$tmp" > "$tmp/list" || fail "make_corpus"
count=0
while IFS="$(printf '\t')" read -r name phrase; do
  for cmd in train eval; do
    if [ $cmd = train ]; then
      set -- train --data "$tmp/$name" --iters 1
    else
      set -- eval --model "$tmp/m.safetensors" --data "$tmp/$name"
    fi
    status=0
    "$cnf" "$@" > /dev/null 2> "$tmp/err" || status=$?
    [ $status -eq 1 ] || fail "$cmd $name: exit status $status"
    grep -qF "$name" "$tmp/err" || fail "$cmd $name: message does not name the file: $(cat "$tmp/err")"
    grep -qF "$phrase" "$tmp/err" || fail "$cmd $name: message lacks '$phrase': $(cat "$tmp/err")"
  done
  count=$((count + 1))
done < "$tmp/list"
[ $count -ge 30 ] || fail "only $count malformed files"
echo "malformed corpus: $count files rejected by train and eval"

# Usage errors: --plot with a file, a bad --columns, --scores without a file.
status=0; "$cnf" train --data "$tmp/small.csv" --plot "$tmp/p.png" 2>/dev/null || status=$?
[ $status -eq 2 ] || fail "--plot with a data file: status $status"
status=0; "$cnf" train --data "$tmp/small.csv" --columns 0-x 2>/dev/null || status=$?
[ $status -eq 2 ] || fail "bad --columns: status $status"
status=0; "$cnf" eval --model "$tmp/m.safetensors" --data moons --scores "$tmp/s" 2>/dev/null \
  || status=$?
[ $status -eq 2 ] || fail "--scores with a toy set: status $status"
echo "ok"
