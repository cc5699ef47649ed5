/* The training loop: training that learns, settings refused with named errors, and the
 * numerical-health guard and stop callback. (Model files and checkpoints: test_model.c.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf.h"
#include "train_util.h"

Test(train, training_lowers_the_test_nll)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 6);
    enum { n = 400 };
    double X[n * 2], before, after, se;
    cnf_rng r;
    cnf_rng_seed(&r, 7);
    cnf_toy_sample_named("8gaussians", n, X, &r);
    cr_assert_eq(cnf_flow_eval_nll(f, X, n, 100, &before, &se, NULL), CNF_OK);
    cnf_train_config tc = train_config(60);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_flow_eval_nll(f, X, n, 100, &after, &se, NULL), CNF_OK);
    cr_assert(after < before - 0.3, "test NLL %g -> %g", before, after);
    cnf_trainer_free(t);
    cnf_flow_free(f);
}

Test(train, bad_settings_are_named_errors)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 8);
    cnf_trainer *t = (cnf_trainer *)1;
    cnf_train_config tc = train_config(5);
    tc.batch = 0;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 0), CNF_EINVAL);
    cr_assert_null(t);
    tc = train_config(5);
    tc.val_every = 2;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 0), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "validation"));
    tc = train_config(5);
    tc.optim.lr = -1;
    cr_assert_neq(cnf_trainer_create(&t, f, &tc, 0), CNF_OK);
    double X[2] = {INFINITY, 0}, m;
    cr_assert_eq(cnf_flow_eval_nll(f, X, 1, 0, &m, NULL, NULL), CNF_ENONFINITE);
    cnf_flow_free(f);
}

/* The objectives come from one list: each is found by its name, an unknown name is an error
 * listing them, and an objective's settings are checked when the trainer is made. */
Test(train, objectives_are_listed_and_checked)
{
    const cnf_objective_type *const mine[] = {cnf_objective_ml, cnf_objective_fm,
                                              cnf_objective_rkl};
    cr_assert_eq(cnf_objective_count(), 3);
    for (size_t i = 0; i < 3; i++) {
        const cnf_objective_type *o;
        cr_assert_eq(cnf_objective_at(i), mine[i]);
        cr_assert_eq(cnf_objective_from_name(cnf_objective_name(mine[i]), &o), CNF_OK);
        cr_assert_eq(o, mine[i]);
        cr_assert(strlen(cnf_objective_summary(o)) > 10);
    }
    const cnf_objective_type *o = cnf_objective_ml;
    cr_assert_eq(cnf_objective_from_name("magic", &o), CNF_ENAME);
    cr_assert_null(o);
    cr_assert(strstr(cnf_errmsg(), "ml, flow-matching, reverse-kl"), "%s", cnf_errmsg());
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 9);
    cnf_trainer *t;
    cnf_train_config tc = train_config(5);
    tc.objective = cnf_objective_rkl; /* without its target */
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 0), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "target"), "%s", cnf_errmsg());
    tc = train_config(5);
    tc.next_batch = NULL;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 0), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "data callback"), "%s", cnf_errmsg());
    cnf_flow_free(f);
}

/* ---- the numerical-health guard, the stop callback ------------------------------------------- */

/* 8gaussians batches, and NaN rows from iteration `bad_from` on (0 = never). */
typedef struct {
    size_t calls, bad_from;
} poison_ctx;

static int poisoned_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    poison_ctx *c = ctx;
    int rc = cnf_toy_sample_named("8gaussians", n, X, rng);
    if (++c->calls >= c->bad_from && c->bad_from)
        X[0] = NAN;
    return rc;
}

static double val_X[64 * 2];

static cnf_train_config guarded_config(size_t iters, poison_ctx *pc)
{
    cnf_train_config tc = train_config(iters);
    tc.next_batch = poisoned_batch;
    tc.batch_ctx = pc;
    cnf_rng r;
    cnf_rng_seed(&r, 77);
    cnf_toy_sample_named("8gaussians", 64, val_X, &r);
    tc.val_every = 5;
    tc.val_X = val_X;
    tc.val_n = 64;
    return tc;
}

