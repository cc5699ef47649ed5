/* The preprocessing wrapper flow (cnf/pre.h): its log-determinant against finite differences,
 * a data-space density that integrates to one, round trips with constant columns restored,
 * sample log-densities that agree with log_prob (also with PCA), the loss in data space, the
 * model-file round trip, and early stopping. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf.h"
#include "gradcheck.h"

static cnf_flow *inner_flow(const char *kind, size_t d, uint64_t seed)
{
    cnf_dflow_config c;
    static const size_t hid[] = {8};
    cnf_dflow_config_default(&c, kind, d);
    c.layers = 2;
    c.hidden = hid;
    c.n_hidden = 1;
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, &r), CNF_OK, "%s", cnf_errmsg());
    double *th = cnf_flow_params(f);
    for (size_t k = 0; k < cnf_flow_n_params(f); k++)
        th[k] += 0.3 * cnf_rng_normal(&r); /* a non-trivial map */
    return f;
}

/* Rows of (D = 4): column 1 constant (7), columns 0, 2, 3 integer-valued in [0, 16)
 * dequantised, correlated. */
static void pixels(double *X, size_t n, uint64_t seed)
{
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double a = floor(16 * cnf_rng_uniform(&r));
        double b = fmin(15, floor(a / 2 + 8 * cnf_rng_uniform(&r)));
        X[i * 4 + 0] = a + cnf_rng_uniform(&r);
        X[i * 4 + 1] = 7;
        X[i * 4 + 2] = b + cnf_rng_uniform(&r);
        X[i * 4 + 3] = floor(16 * cnf_rng_uniform(&r)) + cnf_rng_uniform(&r);
    }
}

static cnf_flow *wrapped(const cnf_pre_config *c, const double *X, size_t n, size_t D,
                         const char *kind)
{
    cnf_pre *p;
    cr_assert_eq(cnf_pre_fit(&p, c, X, n, D), CNF_OK, "%s", cnf_errmsg());
    cnf_flow *f;
    cr_assert_eq(cnf_pre_flow_create(&f, p, inner_flow(kind, cnf_pre_dim(p), 5)), CNF_OK, "%s",
                 cnf_errmsg());
    return f;
}

/* cnf_pre_apply of one row (D = 4) with column c moved by t. */
typedef struct {
    cnf_pre *p;
    const double *x;
    size_t c;
} pre_line;

static void pre_at(void *ctx, double t, double *y)
{
    const pre_line *l = ctx;
    double x[4];
    memcpy(x, l->x, sizeof x);
    x[l->c] += t;
    cr_assert_eq(cnf_pre_apply(l->p, x, 1, y, NULL), CNF_OK, "%s", cnf_errmsg());
}

/* The logit + standardisation log-determinant is the sum of log derivatives (diagonal map),
 * which central differences of cnf_pre_apply reproduce (gradcheck.h; the error of log|d| is
 * err/|d|). */
Test(pre, logdet_matches_finite_differences)
{
    enum { n = 200 };
    double X[n * 4];
    pixels(X, n, 1);
    cnf_pre_config c;
    cnf_pre_config_default(&c);
    c.levels = 16;
    c.alpha = 0.05;
    cnf_pre *p;
    cr_assert_eq(cnf_pre_fit(&p, &c, X, n, 4), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_pre_dim(p), 3, "the constant column is dropped");
    for (size_t i = 0; i < 10; i++) {
        double y[3], ld, fd = 0, err = 0;
        cr_assert_eq(cnf_pre_apply(p, X + i * 4, 1, y, &ld), CNF_OK);
        const size_t kept[] = {0, 2, 3};
        for (size_t j = 0; j < 3; j++) {
            double dy[3], e[3];
            pre_line l = {p, X + i * 4, kept[j]};
            gc_diff(pre_at, &l, 3, 1e-4, dy, e);
            fd += log(fabs(dy[j]));
            err += e[j] / fabs(dy[j]);
        }
        gc_result r = gc_judge(ld, fd, err, (gc_tol){GC_EXACT_REL, 0, 1e-6});
        cr_assert(r.ok, "row %zu: logdet " GC_FMT, i, GC_ARGS(r));
    }
    double bad[4] = {17, 7, 1, 1};
    double y[3];
    cr_assert_eq(cnf_pre_apply(p, bad, 1, y, NULL), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "row 0, column 0"), "%s", cnf_errmsg());
    cnf_pre_free(p);
}

