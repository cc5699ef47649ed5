/* The CNF's scratch (the evaluation slot, the reverse passes' state) and its augmented field
 * g(τ, s) = T·[v, −D, ||v||², F̂] over the state layout (see cflow_internal.h): its evaluation, its
 * vector-Jacobian product, the RHS and J·v the solvers call. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- the flow's scratch --------------------------------------------------------------------- */

void cflow_slot_free(cflow *c, slot *s)
{
    if (s->work)
        c->ops.work_free(s->work);
    free(s->F);
    free(s->JU);
    free(s->D);
    free(s->Fh);
    free(s->R);
    free(s->S);
    free(s->phi);
    memset(s, 0, sizeof *s);
}

static int slot_alloc(cflow *c, slot *s, size_t n, size_t K)
{
    const size_t d = c->cfg.dim;
    int rc = c->ops.work_create(c->field_ctx, n, K, &s->work);
    if (rc)
        return rc;
    s->F = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    s->JU = cnf_calloc(cnf_size_mul(cnf_size_mul(K, n), d), sizeof(double));
    s->D = cnf_calloc(n, sizeof(double));
    s->Fh = cnf_calloc(n, sizeof(double));
    s->R = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    s->S = cnf_calloc(cnf_size_mul(cnf_size_mul(K, n), d), sizeof(double));
    s->phi = cnf_calloc(n, sizeof(double));
    if (!s->F || !s->JU || !s->D || !s->Fh || !s->R || !s->S || !s->phi)
        return cnf_fail(CNF_ENOMEM, "allocating CNF scratch for %zu samples", n);
    return CNF_OK;
}

/* Make the slot for n samples and K tangents available. */
int cflow_ensure_slot(cflow *c, size_t n, size_t K)
{
    if (c->have_slot && n <= c->n_cap && K <= c->k_cap)
        return CNF_OK;
    if (c->have_slot)
        cflow_slot_free(c, &c->slot);
    c->have_slot = 0;
    c->n_cap = n > c->n_cap ? n : c->n_cap;
    c->k_cap = K > c->k_cap ? K : c->k_cap;
    int rc = slot_alloc(c, &c->slot, c->n_cap, c->k_cap);
    if (rc) { /* nothing half-made stays for the next call */
        cflow_slot_free(c, &c->slot);
        return rc;
    }
    c->have_slot = 1;
    return CNF_OK;
}

double cflow_end_time(const cflow *c)
{
    if (!c->cfg.train_T)
        return c->cfg.T;
    double s = c->base.theta[c->base.n_params - 1];
    return s * s;
}

/* θ does not change during one of the flow's calls: the MLP may reuse the weights it prepared
 * (transposed, in float) from call to call while a block's slice comes back. */
void cflow_hold_weights(cflow *c, int hold)
{
    if (c->mlp)
        cnf_mlp_work_hold_weights(c->slot.work, hold);
}

/* len doubles of the flow's reverse-pass scratch (contents undefined), grown on demand; NULL
 * (reported) on allocation failure. */
double *cflow_rev_scratch(cflow *c, size_t len, const char *what)
{
    if (len > c->rev_cap) {
        double *r = len <= SIZE_MAX / sizeof(double) ? malloc(len * sizeof(double)) : NULL;
        if (!r) {
            cnf_fail(CNF_ENOMEM, "allocating %s (%zu values)", what, len);
            return NULL;
        }
        free(c->rev);
        c->rev = r;
        c->rev_cap = len;
    }
    return c->rev;
}

/* ---- the augmented field -------------------------------------------------------------------- */

static const double *block_theta(const aug *a) { return a->c->base.theta + a->b * a->c->P; }

/* t0 + Σ_j a_j b_j: eight interleaved partial sums added in a fixed tree, then the tail left to
 * right, so a loop of it vectorizes at every width (CNF_VECTOR_CLONES) with the same bits; for
 * n < 8 it is the plain left-to-right sum from t0. */
static inline double dot8(double t0, const double *a, const double *b, size_t n)
{
    double p[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (size_t q = 0; q < 8; q++)
            p[q] += a[j + q] * b[j + q];
    double t = t0 + (((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])));
    for (; j < n; j++)
        t += a[j] * b[j];
    return t;
}

/* Per sample: D = w Σ_k u_kᵀ J u_k (or the unit rows' diagonal when U is NULL) and
 * F̂ = w Σ_k |J u_k|², from JU (K, n, d). */
CNF_VECTOR_CLONES static void div_frob(size_t i0, size_t i1, size_t n, size_t K, size_t d,
                                       const double *U, const double *JU, double w, double *D,
                                       double *Fh)
{
    for (size_t i = i0; i < i1; i++) {
        double Di = 0.0, Fi = 0.0;
        for (size_t k = 0; k < K; k++) {
            const double *ju = JU + (k * n + i) * d;
            Di = U ? dot8(Di, U + (k * n + i) * d, ju, d) : Di + ju[k];
            Fi = dot8(Fi, ju, ju, d);
        }
        D[i] = w * Di;
        Fh[i] = w * Fi;
    }
}

