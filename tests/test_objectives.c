/* The two other objectives: reverse KL to an unnormalized target (targets, their normalisers,
 * gradients through the samples) and conditional flow matching (loss gradient, the optimal
 * assignment, and the closed-form optimal field on a Gaussian). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf.h"
#include "../examples/fm_gaussian.h"
#include "gradcheck.h"

/* log q̃ of a target at x with coordinate j moved by t. */
typedef struct {
    cnf_target *t;
    double *x;
    size_t j;
} target_line;

static double target_at(void *ctx, double s)
{
    target_line *l = ctx;
    double keep = l->x[l->j], lq;
    l->x[l->j] = keep + s;
    cnf_target_logq(l->t, l->x, 1, &lq, NULL);
    l->x[l->j] = keep;
    return lq;
}

Test(target, gradients_match_finite_differences)
{
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    for (size_t k = 0; k < cnf_target_count(); k++) {
        cnf_target *t;
        cr_assert_eq(cnf_target_create(cnf_target_at(k), &t), CNF_OK);
        size_t d = cnf_target_dim(t);
        double x[10], g[10], lq;
        for (int trial = 0; trial < 5; trial++) {
            for (size_t j = 0; j < d; j++)
                x[j] = 1.5 * cnf_rng_normal(&r);
            cnf_target_logq(t, x, 1, &lq, g);
            for (size_t j = 0; j < d; j++) {
                target_line l = {t, x, j};
                gc_result res = gc_check1(target_at, &l, 1e-4, g[j],
                                          (gc_tol){GC_EXACT_REL, 1e-6, 1e-6});
                cr_assert(res.ok, "%s: d/dx%zu " GC_FMT, cnf_target_at(k), j, GC_ARGS(res));
            }
        }
        cnf_target_free(t);
    }
    cnf_target *t;
    cr_assert_eq(cnf_target_create("volcano", &t), CNF_ENAME);
}

/* The closed-form normalisers of the 2-D targets against a quadrature of their own. */
Test(target, log_z_closed_forms)
{
    const char *names[] = {"banana", "ring", "mixture"};
    for (size_t k = 0; k < 3; k++) {
        cnf_target *t;
        cnf_target_create(names[k], &t);
        /* The banana reaches x₂ ≈ x₁²/4: a tall box. Cells of 0.02. */
        const double h = 0.02, x0 = -14, y0 = -14, y1 = 64;
        const int nx = (int)(28 / h), ny = (int)((y1 - y0) / h);
        double s = 0;
        for (int i = 0; i < nx; i++)
            for (int j = 0; j < ny; j++) {
                double x[2] = {x0 + (i + 0.5) * h, y0 + (j + 0.5) * h}, lq;
                cnf_target_logq(t, x, 1, &lq, NULL);
                s += exp(lq) * h * h;
            }
        cr_assert(fabs(log(s) - cnf_target_log_z(t)) < 1e-6, "%s: quadrature %.8f, closed %.8f",
                  names[k], log(s), cnf_target_log_z(t));
        cnf_target_free(t);
    }
}

static cnf_flow *small_cnf(size_t d, uint64_t seed, int train_T)
{
    static const size_t hidden[] = {8, 8};
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, d);
    cfg.hidden = hidden;
    cfg.n_hidden = 2;
    cfg.T = 0.9;
    cfg.train_T = train_T;
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    cnf_flow *f;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK);
    double *th = cnf_flow_params(f);
    for (size_t i = 0; i < cnf_flow_n_params(f) - (train_T ? 1 : 0); i++)
        th[i] *= 1.5;
    return f;
}

typedef int (*objective_fn)(cnf_flow *f, void *ctx, cnf_rng *rng, double *loss, double *grad);

/* An objective's loss at the flow's parameters, with the same randomness every time. */
typedef struct {
    cnf_flow *f;
    objective_fn obj;
    void *ctx;
    const cnf_rng *r0;
} objective_at;

static double objective_eval(void *ctx)
{
    const objective_at *a = ctx;
    cnf_rng r = *a->r0;
    double v;
    cr_assert_eq(a->obj(a->f, a->ctx, &r, &v, NULL), CNF_OK, "%s", cnf_errmsg());
    return v;
}

static int rkl_obj(cnf_flow *f, void *ctx, cnf_rng *rng, double *loss, double *grad)
{
    return cnf_flow_rkl_grad(f, 6, rng, cnf_target_logq, ctx, loss, grad, NULL);
}

