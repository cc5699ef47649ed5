/* Unnormalized target densities for reverse KL (see cnf/target.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/loaders.h"
#include "cnf/target.h"
#include "core/internal.h"

typedef struct target_type {
    const char *name;
    size_t dim;
    /* log q̃ and (if g is not NULL) its gradient at one point x. */
    double (*logq)(const cnf_target *t, const double *x, double *g);
    double (*log_z)(void); /* NULL: unknown */
} target_type;

struct cnf_target {
    const target_type *type;
    size_t dim;
    /* logreg */
    double *X, *y; /* (n, p + 1) with the intercept column first, (n) */
    size_t n;
    double prior_var;
};

static double banana(const cnf_target *t, const double *x, double *g)
{
    (void)t;
    double r = x[1] - 0.25 * x[0] * x[0] + 1.0;
    if (g) {
        g[0] = -x[0] / 4.0 + r * 0.5 * x[0];
        g[1] = -r;
    }
    return -x[0] * x[0] / 8.0 - 0.5 * r * r;
}
static double banana_z(void) { return log(4.0 * M_PI); }

static double funnel(const cnf_target *t, const double *x, double *g)
{
    (void)t;
    double v = x[0], e = exp(-v), s = 0.0;
    for (size_t i = 1; i < 10; i++)
        s += x[i] * x[i];
    if (g) {
        g[0] = -v / 9.0 + 0.5 * s * e - 4.5;
        for (size_t i = 1; i < 10; i++)
            g[i] = -x[i] * e;
    }
    return -v * v / 18.0 - 0.5 * s * e - 4.5 * v;
}
static double funnel_z(void) { return log(3.0) + 5.0 * log(2.0 * M_PI); }

static const double RING_R = 2.0, RING_S = 0.25;
static double ring(const cnf_target *t, const double *x, double *g)
{
    (void)t;
    double r = hypot(x[0], x[1]), u = (r - RING_R) / (RING_S * RING_S);
    if (g) {
        double k = r > 0 ? -u / r : 0.0;
        g[0] = k * x[0];
        g[1] = k * x[1];
    }
    return -0.5 * (r - RING_R) * (r - RING_R) / (RING_S * RING_S);
}
static double ring_z(void)
{
    double r = RING_R, s = RING_S;
    return log(2.0 * M_PI * (s * s * exp(-r * r / (2 * s * s)) +
                             r * s * sqrt(M_PI / 2.0) * (1.0 + erf(r / (s * sqrt(2.0))))));
}

/* Five components on a circle, 3.4 standard deviations apart (adjacent centres 2.35 apart):
 * separated modes with unequal weights, yet reachable by a flow started at N(0, I). */
static const double MIX_R = 2.0, MIX_S = 0.7;
static double mixture(const cnf_target *t, const double *x, double *g)
{
    (void)t;
    const double s2 = MIX_S * MIX_S, R = MIX_R;
    double lk[5], m = -INFINITY, gx = 0, gy = 0, tot = 0;
    for (int k = 0; k < 5; k++) {
        double a = 2 * M_PI * k / 5, dx = x[0] - R * cos(a), dy = x[1] - R * sin(a);
        lk[k] = log(k + 1.0) - (dx * dx + dy * dy) / (2 * s2) - log(2 * M_PI * s2);
        if (lk[k] > m)
            m = lk[k];
    }
    for (int k = 0; k < 5; k++) {
        double a = 2 * M_PI * k / 5, w = exp(lk[k] - m);
        tot += w;
        gx += w * -(x[0] - R * cos(a)) / s2;
        gy += w * -(x[1] - R * sin(a)) / s2;
    }
    if (g) {
        g[0] = gx / tot;
        g[1] = gy / tot;
    }
    return m + log(tot);
}
static double mixture_z(void) { return log(15.0); }

