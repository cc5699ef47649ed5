/* Conditional flow matching and the minibatch optimal assignment (see cnf/fm.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/cflow.h"
#include "cnf/fm.h"
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

int cnf_fm_loss_grad(cnf_flow *f, const double *X, size_t n, cnf_fm_variant variant,
                     double sigma, cnf_rng *rng, double *loss, double *grad)
{
    const cnf_mlp *m = cnf_cflow_mlp(f);
    const cnf_cflow_config *cfg = cnf_cflow_settings(f);
    if (!m || !cfg)
        return cnf_fail(CNF_EINVAL, "flow matching trains a CNF with an MLP field");
    if (cfg->blocks != 1)
        return cnf_fail(CNF_EINVAL, "flow matching needs a CNF with one block, not %zu",
                        cfg->blocks);
    if (cfg->train_T)
        return cnf_fail(CNF_EINVAL, "flow matching holds the end time T fixed: create the flow "
                        "with train_T = 0 (T = 1 is the usual choice)");
    if (!(sigma >= 0) || n == 0 || !rng)
        return cnf_fail(CNF_EINVAL, "flow matching needs data, a generator and sigma >= 0");
    const size_t d = cfg->dim;
    const double T = cnf_cflow_end_time(f);
    double *theta = cnf_flow_params(f);
    double *X1 = cnf_calloc(n * d, sizeof(double)), *Xt = cnf_calloc(n * d, sizeof(double));
    double *V = cnf_calloc(n * d, sizeof(double));
    size_t *perm = cnf_calloc(n, sizeof(size_t));
    double *C = variant == CNF_FM_OTCFM ? cnf_calloc(n * n, sizeof(double)) : NULL;
    cnf_mlp_work *w = NULL;
    int rc = (!X1 || !Xt || !V || !perm || (variant == CNF_FM_OTCFM && !C))
                 ? cnf_fail(CNF_ENOMEM, "allocating a flow-matching batch of %zu", n)
                 : cnf_mlp_work_create(&w, m, n / (n < 32 ? n : 32) + 1, 0);
    if (grad && !rc)
        memset(grad, 0, cnf_flow_n_params(f) * sizeof(double));
    for (size_t i = 0; !rc && i < n * d; i++)
        X1[i] = cnf_rng_normal(rng);
    for (size_t i = 0; !rc && i < n; i++)
        perm[i] = i;
    if (!rc && C) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0.0;
                for (size_t k = 0; k < d; k++) {
                    double e = X[i * d + k] - X1[j * d + k];
                    s += e * e;
                }
                C[i * n + j] = s;
            }
        rc = cnf_assignment(C, n, perm);
    }
    /* Stratified times: the batch is cut into G = min(n, 32) groups of consecutive samples and
     * group k gets τ = (k + u_k)/G with its own uniform u_k, so every τ is marginally uniform,
     * the strata lower the variance, and each group is one batched MLP call. */
    const size_t G = n < 32 ? n : 32;
    double L = 0.0;
    for (size_t k = 0; !rc && k < G; k++) {
        size_t i0 = k * n / G, i1 = (k + 1) * n / G, m_k = i1 - i0;
        double tk = ((double)k + cnf_rng_uniform(rng)) / (double)G;
        for (size_t i = i0; i < i1; i++) {
            const double *x0 = X + i * d, *x1 = X1 + perm[i] * d;
            for (size_t j = 0; j < d; j++)
                Xt[i * d + j] = (1 - tk) * x0[j] + tk * x1[j] +
                                (sigma > 0 ? sigma * cnf_rng_normal(rng) : 0.0);
        }
        rc = cnf_mlp_forward(m, theta, T * tk, Xt + i0 * d, d, m_k, V + i0 * d, d, w);
        for (size_t i = i0; !rc && i < i1; i++) {
            const double *x0 = X + i * d, *x1 = X1 + perm[i] * d;
            for (size_t j = 0; j < d; j++) {
                double e = V[i * d + j] - (x1[j] - x0[j]) / T;
                L += e * e;
                V[i * d + j] = 2.0 * e / (double)n; /* the seed ∂loss/∂v */
            }
        }
        if (!rc && grad)
            rc = cnf_mlp_backward(m, theta, V + i0 * d, d, NULL, NULL, 0, grad, NULL, w);
    }
    if (!rc)
        *loss = L / (double)n;
    cnf_mlp_work_free(w);
    free(X1);
    free(Xt);
    free(V);
    free(perm);
    free(C);
    return rc;
}
