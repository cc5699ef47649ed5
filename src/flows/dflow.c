/* Discrete normalizing flows: the layer registry, the public single-layer calls, and the stack
 * that implements the flow interface (flow.h). The helpers the layer files share (conditioner
 * network, scratch, coupling split) are in dflow_common.c.
 *
 * The stack's objective is the exact maximum-likelihood loss
 *     loss = (1/n) Σ_i [ −log N(z_i; 0, I) − Σ_l logdet_l,i ],
 * its gradient by the layers' reverse passes in reverse order with seeds ∂loss/∂z_i = z_i / n and
 * ∂loss/∂logdet_l,i = −1/n, each layer's pass re-evaluating its internals from its stored input. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dflow.h"
#include "flow.h"
#include "core/internal.h"
#include "format/meta.h"

/* ---- layer registry ------------------------------------------------------------------------- */

static const dflow_layer_type *const LAYER_TYPES[] = {
    &dflow_planar, &dflow_radial, &dflow_additive, &dflow_scale,   &dflow_affine, &dflow_spline,
    &dflow_actnorm, &dflow_lu,    &dflow_reverse,  &dflow_maf,     &dflow_iaf,    &dflow_batchnorm,
};
enum { N_LAYER_TYPES = sizeof LAYER_TYPES / sizeof LAYER_TYPES[0] };

size_t cnf_dflow_layer_type_count(void) { return N_LAYER_TYPES; }
const char *cnf_dflow_layer_type_at(size_t i)
{
    return i < N_LAYER_TYPES ? LAYER_TYPES[i]->name : NULL;
}

