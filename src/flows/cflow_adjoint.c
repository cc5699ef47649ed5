/* The CNF's gradients by adjoint solves: with the built-in steppers (checkpointed at the forward
 * solve's accepted steps, or backsolve) and with CVODES's checkpointed adjoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- gradients: adjoint with built-in steppers (checkpointed and backsolve) ------------------ */

/* Backward state w = [x (n, d) | a (n, d) | q (nq)]: x' = T v, a' = −∇ₓφ, q' = −∇_θφ (and
 * −∂φ/∂T last when T is trained), with φ = a·v·T − λ_ℓ T D + … (cflow_aug_vjp, with negated seeds
 * so that it accumulates the minus signs itself into the zeroed a', q'). */
typedef struct adj_start {
    double T;
    const double *F;
    double *dw;
    size_t nd; /* x' = T v in [0, nd), zeros after */
} adj_start;

static void adj_start_fn(void *ctx, size_t i0, size_t i1)
{
    const adj_start *as = ctx;
    size_t m = i1 < as->nd ? i1 : as->nd; /* [i0, m): x', [m, i1): zeros */
    if (i0 < m)
        scale_to(as->dw + i0, as->T, as->F + i0, m - i0);
    else
        m = i0;
    memset(as->dw + m, 0, (i1 - m) * sizeof(double));
}

static int adjoint_rhs(double tau, const double *w, double *dw, void *ctx)
{
    aug *a = ctx;
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, P = c->P;
    slot *s = &c->slot;
    int rc = cflow_aug_eval(a, s, tau, w, d, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    adj_start as = {.T = a->T, .F = s->F, .dw = dw, .nd = n * d};
    cflow_state_par(a, 2 * n * d + a->nq, adj_start_fn, &as);
    double *da = dw + n * d, *dq = dw + 2 * n * d;
    double gT = 0.0;
    rc = cflow_aug_vjp(a, s, tau, w + n * d, d, a->lam, -1.0, da, d, dq, a->nq > P ? &gT : NULL);
    if (rc)
        return rc < 0 ? rc : -1;
    if (a->nq > P)
        dq[P] = gT;
    return 0;
}

int cflow_adjoint_block(aug *a, const cnf_rk_tape *tr, const double *y_end, double t_end,
                        double t_start, const cnf_solve_config *sc, int backsolve, double *lam,
                        double *gtheta, double *gT, size_t *nfe)
{
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, S = d + 3, P = c->P;
    a->nq = P + (c->cfg.train_T ? 1 : 0);
    a->lam = lam;
    const size_t dim = 2 * n * d + a->nq;
    double *w = cflow_rev_scratch(c, dim, "the adjoint state");
    if (!w)
        return CNF_ENOMEM;
    memset(w + 2 * n * d, 0, a->nq * sizeof(double)); /* q(1) = 0 */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            w[i * d + j] = y_end[i * S + j];
            w[n * d + i * d + j] = lam[i * S + j];
        }
    cnf_ode_solver *s = NULL;
    int rc = cflow_solver(c, 1, sc->stepper, dim, &s);
    cnf_ode_options opt = sc->opt;
    opt.jvp = NULL; /* built-in methods: no Newton iteration */
    size_t intervals = backsolve ? 1 : tr->len;
    for (size_t m = intervals; rc == CNF_OK && m-- > 0;) {
        double t1 = backsolve ? t_end : tr->t[m] + tr->h[m];
        double t0 = backsolve ? t_start : tr->t[m];
        if (!backsolve) {
            /* Restart x from the stored forward state at the end of this interval. */
            const double *ys = m + 1 < tr->len ? tr->y + (m + 1) * tr->dim : y_end;
            for (size_t i = 0; i < n; i++)
                memcpy(w + i * d, ys + i * S, d * sizeof(double));
            opt.h0 = fabs(tr->h[m]);
            if (!cnf_stepper_is_adaptive(sc->stepper))
                opt.steps = 1;
        }
        cnf_ode_stats os = {0};
        rc = cnf_ode_solve_par(s, adjoint_rhs, a, t1, t0, w, &opt, NULL, NULL, &os,
                               cflow_state_par, a);
        *nfe += os.nfe;
    }
    if (rc == CNF_OK) {
        for (size_t i = 0; i < n; i++)
            memcpy(lam + i * S, w + n * d + i * d, d * sizeof(double));
        for (size_t m = 0; m < P; m++)
            gtheta[m] += w[2 * n * d + m];
        if (c->cfg.train_T)
            *gT += w[2 * n * d + P];
    }
    return rc;
}

/* ---- gradients: CVODES checkpointed adjoint -------------------------------------------------- */

/* CVODES calls the adjoint RHS and the quadrature RHS separately, usually at the same point:
 * one reverse pass serves both, cached by (τ, y, λ). */
typedef struct cv_ctx {
    aug *a;
    size_t dim;
    double tau;
    double *y, *lam;       /* (dim) the cached point */
    double *ga, *gq;       /* (n d) −∇ₓφ, (nq) −∇_θφ [, −∂φ/∂T] */
    int valid;
    double *gv;            /* (n d) cv_gj's −∇ₓ(v·g) */
} cv_ctx;

