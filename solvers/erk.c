/* The explicit Runge–Kutta engine shared by every tableau method (Hairer, Nørsett & Wanner,
 * "Solving ODEs I", §II.1): stages k_i = f(t + c_i h, y + h Σ_{j<i} a_ij k_j), the solution
 * y + h Σ b_i k_i and the embedded error estimate h Σ e_i k_i. With an FSAL table the last
 * stage is f(t + h, y_{n+1}), handed back through dydt_out so the driver passes it in as the
 * next step's first stage: s − 1 evaluations per accepted step (as torchdiffeq does). */
#include <stdlib.h>

#include "internal.h"
#include "stepper.h"
#include "core/vmath.h"

typedef struct erk_state {
    size_t dim, stages;
    double *k;    /* (stages, dim) stage derivatives */
    double *ys;   /* (stages − 1, dim) the arguments of stages 2..s, kept until the next step
                   * (cnf_erk_stage_arg) */
} erk_state;

void *cnf_erk_alloc(const cnf_stepper_type *T, size_t dim)
{
    erk_state *s = cnf_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->dim = dim;
    s->stages = T->tableau->stages;
    s->k = cnf_calloc(s->stages * dim, sizeof *s->k);
    s->ys = cnf_calloc(cnf_size_mul(s->stages > 1 ? s->stages - 1 : 1, dim), sizeof *s->ys);
    if (!s->k || !s->ys) {
        cnf_erk_free(s);
        return NULL;
    }
    return s;
}

void cnf_erk_free(void *state)
{
    erk_state *s = state;
    if (!s)
        return;
    free(s->k);
    free(s->ys);
    free(s);
}

/* The engine keeps nothing between steps (the FSAL stage lives in the driver). */
void cnf_erk_reset(void *state) { (void)state; }

/* out = y + h Σ_{j<n} w_j k_j over values [i0, i1), skipping zero weights (compiled per vector
 * width: the same bits). In blocks of 512 values, so that out stays in L1 while every k_j is
 * added: one pass over each array instead of one per stage over out; each value sees the same
 * operations in the same order whatever the blocks or the range. */
typedef struct combination {
    double *out;
    const double *y; /* NULL: 0 */
    double h;
    const double *w;
    size_t n;
    const double *const *k;
} combination;

CNF_VECTOR_CLONES static void combine_range(void *arg, size_t i0, size_t i1)
{
    enum { BLOCK = 512 };
    const combination *c = arg;
    for (size_t b0 = i0; b0 < i1; b0 += BLOCK) {
        const size_t m = i1 - b0 < BLOCK ? i1 - b0 : BLOCK;
        double *o = c->out + b0;
        for (size_t i = 0; i < m; i++)
            o[i] = c->y ? c->y[b0 + i] : 0.0;
        for (size_t j = 0; j < c->n; j++) {
            if (c->w[j] == 0.0)
                continue;
            const double hw = c->h * c->w[j], *kj = c->k[j] + b0;
            for (size_t i = 0; i < m; i++)
                o[i] += hw * kj[i];
        }
    }
}

/* The combination over the whole state, split by the system's parallel loop if it has one. */
static void combine(cnf_sys *sys, double *out, const double *y, double h, const double *w,
                    size_t n, const double *const *k)
{
    combination c = {.out = out, .y = y, .h = h, .w = w, .n = n, .k = k};
    cnf_sys_par(sys, combine_range, &c);
}

int cnf_erk_apply(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t, double h,
                  const double *y, double *y_out, double *yerr, const double *dydt_in,
                  double *dydt_out)
{
    erk_state *s = state;
    const cnf_rk_tableau *tab = T->tableau;
    size_t dim = s->dim, ns = tab->stages;
    const double *k[16]; /* stage pointers; no table has more than 16 stages */
    int rc;

    if (dydt_in) {
        k[0] = dydt_in;
    } else {
        if ((rc = cnf_sys_eval(sys, t, y, s->k)))
            return rc;
        k[0] = s->k;
    }
    for (size_t i = 1; i < ns; i++) {
        double *ki = s->k + i * dim;
        /* With FSAL the last stage's argument is the new solution itself. */
        double *arg = (tab->fsal && i == ns - 1) ? y_out : s->ys + (i - 1) * dim;
        combine(sys, arg, y, h, tab->a + i * ns, i, k);
        if ((rc = cnf_sys_eval(sys, t + tab->c[i] * h, arg, ki)))
            return rc;
        k[i] = ki;
    }
    if (!tab->fsal)
        combine(sys, y_out, y, h, tab->b, ns, k);
    if (yerr)
        combine(sys, yerr, NULL, h, tab->e, ns, k);
    if (dydt_out) {
        if (tab->fsal) {
            for (size_t i = 0; i < dim; i++)
                dydt_out[i] = k[ns - 1][i];
        } else if ((rc = cnf_sys_eval(sys, t + h, y_out, dydt_out))) {
            return rc;
        }
    }
    return 0;
}

const double *cnf_erk_stage_arg(const void *state, const cnf_stepper_type *T, size_t i)
{
    const erk_state *s = state;
    const cnf_rk_tableau *tab = T->tableau;
    if (i == 0 || i >= tab->stages || (tab->fsal && i == tab->stages - 1))
        return NULL;
    return s->ys + (i - 1) * s->dim;
}
