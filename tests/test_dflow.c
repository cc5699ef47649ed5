/* Discrete flows (issue 6): for every layer type at d = 2 and d = 6, the inverse round trip,
 * log|det J| against the LU log-determinant of a finite-difference Jacobian, and input and
 * parameter gradients against central differences along random directions; the same gradient
 * check for every stack through the flow interface; the worked examples; no NaN far outside the
 * training range; named errors for bad configurations; ActNorm's data-dependent initialisation;
 * and a small RealNVP trained on moons beating a fitted Gaussian on held-out data. */
#include <criterion/criterion.h>
#include <gsl/gsl_linalg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/toy.h"
#include "cnf/dflow.h"
#include "cnf/optim.h"
#include "gradcheck.h"

static const size_t HID[] = {8};
enum { NROWS = 5 };

static void randn(cnf_rng *r, double *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = scale * cnf_rng_normal(r);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* An exact gradient against gradcheck.h's differences: at most
 * 1e-6 max(1, |analytic|) apart. */
static const gc_tol EXACT = {.rel = GC_EXACT_REL, .cap_rel = 1e-6, .cap_abs = 1e-6};
/* Steps 6e-5, 3e-5, 1.5e-5: a step across a spline knot (f'' jumps there) inflates the error
 * estimate; at 1e-4 one check's bound came to 0.6 of the cap, at 3e-5 all are below 0.005. */
static const double H = 3e-5;

static cnf_dflow_layer_config layer_config(const char *type, size_t d, int parity)
{
    cnf_dflow_layer_config c = {.type = type, .dim = d, .parity = parity, .n_hidden = 1,
                                .hidden = HID, .act = CNF_ACT_TANH, .bins = 5, .bound = 3.0,
                                .scale_bound = 2.0, .bn_momentum = 0.1, .bn_eps = 1e-5};
    return c;
}

typedef struct {
    cnf_dflow_layer *l;
    double *theta;
    size_t np, d;
} layer_fx;

/* A layer with random, non-trivial parameters (every parameter matters). */
static layer_fx make_layer(const char *type, size_t d, int parity, cnf_rng *rng)
{
    layer_fx f = {.d = d};
    cnf_dflow_layer_config c = layer_config(type, d, parity);
    cr_assert_eq(cnf_dflow_layer_create(&f.l, &c), CNF_OK, "%s: %s", type, cnf_errmsg());
    f.np = cnf_dflow_layer_n_params(f.l);
    f.theta = calloc(f.np + 1, sizeof(double));
    cnf_dflow_layer_init(f.l, f.theta, rng);
    for (size_t k = 0; k < f.np; k++)
        f.theta[k] += 0.4 * cnf_rng_normal(rng);
    if (!strcmp(type, "batchnorm")) /* running variance must stay positive */
        for (size_t j = 0; j < d; j++)
            f.theta[3 * d + j] = 0.5 + fabs(f.theta[3 * d + j]);
    return f;
}

static void free_layer(layer_fx *f)
{
    cnf_dflow_layer_free(f->l);
    free(f->theta);
}

/* φ(t) = Σ GY·Y + Σ GL·logdet of the layer's forward at X + t vx, θ + t vt (vx, vt may be
 * NULL). */
typedef struct {
    layer_fx *f;
    const double *X, *vx, *vt, *GY, *GL;
    int train;
} layer_line;

static double layer_phi(void *ctx, double t)
{
    layer_line *a = ctx;
    const size_t d = a->f->d, np = a->f->np;
    double X[NROWS * 6], Y[NROWS * 6], ld[NROWS] = {0}, *th = malloc((np + 1) * sizeof *th);
    for (size_t k = 0; k < NROWS * d; k++)
        X[k] = a->X[k] + (a->vx ? t * a->vx[k] : 0.0);
    for (size_t k = 0; k < np; k++)
        th[k] = a->f->theta[k] + (a->vt ? t * a->vt[k] : 0.0);
    cr_assert_eq(cnf_dflow_layer_forward(a->f->l, th, X, NROWS, Y, ld, a->train), CNF_OK, "%s",
                 cnf_errmsg());
    free(th);
    return dot(a->GY, Y, NROWS * d) + dot(a->GL, ld, NROWS);
}

/* The layer's forward output of one row x + t·dir. */
typedef struct {
    layer_fx *f;
    const double *x, *dir;
} row_line;

static void row_at(void *ctx, double t, double *y)
{
    const row_line *l = ctx;
    double x[6];
    for (size_t k = 0; k < l->f->d; k++)
        x[k] = l->x[k] + t * l->dir[k];
    cr_assert_eq(cnf_dflow_layer_forward(l->f->l, l->f->theta, x, 1, y, NULL, 0), CNF_OK);
}

static void check_layer(const char *type, size_t d, int parity, uint64_t seed)
{
    cnf_rng rng;
    cnf_rng_seed(&rng, seed);
    layer_fx f = make_layer(type, d, parity, &rng);
    const size_t nd = NROWS * d;
    double X[NROWS * 6], Y[NROWS * 6], X2[NROWS * 6], ld[NROWS] = {0}, ld2[NROWS] = {0};
    randn(&rng, X, nd, 1.2);

    /* 1. inverse(forward(x)) = x, and the inverse reports the same log-determinant. */
    cr_assert_eq(cnf_dflow_layer_forward(f.l, f.theta, X, NROWS, Y, ld, 0), CNF_OK, "%s",
                 cnf_errmsg());
    cr_assert_eq(cnf_dflow_layer_inverse(f.l, f.theta, Y, NROWS, X2, ld2), CNF_OK, "%s",
                 cnf_errmsg());
    for (size_t k = 0; k < nd; k++)
        cr_assert(fabs(X2[k] - X[k]) <= 1e-10 * (1.0 + fabs(X[k])), "%s d=%zu: x %g vs %g",
                  type, d, X2[k], X[k]);
    for (size_t i = 0; i < NROWS; i++)
        cr_assert(fabs(ld2[i] - ld[i]) <= 1e-10 * (1.0 + fabs(ld[i])), "%s: logdet %g vs %g",
                  type, ld2[i], ld[i]);

    /* 2. log|det J| against GSL's LU log-determinant of the central-difference Jacobian; its
     * error from the entries' errors E: |δ log|det J|| = |tr(J⁻¹ δJ)| ≤ Σ |J⁻¹|ᵀ ∘ E. */
    gsl_matrix *J = gsl_matrix_alloc(d, d), *Ji = gsl_matrix_alloc(d, d);
    gsl_permutation *p = gsl_permutation_alloc(d);
    for (size_t i = 0; i < NROWS; i++) {
        double E[6 * 6], col[6], ce[6];
        for (size_t j = 0; j < d; j++) {
            double e[6] = {0};
            e[j] = 1;
            row_line l = {&f, X + i * d, e};
            gc_diff(row_at, &l, d, 1e-5, col, ce);
            for (size_t r = 0; r < d; r++) {
                gsl_matrix_set(J, r, j, col[r]);
                E[r * d + j] = ce[r];
            }
        }
        int sg;
        gsl_linalg_LU_decomp(J, p, &sg);
        double lnd = gsl_linalg_LU_lndet(J), err = 0;
        gsl_linalg_LU_invert(J, p, Ji);
        for (size_t r = 0; r < d; r++)
            for (size_t c = 0; c < d; c++)
                err += fabs(gsl_matrix_get(Ji, c, r)) * E[r * d + c];
        gc_result res = gc_judge(ld[i], lnd, err, (gc_tol){GC_EXACT_REL, 0, 1e-6});
        cr_assert(res.ok, "%s d=%zu row %zu: logdet " GC_FMT, type, d, i, GC_ARGS(res));
    }
    gsl_matrix_free(J);
    gsl_matrix_free(Ji);
    gsl_permutation_free(p);

    /* 3. Gradients of φ = Σ GY·Y + Σ GL·logdet w.r.t. X and θ along random directions, with
     * evaluation (train 0) and batch statistics (train 1). */
    for (int train = 0; train <= 1; train++) {
        double GY[NROWS * 6], GL[NROWS], GX[NROWS * 6] = {0}, vx[NROWS * 6];
        randn(&rng, GY, nd, 1.0);
        randn(&rng, GL, NROWS, 1.0);
        randn(&rng, vx, nd, 1.0);
        double *gth = calloc(f.np + 1, sizeof(double)), *vt = calloc(f.np + 1, sizeof(double));
        randn(&rng, vt, f.np, 1.0);
        cr_assert_eq(cnf_dflow_layer_backward(f.l, f.theta, X, NROWS, GY, GL, GX, gth, train),
                     CNF_OK, "%s", cnf_errmsg());
        layer_line lx = {&f, X, vx, NULL, GY, GL, train}, lt = {&f, X, NULL, vt, GY, GL, train};
        gc_result r = gc_check1(layer_phi, &lx, H, dot(GX, vx, nd), EXACT);
        cr_assert(r.ok, "%s d=%zu train=%d: dφ/dx·v " GC_FMT, type, d, train, GC_ARGS(r));
        if (f.np) {
            r = gc_check1(layer_phi, &lt, H, dot(gth, vt, f.np), EXACT);
            cr_assert(r.ok, "%s d=%zu train=%d: dφ/dθ·v " GC_FMT, type, d, train, GC_ARGS(r));
        }
        free(gth);
        free(vt);
    }
    free_layer(&f);
}

Test(dflow_layer, every_type_d2_and_d6)
{
    for (size_t t = 0; t < cnf_dflow_layer_type_count(); t++) {
        const char *type = cnf_dflow_layer_type_at(t);
        check_layer(type, 2, 0, 100 + t);
        check_layer(type, 2, 1, 200 + t);
        check_layer(type, 6, 0, 300 + t);
        check_layer(type, 6, 1, 400 + t);
    }
    cr_assert_null(cnf_dflow_layer_type_at(cnf_dflow_layer_type_count()));
}

/* ---- stacks through the flow interface ------------------------------------------------------- */

static cnf_flow *make_stack(const char *kind, size_t d, int bn, uint64_t seed, double perturb)
{
    cnf_rng rng;
    cnf_rng_seed(&rng, seed);
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, kind, d);
    c.layers = 3;
    c.hidden = HID;
    c.bins = 5;
    c.bound = 3.0;
    c.batchnorm = bn;
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, &rng), CNF_OK, "%s: %s", kind, cnf_errmsg());
    cr_assert_str_eq(cnf_flow_kind(f), kind);
    double *th = cnf_flow_params(f);
    for (size_t k = 0; k < cnf_flow_n_params(f); k++)
        th[k] += perturb * cnf_rng_normal(&rng);
    /* Keep batch-norm running variances positive. */
    size_t off;
    for (size_t l = 0; l < cnf_dflow_n_layers(f); l++) {
        cnf_dflow_layer *ly = cnf_dflow_layer_at(f, l, &off);
        if (!strcmp(cnf_dflow_layer_type(ly), "batchnorm"))
            for (size_t j = 0; j < d; j++)
                th[off + 3 * d + j] = 0.5 + fabs(th[off + 3 * d + j]);
    }
    return f;
}

