#!/usr/bin/env bash
# tabular_bench.sh BUILD SECONDS DATA.csv[:LEVELS]... : the real-data benchmark. On each data
# file it trains, with the same wall-clock budget (SECONDS, `cnf train --max-seconds`), the same
# seeded 80/10/10 split, the same preprocessing (cnf's standardisation; with :LEVELS integer data
# in [0, LEVELS), dequantised + logit) and validation-based selection of the parameters:
#   cnf      the CNF recipe (CNF_ARGS below)
#   realnvp, maf, nsf   the discrete flows (REALNVP_ARGS, MAF_ARGS, NSF_ARGS)
#   gauss    a full-covariance Gaussian (examples/tabular_baselines.py, scikit-learn)
#   gmm      a full-covariance Gaussian mixture, 1, 2, 4, ... components chosen on the validation
#            rows within the same budget
# then scores every test row with each model (`cnf eval --split test --scores`; the Python
# baselines rebuild cnf's split exactly, checked below on continuous files) and prints a markdown
# table: test NLL ± standard error (nats; in PCA space for PCA files, as made), the paired
# difference CNF − best other model ± its standard error (negative: the CNF wins), the iteration
# kept / run, training seconds (wall), and the evaluation's NFE per solve (Dopri5 at the
# model's evaluation tolerance, exact trace, for the CNF).
#
#   examples/tabular_data.sh data                        # the development sets
#   examples/tabular_bench.sh build 300 data/digits64.csv:17 data/mnist-pca16.csv \
#       data/mnist-pca32.csv data/fashion-pca16.csv data/faithful.csv
#
# Environment: MODELS (default "cnf realnvp maf nsf gauss gmm"), SEED (split and initialisation,
# default 0), OUT (logs, models and scores; default a new temporary directory), CNF_ARGS,
# REALNVP_ARGS, MAF_ARGS, NSF_ARGS (each replaces that model's settings), COMMON_ARGS (added to
# every cnf train call), CNF_DRIVER (a built examples/tabular_recipe: the CNF runs through it,
# with CNF_DRIVER_ARGS, instead of cnf train; CNF_ML_FRACTION, default 0, of the budget then
# goes to maximum-likelihood fine-tuning after flow matching), PYTHON (default /usr/bin/python3: Debian's numpy and scikit-learn).
# Models run one at a time; CNF_NUM_THREADS (default 2) threads each.
set -euo pipefail