/* "a, b, c" of n names into buf (for CNF_ENAME messages). */
static const char *list_names(char *buf, size_t cap, const char *(*at)(size_t), size_t n)
{
    buf[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", at(i));
    return buf;
}

static int check_layer_config(const cnf_dflow_layer_config *c)
{
    if (c->dim == 0)
        return cnf_fail(CNF_EINVAL, "layer '%s': dimension is 0", c->type);
    if (c->parity != 0 && c->parity != 1)
        return cnf_fail(CNF_EINVAL, "layer '%s': parity %d is not 0 or 1", c->type, c->parity);
    if (c->n_hidden && !c->hidden)
        return cnf_fail(CNF_EINVAL, "layer '%s': %zu hidden layers but no widths", c->type,
                        c->n_hidden);
    for (size_t i = 0; i < c->n_hidden; i++)
        if (c->hidden[i] == 0)
            return cnf_fail(CNF_EINVAL, "layer '%s': hidden width %zu is 0", c->type, i + 1);
    return CNF_OK;
}

int cnf_dflow_layer_create(cnf_dflow_layer **out, const cnf_dflow_layer_config *cfg)
{
    *out = NULL;
    if (!cfg || !cfg->type)
        return cnf_fail(CNF_EINVAL, "layer configuration or type name is NULL");
    const dflow_layer_type *T = NULL;
    for (size_t i = 0; i < N_LAYER_TYPES; i++)
        if (!strcmp(cfg->type, LAYER_TYPES[i]->name))
            T = LAYER_TYPES[i];
    if (!T) {
        char names[256];
        return cnf_fail(CNF_ENAME, "unknown layer type '%s' (valid: %s)", cfg->type,
                        list_names(names, sizeof names, cnf_dflow_layer_type_at, N_LAYER_TYPES));
    }
    int rc = check_layer_config(cfg);
    if (rc)
        return rc;
    cnf_dflow_layer *l = calloc(1, sizeof *l);
    if (!l)
        return cnf_fail(CNF_ENOMEM, "allocating a '%s' layer", T->name);
    l->type = T;
    l->cfg = *cfg;
    l->cfg.type = T->name;
    l->dim = cfg->dim;
    if (cfg->n_hidden) {
        l->hidden_copy = cnf_calloc(cfg->n_hidden, sizeof(size_t));
        if (!l->hidden_copy) {
            free(l);
            return cnf_fail(CNF_ENOMEM, "copying hidden widths");
        }
        memcpy(l->hidden_copy, cfg->hidden, cfg->n_hidden * sizeof(size_t));
    }
    l->cfg.hidden = l->hidden_copy;
    rc = T->create(l);
    if (rc) {
        free(l->hidden_copy);
        free(l);
        return rc;
    }
    *out = l;
    return CNF_OK;
}

void cnf_dflow_layer_free(cnf_dflow_layer *l)
{
    if (!l)
        return;
    if (l->type->free_state)
        l->type->free_state(l->state);
    free(l->hidden_copy);
    free(l);
}

const char *cnf_dflow_layer_type(const cnf_dflow_layer *l) { return l->type->name; }
size_t cnf_dflow_layer_n_params(const cnf_dflow_layer *l) { return l->n_params; }

void cnf_dflow_layer_init(const cnf_dflow_layer *l, double *theta, cnf_rng *rng)
{
    memset(theta, 0, l->n_params * sizeof *theta);
    if (l->type->init)
        l->type->init(l, theta, rng);
}

int cnf_dflow_layer_forward(cnf_dflow_layer *l, const double *theta, const double *X, size_t n,
                            double *Y, double *logdet, int train)
{
    if (n == 0)
        return CNF_OK;
    double *ld = logdet ? logdet : cnf_calloc(n, sizeof(double));
    if (!ld)
        return cnf_fail(CNF_ENOMEM, "allocating %zu log-determinants", n);
    int rc = l->type->forward(l, theta, X, n, Y, ld, train);
    if (!logdet)
        free(ld);
    return rc;
}

int cnf_dflow_layer_inverse(cnf_dflow_layer *l, const double *theta, const double *Y, size_t n,
                            double *X, double *logdet)
{
    if (n == 0)
        return CNF_OK;
    double *ld = logdet ? logdet : cnf_calloc(n, sizeof(double));
    if (!ld)
        return cnf_fail(CNF_ENOMEM, "allocating %zu log-determinants", n);
    int rc = l->type->inverse(l, theta, Y, n, X, ld);
    if (!logdet)
        free(ld);
    return rc;
}

int cnf_dflow_layer_backward(cnf_dflow_layer *l, const double *theta, const double *X, size_t n,
                             const double *GY, const double *GL, double *GX, double *gtheta,
                             int train)
{
    if (n == 0)
        return CNF_OK;
    const size_t d = l->dim;
    double *gl = GL ? NULL : cnf_calloc(n, sizeof(double));
    double *gy = GY ? NULL : cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    double *gx = GX ? NULL : cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    double *gt = gtheta || !l->n_params ? NULL : cnf_calloc(l->n_params, sizeof(double));
    int rc;
    if ((!GL && !gl) || (!GY && !gy) || (!GX && !gx) || (!gtheta && l->n_params && !gt))
        rc = cnf_fail(CNF_ENOMEM, "allocating backward scratch for %zu rows", n);
    else
        rc = l->type->backward(l, theta, X, n, GY ? GY : gy, GL ? GL : gl, GX ? GX : gx,
                               gtheta ? gtheta : gt, train);
    free(gl);
    free(gy);
    free(gx);
    free(gt);
    return rc;
}

/* ---- the stack ------------------------------------------------------------------------------ */

/* A kind: the layers of one step (couplings get parity l % 2), what goes between steps, whether
 * batch norm may be inserted between steps, and a final layer. */
typedef struct dflow_kind {
    const char *name;
    const char *step[3];
    const char *between;
    int bn;
    const char *final;
} dflow_kind;

static const dflow_kind KINDS[] = {
    {"planar", {"planar"}, NULL, 0, NULL},
    {"radial", {"radial"}, NULL, 0, NULL},
    {"nice", {"additive"}, NULL, 0, "scale"},
    {"realnvp", {"affine"}, NULL, 1, NULL},
    {"glow", {"actnorm", "lu", "affine"}, NULL, 0, NULL},
    {"maf", {"maf"}, "reverse", 1, NULL},
    {"iaf", {"iaf"}, "reverse", 0, NULL},
    {"nsf", {"lu", "spline"}, NULL, 0, NULL},
};
enum { N_KINDS = sizeof KINDS / sizeof KINDS[0] };

size_t cnf_dflow_kind_count(void) { return N_KINDS; }
const char *cnf_dflow_kind_at(size_t i) { return i < N_KINDS ? KINDS[i].name : NULL; }

static const size_t DEFAULT_HIDDEN[] = {64};

void cnf_dflow_config_default(cnf_dflow_config *cfg, const char *kind, size_t dim)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->dim = dim;
    cfg->layers = kind && (!strcmp(kind, "planar") || !strcmp(kind, "radial")) ? 16 : 4;
    cfg->n_hidden = 1;
    cfg->hidden = DEFAULT_HIDDEN;
    cfg->act = CNF_ACT_TANH;
    cfg->bins = 8;
    cfg->bound = 4.0;
    cfg->scale_bound = 3.0;
    cfg->batchnorm = 0;
    cfg->bn_momentum = 0.1;
    cfg->bn_eps = 1e-5;
}