/* In data space the density of the wrapper integrates to one over [0, 16]² (2-D data with the
 * logit: midpoint rule on a 300 × 300 grid). With α = 0 the logit maps [0, 16] onto R; with
 * α > 0 onto a bounded interval, and the inner density's mass outside it is lost (FFJORD's
 * convention as well, documented in cnf/pre.h), so this check uses α = 0. */
Test(pre, density_integrates_to_one_in_data_space)
{
    enum { n = 300 };
    double X[n * 4], X2[n * 2];
    pixels(X, n, 2);
    for (size_t i = 0; i < n; i++) {
        X2[2 * i] = X[4 * i];
        X2[2 * i + 1] = X[4 * i + 2];
    }
    cnf_pre_config c;
    cnf_pre_config_default(&c);
    c.levels = 16;
    c.alpha = 0.0;
    cnf_flow *f = wrapped(&c, X2, n, 2, "realnvp");
    /* x = 16 σ(w) on a uniform grid of w ∈ [−14, 14], dx = 16 σ(w)(1 − σ(w)) dw: the edges,
     * where the logit's Jacobian is singular, are resolved. */
    enum { G = 400 };
    double *pts = malloc(G * G * 2 * sizeof(double)), *lp = malloc(G * G * sizeof(double));
    double xs[G], wt[G], hw = 28.0 / G;
    for (size_t a = 0; a < G; a++) {
        double s = 1 / (1 + exp(-(-14 + (a + 0.5) * hw)));
        xs[a] = 16 * s;
        wt[a] = 16 * s * (1 - s) * hw;
    }
    for (size_t a = 0; a < G; a++)
        for (size_t b = 0; b < G; b++) {
            pts[2 * (a * G + b)] = xs[a];
            pts[2 * (a * G + b) + 1] = xs[b];
        }
    cr_assert_eq(cnf_flow_log_prob(f, pts, G * G, lp, NULL), CNF_OK, "%s", cnf_errmsg());
    double mass = 0;
    for (size_t i = 0; i < G * G; i++)
        mass += exp(lp[i]) * wt[i / G] * wt[i % G];
    cr_assert(fabs(mass - 1) < 1e-3, "mass %.6f", mass);
    free(pts);
    free(lp);
    cnf_flow_free(f);
}

/* encode → decode gives the rows back (the constant column restored); sampled log-densities
 * agree with log_prob of the samples, with and without PCA (D > k pads the base point). */
Test(pre, round_trip_and_sample_log_densities)
{
    enum { n = 200 };
    double X[n * 4], Z[n * 4], Xr[n * 4], lde[n], ldd[n];
    pixels(X, n, 3);
    for (int pca = 0; pca <= 1; pca++) {
        cnf_pre_config c;
        cnf_pre_config_default(&c);
        c.levels = pca ? 0 : 16;
        c.pca = pca ? 2 : 0;
        cnf_flow *f = wrapped(&c, X, n, 4, "maf");
        cr_assert_eq(cnf_flow_dim(f), 4);
        cr_assert_eq(cnf_pre_is_projection(cnf_pre_flow_pre(f)), pca);
        if (!pca) {
            cr_assert_eq(cnf_flow_encode(f, X, n, Z, lde, NULL), CNF_OK, "%s", cnf_errmsg());
            cr_assert_eq(cnf_flow_decode(f, Z, n, Xr, ldd, NULL), CNF_OK, "%s", cnf_errmsg());
            for (size_t i = 0; i < n * 4; i++)
                cr_assert(fabs(Xr[i] - X[i]) < 1e-8, "element %zu: %.12g vs %.12g", i, Xr[i],
                          X[i]);
            for (size_t i = 0; i < n; i++) {
                cr_assert(fabs(lde[i] - ldd[i]) < 1e-8 + 0.5 * Z[4 * i + 3] * Z[4 * i + 3]);
                cr_assert_eq(Z[4 * i + 3], 0.0, "unused base coordinate is zero");
            }
        }
        double S[50 * 4], lps[50], lpp[50];
        cnf_rng r;
        cnf_rng_seed(&r, 11);
        cr_assert_eq(cnf_flow_sample(f, 50, &r, S, lps, NULL), CNF_OK, "%s", cnf_errmsg());
        for (size_t i = 0; i < 50; i++)
            cr_assert_eq(S[4 * i + 1], 7.0, "constant column restored");
        cr_assert_eq(cnf_flow_log_prob(f, S, 50, lpp, NULL), CNF_OK, "%s", cnf_errmsg());
        for (size_t i = 0; i < 50; i++)
            cr_assert(fabs(lps[i] - lpp[i]) < 1e-7, "pca %d sample %zu: %.10f vs %.10f", pca, i,
                      lps[i], lpp[i]);
        cnf_flow_free(f);
    }
}

