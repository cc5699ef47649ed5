/* Conditional flow matching as an objective, its paths and the minibatch optimal assignment
 * (see cnf/fm.h). The paths are built here; the flow regresses its field on them through the
 * flow interface (cnf_flow_velocity_loss), in its own coordinates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/fm.h"
#include "objective.h"
#include "core/internal.h"

int cnf_fm_variant_from_name(const char *name, cnf_fm_variant *out)
{
    if (name && !strcmp(name, "icfm"))
        *out = CNF_FM_ICFM;
    else if (name && !strcmp(name, "otcfm"))
        *out = CNF_FM_OTCFM;
    else
        return cnf_fail(CNF_ENAME, "unknown flow-matching variant '%s' (valid: icfm, otcfm)",
                        name ? name : "(null)");
    return CNF_OK;
}

const char *cnf_fm_variant_name(cnf_fm_variant v) { return v == CNF_FM_OTCFM ? "otcfm" : "icfm"; }

/* The Hungarian method as shortest augmenting paths with row/column potentials (Kuhn 1955,
 * Munkres 1957; the O(n³) form of Jonker & Volgenant 1987), rows and columns 1-based inside. */
int cnf_assignment(const double *C, size_t n, size_t *perm)
{
    double *u = cnf_calloc(n + 1, sizeof(double)), *v = cnf_calloc(n + 1, sizeof(double));
    double *minv = cnf_calloc(n + 1, sizeof(double));
    size_t *p = cnf_calloc(n + 1, sizeof(size_t)), *way = cnf_calloc(n + 1, sizeof(size_t));
    char *used = cnf_calloc(n + 1, 1);
    if (!u || !v || !minv || !p || !way || !used) {
        free(u), free(v), free(minv), free(p), free(way), free(used);
        return cnf_fail(CNF_ENOMEM, "assignment of %zu points", n);
    }
    for (size_t i = 1; i <= n; i++) {
        p[0] = i;
        size_t j0 = 0;
        for (size_t j = 0; j <= n; j++) {
            minv[j] = INFINITY;
            used[j] = 0;
        }
        do {
            used[j0] = 1;
            size_t i0 = p[j0], j1 = 0;
            double delta = INFINITY;
            for (size_t j = 1; j <= n; j++)
                if (!used[j]) {
                    double cur = C[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                    if (cur < minv[j]) {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if (minv[j] < delta) {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            for (size_t j = 0; j <= n; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            size_t j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    for (size_t j = 1; j <= n; j++)
        perm[p[j] - 1] = j - 1;
    free(u), free(v), free(minv), free(p), free(way), free(used);
    return CNF_OK;
}

/* The paths of one batch: what cnf_path_fn needs besides the batch. */
typedef struct fm_path_ctx {
    cnf_fm_variant variant;
    double sigma;
    cnf_rng *rng;
} fm_path_ctx;

/* cnf_path_fn: base points x₁ ~ N(0, I), paired with the data x₀ = the rows of Y independently
 * or by the optimal assignment, stratified times, and the straight paths between them. */
static int fm_path(void *ctx, const double *Y, size_t n, size_t d, double *tau, double *Yt,
                   double *U)
{
    const fm_path_ctx *p = ctx;
    double *X1 = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    size_t *perm = cnf_calloc(n, sizeof(size_t));
    double *C = p->variant == CNF_FM_OTCFM ? cnf_calloc(cnf_size_mul(n, n), sizeof(double)) : NULL;
    int rc = (!X1 || !perm || (p->variant == CNF_FM_OTCFM && !C))
                 ? cnf_fail(CNF_ENOMEM, "allocating a flow-matching batch of %zu", n)
                 : CNF_OK;
    for (size_t i = 0; !rc && i < n * d; i++)
        X1[i] = cnf_rng_normal(p->rng);
    for (size_t i = 0; !rc && i < n; i++)
        perm[i] = i;
    if (!rc && C) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0.0;
                for (size_t k = 0; k < d; k++) {
                    double e = Y[i * d + k] - X1[j * d + k];
                    s += e * e;
                }
                C[i * n + j] = s;
            }
        rc = cnf_assignment(C, n, perm);
    }
    /* Stratified times: the batch is cut into G = min(n, 32) groups of consecutive samples and
     * group k gets τ = (k + u_k)/G with its own uniform u_k, so every τ is marginally uniform,
     * the strata lower the variance, and each group is one batched evaluation of the field. */
    const size_t G = n < 32 ? n : 32;
    for (size_t k = 0; !rc && k < G; k++) {
        size_t i0 = k * n / G, i1 = (k + 1) * n / G;
        double tk = ((double)k + cnf_rng_uniform(p->rng)) / (double)G;
        for (size_t i = i0; i < i1; i++) {
            const double *x0 = Y + i * d, *x1 = X1 + perm[i] * d;
            tau[i] = tk;
            for (size_t j = 0; j < d; j++) {
                Yt[i * d + j] = (1 - tk) * x0[j] + tk * x1[j] +
                                (p->sigma > 0 ? p->sigma * cnf_rng_normal(p->rng) : 0.0);
                U[i * d + j] = x1[j] - x0[j];
            }
        }
    }
    free(X1);
    free(perm);
    free(C);
    return rc;
}

int cnf_fm_loss_grad(cnf_flow *f, const double *X, size_t n, cnf_fm_variant variant,
                     double sigma, cnf_rng *rng, double *loss, double *grad)
{
    if (!(sigma >= 0) || n == 0 || !rng)
        return cnf_fail(CNF_EINVAL, "flow matching needs data, a generator and sigma >= 0");
    if ((unsigned)variant > CNF_FM_OTCFM)
        return cnf_fail(CNF_EINVAL, "flow-matching variant %d is not one of icfm, otcfm",
                        (int)variant);
    fm_path_ctx ctx = {variant, sigma, rng};
    return cnf_flow_velocity_loss(f, X, n, fm_path, &ctx, loss, grad);
}

/* ---- the objective -------------------------------------------------------------------------- */

static const cnf_fm_params fm_default = {CNF_FM_ICFM, 0.0};

static const cnf_fm_params *fm_params(const cnf_train_config *c)
{
    return c->objective_params ? c->objective_params : &fm_default;
}

static int fm_check(const cnf_flow *f, const cnf_train_config *c)
{
    const cnf_fm_params *p = fm_params(c);
    if ((unsigned)p->variant > CNF_FM_OTCFM || !(p->sigma >= 0))
        return cnf_fail(CNF_EINVAL, "flow matching: variant %d (icfm or otcfm) and sigma %g "
                        "(>= 0)", (int)p->variant, p->sigma);
    int rc = cnf_flow_velocity_check(f); /* its detail names the flow and what is missing */
    return rc ? rc : cnf_objective_check_data(c);
}

static int fm_loss_grad(cnf_flow *f, const cnf_train_config *c, const double *X, size_t n,
                        cnf_rng *rng, double *loss, double *grad, cnf_flow_stats *st)
{
    const cnf_fm_params *p = fm_params(c);
    memset(st, 0, sizeof *st);
    int rc = cnf_fm_loss_grad(f, X, n, p->variant, p->sigma, rng, loss, grad);
    st->nll = rc ? 0.0 : *loss;
    return rc;
}

static const cnf_objective_type fm = {
    .name = "flow-matching",
    .summary = "conditional flow matching on data, regressing a continuous flow's velocity "
               "field without ODE solves",
    .uses_data = 1,
    .figure = "NLL",
    .check = fm_check,
    .loss_grad = fm_loss_grad,
    .validate = cnf_objective_validate_nll,
};

const cnf_objective_type *const cnf_objective_fm = &fm;
