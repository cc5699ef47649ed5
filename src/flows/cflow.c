/* Continuous normalizing flow: the augmented ODE, log-density, sampling, and the three gradient
 * passes (see cnf/cflow.h for the math and DESIGN.md §2 for its derivation).
 *
 * State layout: one block of S = d + 3 numbers per sample, (x, ℓ, E, N), so the MLP reads x with
 * row stride S and the solver's max-over-blocks norm sees one sample per block; only x and ℓ are
 * under error control (block_ctrl = d + 1). Time is τ ∈ [0, 1]: g(τ, s) = T·[v, −D, ||v||², F̂]
 * evaluated at t = Tτ.
 *
 * The adjoint of the loss L w.r.t. the state, λ = (a, λ_ℓ, λ_E, λ_N) per sample, has constant
 * λ_ℓ, λ_E, λ_N (g does not depend on ℓ, E, N). Every backward pass needs the same vector-Jacobian
 * product of g, φ = λ·g, which is one call of the field's reverse kernel with seeds
 *     R = T (a + 2 λ_E v),   S_k = T (−λ_ℓ w u_k + (2 λ_N / K) J u_k),
 * w = 1 for the exact trace (u_k = e_k) and 1/K for Hutchinson; and ∂φ/∂T = φ/T + τ ∂φ/∂t. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/cflow.h"
#include "flow.h"
#include "core/internal.h"
#include "core/vmath.h"
#include "nn/internal.h"
#include "solvers/internal.h"

/* ---- names and defaults --------------------------------------------------------------------- */

static const char *const trace_names[] = {"exact", "hutchinson-gauss", "hutchinson-rademacher"};
static const char *const grad_names[] = {"backprop", "adjoint", "backsolve"};

static int name_lookup(const char *what, const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i]))
            return i;
    cnf_fail(CNF_ENAME, "unknown %s '%s' (valid: %s, %s, %s)", what, name ? name : "(null)",
             names[0], names[1], names[2]);
    return -1;
}

int cnf_trace_from_name(const char *name, cnf_trace *out)
{
    int i = name_lookup("trace estimator", trace_names, 3, name);
    if (i < 0)
        return CNF_ENAME;
    *out = (cnf_trace)i;
    return CNF_OK;
}

const char *cnf_trace_name(cnf_trace t) { return (unsigned)t < 3 ? trace_names[t] : "invalid"; }

int cnf_grad_mode_from_name(const char *name, cnf_grad_mode *out)
{
    int i = name_lookup("gradient mode", grad_names, 3, name);
    if (i < 0)
        return CNF_ENAME;
    *out = (cnf_grad_mode)i;
    return CNF_OK;
}

const char *cnf_grad_mode_name(cnf_grad_mode g)
{
    return (unsigned)g < 3 ? grad_names[g] : "invalid";
}

void cnf_cflow_config_default(cnf_cflow_config *cfg, size_t dim)
{
    static const size_t toy_hidden[] = {64, 64, 64};
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = dim;
    cfg->n_hidden = 3;
    cfg->hidden = toy_hidden;
    cfg->act = CNF_ACT_TANH;
    cfg->time = CNF_TIME_CONCATSQUASH;
    cfg->blocks = 1;
    cfg->T = 1.0;
    cfg->trace = CNF_TRACE_EXACT;
    cfg->probes = 1;
    cfg->eval_trace = CNF_TRACE_EXACT;
    cfg->grad = CNF_GRAD_ADJOINT;
    cfg->train.stepper = cnf_stepper_dopri5;
    cnf_ode_options_default(&cfg->train.opt);
    cfg->train.opt.rtol = cfg->train.opt.atol = 1e-5;
    cfg->eval = cfg->train;
    cfg->checkpoint_steps = 50;
}

/* ---- the MLP as a field --------------------------------------------------------------------- */

static int mlp_work_create(void *ctx, size_t n_max, size_t k_max, void **work)
{
    return cnf_mlp_work_create((cnf_mlp_work **)work, ctx, n_max, k_max);
}

static void mlp_work_free(void *work) { cnf_mlp_work_free(work); }

static int mlp_jvp(void *ctx, const double *theta, double t, const double *X, size_t ldx,
                   size_t n, const double *U, size_t K, double *F, size_t ldf, double *JU,
                   void *work)
{
    return cnf_mlp_jvp(ctx, theta, t, X, ldx, n, U, K, F, ldf, JU, work);
}

static int mlp_backward(void *ctx, const double *theta, const double *R, size_t ldr,
                        const double *S, double *GX, size_t ldgx, double *gtheta, double *gt,
                        void *work)
{
    return cnf_mlp_backward(ctx, theta, R, ldr, S, GX, ldgx, gtheta, gt, work);
}

/* ---- the flow object ------------------------------------------------------------------------ */

/* One evaluation of g with everything its VJP needs: the field's workspace and v, J u, D, F̂. */
typedef struct slot {
    void *work;
    double *F;  /* (n, d) v, unscaled */
    double *JU; /* (K, n, d) */
    double *D;  /* (n) divergence (estimate) */
    double *Fh; /* (n) Frobenius (estimate) */
    double *R, *S; /* (n, d), (K, n, d) seeds */
    double *phi;   /* (n) aug_vjp's per-sample part of φ */
} slot;


typedef struct cflow {
    cnf_flow base;
    cnf_cflow_config cfg;
    size_t *hidden;
    cnf_mlp *mlp; /* NULL for a user field */
    cnf_field_ops ops;
    void *field_ctx;
    size_t P; /* field parameters per block */
    /* Scratch sized for n_cap samples and k_cap tangents, grown on demand. */
    size_t n_cap, k_cap;
    slot slot;     /* every evaluation's (ensure_slot) */
    int have_slot;
    /* Each block's forward trajectory for the gradient (traj), kept from call to call so that a
     * training loop reuses the pages instead of faulting them in again. */
    struct traj *trs;
    size_t n_trs;
    /* The reverse passes' state-sized scratch (backprop's stage cotangents, the adjoint's
     * backward state), kept likewise (rev_scratch). */
    double *rev;
    size_t rev_cap;
    /* The solvers of the last forward (0) and adjoint (1) solves, with their workspaces, reused
     * while the method and the state's length stay the same (flow_solver). */
    struct {
        cnf_ode_solver *s;
        const cnf_stepper_type *T;
        size_t dim;
    } solver[2];
} cflow;

static const cnf_flow_type cflow_type;

static cflow *as_cflow(cnf_flow *f) { return f && f->type == &cflow_type ? (cflow *)f : NULL; }

static void slot_free(cflow *c, slot *s)
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
static int ensure_slot(cflow *c, size_t n, size_t K)
{
    if (c->have_slot && n <= c->n_cap && K <= c->k_cap)
        return CNF_OK;
    if (c->have_slot)
        slot_free(c, &c->slot);
    c->have_slot = 0;
    c->n_cap = n > c->n_cap ? n : c->n_cap;
    c->k_cap = K > c->k_cap ? K : c->k_cap;
    int rc = slot_alloc(c, &c->slot, c->n_cap, c->k_cap);
    if (rc) { /* nothing half-made stays for the next call */
        slot_free(c, &c->slot);
        return rc;
    }
    c->have_slot = 1;
    return CNF_OK;
}

