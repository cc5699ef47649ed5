/* Masked autoregressive flow (MAF; Papamakarios et al. 2017) and inverse autoregressive flow
 * (IAF; Kingma et al. 2016), both on one MADE network (Germain et al. 2015).
 *
 * The core map T: u → v, v_i = (u_i − μ_i(u_<i)) exp(−α_i(u_<i)), [μ, α̃] = MADE(u),
 * α = c tanh(α̃/c), has a triangular Jacobian ∂v/∂u with diagonal exp(−α) and
 * log|det ∂v/∂u| = −Σ α(u). T is one network pass; T⁻¹ (u_i = v_i e^{α_i} + μ_i) takes d passes,
 * pass i fixing u_i.
 *   maf: encode = T (density in one pass), decode = T⁻¹.
 *   iaf: encode = T⁻¹, decode = T (sampling in one pass); logdet = +Σ α(u) at u = encode(x).
 * IAF's reverse pass differentiates u = T⁻¹(v; θ) implicitly: with a the seed on u (R plus the
 * logdet's own ∂/∂u), λ = (∂v/∂u)⁻ᵀ a, then ∂/∂v = λ and ∂/∂θ = −(∂T/∂θ)ᵀ λ (+ the logdet's
 * explicit θ part). λ comes from λ ← λ + e^{α} ⊙ (a − (∂v/∂u)ᵀ λ), exact after d sweeps since
 * the off-diagonal part is nilpotent; each sweep is one reverse pass of the network.
 *
 * MADE: the network is a cnf_mlp whose weights are multiplied by 0/1 masks before use (the
 * masked-out entries of θ are inert and get zero gradient). Degrees: input j has j + 1, hidden
 * unit k of every layer 1 + k mod (d − 1) (1 if d = 1), outputs μ_i and α̃_i have i + 1; a
 * hidden unit sees units of degree ≤ its own, an output units of degree < its own. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dflow.h"
#include "core/internal.h"

typedef struct made {
    dflow_net net;
    double *mask;  /* (np) 1 or 0 */
    double *theff; /* (np) θ ⊙ mask */
    double *gth;   /* (np) scratch gradient */
    double *buf;   /* F, GF (n, 2d) and IAF's u, a, λ, scratch (n, d) */
    size_t cap, np;
    double c;
} made;

static void made_free(void *p)
{
    made *m = p;
    if (!m)
        return;
    dflow_net_release(&m->net);
    free(m->mask);
    free(m->theff);
    free(m->gth);
    free(m->buf);
    free(m);
}

static size_t hidden_degree(size_t d, size_t k) { return d > 1 ? 1 + k % (d - 1) : 1; }

static void build_masks(made *m, const cnf_dflow_layer_config *cfg)
{
    const size_t d = cfg->dim, L = cfg->n_hidden + 1;
    for (size_t l = 0; l < L; l++) {
        size_t off, rows, cols, boff, brows, bcols;
        const char *name;
        cnf_mlp_block(m->net.mlp, 2 * l, &name, &off, &rows, &cols);
        cnf_mlp_block(m->net.mlp, 2 * l + 1, &name, &boff, &brows, &bcols);
        for (size_t o = 0; o < rows; o++) {
            int out = l + 1 == L;
            size_t dego = out ? (o % d) + 1 : hidden_degree(d, o);
            for (size_t i = 0; i < cols; i++) {
                size_t degi = l == 0 ? i + 1 : hidden_degree(d, i);
                m->mask[off + o * cols + i] = (out ? dego > degi : dego >= degi) ? 1.0 : 0.0;
            }
        }
        for (size_t k = 0; k < brows * bcols; k++)
            m->mask[boff + k] = 1.0;
    }
}

