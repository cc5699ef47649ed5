/* Coupling layers: the dimensions split into a conditioning half A (passed through) and a
 * transformed half B, y_B = τ(x_B; MLP(x_A)) element-wise, so the Jacobian is triangular and
 * logdet = Σ_B log τ'. Three element-wise transforms τ:
 *   additive (NICE; Dinh et al. 2015 eq. 5):           y = x + t,                   log τ' = 0
 *   affine   (RealNVP; Dinh et al. 2017 eq. 7):        y = x e^s + t, s = c tanh(s̃/c), log τ' = s
 *   spline   (rational-quadratic; Durkan et al. 2019 §3.1, eq. 4 and app. A):
 *            monotone rational-quadratic on K bins of [−B, B], identity outside.
 * The network's output row holds the transform parameters of each transformed dimension in turn
 * (affine: all s̃ then all t). The reverse pass re-runs the network on x_A, takes the
 * element-wise derivatives, and sends the parameter seeds back through cnf_mlp_backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dflow.h"
#include "core/internal.h"

typedef struct coupling coupling;

/* An element-wise transform of dimension k (0 ≤ k < nb) with the row's network output p. */
typedef struct transform_ops {
    size_t (*n_out)(const coupling *c); /* network outputs per row */
    void (*fwd)(const coupling *c, const double *p, size_t k, double x, double *y, double *ld);
    void (*inv)(const coupling *c, const double *p, size_t k, double y, double *x, double *ld);
    /* Accumulate ∂/∂x and ∂/∂p of gy·y + gl·log τ' into *gx and gp. */
    void (*bwd)(const coupling *c, const double *p, size_t k, double x, double gy, double gl,
                double *gx, double *gp);
} transform_ops;

struct coupling {
    const transform_ops *ops;
    dflow_net net;
    size_t *A, *B, na, nb, P; /* P = network outputs per row */
    size_t K;                 /* spline bins */
    double bound, c;          /* spline B; affine log-scale bound */
    double *buf;              /* xa (n, na), F (n, P), GF (n, P), GA (n, na) */
    size_t cap;
    double *spl;              /* spline scratch (6K + 3) */
};

/* ---- additive ---------------------------------------------------------------------------------*/

static size_t additive_n_out(const coupling *c) { return c->nb; }
static void additive_fwd(const coupling *c, const double *p, size_t k, double x, double *y,
                         double *ld)
{
    *y = x + p[k];
}
static void additive_inv(const coupling *c, const double *p, size_t k, double y, double *x,
                         double *ld)
{
    *x = y - p[k];
}
static void additive_bwd(const coupling *c, const double *p, size_t k, double x, double gy,
                         double gl, double *gx, double *gp)
{
    *gx += gy;
    gp[k] += gy;
}
static const transform_ops ADDITIVE = {additive_n_out, additive_fwd, additive_inv, additive_bwd};

/* ---- affine ---------------------------------------------------------------------------------- */

static size_t affine_n_out(const coupling *c) { return 2 * c->nb; }
static void affine_fwd(const coupling *c, const double *p, size_t k, double x, double *y,
                       double *ld)
{
    double s = c->c * tanh(p[k] / c->c);
    *y = x * exp(s) + p[c->nb + k];
    *ld += s;
}
static void affine_inv(const coupling *c, const double *p, size_t k, double y, double *x,
                       double *ld)
{
    double s = c->c * tanh(p[k] / c->c);
    *x = (y - p[c->nb + k]) * exp(-s);
    *ld += s;
}
static void affine_bwd(const coupling *c, const double *p, size_t k, double x, double gy,
                       double gl, double *gx, double *gp)
{
    double th = tanh(p[k] / c->c), e = exp(c->c * th);
    *gx += gy * e;
    gp[k] += (gy * x * e + gl) * (1.0 - th * th);
    gp[c->nb + k] += gy;
}
static const transform_ops AFFINE = {affine_n_out, affine_fwd, affine_inv, affine_bwd};