/* Rows i0..i1 of dy = g(τ, y): T v, −T D, T |v|², T F̂ in the state layout. */
CNF_VECTOR_CLONES static void store_rows(size_t i0, size_t i1, size_t d, double T,
                                         const double *F, const double *D, const double *Fh,
                                         double *dy)
{
    const size_t S = d + 3;
    for (size_t i = i0; i < i1; i++) {
        const double *v = F + i * d;
        double *o = dy + i * S;
        for (size_t j = 0; j < d; j++)
            o[j] = T * v[j];
        o[d] = -T * D[i];
        o[d + 1] = T * dot8(0.0, v, v, d);
        o[d + 2] = T * Fh[i];
    }
}

/* The seeds of cflow_aug_vjp's reverse pass, R (n, d) on v and S (K, n, d) on J u_k, and per sample
 * the part of φ that does not go through the field: phi_i = a_i·v_i − λ_ℓ D_i + λ_E |v_i|²
 * + λ_N F̂_i; all times sg = ±1 (−1: the pass yields −∇φ, exactly the negated values). */
CNF_VECTOR_CLONES static void vjp_seeds(size_t i0, size_t i1, size_t n, size_t K, size_t d,
                                        double sg, double T, double w, const double *F,
                                        const double *ax,
                                        size_t lda, const double *lam, const double *U,
                                        const double *JU, const double *D, const double *Fh,
                                        double *R, double *Sd, double *phi)
{
    const size_t S = d + 3;
    T *= sg;
    for (size_t i = i0; i < i1; i++) {
        const double *v = F + i * d, *ai = ax + i * lda;
        const double ll = lam[i * S + d], lE = lam[i * S + d + 1], lN = lam[i * S + d + 2];
        for (size_t j = 0; j < d; j++)
            R[i * d + j] = T * (ai[j] + 2.0 * lE * v[j]);
        const double e = dot8(0.0, v, v, d), av = dot8(0.0, ai, v, d);
        phi[i] = sg * (av - ll * D[i] + lE * e + lN * Fh[i]);
        for (size_t k = 0; k < K; k++) {
            const double *ju = JU + (k * n + i) * d;
            double *sk = Sd + (k * n + i) * d;
            for (size_t j = 0; j < d; j++)
                sk[j] = T * (2.0 * lN * w) * ju[j];
            if (U) {
                const double *u = U + (k * n + i) * d;
                for (size_t j = 0; j < d; j++)
                    sk[j] -= T * ll * w * u[j];
            } else {
                sk[k] -= T * ll;
            }
        }
    }
}

/* The per-sample loops around the field's calls over a range of samples, so that the MLP's
 * threads can share them (cnf_mlp_work_rows; each sample is computed alone, so the split
 * changes no bits). */
typedef struct rows_ctx {
    const aug *a;
    const slot *s;
    int what; /* 0: div_frob, 1: store_rows, 2: vjp_seeds */
    double sg; /* vjp_seeds' sign */
    double *dy;
    const double *ax, *lam;
    size_t lda;
} rows_ctx;

static void rows_fn(void *ctx, size_t i0, size_t i1)
{
    const rows_ctx *r = ctx;
    const aug *a = r->a;
    const slot *s = r->s;
    const size_t d = a->c->cfg.dim, n = a->n, K = a->K;
    const double w = a->trace == CNF_TRACE_EXACT ? 1.0 : 1.0 / (double)K;
    if (r->what == 0)
        div_frob(i0, i1, n, K, d, a->U, s->JU, w, s->D, s->Fh);
    else if (r->what == 1)
        store_rows(i0, i1, d, a->T, s->F, s->D, s->Fh, r->dy);
    else
        vjp_seeds(i0, i1, n, K, d, r->sg, a->T, w, s->F, r->ax, r->lda, r->lam, a->U, s->JU, s->D,
                  s->Fh, s->R, s->S, s->phi);
}

/* fn over [0, n) (samples, or values of a state), shared by the MLP's threads when the work
 * touches `values` values or more (handing work to the threads costs a few µs: worth it from
 * ~16k values, not at FFJORD's toy batch of 100 × 2 × 3). */
void cflow_split_rows(const aug *a, size_t values, size_t n, void (*fn)(void *, size_t, size_t),
                      void *ctx)
{
    if (a->c->mlp && values >= 16384)
        cnf_mlp_work_rows(a->c->slot.work, n, fn, ctx);
    else
        fn(ctx, 0, n);
}

/* The solver's state-sized loops (cnf_ode_solve_par): fn over the state's n values. */
void cflow_state_par(void *ctx, size_t n, void (*fn)(void *, size_t, size_t), void *arg)
{
    cflow_split_rows(ctx, n, n, fn, arg);
}

static void per_sample(const aug *a, const slot *s, rows_ctx *r)
{
    r->a = a;
    r->s = s;
    cflow_split_rows(a, a->n * a->c->cfg.dim * (1 + a->K), a->n, rows_fn, r);
}