static double twomoons(const cnf_target *t, const double *x, double *g)
{
    (void)t;
    double r = hypot(x[0], x[1]), a = (r - 2.0) / 0.4;
    double e1 = -0.5 * pow((x[0] - 2.0) / 0.6, 2), e2 = -0.5 * pow((x[0] + 2.0) / 0.6, 2);
    double m = fmax(e1, e2), w1 = exp(e1 - m), w2 = exp(e2 - m);
    if (g) {
        double k = r > 0 ? -a / 0.4 / r : 0.0;
        double dm = (w1 * -(x[0] - 2.0) / 0.36 + w2 * -(x[0] + 2.0) / 0.36) / (w1 + w2);
        g[0] = k * x[0] + dm;
        g[1] = k * x[1];
    }
    return -0.5 * a * a + m + log(w1 + w2);
}
/* By the midpoint rule on [−8, 8]² (the density is below e^-150 outside), 1600² cells. */
static double twomoons_z(void)
{
    const int N = 1600;
    const double L = 8.0, h = 2 * L / N;
    double m = -INFINITY, s = 0.0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double x[2] = {-L + (i + 0.5) * h, -L + (j + 0.5) * h};
                double v = twomoons(NULL, x, NULL);
                if (pass == 0)
                    m = fmax(m, v);
                else
                    s += exp(v - m);
            }
    return m + log(s * h * h);
}

static double sigmoid_log(double z) /* log σ(z), stable */
{
    return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z));
}

static double logreg(const cnf_target *t, const double *w, double *g)
{
    const size_t D = t->dim;
    double lq = 0.0;
    if (g)
        for (size_t j = 0; j < D; j++)
            g[j] = -w[j] / t->prior_var;
    for (size_t j = 0; j < D; j++)
        lq -= w[j] * w[j] / (2 * t->prior_var);
    for (size_t i = 0; i < t->n; i++) {
        const double *xi = t->X + i * D;
        double z = 0.0;
        for (size_t j = 0; j < D; j++)
            z += xi[j] * w[j];
        /* y log σ(z) + (1 − y) log σ(−z) */
        lq += t->y[i] * sigmoid_log(z) + (1 - t->y[i]) * sigmoid_log(-z);
        if (g) {
            double p = z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
            for (size_t j = 0; j < D; j++)
                g[j] += (t->y[i] - p) * xi[j];
        }
    }
    return lq;
}

static const target_type TYPES[] = {
    {"banana", 2, banana, banana_z},       {"funnel", 10, funnel, funnel_z},
    {"ring", 2, ring, ring_z},             {"mixture", 2, mixture, mixture_z},
    {"twomoons", 2, twomoons, twomoons_z},
};
static const target_type LOGREG = {"logreg", 0, logreg, NULL};
enum { N_TYPES = sizeof TYPES / sizeof TYPES[0] };

size_t cnf_target_count(void) { return N_TYPES; }
const char *cnf_target_at(size_t i) { return i < N_TYPES ? TYPES[i].name : NULL; }

int cnf_target_create(const char *name, cnf_target **out)
{
    *out = NULL;
    for (size_t i = 0; name && i < N_TYPES; i++)
        if (!strcmp(name, TYPES[i].name)) {
            cnf_target *t = calloc(1, sizeof *t);
            if (!t)
                return cnf_fail(CNF_ENOMEM, "allocating a target");
            t->type = &TYPES[i];
            t->dim = TYPES[i].dim;
            *out = t;
            return CNF_OK;
        }
    return cnf_fail(CNF_ENAME, "unknown target '%s' (valid: banana, funnel, ring, mixture, "
                    "twomoons; or cnf train --target-csv FILE for logistic regression)",
                    name ? name : "(null)");
}