/* An exact gradient of an objective against central differences along a random direction
 * (gradcheck.h, steps 2·fd_h, fd_h, fd_h/2), at most tol relative apart. */
static void check_gradient(cnf_flow *f, objective_fn obj, void *ctx, double fd_h, double tol,
                           const char *what)
{
    size_t P = cnf_flow_n_params(f);
    double *g = malloc(P * sizeof(double)), *dir = malloc(P * sizeof(double)), loss;
    cnf_rng r;
    cnf_rng_seed(&r, 77);
    for (size_t i = 0; i < P; i++)
        dir[i] = cnf_rng_normal(&r);
    const cnf_rng r0 = r;
    cnf_rng rr = r0;
    cr_assert_eq(obj(f, ctx, &rr, &loss, g), CNF_OK, "%s", cnf_errmsg());
    objective_at a = {f, obj, ctx, &r0};
    gc_result res = gc_check_vec(cnf_flow_params(f), dir, P, objective_eval, &a, fd_h, g,
                                 (gc_tol){GC_EXACT_REL, tol, 0});
    cr_assert(res.ok, "%s: " GC_FMT, what, GC_ARGS(res));
    free(g);
    free(dir);
}

/* Reverse-KL gradients through the samples, for every gradient mode, against FD of the same
 * discretisation (backprop) or of a tight solve (adjoints). */
Test(rkl, gradients_match_finite_differences)
{
    const char *targets[] = {"banana", "funnel"};
    for (size_t k = 0; k < 2; k++) {
        cnf_target *t;
        cnf_target_create(targets[k], &t);
        cnf_flow *f = small_cnf(cnf_target_dim(t), 3 + k, 1);
        cnf_cflow_config *s = cnf_cflow_settings(f);
        s->reg_kinetic = 0.05;
        s->trace = k ? CNF_TRACE_HUTCH_RADEMACHER : CNF_TRACE_EXACT;
        s->grad = CNF_GRAD_BACKPROP;
        s->train.stepper = cnf_stepper_rk4;
        s->train.opt.steps = 10;
        check_gradient(f, rkl_obj, t, 1e-3, 1e-6, "reverse KL, backprop rk4");
        s->train.stepper = cnf_stepper_dopri5;
        s->train.opt.rtol = s->train.opt.atol = 1e-12;
        size_t P = cnf_flow_n_params(f);
        double *g1 = malloc(P * sizeof(double)), *g2 = malloc(P * sizeof(double)), loss;
        /* Adjoint (built-in and CVODES) at 1e-10 against backprop at 1e-12: both approximate
         * the gradient of the exact flow. */
        cnf_rng r;
        cnf_rng_seed(&r, 5);
        cnf_rng r0 = r;
        cr_assert_eq(cnf_flow_rkl_grad(f, 6, &r, cnf_target_logq, t, &loss, g1, NULL), CNF_OK);
        for (int cv = 0; cv < 2; cv++) {
            s->grad = CNF_GRAD_ADJOINT;
            s->train.stepper = cv ? cnf_stepper_cvode_adams : cnf_stepper_dopri5;
            s->train.opt.rtol = s->train.opt.atol = 1e-10;
            r = r0;
            cr_assert_eq(cnf_flow_rkl_grad(f, 6, &r, cnf_target_logq, t, &loss, g2, NULL),
                         CNF_OK, "%s", cnf_errmsg());
            double num = 0, den = 0;
            for (size_t i = 0; i < P; i++) {
                num += (g1[i] - g2[i]) * (g1[i] - g2[i]);
                den += g1[i] * g1[i];
            }
            cr_assert(sqrt(num / den) <= 1e-5, "%s adjoint (%s): relative difference %g",
                      targets[k], cv ? "cvodes" : "dopri5", sqrt(num / den));
        }
        free(g1);
        free(g2);
        cnf_flow_free(f);
        cnf_target_free(t);
    }
}

/* Importance sampling with a proposal equal to the target gives log Z exactly and ESS 1: a CNF
 * with a zero field is the standard normal, and so is the target 'gaussian' built here. */
