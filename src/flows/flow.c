/* The generic flow calls: argument checks, then dispatch through the type table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flow.h"
#include "core/internal.h"

const char *cnf_flow_kind(const cnf_flow *f) { return f->type->kind; }
size_t cnf_flow_dim(const cnf_flow *f) { return f->dim; }
size_t cnf_flow_n_params(const cnf_flow *f) { return f->n_params; }
double *cnf_flow_params(cnf_flow *f) { return f->theta; }

double cnf_std_normal_logpdf(const double *z, size_t d)
{
    double s = 0.0;
    for (size_t j = 0; j < d; j++)
        s += z[j] * z[j];
    return -0.5 * s - 0.5 * (double)d * log(2.0 * M_PI);
}

static int check_rows(const cnf_flow *f, const double *X, size_t n)
{
    if (!X && n)
        return cnf_fail(CNF_EINVAL, "data pointer is NULL");
    if (!cnf_size_ok(cnf_size_mul(n, f->dim)))
        return cnf_fail(CNF_EINVAL, "%zu rows of dimension %zu cannot be addressed", n, f->dim);
    for (size_t i = 0; i < n * f->dim; i++)
        if (!isfinite(X[i]))
            return cnf_fail(CNF_ENONFINITE, "data row %zu, column %zu is %g", i / f->dim,
                            i % f->dim, X[i]);
    return CNF_OK;
}

/* n samples the flow draws itself: n·dim values must be addressable (so the implementations'
 * small multiples of n·dim cannot wrap), else CNF_ENOMEM naming n. */
static int check_count(const cnf_flow *f, size_t n)
{
    if (!cnf_size_ok(cnf_size_mul(n, f->dim)))
        return cnf_fail(CNF_ENOMEM, "%zu samples of dimension %zu are more than memory can hold",
                        n, f->dim);
    return CNF_OK;
}

static void clear(cnf_flow_stats *st)
{
    if (st)
        memset(st, 0, sizeof *st);
}

/* Run encode or decode with a logdet buffer of our own when the caller passes none. */
static int map(cnf_flow *f, int enc, const double *in, size_t n, double *out, double *logdet,
               cnf_flow_stats *st)
{
    clear(st);
    if (n == 0)
        return CNF_OK;
    int rc = check_rows(f, in, n);
    if (rc)
        return rc;
    double *ld = logdet ? logdet : cnf_calloc(n, sizeof(double));
    if (!ld)
        return cnf_fail(CNF_ENOMEM, "allocating %zu log-determinants", n);
    rc = enc ? f->type->encode(f, in, n, out, ld, st) : f->type->decode(f, in, n, out, ld, st);
    if (!logdet)
        free(ld);
    return rc;
}

int cnf_flow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                    cnf_flow_stats *st)
{
    return map(f, 1, X, n, Z, logdet, st);
}

int cnf_flow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                    cnf_flow_stats *st)
{
    return map(f, 0, Z, n, X, logdet, st);
}

int cnf_flow_log_prob(cnf_flow *f, const double *X, size_t n, double *logp, cnf_flow_stats *st)
{
    double *Z = cnf_calloc(cnf_size_mul(n, f->dim), sizeof(double));
    if (!Z)
        return cnf_fail(CNF_ENOMEM, "allocating %zu base points", n);
    int rc = map(f, 1, X, n, Z, logp, st);
    double nll = 0.0;
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        logp[i] += cnf_std_normal_logpdf(Z + i * f->dim, f->dim);
        nll -= logp[i];
    }
    if (st && rc == CNF_OK && n)
        st->nll = nll / (double)n;
    free(Z);
    return rc;
}

int cnf_flow_sample(cnf_flow *f, size_t n, cnf_rng *rng, double *X, double *logp,
                    cnf_flow_stats *st)
{
    clear(st);
    if (!rng)
        return cnf_fail(CNF_EINVAL, "sampling needs a random generator");
    int rc = check_count(f, n);
    if (rc)
        return rc;
    double *Z = cnf_calloc(cnf_size_mul(n, f->dim), sizeof(double));
    if (!Z)
        return cnf_fail(CNF_ENOMEM, "allocating %zu base points", n);
    for (size_t i = 0; i < n * f->dim; i++)
        Z[i] = cnf_rng_normal(rng);
    rc = map(f, 0, Z, n, X, logp, st);
    for (size_t i = 0; rc == CNF_OK && logp && i < n; i++)
        logp[i] += cnf_std_normal_logpdf(Z + i * f->dim, f->dim);
    free(Z);
    return rc;
}

