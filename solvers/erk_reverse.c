/* The reverse of the explicit RK engine (erk.c): a tape of a solve's accepted steps, recorded by
 * the driver's observer, and the reverse-mode pass through those steps given a vector-Jacobian
 * product of the right-hand side (discretize-then-optimize: the exact gradient of the computed
 * solution, as torchdiffeq's backprop through its solver).
 *
 * One step y_{n+1} = y_n + h Σ_i b_i k_i, k_i = f(t + c_i h, Y_i), Y_i = y_n + h Σ_{j<i} a_ij k_j,
 * reversed with ȳ = ∂L/∂y_{n+1}: k̄_i = h b_i ȳ for every stage, then for i = s', …, 1 (s' the last
 * stage with a non-zero weight; later ones do not feed y_{n+1})
 *     Ȳ_i = k̄_iᵀ ∂f/∂y (t + c_i h, Y_i),   k̄_j += h a_ij Ȳ_i (j < i),   ȳ += Ȳ_i,
 * which leaves ∂L/∂y_n in ȳ. The stage arguments Y_2..Y_s' are the engine's own, copied from it as
 * each step is accepted (cnf_erk_stage_arg), so the reverse pass evaluates each stage's VJP right
 * after the other, with no forward evaluation to recompute them. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stepper.h"
#include "core/vmath.h"

/* Stages 1..s' of an RK step feed its result: those past the last non-zero weight do not. */
static size_t stages_used(const cnf_rk_tableau *tab)
{
    size_t s_eff = 0;
    for (size_t i = 0; i < tab->stages; i++)
        if (tab->b[i] != 0.0)
            s_eff = i + 1;
    return s_eff;
}

void cnf_rk_tape_free(cnf_rk_tape *tp)
{
    free(tp->t);
    free(tp->h);
    free(tp->y);
    free(tp->ys);
    memset(tp, 0, sizeof *tp);
}

int cnf_rk_tape_begin(cnf_rk_tape *tp, const cnf_ode_solver *s, size_t dim, int keep_stages)
{
    const cnf_rk_tableau *tab = keep_stages ? cnf_ode_solver_tableau(s) : NULL;
    if (keep_stages && !tab)
        return cnf_fail(CNF_EUNSUPPORTED, "reversing the steps needs an explicit RK method");
    const size_t used = tab ? stages_used(tab) : 0, stages = used > 1 ? used - 1 : 0;
    if (tp->dim != dim || tp->stages != stages) {
        free(tp->y);
        free(tp->ys);
        tp->y = tp->ys = NULL;
        tp->cap = 0;
        tp->dim = dim;
        tp->stages = stages;
    }
    tp->solver = s;
    tp->tab = tab;
    tp->len = 0;
    return CNF_OK;
}

int cnf_rk_tape_record(double t, double h, const double *y_old, const double *y_new, void *ctx)
{
    cnf_rk_tape *tp = ctx;
    if (tp->len == tp->cap) {
        size_t cap = tp->cap ? 2 * tp->cap : 64;
        double *nt = realloc(tp->t, cap * sizeof(double));
        if (nt)
            tp->t = nt;
        double *nh = realloc(tp->h, cap * sizeof(double));
        if (nh)
            tp->h = nh;
        const size_t per_step = (1 + tp->stages) * tp->dim;
        const int too_big = cap > (size_t)-1 / sizeof(double) / per_step;
        double *ny = too_big ? NULL : realloc(tp->y, cap * tp->dim * sizeof(double));
        if (ny)
            tp->y = ny;
        double *ns = too_big || !tp->stages
                         ? NULL
                         : realloc(tp->ys, cap * tp->stages * tp->dim * sizeof(double));
        if (ns)
            tp->ys = ns;
        if (!nt || !nh || !ny || (tp->stages && !ns))
            return cnf_fail(CNF_ENOMEM, "storing %zu forward steps for the gradient", cap);
        tp->cap = cap;
    }
    tp->t[tp->len] = t;
    tp->h[tp->len] = h;
    memcpy(tp->y + tp->len * tp->dim, y_old, tp->dim * sizeof(double));
    for (size_t i = 0; i < tp->stages; i++) {
        const double *arg = cnf_ode_solver_stage_arg(tp->solver, i + 1);
        memcpy(tp->ys + (tp->len * tp->stages + i) * tp->dim, arg ? arg : y_new,
               tp->dim * sizeof(double));
    }
    tp->len++;
    return 0;
}

size_t cnf_rk_reverse_work_len(const cnf_rk_tableau *tab, size_t dim)
{
    return cnf_size_mul(tab->stages + 1, dim);
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

/* The state-sized updates of a reverse step over values [m0, m1): at the start of a step
 * (i = SIZE_MAX) k̄_i = h b_i ȳ for every stage; after stage i's VJP, k̄_j += h a_ij Ȳ_i (j < i),
 * ȳ += Ȳ_i, and Ȳ_i = 0 for the next VJP to accumulate into. Element by element: the split of
 * the range changes no bits. */
typedef struct rev_vals {
    const cnf_rk_tableau *tab;
    double h;
    size_t i, s_eff, dim;
    double *kb, *Ybi, *lam;
} rev_vals;

static void rev_vals_fn(void *ctx, size_t m0, size_t m1)
{
    const rev_vals *b = ctx;
    const size_t len = m1 - m0, ns = b->tab->stages;
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

static void rev_vals_run(rev_vals *b, cnf_par_for par, void *par_ctx)
{
    if (par)
        par(par_ctx, b->dim, rev_vals_fn, b);
    else
        rev_vals_fn(b, 0, b->dim);
}

int cnf_rk_reverse_step(const cnf_rk_tableau *tab, double t, double h, const double *yn,
                        const double *ys, size_t dim, double *lam, double *work, cnf_rk_vjp vjp,
                        void *ctx, cnf_par_for par, void *par_ctx)
{
    const size_t s_eff = stages_used(tab);
    rev_vals b = {.tab = tab, .h = h, .i = (size_t)-1, .s_eff = s_eff, .dim = dim,
                  .kb = work, .Ybi = work + tab->stages * dim, .lam = lam};
    rev_vals_run(&b, par, par_ctx);
    for (size_t i = s_eff; i-- > 0;) {
        int rc = vjp(ctx, t + tab->c[i] * h, i ? ys + (i - 1) * dim : yn, b.kb + i * dim, b.Ybi);
        if (rc)
            return rc;
        b.i = i;
        rev_vals_run(&b, par, par_ctx);
    }
    return CNF_OK;
}

int cnf_rk_tape_reverse(const cnf_rk_tape *tp, double *lam, double *work, cnf_rk_vjp vjp,
                        void *ctx, cnf_par_for par, void *par_ctx)
{
    if (!tp->tab)
        return cnf_fail(CNF_EINVAL, "the tape was recorded without the RK stages");
    const size_t dim = tp->dim;
    memset(work + tp->tab->stages * dim, 0, dim * sizeof(double)); /* Ȳ_i starts zeroed */
    int rc = CNF_OK;
    for (size_t n = tp->len; n-- > 0 && rc == CNF_OK;)
        rc = cnf_rk_reverse_step(tp->tab, tp->t[n], tp->h[n], tp->y + n * dim,
                                 tp->stages ? tp->ys + n * tp->stages * dim : NULL, dim, lam, work,
                                 vjp, ctx, par, par_ctx);
    return rc;
}
