/* The preprocessing wrapper flow (see cnf/pre.h).
 *
 * Logit transform as in Dinh et al. (2017) §4.1 and FFJORD's lib/layers/elemwise.py: for
 * t = x / levels ∈ [0, 1], y = α + (1 − 2α) t and u = log y − log(1 − y), whose derivative is
 * du/dx = (1 − 2α) / (levels · y (1 − y)). PCA by the symmetric eigen-decomposition of the
 * training covariance (GSL's gsl_eigen_symmv). */
#include <gsl/gsl_eigen.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/pre.h"
#include "flow.h"
#include "core/internal.h"

struct cnf_pre {
    size_t D, k0, k; /* input columns, kept columns, output dimension */
    size_t *keep;    /* (k0) kept column indices, increasing */
    double *fill;    /* (D) value of each column on the training set's first row (constants) */
    double *mean, *std; /* (k0) standardisation of the (logit-transformed) kept columns */
    double *W;       /* (k0, k) PCA basis, or NULL */
    double levels, alpha;
    int standardize;
};

void cnf_pre_config_default(cnf_pre_config *c)
{
    memset(c, 0, sizeof *c);
    c->drop_constant = 1;
    c->standardize = 1;
    c->alpha = 1e-6;
}

void cnf_pre_free(cnf_pre *p)
{
    if (!p)
        return;
    free(p->keep);
    free(p->fill);
    free(p->mean);
    free(p->std);
    free(p->W);
    free(p);
}

size_t cnf_pre_dim(const cnf_pre *p) { return p->k; }
size_t cnf_pre_input_dim(const cnf_pre *p) { return p->D; }
double cnf_pre_levels(const cnf_pre *p) { return p->levels; }
int cnf_pre_is_projection(const cnf_pre *p) { return p->W != NULL; }

static cnf_pre *pre_alloc(size_t D, size_t k0, size_t k, int pca)
{
    cnf_pre *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->D = D;
    p->k0 = k0;
    p->k = k;
    p->keep = cnf_calloc(k0, sizeof *p->keep);
    p->fill = cnf_calloc(D, sizeof(double));
    p->mean = cnf_calloc(k0, sizeof(double));
    p->std = cnf_calloc(k0, sizeof(double));
    p->W = pca ? cnf_calloc(cnf_size_mul(k0, k), sizeof(double)) : NULL;
    if (!p->keep || !p->fill || !p->mean || !p->std || (pca && !p->W)) {
        cnf_pre_free(p);
        return NULL;
    }
    return p;
}

/* Steps 1-3 for one row: s (k0) and the log-determinant. */
static int forward_row(const cnf_pre *p, const double *x, size_t row, double *s, double *ld)
{
    double acc = 0.0;
    for (size_t j = 0; j < p->k0; j++) {
        double u = x[p->keep[j]];
        if (p->levels > 0) {
            double t = u / p->levels;
            if (!(t >= 0.0 && t <= 1.0))
                return cnf_fail(CNF_EINVAL, "row %zu, column %zu: %g is outside [0, %g] (the "
                                "model's logit transform needs values in its range)", row,
                                p->keep[j], u, p->levels);
            double y = p->alpha + (1.0 - 2.0 * p->alpha) * t;
            u = log(y) - log1p(-y);
            acc += log((1.0 - 2.0 * p->alpha) / p->levels) - log(y) - log1p(-y);
        }
        s[j] = (u - p->mean[j]) / p->std[j];
        acc -= log(p->std[j]);
    }
    if (!isfinite(acc))
        return cnf_fail(CNF_ENONFINITE, "row %zu: the logit transform is infinite (alpha = 0 "
                        "and a value at 0 or levels)", row);
    *ld = acc;
    return CNF_OK;
}

