#!/bin/sh
# Reproduces the README's flow matching vs maximum likelihood table: for each data set, FFJORD's
# toy CNF trained by maximum likelihood for ITERS iterations (Dopri5 1e-5, adjoint), then the
# same architecture trained by flow matching for the same wall-clock time (--max-seconds), both
# evaluated exactly on the same 5,000 held-out points with Dopri5 at 1e-5; the NFE of that
# evaluation (one solve over all 5,000 points) is reported for both.
#   usage: examples/fm_table.sh [path/to/cnf] [ITERS] [OUTDIR] [VARIANT]
set -eu
cnf=${1:-build/cnf}
iters=${2:-1000}
out=${3:-fm-table}
variant=${4:-icfm}
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
field() { tail -n 1 "$1" | tr ',{}' '\n\n\n' | grep "\"$2\"" | cut -d: -f2; }
printf '| data | ML test NLL | ML train s | ML eval NFE | FM (%s) test NLL | FM iterations | FM eval NFE | FM - ML |\n' "$variant"
printf '|---|---|---|---|---|---|---|---|\n'
for data in 8gaussians checkerboard 2spirals; do
  "$cnf" train --data "$data" --iters "$iters" --T 1 --train-T=0 --val-every "$iters" \
    --log-every "$iters" --out "$out/ml-$data.safetensors" --json > "$out/ml-$data.log"
  secs=$(field "$out/ml-$data.log" seconds)
  "$cnf" train --objective flow-matching --fm-variant "$variant" --data "$data" --T 1 \
    --train-T=0 --batch 256 --iters 1000000 --max-seconds "$secs" --val-every 1000000 \
    --log-every 1000000 --out "$out/fm-$data.safetensors" --json > "$out/fm-$data.log"
  for k in ml fm; do # the held-out points cnf train used (seed 0's test stream) are not what
    # cnf eval draws; the NFE of one solve over 5,000 points of the same distribution is what
    # this column needs
    "$cnf" eval --model "$out/$k-$data.safetensors" --data "$data" -n 5000 --batch 5000 \
      --json > "$out/$k-$data.eval"
  done
  awk -v d="$data" -v a="$(field "$out/ml-$data.log" test_nll)" -v s="$secs" \
      -v f="$(field "$out/ml-$data.eval" nfe_per_solve)" -v g="$(field "$out/fm-$data.eval" nfe_per_solve)" \
      -v m="$(field "$out/fm-$data.log" test_nll)" -v i="$(field "$out/fm-$data.log" iters)" \
      'BEGIN { printf "| %s | %.3f | %.0f | %d | %.3f | %d | %d | %+.3f |\n", d, a, s, f, m, i, g, m - a }'
done