typedef struct dflow {
    cnf_flow base;
    cnf_dflow_config cfg;  /* as created: kind is the canonical name, hidden the own copy */
    size_t *hidden;
    size_t L;
    cnf_dflow_layer **layer; /* (L) */
    size_t *off;             /* (L) parameter offsets */
} dflow;

static const cnf_flow_type KIND_TYPES[N_KINDS];

static dflow *as_dflow(const cnf_flow *f)
{
    for (size_t i = 0; f && i < N_KINDS; i++)
        if (f->type == &KIND_TYPES[i])
            return (dflow *)f;
    return NULL;
}

size_t cnf_dflow_n_layers(const cnf_flow *f)
{
    const dflow *s = as_dflow(f);
    return s ? s->L : 0;
}

const cnf_dflow_config *cnf_dflow_get_config(const cnf_flow *f)
{
    const dflow *s = as_dflow(f);
    return s ? &s->cfg : NULL;
}

cnf_dflow_layer *cnf_dflow_layer_at(cnf_flow *f, size_t i, size_t *offset)
{
    dflow *s = as_dflow(f);
    if (!s || i >= s->L)
        return NULL;
    if (offset)
        *offset = s->off[i];
    return s->layer[i];
}

/* Encode (layers' forwards in order) or decode (inverses in reverse order) n rows. */
static int run_layers(cnf_flow *f, int enc, const double *in, size_t n, double *out,
                      double *logdet)
{
    dflow *s = (dflow *)f;
    const size_t nd = n * f->dim;
    double *tmp = cnf_calloc(nd, sizeof(double));
    if (!tmp)
        return cnf_fail(CNF_ENOMEM, "allocating %zu rows", n);
    memset(logdet, 0, n * sizeof *logdet);
    memcpy(out, in, nd * sizeof *out);
    int rc = CNF_OK;
    for (size_t k = 0; rc == CNF_OK && k < s->L; k++) {
        size_t l = enc ? k : s->L - 1 - k;
        cnf_dflow_layer *ly = s->layer[l];
        rc = enc ? ly->type->forward(ly, f->theta + s->off[l], out, n, tmp, logdet, 0)
                 : ly->type->inverse(ly, f->theta + s->off[l], out, n, tmp, logdet);
        memcpy(out, tmp, nd * sizeof *out);
    }
    free(tmp);
    return rc;
}

static int dflow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                        cnf_flow_stats *st)
{
    return run_layers(f, 1, X, n, Z, logdet);
}

static int dflow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                        cnf_flow_stats *st)
{
    return run_layers(f, 0, Z, n, X, logdet);
}

