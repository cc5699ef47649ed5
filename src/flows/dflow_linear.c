/* Element-wise and linear flow layers: NICE's diagonal scaling (Dinh et al. 2015 §3.3), Glow's
 * ActNorm and LU-parametrised invertible linear map (Kingma & Dhariwal 2018 §3.1–3.2), the
 * reversal permutation, and the batch-norm flow layer (Dinh et al. 2017 §3.7; Papamakarios et
 * al. 2017 app. B). All written data → base: y = f(x), logdet = log|det ∂y/∂x|. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dflow.h"
#include "core/internal.h"

/* ---- scale and actnorm: y = exp(s) ⊙ x + b ----------------------------------------------------
 * θ = [s] (scale) or [b, s] (actnorm). logdet = Σ s for every row. */

static int has_bias(const cnf_dflow_layer *l) { return l->type == &dflow_actnorm; }
static const double *elem_s(const cnf_dflow_layer *l, const double *th)
{
    return th + (has_bias(l) ? l->dim : 0);
}

typedef struct actnorm_state {
    int done; /* the data-dependent initialisation has been decided */
} actnorm_state;

static int elem_create(cnf_dflow_layer *l)
{
    l->n_params = (has_bias(l) ? 2 : 1) * l->dim;
    if (has_bias(l)) {
        l->state = calloc(1, sizeof(actnorm_state));
        if (!l->state)
            return cnf_fail(CNF_ENOMEM, "allocating an actnorm layer");
    }
    return CNF_OK;
}

/* Forward (enc) or inverse of y = exp(s) ⊙ x + b; logdet Σ s either way. */
static void elem_map(cnf_dflow_layer *l, int enc, const double *th, const double *in, size_t n,
                     double *out, double *ld)
{
    const size_t d = l->dim;
    const double *s = elem_s(l, th), *b = has_bias(l) ? th : NULL;
    double sum = 0.0;
    for (size_t j = 0; j < d; j++)
        sum += s[j];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++) {
            double bj = b ? b[j] : 0.0, v = in[i * d + j];
            out[i * d + j] = enc ? exp(s[j]) * v + bj : (v - bj) * exp(-s[j]);
        }
        ld[i] += sum;
    }
}

static int elem_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                        double *Y, double *ld, int train)
{
    elem_map(l, 1, th, X, n, Y, ld);
    return CNF_OK;
}

static int elem_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n,
                        double *X, double *ld)
{
    elem_map(l, 0, th, Y, n, X, ld);
    return CNF_OK;
}

static int elem_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                         const double *GY, const double *GL, double *GX, double *gth, int train)
{
    const size_t d = l->dim;
    const double *s = elem_s(l, th);
    double *gs = gth + (has_bias(l) ? d : 0), *gb = has_bias(l) ? gth : NULL;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            double e = exp(s[j]), r = GY[i * d + j];
            GX[i * d + j] += r * e;
            gs[j] += r * e * X[i * d + j] + GL[i];
            if (gb)
                gb[j] += r;
        }
    return CNF_OK;
}

/* Per-dimension batch mean and biased variance of X (n, d). */
static void batch_moments(const double *X, size_t n, size_t d, double *mean, double *var)
{
    for (size_t j = 0; j < d; j++) {
        double m = 0.0, v = 0.0;
        for (size_t i = 0; i < n; i++)
            m += X[i * d + j];
        m /= (double)n;
        for (size_t i = 0; i < n; i++)
            v += (X[i * d + j] - m) * (X[i * d + j] - m);
        mean[j] = m;
        var[j] = v / (double)n;
    }
}

/* Glow's data-dependent initialisation: once, and only while θ is still the identity (zeros). */
static void actnorm_observe(cnf_dflow_layer *l, double *th, const double *X, size_t n, int step)
{
    actnorm_state *st = l->state;
    const size_t d = l->dim;
    if (st->done || n < 2)
        return;
    st->done = 1;
    for (size_t j = 0; j < 2 * d; j++)
        if (th[j] != 0.0)
            return;
    double *b = th, *s = th + d;
    batch_moments(X, n, d, b, s);
    for (size_t j = 0; j < d; j++) {
        double sd = sqrt(s[j]);
        s[j] = -log(sd > 1e-6 ? sd : 1e-6);
        b[j] = -b[j] * exp(s[j]);
    }
}

