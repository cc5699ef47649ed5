#!/usr/bin/env python3
"""The computations of `cnf bench` in plain PyTorch, for a back-to-back comparison.

A straightforward reference in the style of FFJORD (Grathwohl et al. 2019): the same field
(64-64-64 tanh, FFJORD's ConcatSquashLinear layers), the exact divergence by one autograd pass
per dimension (FFJORD's divergence_bf) or Hutchinson's estimator with one Rademacher probe, and
RK4 with 20 steps over [0, 1] written out in torch so that backprop goes through the steps.
torchdiffeq is not packaged in Debian, so the adaptive Dopri5/adjoint toy configuration is not
reproduced here: compare `cnf bench`'s toy case with FFJORD's own train_toy.py (0.078 s per
iteration on this machine, issue 9), or install torchdiffeq and run FFJORD.

    OPENBLAS_NUM_THREADS=1 python3 examples/pytorch_reference.py   # float32, torch threads 2
    python3 examples/pytorch_reference.py --dtype float64 --json

Prints one line per case and, with --json, one JSON object {"meta", "results"} as the last line
with the keys `cnf bench --json` uses (bench, d, trace, solver, grad, batch, precision, median_s,
points_per_s, gflops for rhs).
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn


class ConcatSquashLinear(nn.Module):
    """FFJORD's layer: (W x + b) * sigmoid(w_g t + b_g) + c t."""

    def __init__(self, din, dout):
        super().__init__()
        self.layer = nn.Linear(din, dout)
        self.hyper_gate = nn.Linear(1, dout)
        self.hyper_bias = nn.Linear(1, dout, bias=False)

    def forward(self, t, x):
        tt = t.view(1, 1)
        return self.layer(x) * torch.sigmoid(self.hyper_gate(tt)) + self.hyper_bias(tt)


class ODEnet(nn.Module):
    def __init__(self, d, hidden=(64, 64, 64)):
        super().__init__()
        dims = [d, *hidden, d]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, t, x):
        for i, layer in enumerate(self.layers):
            x = layer(t, x)
            if i + 1 < len(self.layers):
                x = torch.tanh(x)
        return x


def divergence_exact(f, y):
    """FFJORD's divergence_bf: one autograd pass per dimension."""
    div = 0.0
    for i in range(y.shape[1]):
        div = div + torch.autograd.grad(f[:, i].sum(), y, create_graph=True)[0][:, i]
    return div


def divergence_hutch(f, y, e):
    e_dfdy = torch.autograd.grad(f, y, e, create_graph=True)[0]
    return (e_dfdy * e).sum(dim=1)


def aug_rhs(net, t, y, logp_dummy, trace, e):
    with torch.enable_grad():
        y = y if y.requires_grad else y.requires_grad_(True)
        f = net(t, y)
        div = divergence_exact(f, y) if trace == "exact" else divergence_hutch(f, y, e)
    return f, -div


def rk4_logp(net, x, trace, steps=20, e=None):
    """Integrate (x, ℓ) from t = 0 to 1 with RK4; returns z and ℓ(1) (= −∫ div)."""
    dtype = x.dtype
    h = 1.0 / steps
    y = x
    ell = torch.zeros(x.shape[0], dtype=dtype)
    for n in range(steps):
        t = torch.tensor(n * h, dtype=dtype)
        k1y, k1l = aug_rhs(net, t, y, ell, trace, e)
        k2y, k2l = aug_rhs(net, t + h / 2, y + h / 2 * k1y, ell, trace, e)
        k3y, k3l = aug_rhs(net, t + h / 2, y + h / 2 * k2y, ell, trace, e)
        k4y, k4l = aug_rhs(net, t + h, y + h * k3y, ell, trace, e)
        y = y + h / 6 * (k1y + 2 * k2y + 2 * k3y + k4y)
        ell = ell + h / 6 * (k1l + 2 * k2l + 2 * k3l + k4l)
    return y, ell


def log_prob(net, x, trace, e=None):
    z, ell = rk4_logp(net, x, trace, e=e)
    d = x.shape[1]
    logpz = -0.5 * (z ** 2).sum(1) - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
    return logpz - ell