static int dflow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                          double *grad, double *gx, cnf_flow_stats *st)
{
    dflow *s = (dflow *)f;
    const size_t d = f->dim, nd = n * d, L = s->L;
    const int want = grad || gx;
    /* acts: the input of every layer and the output z; ld: Σ logdet per row. */
    double *acts = cnf_calloc(cnf_size_mul(L + 1, nd), sizeof(double));
    double *ld = cnf_calloc(n, sizeof(double));
    double *gy = want ? cnf_calloc(2 * nd + n, sizeof(double)) : NULL;
    double *gth = want && !grad ? cnf_calloc(f->n_params, sizeof(double)) : NULL;
    int rc = CNF_OK;
    if (!acts || !ld || (want && !gy) || (want && !grad && f->n_params && !gth)) {
        rc = cnf_fail(CNF_ENOMEM, "allocating activations for %zu rows x %zu layers", n, L);
        goto done;
    }
    memcpy(acts, X, nd * sizeof *acts);
    for (size_t l = 0; rc == CNF_OK && l < L; l++) {
        cnf_dflow_layer *ly = s->layer[l];
        if (ly->type->observe)
            ly->type->observe(ly, f->theta + s->off[l], acts + l * nd, n, grad != NULL);
        rc = ly->type->forward(ly, f->theta + s->off[l], acts + l * nd, n, acts + (l + 1) * nd,
                               ld, 1);
    }
    if (rc)
        goto done;
    const double *Z = acts + L * nd;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum -= cnf_std_normal_logpdf(Z + i * d, d) + ld[i];
    *loss = sum / (double)n;
    if (st)
        st->nll = *loss;
    if (!isfinite(*loss)) {
        rc = cnf_fail(CNF_ENONFINITE, "the loss is %g", *loss);
        goto done;
    }
    if (!want)
        goto done;
    double *GY = gy, *GX = gy + nd, *GL = gy + 2 * nd, *G = grad ? grad : gth;
    for (size_t k = 0; k < nd; k++)
        GY[k] = Z[k] / (double)n;
    for (size_t i = 0; i < n; i++)
        GL[i] = -1.0 / (double)n;
    for (size_t l = L; rc == CNF_OK && l-- > 0;) {
        memset(GX, 0, nd * sizeof *GX);
        cnf_dflow_layer *ly = s->layer[l];
        rc = ly->type->backward(ly, f->theta + s->off[l], acts + l * nd, n, GY, GL, GX,
                                G + s->off[l], 1);
        double *t = GY;
        GY = GX;
        GX = t;
    }
    if (rc == CNF_OK && gx)
        for (size_t k = 0; k < nd; k++)
            gx[k] += GY[k];
done:
    free(acts);
    free(ld);
    free(gy);
    free(gth);
    return rc;
}

/* Solve Mᵀ w = a for one d×d matrix M (row-major, overwritten) by Gaussian elimination with
 * partial pivoting; CNF_ENONFINITE if M is singular to working precision. */
static int solve_transposed(double *M, double *a, size_t d)
{
    /* Transpose in place, then solve M' w = a. */
    for (size_t r = 0; r < d; r++)
        for (size_t c = r + 1; c < d; c++) {
            double t = M[r * d + c];
            M[r * d + c] = M[c * d + r];
            M[c * d + r] = t;
        }
    for (size_t k = 0; k < d; k++) {
        size_t p = k;
        for (size_t r = k + 1; r < d; r++)
            if (fabs(M[r * d + k]) > fabs(M[p * d + k]))
                p = r;
        if (!(fabs(M[p * d + k]) > 1e-300))
            return cnf_fail(CNF_ENONFINITE, "the flow's Jacobian is singular at a sample");
        if (p != k) {
            for (size_t c = 0; c < d; c++) {
                double t = M[k * d + c];
                M[k * d + c] = M[p * d + c];
                M[p * d + c] = t;
            }
            double t = a[k];
            a[k] = a[p];
            a[p] = t;
        }
        for (size_t r = k + 1; r < d; r++) {
            double m = M[r * d + k] / M[k * d + k];
            for (size_t c = k; c < d; c++)
                M[r * d + c] -= m * M[k * d + c];
            a[r] -= m * a[k];
        }
    }
    for (size_t k = d; k-- > 0;) {
        for (size_t c = k + 1; c < d; c++)
            a[k] -= M[k * d + c] * a[c];
        a[k] /= M[k * d + k];
    }
    return CNF_OK;
}