static int made_create(cnf_dflow_layer *l)
{
    const cnf_dflow_layer_config *cfg = &l->cfg;
    if (!(cfg->scale_bound > 0.0 && isfinite(cfg->scale_bound)))
        return cnf_fail(CNF_EINVAL, "%s: scale_bound %g must be positive and finite", cfg->type,
                        cfg->scale_bound);
    made *m = calloc(1, sizeof *m);
    if (!m)
        return cnf_fail(CNF_ENOMEM, "allocating a %s layer", cfg->type);
    int rc = dflow_net_init(&m->net, cfg, l->dim, 2 * l->dim);
    if (rc) {
        made_free(m);
        return rc;
    }
    m->np = cnf_mlp_n_params(m->net.mlp);
    m->c = cfg->scale_bound;
    m->mask = cnf_calloc(m->np, sizeof(double));
    m->theff = cnf_calloc(m->np, sizeof(double));
    m->gth = cnf_calloc(m->np, sizeof(double));
    if (!m->mask || !m->theff || !m->gth) {
        made_free(m);
        return cnf_fail(CNF_ENOMEM, "allocating a %s layer", cfg->type);
    }
    build_masks(m, cfg);
    l->state = m;
    l->n_params = m->np;
    return CNF_OK;
}

static void made_init(const cnf_dflow_layer *l, double *th, cnf_rng *rng)
{
    dflow_net_init_params(&((made *)l->state)->net, th, rng);
}

/* Buffers for n rows; F = the first (n, 2d) block. */
static double *made_buf(made *m, size_t d, size_t n)
{
    double *b = dflow_scratch(&m->buf, &m->cap, n * 8 * d);
    if (!b)
        cnf_fail(CNF_ENOMEM, "allocating MADE buffers for %zu rows", n);
    return b;
}

/* F (n, 2d) = MADE(U) with the masked weights. */
static int made_eval(made *m, const double *th, const double *U, size_t n, double *F)
{
    for (size_t k = 0; k < m->np; k++)
        m->theff[k] = th[k] * m->mask[k];
    return dflow_net_forward(&m->net, m->theff, U, n, F);
}

static double alpha(const made *m, double raw) { return m->c * tanh(raw / m->c); }

/* V = T(U), ld[i] += sign · Σ α(u_i). */
static int core_forward(made *m, size_t d, const double *th, const double *U, size_t n, double *V,
                        double *ld, double sign)
{
    double *F = made_buf(m, d, n);
    int rc = F ? made_eval(m, th, U, n, F) : CNF_ENOMEM;
    for (size_t i = 0; rc == CNF_OK && i < n; i++)
        for (size_t j = 0; j < d; j++) {
            double a = alpha(m, F[i * 2 * d + d + j]);
            V[i * d + j] = (U[i * d + j] - F[i * 2 * d + j]) * exp(-a);
            ld[i] += sign * a;
        }
    return rc;
}

/* U = T⁻¹(V) by d passes (U must not alias V), ld[i] += sign · Σ α(u_i). */
static int core_inverse(made *m, size_t d, const double *th, const double *V, size_t n, double *U,
                        double *ld, double sign)
{
    double *F = made_buf(m, d, n);
    if (!F)
        return CNF_ENOMEM;
    memset(U, 0, n * d * sizeof *U);
    int rc = CNF_OK;
    for (size_t j = 0; rc == CNF_OK && j < d; j++) {
        rc = made_eval(m, th, U, n, F);
        for (size_t i = 0; rc == CNF_OK && i < n; i++)
            U[i * d + j] = V[i * d + j] * exp(alpha(m, F[i * 2 * d + d + j])) + F[i * 2 * d + j];
    }
    /* The last pass saw every u_<j final, so its α are those of the final u. */
    for (size_t i = 0; rc == CNF_OK && i < n; i++)
        for (size_t j = 0; j < d; j++)
            ld[i] += sign * alpha(m, F[i * 2 * d + d + j]);
    return rc;
}

/* Reverse pass of T at U for seeds R (n, d) on v and GA (n) on Σ α (either NULL = 0):
 * ACCUMULATE into GX (n, d) and, unless NULL, gth. */
static int core_vjp(made *m, size_t d, const double *th, const double *U, size_t n,
                    const double *R, const double *GA, double *GX, double *gth)
{
    double *F = made_buf(m, d, n);
    if (!F)
        return CNF_ENOMEM;
    double *GF = F + 2 * n * d;
    int rc = made_eval(m, th, U, n, F);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            double mu = F[i * 2 * d + j], t = tanh(F[i * 2 * d + d + j] / m->c), e = exp(-m->c * t);
            double r = R ? R[i * d + j] : 0.0, v = (U[i * d + j] - mu) * e;
            GX[i * d + j] += r * e;
            GF[i * 2 * d + j] = -r * e;
            GF[i * 2 * d + d + j] = (-r * v + (GA ? GA[i] : 0.0)) * (1.0 - t * t);
        }
    if (gth)
        memset(m->gth, 0, m->np * sizeof *m->gth);
    rc = dflow_net_backward(&m->net, m->theff, GF, GX, gth ? m->gth : NULL);
    for (size_t k = 0; gth && k < m->np; k++)
        gth[k] += m->gth[k] * m->mask[k];
    return rc;
}

