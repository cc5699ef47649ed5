/* tabular_recipe: a research driver for the CNF's real-data recipe, through the library API only.
 * It reproduces `cnf train --data FILE`'s seeded split and preprocessing (cnf/pre.h), then trains
 * the CNF in two optional phases within wall-clock budgets:
 *
 *   1. flow matching (I-CFM / OT-CFM, σ) with EMA of the weights and a learning rate that
 *      follows a cosine of the elapsed fraction of the phase's time budget (or iterations),
 *   2. maximum-likelihood fine-tuning (Hutchinson trace, RNODE kinetic + Jacobian penalties,
 *      its own solver and tolerance, a cosine-by-time learning rate from --ml-lr),
 *
 * with the validation NLL (exact trace, Dopri5 at --val-tol, on --val-n validation rows) picking
 * the parameters kept at the end of each phase, and finally the test NLL with Dopri5 at 1e-5 and
 * the exact trace: mean ± SE, NFE per solve, and with --scores log p of every test row in the
 * split's order (`cnf eval --split test --scores` order, for paired differences).
 *
 * Built with the examples (build/examples/tabular_recipe); examples/tabular_bench.sh runs it
 * when CNF_DRIVER names it. A research tool: its recipe is not yet cnf train's default. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnf.h"

typedef struct opts {
    const char *data, *scores, *fm_variant;
    double levels, alpha, val_frac, test_frac;
    unsigned long long seed;
    size_t hidden[8], n_hidden, batch, val_n, val_every, fm_iters, ml_iters, ml_batch, probes;
    const char *act, *time_mode, *precision;
    double fm_seconds, fm_sigma, lr, lr_final, ema, wd, ml_seconds, ml_lr, reg_k, reg_j,
        ml_tol, val_tol, T, warmup;
    const char *ml_solver;
} opts;

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Training batches: rows drawn with replacement, dequantised, mapped through the preprocessing. */
typedef struct batch_ctx {
    const double *X;
    size_t n, D;
    double levels;
    const cnf_pre *pre;
    double *raw;
} batch_ctx;

static int next_batch(void *ctx, size_t n, double *Y, cnf_rng *rng)
{
    batch_ctx *b = ctx;
    for (size_t i = 0; i < n; i++)
        memcpy(b->raw + i * b->D, b->X + (size_t)cnf_rng_below(rng, b->n) * b->D,
               b->D * sizeof(double));
    if (b->levels > 0)
        cnf_data_dequantize(b->raw, n, b->D, rng);
    return cnf_pre_apply(b->pre, b->raw, n, Y, NULL);
}

/* The schedule: lr(t) = lr_final + (lr − lr_final)·½(1 + cos π f), f the elapsed fraction of the
 * phase's seconds (or of its iterations when it has no time budget), after a linear warm-up. */
typedef struct sched {
    cnf_trainer *t;
    double lr, lr_final, seconds, warmup;
    size_t iters, iter0;
    double best, t_start;
    size_t best_iter, n_val;
    double last_val;
} sched;

static int on_progress(const cnf_train_progress *p, void *ctx)
{
    sched *s = ctx;
    double f = s->seconds > 0 ? p->seconds / s->seconds
                              : (double)(p->iter - s->iter0) / (double)(s->iters - s->iter0);
    if (f > 1)
        f = 1;
    double lr = s->lr_final + (s->lr - s->lr_final) * 0.5 * (1 + cos(M_PI * f));
    size_t k = p->iter - s->iter0;
    if (s->warmup > 0 && (double)k < s->warmup)
        lr *= (double)(k + 1) / s->warmup;
    cnf_optim_set_lr(cnf_trainer_optim(s->t), lr);
    if (p->has_val) {
        s->n_val++;
        s->last_val = p->val_nll;
        fprintf(stderr, "  iter %zu  %.1f s  loss %.4f  lr %.2e  val %.4f  nfe %zu\n", p->iter,
                p->seconds, p->loss, p->lr, p->val_nll, p->nfe_forward);
    }
    return 0;
}

/* A JSON number, or null when not finite. */
static const char *jnum(char *buf, double x)
{
    if (isfinite(x))
        snprintf(buf, 32, "%.4f", x);
    else
        strcpy(buf, "null");
    return buf;
}