static int std_normal_logq(void *ctx, const double *X, size_t n, double *lq, double *g)
{
    const double scale = *(const double *)ctx; /* q̃ = scale · N(0, I) */
    for (size_t i = 0; i < n; i++) {
        lq[i] = log(scale) + cnf_std_normal_logpdf(X + 2 * i, 2);
        if (g) {
            g[2 * i] = -X[2 * i];
            g[2 * i + 1] = -X[2 * i + 1];
        }
    }
    return 0;
}

Test(rkl, importance_sampling_exact_for_a_perfect_proposal)
{
    cnf_flow *f = small_cnf(2, 9, 0);
    memset(cnf_flow_params(f), 0, cnf_flow_n_params(f) * sizeof(double));
    double scale = 7.5, logz, ess, elbo, loss;
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    cr_assert_eq(cnf_flow_importance(f, 500, &r, std_normal_logq, &scale, &logz, &ess, &elbo),
                 CNF_OK);
    cr_assert(fabs(logz - log(scale)) < 1e-9 && fabs(ess - 1) < 1e-12 &&
              fabs(elbo - log(scale)) < 1e-9, "log Z %g, ESS %g, ELBO %g", logz, ess, elbo);
    cr_assert_eq(cnf_flow_rkl_grad(f, 50, &r, std_normal_logq, &scale, &loss, NULL, NULL),
                 CNF_OK);
    cr_assert(fabs(loss + log(scale)) < 1e-9, "KL part should be 0: loss %g", loss);
    cnf_flow_free(f);
}

/* ---- flow matching --------------------------------------------------------------------------- */

/* Data callbacks: a named toy set, and random rows of the 40 x 3 array the context points to. */
static int toy_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    return cnf_toy_sample_named(ctx, n, X, rng);
}

static int rows_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    const double *rows = ctx;
    for (size_t i = 0; i < n; i++)
        memcpy(X + 3 * i, rows + 3 * (size_t)(cnf_rng_uniform(rng) * 40), 3 * sizeof(double));
    return 0;
}

typedef struct {
    const double *X;
    size_t n;
    cnf_fm_variant v;
} fm_ctx;

static int fm_obj(cnf_flow *f, void *ctx, cnf_rng *rng, double *loss, double *grad)
{
    fm_ctx *c = ctx;
    return cnf_fm_loss_grad(f, c->X, c->n, c->v, 0.1, rng, loss, grad);
}

Test(fm, loss_gradient_matches_finite_differences)
{
    cnf_flow *f = small_cnf(2, 4, 0);
    double X[40];
    cnf_rng r;
    cnf_rng_seed(&r, 2);
    cnf_toy_sample_named("moons", 20, X, &r);
    for (int v = 0; v < 2; v++) {
        fm_ctx c = {X, 20, (cnf_fm_variant)v};
        check_gradient(f, fm_obj, &c, 1e-4, 1e-7, v ? "OT-CFM" : "I-CFM");
    }
    cnf_flow_free(f);
}

/* Flow matching holds T fixed: a CNF that trains T is refused by the trainer and the loss. */
Test(fm, refuses_a_trained_end_time)
{
    cnf_flow *f = small_cnf(2, 25, 1);
    double X[8 * 2], loss, *g = malloc(cnf_flow_n_params(f) * sizeof(double));
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    cnf_toy_sample_named("moons", 8, X, &r);
    cnf_train_config tc = {.iters = 5, .batch = 8, .objective = cnf_objective_fm,
                           .next_batch = toy_batch, .batch_ctx = "moons"};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "fixed T"), "%s", cnf_errmsg());
    cr_assert_eq(cnf_fm_loss_grad(f, X, 8, CNF_FM_ICFM, 0.0, &r, &loss, g), CNF_EINVAL);
    free(g);
    cnf_flow_free(f);
}

/* A discrete flow has no velocity field: refused with a message naming its kind, by the trainer
 * and by the loss, before anything is drawn or trained. */
