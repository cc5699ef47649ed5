/* Shared by the data examples (tabular_density.c, anomaly.c): build a flow of a given kind inside
 * the preprocessing wrapper fitted on the training rows, and train it by Adam with early
 * stopping on the validation NLL, keeping the best parameters (FFJORD's tabular schedule). */
#ifndef CNF_EXAMPLES_FIT_COMMON_H
#define CNF_EXAMPLES_FIT_COMMON_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cnf.h>

typedef struct rows {
    const double *X; /* (n, d) */
    size_t n, d;
    double levels;   /* > 0: dequantise each batch */
} rows;

static int draw_rows(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    const rows *r = ctx;
    for (size_t i = 0; i < n; i++)
        memcpy(X + i * r->d, r->X + cnf_rng_below(rng, r->n) * r->d, r->d * sizeof(double));
    if (r->levels > 0)
        cnf_data_dequantize(X, n, r->d, rng);
    return 0;
}

/* Read path into *D, or with path "-" make n rows of d columns with make(X, n, rng) (a synthetic
 * stand-in so the example runs as a test). 0, or 1 after a message. */
static int load_or_make(const char *prog, const char *path, size_t n, size_t d,
                        void (*make)(double *X, size_t n, cnf_rng *r), cnf_rng *r, cnf_data *D)
{
    memset(D, 0, sizeof *D);
    if (strcmp(path, "-")) {
        int rc = cnf_data_load(path, CNF_DATA_AUTO, D);
        if (rc)
            fprintf(stderr, "%s: %s (%s)\n", prog, cnf_strerror(rc), cnf_errmsg());
        return rc != CNF_OK;
    }
    D->n = n;
    D->d = d;
    D->X = malloc(n * d * sizeof(double));
    if (!D->X)
        return 1;
    make(D->X, n, r);
    return 0;
}

/* Training settings of fit_flow_with; fit_settings_default gives fit_flow's. */
typedef struct fit_settings {
    size_t iters;     /* at most this many Adam iterations (batch 64, lr 1e-3) */
    size_t val_every; /* validation NLL every this many iterations (default 25) */
    size_t patience;  /* stop after this many validations without improvement (default 8) */
    size_t cnf_steps; /* CNF: RK4 steps over [0, T] in training (default 8; twice that in
                         validation) */
    size_t cnf_width; /* CNF: width of its two hidden layers (default 64) */
} fit_settings;

static void fit_settings_default(fit_settings *s, size_t iters)
{
    *s = (fit_settings){
        .iters = iters, .val_every = 25, .patience = 8, .cnf_steps = 8, .cnf_width = 64};
}

/* What a fit did (for tables): the iteration whose parameters were kept, the iterations run,
 * and the wall-clock seconds of training including validations. */
typedef struct fit_report {
    size_t best_iter, iters_run;
    double seconds;
} fit_report;

typedef struct fit_watch {
    cnf_early_stop es;
    size_t iter;
    double seconds;
} fit_watch;

static int stop_early(const cnf_train_progress *p, void *ctx)
{
    fit_watch *w = ctx;
    w->iter = p->iter;
    w->seconds = p->seconds;
    return p->has_val && cnf_early_stop_update(&w->es, p->iter, p->val_nll) ? 1 : 0;
}

/* The inner flow of kind "cnf" (FFJORD-style CNF: two tanh layers of fs->cnf_width, concatsquash,
 * Hutchinson trace in training, RK4 with fs->cnf_steps fixed steps) or a discrete kind
 * ("realnvp", "maf": 5 steps of 64-64). */