const dflow_layer_type dflow_scale = {
    .name = "scale", .create = elem_create, .forward = elem_forward, .inverse = elem_inverse,
    .backward = elem_backward};

const dflow_layer_type dflow_actnorm = {
    .name = "actnorm", .create = elem_create, .forward = elem_forward, .inverse = elem_inverse,
    .backward = elem_backward, .observe = actnorm_observe, .free_state = free};

/* ---- reverse: y_i = x_{d−1−i} ----------------------------------------------------------------- */

static int reverse_create(cnf_dflow_layer *l)
{
    l->n_params = 0;
    return CNF_OK;
}

static void reverse_rows(size_t d, const double *in, size_t n, double *out)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            out[i * d + j] = in[i * d + d - 1 - j];
}

static int reverse_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                           double *Y, double *ld, int train)
{
    reverse_rows(l->dim, X, n, Y);
    return CNF_OK;
}

static int reverse_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n,
                           double *X, double *ld)
{
    reverse_rows(l->dim, Y, n, X);
    return CNF_OK;
}

static int reverse_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                            const double *GY, const double *GL, double *GX, double *gth,
                            int train)
{
    const size_t d = l->dim;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            GX[i * d + d - 1 - j] += GY[i * d + j];
    return CNF_OK;
}

const dflow_layer_type dflow_reverse = {
    .name = "reverse", .create = reverse_create, .forward = reverse_forward,
    .inverse = reverse_inverse, .backward = reverse_backward};

/* ---- lu: y = P L (U + diag(exp(s))) x ----------------------------------------------------------
 * θ = [L strict lower (row i: j < i), U strict upper (row i: j > i), s]; P reverses the order,
 * y_i = w_{d−1−i}. Computed as v = Ũ x, w = L v, y = P w; logdet = Σ s. */

static size_t tri(size_t d) { return d * (d - 1) / 2; }
static size_t lo_at(size_t i, size_t j) { return i * (i - 1) / 2 + j; }                 /* j < i */
static size_t up_at(size_t d, size_t i, size_t j) { return i * (d - 1) - i * (i - 1) / 2 + j - i - 1; }

/* State: scratch v, gv (2d). */
static int lu_create(cnf_dflow_layer *l)
{
    l->n_params = 2 * tri(l->dim) + l->dim;
    return dflow_state_array(l, 2 * l->dim);
}

static void lu_init(const cnf_dflow_layer *l, double *th, cnf_rng *rng)
{
    for (size_t k = 0; k < 2 * tri(l->dim); k++)
        th[k] = 0.1 * cnf_rng_normal(rng);
}

static double lu_sum_s(size_t d, const double *s)
{
    double sum = 0.0;
    for (size_t j = 0; j < d; j++)
        sum += s[j];
    return sum;
}

static int lu_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n, double *Y,
                      double *ld, int train)
{
    const size_t d = l->dim;
    const double *Lm = th, *Um = th + tri(d), *s = th + 2 * tri(d);
    double *v = (double *)l->state;
    const double sum = lu_sum_s(d, s);
    for (size_t r = 0; r < n; r++) {
        const double *x = X + r * d;
        for (size_t i = 0; i < d; i++) {
            double a = exp(s[i]) * x[i];
            for (size_t j = i + 1; j < d; j++)
                a += Um[up_at(d, i, j)] * x[j];
            v[i] = a;
        }
        for (size_t i = 0; i < d; i++) {
            double a = v[i];
            for (size_t j = 0; j < i; j++)
                a += Lm[lo_at(i, j)] * v[j];
            Y[r * d + d - 1 - i] = a;
        }
        ld[r] += sum;
    }
    return CNF_OK;
}