/* The training loss is the data-space NLL: −mean log_prob, and its gradient is the inner
 * flow's. Model files round trip to 1e-12, and read as the inner kind elsewhere. */
Test(pre, loss_and_model_file)
{
    enum { n = 100 };
    double X[n * 4], lp[n], lp2[n];
    pixels(X, n, 4);
    cnf_pre_config c;
    cnf_pre_config_default(&c);
    c.levels = 16;
    cnf_flow *f = wrapped(&c, X, n, 4, "realnvp");
    double loss, *g = calloc(cnf_flow_n_params(f), sizeof(double));
    cr_assert_eq(cnf_flow_nll_grad(f, X, n, NULL, &loss, g, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_flow_log_prob(f, X, n, lp, NULL), CNF_OK);
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m -= lp[i] / n;
    cr_assert(fabs(m - loss) < 1e-9, "loss %.12f vs -mean log p %.12f", loss, m);
    char path[256];
    snprintf(path, sizeof path, "/tmp/cnf_test_pre_%d.safetensors", (int)getpid());
    cr_assert_eq(cnf_model_save(path, f, NULL, NULL), CNF_OK, "%s", cnf_errmsg());
    cnf_flow *h;
    cnf_st_file *file;
    cr_assert_eq(cnf_model_load(path, &h, &file), CNF_OK, "%s", cnf_errmsg());
    cr_assert_str_eq(cnf_st_meta(file, "kind"), "realnvp");
    cr_assert_str_eq(cnf_st_meta(file, "dim"), "3");
    cr_assert_not_null(cnf_pre_flow_pre(h));
    cr_assert_eq(cnf_flow_dim(h), 4);
    cr_assert_eq(cnf_flow_log_prob(h, X, n, lp2, NULL), CNF_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(lp[i] - lp2[i]) < 1e-12);
    cnf_st_free(file);
    cnf_flow_free(h);
    unlink(path);
    free(g);
    cnf_flow_free(f);
}

Test(pre, bad_configurations)
{
    double X[6] = {1, 2, 1, 2, 1, 2};
    cnf_pre_config c;
    cnf_pre_config_default(&c);
    cnf_pre *p;
    cr_assert_eq(cnf_pre_fit(&p, &c, X, 3, 2), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "constant"), "%s", cnf_errmsg());
    cr_assert_null(p);
    double Y[6] = {1, 2, 3, 4, 5, 7};
    c.pca = 3;
    cr_assert_eq(cnf_pre_fit(&p, &c, Y, 3, 2), CNF_EINVAL);
    c.pca = 0;
    c.levels = 4;
    cr_assert_eq(cnf_pre_fit(&p, &c, Y, 3, 2), CNF_EINVAL, "values beyond levels");
    cr_assert(strstr(cnf_errmsg(), "outside [0, 4]"), "%s", cnf_errmsg());
    c.levels = 0;
    cr_assert_eq(cnf_pre_fit(&p, &c, Y, 3, 2), CNF_OK);
    cnf_flow *f;
    cr_assert_eq(cnf_pre_flow_create(&f, p, inner_flow("realnvp", 3, 1)), CNF_EDIM);
    cr_assert_null(f);
}

Test(pre, early_stopping_keeps_the_best)
{
    cnf_flow *f = inner_flow("realnvp", 2, 1);
    double *th = cnf_flow_params(f);
    cnf_early_stop es;
    cr_assert_eq(cnf_early_stop_init(&es, f, 2), CNF_OK);
    const double vals[] = {3.0, 2.0, 2.5, 1.9, 2.0, 2.1};
    const int stop[] = {0, 0, 0, 0, 0, 1};
    double kept = 0;
    for (size_t i = 0; i < 6; i++) {
        th[0] = (double)i; /* a marker of which iteration the parameters are from */
        if (i == 3)
            kept = th[0];
        cr_assert_eq(cnf_early_stop_update(&es, i, vals[i]), stop[i], "update %zu", i);
    }
    cr_assert_eq(es.best_iter, 3);
    cr_assert_eq(es.best_nll, 1.9);
    cnf_early_stop_restore(&es);
    cr_assert_eq(th[0], kept);
    cnf_early_stop_free(&es);
    cnf_flow_free(f);
}