/* Reverse KL through the samples by implicit differentiation. x = f_θ⁻¹(z) with z fixed, so
 * log N(z) does not depend on θ and, with ℓ = log|det ∂f/∂x| and J = ∂f/∂x,
 *     dL/dθ = mean [ ∂ℓ/∂θ − w ∂f/∂θ ],   w = (∂ℓ/∂x − ∇ log q̃) J⁻¹   (per sample),
 * which is one reverse pass with seeds GY = −w/n on z and GL = 1/n on ℓ. J and ∂ℓ/∂x come from
 * d + 1 further reverse passes over the same forward pass. Layers run in evaluation mode (batch
 * norm with its running statistics), as sampling does. Cost O(d) reverse passes: meant for the
 * small dimensions of sampling problems. */
static int dflow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                          double *loss, double *grad, cnf_flow_stats *st)
{
    dflow *s = (dflow *)f;
    const size_t d = f->dim, nd = n * d, L = s->L;
    double *Z = cnf_calloc(nd, sizeof(double));
    double *acts = cnf_calloc(cnf_size_mul(L + 1, nd), sizeof(double));
    double *ld = cnf_calloc(n, sizeof(double)), *lq = cnf_calloc(n, sizeof(double));
    double *gq = cnf_calloc(nd, sizeof(double));
    double *J = cnf_calloc(cnf_size_mul(nd, d), sizeof(double));
    double *buf = cnf_calloc(3 * nd + n, sizeof(double));
    double *scratch = cnf_calloc(f->n_params ? f->n_params : 1, sizeof(double));
    int rc = (!Z || !acts || !ld || !lq || !gq || !J || !buf || !scratch)
                 ? cnf_fail(CNF_ENOMEM, "reverse KL for %zu samples", n) : CNF_OK;
    for (size_t k = 0; !rc && k < nd; k++)
        Z[k] = cnf_rng_normal(rng);
    if (!rc)
        rc = run_layers(f, 0, Z, n, acts, ld); /* x = f⁻¹(z) into acts[0] */
    memset(ld, 0, n * sizeof *ld);
    for (size_t l = 0; !rc && l < L; l++)
        rc = s->layer[l]->type->forward(s->layer[l], f->theta + s->off[l], acts + l * nd, n,
                                        acts + (l + 1) * nd, ld, 0);
    if (!rc && (rc = logq(ctx, acts, n, lq, gq)) > 0)
        rc = cnf_fail(CNF_ERHS, "target log-density callback returned %d", rc);
    double sum = 0.0;
    for (size_t i = 0; !rc && i < n; i++)
        sum += cnf_std_normal_logpdf(acts + L * nd + i * d, d) + ld[i] - lq[i];
    if (!rc) {
        *loss = sum / (double)n;
        if (st)
            st->nll = -*loss;
        if (!isfinite(*loss))
            rc = cnf_fail(CNF_ENONFINITE, "the reverse-KL loss is %g", *loss);
    }
    /* One reverse pass of the stack with seeds GY (nd) and GL (n): GX out, θ into G. */
    double *GY = buf, *GX = buf + nd, *T = buf + 2 * nd, *GL = buf + 3 * nd;
#define REVERSE(G)                                                                            \
    do {                                                                                      \
        for (size_t l = L; !rc && l-- > 0;) {                                                 \
            memset(GX, 0, nd * sizeof *GX);                                                   \
            rc = s->layer[l]->type->backward(s->layer[l], f->theta + s->off[l],               \
                                             acts + l * nd, n, GY, GL, GX, (G) + s->off[l], 0); \
            double *t_ = GY;                                                                  \
            GY = GX;                                                                          \
            GX = t_;                                                                          \
        }                                                                                     \
    } while (0)
    /* Rows of J: seeds GY = e_k. */
    for (size_t k = 0; !rc && grad && k < d; k++) {
        memset(GY, 0, nd * sizeof *GY);
        memset(GL, 0, n * sizeof *GL);
        for (size_t i = 0; i < n; i++)
            GY[i * d + k] = 1.0;
        REVERSE(scratch);
        for (size_t i = 0; !rc && i < n; i++)
            memcpy(J + i * d * d + k * d, GY + i * d, d * sizeof(double));
        GY = buf, GX = buf + nd;
    }
    /* a = ∂ℓ/∂x − ∇ log q̃, then w = a J⁻¹ per sample. */
    if (!rc && grad) {
        memset(GY, 0, nd * sizeof *GY);
        for (size_t i = 0; i < n; i++)
            GL[i] = 1.0;
        REVERSE(scratch);
        for (size_t i = 0; !rc && i < n; i++) {
            for (size_t j = 0; j < d; j++)
                T[i * d + j] = GY[i * d + j] - gq[i * d + j];
            rc = solve_transposed(J + i * d * d, T + i * d, d);
        }
        GY = buf, GX = buf + nd;
    }
    if (!rc && grad) {
        for (size_t k = 0; k < nd; k++)
            GY[k] = -T[k] / (double)n;
        for (size_t i = 0; i < n; i++)
            GL[i] = 1.0 / (double)n;
        REVERSE(grad);
    }
#undef REVERSE
    free(Z), free(acts), free(ld), free(lq), free(gq), free(J), free(buf), free(scratch);
    return rc;
}