usage() { echo "usage: tabular_bench.sh BUILD SECONDS DATA.csv[:LEVELS]..." >&2; exit 2; }
[[ $# -ge 3 ]] || usage
build=$1 secs=$2
shift 2
cnf=$build/cnf
[[ -x $cnf ]] || { echo "tabular_bench.sh: no $cnf (meson compile -C $build)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
MODELS=${MODELS:-cnf realnvp maf nsf gauss gmm}
SEED=${SEED:-0}
OUT=${OUT:-$(mktemp -d /tmp/tabular_bench.XXXXXX)}
export OPENBLAS_NUM_THREADS=1 CNF_NUM_THREADS=${CNF_NUM_THREADS:-2}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
mkdir -p "$OUT"

# The settings of each model. CNF_ARGS is the flow-matching recipe through `cnf train` (no
# schedule by time and no maximum-likelihood fine-tuning there yet: set CNF_DRIVER to
# build/examples/tabular_recipe to run the full recipe). Every run also gets the budget, a huge
# iteration cap (the budget ends it), the seed and the validation cadence.
CNF_ARGS=${CNF_ARGS:---objective flow-matching --fm-variant otcfm --hidden 256-256-256 --act swish
    --time concat --T 1 --train-T=0 --batch 512 --lr 2e-3 --weight-decay 0 --ema 0.999 --val-every 1000 --precision mixed
    --solver dopri5 --atol 1e-5 --rtol 1e-5}
REALNVP_ARGS=${REALNVP_ARGS:---layers 8 --hidden 256-256 --batch 256 --lr 1e-3 --val-every 200}
MAF_ARGS=${MAF_ARGS:---layers 8 --hidden 256-256 --batch 256 --lr 1e-3 --val-every 200}
NSF_ARGS=${NSF_ARGS:---layers 8 --hidden 256-256 --batch 256 --lr 1e-3 --bins 8 --val-every 200}
COMMON_ARGS=${COMMON_ARGS:-}

field() { tail -n 1 "$1" | tr ',{}' '\n\n\n' | grep "^\"$2\":" | head -1 | cut -d: -f2; }

# run_cli MODEL: one `cnf train` run of MODEL with its settings, then its test scores.
run_cli() {
    local m=$1 var args
    var=$(echo "$m" | tr a-z A-Z)_ARGS
    # shellcheck disable=SC2206
    args=(${!var} $COMMON_ARGS)
    echo "== $name $m: cnf train --model $m ${args[*]} ${dq[*]} --max-seconds $secs" >&2
    "$cnf" train --data "$file" --model "$m" "${dq[@]}" "${args[@]}" \
        --max-seconds "$secs" --iters 100000000 --seed "$SEED" --log-every 1000000 \
        --out "$base.safetensors" --json > "$base.log" 2> "$base.err" ||
        { echo "   failed: $(tail -n 2 "$base.err")" >&2; return 0; }
    "$cnf" eval --model "$base.safetensors" --data "$file" --split test \
        --scores "$base.scores" --json > "$base.eval" 2>> "$base.err" ||
        { echo "   eval failed: $(tail -n 2 "$base.err")" >&2; return 0; }
    echo "   test NLL $(field "$base.log" test_nll), iteration $(field "$base.log" best_iter)/$(field "$base.log" iters), $(field "$base.log" seconds) s, eval NFE $(field "$base.eval" nfe_per_solve)" >&2
}

for spec in "$@"; do
    file=${spec%%:*} levels=0
    [[ $spec == *:* ]] && levels=${spec##*:}
    [[ -r $file ]] || { echo "tabular_bench.sh: cannot read $file" >&2; exit 1; }
    name=$(basename "$file" .csv)
    dq=()
    [[ $levels != 0 ]] && dq=(--dequantize "$levels")
    for m in $MODELS; do
        base=$OUT/$name.$m
        case $m in
        cnf)
            [[ -n ${CNF_DRIVER:-} ]] || { run_cli "$m"; continue; }
            # The recipe through examples/tabular_recipe.c (flow matching with EMA and a
            # schedule by time, then maximum-likelihood fine-tuning).
            # shellcheck disable=SC2206
            args=(${CNF_DRIVER_ARGS:-})
            # CNF_ML_FRACTION of the budget goes to ML fine-tuning after flow matching
            fm_s=$(awk -v s="$secs" -v f="${CNF_ML_FRACTION:-0}" 'BEGIN { print s * (1 - f) }')
            ml_s=$(awk -v s="$secs" -v f="${CNF_ML_FRACTION:-0}" 'BEGIN { print s * f }')
            echo "== $name cnf: $CNF_DRIVER ${args[*]} --fm-seconds $fm_s --ml-seconds $ml_s" >&2
            "$CNF_DRIVER" --data "$file" --levels "$levels" --seed "$SEED" "${args[@]}" \
                --fm-seconds "$fm_s" --ml-seconds "$ml_s" --scores "$base.scores" \
                > "$base.log" 2> "$base.err" ||
                { echo "   failed: $(tail -n 2 "$base.err")" >&2; continue; }
            echo "   $(tail -n 1 "$base.log")" >&2
            ;;
        realnvp|maf|nsf) run_cli "$m" ;;
        gauss|gmm)
            if [[ ! -s $OUT/$name.gmm.json ]]; then
                echo "== $name gauss, gmm: tabular_baselines.py (budget $secs s)" >&2
                OPENBLAS_NUM_THREADS=$CNF_NUM_THREADS "$PY" "$here/tabular_baselines.py" "$file" "$OUT/$name" --seed "$SEED" \
                    --levels "$levels" --max-seconds "$secs" > "$OUT/$name.baselines.json" \
                    2> "$OUT/$name.baselines.err" ||
                    { echo "   failed: $(tail -n 2 "$OUT/$name.baselines.err")" >&2; continue; }
                grep '"gauss"' "$OUT/$name.baselines.json" > "$OUT/$name.gauss.json"
                grep '"gmm"' "$OUT/$name.baselines.json" > "$OUT/$name.gmm.json"
            fi
            ;;
        *) echo "tabular_bench.sh: unknown model $m" >&2; exit 2 ;;
        esac
    done
    # The Python baselines must score the very rows cnf tests: compare on a continuous file.
    if [[ $levels == 0 && -s $OUT/$name.split ]]; then
        for m in $MODELS; do
            [[ -s $OUT/$name.$m.safetensors ]] || continue
            "$cnf" eval --model "$OUT/$name.$m.safetensors" --data "$file" \
                --scores "$OUT/$name.$m.all-scores" > /dev/null 2>&1 || break
            "$PY" - "$OUT/$name.$m.all-scores" "$OUT/$name.$m.scores" "$OUT/$name.split" <<'EOF' ||