int cnf_pre_apply(const cnf_pre *p, const double *X, size_t n, double *Y, double *logdet)
{
    double *s = p->W ? cnf_calloc(p->k0, sizeof(double)) : NULL;
    if (p->W && !s)
        return cnf_fail(CNF_ENOMEM, "%zu values", p->k0);
    int rc = CNF_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        double ld;
        double *si = p->W ? s : Y + i * p->k;
        rc = forward_row(p, X + i * p->D, i, si, &ld);
        if (p->W) { /* v = Wᵀ s: a projection, so no Jacobian term */
            for (size_t c = 0; c < p->k; c++) {
                double v = 0.0;
                for (size_t j = 0; j < p->k0; j++)
                    v += p->W[j * p->k + c] * s[j];
                Y[i * p->k + c] = v;
            }
            ld = 0.0;
        }
        if (logdet && !rc)
            logdet[i] = ld;
    }
    free(s);
    return rc;
}

/* The inverse for sampling: X (n, D) from Y (n, k), with the forward log-determinant at X. */
static int pre_invert(const cnf_pre *p, const double *Y, size_t n, double *X, double *logdet)
{
    double *s = cnf_calloc(p->k0, sizeof(double));
    if (!s)
        return cnf_fail(CNF_ENOMEM, "%zu values", p->k0);
    for (size_t i = 0; i < n; i++) {
        const double *y = Y + i * p->k;
        double *x = X + i * p->D, ld = 0.0;
        for (size_t j = 0; j < p->k0; j++) {
            double v = 0.0;
            if (!p->W)
                v = y[j];
            for (size_t c = 0; p->W && c < p->k; c++)
                v += p->W[j * p->k + c] * y[c];
            s[j] = v;
        }
        memcpy(x, p->fill, p->D * sizeof(double));
        for (size_t j = 0; j < p->k0; j++) {
            double u = s[j] * p->std[j] + p->mean[j];
            ld -= log(p->std[j]);
            if (p->levels > 0) {
                double yy = 1.0 / (1.0 + exp(-u));
                /* Stay strictly inside (0, 1) so the forward log-determinant is finite. */
                yy = fmin(fmax(yy, 1e-300), 1.0 - 1e-16);
                u = (yy - p->alpha) / (1.0 - 2.0 * p->alpha) * p->levels;
                ld += log((1.0 - 2.0 * p->alpha) / p->levels) - log(yy) - log1p(-yy);
            }
            x[p->keep[j]] = u;
        }
        logdet[i] = p->W ? 0.0 : ld;
    }
    free(s);
    return CNF_OK;
}

/* Eigenvectors of the symmetric C (m, m), by decreasing eigenvalue, the first k as columns of
 * W (m, k); each column's largest entry is made positive so the basis is reproducible. */
static int pca_basis(double *C, size_t m, size_t k, double *W)
{
    gsl_matrix_view A = gsl_matrix_view_array(C, m, m);
    gsl_vector *eval = gsl_vector_alloc(m);
    gsl_matrix *evec = gsl_matrix_alloc(m, m);
    gsl_eigen_symmv_workspace *ws = gsl_eigen_symmv_alloc(m);
    int rc = CNF_OK;
    if (!eval || !evec || !ws)
        rc = cnf_fail(CNF_ENOMEM, "PCA of %zu columns", m);
    else if (gsl_eigen_symmv(&A.matrix, eval, evec, ws) ||
             gsl_eigen_symmv_sort(eval, evec, GSL_EIGEN_SORT_VAL_DESC))
        rc = cnf_fail(CNF_EINVAL, "PCA: the eigen-decomposition failed");
    for (size_t c = 0; !rc && c < k; c++) {
        size_t arg = 0;
        for (size_t j = 1; j < m; j++)
            if (fabs(gsl_matrix_get(evec, j, c)) > fabs(gsl_matrix_get(evec, arg, c)))
                arg = j;
        double sign = gsl_matrix_get(evec, arg, c) < 0 ? -1.0 : 1.0;
        for (size_t j = 0; j < m; j++)
            W[j * k + c] = sign * gsl_matrix_get(evec, j, c);
    }
    if (ws)
        gsl_eigen_symmv_free(ws);
    if (evec)
        gsl_matrix_free(evec);
    if (eval)
        gsl_vector_free(eval);
    return rc;
}