static void dflow_free(cnf_flow *f)
{
    dflow *s = (dflow *)f;
    for (size_t l = 0; s->layer && l < s->L; l++)
        cnf_dflow_layer_free(s->layer[l]);
    free(s->layer);
    free(s->off);
    free(s->hidden);
    free(f->theta);
    free(s);
}


/* ---- model files ---------------------------------------------------------------------------- */

static const char *act_name(int v) { return cnf_act_name((cnf_act)v); }
static int act_from(const char *s, int *v) { return cnf_act_from_name(s, (cnf_act *)v); }

#define OFF(F) offsetof(cnf_dflow_config, F)
/* The settings of every discrete kind in a model file ("kind" and "dim" are the model file's). */
static const cnf_setting settings[] = {
    {.key = "hidden", .type = CNF_SET_WIDTHS, .off = OFF(hidden), .off_n = OFF(n_hidden),
     .max = 64},
    {.key = "act", .type = CNF_SET_NAME, .off = OFF(act), .name = act_name, .from_name = act_from},
    {.key = "layers", .type = CNF_SET_SIZE, .off = OFF(layers)},
    {.key = "bins", .type = CNF_SET_SIZE, .off = OFF(bins)},
    {.key = "bound", .type = CNF_SET_DOUBLE, .off = OFF(bound)},
    {.key = "scale_bound", .type = CNF_SET_DOUBLE, .off = OFF(scale_bound)},
    {.key = "batchnorm", .type = CNF_SET_FLAG, .off = OFF(batchnorm)},
    {.key = "bn_momentum", .type = CNF_SET_DOUBLE, .off = OFF(bn_momentum)},
    {.key = "bn_eps", .type = CNF_SET_DOUBLE, .off = OFF(bn_eps)},
};
#undef OFF
enum { N_SETTINGS = sizeof settings / sizeof settings[0] };

/* The tensors of s: each layer with parameters as one vector "layer<i>.<type>" (the layer's flat
 * layout, documented in cnf/dflow.h). A new list of *n entries, NULL if out of memory. */
static cnf_tensor_ref *layer_tensors(const dflow *s, size_t *n)
{
    cnf_tensor_ref *t = cnf_calloc(s->L ? s->L : 1, sizeof *t);
    *n = 0;
    for (size_t l = 0; t && l < s->L; l++) {
        if (!s->layer[l]->n_params)
            continue;
        cnf_tensor_ref *r = &t[(*n)++];
        snprintf(r->name, sizeof r->name, "layer%zu.%s", l, cnf_dflow_layer_type(s->layer[l]));
        r->ndim = 1;
        r->shape[0] = s->layer[l]->n_params;
        r->data = s->base.theta + s->off[l];
    }
    return t;
}

