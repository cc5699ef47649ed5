#!/usr/bin/python3
"""tabular_baselines.py: the classical baselines of examples/tabular_bench.sh on cnf's own split.

    tabular_baselines.py DATA.csv OUTPREFIX [--seed S] [--val-frac F] [--test-frac F]
                         [--levels L] [--alpha A] [--max-components K] [--split-only]

Rebuilds the train/validation/test split that `cnf train --data DATA.csv --seed S` makes (the
same xoshiro256** stream, seeded with S xor 0x5b1175, the same Fisher-Yates shuffle and the same
block sizes), then fits on the training rows, with cnf's preprocessing (integer data with
--levels L: uniform dequantisation and the logit transform with --alpha; standardisation):
  - a full-covariance Gaussian,
  - Gaussian mixtures with full covariances (scikit-learn), 1, 2, 4, ... components, the count
    chosen on the validation rows,
and writes OUTPREFIX.split (the file row index of every test row, in the split's order: the
order of `cnf eval --split test --scores`), OUTPREFIX.gauss.scores and OUTPREFIX.gmm.scores (log p
of each test row, in data space like cnf's, in that order), and prints one JSON line per model.
Needs Debian's python3-numpy and python3-sklearn (/usr/bin/python3).
"""
import argparse
import json
import sys
import time

import numpy as np

M64 = (1 << 64) - 1


class Xoshiro:
    """cnf_rng: xoshiro256** seeded by splitmix64 (src/core/rng.c)."""

    def __init__(self, seed):
        self.s = []
        x = seed & M64
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def u64(self):
        s = self.s
        result = (self.rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return result

    def below(self, n):
        threshold = ((1 << 64) - n) % n
        while True:
            r = self.u64()
            if r >= threshold:
                return r % n


def cnf_split(n, seed, val_frac, test_frac):
    """Row indices of (train, val, test) in cnf's split order (dataopts.c data_load)."""
    rng = Xoshiro(seed ^ 0x5B1175)
    idx = list(range(n))
    for i in range(n, 1, -1):
        j = rng.below(i)
        idx[i - 1], idx[j] = idx[j], idx[i - 1]
    n_val, n_test = int(val_frac * n), int(test_frac * n)
    n_train = n - n_val - n_test
    idx = np.array(idx)
    return idx[:n_train], idx[n_train:n_train + n_val], idx[n_train + n_val:]


class Pre:
    """cnf/pre.h without PCA: drop constant columns, logit for integer data, standardise.
    transform(X) gives (Y, logdet) with log p(x) = log q(Y) + logdet."""

    def __init__(self, X, levels, alpha):
        self.levels, self.alpha = levels, alpha
        fit = X + 0.5 if levels > 0 else X
        self.keep = fit.std(axis=0) > 0
        u = self._logit(fit[:, self.keep])[0]
        self.mean, self.sd = u.mean(axis=0), u.std(axis=0)

    def _logit(self, X):
        if self.levels <= 0:
            return X, np.zeros(len(X))
        a, L = self.alpha, self.levels
        y = a + (1 - 2 * a) * X / L
        u = np.log(y) - np.log1p(-y)
        return u, (np.log((1 - 2 * a) / L) - np.log(y) - np.log1p(-y)).sum(axis=1)

    def transform(self, X):
        u, ld = self._logit(X[:, self.keep])
        return (u - self.mean) / self.sd, ld - np.log(self.sd).sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--test-frac", type=float, default=0.1)
    ap.add_argument("--levels", type=float, default=0)
    ap.add_argument("--alpha", type=float, default=1e-6)
    ap.add_argument("--max-components", type=int, default=64)
    ap.add_argument("--copies", type=int, default=4,
                    help="integer data: dequantised copies of the training rows to fit on")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="mixture: no further component count once this budget would be passed")
    ap.add_argument("--split-only", action="store_true")
    a = ap.parse_args()

    X = np.loadtxt(a.data, delimiter=",", skiprows=1, ndmin=2)
    tr, va, te = cnf_split(len(X), a.seed, a.val_frac, a.test_frac)
    np.savetxt(a.out + ".split", te, fmt="%d")
    if a.split_only:
        return
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(a.seed + 12345)
    Xtr, Xva, Xte = X[tr], X[va], X[te]
    if a.levels > 0:  # fresh noise per copy for training, one draw for the held-out rows
        Xtr = np.concatenate([Xtr + rng.random(Xtr.shape) for _ in range(a.copies)])
        Xva, Xte = Xva + rng.random(Xva.shape), Xte + rng.random(Xte.shape)
    pre = Pre(X[tr], a.levels, a.alpha)
    (Ytr, _), (Yva, ldva), (Yte, ldte) = map(pre.transform, (Xtr, Xva, Xte))

    def report(name, lp, t0, extra):
        np.savetxt(f"{a.out}.{name}.scores", lp, fmt="%.17g")
        nll = -lp
        print(json.dumps(dict(model=name, test_nll=nll.mean(),
                              test_nll_stderr=nll.std(ddof=1) / np.sqrt(len(nll)),
                              seconds=time.time() - t0, n_test=len(nll), **extra)))

    t0 = time.time()
    g = GaussianMixture(1, covariance_type="full", reg_covar=1e-6).fit(Ytr)
    report("gauss", g.score_samples(Yte) + ldte, t0, {})

    t0 = time.time()
    best, k = None, 1
    while k <= a.max_components and k * (Ytr.shape[1] + 1) < len(Ytr):
        t1 = time.time()
        m = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, n_init=1,
                            max_iter=500, random_state=a.seed).fit(Ytr)
        v = (m.score_samples(Yva) + ldva).mean()
        print(f"gmm {k} components: validation log p {v:.4f}", file=sys.stderr)
        last = time.time() - t1
        if best is None or v > best[0]:
            best = (v, k, m)
        elif k >= 2 * best[1] * 2:  # two doublings without improvement
            break
        k *= 2
        # the next fit takes about twice as long: stop when it would pass the budget
        if a.max_seconds > 0 and time.time() - t0 + 2.5 * last > a.max_seconds:
            break
    v, k, m = best
    report("gmm", m.score_samples(Yte) + ldte, t0, dict(components=k, val_nll=-v))


if __name__ == "__main__":
    main()