int cnf_pre_fit(cnf_pre **out, const cnf_pre_config *c, const double *X, size_t n, size_t D)
{
    *out = NULL;
    if (n == 0 || D == 0 || !X)
        return cnf_fail(CNF_EINVAL, "preprocessing needs training data (n = %zu, D = %zu)", n, D);
    if (!(c->levels >= 0) || !(c->alpha >= 0 && c->alpha < 0.5))
        return cnf_fail(CNF_EINVAL, "levels %g must be >= 0 and alpha %g in [0, 0.5)", c->levels,
                        c->alpha);
    size_t k0 = 0;
    for (size_t j = 0; j < D; j++) {
        int varies = !c->drop_constant;
        for (size_t i = 1; i < n && !varies; i++)
            varies = X[i * D + j] != X[j];
        k0 += varies;
    }
    if (k0 == 0)
        return cnf_fail(CNF_EINVAL, "every one of the %zu columns is constant on the %zu training "
                        "rows: nothing to model", D, n);
    if (c->pca > k0)
        return cnf_fail(CNF_EINVAL, "PCA to %zu components, but only %zu columns vary", c->pca,
                        k0);
    size_t k = c->pca ? c->pca : k0;
    cnf_pre *p = pre_alloc(D, k0, k, c->pca > 0);
    if (!p)
        return cnf_fail(CNF_ENOMEM, "preprocessing of %zu columns", D);
    p->levels = c->levels;
    p->alpha = c->alpha;
    p->standardize = c->standardize;
    memcpy(p->fill, X, D * sizeof(double));
    for (size_t j = 0, m = 0; j < D; j++) {
        int varies = !c->drop_constant;
        for (size_t i = 1; i < n && !varies; i++)
            varies = X[i * D + j] != X[j];
        if (varies)
            p->keep[m++] = j;
    }
    /* Steps 1-2 with identity standardisation, then the moments of each column. */
    for (size_t j = 0; j < k0; j++)
        p->std[j] = 1.0;
    double *S = cnf_calloc(cnf_size_mul(n, k0), sizeof(double));
    int rc = S ? CNF_OK : cnf_fail(CNF_ENOMEM, "%zu x %zu values", n, k0);
    double ld;
    for (size_t i = 0; i < n && !rc; i++)
        rc = forward_row(p, X + i * D, i, S + i * k0, &ld);
    if (!rc && c->standardize) {
        for (size_t j = 0; j < k0; j++) {
            double m = 0.0, v = 0.0;
            for (size_t i = 0; i < n; i++)
                m += S[i * k0 + j];
            m /= (double)n;
            for (size_t i = 0; i < n; i++)
                v += (S[i * k0 + j] - m) * (S[i * k0 + j] - m);
            v /= (double)n;
            p->mean[j] = m;
            p->std[j] = v > 0 ? sqrt(v) : 1.0;
            for (size_t i = 0; i < n; i++)
                S[i * k0 + j] = (S[i * k0 + j] - m) / p->std[j];
        }
    }
    if (!rc && c->pca) {
        double *C = cnf_calloc(cnf_size_mul(k0, k0), sizeof(double));
        if (!C) {
            rc = cnf_fail(CNF_ENOMEM, "%zu x %zu covariance", k0, k0);
        } else {
            cnf_gemm(1, 0, k0, k0, n, 1.0 / (double)n, S, k0, S, k0, 0.0, C, k0);
            rc = pca_basis(C, k0, k, p->W);
            free(C);
        }
    }
    free(S);
    if (rc) {
        cnf_pre_free(p);
        return rc;
    }
    *out = p;
    return CNF_OK;
}

/* ---- the wrapper flow ------------------------------------------------------------------------ */

typedef struct pre_flow {
    cnf_flow base;
    cnf_pre *p;
    cnf_flow *inner;
} pre_flow;

static const cnf_flow_type pre_type;