/* Write (save) or read (load) the tensors of s. */
static int layer_tensors_io(const dflow *s, cnf_st_writer *w, const cnf_st_file *f)
{
    size_t n;
    cnf_tensor_ref *t = layer_tensors(s, &n);
    if (!t)
        return cnf_fail(CNF_ENOMEM, "listing %zu layers' tensors", s->L);
    int rc = w ? cnf_tensors_write(w, t, n) : cnf_tensors_read(f, t, n);
    free(t);
    return rc;
}

static int dflow_describe(const cnf_flow *f, cnf_st_writer *w)
{
    const dflow *s = (const dflow *)f;
    int rc = cnf_settings_write(w, settings, N_SETTINGS, &s->cfg);
    return rc ? rc : layer_tensors_io(s, w, NULL);
}

int cnf_dflow_load(const cnf_st_file *f, cnf_flow **out)
{
    *out = NULL;
    cnf_dflow_config c;
    size_t dim, hidden[64];
    const char *kind = cnf_meta_get_str(f, "kind");
    if (!kind)
        return CNF_EFORMAT;
    int rc = cnf_meta_get_size(f, "dim", &dim);
    if (rc)
        return rc;
    cnf_dflow_config_default(&c, kind, dim);
    c.hidden = hidden;
    if ((rc = cnf_settings_read(f, settings, N_SETTINGS, &c)))
        return rc;
    if (c.layers > 4096)
        return cnf_fail(CNF_EFORMAT, "model metadata 'layers' = %zu is implausible", c.layers);
    cnf_rng r;
    cnf_rng_seed(&r, 0);
    rc = cnf_dflow_create(out, &c, &r);
    if (rc)
        return cnf_fail(rc == CNF_ENAME ? CNF_EFORMAT : rc, "model architecture is invalid: %s",
                        cnf_errmsg());
    if ((rc = layer_tensors_io((dflow *)*out, NULL, f))) {
        cnf_flow_free(*out);
        *out = NULL;
    }
    return rc;
}

/* One flow-interface table per kind, so cnf_flow_kind() reports the kind's name. */
#define KIND_TYPE(NAME) \
    {.kind = NAME, .encode = dflow_encode, .decode = dflow_decode, .nll_grad = dflow_nll_grad, \
     .free = dflow_free, .describe = dflow_describe, .rkl_grad = dflow_rkl_grad}
static const cnf_flow_type KIND_TYPES[N_KINDS] = {
    KIND_TYPE("planar"), KIND_TYPE("radial"), KIND_TYPE("nice"), KIND_TYPE("realnvp"),
    KIND_TYPE("glow"),   KIND_TYPE("maf"),    KIND_TYPE("iaf"),  KIND_TYPE("nsf"),
};
#undef KIND_TYPE

static int check_config(const cnf_dflow_config *c, const dflow_kind **kind)
{
    if (!c || !c->kind)
        return cnf_fail(CNF_EINVAL, "flow configuration or kind is NULL");
    *kind = NULL;
    for (size_t i = 0; i < N_KINDS; i++)
        if (!strcmp(c->kind, KINDS[i].name))
            *kind = &KINDS[i];
    if (!*kind) {
        char names[160];
        return cnf_fail(CNF_ENAME, "unknown discrete flow '%s' (valid: %s)", c->kind,
                        list_names(names, sizeof names, cnf_dflow_kind_at, N_KINDS));
    }
    if (c->layers == 0)
        return cnf_fail(CNF_EINVAL, "%s: layers is 0", c->kind);
    if (c->batchnorm && !(c->bn_momentum > 0.0 && c->bn_momentum <= 1.0 && c->bn_eps > 0.0))
        return cnf_fail(CNF_EINVAL, "%s: batch-norm momentum %g must be in (0, 1] and eps %g > 0",
                        c->kind, c->bn_momentum, c->bn_eps);
    return CNF_OK;
}

