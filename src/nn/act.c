/* The activations of the hidden layers: σ, σ', σ'' of one value (cnf_act_eval) and the fused
 * pass of a layer over its rows (cnf_nn_act_rows, cnf_nn_act_rows_f; the kernels are
 * act_rows_tmpl.c compiled per activation and row type). */
#include <math.h>
#include <stddef.h>

#include "core/vmath.h"
#include "mlp_impl.h"

/* σ, σ', σ'' of one activation, straight-line code over the vectorizable exp/tanh of vmath.h so
 * that a loop of it vectorizes (act_rows_tmpl.c) and single values (cnf_act_eval) give the same bits.
 * Softplus keeps libm's log1p (not vectorized). */
static inline void act_tanh(double z, double *h, double *ds, double *d2s)
{
    double v = cnf_tanh_fast(z), d = 1.0 - v * v;
    *h = v;
    *ds = d;
    *d2s = -2.0 * v * d;
}

static inline void act_softplus(double z, double *h, double *ds, double *d2s)
{
    double sg = cnf_sigmoid_fast(z);
    double a = fabs(z), e = cnf_exp_fast(a > 700.0 ? -700.0 : -a);
    *h = (z > 0 ? z : 0.0) + log1p(e);
    *ds = sg;
    *d2s = sg * (1.0 - sg);
}

static inline void act_elu(double z, double *h, double *ds, double *d2s)
{
    double zn = z > 0 ? 0.0 : z;
    double em = cnf_expm1_fast(zn), e = em + 1.0;
    *h = z > 0 ? z : em;
    *ds = z > 0 ? 1.0 : e;
    *d2s = z > 0 ? 0.0 : e;
}

static inline void act_swish(double z, double *h, double *ds, double *d2s)
{
    double sg = cnf_sigmoid_fast(z), q = sg * (1.0 - sg);
    *h = z * sg;
    *ds = sg + z * q;
    *d2s = q * (2.0 + z * (1.0 - 2.0 * sg));
}

void cnf_act_eval(cnf_act act, double z, double *s, double *ds, double *d2s)
{
    double h, d1, d2;
    switch (act) {
    case CNF_ACT_TANH:
        act_tanh(z, &h, &d1, &d2);
        break;
    case CNF_ACT_SOFTPLUS:
        act_softplus(z, &h, &d1, &d2);
        break;
    case CNF_ACT_ELU:
        act_elu(z, &h, &d1, &d2);
        break;
    default: /* CNF_ACT_SWISH */
        act_swish(z, &h, &d1, &d2);
        break;
    }
    *s = h;
    if (ds)
        *ds = d1;
    if (d2s)
        *d2s = d2;
}


/* The kernels: act_rows_tmpl.c per activation, in double and (but tanh) in float. */
#define NAME rows_tanh
#define ACT act_tanh
#define T double
#include "act_rows_tmpl.c"
#define NAME rows_softplus
#define ACT act_softplus
#define T double
#include "act_rows_tmpl.c"
#define NAME rows_elu
#define ACT act_elu
#define T double
#include "act_rows_tmpl.c"
#define NAME rows_swish
#define ACT act_swish
#define T double
#include "act_rows_tmpl.c"
#define NAME rowsf_softplus
#define ACT act_softplus
#define T float
#include "act_rows_tmpl.c"
#define NAME rowsf_elu
#define ACT act_elu
#define T float
#include "act_rows_tmpl.c"
#define NAME rowsf_swish
#define ACT act_swish
#define T float
#include "act_rows_tmpl.c"

/* tanh layers in mixed precision, all in float so that every vector op has 16 lanes:
 * z = g ⊙ (y + b) + c t with b, g, c t rounded to float (vf), h = tanh z, σ' = 1 − h² and, when
 * d2s is not NULL (a reverse pass follows), σ'' = −2hσ'. */
CNF_VECTOR_CLONES static void tanh_rows_f(size_t n, size_t o, const float *restrict vf,
                                          const float *restrict Y, float *restrict H,
                                          float *restrict ds, float *restrict d2s)
{
    const float *bf = vf, *gf = vf + o, *cf = vf + 2 * o;
    for (size_t i = 0; i < n; i++) {
        const float *y = Y + i * o;
        float *h = H + i * o, *d1 = ds + i * o;
        if (d2s) {
            float *d2 = d2s + i * o;
            for (size_t j = 0; j < o; j++) {
                float v = cnf_tanh_fastf(gf[j] * (y[j] + bf[j]) + cf[j]), a = 1.0f - v * v;
                h[j] = v;
                d1[j] = a;
                d2[j] = -2.0f * v * a;
            }
        } else {
            for (size_t j = 0; j < o; j++) {
                float v = cnf_tanh_fastf(gf[j] * (y[j] + bf[j]) + cf[j]);
                h[j] = v;
                d1[j] = 1.0f - v * v;
            }
        }
    }
}

void cnf_nn_act_rows_f(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                       const double *ct, const float *Y, float *H, float *ds, float *d2s,
                       const float *vf)
{
    if (act == CNF_ACT_TANH)
        tanh_rows_f(n, o, vf, Y, H, ds, d2s);
    else
        (act == CNF_ACT_SOFTPLUS ? rowsf_softplus
         : act == CNF_ACT_ELU    ? rowsf_elu
                                 : rowsf_swish)(n, o, b, g, ct, Y, H, ds, d2s);
}

void cnf_nn_act_rows(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                     const double *ct, const double *Y, double *H, double *ds, double *d2s)
{
    (act == CNF_ACT_TANH       ? rows_tanh
     : act == CNF_ACT_SOFTPLUS ? rows_softplus
     : act == CNF_ACT_ELU      ? rows_elu
                               : rows_swish)(n, o, b, g, ct, Y, H, ds, d2s);
}
