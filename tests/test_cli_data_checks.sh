#!/bin/sh
# cnf train on data files that could mislead: --dequantize on values that are not integers in
# [0, LEVELS) is an error naming the FILE's line, column and value (not a shuffled row, not the
# value + 0.5); integer data without --dequantize get a warning; columns by header name and
# --exclude-columns; a missing value is an error naming its line and column, and --drop-missing
# skips such rows saying how many. cnf eval follows the model: its --exclude-columns and
# --drop-missing (so --split test gives the training run's test rows), and the --dequantize check.
# Usage: test_cli_data_checks.sh path/to/cnf
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
python3 - "$tmp" <<'PY'
import random, sys
d = sys.argv[1]
random.seed(3)
rows = ["%d,%d" % (random.randint(0, 9), random.randint(0, 9)) for _ in range(41)]
open(d + "/int.csv", "w").write("a,b\n" + "\n".join(rows) + "\n")
open(d + "/big.csv", "w").write("a,b\n" + "\n".join(rows + ["20,1"]) + "\n")       # line 43
neg = list(rows); neg[9] = "-1,3"
open(d + "/neg.csv", "w").write("\n".join(neg) + "\n")                              # line 10
frac = list(rows); frac[30] = "4,2.5"
open(d + "/frac.csv", "w").write("# counts\n" + "\n".join(frac) + "\n")            # line 32
cont = ["%.4f,%.4f,%.4f" % (random.gauss(70, 10), random.gauss(3, 1), random.random())
        for _ in range(60)]
open(d + "/cont.csv", "w").write("waiting,eruptions,junk\n" + "\n".join(cont) + "\n")
import struct
vals = [float(random.randint(0, 9)) for _ in range(100)]
vals[37 * 2 + 1] = 12.0  # row 37 (from 0), column 1
h = "{'descr': '<f8', 'fortran_order': False, 'shape': (50, 2), }"
h += " " * (64 - 10 - len(h) - 1) + "\n"
open(d + "/r.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode()
                               + struct.pack("<100d", *vals))
na = list(cont); na[4] = "71.5,NA,0.5"; na[9] = "70.1,3.2,"; na[20] = "nan,2.0,0.1"
open(d + "/na.csv", "w").write("waiting,eruptions,junk\n" + "\n".join(na) + "\n")
PY
run="--model maf --layers 2 --hidden 8 --iters 4 --seed 0"
expect_error() { # name expected-text command…
  name=$1; text=$2; shift 2
  status=0; "$@" > "$tmp/out" 2> "$tmp/err" || status=$?
  [ $status -ne 0 ] || fail "$name: accepted"
  grep -qF -- "$text" "$tmp/err" || fail "$name: no '$text' in: $(cat "$tmp/err")"
}

# --dequantize: the file's line, column and value.
expect_error "value above LEVELS" "big.csv: line 43, field 1 (column 0, 'a'): 20 is outside" \
  "$cnf" train --data "$tmp/big.csv" $run --dequantize 10
expect_error "negative integer" "neg.csv: line 10, field 1 (column 0): -1 is outside" \
  "$cnf" train --data "$tmp/neg.csv" $run --dequantize 10
grep -q "shift the column" "$tmp/err" || fail "no advice for a negative column: $(cat "$tmp/err")"
expect_error "non-integer with --dequantize" "frac.csv: line 32, field 2 (column 1): 2.5 is not one of" \
  "$cnf" train --data "$tmp/frac.csv" $run --dequantize 10
expect_error "binary file: the file's row" "r.npy: row 37, column 1: 12 is outside" \
  "$cnf" train --data "$tmp/r.npy" $run --dequantize 10
expect_error "continuous data with --dequantize" "line 2, field 1 (column 0, 'waiting')" \
  "$cnf" train --data "$tmp/cont.csv" $run --dequantize 100
"$cnf" train --data "$tmp/int.csv" $run --dequantize 10 > "$tmp/out" 2> "$tmp/err" \
  || fail "valid integer data rejected: $(cat "$tmp/err")"
! grep -q warning "$tmp/err" || fail "a warning with --dequantize: $(cat "$tmp/err")"

# Integer data without --dequantize: a warning that says what to use.
"$cnf" train --data "$tmp/int.csv" $run > "$tmp/out" 2> "$tmp/err" || fail "integer data"
grep -q "warning: every value in .*int.csv is an integer" "$tmp/err" || fail "no warning: $(cat "$tmp/err")"
grep -q -- "--dequantize LEVELS" "$tmp/err" || fail "the warning names no remedy"
"$cnf" train --data "$tmp/cont.csv" $run > "$tmp/out" 2> "$tmp/err" || fail "continuous data"
! grep -q warning "$tmp/err" || fail "a warning for continuous data: $(cat "$tmp/err")"

# Columns by name and --exclude-columns: the same columns as by number, the same model.
"$cnf" train --data "$tmp/cont.csv" $run --columns 0,1 --out "$tmp/n.safetensors" > "$tmp/num" \
  || fail "--columns 0,1"
"$cnf" train --data "$tmp/cont.csv" $run --columns waiting,eruptions > "$tmp/name" \
  || fail "--columns by name"
"$cnf" train --data "$tmp/cont.csv" $run --exclude-columns junk > "$tmp/excl" \
  || fail "--exclude-columns by name"
"$cnf" train --data "$tmp/cont.csv" $run --columns 0-2 --exclude-columns 2 > "$tmp/excl2" \
  || fail "--exclude-columns by number"
