#!/bin/sh
# Smoke test of `cnf bench --quick --json`: the last line is one JSON object with the keys of
# issue 9 and positive figures. No timing is asserted (STYLE.md rule 13).
set -eu
cnf="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$cnf" bench --quick --json --repeats 1 --toy-iters 3 > "$tmp/out" 2> "$tmp/err"
python3 - "$tmp/out" <<'PY'
import json, sys
o = json.loads(open(sys.argv[1]).read().splitlines()[-1])
m = o["meta"]
for k in ("cpu", "cores", "blas_core", "blas_threads", "cnf_threads", "precision"):
    assert k in m, k
seen = set()
for r in o["results"]:
    seen.add(r["bench"])
    for k in ("bench", "d", "trace", "solver", "grad", "batch", "precision", "median_s",
              "points_per_s", "nfe_fwd", "nfe_bwd", "peak_rss_mb"):
        assert k in r, (k, r)
    assert r["median_s"] > 0 and r["points_per_s"] > 0, r
    assert r["trace"] in ("exact", "hutch") and r["precision"] in ("double", "mixed"), r
    if r["bench"] == "rhs":
        assert r["gflops"] > 0 and r["gemm_gflops"] > 0 and r["gemm_blocked_gflops"] > 0, r
    elif r["bench"] in ("eval", "train", "toy"):
        assert r["nfe_fwd"] > 0, r
        assert r["solver"] in ("rk4", "dopri5"), r
    if r["bench"] in ("train", "toy"):
        assert r["nfe_bwd"] > 0 and r["grad"] in ("backprop", "adjoint", "backsolve"), r
assert seen == {"rhs", "eval", "train", "toy"}, seen
toy = sorted(r["grad"] for r in o["results"] if r["bench"] == "toy")
assert toy == ["adjoint", "backsolve"], toy
PY
# A subset, and a bad case name.
"$cnf" bench --quick --cases rhs --repeats 1 | grep -q "GFLOP/s"
if "$cnf" bench --cases nope 2>/dev/null; then echo "bad case accepted"; exit 1; fi
echo ok
