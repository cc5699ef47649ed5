/* The CNF's gradient by backpropagation through the RK steps of the forward solve: the solver
 * layer reverses the recorded steps (cnf_rk_tape_reverse); the CNF supplies the VJP of its
 * augmented field at each stage. */
#include <string.h>

#include "cflow_internal.h"

/* What the VJP callback accumulates into besides the state's cotangent. */
typedef struct bp_ctx {
    aug *a;
    double *gtheta, *gT;
} bp_ctx;

/* gy += wᵀ ∂g/∂s at (τ, y), and ∇_θ, ∂/∂T of w·g into the block's gradients: the stage is
 * evaluated right before its reverse pass, on one slot, while its activations are in cache. */
static int backprop_vjp(void *ctx, double tau, const double *y, const double *w, double *gy)
{
    bp_ctx *p = ctx;
    aug *a = p->a;
    const size_t S = a->c->cfg.dim + 3;
    slot *sl = &a->c->slot;
    int rc = cflow_aug_eval(a, sl, tau, y, S, 1);
    if (rc)
        return rc;
    return cflow_aug_vjp(a, sl, tau, w, S, w, 1.0, gy, S, p->gtheta, p->gT);
}

int cflow_backprop_block(aug *a, const cnf_rk_tape *tp, double *lam, double *gtheta, double *gT)
{
    int rc = cflow_ensure_slot(a->c, a->n, a->K);
    if (rc)
        return rc;
    double *work = cflow_rev_scratch(a->c, cnf_rk_reverse_work_len(tp->tab, tp->dim),
                                     "RK stages for the reverse pass");
    if (!work)
        return CNF_ENOMEM;
    bp_ctx p = {.a = a, .gtheta = gtheta, .gT = gT};
    return cnf_rk_tape_reverse(tp, lam, work, backprop_vjp, &p, cflow_state_par, a);
}