grep -q "60 rows x 2 columns" "$tmp/name" || fail "by name: $(cat "$tmp/name")"
[ "$(tail -1 "$tmp/num")" = "$(tail -1 "$tmp/name")" ] || fail "by name differs from by number"
[ "$(tail -1 "$tmp/num")" = "$(tail -1 "$tmp/excl")" ] || fail "--exclude-columns differs"
[ "$(tail -1 "$tmp/num")" = "$(tail -1 "$tmp/excl2")" ] || fail "--exclude-columns 2 differs"
expect_error "unknown name" "has no column named 'wait'" \
  "$cnf" train --data "$tmp/cont.csv" $run --columns wait
expect_error "excluding everything" "leaves no column" \
  "$cnf" train --data "$tmp/cont.csv" $run --exclude-columns 0-2
expect_error "exclusion out of range" "column 7 does not exist" \
  "$cnf" train --data "$tmp/cont.csv" $run --exclude-columns 7

# Missing values: an error naming the first (line 6 holds NA), or dropped with a count.
expect_error "missing value" "na.csv: line 6, field 2: empty field or missing value (NA, N/A, NaN or ?) in column 1 ('eruptions')" \
  "$cnf" train --data "$tmp/na.csv" $run
"$cnf" train --data "$tmp/na.csv" $run --drop-missing > "$tmp/out" 2> "$tmp/err" \
  || fail "--drop-missing: $(cat "$tmp/err")"
grep -q "dropped 3 of 60 rows" "$tmp/err" || fail "no count of dropped rows: $(cat "$tmp/err")"
grep -q "57 rows x 3 columns" "$tmp/out" || fail "--drop-missing kept: $(cat "$tmp/out")"
# A missing value in a column not modelled is no reason to drop its row (line 11: junk empty).
"$cnf" train --data "$tmp/na.csv" $run --exclude-columns junk --drop-missing > "$tmp/out" \
  2> "$tmp/err" || fail "--drop-missing with --exclude-columns"
grep -q "dropped 2 of 60 rows" "$tmp/err" || fail "dropped: $(cat "$tmp/err")"

# cnf eval on a model trained with these options: the training run's test rows, the same NLL.
same_test_nll() { # train-output eval-json
  python3 - "$1" "$2" <<'PY' || fail "eval --split test differs from the training run: $(cat "$2")"
import json, sys
t = json.loads(open(sys.argv[1]).read().splitlines()[-1])
e = json.loads(open(sys.argv[2]).read().splitlines()[-1])
assert e["n"] == t["n_test"] and abs(e["nll"] - t["test_nll"]) < 1e-9, (t, e)
PY
}
"$cnf" train --data "$tmp/cont.csv" $run --exclude-columns junk --out "$tmp/ex.safetensors" \
  --json > "$tmp/train" || fail "train --exclude-columns --out"
"$cnf" eval --model "$tmp/ex.safetensors" --data "$tmp/cont.csv" --split test --json \
  > "$tmp/ev" 2> "$tmp/err" || fail "eval of an --exclude-columns model: $(cat "$tmp/err")"
same_test_nll "$tmp/train" "$tmp/ev"
"$cnf" train --data "$tmp/na.csv" $run --drop-missing --out "$tmp/dm.safetensors" --json \
  > "$tmp/train" 2> /dev/null || fail "train --drop-missing --out"
"$cnf" eval --model "$tmp/dm.safetensors" --data "$tmp/na.csv" --split test --json \
  > "$tmp/ev" 2> "$tmp/err" || fail "eval of a --drop-missing model: $(cat "$tmp/err")"
grep -q "cnf eval: .*dropped 3 of 60 rows" "$tmp/err" || fail "eval dropped: $(cat "$tmp/err")"
same_test_nll "$tmp/train" "$tmp/ev"
expect_error "eval --drop-missing=0" "line 6, field 2: empty field or missing value" \
  "$cnf" eval --model "$tmp/dm.safetensors" --data "$tmp/na.csv" --drop-missing=0
grep -q "cnf eval --drop-missing skips" "$tmp/err" || fail "eval names no remedy: $(cat "$tmp/err")"
# A model trained without --drop-missing: its file does not mention it, and eval takes the option.
! grep -aq drop-missing "$tmp/n.safetensors" || fail "drop-missing saved though not given"
grep -aq '"user.drop-missing":"1"' "$tmp/dm.safetensors" || fail "drop-missing not saved"
expect_error "eval: missing value" "na.csv: line 6, field 2" \
  "$cnf" eval --model "$tmp/n.safetensors" --data "$tmp/na.csv"
"$cnf" eval --model "$tmp/n.safetensors" --data "$tmp/na.csv" --drop-missing --json \
  > "$tmp/ev" 2> "$tmp/err" || fail "eval --drop-missing: $(cat "$tmp/err")"
grep -q "dropped 2 of 60 rows" "$tmp/err" || fail "eval --drop-missing dropped: $(cat "$tmp/err")"
grep -q '"n":58,' "$tmp/ev" || fail "eval --drop-missing rows: $(cat "$tmp/ev")"

# A --dequantize model on values outside its levels: the file's line, column and value.
"$cnf" train --data "$tmp/int.csv" $run --dequantize 10 --out "$tmp/q.safetensors" > /dev/null \
  || fail "train --dequantize --out"
expect_error "eval: value above LEVELS" "big.csv: line 43, field 1 (column 0, 'a'): 20 is outside" \
  "$cnf" eval --model "$tmp/q.safetensors" --data "$tmp/big.csv"
expect_error "eval: non-integer" "frac.csv: line 32, field 2 (column 1): 2.5 is not one of" \
  "$cnf" eval --model "$tmp/q.safetensors" --data "$tmp/frac.csv"
"$cnf" eval --model "$tmp/q.safetensors" --data "$tmp/int.csv" > /dev/null \
  || fail "eval of valid integer data"
echo "data checks: ok"
