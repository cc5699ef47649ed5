/* The CNF's gradient by backpropagation through the RK steps of the forward solve. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- gradients: backprop through the RK steps ----------------------------------------------- */

/* The state-sized updates of backprop_step over a range of samples (rows of S values): at the
 * start of a step (i = SIZE_MAX) k̄_i = h b_i ȳ for every stage; after stage i's VJP,
 * k̄_j += h a_ij Ybi (j < i), ȳ += Ybi, and Ybi = 0 for the next VJP to accumulate into (it
 * starts zeroed: cflow_backprop_block clears it). */
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
    const size_t d = c->cfg.dim, S = d + 3, dim = a->n * S, s_eff = cflow_rk_stages_used(tab);
    slot *sl = &c->slot;
    bp_rows b = {.tab = tab, .h = h, .i = (size_t)-1, .s_eff = s_eff, .S = S, .dim = dim,
                 .kb = kb, .Ybi = Ybi, .lam = lam};
    cflow_split_rows(a, dim, a->n, bp_rows_fn, &b);
    for (size_t i = s_eff; i-- > 0;) {
        const double tau_i = tau + tab->c[i] * h;
        int rc = cflow_aug_eval(a, sl, tau_i, i ? ys + (i - 1) * dim : yn, S, 1);
        if (rc)
            return rc;
        const double *kbi = kb + i * dim;
        rc = cflow_aug_vjp(a, sl, tau_i, kbi, S, kbi, 1.0, Ybi, S, gtheta, gT);
        if (rc)
            return rc;
        b.i = i;
        cflow_split_rows(a, dim, a->n, bp_rows_fn, &b);
    }
    return CNF_OK;
}

int cflow_backprop_block(aug *a, const traj *tr, const cnf_rk_tableau *tab, double *lam,
                         double *gtheta, double *gT)
{
    const size_t dim = tr->dim, s = tab->stages;
    int rc = cflow_ensure_slot(a->c, a->n, a->K);
    if (rc)
        return rc;
    double *kb = cflow_rev_scratch(a->c, (s + 1) * dim, "RK stages for the reverse pass");
    if (!kb)
        return CNF_ENOMEM;
    memset(kb + s * dim, 0, dim * sizeof(double)); /* Ybi: backprop_step accumulates into it */
    for (size_t n = tr->len; n-- > 0 && rc == CNF_OK;)
        rc = backprop_step(a, tab, tr->t[n], tr->h[n], tr->y + n * dim,
                           tr->stages ? tr->ys + n * tr->stages * dim : NULL, lam, kb, kb + s * dim,
                           gtheta, gT);
    return rc;
}