int cnf_flow_nll_grad_x(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                        double *grad, double *gx, cnf_flow_stats *st)
{
    clear(st);
    if (n == 0)
        return cnf_fail(CNF_EINVAL, "empty batch");
    int rc = check_rows(f, X, n);
    if (rc)
        return rc;
    if (grad)
        memset(grad, 0, f->n_params * sizeof *grad);
    if (gx)
        memset(gx, 0, n * f->dim * sizeof *gx);
    return f->type->nll_grad(f, X, n, rng, loss, grad, gx, st);
}

int cnf_flow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                      double *grad, cnf_flow_stats *st)
{
    return cnf_flow_nll_grad_x(f, X, n, rng, loss, grad, NULL, st);
}

int cnf_flow_loss(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                  cnf_flow_stats *st)
{
    return cnf_flow_nll_grad(f, X, n, rng, loss, NULL, st);
}

int cnf_flow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                      double *loss, double *grad, cnf_flow_stats *st)
{
    clear(st);
    if (n == 0 || !rng || !logq)
        return cnf_fail(CNF_EINVAL, "reverse KL needs samples, a generator and a target");
    if (!f->type->rkl_grad)
        return cnf_fail(CNF_EUNSUPPORTED, "flow kind '%s' has no reverse-KL gradient",
                        f->type->kind);
    int rc = check_count(f, n);
    if (rc)
        return rc;
    if (grad)
        memset(grad, 0, f->n_params * sizeof *grad);
    return f->type->rkl_grad(f, n, rng, logq, ctx, loss, grad, st);
}

int cnf_flow_importance(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                        double *log_z, double *ess_fraction, double *elbo)
{
    if (n == 0 || !rng || !logq)
        return cnf_fail(CNF_EINVAL, "importance sampling needs samples, a generator and a target");
    int rc = check_count(f, n);
    if (rc)
        return rc;
    double *X = cnf_calloc(cnf_size_mul(n, f->dim), sizeof(double));
    double *lp = cnf_calloc(n, sizeof(double));
    double *lq = cnf_calloc(n, sizeof(double));
    rc = (!X || !lp || !lq) ? cnf_fail(CNF_ENOMEM, "allocating %zu samples", n) : CNF_OK;
    if (!rc)
        rc = cnf_flow_sample(f, n, rng, X, lp, NULL);
    if (!rc && (rc = logq(ctx, X, n, lq, NULL)) != 0)
        rc = rc < 0 ? rc : cnf_fail(CNF_ERHS, "target log-density callback returned %d", rc);
    if (!rc) {
        /* log w_i = log q̃ − log p; log-sum-exp around the largest. */
        double m = -INFINITY, mean = 0.0;
        for (size_t i = 0; i < n; i++) {
            lq[i] -= lp[i];
            if (lq[i] > m)
                m = lq[i];
            mean += lq[i];
        }
        double s1 = 0.0, s2 = 0.0;
        for (size_t i = 0; i < n; i++) {
            double w = exp(lq[i] - m);
            s1 += w;
            s2 += w * w;
        }
        if (!isfinite(m))
            rc = cnf_fail(CNF_ENONFINITE, "importance weights are not finite");
        else {
            *log_z = m + log(s1 / (double)n);
            *ess_fraction = s1 * s1 / (s2 * (double)n);
            *elbo = mean / (double)n;
        }
    }
    free(X);
    free(lp);
    free(lq);
    return rc;
}

int cnf_flow_velocity_check(const cnf_flow *f)
{
    if (!f->type->velocity_check)
        return cnf_fail(CNF_EUNSUPPORTED, "flow kind '%s' has no velocity field to regress "
                        "(flow matching trains continuous flows only)", f->type->kind);
    return f->type->velocity_check(f);
}

int cnf_flow_velocity_loss(cnf_flow *f, const double *X, size_t n, cnf_path_fn path, void *ctx,
                           double *loss, double *grad)
{
    if (n == 0 || !path)
        return cnf_fail(CNF_EINVAL, "velocity regression needs data and a path");
    int rc = cnf_flow_velocity_check(f);
    if (!rc)
        rc = check_rows(f, X, n);
    if (rc)
        return rc;
    if (grad)
        memset(grad, 0, f->n_params * sizeof *grad);
    return f->type->velocity_loss(f, X, n, path, ctx, loss, grad);
}

void cnf_flow_free(cnf_flow *f)
{
    if (f)
        f->type->free(f);
}