static int cv_eval(cv_ctx *cv, double tau, const double *y, const double *lam)
{
    aug *a = cv->a;
    const size_t d = a->c->cfg.dim, n = a->n, S = d + 3, P = a->c->P;
    if (cv->valid && cv->tau == tau && !memcmp(cv->y, y, cv->dim * sizeof(double)) &&
        !memcmp(cv->lam, lam, cv->dim * sizeof(double)))
        return 0;
    cv->valid = 0;
    slot *s = &a->c->slot;
    int rc = cflow_aug_eval(a, s, tau, y, S, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    memset(cv->ga, 0, n * d * sizeof(double));
    memset(cv->gq, 0, a->nq * sizeof(double));
    double gT = 0.0;
    a->lam = lam;
    rc = cflow_aug_vjp(a, s, tau, lam, S, lam, 1.0, cv->ga, d, cv->gq, a->nq > P ? &gT : NULL);
    if (rc)
        return rc < 0 ? rc : -1;
    if (a->nq > P)
        cv->gq[P] = gT;
    memcpy(cv->y, y, cv->dim * sizeof(double));
    memcpy(cv->lam, lam, cv->dim * sizeof(double));
    cv->tau = tau;
    cv->valid = 1;
    return 0;
}

static int cv_g(double tau, const double *y, const double *lam, double *out, void *ctx)
{
    cv_ctx *cv = ctx;
    int rc = cv_eval(cv, tau, y, lam);
    if (rc)
        return rc;
    const size_t d = cv->a->c->cfg.dim, n = cv->a->n, S = d + 3;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            out[i * S + j] = -cv->ga[i * d + j];
        out[i * S + d] = out[i * S + d + 1] = out[i * S + d + 2] = 0.0;
    }
    return 0;
}

static int cv_gq(double tau, const double *y, const double *lam, double *out, void *ctx)
{
    cv_ctx *cv = ctx;
    int rc = cv_eval(cv, tau, y, lam);
    if (rc)
        return rc;
    for (size_t m = 0; m < cv->a->nq; m++)
        out[m] = -cv->gq[m];
    return 0;
}

/* cvode-bdf's backward J·v: the adjoint RHS λ ↦ −(∂g/∂y)ᵀλ is linear in λ, so its Jacobian
 * applied to v is the RHS at v, exactly (one evaluation, as a difference quotient would cost). The
 * cache of cv_eval (at the true λ) is left alone. */
static int cv_gj(double tau, const double *y, const double *lam, const double *v, double *out,
                 void *ctx)
{
    (void)lam;
    cv_ctx *cv = ctx;
    aug *a = cv->a;
    const size_t d = a->c->cfg.dim, n = a->n, S = d + 3;
    slot *s = &a->c->slot;
    int rc = cflow_aug_eval(a, s, tau, y, S, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    memset(cv->gv, 0, n * d * sizeof(double));
    rc = cflow_aug_vjp(a, s, tau, v, S, v, 1.0, cv->gv, d, NULL, NULL);
    if (rc)
        return rc < 0 ? rc : -1;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            out[i * S + j] = -cv->gv[i * d + j];
        out[i * S + d] = out[i * S + d + 1] = out[i * S + d + 2] = 0.0;
    }
    return 0;
}

int cflow_cvodes_backward(aug *a, cnf_cvodes_adj *adj, const cnf_ode_options *opt, double *lam,
                          double *gtheta, double *gT, size_t *nfe)
{
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, S = d + 3, P = c->P, dim = n * S;
    a->nq = P + (c->cfg.train_T ? 1 : 0);
    cv_ctx cv = {.a = a, .dim = dim};
    cv.y = cnf_calloc(dim, sizeof(double));
    cv.lam = cnf_calloc(dim, sizeof(double));
    cv.ga = cnf_calloc(n * d, sizeof(double));
    cv.gq = cnf_calloc(a->nq, sizeof(double));
    cv.gv = cnf_calloc(n * d, sizeof(double));
    double *q = cnf_calloc(a->nq, sizeof(double));
    int rc = CNF_OK;
    if (!cv.y || !cv.lam || !cv.ga || !cv.gq || !cv.gv || !q)
        rc = cnf_fail(CNF_ENOMEM, "allocating the CVODES adjoint");
    cnf_ode_stats os = {0};
    if (rc == CNF_OK)
        rc = cnf_cvodes_adj_backward(adj, cv_g, cv_gq, cv_gj, &cv, lam, q, opt, &os);
    *nfe += os.nfe + os.njvp;
    if (rc == CNF_OK) {
        for (size_t m = 0; m < P; m++)
            gtheta[m] += q[m];
        if (c->cfg.train_T)
            *gT += q[P];
    }
    free(cv.y);
    free(cv.lam);
    free(cv.ga);
    free(cv.gq);
    free(cv.gv);
    free(q);
    return rc;
}