/* ---- maf -------------------------------------------------------------------------------------- */

static int maf_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n, double *Y,
                       double *ld, int train)
{
    return core_forward(l->state, l->dim, th, X, n, Y, ld, -1.0);
}

static int maf_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n, double *X,
                       double *ld)
{
    return core_inverse(l->state, l->dim, th, Y, n, X, ld, -1.0);
}

static int maf_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                        const double *GY, const double *GL, double *GX, double *gth, int train)
{
    made *m = l->state;
    double *GA = made_buf(m, l->dim, n);
    if (!GA)
        return CNF_ENOMEM;
    GA += 4 * n * l->dim; /* after F and GF */
    for (size_t i = 0; i < n; i++)
        GA[i] = -GL[i];
    return core_vjp(m, l->dim, th, X, n, GY, GA, GX, gth);
}

const dflow_layer_type dflow_maf = {
    .name = "maf", .create = made_create, .init = made_init, .forward = maf_forward,
    .inverse = maf_inverse, .backward = maf_backward, .free_state = made_free};

/* ---- iaf -------------------------------------------------------------------------------------- */

static int iaf_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n, double *Y,
                       double *ld, int train)
{
    return core_inverse(l->state, l->dim, th, X, n, Y, ld, 1.0);
}

static int iaf_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n, double *X,
                       double *ld)
{
    return core_forward(l->state, l->dim, th, Y, n, X, ld, 1.0);
}

static int iaf_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                        const double *GY, const double *GL, double *GX, double *gth, int train)
{
    made *m = l->state;
    const size_t d = l->dim, nd = n * d;
    double *b = made_buf(m, d, n);
    if (!b)
        return CNF_ENOMEM;
    double *U = b + 4 * nd, *a = U + nd, *lam = a + nd, *jt = lam + nd;
    double *ld = calloc(n, sizeof *ld); /* core_inverse's logdet, not needed here */
    if (!ld)
        return cnf_fail(CNF_ENOMEM, "allocating %zu log-determinants", n);
    int rc = core_inverse(m, d, th, X, n, U, ld, 1.0);
    free(ld);
    if (rc)
        return rc;
    /* a = GY + GL ∂Σα/∂u, and the logdet's explicit θ part into gth. */
    memcpy(a, GY, nd * sizeof *a);
    rc = core_vjp(m, d, th, U, n, NULL, GL, a, gth);
    memset(lam, 0, nd * sizeof *lam);
    for (size_t sweep = 0; rc == CNF_OK && sweep < d; sweep++) {
        memset(jt, 0, nd * sizeof *jt);
        rc = core_vjp(m, d, th, U, n, lam, NULL, jt, NULL); /* jt = (∂v/∂u)ᵀ λ */
        /* The network was just evaluated at U: its α give the diagonal e^{−α}. */
        const double *F = b;
        for (size_t i = 0; rc == CNF_OK && i < n; i++)
            for (size_t j = 0; j < d; j++)
                lam[i * d + j] += exp(alpha(m, F[i * 2 * d + d + j])) * (a[i * d + j] - jt[i * d + j]);
    }
    if (rc)
        return rc;
    for (size_t k = 0; k < nd; k++) {
        GX[k] += lam[k];
        lam[k] = -lam[k];
    }
    memset(jt, 0, nd * sizeof *jt);
    return core_vjp(m, d, th, U, n, lam, NULL, jt, gth); /* gth −= (∂T/∂θ)ᵀ λ */
}

const dflow_layer_type dflow_iaf = {
    .name = "iaf", .create = made_create, .init = made_init, .forward = iaf_forward,
    .inverse = iaf_inverse, .backward = iaf_backward, .free_state = made_free};