Test(fm, refuses_a_discrete_flow_with_a_message)
{
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, "realnvp", 2);
    cnf_rng r;
    cnf_rng_seed(&r, 3);
    cnf_flow *f;
    cr_assert_eq(cnf_dflow_create(&f, &c, &r), CNF_OK, "%s", cnf_errmsg());
    cnf_train_config tc = {.iters = 5, .batch = 8, .objective = cnf_objective_fm,
                           .next_batch = toy_batch, .batch_ctx = "moons"};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    cnf_trainer *t = NULL;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_EUNSUPPORTED);
    cr_assert_null(t);
    cr_assert(strstr(cnf_errmsg(), "realnvp") && strstr(cnf_errmsg(), "velocity field"), "%s",
              cnf_errmsg());
    cr_assert_eq(cnf_flow_velocity_check(f), CNF_EUNSUPPORTED);
    double X[8 * 2], loss;
    cnf_toy_sample_named("moons", 8, X, &r);
    const cnf_rng before = r;
    cr_assert_eq(cnf_fm_loss_grad(f, X, 8, CNF_FM_OTCFM, 0.0, &r, &loss, NULL), CNF_EUNSUPPORTED);
    cr_assert(memcmp(&r, &before, sizeof r) == 0, "the generator moved");
    cnf_flow_free(f);
}

/* Through a preprocessing wrapper (standardisation and PCA from 3 columns to 2), flow matching
 * is the inner CNF's flow matching on the preprocessed batch: the same loss and gradient, bit for
 * bit (the same calls on the same batch layout); and not the regression in data space. */
Test(fm, wrapper_regresses_in_the_preprocessed_space)
{
    enum { n = 40, D = 3 };
    double M[n * 2], X[n * D], Y[n * 2];
    cnf_rng r;
    cnf_rng_seed(&r, 11);
    cnf_toy_sample_named("moons", n, M, &r);
    for (size_t i = 0; i < n; i++) {
        X[i * D + 0] = 3.0 * M[2 * i] + 5.0;
        X[i * D + 1] = 0.5 * M[2 * i + 1] - 2.0;
        X[i * D + 2] = X[i * D] + 0.1 * cnf_rng_normal(&r);
    }
    cnf_pre_config pc;
    cnf_pre_config_default(&pc);
    pc.pca = 2;
    cnf_pre *p;
    cr_assert_eq(cnf_pre_fit(&p, &pc, X, n, D), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_pre_apply(p, X, n, Y, NULL), CNF_OK);
    cnf_flow *w;
    cr_assert_eq(cnf_pre_flow_create(&w, p, small_cnf(2, 12, 0)), CNF_OK, "%s", cnf_errmsg());
    cnf_flow *inner = cnf_pre_flow_inner(w);
    cr_assert_eq(cnf_flow_velocity_check(w), CNF_OK, "%s", cnf_errmsg());
    const size_t P = cnf_flow_n_params(w);
    double *g[2] = {malloc(P * sizeof(double)), malloc(P * sizeof(double))}, loss[2];
    for (int v = 0; v < 2; v++) {
        cnf_rng a, b;
        cnf_rng_seed(&a, 7 + v);
        b = a;
        cr_assert_eq(cnf_fm_loss_grad(w, X, n, (cnf_fm_variant)v, 0.1, &a, &loss[0], g[0]),
                     CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_fm_loss_grad(inner, Y, n, (cnf_fm_variant)v, 0.1, &b, &loss[1], g[1]),
                     CNF_OK, "%s", cnf_errmsg());
        cr_assert(loss[0] == loss[1], "loss %.17g vs %.17g", loss[0], loss[1]);
        cr_assert(memcmp(g[0], g[1], P * sizeof(double)) == 0, "gradients differ");
    }
    /* The raw data (scale 3, offset 5) are far from the base: their regression differs. */
    double raw;
    cnf_flow *c3 = small_cnf(3, 12, 0);
    cnf_rng a;
    cnf_rng_seed(&a, 8);
    cr_assert_eq(cnf_fm_loss_grad(c3, X, n, CNF_FM_OTCFM, 0.1, &a, &raw, NULL), CNF_OK);
    cr_assert(fabs(raw - loss[0]) > 0.1 * loss[0], "data-space loss %g, preprocessed %g", raw,
              loss[0]);
    /* And the trainer takes the wrapper. */
    cnf_train_config tc = {.iters = 3, .batch = 16, .objective = cnf_objective_fm,
                           .next_batch = rows_batch, .batch_ctx = X};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, w, &tc, 1), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    cnf_trainer_free(t);
    cnf_flow_free(c3);
    cnf_flow_free(w);
    free(g[0]);
    free(g[1]);
}

