/* Helpers of the trainer and model-file tests (test_train.c, test_model.c): a small CNF
 * (8-8 tanh, RK4 with 4 steps, T trained, a kinetic regularizer), 8gaussians batches, an Adam
 * configuration, and per-process temporary paths. */
#ifndef CNF_TESTS_TRAIN_UTIL_H
#define CNF_TESTS_TRAIN_UTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "cnf.h"

static inline cnf_flow *small_cnf(cnf_trace trace, uint64_t seed)
{
    static const size_t hidden[] = {8, 8};
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.hidden = hidden;
    cfg.n_hidden = 2;
    cfg.trace = trace;
    cfg.train_T = 1;
    cfg.reg_kinetic = 0.01;
    cfg.train.stepper = cnf_stepper_rk4;
    cfg.train.opt.steps = 4;
    cfg.eval.opt.rtol = cfg.eval.opt.atol = 1e-6;
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    cnf_flow *f;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK, "%s", cnf_errmsg());
    return f;
}

static inline char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "/tmp/cnf_test_train_%d_%s", (int)getpid(), name);
    return p;
}

static inline int batch8(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    return cnf_toy_sample_named(ctx, n, X, rng);
}

static inline cnf_train_config train_config(size_t iters)
{
    cnf_train_config tc = {.iters = iters, .batch = 32, .next_batch = batch8,
                           .batch_ctx = "8gaussians"};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = 1e-2;
    tc.optim.weight_decay = 1e-5;
    return tc;
}

#endif