/* The loss at X + t vx with θ + t vt (θ restored afterwards). */
typedef struct {
    cnf_flow *f;
    const double *X;
    size_t n;
    const double *vx, *vt;
} stack_line;

static double stack_loss(void *ctx, double t)
{
    stack_line *a = ctx;
    const size_t d = cnf_flow_dim(a->f), np = cnf_flow_n_params(a->f);
    double *th = cnf_flow_params(a->f), *X = malloc(a->n * d * sizeof *X), loss;
    double *t0 = malloc((np + 1) * sizeof *t0);
    memcpy(t0, th, np * sizeof *t0);
    for (size_t k = 0; k < a->n * d; k++)
        X[k] = a->X[k] + (a->vx ? t * a->vx[k] : 0.0);
    for (size_t k = 0; a->vt && k < np; k++)
        th[k] += t * a->vt[k];
    cr_assert_eq(cnf_flow_loss(a->f, X, a->n, NULL, &loss, NULL), CNF_OK, "%s", cnf_errmsg());
    memcpy(th, t0, np * sizeof *t0);
    free(t0);
    free(X);
    return loss;
}

static void check_stack(const char *kind, size_t d, int bn, uint64_t seed)
{
    cnf_flow *f = make_stack(kind, d, bn, seed, 0.3);
    cnf_rng rng;
    cnf_rng_seed(&rng, seed + 1);
    enum { N = 7 };
    const size_t nd = N * d, np = cnf_flow_n_params(f);
    double X[N * 6], Z[N * 6], X2[N * 6], ld[N], ld2[N], gx[N * 6], vx[N * 6];
    randn(&rng, X, nd, 1.0);
    /* encode/decode round trip and consistent logdet */
    cr_assert_eq(cnf_flow_encode(f, X, N, Z, ld, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_flow_decode(f, Z, N, X2, ld2, NULL), CNF_OK, "%s", cnf_errmsg());
    for (size_t k = 0; k < nd; k++)
        cr_assert(fabs(X2[k] - X[k]) < 1e-9 * (1.0 + fabs(X[k])), "%s: round trip %g vs %g",
                  kind, X2[k], X[k]);
    for (size_t i = 0; i < N; i++)
        cr_assert(fabs(ld2[i] - ld[i]) < 1e-9 * (1.0 + fabs(ld[i])), "%s: logdet", kind);

    /* nll_grad against central differences of the loss, θ and X directions. */
    double loss, *g = calloc(np, sizeof(double)), *vt = calloc(np, sizeof(double));
    cr_assert_eq(cnf_flow_nll_grad_x(f, X, N, NULL, &loss, g, gx, NULL), CNF_OK, "%s: %s", kind,
                 cnf_errmsg());
    randn(&rng, vt, np, 1.0);
    randn(&rng, vx, nd, 1.0);
    stack_line lt = {f, X, N, NULL, vt}, lx = {f, X, N, vx, NULL};
    gc_result r = gc_check1(stack_loss, &lt, H, dot(g, vt, np), EXACT);
    cr_assert(r.ok, "%s d=%zu: dL/dθ·v " GC_FMT, kind, d, GC_ARGS(r));
    r = gc_check1(stack_loss, &lx, H, dot(gx, vx, nd), EXACT);
    cr_assert(r.ok, "%s d=%zu: dL/dx·v " GC_FMT, kind, d, GC_ARGS(r));
    /* Rebuilt from its configuration with another rng and the same θ: the same flow. */
    cnf_flow *f2;
    cnf_rng other;
    cnf_rng_seed(&other, seed + 99);
    const cnf_dflow_config *cfg = cnf_dflow_get_config(f);
    cr_assert_not_null(cfg);
    cr_assert_str_eq(cfg->kind, kind);
    cr_assert_eq(cnf_dflow_create(&f2, cfg, &other), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_flow_n_params(f2), np);
    memcpy(cnf_flow_params(f2), cnf_flow_params(f), np * sizeof(double));
    double lp1[N], lp2[N];
    cr_assert_eq(cnf_flow_log_prob(f, X, N, lp1, NULL), CNF_OK);
    cr_assert_eq(cnf_flow_log_prob(f2, X, N, lp2, NULL), CNF_OK);
    cr_assert_arr_eq(lp1, lp2, sizeof lp1, "%s: rebuilt flow differs", kind);
    cnf_flow_free(f2);
    free(g);
    free(vt);
    cnf_flow_free(f);
}

Test(dflow_stack, every_kind_gradients_and_round_trip)
{
    for (size_t k = 0; k < cnf_dflow_kind_count(); k++) {
        const char *kind = cnf_dflow_kind_at(k);
        check_stack(kind, 2, 0, 10 + k);
        check_stack(kind, 6, 0, 20 + k);
    }
    check_stack("realnvp", 2, 1, 31);
    check_stack("maf", 6, 1, 32);
}

/* ---- the worked examples (DESIGN.md §3, issue 6 point 2) ------------------------------------- */

Test(dflow_examples, affine_coupling)
{
    /* Network weights zero, output bias = (s̃, t) with c·tanh(s̃/c) = 0.5 and t = 2. */
    cnf_dflow_layer_config c = layer_config("affine", 2, 0);
    cnf_dflow_layer *l;
    cr_assert_eq(cnf_dflow_layer_create(&l, &c), CNF_OK);
    size_t np = cnf_dflow_layer_n_params(l);
    double *th = calloc(np, sizeof(double));
    th[np - 2] = c.scale_bound * atanh(0.5 / c.scale_bound);
    th[np - 1] = 2.0;
    double x[2] = {1.0, 3.0}, y[2], ld = 0.0;
    cr_assert_eq(cnf_dflow_layer_forward(l, th, x, 1, y, &ld, 0), CNF_OK);
    cr_assert_float_eq(y[0], 1.0, 1e-12);
    cr_assert_float_eq(y[1], 6.946164, 1e-6);
    cr_assert_float_eq(ld, 0.5, 1e-12);
    free(th);
    cnf_dflow_layer_free(l);
}

Test(dflow_examples, planar)
{
    /* The example's u is the constrained û (wᵀû = 1 > −1); the raw u that gives it is
     * u = û + (σ − wᵀû) w/||w||² with m(σ) = wᵀû, σ = log(e^{1 + wᵀû} − 1). The log-determinant
     * is that of the forward map at its input z. */
    cnf_dflow_layer_config c = layer_config("planar", 2, 0);
    cnf_dflow_layer *l;
    cr_assert_eq(cnf_dflow_layer_create(&l, &c), CNF_OK);
    double uh[2] = {1.0, 0.0}, w[2] = {1.0, 2.0}, wuh = 1.0, ww = 5.0;
    double sig = log(exp(1.0 + wuh) - 1.0);
    double th[5] = {uh[0] + (sig - wuh) * w[0] / ww, uh[1] + (sig - wuh) * w[1] / ww, w[0], w[1],
                    0.0};
    double z[2] = {0.5, -0.5}, y[2], ld = 0.0;
    cr_assert_eq(cnf_dflow_layer_forward(l, th, z, 1, y, &ld, 0), CNF_OK);
    cr_assert_float_eq(ld, 0.580229, 1e-6);
    cr_assert_float_eq(y[0], 0.5 + tanh(-0.5), 1e-12); /* û = (1, 0) really */
    cr_assert_float_eq(y[1], -0.5, 1e-12);
    cnf_dflow_layer_free(l);
}

Test(dflow_examples, lu_linear_32x32)
{
    /* 3 channels at 32×32 positions: each position is a row; diag(U) = exp(s) = (2, 0.5, 0.8). */
    cnf_dflow_layer_config c = layer_config("lu", 3, 0);
    cnf_dflow_layer *l;
    cr_assert_eq(cnf_dflow_layer_create(&l, &c), CNF_OK);
    size_t np = cnf_dflow_layer_n_params(l);
    cr_assert_eq(np, 9u);
    cnf_rng rng;
    cnf_rng_seed(&rng, 5);
    double th[9];
    randn(&rng, th, 6, 0.5); /* L and U arbitrary */
    th[6] = log(2.0);
    th[7] = log(0.5);
    th[8] = log(0.8);
    enum { P = 32 * 32 };
    double *X = malloc(P * 3 * sizeof(double)), *Y = malloc(P * 3 * sizeof(double));
    double *ld = calloc(P, sizeof(double));
    randn(&rng, X, P * 3, 1.0);
    cr_assert_eq(cnf_dflow_layer_forward(l, th, X, P, Y, ld, 0), CNF_OK);
    double total = 0.0;
    for (size_t i = 0; i < P; i++)
        total += ld[i];
    cr_assert(fabs(total - (-228.499)) < 5e-4, "total logdet %.6f", total);
    free(X);
    free(Y);
    free(ld);
    cnf_dflow_layer_free(l);
}

/* ---- no NaN far outside the training range (issue 6 point 5) --------------------------------- */

Test(dflow_far, spline_and_couplings_at_1e3)
{
    const char *kinds[] = {"nsf", "realnvp", "nice", "glow"};
    for (size_t k = 0; k < 4; k++) {
        for (size_t d = 2; d <= 6; d += 4) {
            cnf_flow *f = make_stack(kinds[k], d, 0, 40 + k, 1.0);
            enum { N = 4 };
            double X[N * 6], Z[N * 6], X2[N * 6], ld[N], logp[N], gx[N * 6];
            const double far[N] = {1e3, -1e3, 1e3, -1e3};
            for (size_t i = 0; i < N; i++)
                for (size_t j = 0; j < d; j++)
                    X[i * d + j] = (i + j) % 2 ? far[i] : 0.3 * (double)j - 0.5;
            X[0] = 1e3; /* one row with every conditioning input far out too */
            for (size_t j = 0; j < d; j++)
                X[j] = j % 2 ? -1e3 : 1e3;
            cr_assert_eq(cnf_flow_encode(f, X, N, Z, ld, NULL), CNF_OK, "%s", cnf_errmsg());
            cr_assert_eq(cnf_flow_log_prob(f, X, N, logp, NULL), CNF_OK, "%s", cnf_errmsg());
            for (size_t i = 0; i < N; i++) {
                cr_assert(isfinite(ld[i]) && isfinite(logp[i]), "%s: row %zu", kinds[k], i);
                for (size_t j = 0; j < d; j++)
                    cr_assert(isfinite(Z[i * d + j]), "%s: z not finite", kinds[k]);
            }
            cr_assert_eq(cnf_flow_decode(f, X, N, X2, ld, NULL), CNF_OK, "%s", cnf_errmsg());
            for (size_t q = 0; q < N * d; q++)
                cr_assert(isfinite(X2[q]), "%s: decode not finite", kinds[k]);
            double loss, *g = calloc(cnf_flow_n_params(f), sizeof(double));
            cr_assert_eq(cnf_flow_nll_grad_x(f, X, N, NULL, &loss, g, gx, NULL), CNF_OK, "%s: %s",
                         kinds[k], cnf_errmsg());
            for (size_t q = 0; q < cnf_flow_n_params(f); q++)
                cr_assert(isfinite(g[q]), "%s: gradient not finite", kinds[k]);
            free(g);
            cnf_flow_free(f);
        }
    }
}

/* ---- ActNorm's data-dependent initialisation ------------------------------------------------- */

Test(dflow_actnorm, data_init_on_first_loss_only)
{
    cnf_rng rng;
    cnf_rng_seed(&rng, 9);
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, "glow", 2);
    c.layers = 1;
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, &rng), CNF_OK);
    enum { N = 64 };
    double X[N * 2], Y[N * 2], loss;
    for (size_t i = 0; i < N; i++) {
        X[2 * i] = 3.0 + 2.0 * cnf_rng_normal(&rng);
        X[2 * i + 1] = -1.0 + 0.5 * cnf_rng_normal(&rng);
    }
    size_t off;
    cnf_dflow_layer *an = cnf_dflow_layer_at(f, 0, &off);
    cr_assert_str_eq(cnf_dflow_layer_type(an), "actnorm");
    double *th = cnf_flow_params(f) + off;
    /* encode does not initialise */
    double Z[N * 2];
    cr_assert_eq(cnf_flow_encode(f, X, N, Z, NULL, NULL), CNF_OK);
    for (size_t j = 0; j < 4; j++)
        cr_assert_eq(th[j], 0.0);
    cr_assert_eq(cnf_flow_loss(f, X, N, NULL, &loss, NULL), CNF_OK);
    cr_assert_eq(cnf_dflow_layer_forward(an, th, X, N, Y, NULL, 0), CNF_OK);
    for (size_t j = 0; j < 2; j++) {
        double m = 0.0, v = 0.0;
        for (size_t i = 0; i < N; i++)
            m += Y[2 * i + j] / N;
        for (size_t i = 0; i < N; i++)
            v += (Y[2 * i + j] - m) * (Y[2 * i + j] - m) / N;
        cr_assert(fabs(m) < 1e-12 && fabs(v - 1.0) < 1e-9, "dim %zu: mean %g var %g", j, m, v);
    }
    /* a second batch does not re-initialise */
    double saved[4];
    memcpy(saved, th, sizeof saved);
    for (size_t i = 0; i < 2 * N; i++)
        X[i] *= 3.0;
    cr_assert_eq(cnf_flow_loss(f, X, N, NULL, &loss, NULL), CNF_OK);
    cr_assert_arr_eq(saved, th, sizeof saved);
    cnf_flow_free(f);
}