import sys, numpy as np
a, t, i = np.loadtxt(sys.argv[1]), np.loadtxt(sys.argv[2]), np.loadtxt(sys.argv[3], dtype=int)
sys.exit(0 if np.allclose(a[i], t, rtol=1e-7, atol=1e-7) else 1)
EOF
                { echo "tabular_bench.sh: $name: the baselines' split differs from cnf's" >&2; exit 1; }
            break
        done
    fi
done

# The table.
"$PY" - "$OUT" "$secs" "$MODELS" "$@" <<'EOF'
import json, os, sys
import numpy as np
out, secs, models, specs = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]

def last_json(path):
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except Exception:
        return None

def nfe_per_solve(e):  # cnf eval's mean NFE over its solves (batches of rows)
    if e.get("nfe_per_solve") is None:
        return ""
    return f"{e['nfe_per_solve']:.0f}"

print(f"Budget {secs} s of wall-clock training per model; test NLL in nats (± SE); "
      "paired: CNF − best other model over the same test rows (negative: the CNF is better).\n")
print("| data | " + " | ".join(models) + " | CNF − best other |")
print("|---" * (len(models) + 2) + "|")
detail = []
for spec in specs:
    name = os.path.basename(spec.split(":")[0])[:-4]
    lp, cells = {}, []
    for m in models:
        sc = f"{out}/{name}.{m}.scores"
        if not os.path.exists(sc):
            cells.append("failed")
            continue
        lp[m] = np.loadtxt(sc)
        nll = -lp[m]
        cells.append(f"{nll.mean():.3f} ± {nll.std(ddof=1) / np.sqrt(len(nll)):.3f}")
        if m in ("gauss", "gmm"):
            j = last_json(f"{out}/{name}.{m}.json") or {}
            detail.append((name, m, "", "", f"{j.get('seconds', float('nan')):.1f}", "",
                           f"components {j['components']}" if "components" in j else ""))
        else:
            j, e = last_json(f"{out}/{name}.{m}.log") or {}, last_json(f"{out}/{name}.{m}.eval") or {}
            if "fm_iters" in j:  # the research driver
                detail.append((name, m, "last (EMA)", f"{j['fm_iters']} FM + {j['ml_iters']} ML",
                               f"{j['train_seconds']:.1f}", f"{j['eval_nfe_per_solve']:.0f}",
                               f"CPU {j['train_cpu_seconds']:.1f} s"))
                continue
            detail.append((name, m, j.get("best_iter", ""), j.get("iters", ""),
                           f"{j.get('seconds', float('nan')):.1f}", nfe_per_solve(e), ""))
    diff = "n/a"
    others = [m for m in lp if m != "cnf"]
    if "cnf" in lp and others:
        best = min(others, key=lambda m: -lp[m].mean())
        d = lp[best] - lp["cnf"]  # CNF NLL − other NLL, per row
        diff = f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} (vs {best})"
    print(f"| {name} | " + " | ".join(cells) + f" | {diff} |")
print("\n| data | model | iteration kept | iterations | training s | eval NFE | notes |")
print("|---|---|---|---|---|---|---|")
for r in detail:
    print("| " + " | ".join(str(x) for x in r) + " |")
EOF
echo "logs, models and scores in $OUT" >&2