static double end_time(const cflow *c)
{
    if (!c->cfg.train_T)
        return c->cfg.T;
    double s = c->base.theta[c->base.n_params - 1];
    return s * s;
}

/* ---- the augmented field -------------------------------------------------------------------- */

/* What one solve integrates: block b, n samples, its divergence estimator and probes. */
typedef struct aug {
    cflow *c;
    size_t b, n;
    cnf_trace trace;
    size_t K;
    const double *U; /* (K, n, d) probes; NULL for the exact trace */
    double T;
    /* Backward passes: the constant adjoint components per sample (stride S) and, for the
     * built-in adjoint, the solve's own parameter count. */
    const double *lam;
    size_t nq;
    size_t nfe; /* field evaluations (forward or reverse) counted here */
    struct traj *rec; /* forward solve for backprop: aug_rhs hands it every stage argument */
} aug;

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

/* y = a x and y += a x over n values (vectorized per width; no reduction, so the same bits). */
CNF_VECTOR_CLONES static void scale_to(double *restrict y, double a, const double *restrict x,
                                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = a * x[i];
}

CNF_VECTOR_CLONES static void axpy(double *restrict y, double a, const double *restrict x,
                                   size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
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

/* The seeds of aug_vjp's reverse pass, R (n, d) on v and S (K, n, d) on J u_k, and per sample
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
static void split_rows(const aug *a, size_t values, size_t n, void (*fn)(void *, size_t, size_t),
                       void *ctx)
{
    if (a->c->mlp && values >= 16384)
        cnf_mlp_work_rows(a->c->slot.work, n, fn, ctx);
    else
        fn(ctx, 0, n);
}

/* The solver's state-sized loops (cnf_ode_solve_par): fn over the state's n values. */
static void state_par(void *ctx, size_t n, void (*fn)(void *, size_t, size_t), void *arg)
{
    split_rows(ctx, n, n, fn, arg);
}

static void per_sample(const aug *a, const slot *s, rows_ctx *r)
{
    r->a = a;
    r->s = s;
    split_rows(a, a->n * a->c->cfg.dim * (1 + a->K), a->n, rows_fn, r);
}

/* v, J u, D, F̂ at (τ, X) into slot s; for_vjp: aug_vjp on s follows (otherwise the MLP may
 * drop its activations as it goes, cnf_mlp_work_set_keep). */
static int aug_eval(aug *a, slot *s, double tau, const double *X, size_t ldx, int for_vjp)
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

/* dy = g(τ, y) from a slot filled by aug_eval; y and dy have the state layout. */
static void aug_store(const aug *a, const slot *s, double *dy)
{
    rows_ctx r = {.what = 1, .dy = dy};
    per_sample(a, s, &r);
}

/* φ = sg Σ_i λ_i·g(τ, s_i) (sg = ±1) for cotangents ax (n, lda) on x and lam (stride S,
 * components d..d+2) on (ℓ, E, N), after aug_eval on slot s: accumulates ∇ₓφ into gx (n, ldgx),
 * ∇_θφ into gtheta (the block's slice) and ∂φ/∂T into *gT; any may be NULL. */
static int aug_vjp(aug *a, slot *s, double tau, const double *ax, size_t lda, const double *lam,
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

static void traj_push_stage(struct traj *tr, double tau, const double *y);

static int aug_rhs(double tau, const double *y, double *dy, void *ctx)
{
    aug *a = ctx;
    if (a->rec)
        traj_push_stage(a->rec, tau, y);
    slot *s = &a->c->slot;
    int rc = aug_eval(a, s, tau, y, a->c->cfg.dim + 3, 0);
    if (rc)
        return rc < 0 ? rc : -1;
    aug_store(a, s, dy);
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
static int aug_jvp(double tau, const double *y, const double *w, double *Jw, void *ctx)
{
    aug *a = ctx;
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, S = d + 3;
    slot *s = &c->slot;
    double *W = s->R; /* (n, d) the tangents w_x; R is aug_vjp's scratch, free here */
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

/* ---- forward solves ------------------------------------------------------------------------- */

/* Accepted steps of one block's forward solve: τ_n, h_n and the state before each step; for
 * backprop also the arguments Y_2..Y_s of the stages the step's reverse uses (ys, (len,
 * stages, dim)), so the reverse pass evaluates each stage just before reversing it, while its
 * activations are still in cache, instead of recomputing every stage first. They are the
 * right-hand side's own inputs: an explicit RK attempt ends with its calls for stages 2..S in
 * order (solvers/erk.c; stage 1 is y_n itself or the FSAL value), so the last S − 1 calls
 * before an accepted step, kept in a ring, are that step's. */
typedef struct traj {
    size_t dim, len, cap;
    double *t, *h, *y;
    size_t stages, ring_n, ring_pos; /* stages kept per step; ring of the last ring_n calls */
    double *ys, *ring, *ring_t;      /* ring_t: each ring entry's τ, checked at every step */
    const cnf_rk_tableau *tab;
} traj;

static void traj_free(traj *tr)
{
    free(tr->t);
    free(tr->h);
    free(tr->y);
    free(tr->ys);
    free(tr->ring);
    free(tr->ring_t);
    memset(tr, 0, sizeof *tr);
}

/* Stages 1..s_eff of an RK step feed its result: those past the last non-zero weight do not. */
static size_t rk_stages_used(const cnf_rk_tableau *tab)
{
    size_t s_eff = 0;
    for (size_t i = 0; i < tab->stages; i++)
        if (tab->b[i] != 0.0)
            s_eff = i + 1;
    return s_eff;
}

/* Start recording a solve of dimension dim, with the stage arguments backprop_block needs for
 * tableau tab (NULL: states only). The buffers of the last recording are reused when the shape
 * is the same. */
static int traj_begin(traj *tr, size_t dim, const cnf_rk_tableau *tab)
{
    const size_t used = tab ? rk_stages_used(tab) : 0, stages = used > 1 ? used - 1 : 0;
    const size_t ring_n = stages ? tab->stages - 1 : 0;
    if (tr->dim != dim || tr->stages != stages || tr->ring_n != ring_n || (ring_n && !tr->ring)) {
        free(tr->y);
        free(tr->ys);
        free(tr->ring);
        free(tr->ring_t);
        tr->y = tr->ys = tr->ring = tr->ring_t = NULL;
        tr->cap = 0;
        tr->dim = dim;
        tr->stages = stages;
        tr->ring_n = ring_n;
        if (ring_n && (!(tr->ring = cnf_calloc(ring_n, dim * sizeof(double))) ||
                       !(tr->ring_t = cnf_calloc(ring_n, sizeof(double)))))
            return cnf_fail(CNF_ENOMEM, "allocating %zu RK stages for the reverse pass", ring_n);
    }
    tr->tab = tab;
    tr->len = 0;
    tr->ring_pos = 0;
    return CNF_OK;
}

static void traj_push_stage(traj *tr, double tau, const double *y)
{
    if (!tr->ring)
        return;
    memcpy(tr->ring + tr->ring_pos * tr->dim, y, tr->dim * sizeof(double));
    tr->ring_t[tr->ring_pos] = tau;
    tr->ring_pos = (tr->ring_pos + 1) % tr->ring_n;
}

static int traj_record(double t, double h, const double *y_old, const double *y_new, void *ctx)
{
    traj *tr = ctx;
    (void)y_new;
    if (tr->len == tr->cap) {
        size_t cap = tr->cap ? 2 * tr->cap : 64;
        double *nt = realloc(tr->t, cap * sizeof(double));
        if (nt)
            tr->t = nt;
        double *nh = realloc(tr->h, cap * sizeof(double));
        if (nh)
            tr->h = nh;
        const size_t per_step = (1 + tr->stages) * tr->dim;
        const int too_big = cap > (size_t)-1 / sizeof(double) / per_step;
        double *ny = too_big ? NULL : realloc(tr->y, cap * tr->dim * sizeof(double));
        if (ny)
            tr->y = ny;
        double *ns = too_big || !tr->stages
                         ? NULL
                         : realloc(tr->ys, cap * tr->stages * tr->dim * sizeof(double));
        if (ns)
            tr->ys = ns;
        if (!nt || !nh || !ny || (tr->stages && !ns))
            return cnf_fail(CNF_ENOMEM, "storing %zu forward steps for the gradient", cap);
        tr->cap = cap;
    }
    tr->t[tr->len] = t;
    tr->h[tr->len] = h;
    memcpy(tr->y + tr->len * tr->dim, y_old, tr->dim * sizeof(double));
    /* The ring's oldest entry is stage 2 of this step (see traj); each entry's τ must be its
     * stage's, or the solver called the right-hand side in another pattern than assumed. */
    for (size_t i = 0; i < tr->stages; i++) {
        const size_t e = (tr->ring_pos + i) % tr->ring_n;
        if (tr->ring_t[e] != t + tr->tab->c[i + 1] * h)
            return cnf_fail(CNF_EUNSUPPORTED, "backprop: stage %zu of the step at t = %g was not "
                            "the right-hand side call expected", i + 2, t);
        memcpy(tr->ys + (tr->len * tr->stages + i) * tr->dim, tr->ring + e * tr->dim,
               tr->dim * sizeof(double));
    }
    tr->len++;
    return 0;
}

static void add_stats(cnf_flow_stats *st, const cnf_ode_stats *os)
{
    if (!st)
        return;
    st->nfe_forward += os->nfe + os->njvp; /* cvode-bdf's J·v products: field evaluations too */
    st->steps += os->accepted;
    st->rejected += os->rejected;
}

/* Options of a solve over the state layout: per-sample blocks, x and ℓ under error control,
 * the field's J·v for cvode-bdf. */
static cnf_ode_options state_options(const cflow *c, const cnf_solve_config *sc)
{
    cnf_ode_options o = sc->opt;
    o.block = c->cfg.dim + 3;
    o.block_ctrl = c->cfg.dim + 1;
    o.jvp = aug_jvp;
    return o;
}

/* Solver `which` (0: forward solves, 1: the adjoint's) of c for method T on states of length
 * dim: the one kept from the last call when it matches (its workspace is then already paged
 * in: a d = 64 training step had faulted in ~7 MB of fresh solver arrays), else a new one. */
static int flow_solver(cflow *c, int which, const cnf_stepper_type *T, size_t dim,
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

/* A forward solve of the augmented ODE of a (aug_rhs), its state-sized loops shared by the
 * MLP's threads (state_par). */
static int solve(const cnf_solve_config *sc, aug *a, size_t dim, double t0, double t1, double *y,
                 const cnf_ode_options *opt, cnf_ode_observer obs, void *obs_ctx,
                 cnf_ode_stats *os)
{
    cnf_ode_solver *s = NULL;
    int rc = flow_solver(a->c, 0, sc->stepper, dim, &s);
    if (rc == CNF_OK)
        rc = cnf_ode_solve_par(s, aug_rhs, a, t0, t1, y, opt, obs, obs_ctx, os, state_par, a);
    return rc;
}

static size_t n_tangents(const cflow *c, cnf_trace trace)
{
    return trace == CNF_TRACE_EXACT ? c->cfg.dim : c->cfg.probes;
}

static void draw_probes(cnf_trace trace, double *U, size_t m, cnf_rng *rng)
{
    for (size_t i = 0; i < m; i++)
        U[i] = trace == CNF_TRACE_HUTCH_GAUSS ? cnf_rng_normal(rng) : cnf_rng_rademacher(rng);
}

/* θ does not change during one of the flow's calls: the MLP may reuse the weights it prepared
 * (transposed, in float) from call to call while a block's slice comes back. */
static void hold_weights(cflow *c, int hold)
{
    if (c->mlp)
        cnf_mlp_work_hold_weights(c->slot.work, hold);
}

/* Integrate every block in turn over the state y (n, S), from τ = 0 to 1 (dir > 0, data to
 * base) or from 1 to 0 in reverse block order (dir < 0, base to data). */
static int integrate_blocks(cflow *c, double *y, size_t n, cnf_trace trace, const double *U,
                            const cnf_solve_config *sc, int dir, cnf_flow_stats *st)
{
    const size_t K = n_tangents(c, trace), d = c->cfg.dim;
    int rc = ensure_slot(c, n, K);
    if (rc)
        return rc;
    hold_weights(c, 1);
    cnf_ode_options opt = state_options(c, sc);
    for (size_t i = 0; rc == CNF_OK && i < c->cfg.blocks; i++) {
        size_t b = dir > 0 ? i : c->cfg.blocks - 1 - i;
        aug a = {.c = c, .b = b, .n = n, .trace = trace, .K = K,
                 .U = U ? U + b * K * n * d : NULL, .T = end_time(c)};
        cnf_ode_stats os = {0};
        rc = solve(sc, &a, n * (d + 3), dir > 0 ? 0.0 : 1.0, dir > 0 ? 1.0 : 0.0, y,
                   &opt, NULL, NULL, &os);
        add_stats(st, &os);
    }
    hold_weights(c, 0);
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
    draw_probes(trace, U, m, &r);
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

static int cflow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                        cnf_flow_stats *st)
{
    return cflow_map((cflow *)f, +1, X, n, Z, logdet, st);
}

static int cflow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                        cnf_flow_stats *st)
{
    return cflow_map((cflow *)f, -1, Z, n, X, logdet, st);
}

/* ---- gradients: backprop through the RK steps ----------------------------------------------- */

/* len doubles of the flow's reverse-pass scratch (contents undefined), grown on demand; NULL
 * (reported) on allocation failure. */
static double *rev_scratch(cflow *c, size_t len, const char *what)
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

/* The state-sized updates of backprop_step over a range of samples (rows of S values): at the
 * start of a step (i = SIZE_MAX) k̄_i = h b_i ȳ for every stage; after stage i's VJP,
 * k̄_j += h a_ij Ybi (j < i), ȳ += Ybi, and Ybi = 0 for the next VJP to accumulate into (it
 * starts zeroed: backprop_block clears it). */
typedef struct bp_rows {
    const cnf_rk_tableau *tab;
    double h;
    size_t i, s_eff, S, dim;
    double *kb, *Ybi, *lam;
} bp_rows;

static void bp_rows_fn(void *ctx, size_t r0, size_t r1)
{
    const bp_rows *b = ctx;
    const size_t m0 = r0 * b->S, len = (r1 - r0) * b->S, ns = b->tab->stages;
    if (b->i == (size_t)-1) {
        for (size_t i = 0; i < b->s_eff; i++)
            scale_to(b->kb + i * b->dim + m0, b->h * b->tab->b[i], b->lam + m0, len);
        return;
    }
    for (size_t j = 0; j < b->i; j++) {
        double aij = b->tab->a[b->i * ns + j];
        if (aij != 0.0)
            axpy(b->kb + j * b->dim + m0, b->h * aij, b->Ybi + m0, len);
    }
    axpy(b->lam + m0, 1.0, b->Ybi + m0, len);
    memset(b->Ybi + m0, 0, len * sizeof(double));
}

/* Reverse one explicit RK step y_{n+1} = y_n + h Σ b_i k_i, k_i = g(τ + c_i h, Y_i),
 * Y_i = y_n + h Σ_{j<i} a_ij k_j, with Y_1 = y_n and Y_2.. in ys (from the forward solve, see
 * traj). lam: in ȳ_{n+1}, out ȳ_n (state layout). Scratch: kb (stages, dim), Ybi (dim). Each
 * stage is evaluated right before its reverse pass, on one slot. */
static int backprop_step(aug *a, const cnf_rk_tableau *tab, double tau, double h,
                         const double *yn, const double *ys, double *lam, double *kb,
                         double *Ybi, double *gtheta, double *gT)
{
    cflow *c = a->c;
    const size_t d = c->cfg.dim, S = d + 3, dim = a->n * S, s_eff = rk_stages_used(tab);
    slot *sl = &c->slot;
    bp_rows b = {.tab = tab, .h = h, .i = (size_t)-1, .s_eff = s_eff, .S = S, .dim = dim,
                 .kb = kb, .Ybi = Ybi, .lam = lam};
    split_rows(a, dim, a->n, bp_rows_fn, &b);
    for (size_t i = s_eff; i-- > 0;) {
        const double tau_i = tau + tab->c[i] * h;
        int rc = aug_eval(a, sl, tau_i, i ? ys + (i - 1) * dim : yn, S, 1);
        if (rc)
            return rc;
        const double *kbi = kb + i * dim;
        rc = aug_vjp(a, sl, tau_i, kbi, S, kbi, 1.0, Ybi, S, gtheta, gT);
        if (rc)
            return rc;
        b.i = i;
        split_rows(a, dim, a->n, bp_rows_fn, &b);
    }
    return CNF_OK;
}

static int backprop_block(aug *a, const traj *tr, const cnf_rk_tableau *tab, double *lam,
                          double *gtheta, double *gT)
{
    const size_t dim = tr->dim, s = tab->stages;
    int rc = ensure_slot(a->c, a->n, a->K);
    if (rc)
        return rc;
    double *kb = rev_scratch(a->c, (s + 1) * dim, "RK stages for the reverse pass");
    if (!kb)
        return CNF_ENOMEM;
    memset(kb + s * dim, 0, dim * sizeof(double)); /* Ybi: backprop_step accumulates into it */
    for (size_t n = tr->len; n-- > 0 && rc == CNF_OK;)
        rc = backprop_step(a, tab, tr->t[n], tr->h[n], tr->y + n * dim,
                           tr->stages ? tr->ys + n * tr->stages * dim : NULL, lam, kb, kb + s * dim,
                           gtheta, gT);
    return rc;
}

/* ---- gradients: adjoint with built-in steppers (checkpointed and backsolve) ------------------ */

/* Backward state w = [x (n, d) | a (n, d) | q (nq)]: x' = T v, a' = −∇ₓφ, q' = −∇_θφ (and
 * −∂φ/∂T last when T is trained), with φ = a·v·T − λ_ℓ T D + … (aug_vjp, with negated seeds so
 * that it accumulates the minus signs itself into the zeroed a', q'). */
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
    int rc = aug_eval(a, s, tau, w, d, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    adj_start as = {.T = a->T, .F = s->F, .dw = dw, .nd = n * d};
    state_par(a, 2 * n * d + a->nq, adj_start_fn, &as);
    double *da = dw + n * d, *dq = dw + 2 * n * d;
    double gT = 0.0;
    rc = aug_vjp(a, s, tau, w + n * d, d, a->lam, -1.0, da, d, dq, a->nq > P ? &gT : NULL);
    if (rc)
        return rc < 0 ? rc : -1;
    if (a->nq > P)
        dq[P] = gT;
    return 0;
}

static int adjoint_block(aug *a, const traj *tr, const double *y_end, double t_end,
                         double t_start, const cnf_solve_config *sc, int backsolve, double *lam,
                         double *gtheta, double *gT, size_t *nfe)
{
    cflow *c = a->c;
    const size_t d = c->cfg.dim, n = a->n, S = d + 3, P = c->P;
    a->nq = P + (c->cfg.train_T ? 1 : 0);
    a->lam = lam;
    const size_t dim = 2 * n * d + a->nq;
    double *w = rev_scratch(c, dim, "the adjoint state");
    if (!w)
        return CNF_ENOMEM;
    memset(w + 2 * n * d, 0, a->nq * sizeof(double)); /* q(1) = 0 */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            w[i * d + j] = y_end[i * S + j];
            w[n * d + i * d + j] = lam[i * S + j];
        }
    cnf_ode_solver *s = NULL;
    int rc = flow_solver(c, 1, sc->stepper, dim, &s);
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
        rc = cnf_ode_solve_par(s, adjoint_rhs, a, t1, t0, w, &opt, NULL, NULL, &os, state_par, a);
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

/* The CVODES adjoint's forward and backward passes run at this multiple of rtol and atol.
 * CVODES keeps the local error of the solution it propagates near the tolerance, while the
 * built-in pairs (Dopri5, Tsit5) propagate the higher-order solution of the pair and land far
 * below it: on a small CNF at rtol = atol = 1e-6, 1e-8 and 1e-10, cvode-adams's loss was
 * 1400, 1700 and 400 times further from the exact one than Dopri5's, and its gradient as much
 * less accurate. At 1e-3 × the tolerances its gradients are about as accurate as the built-in
 * adjoint's at the tolerances given. */
#define CVODES_ADJ_TOL_SCALE 1e-3

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
    int rc = aug_eval(a, s, tau, y, S, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    memset(cv->ga, 0, n * d * sizeof(double));
    memset(cv->gq, 0, a->nq * sizeof(double));
    double gT = 0.0;
    a->lam = lam;
    rc = aug_vjp(a, s, tau, lam, S, lam, 1.0, cv->ga, d, cv->gq, a->nq > P ? &gT : NULL);
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
    int rc = aug_eval(a, s, tau, y, S, 1);
    if (rc)
        return rc < 0 ? rc : -1;
    memset(cv->gv, 0, n * d * sizeof(double));
    rc = aug_vjp(a, s, tau, v, S, v, 1.0, cv->gv, d, NULL, NULL);
    if (rc)
        return rc < 0 ? rc : -1;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            out[i * S + j] = -cv->gv[i * d + j];
        out[i * S + d] = out[i * S + d + 1] = out[i * S + d + 2] = 0.0;
    }
    return 0;
}

static int cvodes_backward(aug *a, cnf_cvodes_adj *adj, const cnf_ode_options *opt, double *lam,
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

/* ---- the objectives and their gradients ------------------------------------------------------ */

/* An objective is a function of the states at the two ends of the solve. terminal() receives the
 * start states y0 and the end states y1 (n, S), returns the loss and fills lam (n, S) with
 * ∂loss/∂y1; the solve runs through the blocks from τ = 0 to 1 (dir > 0, data to base) or from 1
 * to 0 (dir < 0, base to data). */
typedef struct objective {
    int dir;
    int (*terminal)(struct objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                    double *lam, double *loss, cnf_flow_stats *st);
    cnf_logq_fn logq; /* reverse KL: the target */
    void *logq_ctx;
} objective;

/* Maximum likelihood: loss = mean_i [ −log N(z_i) + ℓ_i + λ_K E_i + λ_J N_i ]. */
static int nll_terminal(objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                        double *lam, double *loss, cnf_flow_stats *st)
{
    (void)o;
    (void)y0;
    const size_t d = c->cfg.dim, S = d + 3;
    double nll = 0.0, ek = 0.0, ej = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double *s = y1 + i * S;
        nll += -cnf_std_normal_logpdf(s, d) + s[d];
        ek += s[d + 1];
        ej += s[d + 2];
        for (size_t j = 0; j < d; j++)
            lam[i * S + j] = s[j] / (double)n;
        lam[i * S + d] = 1.0 / (double)n;
        lam[i * S + d + 1] = c->cfg.reg_kinetic / (double)n;
        lam[i * S + d + 2] = c->cfg.reg_jacobian / (double)n;
    }
    nll /= (double)n;
    ek /= (double)n;
    ej /= (double)n;
    *loss = nll + c->cfg.reg_kinetic * ek + c->cfg.reg_jacobian * ej;
    if (st) {
        st->nll = nll;
        st->reg_kinetic = ek;
        st->reg_jacobian = ej;
    }
    return CNF_OK;
}

/* Reverse KL: z_i = y0's x, x_i = y1's x, log p(x_i) = log N(z_i) + ℓ_i(0) (the solve runs from
 * τ = 1 down to 0 with ℓ(1) = 0), loss = mean_i [ log p(x_i) − log q̃(x_i) ] plus the regularizers
 * (E, N integrated backwards are −∫, hence the signs). */
static int rkl_terminal(objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                        double *lam, double *loss, cnf_flow_stats *st)
{
    const size_t d = c->cfg.dim, S = d + 3;
    double *X = cnf_calloc(cnf_size_mul(n, d), sizeof(double)), *lq = cnf_calloc(n, sizeof(double));
    double *gq = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    int rc = (!X || !lq || !gq) ? cnf_fail(CNF_ENOMEM, "allocating the target's values") : 0;
    for (size_t i = 0; !rc && i < n; i++)
        memcpy(X + i * d, y1 + i * S, d * sizeof(double));
    if (!rc && (rc = o->logq(o->logq_ctx, X, n, lq, gq)) != 0)
        rc = rc < 0 ? rc : cnf_fail(CNF_ERHS, "target log-density callback returned %d", rc);
    double kl = 0.0, ek = 0.0, ej = 0.0;
    for (size_t i = 0; !rc && i < n; i++) {
        const double *s = y1 + i * S;
        double logp = cnf_std_normal_logpdf(y0 + i * S, d) + s[d];
        if (!isfinite(lq[i]) || !isfinite(logp)) {
            rc = cnf_fail(CNF_ENONFINITE, "sample %zu: log p = %g, log q = %g", i, logp, lq[i]);
            break;
        }
        kl += logp - lq[i];
        ek -= s[d + 1];
        ej -= s[d + 2];
        for (size_t j = 0; j < d; j++)
            lam[i * S + j] = -gq[i * d + j] / (double)n;
        lam[i * S + d] = 1.0 / (double)n;
        lam[i * S + d + 1] = -c->cfg.reg_kinetic / (double)n;
        lam[i * S + d + 2] = -c->cfg.reg_jacobian / (double)n;
    }
    if (!rc) {
        kl /= (double)n;
        ek /= (double)n;
        ej /= (double)n;
        *loss = kl + c->cfg.reg_kinetic * ek + c->cfg.reg_jacobian * ej;
        if (st) {
            st->nll = -kl; /* the ELBO of log Z */
            st->reg_kinetic = ek;
            st->reg_jacobian = ej;
        }
    }
    free(X);
    free(lq);
    free(gq);
    return rc;
}

/* Solve from the start states Y0 (n rows of d) through every block, evaluate the objective and,
 * if grad or gx is not NULL, its gradient w.r.t. θ (and s = √T) and the start states. */
static int grad_core(cflow *c, objective *ob, const double *Y0, size_t n, cnf_rng *rng,
                     double *loss, double *grad, double *gx, cnf_flow_stats *st)
{
    const cnf_cflow_config *cfg = &c->cfg;
    const size_t d = cfg->dim, S = d + 3, dim = n * S, B = cfg->blocks;
    const size_t K = n_tangents(c, cfg->trace);
    const int want_grad = grad || gx, dir = ob->dir;
    const double tau0 = dir > 0 ? 0.0 : 1.0, tau1 = dir > 0 ? 1.0 : 0.0;
    const int use_cvodes = cnf_stepper_is_cvodes(cfg->train.stepper);
    const cnf_rk_tableau *tab = cnf_stepper_tableau(cfg->train.stepper);
    if (cfg->trace != CNF_TRACE_EXACT && !rng)
        return cnf_fail(CNF_EINVAL, "a Hutchinson trace needs a random generator for its probes");
    if (want_grad && cfg->grad == CNF_GRAD_BACKPROP && !tab)
        return cnf_fail(CNF_EUNSUPPORTED, "backprop through the solver needs an explicit RK "
                        "method, not %s (use --grad adjoint)", cnf_stepper_name(cfg->train.stepper));
    if (want_grad && cfg->grad == CNF_GRAD_BACKSOLVE && use_cvodes)
        return cnf_fail(CNF_EUNSUPPORTED, "backsolve is offered with the built-in methods only");
    /* Every buffer below holds at most B·n·S·(K + 1) values (states per block, probes). */
    if (!cnf_size_ok(cnf_size_mul(cnf_size_mul(n, S), cnf_size_mul(B, K + 1))))
        return cnf_fail(CNF_ENOMEM, "%zu samples of dimension %zu are too many to address", n, d);

    int rc = ensure_slot(c, n, K);
    if (rc)
        return rc;
    if (c->n_trs < B) {
        traj *nt = realloc(c->trs, B * sizeof *nt);
        if (!nt)
            return cnf_fail(CNF_ENOMEM, "allocating the CNF state for %zu samples", n);
        memset(nt + c->n_trs, 0, (B - c->n_trs) * sizeof *nt);
        c->trs = nt;
        c->n_trs = B;
    }
    hold_weights(c, 1);
    /* Everything this call allocates, freed at `done`. */
    double *U = NULL, *y = NULL, *y0 = NULL, *y_end = NULL, *lam = NULL, *gth_scratch = NULL;
    traj *tr = c->trs;
    /* One context per block for the whole call: CVODES re-runs the forward RHS during the
     * backward pass with the context given to the forward solve. */
    aug *ag = cnf_calloc(B, sizeof *ag);
    cnf_cvodes_adj **adj = cnf_calloc(B, sizeof *adj);
    y = cnf_calloc(dim, sizeof(double));
    y0 = cnf_calloc(dim, sizeof(double));
    y_end = cnf_calloc(cnf_size_mul(B, dim), sizeof(double));
    lam = cnf_calloc(dim, sizeof(double));
    if (!ag || !adj || !y || !y0 || !y_end || !lam) {
        rc = cnf_fail(CNF_ENOMEM, "allocating the CNF state for %zu samples", n);
        goto done;
    }
    if (cfg->trace != CNF_TRACE_EXACT) {
        U = cnf_calloc(cnf_size_mul(cnf_size_mul(cnf_size_mul(B, K), n), d), sizeof(double));
        if (!U) {
            rc = cnf_fail(CNF_ENOMEM, "allocating %zu probes", B * K * n * d);
            goto done;
        }
        draw_probes(cfg->trace, U, B * K * n * d, rng);
    }
    for (size_t i = 0; i < n; i++)
        memcpy(y + i * S, Y0 + i * d, d * sizeof(double));
    memcpy(y0, y, dim * sizeof(double));

    /* Forward, block by block (in reverse order for dir < 0), keeping what the gradient needs;
     * y_end + k·dim holds the state after the k-th solve. */
    const double T = end_time(c);
    cnf_ode_options opt = state_options(c, &cfg->train);
    const int record = want_grad && !use_cvodes && cfg->grad != CNF_GRAD_BACKSOLVE;
    const int cv_adjoint = want_grad && use_cvodes && cfg->grad == CNF_GRAD_ADJOINT;
    cnf_ode_options cv_opt = opt;
    cv_opt.rtol *= CVODES_ADJ_TOL_SCALE;
    cv_opt.atol *= CVODES_ADJ_TOL_SCALE;
    for (size_t k = 0; k < B; k++) {
        size_t b = dir > 0 ? k : B - 1 - k;
        ag[k] = (aug){.c = c, .b = b, .n = n, .trace = cfg->trace, .K = K,
                      .U = U ? U + b * K * n * d : NULL, .T = T};
        aug *a = &ag[k];
        cnf_ode_stats os = {0};
        if (cv_adjoint) {
            rc = cnf_cvodes_adj_create(&adj[k], cfg->train.stepper, dim, dim,
                                       c->P + (cfg->train_T ? 1 : 0),
                                       cfg->checkpoint_steps ? cfg->checkpoint_steps : 50);
            if (rc == CNF_OK)
                rc = cnf_cvodes_adj_forward(adj[k], aug_rhs, a, tau0, tau1, y, &cv_opt, &os);
        } else {
            if (record) {
                const int bp = cfg->grad == CNF_GRAD_BACKPROP;
                rc = traj_begin(&tr[k], dim, bp ? tab : NULL);
                a->rec = bp ? &tr[k] : NULL;
            }
            if (rc == CNF_OK)
                rc = solve(&cfg->train, a, dim, tau0, tau1, y, &opt,
                           record ? traj_record : NULL, &tr[k], &os);
            a->rec = NULL;
        }
        add_stats(st, &os);
        if (rc)
            goto done;
        memcpy(y_end + k * dim, y, dim * sizeof(double));
    }

    /* The terminal may run user code (reverse KL's log q): the weights are not held meanwhile,
     * and are prepared afresh for the backward pass. */
    hold_weights(c, 0);
    rc = ob->terminal(ob, c, y0, y, n, lam, loss, st);
    hold_weights(c, 1);
    if (rc || !want_grad)
        goto done;

    /* Backward, solve by solve in reverse; λ carries ∂L/∂(state) at each block boundary. */
    double gT = 0.0;
    if (!grad && !(gth_scratch = cnf_calloc(c->base.n_params, sizeof(double)))) {
        rc = cnf_fail(CNF_ENOMEM, "allocating the parameter gradient");
        goto done;
    }
    double *g = grad ? grad : gth_scratch;
    for (size_t k = B; k-- > 0 && rc == CNF_OK;) {
        aug *a = &ag[k];
        double *gb = g + a->b * c->P;
        size_t nfe = 0;
        a->nfe = 0;
        if (cfg->grad == CNF_GRAD_BACKPROP) {
            rc = backprop_block(a, &tr[k], tab, lam, gb, &gT);
            nfe = a->nfe;
        } else if (use_cvodes) {
            rc = cvodes_backward(a, adj[k], &cv_opt, lam, gb, &gT, &nfe);
        } else {
            rc = adjoint_block(a, &tr[k], y_end + k * dim, tau1, tau0, &cfg->train,
                               cfg->grad == CNF_GRAD_BACKSOLVE, lam, gb, &gT, &nfe);
        }
        if (st)
            st->nfe_backward += nfe;
    }
    if (rc == CNF_OK && cfg->train_T) {
        double s = c->base.theta[c->base.n_params - 1];
        g[c->base.n_params - 1] += 2.0 * s * gT; /* T = s² */
    }
    if (rc == CNF_OK && gx)
        for (size_t i = 0; i < n; i++)
            memcpy(gx + i * d, lam + i * S, d * sizeof(double));

done:
    hold_weights(c, 0);
    for (size_t k = 0; adj && k < B; k++)
        cnf_cvodes_adj_free(adj[k]);
    free(ag);
    free(adj);
    free(U);
    free(y);
    free(y0);
    free(y_end);
    free(lam);
    free(gth_scratch);
    return rc;
}

static int cflow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                          double *grad, double *gx, cnf_flow_stats *st)
{
    objective ob = {.dir = +1, .terminal = nll_terminal};
    return grad_core((cflow *)f, &ob, X, n, rng, loss, grad, gx, st);
}

/* Reverse KL: base points from rng, then the same machinery run from τ = 1 to 0. */
static int cflow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                          double *loss, double *grad, cnf_flow_stats *st)
{
    const size_t d = f->dim;
    double *Z = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    if (!Z)
        return cnf_fail(CNF_ENOMEM, "allocating %zu base points", n);
    for (size_t i = 0; i < n * d; i++)
        Z[i] = cnf_rng_normal(rng);
    objective ob = {.dir = -1, .terminal = rkl_terminal, .logq = logq, .logq_ctx = ctx};
    int rc = grad_core((cflow *)f, &ob, Z, n, rng, loss, grad, NULL, st);
    free(Z);
    return rc;
}

/* ---- construction --------------------------------------------------------------------------- */

static void cflow_free(cnf_flow *f)
{
    cflow *c = (cflow *)f;
    if (c->have_slot)
        slot_free(c, &c->slot);
    for (size_t i = 0; i < c->n_trs; i++)
        traj_free(&c->trs[i]);
    free(c->trs);
    free(c->rev);
    for (int i = 0; i < 2; i++)
        cnf_ode_solver_free(c->solver[i].s);
    cnf_mlp_free(c->mlp);
    free(c->hidden);
    free(c->base.theta);
    free(c);
}

static int cflow_describe(const cnf_flow *f, cnf_st_writer *w);

/* Velocity regression (flow matching): cflow_fm.c, on this CNF's field. */
static int cflow_velocity_check(const cnf_flow *f)
{
    return cnf_cflow_fm_check(((const cflow *)f)->mlp, &((const cflow *)f)->cfg);
}

static int cflow_velocity_loss(cnf_flow *f, const double *X, size_t n, cnf_path_fn path,
                               void *ctx, double *loss, double *grad)
{
    cflow *c = (cflow *)f;
    return cnf_cflow_fm_loss(c->mlp, f->theta, end_time(c), f->dim, X, n, path, ctx, loss, grad);
}

static const cnf_flow_type cflow_type = {
    .kind = "cnf",
    .encode = cflow_encode,
    .decode = cflow_decode,
    .nll_grad = cflow_nll_grad,
    .rkl_grad = cflow_rkl_grad,
    .velocity_loss = cflow_velocity_loss,
    .velocity_check = cflow_velocity_check,
    .free = cflow_free,
    .describe = cflow_describe,
};

static int check_config(const cnf_cflow_config *cfg)
{
    if (!cfg)
        return cnf_fail(CNF_EINVAL, "CNF configuration is NULL");
    if (cfg->dim == 0)
        return cnf_fail(CNF_EINVAL, "CNF dimension is 0");
    if (cfg->blocks == 0)
        return cnf_fail(CNF_EINVAL, "CNF needs at least one block");
    if (!(cfg->T > 0.0) || !isfinite(cfg->T))
        return cnf_fail(CNF_EINVAL, "end time T = %g must be positive and finite", cfg->T);
    if (cfg->probes == 0)
        return cnf_fail(CNF_EINVAL, "Hutchinson needs at least one probe");
    if (!(cfg->reg_kinetic >= 0.0) || !(cfg->reg_jacobian >= 0.0))
        return cnf_fail(CNF_EINVAL, "regularizer weights must be non-negative");
    if ((unsigned)cfg->trace > 2 || (unsigned)cfg->eval_trace > 2 || (unsigned)cfg->grad > 2)
        return cnf_fail(CNF_EINVAL, "invalid trace or gradient mode value");
    if (!cfg->train.stepper || !cfg->eval.stepper)
        return cnf_fail(CNF_EINVAL, "CNF needs a training and an evaluation solver");
    return CNF_OK;
}

static int create(cnf_flow **out, const cnf_cflow_config *cfg, cnf_mlp *mlp,
                  const cnf_field_ops *ops, void *ctx)
{
    cflow *c = calloc(1, sizeof *c);
    if (!c) {
        cnf_mlp_free(mlp);
        return cnf_fail(CNF_ENOMEM, "allocating the CNF");
    }
    c->cfg = *cfg;
    c->mlp = mlp;
    c->ops = *ops;
    c->field_ctx = ctx;
    c->P = ops->n_params;
    c->base.type = &cflow_type;
    c->base.dim = cfg->dim;
    c->base.n_params = cnf_size_mul(cfg->blocks, c->P); /* saturated: fails below */
    c->base.n_params += c->base.n_params < SIZE_MAX && cfg->train_T ? 1 : 0;
    c->base.theta = cnf_calloc(c->base.n_params, sizeof(double));
    if (mlp) {
        c->hidden = cnf_calloc(cfg->n_hidden, sizeof(size_t));
        if (c->hidden && cfg->n_hidden)
            memcpy(c->hidden, cfg->hidden, cfg->n_hidden * sizeof(size_t));
        c->cfg.hidden = c->hidden;
    }
    if (!c->base.theta || (mlp && !c->hidden)) {
        cflow_free(&c->base);
        return cnf_fail(CNF_ENOMEM, "allocating the CNF parameters (%zu blocks of %zu)",
                        cfg->blocks, ops->n_params);
    }
    if (cfg->train_T)
        c->base.theta[c->base.n_params - 1] = sqrt(cfg->T);
    *out = &c->base;
    return CNF_OK;
}

int cnf_cflow_create(cnf_flow **out, const cnf_cflow_config *cfg, cnf_rng *rng)
{
    *out = NULL;
    int rc = check_config(cfg);
    if (rc)
        return rc;
    if (!rng)
        return cnf_fail(CNF_EINVAL, "CNF initialisation needs a random generator");
    cnf_mlp_config mc = {.d_in = cfg->dim, .d_out = cfg->dim, .n_hidden = cfg->n_hidden,
                         .hidden = cfg->hidden, .act = cfg->act, .time = cfg->time,
                         .precision = cfg->precision};
    cnf_mlp *mlp = NULL;
    rc = cnf_mlp_create(&mlp, &mc);
    if (rc)
        return rc;
    cnf_field_ops ops = {.n_params = cnf_mlp_n_params(mlp), .work_create = mlp_work_create,
                         .work_free = mlp_work_free, .jvp = mlp_jvp, .backward = mlp_backward};
    rc = create(out, cfg, mlp, &ops, mlp);
    if (rc)
        return rc;
    cflow *c = (cflow *)*out;
    for (size_t b = 0; b < cfg->blocks; b++)
        cnf_mlp_init(mlp, c->base.theta + b * c->P, rng);
    return CNF_OK;
}

int cnf_cflow_create_field(cnf_flow **out, const cnf_cflow_config *cfg, const cnf_field_ops *ops,
                           void *ctx)
{
    *out = NULL;
    int rc = check_config(cfg);
    if (rc)
        return rc;
    if (!ops || !ops->work_create || !ops->work_free || !ops->jvp || !ops->backward)
        return cnf_fail(CNF_EINVAL, "field operations incomplete");
    return create(out, cfg, NULL, ops, ctx);
}

cnf_cflow_config *cnf_cflow_settings(cnf_flow *f)
{
    cflow *c = as_cflow(f);
    return c ? &c->cfg : NULL;
}

const cnf_mlp *cnf_cflow_mlp(const cnf_flow *f)
{
    cflow *c = as_cflow((cnf_flow *)f);
    return c ? c->mlp : NULL;
}

double cnf_cflow_end_time(const cnf_flow *f)
{
    cflow *c = as_cflow((cnf_flow *)f);
    return c ? end_time(c) : 0.0;
}

/* ---- model files ---------------------------------------------------------------------------- */

static int put_solver(cnf_st_writer *w, const char *prefix, const cnf_solve_config *sc)
{
    char key[64];
    snprintf(key, sizeof key, "%s.solver", prefix);
    int rc = cnf_st_writer_meta(w, key, cnf_stepper_name(sc->stepper));
    snprintf(key, sizeof key, "%s.rtol", prefix);
    if (!rc) rc = cnf_meta_put_double(w, key, sc->opt.rtol);
    snprintf(key, sizeof key, "%s.atol", prefix);
    if (!rc) rc = cnf_meta_put_double(w, key, sc->opt.atol);
    snprintf(key, sizeof key, "%s.steps", prefix);
    if (!rc) rc = cnf_meta_put_size(w, key, sc->opt.steps);
    return rc;
}

static int get_solver(const cnf_st_file *f, const char *prefix, cnf_solve_config *sc)
{
    char key[64];
    snprintf(key, sizeof key, "%s.solver", prefix);
    const char *name = cnf_meta_get_str(f, key);
    if (!name)
        return CNF_EFORMAT;
    int rc = cnf_stepper_from_name(name, &sc->stepper);
    cnf_ode_options_default(&sc->opt);
    snprintf(key, sizeof key, "%s.rtol", prefix);
    if (!rc) rc = cnf_meta_get_double(f, key, &sc->opt.rtol);
    snprintf(key, sizeof key, "%s.atol", prefix);
    if (!rc) rc = cnf_meta_get_double(f, key, &sc->opt.atol);
    snprintf(key, sizeof key, "%s.steps", prefix);
    if (!rc) rc = cnf_meta_get_size(f, key, &sc->opt.steps);
    return rc;
}

/* Tensor name of MLP block i of CNF block b: "block<b>.<layer>.<W|b|c|wg|bg>". */
static void tensor_name(char *buf, size_t len, size_t b, const char *block)
{
    snprintf(buf, len, "block%zu.%s", b, block);
}

static int cflow_describe(const cnf_flow *f, cnf_st_writer *w)
{
    const cflow *c = (const cflow *)f;
    const cnf_cflow_config *g = &c->cfg;
    if (!c->mlp)
        return cnf_fail(CNF_EUNSUPPORTED, "a CNF with a user field cannot be saved");
    int rc = cnf_meta_put_widths(w, "hidden", g->hidden, g->n_hidden);
    if (!rc) rc = cnf_st_writer_meta(w, "act", cnf_act_name(g->act));
    if (!rc) rc = cnf_st_writer_meta(w, "time", cnf_time_mode_name(g->time));
    if (!rc) rc = cnf_meta_put_size(w, "blocks", g->blocks);
    if (!rc) rc = cnf_meta_put_double(w, "T", end_time(c));
    if (!rc) rc = cnf_meta_put_size(w, "train_T", (size_t)(g->train_T != 0));
    if (!rc) rc = cnf_st_writer_meta(w, "trace", cnf_trace_name(g->trace));
    if (!rc) rc = cnf_meta_put_size(w, "probes", g->probes);
    if (!rc) rc = cnf_st_writer_meta(w, "eval_trace", cnf_trace_name(g->eval_trace));
    if (!rc) rc = cnf_meta_put_double(w, "reg_kinetic", g->reg_kinetic);
    if (!rc) rc = cnf_meta_put_double(w, "reg_jacobian", g->reg_jacobian);
    if (!rc) rc = cnf_st_writer_meta(w, "grad", cnf_grad_mode_name(g->grad));
    if (!rc) rc = cnf_st_writer_meta(w, "precision", cnf_precision_name(g->precision));
    if (!rc) rc = put_solver(w, "train", &g->train);
    if (!rc) rc = put_solver(w, "eval", &g->eval);
    for (size_t b = 0; !rc && b < g->blocks; b++)
        for (size_t i = 0; !rc && i < cnf_mlp_n_blocks(c->mlp); i++) {
            const char *name;
            size_t off, shape[2];
            cnf_mlp_block(c->mlp, i, &name, &off, &shape[0], &shape[1]);
            char key[64];
            tensor_name(key, sizeof key, b, name);
            rc = cnf_st_writer_add(w, key, shape[1] == 1 ? 1 : 2, shape,
                                   c->base.theta + b * c->P + off);
        }
    if (!rc && g->train_T) {
        size_t one = 1;
        rc = cnf_st_writer_add(w, "sqrt_end_time", 1, &one, c->base.theta + c->base.n_params - 1);
    }
    return rc;
}

int cnf_cflow_load(const cnf_st_file *f, cnf_flow **out)
{
    cnf_cflow_config cfg;
    size_t dim, hidden[64], n_hidden = 0, train_T;
    int rc = cnf_meta_get_size(f, "dim", &dim);
    if (rc)
        return rc;
    cnf_cflow_config_default(&cfg, dim);
    if ((rc = cnf_meta_get_widths(f, "hidden", hidden, 64, &n_hidden)))
        return rc;
    cfg.hidden = hidden;
    cfg.n_hidden = n_hidden;
    const char *act = cnf_meta_get_str(f, "act"), *tm = cnf_meta_get_str(f, "time");
    const char *tr = cnf_meta_get_str(f, "trace"), *etr = cnf_meta_get_str(f, "eval_trace");
    const char *gm = cnf_meta_get_str(f, "grad");
    if (!act || !tm || !tr || !etr || !gm)
        return CNF_EFORMAT;
    if (!rc) rc = cnf_act_from_name(act, &cfg.act);
    if (!rc) rc = cnf_time_mode_from_name(tm, &cfg.time);
    if (!rc) rc = cnf_trace_from_name(tr, &cfg.trace);
    if (!rc) rc = cnf_trace_from_name(etr, &cfg.eval_trace);
    if (!rc) rc = cnf_grad_mode_from_name(gm, &cfg.grad);
    /* Files written before mixed precision existed have no key: double. */
    const char *prec = cnf_st_meta(f, "precision");
    if (!rc && prec)
        rc = cnf_precision_from_name(prec, &cfg.precision);
    if (!rc) rc = cnf_meta_get_size(f, "blocks", &cfg.blocks);
    if (!rc) rc = cnf_meta_get_double(f, "T", &cfg.T);
    if (!rc) rc = cnf_meta_get_size(f, "train_T", &train_T);
    if (!rc) rc = cnf_meta_get_size(f, "probes", &cfg.probes);
    if (!rc) rc = cnf_meta_get_double(f, "reg_kinetic", &cfg.reg_kinetic);
    if (!rc) rc = cnf_meta_get_double(f, "reg_jacobian", &cfg.reg_jacobian);
    if (!rc) rc = get_solver(f, "train", &cfg.train);
    if (!rc) rc = get_solver(f, "eval", &cfg.eval);
    if (rc)
        return rc == CNF_ENAME ? cnf_fail(CNF_EFORMAT, "%s", cnf_errmsg()) : rc;
    cfg.train_T = train_T != 0;
    if (cfg.blocks > 1024)
        return cnf_fail(CNF_EFORMAT, "model metadata 'blocks' = %zu is implausible", cfg.blocks);
    cnf_rng r;
    cnf_rng_seed(&r, 0);
    rc = cnf_cflow_create(out, &cfg, &r);
    if (rc == CNF_ENOMEM) /* a valid file too large for this machine is not a format error */
        return rc;
    if (rc)
        return cnf_fail(CNF_EFORMAT, "model architecture is invalid: %s", cnf_errmsg());
    cflow *c = (cflow *)*out;
    for (size_t b = 0; !rc && b < cfg.blocks; b++)
        for (size_t i = 0; !rc && i < cnf_mlp_n_blocks(c->mlp); i++) {
            const char *name;
            size_t off, shape[2];
            cnf_mlp_block(c->mlp, i, &name, &off, &shape[0], &shape[1]);
            char key[64];
            tensor_name(key, sizeof key, b, name);
            const double *data;
            rc = cnf_st_get_shaped(f, key, shape[1] == 1 ? 1 : 2, shape, &data);
            if (!rc)
                memcpy(c->base.theta + b * c->P + off, data, shape[0] * shape[1] * sizeof(double));
        }
    if (!rc && cfg.train_T) {
        size_t one = 1;
        const double *data;
        rc = cnf_st_get_shaped(f, "sqrt_end_time", 1, &one, &data);
        if (!rc)
            c->base.theta[c->base.n_params - 1] = data[0];
    }
    if (rc) {
        cnf_flow_free(*out);
        *out = NULL;
    }
    return rc;
}