/* ---- rational-quadratic spline ----------------------------------------------------------------
 * Raw outputs per dimension q = [a (K), b (K), e (K−1)]: bin widths w_j = 2B(m + (1 − Km) pa_j),
 * heights h_j likewise from pb = softmax(b), m = 1e-3; knots x_0 = −B, x_j = x_0 + Σ_{i<j} w_i
 * (y likewise); derivatives δ_0 = δ_K = 1 (matching the identity tails), δ_j = m + softplus(e_j).
 * In bin k with ξ = (x − x_k)/w_k, s = h_k/w_k, τ = ξ(1 − ξ):
 *     y = y_k + h_k (s ξ² + δ_k τ) / (s + (δ_{k+1} + δ_k − 2s) τ)
 *     dy/dx = s² (δ_{k+1} ξ² + 2 s τ + δ_k (1 − ξ)²) / (s + (δ_{k+1} + δ_k − 2s) τ)². */

static const double SPLINE_MIN = 1e-3;

static double softplus(double a) { return a > 0 ? a + log1p(exp(-a)) : log1p(exp(a)); }
static double sigmoid(double a) { return a >= 0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a)); }

static void softmax(const double *a, size_t K, double *p)
{
    double m = a[0], z = 0.0;
    for (size_t j = 1; j < K; j++)
        m = a[j] > m ? a[j] : m;
    for (size_t j = 0; j < K; j++)
        z += (p[j] = exp(a[j] - m));
    for (size_t j = 0; j < K; j++)
        p[j] /= z;
}

/* Knots of one dimension: xs, ys, dv (K+1); pw, ph (K) the softmax probabilities. */
typedef struct knots {
    double *xs, *ys, *dv, *pw, *ph, *w, *h;
} knots;

static knots spline_knots(const coupling *c, const double *q)
{
    const size_t K = c->K;
    const double B = c->bound, span = 2.0 * B * (1.0 - (double)K * SPLINE_MIN);
    double *s = c->spl;
    knots kn = {s, s + K + 1, s + 2 * K + 2, s + 3 * K + 3, s + 4 * K + 3, s + 5 * K + 3,
                s + 6 * K + 3};
    softmax(q, K, kn.pw);
    softmax(q + K, K, kn.ph);
    kn.xs[0] = kn.ys[0] = -B;
    for (size_t j = 0; j < K; j++) {
        kn.w[j] = 2.0 * B * SPLINE_MIN + span * kn.pw[j];
        kn.h[j] = 2.0 * B * SPLINE_MIN + span * kn.ph[j];
        kn.xs[j + 1] = kn.xs[j] + kn.w[j];
        kn.ys[j + 1] = kn.ys[j] + kn.h[j];
    }
    kn.xs[K] = kn.ys[K] = B;
    kn.dv[0] = kn.dv[K] = 1.0;
    for (size_t j = 1; j < K; j++)
        kn.dv[j] = SPLINE_MIN + softplus(q[2 * K + j - 1]);
    return kn;
}

