#!/bin/sh
# Reproduces the README's comparison of discrete flows with the CNF on FFJORD's eight toy sets:
# held-out NLL (5,000 points, nats), training time and sampling speed, next to a fitted
# Gaussian. Discrete flows: --layers 8 of 64-64 tanh conditioners, Adam 1e-3, batch 256,
# DITERS iterations; planar and radial layers have no conditioner network and are far weaker
# per layer, so they get 32 layers, 5·DITERS iterations and lr 5e-3 (still seconds). The CNF
# column is read from the toy table's logs and models (examples/toy_table.sh).
#   usage: [KINDS="planar radial"] examples/flow_table.sh [build dir] [DITERS] [OUTDIR] [TOY_DIR]
# (KINDS re-runs only those kinds; the table shows every kind found in OUTDIR.)
set -eu
build=${1:-build}
iters=${2:-2000}
out=${3:-flow-table}
toy=${4:-toy-table}
cnf="$build/cnf"
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
sets="8gaussians checkerboard 2spirals moons pinwheel circles rings swissroll"
kinds="planar radial nice realnvp glow maf iaf nsf"
run_kinds=${KINDS:-$kinds}
"$build/examples/toy_gaussian" 0 > "$out/gaussian.txt"
run() { # kind data
  set -- "$1" "$2" --layers 8 --hidden 64-64 --iters "$iters" --lr 1e-3
  case $1 in planar|radial) set -- "$1" "$2" --layers 32 --iters $((5 * iters)) --lr 5e-3 ;; esac
  kind=$1 data=$2
  shift 2
  "$cnf" train --model "$kind" --data "$data" "$@" --batch 256 --val-every 1000000 \
    --log-every 1000000 --out "$out/$kind-$data.safetensors" --json \
    > "$out/$kind-$data.log" 2>&1 || echo '{"test_nll":null,"seconds":null}' >> "$out/$kind-$data.log"
  set -- "$kind" "$data"
  start=$(date +%s.%N)
  "$cnf" sample --model "$out/$1-$2.safetensors" -n 20000 --out "$out/$1-$2.npy" > /dev/null 2>&1 || true
  end=$(date +%s.%N)
  echo "$start $end" > "$out/$1-$2.sample-time"
}
jobs=""
for data in $sets; do
  for kind in $run_kinds; do
    run "$kind" "$data" &
    jobs="$jobs $!"
    if [ "$(echo $jobs | wc -w)" -ge 2 ]; then wait $jobs; jobs=""; fi
  done
done
wait $jobs
# The CNF's sampling speed: `cnf sample` on the models toy_table.sh saved (seed 0).
for data in $sets; do
  [ -f "$toy/$data.safetensors" ] && [ ! -f "$out/cnf-$data.sample-time" ] || continue
  start=$(date +%s.%N)
  "$cnf" sample --model "$toy/$data.safetensors" -n 20000 --out "$out/cnf-$data.npy" > /dev/null
  end=$(date +%s.%N)
  echo "$start $end" > "$out/cnf-$data.sample-time"
done
field() { tail -n 1 "$1" | tr ',{}' '\n\n\n' | grep "\"$2\"" | cut -d: -f2; }
printf '| data | Gaussian |'
for kind in $kinds; do printf ' %s |' "$kind"; done
printf ' cnf |\n|---|---|'
for kind in $kinds cnf; do printf -- '---|'; done
printf '\n'
for data in $sets; do
  printf '| %s | %s |' "$data" "$(grep "^$data " "$out/gaussian.txt" | cut -d' ' -f2)"
  for kind in $kinds; do
    v=$(field "$out/$kind-$data.log" test_nll)
    printf ' %.3f |' "${v:-nan}"
  done
  c=$(for f in "$toy/$data"-*.log; do field "$f" test_nll; done | awk '{s+=$1; n++} END {if (n) printf "%.3f", s/n; else print "n/a"}')
  printf ' %s |\n' "$c"
done
printf '\nTraining seconds (%s iterations for the discrete flows, %s for planar and radial; 1,000\nfor the CNF) and\n' "$iters" "$((5 * iters))"
printf 'sampling throughput (samples/s, `cnf sample -n 20000`, including process start):\n\n'
printf '| flow | mean training s | mean samples/s |\n|---|---|---|\n'
for kind in $kinds; do
  t=$(for data in $sets; do field "$out/$kind-$data.log" seconds; done | awk '{s+=$1; n++} END {printf "%.1f", s/n}')
  sp=$(for data in $sets; do cat "$out/$kind-$data.sample-time"; done | awk '{s+=$2-$1; n++} END {printf "%.0f", 20000*n/s}')
  printf '| %s | %s | %s |\n' "$kind" "$t" "$sp"
done
t=$(for f in "$toy"/*-*.log; do field "$f" seconds; done | awk '{s+=$1; n++} END {if (n) printf "%.1f", s/n; else print "n/a"}')
sp=$(cat "$out"/cnf-*.sample-time 2>/dev/null | awk '{s+=$2-$1; n++} END {if (n) printf "%.0f", 20000*n/s; else print "n/a"}')
printf '| cnf | %s | %s |\n' "$t" "$sp"
