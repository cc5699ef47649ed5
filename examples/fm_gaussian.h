/* Flow matching on Gaussian data, shared by examples/fm_gaussian.c and the unit test
 * fm::gaussian_field_approaches_closed_form (tests/test_objectives.c): the data, the closed-form
 * optimal field, the distance of a CNF's field to it, and a cosine learning-rate schedule.
 *
 * With independent coupling (I-CFM, T = 1) on x₀ ~ N(m, s²I), x₁ ~ N(0, I) and
 * x_τ = (1−τ)x₀ + τx₁, the optimal field is the conditional mean of x₁ − x₀ given x_τ:
 *
 *   u*(x, τ) = −m + (τ − (1−τ)s²)/((1−τ)²s² + τ²) · (x − (1−τ)m). */
#ifndef CNF_EXAMPLES_FM_GAUSSIAN_H
#define CNF_EXAMPLES_FM_GAUSSIAN_H

#include <math.h>
#include <stdlib.h>

#include "cnf.h"

enum { FM_GAUSS_NTAU = 9 };

/* The field both fit: 2-D, two hidden layers of hidden[0], hidden[1] tanh units, time by
 * concatenation, T = 1 fixed (hidden must outlive cfg). */
static inline void fm_gauss_config(cnf_cflow_config *cfg, const size_t *hidden)
{
    cnf_cflow_config_default(cfg, 2);
    cfg->hidden = hidden;
    cfg->n_hidden = 2;
    cfg->time = CNF_TIME_CONCAT;
    cfg->act = CNF_ACT_TANH;
    cfg->T = 1.0;
    cfg->train_T = 0;
}

/* Batches of N(m, s²I) in 2-D; ctx points at {m, s}. */
static inline int fm_gauss_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    const double *ms = ctx;
    for (size_t i = 0; i < 2 * n; i++)
        X[i] = ms[0] + ms[1] * cnf_rng_normal(rng);
    return 0;
}

/* RMS distance of the 2-D CNF field v_θ(x, τ) to u* over npt points drawn from the path's
 * marginal N((1−τ)m, ((1−τ)²s² + τ²)I) at each τ = 0.1 … 0.9 (where the marginals have mass);
 * rms[k] gets the figure at τ = (k+1)/10 when rms is not NULL. Returns the overall RMS, or NaN
 * if the scratch cannot be allocated. */
static inline double fm_gauss_distance(cnf_flow *f, double m, double s, size_t npt, cnf_rng *r,
                                       double *rms)
{
    const cnf_mlp *mlp = cnf_cflow_mlp(f);
    cnf_mlp_work *w = NULL;
    double *x = malloc(4 * npt * sizeof(double)), *v = x ? x + 2 * npt : NULL, all = 0;
    if (!x || cnf_mlp_work_create(&w, mlp, npt, 0) != CNF_OK) {
        free(x);
        return NAN;
    }
    for (int k = 1; k <= FM_GAUSS_NTAU; k++) {
        double tau = k / 10.0, s2 = s * s;
        double var = (1 - tau) * (1 - tau) * s2 + tau * tau, slope = (tau - (1 - tau) * s2) / var;
        for (size_t i = 0; i < 2 * npt; i++)
            x[i] = (1 - tau) * m + sqrt(var) * cnf_rng_normal(r);
        cnf_mlp_forward(mlp, cnf_flow_params(f), tau, x, 2, npt, v, 2, w);
        double se = 0;
        for (size_t i = 0; i < 2 * npt; i++) {
            double u = -m + slope * (x[i] - (1 - tau) * m);
            se += (v[i] - u) * (v[i] - u);
        }
        if (rms)
            rms[k - 1] = sqrt(se / (2.0 * (double)npt));
        all += se;
    }
    cnf_mlp_work_free(w);
    free(x);
    return sqrt(all / (2.0 * (double)npt * FM_GAUSS_NTAU));
}

/* Cosine learning-rate decay from lr[0] to lr[1] over the run (Loshchilov & Hutter 2017, one
 * cycle), as a progress callback: set after each step for the next one. */
typedef struct {
    cnf_trainer *t;
    double lr[2];
} fm_cosine_ctx;

static inline int fm_cosine_lr(const cnf_train_progress *p, void *ctx)
{
    const fm_cosine_ctx *c = ctx;
    double frac = (double)p->iter / (double)p->iters;
    return cnf_optim_set_lr(cnf_trainer_optim(c->t),
                            c->lr[1] + (c->lr[0] - c->lr[1]) * 0.5 * (1 + cos(M_PI * frac)));
}

#endif