static size_t find_bin(const double *knot, size_t K, double v)
{
    size_t lo = 0, hi = K; /* knot[lo] ≤ v < knot[hi] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (knot[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static size_t spline_n_out(const coupling *c) { return (3 * c->K - 1) * c->nb; }

/* Bin of v (an x if by_y = 0, else a y) in dimension k, with its local quantities. */
typedef struct rq_bin {
    knots kn;
    size_t b;
    double w, h, s, d0, d1;
} rq_bin;

static rq_bin spline_bin(const coupling *c, const double *p, size_t k, double v, int by_y)
{
    rq_bin r;
    r.kn = spline_knots(c, p + k * (3 * c->K - 1));
    r.b = find_bin(by_y ? r.kn.ys : r.kn.xs, c->K, v);
    r.w = r.kn.w[r.b];
    r.h = r.kn.h[r.b];
    r.s = r.h / r.w;
    r.d0 = r.kn.dv[r.b];
    r.d1 = r.kn.dv[r.b + 1];
    return r;
}

/* log dy/dx at ξ in bin r. */
static double rq_logderiv(const rq_bin *r, double xi)
{
    double tau = xi * (1.0 - xi), den = r->s + (r->d1 + r->d0 - 2.0 * r->s) * tau;
    double M = r->d1 * xi * xi + 2.0 * r->s * tau + r->d0 * (1.0 - xi) * (1.0 - xi);
    return 2.0 * log(r->s) + log(M) - 2.0 * log(den);
}

static void spline_fwd(const coupling *c, const double *p, size_t k, double x, double *y,
                       double *ld)
{
    if (!(x > -c->bound && x < c->bound)) {
        *y = x;
        return;
    }
    rq_bin r = spline_bin(c, p, k, x, 0);
    double xi = (x - r.kn.xs[r.b]) / r.w, tau = xi * (1.0 - xi);
    double den = r.s + (r.d1 + r.d0 - 2.0 * r.s) * tau;
    *y = r.kn.ys[r.b] + r.h * (r.s * xi * xi + r.d0 * tau) / den;
    *ld += rq_logderiv(&r, xi);
}

static void spline_inv(const coupling *c, const double *p, size_t k, double y, double *x,
                       double *ld)
{
    if (!(y > -c->bound && y < c->bound)) {
        *x = y;
        return;
    }
    rq_bin r = spline_bin(c, p, k, y, 1);
    double dy = y - r.kn.ys[r.b], g = r.d1 + r.d0 - 2.0 * r.s;
    /* a ξ² + b ξ + c = 0 (Durkan et al. eq. 6–8), the root in [0, 1] in its stable form. */
    double qa = r.h * (r.s - r.d0) + dy * g, qb = r.h * r.d0 - dy * g, qc = -r.s * dy;
    double disc = qb * qb - 4.0 * qa * qc;
    double xi = 2.0 * qc / (-qb - sqrt(disc > 0.0 ? disc : 0.0));
    *x = r.kn.xs[r.b] + xi * r.w;
    *ld += rq_logderiv(&r, xi);
}

static void spline_bwd(const coupling *c, const double *p, size_t k, double x, double gy,
                       double gl, double *gx, double *gp)
{
    const size_t K = c->K;
    const double B = c->bound;
    if (!(x > -B && x < B)) {
        *gx += gy;
        return;
    }
    const double *q = p + k * (3 * K - 1);
    double *gq = gp + k * (3 * K - 1);
    rq_bin r = spline_bin(c, p, k, x, 0);
    knots kn = r.kn;
    size_t b = r.b;
    double w = r.w, h = r.h, s = r.s, d0 = r.d0, d1 = r.d1;
    double xi = (x - kn.xs[b]) / w, tau = xi * (1.0 - xi), dtau = 1.0 - 2.0 * xi;
    double g = d1 + d0 - 2.0 * s, den = s + g * tau, N = s * xi * xi + d0 * tau;
    double M = d1 * xi * xi + 2.0 * s * tau + d0 * (1.0 - xi) * (1.0 - xi);
    /* Partials of y = y_k + h N/den and ld = 2 log s + log M − 2 log den in (ξ, s, δ_k, δ_k+1). */
    double N_xi = 2.0 * s * xi + d0 * dtau, N_s = xi * xi, N_d0 = tau;
    double den_xi = g * dtau, den_s = 1.0 - 2.0 * tau, den_d = tau;
    double M_xi = 2.0 * d1 * xi + 2.0 * s * dtau - 2.0 * d0 * (1.0 - xi), M_s = 2.0 * tau;
    double M_d0 = (1.0 - xi) * (1.0 - xi), M_d1 = xi * xi, den2 = den * den;
    double G_xi = gy * h * (N_xi * den - N * den_xi) / den2 + gl * (M_xi / M - 2.0 * den_xi / den);
    double G_s = gy * h * (N_s * den - N * den_s) / den2
                 + gl * (2.0 / s + M_s / M - 2.0 * den_s / den);
    double G_d0 = gy * h * (N_d0 * den - N * den_d) / den2 + gl * (M_d0 / M - 2.0 * den_d / den);
    double G_d1 = gy * h * (-N * den_d) / den2 + gl * (M_d1 / M - 2.0 * den_d / den);
    double G_h = gy * N / den + G_s / w;       /* explicit h and s = h/w */
    double G_w = -G_xi * xi / w - G_s * s / w; /* ξ = (x − x_k)/w, s = h/w */
    double G_xk = -G_xi / w, G_yk = gy;
    *gx += G_xi / w;
    /* Back to widths and heights (x_k = −B + Σ_{j<k} w_j), then through the softmaxes. */
    double *gw = c->spl + 7 * K + 4, *gh = gw + K;
    for (size_t j = 0; j < K; j++) {
        gw[j] = (j < b ? G_xk : 0.0) + (j == b ? G_w : 0.0);
        gh[j] = (j < b ? G_yk : 0.0) + (j == b ? G_h : 0.0);
    }
    const double span = 2.0 * B * (1.0 - (double)K * SPLINE_MIN);
    double sw = 0.0, sh = 0.0;
    for (size_t j = 0; j < K; j++) {
        sw += kn.pw[j] * gw[j];
        sh += kn.ph[j] * gh[j];
    }
    for (size_t j = 0; j < K; j++) {
        gq[j] += span * kn.pw[j] * (gw[j] - sw);
        gq[K + j] += span * kn.ph[j] * (gh[j] - sh);
    }
    if (b >= 1)
        gq[2 * K + b - 1] += G_d0 * sigmoid(q[2 * K + b - 1]);
    if (b + 1 <= K - 1)
        gq[2 * K + b] += G_d1 * sigmoid(q[2 * K + b]);
}
static const transform_ops SPLINE = {spline_n_out, spline_fwd, spline_inv, spline_bwd};

/* ---- the generic coupling layer --------------------------------------------------------------- */

static void coupling_free(void *p)
{
    coupling *c = p;
    if (!c)
        return;
    dflow_net_release(&c->net);
    free(c->A);
    free(c->B);
    free(c->buf);
    free(c->spl);
    free(c);
}

static const transform_ops *ops_of(const cnf_dflow_layer *l)
{
    return l->type == &dflow_additive ? &ADDITIVE : l->type == &dflow_affine ? &AFFINE : &SPLINE;
}

static int coupling_create(cnf_dflow_layer *l)
{
    const cnf_dflow_layer_config *cfg = &l->cfg;
    const size_t d = l->dim;
    const transform_ops *ops = ops_of(l);
    if (d < 2)
        return cnf_fail(CNF_EINVAL, "%s coupling needs dimension >= 2, got %zu", cfg->type, d);
    if (ops == &AFFINE && !(cfg->scale_bound > 0.0 && isfinite(cfg->scale_bound)))
        return cnf_fail(CNF_EINVAL, "affine coupling: scale_bound %g must be positive and finite",
                        cfg->scale_bound);
    if (ops == &SPLINE && (cfg->bins < 2 || (double)cfg->bins * SPLINE_MIN >= 0.5))
        return cnf_fail(CNF_EINVAL, "spline coupling: %zu bins (need 2 to %d)", cfg->bins,
                        (int)(0.5 / SPLINE_MIN) - 1);
    if (ops == &SPLINE && !(cfg->bound > 0.0 && isfinite(cfg->bound)))
        return cnf_fail(CNF_EINVAL, "spline coupling: bound %g must be positive and finite",
                        cfg->bound);
    coupling *c = calloc(1, sizeof *c);
    if (!c)
        return cnf_fail(CNF_ENOMEM, "allocating a coupling layer");
    c->ops = ops;
    c->K = cfg->bins;
    c->bound = cfg->bound;
    c->c = cfg->scale_bound;
    c->A = cnf_calloc(d, sizeof(size_t));
    c->B = cnf_calloc(d, sizeof(size_t));
    c->spl = cnf_calloc(9 * (c->K + 1), sizeof(double));
    if (!c->A || !c->B || !c->spl) {
        coupling_free(c);
        return cnf_fail(CNF_ENOMEM, "allocating a coupling layer");
    }
    dflow_split(d, cfg->parity, c->A, &c->na, c->B, &c->nb);
    c->P = ops->n_out(c);
    int rc = dflow_net_init(&c->net, cfg, c->na, c->P);
    if (rc) {
        coupling_free(c);
        return rc;
    }
    l->state = c;
    l->n_params = cnf_mlp_n_params(c->net.mlp);
    return CNF_OK;
}

static void coupling_init(const cnf_dflow_layer *l, double *th, cnf_rng *rng)
{
    dflow_net_init_params(&((coupling *)l->state)->net, th, rng);
}

/* Gather x_A of the n rows of X and run the network: F (n, P). */
static int condition(coupling *c, size_t d, const double *th, const double *X, size_t n,
                     double **F)
{
    double *buf = dflow_scratch(&c->buf, &c->cap, n * (2 * c->na + 2 * c->P));
    if (!buf)
        return cnf_fail(CNF_ENOMEM, "allocating coupling buffers for %zu rows", n);
    for (size_t i = 0; i < n; i++)
        for (size_t a = 0; a < c->na; a++)
            buf[i * c->na + a] = X[i * d + c->A[a]];
    *F = buf + n * c->na;
    return dflow_net_forward(&c->net, th, buf, n, *F);
}

/* Forward (enc) or inverse: the conditioning half is the same on both sides (y_A = x_A). */
static int coupling_map(cnf_dflow_layer *l, int enc, const double *th, const double *in, size_t n,
                        double *out, double *ld)
{
    coupling *c = l->state;
    const size_t d = l->dim;
    double *F;
    int rc = condition(c, d, th, in, n, &F);
    if (rc)
        return rc;
    memcpy(out, in, n * d * sizeof *out);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < c->nb; k++)
            (enc ? c->ops->fwd : c->ops->inv)(c, F + i * c->P, k, in[i * d + c->B[k]],
                                               &out[i * d + c->B[k]], &ld[i]);
    return CNF_OK;
}