/* v, J u, D, F̂ at (τ, X) into slot s; for_vjp: cflow_aug_vjp on s follows (otherwise the MLP may
 * drop its activations as it goes, cnf_mlp_work_set_keep). */
int cflow_aug_eval(aug *a, slot *s, double tau, const double *X, size_t ldx, int for_vjp)
{
    const size_t d = a->c->cfg.dim, n = a->n, K = a->K;
    if (a->c->mlp)
        cnf_mlp_work_set_keep(s->work, for_vjp);
    int rc = a->c->ops.jvp(a->c->field_ctx, block_theta(a), a->T * tau, X, ldx, n, a->U, K, s->F,
                           d, s->JU, s->work);
    if (rc)
        return rc;
    a->nfe++;
    rows_ctx r = {.what = 0};
    per_sample(a, s, &r);
    return CNF_OK;
}

/* dy = g(τ, y) from a slot filled by cflow_aug_eval; y and dy have the state layout. */
void cflow_aug_store(const aug *a, const slot *s, double *dy)
{
    rows_ctx r = {.what = 1, .dy = dy};
    per_sample(a, s, &r);
}

/* φ = sg Σ_i λ_i·g(τ, s_i) (sg = ±1) for cotangents ax (n, lda) on x and lam (stride S,
 * components d..d+2) on (ℓ, E, N), after cflow_aug_eval on slot s: accumulates ∇ₓφ into gx
 * (n, ldgx), ∇_θφ into gtheta (the block's slice) and ∂φ/∂T into *gT; any may be NULL. */
int cflow_aug_vjp(aug *a, slot *s, double tau, const double *ax, size_t lda, const double *lam,
                  double sg, double *gx, size_t ldgx, double *gtheta, double *gT)
{
    const size_t d = a->c->cfg.dim, n = a->n, K = a->K;
    rows_ctx r = {.what = 2, .sg = sg, .ax = ax, .lda = lda, .lam = lam};
    per_sample(a, s, &r);
    double phi0 = 0.0; /* in sample order, as one loop adds it */
    for (size_t i = 0; gT && i < n; i++)
        phi0 += s->phi[i];
    double gt = 0.0;
    int rc = a->c->ops.backward(a->c->field_ctx, block_theta(a), s->R, d, K ? s->S : NULL, gx,
                                ldgx, gtheta, gT ? &gt : NULL, s->work);
    if (rc)
        return rc;
    a->nfe++;
    if (gT)
        *gT += phi0 + tau * gt;
    return CNF_OK;
}

int cflow_aug_rhs(double tau, const double *y, double *dy, void *ctx)
{
    aug *a = ctx;
    slot *s = &a->c->slot;
    int rc = cflow_aug_eval(a, s, tau, y, a->c->cfg.dim + 3, 0);
    if (rc)
        return rc < 0 ? rc : -1;
    cflow_aug_store(a, s, dy);
    return 0;
}

/* J·w of the augmented field for cvode-bdf's Newton–Krylov iteration (cnf_ode_options.jvp), per
 * sample with w = (w_x, w_ℓ, w_E, w_N): only x enters g = (T v, −T D, T |v|², T F̂), so the ℓ, E, N
 * columns of the Jacobian are zero, and
 *     x rows  T J w_x,   E row  2T v·J w_x      exactly, from one tangent pass of the field
 *                                               (cheaper than g itself, which carries K tangents);
 *     ℓ row  −T ∇D·w_x,  N row  T ∇F̂·w_x        left 0.
 * The ℓ and N rows need second derivatives of v (D = tr J, F̂ = |J|²), which the field does not
 * provide; a difference quotient for them would cost a full evaluation of g per product, more
 * than CVODE's own difference quotient of the whole of g. Leaving them 0 changes nothing for x:
 * the Newton matrix I − γJ is block lower triangular (nothing depends on ℓ, E, N), so the x
 * part of every Newton update is the same, and ℓ, N take the values the corrector equation
 * gives at the current x — one iteration behind x, converging with it. */
int cflow_aug_jvp(double tau, const double *y, const double *w, double *Jw, void *ctx)
{
    aug *a = ctx;
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, S = d + 3;
    slot *s = &c->slot;
    double *W = s->R; /* (n, d) the tangents w_x; R is cflow_aug_vjp's scratch, free here */
    for (size_t i = 0; i < n; i++)
        memcpy(W + i * d, w + i * S, d * sizeof(double));
    if (c->mlp)
        cnf_mlp_work_set_keep(s->work, 0);
    int rc = c->ops.jvp(c->field_ctx, block_theta(a), a->T * tau, y, S, n, W, 1, s->F, d, s->JU,
                        s->work);
    if (rc)
        return rc < 0 ? rc : -1;
    const double T = a->T;
    for (size_t i = 0; i < n; i++) {
        const double *v = s->F + i * d, *jw = s->JU + i * d;
        double *o = Jw + i * S;
        scale_to(o, T, jw, d);
        o[d] = 0.0;
        o[d + 1] = 2.0 * T * dot8(0.0, v, jw, d);
        o[d + 2] = 0.0;
    }
    return 0;
}