/* Coordinates D − k of the base point that the inner flow does not use are zeros on encode;
 * log N of a zero coordinate is −½ log 2π, which the log-determinant gives back. */
static double pad_const(const pre_flow *q)
{
    return 0.5 * (double)(q->base.dim - q->p->k) * log(2.0 * M_PI);
}

static int pre_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                      cnf_flow_stats *st)
{
    pre_flow *q = (pre_flow *)f;
    size_t k = q->p->k, D = f->dim;
    double *Y = cnf_calloc(cnf_size_mul(n, k), sizeof(double));
    double *Zi = cnf_calloc(cnf_size_mul(n, k), sizeof(double));
    double *ld = cnf_calloc(n, sizeof(double));
    int rc = Y && Zi && ld ? CNF_OK : cnf_fail(CNF_ENOMEM, "%zu x %zu values", n, k);
    if (!rc) rc = cnf_pre_apply(q->p, X, n, Y, ld);
    if (!rc) rc = cnf_flow_encode(q->inner, Y, n, Zi, logdet, st);
    for (size_t i = 0; !rc && i < n; i++) {
        memset(Z + i * D, 0, D * sizeof(double));
        memcpy(Z + i * D, Zi + i * k, k * sizeof(double));
        logdet[i] += ld[i] + pad_const(q);
    }
    free(Y);
    free(Zi);
    free(ld);
    return rc;
}

static int pre_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                      cnf_flow_stats *st)
{
    pre_flow *q = (pre_flow *)f;
    size_t k = q->p->k, D = f->dim;
    double *Zi = cnf_calloc(cnf_size_mul(n, k), sizeof(double));
    double *Y = cnf_calloc(cnf_size_mul(n, k), sizeof(double));
    double *ld = cnf_calloc(n, sizeof(double));
    int rc = Y && Zi && ld ? CNF_OK : cnf_fail(CNF_ENOMEM, "%zu x %zu values", n, k);
    for (size_t i = 0; !rc && i < n; i++)
        memcpy(Zi + i * k, Z + i * D, k * sizeof(double));
    if (!rc) rc = cnf_flow_decode(q->inner, Zi, n, Y, logdet, st);
    if (!rc) rc = pre_invert(q->p, Y, n, X, ld);
    for (size_t i = 0; !rc && i < n; i++) {
        /* log N(Z) over all D coordinates + this = log N(z_inner) + the inner and pre terms. */
        double extra = 0.0;
        for (size_t j = k; j < D; j++)
            extra += 0.5 * Z[i * D + j] * Z[i * D + j];
        logdet[i] += ld[i] + pad_const(q) + extra;
    }
    free(Y);
    free(Zi);
    free(ld);
    return rc;
}

static int pre_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                        double *grad, double *gx, cnf_flow_stats *st)
{
    pre_flow *q = (pre_flow *)f;
    if (gx)
        return cnf_fail(CNF_EUNSUPPORTED, "the preprocessing flow gives no gradient w.r.t. data");
    size_t k = q->p->k;
    double *Y = cnf_calloc(cnf_size_mul(n, k), sizeof(double)), *ld = cnf_calloc(n, sizeof(double));
    int rc = Y && ld ? CNF_OK : cnf_fail(CNF_ENOMEM, "%zu x %zu values", n, k);
    if (!rc) rc = cnf_pre_apply(q->p, X, n, Y, ld);
    if (!rc) rc = cnf_flow_nll_grad(q->inner, Y, n, rng, loss, grad, st);
    if (!rc) {
        double m = 0.0;
        for (size_t i = 0; i < n; i++)
            m += ld[i];
        m /= (double)n;
        *loss -= m; /* −log p(x) = −log p_inner(y) − log|det ∂y/∂x| */
        if (st)
            st->nll -= m;
    }
    free(Y);
    free(ld);
    return rc;
}

/* Flow matching in the preprocessed space, where the inner flow (a CNF) lives: the data are
 * mapped there and the regression is the inner flow's. */
