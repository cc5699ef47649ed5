/* The CNF's forward solves: the solver kept from call to call, the probes, and encode/decode
 * through every block. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- forward solves ------------------------------------------------------------------------- */

void cflow_add_stats(cnf_flow_stats *st, const cnf_ode_stats *os)
{
    if (!st)
        return;
    st->nfe_forward += os->nfe + os->njvp; /* cvode-bdf's J·v products: field evaluations too */
    st->steps += os->accepted;
    st->rejected += os->rejected;
}

/* Options of a solve over the state layout: per-sample blocks, x and ℓ under error control,
 * the field's J·v for cvode-bdf. */
cnf_ode_options cflow_state_options(const cflow *c, const cnf_solve_config *sc)
{
    cnf_ode_options o = sc->opt;
    o.block = c->cfg.dim + 3;
    o.block_ctrl = c->cfg.dim + 1;
    o.jvp = cflow_aug_jvp;
    return o;
}

/* Solver `which` (0: forward solves, 1: the adjoint's) of c for method T on states of length
 * dim: the one kept from the last call when it matches (its workspace is then already paged
 * in: a d = 64 training step had faulted in ~7 MB of fresh solver arrays), else a new one. */
int cflow_solver(cflow *c, int which, const cnf_stepper_type *T, size_t dim,
                 cnf_ode_solver **out)
{
    if (!c->solver[which].s || c->solver[which].T != T || c->solver[which].dim != dim) {
        cnf_ode_solver_free(c->solver[which].s);
        c->solver[which].s = NULL;
        int rc = cnf_ode_solver_create(&c->solver[which].s, T, dim);
        if (rc)
            return rc;
        c->solver[which].T = T;
        c->solver[which].dim = dim;
    }
    *out = c->solver[which].s;
    return CNF_OK;
}

/* A forward solve of the augmented ODE of a (cflow_aug_rhs), its state-sized loops shared by the
 * MLP's threads (cflow_state_par). */
int cflow_solve(const cnf_solve_config *sc, aug *a, size_t dim, double t0, double t1, double *y,
                const cnf_ode_options *opt, cnf_ode_observer obs, void *obs_ctx,
                cnf_ode_stats *os)
{
    cnf_ode_solver *s = NULL;
    int rc = cflow_solver(a->c, 0, sc->stepper, dim, &s);
    if (rc == CNF_OK)
        rc = cnf_ode_solve_par(s, cflow_aug_rhs, a, t0, t1, y, opt, obs, obs_ctx, os,
                               cflow_state_par, a);
    return rc;
}

size_t cflow_n_tangents(const cflow *c, cnf_trace trace)
{
    return trace == CNF_TRACE_EXACT ? c->cfg.dim : c->cfg.probes;
}

void cflow_draw_probes(cnf_trace trace, double *U, size_t m, cnf_rng *rng)
{
    for (size_t i = 0; i < m; i++)
        U[i] = trace == CNF_TRACE_HUTCH_GAUSS ? cnf_rng_normal(rng) : cnf_rng_rademacher(rng);
}

/* Integrate every block in turn over the state y (n, S), from τ = 0 to 1 (dir > 0, data to
 * base) or from 1 to 0 in reverse block order (dir < 0, base to data). */
static int integrate_blocks(cflow *c, double *y, size_t n, cnf_trace trace, const double *U,
                            const cnf_solve_config *sc, int dir, cnf_flow_stats *st)
{
    const size_t K = cflow_n_tangents(c, trace), d = c->cfg.dim;
    int rc = cflow_ensure_slot(c, n, K);
    if (rc)
        return rc;
    cflow_hold_weights(c, 1);
    cnf_ode_options opt = cflow_state_options(c, sc);
    for (size_t i = 0; rc == CNF_OK && i < c->cfg.blocks; i++) {
        size_t b = dir > 0 ? i : c->cfg.blocks - 1 - i;
        aug a = {.c = c, .b = b, .n = n, .trace = trace, .K = K,
                 .U = U ? U + b * K * n * d : NULL, .T = cflow_end_time(c)};
        cnf_ode_stats os = {0};
        rc = cflow_solve(sc, &a, n * (d + 3), dir > 0 ? 0.0 : 1.0, dir > 0 ? 1.0 : 0.0, y,
                         &opt, NULL, NULL, &os);
        cflow_add_stats(st, &os);
    }
    cflow_hold_weights(c, 0);
    return rc;
}

/* Probes for an evaluation with a Hutchinson trace: from a fixed seed, so log_prob is a
 * deterministic function of its input. NULL for the exact trace (or on allocation failure,
 * reported through *rc). */
static double *eval_probes(cflow *c, cnf_trace trace, size_t n, int *rc)
{
    *rc = CNF_OK;
    if (trace == CNF_TRACE_EXACT)
        return NULL;
    size_t m = c->cfg.blocks * c->cfg.probes * n * c->cfg.dim;
    double *U = cnf_calloc(m, sizeof(double));
    if (!U) {
        *rc = cnf_fail(CNF_ENOMEM, "allocating %zu probes", m);
        return NULL;
    }
    cnf_rng r;
    cnf_rng_seed(&r, 0);
    cflow_draw_probes(trace, U, m, &r);
    return U;
}

/* encode (dir > 0): data → base, logdet = −ℓ(1). decode (dir < 0): base → data integrating
 * τ from 1 down to 0 with ℓ(1) = 0, so that ℓ(0) is −(ℓ(1) − ℓ(0)) of the forward direction and
 * logdet = +ℓ(0). */
static int cflow_map(cflow *c, int dir, const double *in, size_t n, double *out, double *logdet,
                     cnf_flow_stats *st)
{
    const size_t d = c->cfg.dim, S = d + 3;
    int rc;
    double *U = eval_probes(c, c->cfg.eval_trace, n, &rc);
    double *y = cnf_calloc(cnf_size_mul(n, S), sizeof(double));
    if (!y || rc) {
        free(U);
        free(y);
        return rc ? rc : cnf_fail(CNF_ENOMEM, "allocating the state of %zu samples", n);
    }
    for (size_t i = 0; i < n; i++)
        memcpy(y + i * S, in + i * d, d * sizeof(double));
    rc = integrate_blocks(c, y, n, c->cfg.eval_trace, U, &c->cfg.eval, dir, st);
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        memcpy(out + i * d, y + i * S, d * sizeof(double));
        logdet[i] = dir > 0 ? -y[i * S + d] : y[i * S + d];
    }
    free(U);
    free(y);
    return rc;
}

int cflow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                 cnf_flow_stats *st)
{
    return cflow_map((cflow *)f, +1, X, n, Z, logdet, st);
}

int cflow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                 cnf_flow_stats *st)
{
    return cflow_map((cflow *)f, -1, Z, n, X, logdet, st);
}