def eight_gaussians(n, dtype, gen):
    scale = 4.0
    s = 1 / 2 ** 0.5
    centers = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)],
                           dtype=dtype) * scale
    idx = torch.randint(0, 8, (n,), generator=gen)
    pts = torch.randn(n, 2, generator=gen, dtype=dtype) * 0.5 + centers[idx]
    return pts / 1.414


CPU = []  # process CPU seconds per run of the last timed() call (all threads)


def timed(fn, repeats):
    fn()  # warm-up
    ts = []
    c0 = time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    CPU[:] = [(time.process_time() - c0) / repeats]
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2 is PyTorch's best here)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small batches (smoke run)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = torch.float32 if a.dtype == "float32" else torch.float64
    torch.set_default_dtype(dtype)
    gen = torch.Generator().manual_seed(0)
    prec = "single" if dtype == torch.float32 else "double"
    results = []

    def report(r):
        r["cpu_s"] = CPU[0]
        results.append(r)
        extra = f"  {r['gflops']:.1f} GFLOP/s" if "gflops" in r else ""
        print(f"{r['bench']:5s} d={r['d']:<3d} {r['trace']:5s} {r['solver']:6s} {r['grad']:8s} "
              f"batch={r['batch']:<6d} {prec:6s} median {r['median_s']:9.5f} s "
              f"{r['points_per_s']:10.0f} pts/s{extra}  cpu {r['cpu_s']:.5f} s", flush=True)

    n_eval = 1000 if a.quick else 10000
    n_train = 128 if a.quick else 512

    # 3. The MLP right-hand side alone: v and its exact divergence at n_eval points.
    torch.manual_seed(4)
    net = ODEnet(2)
    x = eight_gaussians(n_eval, dtype, gen)
    t = torch.tensor(0.5)
    flops = 2.0 * n_eval * 3 * (2 * 64 + 2 * 64 * 64 + 64 * 2)

    def rhs():
        # Forward and the exact divergence (FFJORD's way: d reverse passes).
        y = x.detach().requires_grad_(True)
        f = net(t, y)
        divergence_exact(f, y)

    med = timed(rhs, a.repeats)
    report(dict(bench="rhs", d=2, trace="exact", solver="", grad="none", batch=n_eval,
                precision=prec, median_s=med, points_per_s=n_eval / med, gflops=flops / med * 1e-9))

    # 1. Log-density of n_eval points, RK4 20 steps, exact trace.
    def ev():
        xx = x.detach().clone().requires_grad_(True)
        lp = log_prob(net, xx, "exact")
        lp.detach()

    med = timed(ev, a.repeats)
    report(dict(bench="eval", d=2, trace="exact", solver="rk4", grad="none", batch=n_eval,
                precision=prec, median_s=med, points_per_s=n_eval / med))

    # 2. One training step on n_train points, RK4 20 steps, backprop through the steps.
    for d, trace in ((2, "exact"), (16, "hutch"), (64, "hutch")):
        torch.manual_seed(2)
        net_d = ODEnet(d)
        opt = torch.optim.Adam(net_d.parameters(), lr=1e-3)
        xd = eight_gaussians(n_train, dtype, gen) if d == 2 else torch.randn(n_train, d, generator=gen)
        e = torch.randint(0, 2, (n_train, d), generator=gen).to(dtype) * 2 - 1

        def step():
            opt.zero_grad()
            xx = xd.clone().requires_grad_(True)
            loss = -log_prob(net_d, xx, trace, e).mean()
            loss.backward()
            opt.step()

        med = timed(step, a.repeats)
        report(dict(bench="train", d=d, trace=trace, solver="rk4", grad="backprop", batch=n_train,
                    precision=prec, median_s=med, points_per_s=n_train / med))

    if a.json:
        meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), dtype=a.dtype,
                    cpu=next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                              if l.startswith("model name")), "unknown"),
                    cores=os.cpu_count())
        print(json.dumps(dict(meta=meta, results=results)))


if __name__ == "__main__":
    main()