Test(guard, nan_loss_stops_as_diverged_and_keeps_the_last_validated_state)
{
    /* Reference: 5 clean iterations (one validation). */
    cnf_flow *ref = small_cnf(CNF_TRACE_EXACT, 21), *f = small_cnf(CNF_TRACE_EXACT, 21);
    poison_ctx clean = {0, 0}, bad = {0, 8};
    cnf_train_config tr = guarded_config(5, &clean), tb = guarded_config(20, &bad);
    cnf_trainer *a, *b;
    cr_assert_eq(cnf_trainer_create(&a, ref, &tr, 4), CNF_OK);
    cr_assert_eq(cnf_trainer_run(a), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_create(&b, f, &tb, 4), CNF_OK);
    int rc = cnf_trainer_run(b);
    cr_assert_eq(rc, CNF_EDIVERGED, "%s", cnf_strerror(rc));
    cr_assert_eq(cnf_trainer_status(b), CNF_TRAIN_DIVERGED);
    cr_assert_str_eq(cnf_train_status_name(cnf_trainer_status(b)), "diverged");
    cr_assert(strstr(cnf_trainer_stop_reason(b), "iteration 8") &&
                  strstr(cnf_trainer_stop_reason(b), "iteration 5"),
              "%s", cnf_trainer_stop_reason(b));
    cr_assert(strstr(cnf_errmsg(), "learning rate"), "%s", cnf_errmsg());
    /* Back at iteration 5 exactly: parameters, optimizer and generator as after the clean run,
     * so a checkpoint saved now resumes from there. */
    cr_assert_eq(cnf_trainer_iter(b), 5);
    size_t P = cnf_flow_n_params(f);
    cr_assert(memcmp(cnf_flow_params(f), cnf_flow_params(ref), P * sizeof(double)) == 0);
    cr_assert(memcmp(cnf_trainer_rng(b), cnf_trainer_rng(a), sizeof(cnf_rng)) == 0);
    cr_assert_eq(cnf_optim_steps(cnf_trainer_optim(b)), cnf_optim_steps(cnf_trainer_optim(a)));
    for (size_t i = 0; i < cnf_optim_n_buffers(cnf_trainer_optim(a)); i++)
        cr_assert(memcmp(cnf_optim_buffer(cnf_trainer_optim(a), i, NULL),
                         cnf_optim_buffer(cnf_trainer_optim(b), i, NULL),
                         P * sizeof(double)) == 0, "optimizer buffer %zu", i);
    /* The checkpoint says why it stopped. */
    const char *path = tmp_path("diverged.safetensors");
    cr_assert_eq(cnf_model_save(path, f, b, NULL), CNF_OK, "%s", cnf_errmsg());
    cnf_flow *g;
    cnf_st_file *file;
    cr_assert_eq(cnf_model_load(path, &g, &file), CNF_OK, "%s", cnf_errmsg());
    cr_assert_str_eq(cnf_st_meta(file, "train.status"), "diverged");
    cr_assert(strstr(cnf_st_meta(file, "train.stop_reason"), "iteration 8"));
    cnf_st_free(file);
    cnf_flow_free(g);
    unlink(path);
    cnf_trainer_free(a);
    cnf_trainer_free(b);
    cnf_flow_free(ref);
    cnf_flow_free(f);
}

Test(guard, runaway_step_stops_before_the_next_solve_with_the_parameters_unchanged)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 22);
    size_t P = cnf_flow_n_params(f);
    double *theta0 = malloc(P * sizeof(double));
    memcpy(theta0, cnf_flow_params(f), P * sizeof(double));
    cnf_train_config tc = train_config(10);
    tc.optim.lr = 100; /* Adam's first step moves every parameter by 100 */
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_EDIVERGED, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_status(t), CNF_TRAIN_DIVERGED);
    cr_assert_eq(cnf_trainer_iter(t), 0);
    cr_assert(memcmp(cnf_flow_params(f), theta0, P * sizeof(double)) == 0);
    cr_assert(strstr(cnf_trainer_stop_reason(t), "iteration 1"), "%s",
              cnf_trainer_stop_reason(t));
    cnf_trainer_free(t);
    /* The same learning rate with the step check off is not stopped at iteration 1. */
    tc.guard_step = -1;
    tc.iters = 1;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_iter(t), 1);
    cnf_trainer_free(t);
    /* An exploding gradient, by a guard set below the healthy gradient norm. */
    memcpy(cnf_flow_params(f), theta0, P * sizeof(double));
    tc = train_config(3);
    tc.guard_grad = 1e-12;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_EDIVERGED);
    cr_assert(strstr(cnf_trainer_stop_reason(t), "gradient norm"), "%s",
              cnf_trainer_stop_reason(t));
    cr_assert(memcmp(cnf_flow_params(f), theta0, P * sizeof(double)) == 0);
    cnf_trainer_free(t);
    free(theta0);
    cnf_flow_free(f);
    cr_assert_str_eq(cnf_strerror(CNF_EDIVERGED), "CNF_EDIVERGED: training diverged");
}

Test(guard, solver_failure_on_sane_parameters_is_solver_failed)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 23);
    cnf_cflow_config *s = cnf_cflow_settings(f);
    s->train.stepper = cnf_stepper_dopri5;
    s->train.opt.rtol = s->train.opt.atol = 1e-10;
    s->train.opt.max_steps = 2;
    cnf_train_config tc = train_config(5);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    int rc = cnf_trainer_run(t);
    cr_assert_eq(rc, CNF_EMAX_STEPS, "%s", cnf_strerror(rc));
    cr_assert_eq(cnf_trainer_status(t), CNF_TRAIN_SOLVER_FAILED);
    cr_assert(strstr(cnf_trainer_stop_reason(t), "solver failed at iteration 1") &&
                  strstr(cnf_trainer_stop_reason(t), "tolerances"),
              "%s", cnf_trainer_stop_reason(t));
    cnf_trainer_free(t);
    cnf_flow_free(f);
}

