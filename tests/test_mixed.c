/* Mixed precision (float32 layer products, everything else double): the MLP's outputs and
 * derivatives stay within float rounding of double, a CNF's log-density stays within 1e-4 of
 * double on every toy set (issue 9), and a short training run reaches the same loss. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/cflow.h"
#include "cnf/toy.h"
#include "cnf/mlp.h"
#include "rel_err.h"
#include "cnf/train.h"


enum { D = 3, N = 50 };

Test(mixed, mlp_matches_double_to_float_rounding)
{
    size_t hidden[] = {64, 64};
    double *F[2], *JU[2], *GX[2], *g[2], gt[2];
    size_t np = 0;
    for (int mixed = 0; mixed <= 1; mixed++) {
        cnf_mlp_config cfg = {.d_in = D, .d_out = D, .n_hidden = 2, .hidden = hidden,
                              .act = CNF_ACT_TANH, .time = CNF_TIME_CONCATSQUASH,
                              .precision = mixed ? CNF_PRECISION_MIXED : CNF_PRECISION_DOUBLE};
        cnf_mlp *m = NULL;
        cnf_mlp_work *w = NULL;
        cr_assert_eq(cnf_mlp_create(&m, &cfg), CNF_OK);
        cr_assert_eq(cnf_mlp_work_create_threads(&w, m, N, D, 1), CNF_OK);
        np = cnf_mlp_n_params(m);
        cnf_rng r;
        cnf_rng_seed(&r, 3);
        double *theta = malloc(np * sizeof(double));
        cnf_mlp_init(m, theta, &r);
        double X[N * D], R[N * D], S[D * N * D];
        for (size_t i = 0; i < N * D; i++)
            X[i] = cnf_rng_normal(&r), R[i] = cnf_rng_normal(&r);
        for (size_t i = 0; i < D * N * D; i++)
            S[i] = cnf_rng_normal(&r);
        F[mixed] = calloc(N * D, sizeof(double));
        JU[mixed] = calloc(D * N * D, sizeof(double));
        GX[mixed] = calloc(N * D, sizeof(double));
        g[mixed] = calloc(np, sizeof(double));
        gt[mixed] = 0.0;
        cr_assert_eq(cnf_mlp_jvp(m, theta, 0.4, X, D, N, NULL, D, F[mixed], D, JU[mixed], w),
                     CNF_OK);
        cr_assert_eq(cnf_mlp_backward(m, theta, R, D, S, GX[mixed], D, g[mixed], &gt[mixed], w),
                     CNF_OK);
        free(theta);
        cnf_mlp_work_free(w);
        cnf_mlp_free(m);
    }
    cr_assert(rel(F[1], F[0], N * D) < 1e-5, "F: %g", rel(F[1], F[0], N * D));
    cr_assert(rel(JU[1], JU[0], D * N * D) < 1e-5, "JU: %g", rel(JU[1], JU[0], D * N * D));
    cr_assert(rel(GX[1], GX[0], N * D) < 1e-5, "GX: %g", rel(GX[1], GX[0], N * D));
    cr_assert(rel(g[1], g[0], np) < 1e-5, "gtheta: %g", rel(g[1], g[0], np));
    cr_assert(fabs(gt[1] - gt[0]) < 1e-5 * fabs(gt[0]), "dphi/dt");
    for (int i = 0; i < 2; i++) {
        free(F[i]);
        free(JU[i]);
        free(GX[i]);
        free(g[i]);
    }
}

static cnf_flow *toy_flow(int mixed)
{
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.precision = mixed ? CNF_PRECISION_MIXED : CNF_PRECISION_DOUBLE;
    cnf_rng r;
    cnf_rng_seed(&r, 9);
    cnf_flow *f = NULL;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK, "%s", cnf_errmsg());
    return f;
}

Test(mixed, cnf_log_density_within_1e4_of_double_on_every_toy_set)
{
    enum { M = 200 };
    cnf_flow *fd = toy_flow(0), *fm = toy_flow(1);
    double X[M * 2], ld[M], lm[M];
    for (size_t k = 0; k < cnf_toy_count(); k++) {
        cnf_rng r;
        cnf_rng_seed(&r, 100 + k);
        cr_assert_eq(cnf_toy_sample(cnf_toy_at(k), M, X, &r), CNF_OK);
        cr_assert_eq(cnf_flow_log_prob(fd, X, M, ld, NULL), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_flow_log_prob(fm, X, M, lm, NULL), CNF_OK, "%s", cnf_errmsg());
        double worst = 0;
        for (size_t i = 0; i < M; i++)
            worst = fmax(worst, fabs(lm[i] - ld[i]));
        cr_log_info("%s %g\n", cnf_toy_name(cnf_toy_at(k)), worst);
        cr_assert(worst < 1e-4, "%s: max |log p mixed - double| = %g",
                  cnf_toy_name(cnf_toy_at(k)), worst);
    }
    cnf_flow_free(fd);
    cnf_flow_free(fm);
}

static int batch_fn(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    (void)ctx;
    return cnf_toy_sample_named("8gaussians", n, X, rng);
}

Test(mixed, short_training_reaches_the_same_loss)
{
    double nll[2];
    for (int mixed = 0; mixed <= 1; mixed++) {
        cnf_flow *f = toy_flow(mixed);
        cnf_cflow_config *s = cnf_cflow_settings(f);
        s->train.stepper = cnf_stepper_rk4;
        s->train.opt.steps = 8;
        cnf_train_config tc = {.iters = 40, .batch = 64, .next_batch = batch_fn};
        cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
        tc.optim.lr = 1e-2;
        cnf_trainer *t = NULL;
        cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
        /* Held-out NLL with the double-precision evaluation of the trained parameters. */
        cnf_flow *ref = toy_flow(0);
        memcpy(cnf_flow_params(ref), cnf_flow_params(f), cnf_flow_n_params(f) * sizeof(double));
        double X[500 * 2], lp[500];
        cnf_rng r;
        cnf_rng_seed(&r, 77);
        cnf_toy_sample_named("8gaussians", 500, X, &r);
        cr_assert_eq(cnf_flow_log_prob(ref, X, 500, lp, NULL), CNF_OK);
        nll[mixed] = 0;
        for (size_t i = 0; i < 500; i++)
            nll[mixed] -= lp[i] / 500.0;
        cnf_trainer_free(t);
        cnf_flow_free(f);
        cnf_flow_free(ref);
    }
    cr_log_info("NLL double %.6f mixed %.6f\n", nll[0], nll[1]);
    cr_assert(fabs(nll[1] - nll[0]) < 1e-3, "NLL double %g, mixed %g", nll[0], nll[1]);
}