/* The assignment is optimal: no better one among all permutations of 7 points. */
static void best_by_enumeration(const double *C, size_t n, size_t *p, size_t k, double acc,
                                double *best)
{
    if (k == n) {
        if (acc < *best)
            *best = acc;
        return;
    }
    for (size_t i = k; i < n; i++) {
        size_t t = p[k];
        p[k] = p[i];
        p[i] = t;
        best_by_enumeration(C, n, p, k + 1, acc + C[k * n + p[k]], best);
        p[i] = p[k];
        p[k] = t;
    }
}

Test(fm, assignment_is_optimal)
{
    enum { n = 7 };
    cnf_rng r;
    cnf_rng_seed(&r, 3);
    for (int trial = 0; trial < 10; trial++) {
        double C[n * n], best = INFINITY, got = 0;
        for (size_t i = 0; i < n * n; i++)
            C[i] = cnf_rng_uniform(&r);
        size_t perm[n], p[n], seen[n] = {0};
        cr_assert_eq(cnf_assignment(C, n, perm), CNF_OK);
        for (size_t i = 0; i < n; i++) {
            p[i] = i;
            got += C[i * n + perm[i]];
            seen[perm[i]]++;
        }
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(seen[i], 1, "not a permutation");
        best_by_enumeration(C, n, p, 0, 0, &best);
        cr_assert(fabs(got - best) < 1e-12, "assignment cost %g, optimum %g", got, best);
    }
}

/* The averaged weights (ema_decay) are the moving average of the iterates: a run without
 * averaging has the same iterates (averaging draws nothing from the generator), and its
 * average computed here by the formula of cnf/train.h matches the flow a run with averaging
 * ends with. Validation then also uses the average. */
typedef struct {
    cnf_flow *f;
    double *avg, beta;
    size_t k;
} hand_ema;

static int hand_average(const cnf_train_progress *p, void *ctx)
{
    hand_ema *h = ctx;
    const double *th = cnf_flow_params(h->f), k = (double)h->k++;
    const double b = fmin(h->beta, (1 + k) / (10 + k));
    for (size_t i = 0; i < cnf_flow_n_params(h->f); i++)
        h->avg[i] = b * h->avg[i] + (1 - b) * th[i];
    return 0;
}

Test(fm, ema_is_the_average_of_the_iterates)
{
    const double ms[2] = {1.0, 0.5};
    cnf_flow *f[2];
    for (int e = 0; e < 2; e++)
        f[e] = small_cnf(2, 12, 0);
    size_t P = cnf_flow_n_params(f[0]);
    hand_ema h = {f[0], malloc(P * sizeof(double)), 0.9, 0};
    memcpy(h.avg, cnf_flow_params(f[0]), P * sizeof(double));
    for (int e = 0; e < 2; e++) {
        cnf_train_config tc = {.iters = 40, .batch = 64, .next_batch = fm_gauss_batch,
                               .batch_ctx = (void *)ms, .objective = cnf_objective_fm,
                               .ema_decay = e ? h.beta : 0,
                               .progress = e ? NULL : hand_average, .progress_ctx = &h};
        cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
        tc.optim.lr = 1e-2;
        cnf_trainer *t;
        cr_assert_eq(cnf_trainer_create(&t, f[e], &tc, 5), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
        cnf_trainer_free(t);
    }
    double worst = 0, moved = 0;
    for (size_t i = 0; i < P; i++) {
        worst = fmax(worst, fabs(cnf_flow_params(f[1])[i] - h.avg[i]));
        moved = fmax(moved, fabs(cnf_flow_params(f[0])[i] - h.avg[i]));
    }
    cr_assert(worst <= 1e-14, "averaged weights differ from the hand average by %g", worst);
    cr_assert(moved > 1e-6, "the average should differ from the last iterate");
    cnf_train_config bad = {.iters = 1, .batch = 1, .next_batch = fm_gauss_batch,
                            .ema_decay = 1.0};
    cnf_optim_settings_default(&bad.optim, CNF_OPTIM_ADAM);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f[0], &bad, 1), CNF_EINVAL);
    free(h.avg);
    cnf_flow_free(f[0]);
    cnf_flow_free(f[1]);
}