static int lu_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n, double *X,
                      double *ld)
{
    const size_t d = l->dim;
    const double *Lm = th, *Um = th + tri(d), *s = th + 2 * tri(d);
    double *v = (double *)l->state;
    const double sum = lu_sum_s(d, s);
    for (size_t r = 0; r < n; r++) {
        double *x = X + r * d;
        for (size_t i = 0; i < d; i++) { /* forward substitution L v = w */
            double a = Y[r * d + d - 1 - i];
            for (size_t j = 0; j < i; j++)
                a -= Lm[lo_at(i, j)] * v[j];
            v[i] = a;
        }
        for (size_t i = d; i-- > 0;) { /* back substitution Ũ x = v */
            double a = v[i];
            for (size_t j = i + 1; j < d; j++)
                a -= Um[up_at(d, i, j)] * x[j];
            x[i] = a * exp(-s[i]);
        }
        ld[r] += sum;
    }
    return CNF_OK;
}

static int lu_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                       const double *GY, const double *GL, double *GX, double *gth, int train)
{
    const size_t d = l->dim;
    const double *Lm = th, *Um = th + tri(d), *s = th + 2 * tri(d);
    double *gL = gth, *gU = gth + tri(d), *gs = gth + 2 * tri(d);
    double *v = (double *)l->state, *gv = v + d;
    for (size_t r = 0; r < n; r++) {
        const double *x = X + r * d, *gw = GY + r * d; /* gw_i = GY_{d−1−i} */
        for (size_t i = 0; i < d; i++) {
            double a = exp(s[i]) * x[i];
            for (size_t j = i + 1; j < d; j++)
                a += Um[up_at(d, i, j)] * x[j];
            v[i] = a;
        }
        for (size_t j = 0; j < d; j++) { /* gv = Lᵀ gw, gL_ij += gw_i v_j */
            double a = gw[d - 1 - j];
            for (size_t i = j + 1; i < d; i++) {
                a += Lm[lo_at(i, j)] * gw[d - 1 - i];
                gL[lo_at(i, j)] += gw[d - 1 - i] * v[j];
            }
            gv[j] = a;
        }
        for (size_t j = 0; j < d; j++) { /* gx = Ũᵀ gv, gU_ij += gv_i x_j */
            double e = exp(s[j]), a = e * gv[j];
            for (size_t i = 0; i < j; i++) {
                a += Um[up_at(d, i, j)] * gv[i];
                gU[up_at(d, i, j)] += gv[i] * x[j];
            }
            GX[r * d + j] += a;
            gs[j] += gv[j] * e * x[j] + GL[r];
        }
    }
    return CNF_OK;
}

const dflow_layer_type dflow_lu = {
    .name = "lu", .create = lu_create, .init = lu_init, .forward = lu_forward,
    .inverse = lu_inverse, .backward = lu_backward, .free_state = free};

/* ---- batchnorm: y = exp(γ) ⊙ (x − μ)/√(v + ε) + β ---------------------------------------------
 * θ = [γ, β, running mean, running variance]. Training: μ, v of the batch; else the running
 * values. logdet = Σ_j (γ_j − ½ log(v_j + ε)). */

/* State: the batch mean and variance (2d). */
static int bn_create(cnf_dflow_layer *l)
{
    const cnf_dflow_layer_config *c = &l->cfg;
    if (!(c->bn_momentum > 0.0 && c->bn_momentum <= 1.0) || !(c->bn_eps > 0.0))
        return cnf_fail(CNF_EINVAL, "batchnorm: momentum %g must be in (0, 1] and eps %g > 0",
                        c->bn_momentum, c->bn_eps);
    l->n_params = 4 * l->dim;
    return dflow_state_array(l, 2 * l->dim);
}

static void bn_init(const cnf_dflow_layer *l, double *th, cnf_rng *rng)
{
    for (size_t j = 0; j < l->dim; j++)
        th[3 * l->dim + j] = 1.0;
}

/* The mean and variance in use: the batch's (train) or the running ones. */
static void bn_stats(cnf_dflow_layer *l, const double *th, const double *X, size_t n, int train,
                     const double **mean, const double **var)
{
    const size_t d = l->dim;
    if (train) {
        double *mv = (double *)l->state;
        batch_moments(X, n, d, mv, mv + d);
        *mean = mv;
        *var = mv + d;
    } else {
        *mean = th + 2 * d;
        *var = th + 3 * d;
    }
}

/* *sum = Σ_j (γ_j − ½ log(v_j + ε)); CNF_ENONFINITE for a non-positive v + ε (a running
 * variance set from outside). */