/* Append layer `type` to s (the layer's own create checks the fields). */
static int push(dflow *s, const cnf_dflow_config *c, const char *type, int parity)
{
    cnf_dflow_layer_config lc = {.type = type, .dim = c->dim, .parity = parity,
                                 .n_hidden = c->n_hidden, .hidden = c->hidden, .act = c->act,
                                 .bins = c->bins, .bound = c->bound,
                                 .scale_bound = c->scale_bound, .bn_momentum = c->bn_momentum,
                                 .bn_eps = c->bn_eps};
    int rc = cnf_dflow_layer_create(&s->layer[s->L], &lc);
    if (rc)
        return rc;
    s->off[s->L] = s->base.n_params;
    s->base.n_params += s->layer[s->L]->n_params;
    s->L++;
    return CNF_OK;
}

int cnf_dflow_create(cnf_flow **out, const cnf_dflow_config *cfg, cnf_rng *rng)
{
    *out = NULL;
    const dflow_kind *k = NULL;
    int rc = check_config(cfg, &k);
    if (rc)
        return rc;
    if (!rng)
        return cnf_fail(CNF_EINVAL, "%s: initialisation needs a random generator", cfg->kind);
    size_t per_step = 0;
    while (per_step < 3 && k->step[per_step])
        per_step++;
    size_t cap = cnf_size_mul(cfg->layers, per_step + 2); /* saturated: fails below */
    cap += cap < SIZE_MAX;
    dflow *s = calloc(1, sizeof *s);
    if (!s)
        return cnf_fail(CNF_ENOMEM, "allocating a %s flow", cfg->kind);
    s->base.type = &KIND_TYPES[k - KINDS];
    s->base.dim = cfg->dim;
    s->cfg = *cfg;
    s->cfg.kind = k->name;
    s->layer = cnf_calloc(cap, sizeof *s->layer);
    s->off = cnf_calloc(cap, sizeof *s->off);
    s->hidden = cnf_calloc(cfg->n_hidden + 1, sizeof *s->hidden);
    if (!s->layer || !s->off || !s->hidden)
        rc = cnf_fail(CNF_ENOMEM, "%s: allocating %zu flow steps", cfg->kind, cfg->layers);
    else if (cfg->n_hidden && !cfg->hidden)
        rc = cnf_fail(CNF_EINVAL, "%s: %zu hidden layers but no widths", cfg->kind,
                      cfg->n_hidden);
    else if (cfg->n_hidden)
        memcpy(s->hidden, cfg->hidden, cfg->n_hidden * sizeof *s->hidden);
    s->cfg.hidden = s->hidden;
    for (size_t l = 0; rc == CNF_OK && l < cfg->layers; l++) {
        if (l > 0 && k->bn && cfg->batchnorm)
            rc = push(s, cfg, "batchnorm", 0);
        if (rc == CNF_OK && l > 0 && k->between)
            rc = push(s, cfg, k->between, 0);
        for (size_t j = 0; rc == CNF_OK && j < per_step; j++)
            rc = push(s, cfg, k->step[j], (int)(l % 2));
    }
    if (rc == CNF_OK && k->final)
        rc = push(s, cfg, k->final, 0);
    if (rc == CNF_OK) {
        s->base.theta = cnf_calloc(s->base.n_params ? s->base.n_params : 1, sizeof(double));
        if (!s->base.theta)
            rc = cnf_fail(CNF_ENOMEM, "allocating %zu parameters", s->base.n_params);
    }
    if (rc) {
        dflow_free(&s->base);
        return rc;
    }
    for (size_t l = 0; l < s->L; l++)
        cnf_dflow_layer_init(s->layer[l], s->base.theta + s->off[l], rng);
    *out = &s->base;
    return CNF_OK;
}