static int die(const char *what, int rc)
{
    fprintf(stderr, "tabular_recipe: %s: %s\n", what, cnf_errmsg());
    return rc ? rc : 1;
}

static size_t parse_hidden(const char *s, size_t *h)
{
    size_t k = 0;
    while (*s && k < 8) {
        char *e;
        h[k++] = strtoul(s, &e, 10);
        s = *e ? e + 1 : e;
    }
    return k;
}

int main(int argc, char **argv)
{
    opts o = {.levels = 0, .alpha = 1e-6, .val_frac = 0.1, .test_frac = 0.1, .seed = 0,
              .batch = 512, .val_n = 500, .val_every = 1000, .fm_iters = 0, .ml_iters = 0,
              .ml_batch = 256, .probes = 1, .act = "swish", .time_mode = "concat",
              .precision = "mixed", .fm_variant = "otcfm", .fm_seconds = 0, .fm_sigma = 0,
              .lr = 2e-3, .lr_final = 0, .ema = 0.999, .wd = 0, .ml_seconds = 0, .ml_lr = 2e-4,
              .reg_k = 0.01, .reg_j = 0.01, .ml_tol = 1e-4, .val_tol = 1e-4, .T = 1,
              .warmup = 0, .ml_solver = "dopri5"};
    o.n_hidden = parse_hidden("256-256-256", o.hidden);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name, code)                                                                            \
    if (!strcmp(a, name) && v) {                                                                   \
        code;                                                                                      \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        OPT("--data", o.data = v) OPT("--scores", o.scores = v) OPT("--levels", o.levels = atof(v))
        OPT("--alpha", o.alpha = atof(v)) OPT("--seed", o.seed = strtoull(v, NULL, 10))
        OPT("--hidden", o.n_hidden = parse_hidden(v, o.hidden)) OPT("--act", o.act = v)
        OPT("--time", o.time_mode = v) OPT("--precision", o.precision = v)
        OPT("--batch", o.batch = strtoul(v, NULL, 10)) OPT("--val-n", o.val_n = strtoul(v, NULL, 10))
        OPT("--val-every", o.val_every = strtoul(v, NULL, 10))
        OPT("--fm-iters", o.fm_iters = strtoul(v, NULL, 10)) OPT("--fm-seconds", o.fm_seconds = atof(v))
        OPT("--fm-variant", o.fm_variant = v) OPT("--fm-sigma", o.fm_sigma = atof(v))
        OPT("--lr", o.lr = atof(v)) OPT("--lr-final", o.lr_final = atof(v)) OPT("--ema", o.ema = atof(v))
        OPT("--weight-decay", o.wd = atof(v)) OPT("--warmup", o.warmup = atof(v))
        OPT("--ml-iters", o.ml_iters = strtoul(v, NULL, 10)) OPT("--ml-seconds", o.ml_seconds = atof(v))
        OPT("--ml-lr", o.ml_lr = atof(v)) OPT("--ml-batch", o.ml_batch = strtoul(v, NULL, 10))
        OPT("--reg-kinetic", o.reg_k = atof(v)) OPT("--reg-jacobian", o.reg_j = atof(v))
        OPT("--ml-tol", o.ml_tol = atof(v)) OPT("--ml-solver", o.ml_solver = v)
        OPT("--probes", o.probes = strtoul(v, NULL, 10)) OPT("--val-tol", o.val_tol = atof(v))
        OPT("--T", o.T = atof(v))
#undef OPT
        fprintf(stderr, "tabular_recipe: unknown or incomplete option %s\n", a);
        return 2;
    }
    if (!o.data) {
        fprintf(stderr, "usage: tabular_recipe --data FILE [options: see the source]\n");
        return 2;
    }

    /* The split of dataopts.c: one seeded shuffle, then train / validation / test blocks. */
    cnf_data all;
    if (cnf_data_load(o.data, CNF_DATA_AUTO, &all))
        return die(o.data, 1);
    size_t n = all.n, D = all.d;
    cnf_rng r;
    cnf_rng_seed(&r, o.seed ^ 0x5b1175ULL);
    cnf_data_shuffle(all.X, n, D, &r);
    size_t n_val = (size_t)(o.val_frac * (double)n), n_test = (size_t)(o.test_frac * (double)n);
    size_t n_tr = n - n_val - n_test;
    double *Xtr = all.X, *Xval = all.X + n_tr * D, *Xte = Xval + n_val * D;

    cnf_pre_config pc;
    cnf_pre_config_default(&pc);
    pc.levels = o.levels;
    pc.alpha = o.alpha;
    double *fit = malloc(n_tr * D * sizeof(double));
    memcpy(fit, Xtr, n_tr * D * sizeof(double));
    for (size_t i = 0; o.levels > 0 && i < n_tr * D; i++)
        fit[i] += 0.5;
    cnf_pre *pre;
    if (cnf_pre_fit(&pre, &pc, fit, n_tr, D))
        return die("preprocessing", 1);
    free(fit);
    cnf_rng_seed(&r, o.seed ^ 0xde9a27ULL);
    if (o.levels > 0)
        cnf_data_dequantize(Xval, n_val + n_test, D, &r);
    size_t d = cnf_pre_dim(pre);

    /* The CNF field in preprocessed space. */
    cnf_cflow_config cc;
    cnf_cflow_config_default(&cc, d);
    cc.n_hidden = o.n_hidden;
    cc.hidden = o.hidden;
    cc.act = !strcmp(o.act, "tanh") ? CNF_ACT_TANH : !strcmp(o.act, "softplus") ? CNF_ACT_SOFTPLUS
             : !strcmp(o.act, "elu") ? CNF_ACT_ELU : CNF_ACT_SWISH;
    cc.time = !strcmp(o.time_mode, "concatsquash") ? CNF_TIME_CONCATSQUASH
              : !strcmp(o.time_mode, "none")        ? CNF_TIME_NONE : CNF_TIME_CONCAT;
    cc.precision = !strcmp(o.precision, "double") ? CNF_PRECISION_DOUBLE : CNF_PRECISION_MIXED;
    cc.T = o.T;
    cc.train_T = 0;
    cc.eval.stepper = cnf_stepper_dopri5;
    cc.eval.opt.rtol = cc.eval.opt.atol = o.val_tol;
    cnf_flow *inner;
    cnf_rng_seed(&r, o.seed);
    if (cnf_cflow_create(&inner, &cc, &r))
        return die("creating the CNF", 1);
    cnf_flow *flow; /* the wrapper: log p in data space */
    if (cnf_pre_flow_create(&flow, pre, inner))
        return die("wrapper", 1);
    cnf_cflow_config *set = cnf_cflow_settings(inner);

    /* Validation rows in preprocessed space (the wrapper's log-determinant only shifts the NLL
     * by a constant per row, reported back in data space below). */
    size_t nv = o.val_n && o.val_n < n_val ? o.val_n : n_val;
    double *Yval = malloc(nv * d * sizeof(double)), *ldv = malloc(nv * sizeof(double));
    if (cnf_pre_apply(pre, Xval, nv, Yval, ldv))
        return die("validation rows", 1);
    double ld_mean = 0;
    for (size_t i = 0; i < nv; i++)
        ld_mean += ldv[i] / (double)nv;

    batch_ctx bc = {Xtr, n_tr, D, o.levels, pre, malloc((o.batch > o.ml_batch ? o.batch : o.ml_batch) * D * sizeof(double))};
    double t0 = now(), c0 = cpu();
    size_t fm_done = 0, ml_done = 0;
    double fm_sec = 0, ml_sec = 0, fm_val = NAN, ml_val = NAN;
    for (int phase = 0; phase < 2; phase++) {
        int fm = phase == 0;
        double sec = fm ? o.fm_seconds : o.ml_seconds;
        size_t iters = fm ? o.fm_iters : o.ml_iters;
        if (sec <= 0 && iters == 0)
            continue;
        cnf_train_config tc = {0};
        tc.iters = iters ? iters : (size_t)1 << 40;
        tc.batch = fm ? o.batch : o.ml_batch;
        cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
        tc.optim.lr = fm ? o.lr : o.ml_lr;
        tc.optim.weight_decay = o.wd;
        tc.val_every = o.val_every;
        tc.val_X = Yval;
        tc.val_n = nv;
        tc.val_batch = 500;
        tc.next_batch = next_batch;
        tc.batch_ctx = &bc;
        cnf_fm_params fp = {.sigma = o.fm_sigma};
        if (fm && cnf_fm_variant_from_name(o.fm_variant, &fp.variant))
            return die("--fm-variant", 2);
        tc.objective = fm ? cnf_objective_fm : cnf_objective_ml;
        tc.objective_params = fm ? &fp : NULL;
        tc.max_seconds = sec;
        tc.ema_decay = o.ema;
        sched s = {.lr = tc.optim.lr, .lr_final = fm ? o.lr_final : o.ml_lr * 0.01, .seconds = sec,
                   .iters = tc.iters, .iter0 = 0, .warmup = fm ? o.warmup : 0};
        tc.progress = on_progress;
        tc.progress_ctx = &s;
        if (!fm) {
            set->trace = CNF_TRACE_HUTCH_RADEMACHER;
            set->probes = o.probes;
            set->reg_kinetic = o.reg_k;
            set->reg_jacobian = o.reg_j;
            set->grad = CNF_GRAD_ADJOINT;
            set->train.stepper = !strcmp(o.ml_solver, "rk4") ? cnf_stepper_rk4 : cnf_stepper_dopri5;
            set->train.opt.rtol = set->train.opt.atol = o.ml_tol;
            set->train.opt.steps = 8;
        }
        cnf_trainer *t;
        if (cnf_trainer_create(&t, inner, &tc, o.seed + 1 + (uint64_t)phase))
            return die("trainer", 1);
        s.t = t;
        double t1 = now();
        int rc = cnf_trainer_run(t);
        if (rc)
            return die(fm ? "flow matching" : "ML fine-tuning", 1);
        size_t it = cnf_trainer_iter(t);
        cnf_trainer_free(t);
        if (fm)
            fm_done = it, fm_sec = now() - t1, fm_val = s.last_val - ld_mean;
        else
            ml_done = it, ml_sec = now() - t1, ml_val = s.last_val - ld_mean;
        fprintf(stderr, "phase %s: %zu iterations in %.1f s, final validation NLL %.4f (data space)\n",
                fm ? "FM" : "ML", it, now() - t1, s.last_val - ld_mean);
    }
    double train_sec = now() - t0, train_cpu = cpu() - c0;

    /* Test: Dopri5 at 1e-5, exact trace, through the wrapper (data space). */
    set->eval.stepper = cnf_stepper_dopri5;
    set->eval.opt.rtol = set->eval.opt.atol = 1e-5;
    set->eval_trace = CNF_TRACE_EXACT;
    double *lp = malloc(n_test * sizeof(double)), sum = 0, sum2 = 0;
    size_t nfe = 0, solves = 0;
    double te0 = now();
    for (size_t i = 0; i < n_test; i += 1000) {
        size_t m = n_test - i < 1000 ? n_test - i : 1000;
        cnf_flow_stats st = {0};
        if (cnf_flow_log_prob(flow, Xte + i * D, m, lp + i, &st))
            return die("test log p", 1);
        nfe += st.nfe_forward;
        solves++;
    }
    double te_sec = now() - te0;
    for (size_t i = 0; i < n_test; i++)
        sum += -lp[i], sum2 += lp[i] * lp[i];
    double mean = sum / (double)n_test;
    double se = sqrt((sum2 / (double)n_test - mean * mean) * (double)n_test / (double)(n_test - 1) /
                     (double)n_test);
    if (o.scores) {
        FILE *f = fopen(o.scores, "w");
        for (size_t i = 0; f && i < n_test; i++)
            fprintf(f, "%.17g\n", lp[i]);
        if (f)
            fclose(f);
    }
    char b1[32], b2[32];
    printf("{\"data\":\"%s\",\"d\":%zu,\"fm_iters\":%zu,\"fm_seconds\":%.1f,\"fm_val_nll\":%s,"
           "\"ml_iters\":%zu,\"ml_seconds\":%.1f,\"ml_val_nll\":%s,\"train_seconds\":%.1f,"
           "\"train_cpu_seconds\":%.1f,"
           "\"test_nll\":%.4f,\"test_nll_stderr\":%.4f,\"eval_nfe_per_solve\":%.1f,"
           "\"eval_seconds\":%.1f}\n",
           o.data, d, fm_done, fm_sec, jnum(b1, fm_val), ml_done, ml_sec, jnum(b2, ml_val), train_sec, train_cpu, mean, se,
           (double)nfe / (double)solves, te_sec);
    cnf_flow_free(flow);
    cnf_data_clear(&all);
    free(Yval), free(ldv), free(lp), free(bc.raw);
    return 0;
}