static int pre_velocity_loss(cnf_flow *f, const double *X, size_t n, cnf_path_fn path,
                             void *ctx, double *loss, double *grad)
{
    pre_flow *q = (pre_flow *)f;
    double *Y = cnf_calloc(cnf_size_mul(n, q->p->k), sizeof(double));
    int rc = Y ? cnf_pre_apply(q->p, X, n, Y, NULL)
               : cnf_fail(CNF_ENOMEM, "%zu x %zu values", n, q->p->k);
    if (!rc) rc = cnf_flow_velocity_loss(q->inner, Y, n, path, ctx, loss, grad);
    free(Y);
    return rc;
}

static int pre_velocity_check(const cnf_flow *f)
{
    return cnf_flow_velocity_check(((const pre_flow *)f)->inner);
}

static void pre_free_flow(cnf_flow *f)
{
    pre_flow *q = (pre_flow *)f;
    cnf_flow_free(q->inner);
    cnf_pre_free(q->p);
    free(q);
}

/* ---- model files: the preprocessing as metadata "pre.*" and tensors, with the inner flow -------- */

/* The settings as saved: the input dimension, the logit transform, whether the kept columns were
 * standardised, and the PCA dimension (0: none). */
typedef struct pre_saved {
    size_t D, pca;
    double levels, alpha;
    int standardize;
} pre_saved;

#define OFF(F) offsetof(pre_saved, F)
static const cnf_setting pre_settings[] = {
    {.key = "pre.dim", .type = CNF_SET_SIZE, .off = OFF(D)},
    {.key = "pre.levels", .type = CNF_SET_DOUBLE, .off = OFF(levels)},
    {.key = "pre.alpha", .type = CNF_SET_DOUBLE, .off = OFF(alpha)},
    {.key = "pre.standardize", .type = CNF_SET_FLAG, .off = OFF(standardize)},
    {.key = "pre.pca", .type = CNF_SET_SIZE, .off = OFF(pca)},
};
#undef OFF
enum { N_PRE_SETTINGS = sizeof pre_settings / sizeof pre_settings[0] };

/* The tensors of p into t (room for 5): kept column indices, constant fill, standardisation,
 * and the PCA basis if any. Their count. */
static size_t pre_tensors(cnf_pre *p, cnf_tensor_ref *t)
{
    const cnf_tensor_ref list[] = {
        {"pre.keep", 1, {p->k0}, NULL, p->keep},
        {"pre.fill", 1, {p->D}, p->fill, NULL},
        {"pre.mean", 1, {p->k0}, p->mean, NULL},
        {"pre.std", 1, {p->k0}, p->std, NULL},
        {"pre.pca_basis", 2, {p->k0, p->k}, p->W, NULL},
    };
    size_t n = p->W ? 5 : 4;
    memcpy(t, list, n * sizeof *t);
    return n;
}

static int pre_describe(const cnf_flow *f, cnf_st_writer *w)
{
    const pre_flow *q = (const pre_flow *)f;
    cnf_pre *p = q->p;
    if (!q->inner->type->describe)
        return cnf_fail(CNF_EUNSUPPORTED, "flow kind '%s' cannot be saved", q->inner->type->kind);
    pre_saved h = {.D = p->D, .pca = p->W ? p->k : 0, .levels = p->levels, .alpha = p->alpha,
                   .standardize = p->standardize};
    cnf_tensor_ref t[5];
    int rc = cnf_settings_write(w, pre_settings, N_PRE_SETTINGS, &h);
    if (!rc) rc = cnf_tensors_write(w, t, pre_tensors(p, t));
    /* The inner flow as the file's own model: kind and dim are its, so the file reads as a
     * plain model elsewhere; cnf_model_load wraps it again because of "pre.dim". */
    if (!rc) rc = q->inner->type->describe(q->inner, w);
    if (!rc) rc = cnf_st_writer_meta(w, "kind", q->inner->type->kind);
    if (!rc) rc = cnf_meta_put_size(w, "dim", q->inner->dim);
    return rc;
}