/* ---- bad configurations ---------------------------------------------------------------------- */

static void expect_stack_error(cnf_dflow_config c, int code, const char *needle)
{
    cnf_rng rng;
    cnf_rng_seed(&rng, 1);
    cnf_flow *f = (cnf_flow *)&rng; /* must be set to NULL */
    cr_assert_eq(cnf_dflow_create(&f, &c, &rng), code, "%s: %s", c.kind ? c.kind : "(null)",
                 cnf_errmsg());
    cr_assert_null(f);
    cr_assert(strstr(cnf_errmsg(), needle), "message '%s' lacks '%s'", cnf_errmsg(), needle);
}

Test(dflow_errors, bad_configurations_are_named)
{
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, "flowy", 2);
    expect_stack_error(c, CNF_ENAME, "realnvp");
    cnf_dflow_config_default(&c, "realnvp", 1);
    expect_stack_error(c, CNF_EINVAL, "dimension");
    cnf_dflow_config_default(&c, "nsf", 2);
    c.bins = 1;
    expect_stack_error(c, CNF_EINVAL, "bins");
    cnf_dflow_config_default(&c, "nsf", 2);
    c.bound = -1.0;
    expect_stack_error(c, CNF_EINVAL, "bound");
    cnf_dflow_config_default(&c, "realnvp", 2);
    c.scale_bound = 0.0;
    expect_stack_error(c, CNF_EINVAL, "scale_bound");
    cnf_dflow_config_default(&c, "maf", 2);
    c.layers = 0;
    expect_stack_error(c, CNF_EINVAL, "layers");
    static const size_t zero[] = {0};
    cnf_dflow_config_default(&c, "glow", 2);
    c.hidden = zero;
    expect_stack_error(c, CNF_EINVAL, "width");
    cnf_dflow_config_default(&c, "realnvp", 2);
    c.batchnorm = 1;
    c.bn_momentum = 2.0;
    expect_stack_error(c, CNF_EINVAL, "momentum");
    cnf_dflow_config_default(&c, "planar", 0);
    expect_stack_error(c, CNF_EINVAL, "dimension is 0");

    cnf_dflow_config_default(&c, "planar", 2);
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, NULL), CNF_EINVAL);
    cr_assert_null(f);

    cnf_dflow_layer *l = (cnf_dflow_layer *)&c;
    cnf_dflow_layer_config lc = layer_config("nope", 2, 0);
    cr_assert_eq(cnf_dflow_layer_create(&l, &lc), CNF_ENAME);
    cr_assert_null(l);
    cr_assert(strstr(cnf_errmsg(), "spline"));
    lc = layer_config("affine", 4, 2);
    cr_assert_eq(cnf_dflow_layer_create(&l, &lc), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "parity"));
    cnf_dflow_layer_free(NULL);
    cnf_flow_free(NULL);
}