/* I-CFM on N(m, s²I) learns the closed-form field. What limits the distance (RMS as
 * fm_gauss_distance, measured while writing this test with m = s = 1):
 *  - the network and the optimizer, not the closed form: fitting the same 32-32 MLP by plain
 *    regression onto u* (no noise), 4,000 steps of 1,024 with Adam 3e-3, gives 0.030 with
 *    softplus (the field of the earlier version of this test, which plateaued at 0.041 after
 *    42M I-CFM samples) and 0.015 with tanh; 8,000 steps of 256 with lr 1e-2 → 1e-4 (cosine)
 *    give 0.011 (softplus) and 0.005 (tanh).
 *  - the noise of the I-CFM target: x₁ − x₀ given x_τ has variance s²/((1−τ)²s² + τ²) per
 *    coordinate (1 to 2 here) around u*, so the loss gradient is mostly noise; the last iterate
 *    jitters at 0.02-0.13 depending on the learning rate. Averaging the weights (ema_decay)
 *    removes the jitter: 0.024 with 8M samples (the settings below), 0.0205 with 16M, 0.013
 *    with 49M (90 s of one core), and a 64-64 field 0.012 with 33M (220 s). The error is
 *    largest at the ends (τ = 0.1, 0.9: about 0.02 in those runs, 0.006 at τ = 0.5).
 *  Issue 8's 1e-2 is therefore out of reach of a unit test (examples/fm_gaussian reaches 0.0079
 *  with 410M samples); this one asserts 0.03 against the closed form (untrained: about 1.1) in
 *  ~4 s of one core, measured on 500 points per τ (the estimate's own error is about 1%). */
Test(fm, gaussian_field_approaches_closed_form, .timeout = 600)
{
    static const size_t hidden[] = {32, 32};
    const double ms[2] = {1.0, 1.0};
    cnf_cflow_config cfg;
    fm_gauss_config(&cfg, hidden);
    cnf_rng r;
    cnf_rng_seed(&r, 6);
    cnf_flow *f;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK);
    cnf_rng re = r;
    double before = fm_gauss_distance(f, ms[0], ms[1], 500, &re, NULL);
    fm_cosine_ctx cc = {NULL, {1e-2, 1e-4}};
    cnf_train_config tc = {.iters = 8000, .batch = 1024, .next_batch = fm_gauss_batch,
                           .batch_ctx = (void *)ms, .objective = cnf_objective_fm,
                           .ema_decay = 0.9995,
                           .progress = fm_cosine_lr, .progress_ctx = &cc};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = cc.lr[0];
    cr_assert_eq(cnf_trainer_create(&cc.t, f, &tc, 1), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_run(cc.t), CNF_OK, "%s", cnf_errmsg());
    re = r;
    double after = fm_gauss_distance(f, ms[0], ms[1], 500, &re, NULL);
    cr_log_info("RMS distance to the optimal field %g (untrained %g)", after, before);
    cr_assert(after <= 0.03, "RMS distance to the optimal field %g (untrained %g)", after,
              before);
    cnf_trainer_free(cc.t);
    cnf_flow_free(f);
}

/* Reverse KL for the discrete flows (implicit differentiation through their inverse): gradients
 * against finite differences, every kind, d = 2 (banana) and d = 10 (funnel) for two of them. */
Test(rkl, discrete_flow_gradients_match_finite_differences)
{
    for (size_t k = 0; k < cnf_dflow_kind_count(); k++) {
        for (int big = 0; big < 2; big++) {
            const char *kind = cnf_dflow_kind_at(k);
            if (big && strcmp(kind, "realnvp") && strcmp(kind, "maf"))
                continue;
            cnf_target *t;
            cnf_target_create(big ? "funnel" : "banana", &t);
            static const size_t hidden[] = {8};
            cnf_dflow_config c;
            cnf_dflow_config_default(&c, kind, cnf_target_dim(t));
            c.layers = 2;
            c.hidden = hidden;
            c.n_hidden = 1;
            cnf_rng r;
            cnf_rng_seed(&r, 40 + k);
            cnf_flow *f;
            cr_assert_eq(cnf_dflow_create(&f, &c, &r), CNF_OK, "%s", cnf_errmsg());
            double *th = cnf_flow_params(f);
            for (size_t i = 0; i < cnf_flow_n_params(f); i++)
                th[i] += 0.05 * cnf_rng_normal(&r);
            char what[64];
            snprintf(what, sizeof what, "reverse KL, %s d=%zu", kind, cnf_target_dim(t));
            check_gradient(f, rkl_obj, t, 1e-4, 1e-6, what);
            cnf_flow_free(f);
            cnf_target_free(t);
        }
    }
}