static const cnf_flow_type pre_type = {
    .kind = "pre",
    .encode = pre_encode,
    .decode = pre_decode,
    .nll_grad = pre_nll_grad,
    .velocity_loss = pre_velocity_loss,
    .velocity_check = pre_velocity_check,
    .free = pre_free_flow,
    .describe = pre_describe,
};

/* The wrapper over inner with p (both owned by it from now on); NULL if out of memory. */
static cnf_flow *wrap(cnf_pre *p, cnf_flow *inner)
{
    pre_flow *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->base.type = &pre_type;
    q->base.dim = p->D;
    q->base.n_params = inner->n_params;
    q->base.theta = inner->theta; /* the same array: optimizer and model file see one buffer */
    q->p = p;
    q->inner = inner;
    return &q->base;
}

int cnf_pre_flow_create(cnf_flow **out, cnf_pre *p, cnf_flow *inner)
{
    *out = NULL;
    if (!p || !inner || inner->dim != p->k) {
        int rc = cnf_fail(CNF_EDIM, "the inner flow has dimension %zu, the preprocessing gives %zu",
                          inner ? inner->dim : 0, p ? p->k : 0);
        cnf_pre_free(p);
        cnf_flow_free(inner);
        return rc;
    }
    if (!(*out = wrap(p, inner))) {
        cnf_pre_free(p);
        cnf_flow_free(inner);
        return cnf_fail(CNF_ENOMEM, "preprocessing flow");
    }
    return CNF_OK;
}

const cnf_pre *cnf_pre_flow_pre(const cnf_flow *f)
{
    return f && f->type == &pre_type ? ((const pre_flow *)f)->p : NULL;
}

cnf_flow *cnf_pre_flow_inner(cnf_flow *f)
{
    return f && f->type == &pre_type ? ((pre_flow *)f)->inner : NULL;
}

int cnf_pre_attach(const cnf_st_file *f, cnf_flow **inout)
{
    pre_saved h;
    const size_t *shape;
    size_t ndim;
    int rc = cnf_settings_read(f, pre_settings, N_PRE_SETTINGS, &h);
    if (!rc) rc = cnf_st_get(f, "pre.keep", &shape, &ndim, NULL);
    if (rc)
        return rc;
    size_t D = h.D, pca = h.pca, k0 = ndim == 1 ? shape[0] : 0, k = (*inout)->dim;
    if (k0 == 0 || k0 > D || D > ((size_t)1 << 40) || !(h.levels >= 0) ||
        !(h.alpha >= 0 && h.alpha < 0.5) || (pca ? pca != k || pca > k0 : k != k0))
        return cnf_fail(CNF_EFORMAT, "preprocessing metadata are inconsistent (dim %zu, %zu kept "
                        "columns, pca %zu, inner dimension %zu, levels %g, alpha %g)", D, k0, pca,
                        k, h.levels, h.alpha);
    cnf_pre *p = pre_alloc(D, k0, k, pca > 0);
    if (!p)
        return cnf_fail(CNF_ENOMEM, "preprocessing of %zu columns", D);
    p->levels = h.levels;
    p->alpha = h.alpha;
    p->standardize = h.standardize;
    cnf_tensor_ref t[5];
    rc = cnf_tensors_read(f, t, pre_tensors(p, t));
    for (size_t j = 0; !rc && j < k0; j++)
        if ((j && p->keep[j] <= p->keep[j - 1]) || p->keep[j] >= D || !(p->std[j] > 0))
            rc = cnf_fail(CNF_EFORMAT, "preprocessing: kept column %zu (index %zu, std %g) is "
                          "invalid", j, p->keep[j], p->std[j]);
    cnf_flow *w = rc ? NULL : wrap(p, *inout);
    if (!rc && !w)
        rc = cnf_fail(CNF_ENOMEM, "preprocessing flow");
    if (rc) {
        cnf_pre_free(p);
        return rc;
    }
    *inout = w;
    return CNF_OK;
}