/* ---- a small RealNVP on moons beats a fitted Gaussian (issue 6 point 3, library side) -------- */

static double gaussian_nll(const double *train, size_t n, const double *test, size_t m)
{
    double mu[2] = {0, 0}, S[3] = {0, 0, 0};
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < 2; j++)
            mu[j] += train[2 * i + j] / (double)n;
    for (size_t i = 0; i < n; i++) {
        double a = train[2 * i] - mu[0], b = train[2 * i + 1] - mu[1];
        S[0] += a * a / (double)n;
        S[1] += a * b / (double)n;
        S[2] += b * b / (double)n;
    }
    double det = S[0] * S[2] - S[1] * S[1], nll = 0.0;
    for (size_t i = 0; i < m; i++) {
        double a = test[2 * i] - mu[0], b = test[2 * i + 1] - mu[1];
        double q = (S[2] * a * a - 2.0 * S[1] * a * b + S[0] * b * b) / det;
        nll += 0.5 * q + 0.5 * log(det) + log(2.0 * M_PI);
    }
    return nll / (double)m;
}

Test(dflow_train, realnvp_on_moons_beats_gaussian, .timeout = 60)
{
    cnf_rng rng;
    cnf_rng_seed(&rng, 2024);
    enum { NTRAIN = 4096, NTEST = 2000, B = 128, STEPS = 500 };
    double *train = malloc(NTRAIN * 2 * sizeof(double)), *test = malloc(NTEST * 2 * sizeof(double));
    cr_assert_eq(cnf_toy_sample_named("moons", NTRAIN, train, &rng), CNF_OK);
    cr_assert_eq(cnf_toy_sample_named("moons", NTEST, test, &rng), CNF_OK);
    static const size_t hid[] = {32, 32};
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, "realnvp", 2);
    c.layers = 6;
    c.n_hidden = 2;
    c.hidden = hid;
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, &rng), CNF_OK);
    const size_t np = cnf_flow_n_params(f);
    cnf_optim_settings os;
    cnf_optim_settings_default(&os, CNF_OPTIM_ADAM);
    os.lr = 5e-3;
    cnf_optim *opt;
    cr_assert_eq(cnf_optim_create(&os, np, &opt), CNF_OK);
    double *g = malloc(np * sizeof(double)), loss;
    for (size_t s = 0; s < STEPS; s++) {
        size_t start = (s * B) % (NTRAIN - B);
        cr_assert_eq(cnf_flow_nll_grad(f, train + 2 * start, B, NULL, &loss, g, NULL), CNF_OK,
                     "%s", cnf_errmsg());
        cr_assert_eq(cnf_optim_step(opt, cnf_flow_params(f), g), CNF_OK);
    }
    double *logp = malloc(NTEST * sizeof(double)), nll = 0.0;
    cr_assert_eq(cnf_flow_log_prob(f, test, NTEST, logp, NULL), CNF_OK);
    for (size_t i = 0; i < NTEST; i++)
        nll -= logp[i] / NTEST;
    double gauss = gaussian_nll(train, NTRAIN, test, NTEST);
    cr_log_info("moons held-out NLL: realnvp %.4f, fitted Gaussian %.4f", nll, gauss);
    cr_assert(nll < gauss - 0.1, "realnvp %.4f vs Gaussian %.4f", nll, gauss);
    free(g);
    free(logp);
    free(train);
    free(test);
    cnf_optim_free(opt);
    cnf_flow_free(f);
}