static int coupling_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                            double *Y, double *ld, int train)
{
    return coupling_map(l, 1, th, X, n, Y, ld);
}

static int coupling_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n,
                            double *X, double *ld)
{
    return coupling_map(l, 0, th, Y, n, X, ld);
}

static int coupling_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                             const double *GY, const double *GL, double *GX, double *gth,
                             int train)
{
    coupling *c = l->state;
    const size_t d = l->dim;
    double *F;
    int rc = condition(c, d, th, X, n, &F);
    if (rc)
        return rc;
    double *GF = F + n * c->P, *GA = GF + n * c->P;
    memset(GF, 0, n * (c->P + c->na) * sizeof *GF);
    for (size_t i = 0; i < n; i++) {
        for (size_t a = 0; a < c->na; a++)
            GX[i * d + c->A[a]] += GY[i * d + c->A[a]];
        for (size_t k = 0; k < c->nb; k++) {
            size_t j = c->B[k];
            c->ops->bwd(c, F + i * c->P, k, X[i * d + j], GY[i * d + j], GL[i], &GX[i * d + j],
                        GF + i * c->P);
        }
    }
    rc = dflow_net_backward(&c->net, th, GF, GA, gth);
    for (size_t i = 0; rc == CNF_OK && i < n; i++)
        for (size_t a = 0; a < c->na; a++)
            GX[i * d + c->A[a]] += GA[i * c->na + a];
    return rc;
}

#define COUPLING(NAME)                                                                         \
    {.name = NAME, .create = coupling_create, .init = coupling_init, .forward = coupling_forward, \
     .inverse = coupling_inverse, .backward = coupling_backward, .free_state = coupling_free}

const dflow_layer_type dflow_additive = COUPLING("additive");
const dflow_layer_type dflow_affine = COUPLING("affine");
const dflow_layer_type dflow_spline = COUPLING("spline");
