#!/bin/sh
# Reproduces the README's toy-density table: FFJORD's toy configuration (64-64-64 tanh
# concatsquash, exact trace, Dopri5 at 1e-5, adjoint, T = 0.5 trained, Adam 1e-3, batch 100)
# trained for ITERS iterations on each of FFJORD's eight 2-D sets with SEEDS seeds, reporting the
# held-out test NLL (5,000 points), wall time and NFE per iteration, and one picture per set.
#   usage: [SETS="a b"] examples/toy_table.sh [path/to/cnf] [ITERS] [SEEDS] [OUTDIR]
# Runs two trainings at a time (one per core, OpenBLAS single-threaded). The pictures of the
# README (examples/toy-*.png) come from `examples/toy_table.sh build/cnf 4000 1 pictures`: at
# 1,000 iterations the checkerboard's squares and the spirals are not yet resolved.
set -eu
cnf=${1:-build/cnf}
iters=${2:-1000}
seeds=${3:-3}
out=${4:-toy-table}
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
sets=${SETS:-"8gaussians checkerboard 2spirals moons pinwheel circles rings swissroll"}
jobs=""
for data in $sets; do
  s=0
  while [ "$s" -lt "$seeds" ]; do
    plot=""
    [ "$s" -eq 0 ] && plot="--plot $out/$data.png --out $out/$data.safetensors"
    "$cnf" train --data "$data" --iters "$iters" --seed "$s" --val-every "$iters" \
      --log-every "$iters" $plot --json > "$out/$data-$s.log" 2>&1 &
    jobs="$jobs $!"
    if [ "$(echo $jobs | wc -w)" -ge 2 ]; then wait $jobs; jobs=""; fi
    s=$((s + 1))
  done
done
wait $jobs
printf '| data | test NLL (nats, mean of %s seeds) | per seed | seconds per run | NFE fwd/bwd per iter |\n' "$seeds"
printf '|---|---|---|---|---|\n'
for data in $sets; do
  tail -qn 1 "$out/$data"-*.log | awk -v d="$data" -F'[:,]' '
    { for (i = 1; i < NF; i++) { k = $i; gsub(/[{}" ]/, "", k); v = $(i + 1); gsub(/[{}" ]/, "", v);
        if (k == "test_nll") { n++; s += v; per = per (per ? " / " : "") sprintf("%.3f", v) }
        if (k == "seconds") t += v; if (k == "nfe_forward") f += v; if (k == "nfe_backward") b += v } }
    END { printf "| %s | %.3f | %s | %.0f | %.0f / %.0f |\n", d, s / n, per, t / n, f / n, b / n }'
done