static int stop_after_3(void *ctx)
{
    return ++*(int *)ctx > 3;
}

Test(guard, stop_callback_ends_the_run_after_the_iteration_in_progress)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 24);
    int polls = 0;
    cnf_train_config tc = train_config(50);
    tc.stop = stop_after_3;
    tc.stop_ctx = &polls;
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_status(t), CNF_TRAIN_INTERRUPTED);
    cr_assert_eq(cnf_trainer_iter(t), 3);
    cr_assert_str_eq(cnf_train_status_name(CNF_TRAIN_INTERRUPTED), "interrupted");
    cnf_trainer_free(t);
    /* A normal end says ok, and a time limit says so. */
    tc.stop = NULL;
    tc.iters = 2;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK);
    cr_assert_eq(cnf_trainer_status(t), CNF_TRAIN_OK);
    cr_assert_str_eq(cnf_trainer_stop_reason(t), "");
    cnf_trainer_free(t);
    tc.iters = 1000000;
    tc.max_seconds = 1e-9;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK);
    cr_assert_eq(cnf_trainer_status(t), CNF_TRAIN_TIME_LIMIT);
    cr_assert_str_eq(cnf_train_status_name(CNF_TRAIN_TIME_LIMIT), "time_limit");
    cnf_trainer_free(t);
    cnf_flow_free(f);
}

/* The learning rate each step used, by iteration (the progress callback's p->lr). */
typedef struct lr_log {
    double lr[32];
    size_t n;
} lr_log;

static int log_lr(const cnf_train_progress *p, void *ctx)
{
    lr_log *l = ctx;
    if (p->iter <= 32)
        l->lr[p->iter - 1] = p->lr;
    l->n = p->iter;
    return 0;
}

/* The cosine schedule over iterations: the first step at lr, the middle one at the mean of lr
 * and lr_final, the last at lr_final, in between monotone; the optimizer's warm-up multiplies
 * it; the constant schedule (the default) keeps lr; a bad final rate or schedule is refused. */
Test(train, cosine_schedule_runs_from_lr_to_lr_final)
{
    const double lr = 1e-2, lr_final = 1e-4;
    for (int warm = 0; warm < 2; warm++) {
        cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 12);
        lr_log L = {{0}, 0};
        cnf_train_config tc = train_config(21);
        tc.batch = 8;
        tc.optim.lr = lr;
        tc.optim.warmup = warm ? 4 : 0;
        tc.lr_schedule = CNF_LR_COSINE;
        tc.lr_final = lr_final;
        tc.progress = log_lr;
        tc.progress_ctx = &L;
        cnf_trainer *t;
        cr_assert_eq(cnf_trainer_create(&t, f, &tc, 3), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(L.n, 21);
        if (!warm)
            cr_assert(fabs(L.lr[0] - lr) <= 1e-12, "first %g", L.lr[0]);
        cr_assert(fabs(L.lr[10] - 0.5 * (lr + lr_final)) <= 1e-12, "middle %.17g", L.lr[10]);
        cr_assert(fabs(L.lr[20] - lr_final) <= 1e-12, "last %.17g", L.lr[20]);
        for (size_t i = 1; i < 21; i++) {
            const double sched = lr_final + (lr - lr_final) * 0.5 * (1 + cos(M_PI * (double)i / 20));
            const double w = warm && i + 1 < 4 ? (double)(i + 1) / 4 : 1.0;
            cr_assert(fabs(L.lr[i] - sched * w) <= 1e-12, "step %zu: %.17g vs %.17g", i + 1,
                      L.lr[i], sched * w);
        }
        cnf_trainer_free(t);
        cnf_flow_free(f);
    }
    /* The default is constant, lr_final 0 lets the last step stand still. */
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 12);
    lr_log L = {{0}, 0};
    cnf_train_config tc = train_config(5);
    tc.batch = 8;
    tc.progress = log_lr;
    tc.progress_ctx = &L;
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 3), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(L.lr[i], tc.optim.lr);
    cnf_trainer_free(t);
    tc.lr_schedule = CNF_LR_COSINE;
    tc.lr_final = 0;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 3), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(L.lr[4], 0.0);
    cnf_trainer_free(t);
    tc.lr_final = 2 * tc.optim.lr;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 3), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "final learning rate"), "%s", cnf_errmsg());
    tc.lr_final = 0;
    tc.lr_schedule = (cnf_lr_schedule)7;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 3), CNF_EINVAL);
    cnf_lr_schedule s;
    cr_assert_eq(cnf_lr_schedule_from_name("cosine", &s), CNF_OK);
    cr_assert_eq(s, CNF_LR_COSINE);
    cr_assert_str_eq(cnf_lr_schedule_name(CNF_LR_CONSTANT), "constant");
    cr_assert_eq(cnf_lr_schedule_from_name("linear", &s), CNF_ENAME);
    cr_assert(strstr(cnf_errmsg(), "constant, cosine"), "%s", cnf_errmsg());
    cnf_flow_free(f);
}