static int make_inner(const char *kind, size_t d, const fit_settings *fs, cnf_rng *r,
                      cnf_flow **out)
{
    static const size_t hidden[] = {64, 64};
    if (!strcmp(kind, "cnf")) {
        const size_t cnf_hidden[] = {fs->cnf_width, fs->cnf_width};
        cnf_cflow_config c;
        cnf_cflow_config_default(&c, d);
        c.hidden = cnf_hidden; /* copied by cnf_cflow_create */
        c.n_hidden = 2;
        c.T = 0.5;
        c.train_T = 1;
        c.trace = CNF_TRACE_HUTCH_GAUSS;
        c.grad = CNF_GRAD_BACKPROP;
        c.train.stepper = c.eval.stepper = cnf_stepper_rk4;
        c.train.opt.steps = fs->cnf_steps;
        c.eval.opt.steps = 2 * fs->cnf_steps;
        return cnf_cflow_create(out, &c, r);
    }
    cnf_dflow_config c;
    cnf_dflow_config_default(&c, kind, d);
    c.layers = 5;
    c.hidden = hidden;
    c.n_hidden = 2;
    return cnf_dflow_create(out, &c, r);
}

/* Fit preprocessing pc on train, build kind inside it and train it by Adam (batch 64, lr 1e-3)
 * with early stopping as set in fs, keeping the best parameters; report may be NULL. Integer
 * data (pc->levels > 0) are fitted at the middle of their cells; val must already be
 * dequantised by the caller. */
static int fit_flow_with(const char *kind, const rows *train, const double *val, size_t n_val,
                         const cnf_pre_config *pc, const fit_settings *fs, uint64_t seed,
                         cnf_flow **out, fit_report *report)
{
    *out = NULL;
    size_t n = train->n, d = train->d;
    double *fit = malloc(n * d * sizeof(double));
    if (!fit)
        return CNF_ENOMEM;
    for (size_t i = 0; i < n * d; i++)
        fit[i] = train->X[i] + (pc->levels > 0 ? 0.5 : 0.0);
    cnf_pre *pre;
    int rc = cnf_pre_fit(&pre, pc, fit, n, d);
    free(fit);
    if (rc)
        return rc;
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    cnf_flow *inner, *f;
    if ((rc = make_inner(kind, cnf_pre_dim(pre), fs, &r, &inner))) {
        cnf_pre_free(pre);
        return rc;
    }
    if ((rc = cnf_pre_flow_create(&f, pre, inner)))
        return rc;
    fit_watch w = {.iter = 0};
    if ((rc = cnf_early_stop_init(&w.es, f, fs->patience))) {
        cnf_flow_free(f);
        return rc;
    }
    cnf_train_config tc = {.iters = fs->iters, .batch = 64, .clip_norm = 100,
                           .val_every = fs->val_every, .val_X = val, .val_n = n_val,
                           .val_batch = 500, .next_batch = draw_rows, .batch_ctx = (void *)train,
                           .progress = stop_early, .progress_ctx = &w};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = 1e-3;
    tc.optim.weight_decay = 1e-6;
    cnf_trainer *t;
    rc = cnf_trainer_create(&t, f, &tc, seed + 1);
    if (!rc) {
        rc = cnf_trainer_run(t);
        if (rc == 1) /* stopped early */
            rc = CNF_OK;
        cnf_trainer_free(t);
    }
    cnf_early_stop_restore(&w.es);
    if (report)
        *report = (fit_report){.best_iter = w.es.best_iter, .iters_run = w.iter,
                               .seconds = w.seconds};
    cnf_early_stop_free(&w.es);
    if (rc) {
        cnf_flow_free(f);
        return rc;
    }
    *out = f;
    return CNF_OK;
}

/* fit_flow_with at most iters iterations, validation every 25, patience 8, CNF RK4 8 steps. */
static inline int fit_flow(const char *kind, const rows *train, const double *val,
                           size_t n_val, const cnf_pre_config *pc, size_t iters, uint64_t seed,
                           cnf_flow **out)
{
    fit_settings fs;
    fit_settings_default(&fs, iters);
    return fit_flow_with(kind, train, val, n_val, pc, &fs, seed, out, NULL);
}

#endif