int cnf_target_logreg_create(cnf_target **out, const double *X, const double *y, size_t n,
                             size_t p, double prior_sd)
{
    *out = NULL;
    if (n == 0 || !(prior_sd > 0) || !isfinite(prior_sd))
        return cnf_fail(CNF_EINVAL, "logistic regression needs data and a prior sd > 0");
    for (size_t i = 0; i < n; i++) {
        if (y[i] != 0.0 && y[i] != 1.0)
            return cnf_fail(CNF_EINVAL, "label of row %zu is %g, not 0 or 1", i, y[i]);
        for (size_t j = 0; j < p; j++)
            if (!isfinite(X[i * p + j]))
                return cnf_fail(CNF_ENONFINITE, "feature %zu of row %zu is %g", j, i,
                                X[i * p + j]);
    }
    cnf_target *t = calloc(1, sizeof *t);
    if (!t)
        return cnf_fail(CNF_ENOMEM, "allocating a target");
    t->type = &LOGREG;
    t->dim = p + 1;
    t->n = n;
    t->prior_var = prior_sd * prior_sd;
    t->X = cnf_calloc(n * (p + 1), sizeof(double));
    t->y = cnf_calloc(n, sizeof(double));
    if (!t->X || !t->y) {
        cnf_target_free(t);
        return cnf_fail(CNF_ENOMEM, "copying %zu rows", n);
    }
    for (size_t i = 0; i < n; i++) {
        t->X[i * (p + 1)] = 1.0;
        memcpy(t->X + i * (p + 1) + 1, X + i * p, p * sizeof(double));
        t->y[i] = y[i];
    }
    *out = t;
    return CNF_OK;
}

int cnf_target_logreg_file(cnf_target **out, const char *path, double prior_sd)
{
    *out = NULL;
    cnf_data data;
    int rc = cnf_data_load(path, CNF_DATA_AUTO, &data);
    if (rc)
        return rc;
    const size_t n = data.n, p = data.d - 1;
    if (data.d < 2) {
        cnf_data_clear(&data);
        return cnf_fail(CNF_EFORMAT, "%s: needs feature columns and a label column", path);
    }
    double *X = cnf_calloc(n * p, sizeof(double)), *y = cnf_calloc(n, sizeof(double));
    if (!X || !y)
        rc = cnf_fail(CNF_ENOMEM, "%s: %zu rows", path, n);
    for (size_t i = 0; !rc && i < n; i++) {
        y[i] = data.X[i * data.d + p];
        if (y[i] != 0.0 && y[i] != 1.0)
            rc = cnf_fail(CNF_EFORMAT, "%s: row %zu: label %g is not 0 or 1", path, i + 1, y[i]);
        memcpy(X + i * p, data.X + i * data.d, p * sizeof(double));
    }
    /* Standardise each feature (two-pass mean and variance). */
    for (size_t j = 0; !rc && j < p; j++) {
        double m = 0.0, v = 0.0;
        for (size_t i = 0; i < n; i++)
            m += X[i * p + j] / (double)n;
        for (size_t i = 0; i < n; i++)
            v += (X[i * p + j] - m) * (X[i * p + j] - m) / (double)n;
        double sd = v > 0 ? sqrt(v) : 1.0;
        for (size_t i = 0; i < n; i++)
            X[i * p + j] = v > 0 ? (X[i * p + j] - m) / sd : 0.0;
    }
    if (!rc)
        rc = cnf_target_logreg_create(out, X, y, n, p, prior_sd);
    cnf_data_clear(&data);
    free(X);
    free(y);
    return rc;
}

void cnf_target_free(cnf_target *t)
{
    if (!t)
        return;
    free(t->X);
    free(t->y);
    free(t);
}

const char *cnf_target_name(const cnf_target *t) { return t->type->name; }
size_t cnf_target_dim(const cnf_target *t) { return t->dim; }
double cnf_target_log_z(const cnf_target *t) { return t->type->log_z ? t->type->log_z() : NAN; }

int cnf_target_logq(void *ctx, const double *X, size_t n, double *logq, double *grad)
{
    const cnf_target *t = ctx;
    for (size_t i = 0; i < n; i++) {
        logq[i] = t->type->logq(t, X + i * t->dim, grad ? grad + i * t->dim : NULL);
        if (!isfinite(logq[i]) && !isinf(logq[i]))
            return cnf_fail(CNF_ENONFINITE, "target %s is NaN at sample %zu", t->type->name, i);
    }
    return 0;
}