static int bn_logdet(size_t d, const double *gam, const double *var, double eps, double *sum)
{
    *sum = 0.0;
    for (size_t j = 0; j < d; j++) {
        if (!(var[j] + eps > 0.0))
            return cnf_fail(CNF_ENONFINITE, "batchnorm: variance %g in dimension %zu", var[j], j);
        *sum += gam[j] - 0.5 * log(var[j] + eps);
    }
    return CNF_OK;
}

static int bn_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n, double *Y,
                      double *ld, int train)
{
    const size_t d = l->dim;
    const double *gam = th, *bet = th + d, *mean, *var, eps = l->cfg.bn_eps;
    bn_stats(l, th, X, n, train, &mean, &var);
    double sum;
    int rc = bn_logdet(d, gam, var, eps, &sum);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            Y[i * d + j] = exp(gam[j]) * (X[i * d + j] - mean[j]) / sqrt(var[j] + eps) + bet[j];
        ld[i] += sum;
    }
    return CNF_OK;
}

static int bn_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n, double *X,
                      double *ld)
{
    const size_t d = l->dim;
    const double *gam = th, *bet = th + d, *mean = th + 2 * d, *var = th + 3 * d;
    const double eps = l->cfg.bn_eps;
    double sum;
    int rc = bn_logdet(d, gam, var, eps, &sum);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < d; j++)
            X[i * d + j] = (Y[i * d + j] - bet[j]) * exp(-gam[j]) * sqrt(var[j] + eps) + mean[j];
        ld[i] += sum;
    }
    return CNF_OK;
}

static int bn_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                       const double *GY, const double *GL, double *GX, double *gth, int train)
{
    const size_t d = l->dim;
    const double *gam = th, *mean, *var, eps = l->cfg.bn_eps;
    double *ggam = gth, *gbet = gth + d, *gmean = gth + 2 * d, *gvar = gth + 3 * d;
    bn_stats(l, th, X, n, train, &mean, &var);
    double G = 0.0; /* Σ_i GL_i */
    for (size_t i = 0; i < n; i++)
        G += GL[i];
    for (size_t j = 0; j < d; j++) {
        const double e = exp(gam[j]), ve = var[j] + eps, sd = sqrt(ve);
        double sr = 0.0, srx = 0.0; /* Σ GY_ij, Σ GY_ij x̂_ij */
        for (size_t i = 0; i < n; i++) {
            double xh = (X[i * d + j] - mean[j]) / sd;
            sr += GY[i * d + j];
            srx += GY[i * d + j] * xh;
        }
        ggam[j] += e * srx + G;
        gbet[j] += sr;
        if (train) {
            /* Through x̂ = (x − μ)/√(v+ε) with batch μ, v (the standard batch-norm backward),
             * plus the logdet term −½ G log(v + ε): ∂/∂x_i = −G x̂_i / (n √(v+ε)). */
            const double mr = e * sr / (double)n, mrx = e * srx / (double)n;
            for (size_t i = 0; i < n; i++) {
                double xh = (X[i * d + j] - mean[j]) / sd;
                GX[i * d + j] += (e * GY[i * d + j] - mr - xh * mrx) / sd
                                 - G * xh / ((double)n * sd);
            }
        } else {
            for (size_t i = 0; i < n; i++)
                GX[i * d + j] += e * GY[i * d + j] / sd;
            gmean[j] -= e * sr / sd;
            gvar[j] -= 0.5 * (e * srx + G) / ve;
        }
    }
    return CNF_OK;
}

static void bn_observe(cnf_dflow_layer *l, double *th, const double *X, size_t n, int step)
{
    if (!step)
        return;
    const size_t d = l->dim;
    double *mv = (double *)l->state, mom = l->cfg.bn_momentum;
    batch_moments(X, n, d, mv, mv + d);
    for (size_t j = 0; j < 2 * d; j++)
        th[2 * d + j] = (1.0 - mom) * th[2 * d + j] + mom * mv[j];
}

const dflow_layer_type dflow_batchnorm = {
    .name = "batchnorm", .create = bn_create, .init = bn_init, .forward = bn_forward,
    .inverse = bn_inverse, .backward = bn_backward, .observe = bn_observe, .free_state = free};
