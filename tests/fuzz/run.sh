#!/bin/sh
# Run each fuzzer for SECONDS (default 10) on seed corpora: the malformed corpus, valid files of
# each format and a trained model file. Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]
#   CC=clang meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz && tests/fuzz/run.sh build-fuzz 600
set -eu
build="$1"
secs="${2:-10}"
work="${FUZZ_WORK:-$build/fuzz-work}"
mkdir -p "$work/seeds" "$work/csv" "$work/npy" "$work/idx" "$work/model"
"$build/tests/make_corpus" "$work/seeds" > /dev/null
python3 - "$work" <<'PY'
import struct, sys, gzip
w = sys.argv[1]
open(w + "/csv/ok.csv", "w").write("a,b\n1,2.5\n-3e4,4\n")
open(w + "/csv/ws.txt", "w").write("# c\n1 2\t3\n4 5 6\n")
hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }"
hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + struct.pack("<4d", 1, 2, 3, 4)
open(w + "/npy/ok.npy", "wb").write(npy)
open(w + "/npy/ok.npy.gz", "wb").write(gzip.compress(npy))
idx = b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + bytes(range(8))
open(w + "/idx/ok-ubyte", "wb").write(idx)
open(w + "/idx/ok-ubyte.gz", "wb").write(gzip.compress(idx))
PY
for f in "$work"/seeds/*; do
  case "$f" in
    *.csv|*.txt|*.csv.gz) cp "$f" "$work/csv/" ;;
    *.npy) cp "$f" "$work/npy/" ;;
    *) cp "$f" "$work/idx/" ;;
  esac
done
# A small trained model of each flow family, with and without preprocessing, as model seeds.
"$build/cnf" train --data moons --iters 2 --hidden 4 --solver rk4 --steps 2 --test-n 10 \
  --out "$work/model/cnf.safetensors" > /dev/null
"$build/cnf" train --data "$work/csv/ok.csv" --val-frac 0 --test-frac 0 --model realnvp \
  --layers 1 --hidden 2 --iters 2 --batch 2 --out "$work/model/pre.safetensors" > /dev/null
for t in csv npy idx model; do
  echo "== fuzz_$t for $secs s"
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -max_len=65536 \
    -rss_limit_mb=2048 "$work/$t" 2>&1 | grep -E "stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|cov:" | tail -4
done
