/* `cnf train`: learn a density from samples by maximum likelihood (FFJORD's train_toy.py), or
 * by flow matching; or fit a flow to an unnormalized target density by reverse KL. */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cnf.h"
#include "dataopts.h"
#include "flowopts.h"

#define CMD "train"

typedef struct train_opts {
    const char *data;
    size_t iters, batch, test_batch, test_n, val_every, log_every, plot_every, save_every;
    double lr, weight_decay, clip;
    uint64_t seed;
    const char *out, *plot, *resume;
    int json;
    const char *objective, *target, *target_csv, *fm_variant;
    double fm_sigma, max_seconds, prior_sd, ema;
} train_opts;

static flow_opts fo;
static data_opts dop;
static train_opts to;
static cli_opt table[FLOW_OPTS_MAX + 26 + DATA_OPTS_COUNT];
static size_t n_table, n_flow_opts; /* the first n_flow_opts entries are flow_opts' */
static char objective_help[1024];   /* --objective's help: the library's list of objectives */

static void build_table(void)
{
    n_table = n_flow_opts = flow_opts_table(&fo, table);
    size_t len = (size_t)snprintf(objective_help, sizeof objective_help, "what to minimise:");
    for (size_t i = 0; i < cnf_objective_count() && len < sizeof objective_help; i++)
        len += (size_t)snprintf(objective_help + len, sizeof objective_help - len, "%s %s: %s",
                                i ? ";" : "", cnf_objective_name(cnf_objective_at(i)),
                                cnf_objective_summary(cnf_objective_at(i)));
    const cli_opt mine[] = {
        {"--data", OPT_STR, &to.data, "NAME",
         "training data: 8gaussians, checkerboard, 2spirals, moons, pinwheel, circles, rings, "
         "swissroll, or a file (.csv, .npy, IDX such as *-ubyte; optionally gzipped)",
         1},
        {"--iters", OPT_SIZE, &to.iters, "N", "training iterations (in total, with --resume)", 0},
        {"--batch", OPT_SIZE, &to.batch, "N", "batch size", 1},
        {"--lr", OPT_DOUBLE, &to.lr, "LR", "Adam learning rate", 1},
        {"--weight-decay", OPT_DOUBLE, &to.weight_decay, "W", "Adam weight decay (L2)", 1},
        {"--clip", OPT_DOUBLE, &to.clip, "NORM", "clip the gradient norm (0: no clipping)", 1},
        {"--seed", OPT_U64, &to.seed, "S", "seed of every random draw", 1},
        {"--test-n", OPT_SIZE, &to.test_n, "N",
         "toy sets: held-out points drawn once for the test NLL (data files use their split)", 1},
        {"--test-batch", OPT_SIZE, &to.test_batch, "N", "evaluation batch size", 1},
        {"--val-every", OPT_SIZE, &to.val_every, "N",
         "validate every N iterations and at the end (0: only at the end): test NLL on toy "
         "sets, validation rows of a data file, log Z and ESS for reverse-kl", 1},
        {"--log-every", OPT_SIZE, &to.log_every, "N", "log line every N iterations", 0},
        {"--out", OPT_STR, &to.out, "FILE",
         "save the model with its training state (safetensors; usable with --resume)", 0},
        {"--plot", OPT_STR, &to.plot, "FILE.png",
         "write FFJORD's figure at the end: data, model density, model samples", 0},
        {"--plot-every", OPT_SIZE, &to.plot_every, "N", "also write --plot every N iterations",
         0},
        {"--save-every", OPT_SIZE, &to.save_every, "N",
         "also save --out (atomically, with the training state) every N iterations", 0},
        {"--resume", OPT_STR, &to.resume, "FILE",
         "continue from a model saved with --out: its settings are used unless given here; "
         "run-time options given (solver, tolerances, steps, trace, grad, precision, "
         "regularizers, lr, batch, ...) apply, architecture options must match the file; "
         "--iters is the total to reach (bit-identical to an uninterrupted run, except with "
         "--ema: the average restarts)", 0},
        {"--json", OPT_FLAG, &to.json, NULL,
         "print a JSON object as the last line of stdout, whatever the outcome: status (ok, "
         "diverged, solver_failed, interrupted, time_limit, error), iters, seconds, train_loss, "
         "test_nll, test_nll_stderr, nfe_forward, nfe_backward (means per iteration); with "
         "reverse-kl: elbo, log_z_estimate, ess_fraction, seconds, log_z_true (where known)",
         0},
        {"--objective", OPT_STR, &to.objective, "NAME", objective_help, 1},
        {"--target", OPT_STR, &to.target, "NAME",
         "reverse-kl target: banana, funnel (d=10), ring, mixture, twomoons", 1},
        {"--target-csv", OPT_STR, &to.target_csv, "FILE",
         "reverse-kl target: the posterior of Bayesian logistic regression on a data file (last "
         "column the 0/1 label, other columns standardised features, intercept added)",
         1},
        {"--prior-sd", OPT_DOUBLE, &to.prior_sd, "S", "--target-csv: prior w ~ N(0, S^2 I)", 1},
        {"--fm-variant", OPT_STR, &to.fm_variant, "NAME",
         "flow matching: icfm (independent pairs) or otcfm (minibatch optimal transport)", 1},
        {"--fm-sigma", OPT_DOUBLE, &to.fm_sigma, "S", "flow matching: path noise", 1},
        {"--max-seconds", OPT_DOUBLE, &to.max_seconds, "S",
         "stop after S seconds of training (0: no limit), validating at the stop", 0},
        {"--ema", OPT_DOUBLE, &to.ema, "DECAY",
         "average the weights (exponential moving average with this decay, e.g. 0.999; 0: off): "
         "validation, the final figures and the saved model use the average (--plot-every "
         "pictures between validations show the current weights; --resume starts a new average)",
         1},
    };
    memcpy(table + n_table, mine, sizeof mine);
    n_table += sizeof mine / sizeof *mine;
    n_table += data_opts_table(&dop, table + n_table);
}

static void help(FILE *out)
{
    fprintf(out, "usage: cnf train --data NAME|FILE [options]\n"
                 "       cnf train --objective reverse-kl --target NAME [options]\n\n"
                 "Train a continuous normalizing flow by maximum likelihood on a 2-D toy set or a\n"
                 "data file (--data FILE: see the data options below), as FFJORD's train_toy.py\n"
                 "does for the toy sets (the defaults are its settings: 64-64-64 tanh\n"
                 "concatsquash, exact trace, Dopri5 at 1e-5, adjoint gradients, T = 0.5 trained,\n"
                 "Adam lr 1e-3, weight decay 1e-5, batch 100). --model realnvp (etc.) trains a\n"
                 "discrete flow instead, with --layers steps of --hidden conditioner networks.\n"
                 "--objective flow-matching trains the same CNF field without ODE solves (the\n"
                 "test NLL is still exact, from the solver); its path is defined on the unit\n"
                 "interval, so T is fixed (T = 1 unless --T is given; --train-T is refused).\n"
                 "On a data file it regresses the field in the preprocessed space the CNF\n"
                 "lives in; discrete flows (--model realnvp etc.) have no field to regress.\n"
                 "--objective reverse-kl fits the flow to an unnormalized --target by minimising\n"
                 "KL(p || q/Z), reporting the ELBO and an importance-sampling estimate of log Z\n"
                 "with its effective sample size.\n"
                 "\noptions:\n");
    cli_opts_help(out, table, n_table);
    fprintf(out, "\nProgress: a live line on a terminal (stderr), log lines on stdout otherwise.\n"
                 "Test NLL is the mean -log p in nats over the held-out points, +- its standard\n"
                 "error.\n\n"
                 "A health guard stops a run whose loss or gradient turns non-finite or explodes,\n"
                 "whose optimizer step runs away (e.g. far too large --lr), or whose ODE solver\n"
                 "fails: the message says what happened where and what to try, and --out gets\n"
                 "the last parameters that validated (or the last healthy ones), its metadata\n"
                 "train.status and train.stop_reason saying why. SIGINT or SIGTERM (Ctrl-C)\n"
                 "finishes the current iteration, saves --out and prints the summary; a second\n"
                 "one exits at once. Every model file is written atomically: a failure leaves\n"
                 "the previous file intact. Output paths are checked before any work.\n"
                 "Exit status: 0 ok (or --max-seconds reached), 1 failure (message on stderr),\n"
                 "2 bad options, 130 interrupted.\n");
}

typedef struct run {
    const cnf_toy_type *data;
    double start, loss_sum, nfe_f, nfe_b;
    size_t n_logged, first_iter;
    int tty;
    cnf_flow *flow;
    cnf_trainer *trainer;
    double last_val, last_val_se;
    int has_val;
    cnf_target *target; /* reverse KL, and its settings for the trainer */
    cnf_rkl_params rkl;
    /* --data FILE: the split, its batches, early stopping (also for toy sets with --patience). */
    int file, stopped;
    data_split split;
    data_batch db;
    cnf_early_stop es;
    int save_failed; /* a --save-every checkpoint could not be written */
} run;

static run R;

/* SIGINT / SIGTERM. The first asks the trainer (through its stop callback) to end after the
 * iteration in progress; the run is then saved and summarised. A second one exits at once. Model
 * and picture writes block both signals for their duration, so a second signal that arrives
 * meanwhile takes effect right after the file is complete: the atomic writer never leaves its
 * temporary file behind. The handler only counts (the one file-scope flag a handler needs). */
static volatile sig_atomic_t n_signals;

static void on_signal(int sig)
{
    (void)sig;
    if (n_signals++)
        _exit(130);
}

static int stop_requested(void *ctx)
{
    (void)ctx;
    return n_signals > 0;
}

static struct sigaction old_int, old_term;

static void signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sa.sa_flags = SA_RESTART;
    n_signals = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
}

static void signals_restore(void)
{
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}

static void signals_block(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, old);
}

static const char **saved_pairs(char store[][64]);

/* Save --out (model, training state, options) with the signals held off. */
static int save_out(void)
{
    char store[FLOW_OPTS_MAX + 26 + DATA_OPTS_COUNT][64];
    sigset_t old;
    signals_block(&old);
    int rc = cnf_model_save(to.out, R.flow, R.trainer, saved_pairs(store));
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static int toy_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    return cnf_toy_sample(ctx, n, X, rng);
}

static int write_plot(const char *path)
{
    double *D = malloc(20000 * 2 * sizeof(double));
    if (!D)
        return CNF_ENOMEM;
    cnf_rng r;
    cnf_rng_seed(&r, to.seed ^ 0x5eed0f0f);
    int rc = cnf_toy_sample(R.data, 20000, D, &r);
    sigset_t old;
    signals_block(&old);
    if (!rc)
        rc = cnf_plot_flow(path, R.flow, D, 20000, 100, 20000, &r, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(D);
    return rc;
}

static int progress(const cnf_train_progress *p, void *ctx)
{
    (void)ctx;
    R.loss_sum += p->loss;
    R.nfe_f += (double)p->nfe_forward;
    R.nfe_b += (double)p->nfe_backward;
    R.n_logged++;
    if (p->has_val) {
        R.last_val = R.target ? p->log_z : p->val_nll;
        R.last_val_se = R.target ? p->ess_fraction : p->val_nll_stderr;
        R.has_val = 1;
    }
    int stop = p->has_val && R.es.best && cnf_early_stop_update(&R.es, p->iter, p->val_nll);
    double rate = (double)(p->iter - R.first_iter) / fmax(p->seconds, 1e-9);
    double eta = (double)(p->iters - p->iter) / fmax(rate, 1e-9);
    if (R.tty) {
        fprintf(stderr, "\r  iter %zu/%zu  loss %.4f  nfe %zu/%zu  %.1f it/s  ETA %.0fs   ",
                p->iter, p->iters, p->loss, p->nfe_forward, p->nfe_backward, rate, eta);
        if (p->iter == p->iters)
            fputc('\n', stderr);
    }
    if ((!R.tty && to.log_every && p->iter % to.log_every == 0) || p->has_val) {
        printf("iter %zu/%zu  loss %.4f  nll %.4f  |g| %.3g", p->iter, p->iters, p->loss,
               p->nll, p->grad_norm);
        if (cnf_cflow_settings(R.flow))
            printf("  nfe %zu/%zu  T %.4f", p->nfe_forward, p->nfe_backward,
                   cnf_cflow_end_time(R.flow));
        printf("  %.1f it/s", rate);
        if (p->has_val && R.target)
            printf("  log Z (IS) %.4f  ESS %.1f%%  ELBO %.4f", p->log_z, 100 * p->ess_fraction,
                   p->elbo);
        else if (p->has_val)
            printf("  test nll %.4f +- %.4f", p->val_nll, p->val_nll_stderr);
        printf("\n");
        fflush(stdout);
    }
    if (to.plot && to.plot_every && p->iter % to.plot_every == 0 && p->iter != p->iters) {
        int rc = write_plot(to.plot);
        if (rc)
            return rc;
    }
    if (to.out && to.save_every && p->iter % to.save_every == 0 && p->iter != p->iters) {
        int rc = save_out();
        if (rc) {
            if (R.tty)
                fputc('\n', stderr);
            cli_error(CMD, rc, "saving the --save-every checkpoint");
            R.save_failed = 1;
            return 1;
        }
    }
    if (stop) {
        R.stopped = 1;
        printf("early stop at iteration %zu: no better validation NLL for %zu evaluations "
               "(best %.4f at iteration %zu)\n", p->iter, dop.patience, R.es.best_nll,
               R.es.best_iter);
        return 1;
    }
    return 0;
}

/* --data FILE: load and split it; fit the preprocessing on the training rows and build the
 * flow inside it (unless resuming, when the model file brings its own). 0, 1 or 2. */
static int file_setup(cnf_rng *init)
{
    int u = data_load(CMD, to.data, dop.columns, &dop, to.seed, 1, &R.split);
    if (u)
        return u;
    size_t d = R.split.all.d, ntr = R.split.n_train;
    double levels = dop.levels;
    cnf_rng r;
    cnf_rng_seed(&r, to.seed ^ 0xde9a27ULL); /* the dequantisation noise of fit/val/test */
    if (R.flow) {
        const cnf_pre *p = cnf_pre_flow_pre(R.flow);
        if (cnf_flow_dim(R.flow) != d) {
            fprintf(stderr, "cnf %s: the model has dimension %zu, %s has %zu columns\n", CMD,
                    cnf_flow_dim(R.flow), to.data, d);
            return 1;
        }
        levels = p ? cnf_pre_levels(p) : 0;
    } else {
        cnf_pre_config pc;
        cnf_pre_config_default(&pc);
        pc.drop_constant = dop.drop_constant;
        pc.standardize = dop.standardize;
        pc.levels = dop.levels;
        pc.alpha = dop.alpha;
        pc.pca = dop.pca;
        double *fit = malloc(ntr * d * sizeof(double));
        if (!fit) {
            fprintf(stderr, "cnf %s: out of memory\n", CMD);
            return 1;
        }
        memcpy(fit, R.split.train, ntr * d * sizeof(double));
        /* Integer data are fitted at the middle of their dequantisation cells, so columns that
         * are constant (e.g. border pixels) stay constant and are dropped: their dequantised
         * density is uniform on one cell, log 1 = 0, so dropping them changes no NLL. */
        for (size_t i = 0; levels > 0 && i < ntr * d; i++)
            fit[i] += 0.5;
        cnf_pre *pre;
        int rc = cnf_pre_fit(&pre, &pc, fit, ntr, d);
        free(fit);
        if (rc) {
            cli_error(CMD, rc, "fitting the preprocessing on the training rows");
            return 1;
        }
        cnf_flow *inner;
        if ((u = flow_opts_build(CMD, &fo, cnf_pre_dim(pre), init, &inner))) {
            cnf_pre_free(pre);
            return u;
        }
        if ((rc = cnf_pre_flow_create(&R.flow, pre, inner))) {
            cli_error(CMD, rc, "preprocessing");
            return 1;
        }
    }
    if (levels > 0) /* one fixed noise draw for the held-out rows, fresh noise per batch */
        cnf_data_dequantize(R.split.val, R.split.n_val + R.split.n_test, d, &r);
    R.db = (data_batch){R.split.train, ntr, d, levels};
    printf("%s: %zu rows x %zu columns (train %zu, validation %zu, test %zu), modelled in %zu "
           "dimensions%s\n", to.data, R.split.all.n, d, ntr, R.split.n_val, R.split.n_test,
           cnf_pre_dim(cnf_pre_flow_pre(R.flow)),
           cnf_pre_is_projection(cnf_pre_flow_pre(R.flow)) ? " (PCA: NLL in PCA space)" : "");
    return 0;
}

/* With --resume, take every saved option from the model file unless given on the command line. */
static int apply_saved(const cnf_st_file *file)
{
    for (size_t i = 0; i < n_table; i++) {
        if (!table[i].saved || cli_opt_given(table, &table[i]))
            continue;
        char key[64];
        snprintf(key, sizeof key, "user.%s", table[i].name + 2);
        const char *v = cnf_st_meta(file, key);
        if (v && cli_opt_set(CMD, &table[i], v))
            return 2;
    }
    return 0;
}

static cli_opt *find_opt(const char *name)
{
    for (size_t i = 0; i < n_table; i++)
        if (!strcmp(table[i].name, name))
            return &table[i];
    return NULL;
}

/* The options that make the model what it is (its parameters' shapes and meaning, and the
 * preprocessing stored with it): --resume refuses a value other than the file's. */
static int is_architecture(const char *name)
{
    static const char *const names[] = {
        "--model", "--hidden", "--act", "--time", "--blocks", "--T", "--train-T", "--layers",
        "--bins", "--bound", "--batchnorm", "--standardize", "--drop-constant", "--dequantize",
        "--alpha", "--pca"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i]))
            return 1;
    return 0;
}

/* --resume: 2 after a message naming every architecture option given with another value than
 * the file's. */
static int check_architecture(const cnf_st_file *file)
{
    char bad[1024] = "";
    for (size_t i = 0; i < n_table; i++) {
        if (!table[i].saved || !is_architecture(table[i].name) || !cli_opt_given(table, &table[i]))
            continue;
        char key[64], buf[64];
        snprintf(key, sizeof key, "user.%s", table[i].name + 2);
        const char *was = cnf_st_meta(file, key), *now = cli_opt_format(&table[i], buf, sizeof buf);
        if (!was || !now || !strcmp(was, now))
            continue;
        size_t len = strlen(bad);
        snprintf(bad + len, sizeof bad - len, "%s%s %s (the model has %s)", len ? ", " : "",
                 table[i].name, now, was);
    }
    if (!*bad)
        return 0;
    fprintf(stderr, "cnf %s: --resume %s: the architecture cannot change when resuming: %s; "
            "leave these options out, or train a new model\n", CMD, to.resume, bad);
    return 2;
}

/* --resume: the checkpoint's iteration must be below --iters (the total to reach). */
static int check_iterations(const cnf_st_file *file)
{
    const char *v = cnf_st_meta(file, "train.iter");
    unsigned long long done = v ? strtoull(v, NULL, 10) : 0;
    if (!v || (unsigned long long)to.iters > done)
        return 0;
    fprintf(stderr, "cnf %s: --resume %s is at iteration %llu already: --iters %zu is the total "
            "to reach, give more than %llu\n", CMD, to.resume, done, to.iters, done);
    return 2;
}

/* --resume: put the run-time options (the saved ones, overridden by those given) into the loaded
 * flow, and say which were given. 0, 1 or 2 after a message. */
static int apply_runtime(void)
{
    char applied[1024] = "", ignored[512] = "";
    cnf_flow *inner = cnf_pre_flow_inner(R.flow) ? cnf_pre_flow_inner(R.flow) : R.flow;
    cnf_cflow_config *s = cnf_cflow_settings(inner);
    for (size_t i = 0; i < n_table; i++) {
        if (!table[i].saved || is_architecture(table[i].name) || !cli_opt_given(table, &table[i]))
            continue;
        char buf[64];
        const char *v = cli_opt_format(&table[i], buf, sizeof buf);
        if (table[i].kind == OPT_DOUBLE)
            snprintf(buf, sizeof buf, "%g", *(double *)table[i].ptr);
        char *list = !s && i < n_flow_opts ? ignored : applied;
        size_t cap = list == ignored ? sizeof ignored : sizeof applied, len = strlen(list);
        snprintf(list + len, cap - len, "%s%s %s", len ? ", " : "", table[i].name, v ? v : "");
    }
    if (s) {
        cnf_cflow_config cfg;
        size_t *hidden;
        int u = flow_opts_config(CMD, &fo, s->dim, &cfg, &hidden);
        free(hidden);
        if (u)
            return u;
        if (cfg.probes == 0 || !(cfg.reg_kinetic >= 0) || !(cfg.reg_jacobian >= 0)) {
            fprintf(stderr, "cnf %s: --probes must be >= 1 and the regularizer weights >= 0\n",
                    CMD);
            return 2;
        }
        s->trace = cfg.trace;
        s->probes = cfg.probes;
        s->reg_kinetic = cfg.reg_kinetic;
        s->reg_jacobian = cfg.reg_jacobian;
        s->grad = cfg.grad;
        s->train = cfg.train;
        s->eval = cfg.eval;
        if (cfg.precision != s->precision) { /* fixed when the MLP is built: build it anew */
            if (inner != R.flow) {
                fprintf(stderr, "cnf %s: --precision cannot change when resuming a model with "
                        "preprocessing (data files)\n", CMD);
                return 2;
            }
            cnf_cflow_config nc = *s;
            nc.precision = cfg.precision;
            cnf_rng r;
            cnf_rng_seed(&r, 0);
            cnf_flow *nf;
            int rc = cnf_cflow_create(&nf, &nc, &r);
            if (rc) {
                cli_error(CMD, rc, "rebuilding the model for --precision");
                return 1;
            }
            memcpy(cnf_flow_params(nf), cnf_flow_params(R.flow),
                   cnf_flow_n_params(nf) * sizeof(double));
            cnf_flow_free(R.flow);
            R.flow = nf;
        }
    }
    printf("resuming %s: %s%s%s\n", to.resume, *applied ? "applied " : "",
           *applied ? applied : "the saved settings", *applied ? "; the rest as saved" : "");
    if (*ignored)
        printf("(a discrete flow solves no ODE: %s has no effect)\n", ignored);
    return 0;
}

/* The saved options as metadata pairs: "key", "value", …, NULL. Strings point into store. */
static const char **saved_pairs(char store[][64])
{
    static const char *pairs[2 * (FLOW_OPTS_MAX + 26 + DATA_OPTS_COUNT) + 1];
    size_t k = 0;
    for (size_t i = 0; i < n_table; i++) {
        if (!table[i].saved)
            continue;
        const char *v = cli_opt_format(&table[i], store[i], 64);
        if (!v)
            continue;
        pairs[k++] = table[i].name + 2;
        pairs[k++] = v;
    }
    pairs[k] = NULL;
    return pairs;
}

/* ---- how a run ended ------------------------------------------------------------------------ */

typedef struct outcome {
    cnf_train_status st;
    char reason[1200]; /* why it stopped early ("" if it did not) */
} outcome;

/* After cnf_trainer_run returned rc: the status, with a message on stderr for a failure. */
static void outcome_of_run(outcome *o, int rc)
{
    o->st = cnf_trainer_status(R.trainer);
    snprintf(o->reason, sizeof o->reason, "%s", cnf_trainer_stop_reason(R.trainer));
    if (o->st == CNF_TRAIN_STOPPED && R.stopped && !R.save_failed) { /* early stopping */
        o->st = CNF_TRAIN_OK;
        o->reason[0] = '\0';
    } else if (o->st == CNF_TRAIN_STOPPED) { /* a --plot-every or --save-every write failed */
        o->st = CNF_TRAIN_ERROR;
        snprintf(o->reason, sizeof o->reason, "a file written during training failed at "
                 "iteration %zu", cnf_trainer_iter(R.trainer));
        return; /* the message is on stderr already */
    }
    if (o->st == CNF_TRAIN_OK && n_signals) { /* the signal came after the last iteration */
        o->st = CNF_TRAIN_INTERRUPTED;
        snprintf(o->reason, sizeof o->reason, "interrupted after iteration %zu",
                 cnf_trainer_iter(R.trainer));
    }
    if (rc && rc != 1) {
        if (R.tty)
            fputc('\n', stderr);
        cli_error(CMD, rc, "training stopped");
    } else if (o->st == CNF_TRAIN_INTERRUPTED) {
        if (R.tty)
            fputc('\n', stderr);
        fprintf(stderr, "cnf %s: %s (signal): finishing\n", CMD, o->reason);
    }
}

/* A later step (final evaluation, saving, the picture) failed. */
static void outcome_fail(outcome *o, int rc, const char *what)
{
    cli_error(CMD, rc, what);
    if (o->st == CNF_TRAIN_OK || o->st == CNF_TRAIN_TIME_LIMIT) {
        o->st = CNF_TRAIN_ERROR;
        snprintf(o->reason, sizeof o->reason, "%s: %s", what, cnf_errmsg());
    }
}

static int outcome_good(const outcome *o)
{
    return o->st == CNF_TRAIN_OK || o->st == CNF_TRAIN_TIME_LIMIT;
}

/* Save --out after the run: always when it ended well or the guard stopped it (the last good
 * parameters, for inspection or --resume), and after an interruption or another failure only if
 * this run got anywhere, so that an earlier file is not replaced by the same or an untrained
 * model. */
static void outcome_save(outcome *o)
{
    if (!to.out)
        return;
    const int guard = o->st == CNF_TRAIN_DIVERGED || o->st == CNF_TRAIN_SOLVER_FAILED;
    if (!outcome_good(o) && !guard && cnf_trainer_iter(R.trainer) == R.first_iter) {
        printf("nothing trained in this run: %s left as it was\n", to.out);
        return;
    }
    int rc = save_out();
    if (rc) {
        outcome_fail(o, rc, "saving --out");
        return;
    }
    if (outcome_good(o))
        printf("saved %s\n", to.out);
    else
        printf("saved %s at iteration %zu (%s: stopped early, see its train.stop_reason)\n",
               to.out, cnf_trainer_iter(R.trainer), cnf_train_status_name(o->st));
}

/* The exit status: 0 ok or time limit, 130 interrupted, 1 otherwise. */
static int outcome_exit(const outcome *o)
{
    return outcome_good(o) ? 0 : o->st == CNF_TRAIN_INTERRUPTED ? 130 : 1;
}

static void json_status(const outcome *o)
{
    printf("{\"status\":");
    cli_json_string(stdout, cnf_train_status_name(o->st));
    if (o->reason[0]) {
        printf(",\"stop_reason\":");
        cli_json_string(stdout, o->reason);
    }
}

/* --objective reverse-kl: fit the flow to --target; no data. */
static int run_reverse_kl(cnf_st_file *file)
{
    int rc = to.target_csv ? cnf_target_logreg_file(&R.target, to.target_csv, to.prior_sd)
                           : cnf_target_create(to.target, &R.target);
    if (rc) {
        fprintf(stderr, "cnf %s: %s: %s\n", CMD, to.target_csv ? "--target-csv" : "--target",
                cnf_errmsg());
        return to.target_csv && rc != CNF_ENAME ? 1 : 2;
    }
    const char *tname = to.target_csv ? to.target_csv : to.target;
    const size_t d = cnf_target_dim(R.target);
    cnf_rng init;
    cnf_rng_seed(&init, to.seed);
    int u;
    if (!R.flow && (u = flow_opts_build(CMD, &fo, d, &init, &R.flow)))
        return u;
    if (cnf_flow_dim(R.flow) != d) {
        fprintf(stderr, "cnf %s: the model has dimension %zu, target %s has %zu\n", CMD,
                cnf_flow_dim(R.flow), tname, d);
        return 1;
    }
    if (to.plot && d != 2) {
        fprintf(stderr, "cnf %s: --plot draws 2-D targets only (%s has %zu dimensions)\n", CMD,
                tname, d);
        return 2;
    }
    R.rkl = (cnf_rkl_params){.logq = cnf_target_logq, .ctx = R.target};
    cnf_train_config tc = {.iters = to.iters, .batch = to.batch, .clip_norm = to.clip,
                           .val_every = to.val_every ? to.val_every : to.iters,
                           .val_n = to.test_n, .objective = cnf_objective_rkl,
                           .objective_params = &R.rkl, .progress = progress,
                           .max_seconds = to.max_seconds, .stop = stop_requested};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = to.lr;
    tc.optim.weight_decay = to.weight_decay;
    tc.ema_decay = to.ema;
    if ((rc = cnf_trainer_create(&R.trainer, R.flow, &tc, to.seed))) {
        cli_error(CMD, rc, "setting up training");
        return 2;
    }
    if (file && (rc = cnf_model_restore_trainer(file, R.trainer))) {
        cli_error(CMD, rc, "restoring the training state of --resume");
        return 1;
    }
    R.first_iter = cnf_trainer_iter(R.trainer);
    R.tty = isatty(2);
    printf("cnf train: reverse KL to %s (d = %zu), %s flow with %zu parameters, batch %zu, "
           "seed %llu\n", tname, d, cnf_flow_kind(R.flow), cnf_flow_n_params(R.flow),
           to.batch, (unsigned long long)to.seed);
    fflush(stdout);
    R.start = cli_now();
    rc = cnf_trainer_run(R.trainer);
    double seconds = cli_now() - R.start, log_z = NAN, ess = NAN, elbo = NAN;
    outcome o;
    outcome_of_run(&o, rc);
    cnf_rng r;
    cnf_rng_seed(&r, to.seed ^ 0x15a3b1eULL);
    if (outcome_good(&o) &&
        (rc = cnf_flow_importance(R.flow, to.test_n, &r, cnf_target_logq, R.target, &log_z,
                                  &ess, &elbo)))
        outcome_fail(&o, rc, "estimating log Z at the end");
    double truth = cnf_target_log_z(R.target);
    outcome_save(&o);
    if (to.plot && outcome_good(&o)) {
        sigset_t old;
        signals_block(&old);
        rc = cnf_plot_target(to.plot, R.flow, cnf_target_logq, R.target, 100, 20000, &r, NULL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (rc)
            outcome_fail(&o, rc, "writing --plot");
        else
            printf("wrote %s\n", to.plot);
    }
    char true_z[48] = "unknown";
    if (!isnan(truth))
        snprintf(true_z, sizeof true_z, "%.4f", truth);
    if (outcome_good(&o))
        printf("done: %zu iterations in %.1f s; over %zu samples: ELBO %.4f, log Z by "
               "importance sampling %.4f (true %s), ESS %.1f%%\n",
               cnf_trainer_iter(R.trainer), seconds, to.test_n, elbo, log_z, true_z, 100 * ess);
    else
        printf("stopped (%s) at iteration %zu after %.1f s\n", cnf_train_status_name(o.st),
               cnf_trainer_iter(R.trainer), seconds);
    if (to.json) {
        size_t n = R.n_logged ? R.n_logged : 1;
        json_status(&o);
        printf(",\"objective\":\"reverse-kl\",\"target\":");
        cli_json_string(stdout, tname);
        printf(",\"iters\":%zu,\"seconds\":", cnf_trainer_iter(R.trainer));
        cli_json_number(stdout, seconds);
        printf(",\"elbo\":");
        cli_json_number(stdout, elbo);
        printf(",\"log_z_estimate\":");
        cli_json_number(stdout, log_z);
        printf(",\"ess_fraction\":");
        cli_json_number(stdout, ess);
        if (!isnan(truth)) {
            printf(",\"log_z_true\":");
            cli_json_number(stdout, truth);
        }
        printf(",\"nfe_forward\":");
        cli_json_number(stdout, R.nfe_f / n);
        printf(",\"nfe_backward\":");
        cli_json_number(stdout, R.nfe_b / n);
        printf(",\"seed\":%llu}\n", (unsigned long long)to.seed);
    }
    return outcome_exit(&o);
}

int cmd_train(int argc, char **argv)
{
    flow_opts_default(&fo);
    data_opts_default(&dop);
    memset(&to, 0, sizeof to);
    to.iters = 1000;
    to.batch = 100;
    to.lr = 1e-3;
    to.weight_decay = 1e-5;
    to.test_n = 5000;
    to.test_batch = 1000;
    to.val_every = 100;
    to.log_every = 100;
    to.objective = "ml";
    to.prior_sd = 1.0;
    to.fm_variant = "icfm";
    build_table();
    int u = cli_opts_parse(CMD, table, n_table, argc, argv, help);
    if (u)
        return u == 1 ? 0 : 2;
    /* Output paths first: a bad one must not cost a training run. */
    if ((u = cli_check_output_path(CMD, "--out", to.out)) ||
        (u = cli_check_output_path(CMD, "--plot", to.plot)))
        return u;
    if (to.save_every && !to.out) {
        fprintf(stderr, "cnf %s: --save-every needs --out FILE\n", CMD);
        return 2;
    }

    memset(&R, 0, sizeof R);
    cnf_st_file *file = NULL;
    int status = 1, rc;
    double *test = NULL;
    signals_install();
    if (to.resume) {
        rc = cnf_model_load(to.resume, &R.flow, &file);
        if (rc) {
            cli_error(CMD, rc, "loading --resume");
            signals_restore();
            return 1;
        }
        if ((u = check_architecture(file)) || (u = check_iterations(file)) ||
            (u = apply_saved(file))) {
            status = u;
            goto done;
        }
    }
    const cnf_objective_type *objective;
    if (cnf_objective_from_name(to.objective, &objective)) {
        fprintf(stderr, "cnf %s: --objective: %s\n", CMD, cnf_errmsg());
        status = 2;
        goto done;
    }
    cnf_fm_params fmp = {.variant = CNF_FM_ICFM, .sigma = to.fm_sigma};
    const int flow_matching = objective == cnf_objective_fm;
    if (flow_matching && (cnf_fm_variant_from_name(to.fm_variant, &fmp.variant) ||
                          !(to.fm_sigma >= 0))) {
        fprintf(stderr, "cnf %s: --fm-variant icfm|otcfm and --fm-sigma >= 0\n", CMD);
        status = 2;
        goto done;
    }
    /* Flow matching's path lives on the unit interval: T is fixed, 1 unless --T is given. */
    const cli_opt *train_T = find_opt("--train-T"), *T_opt = find_opt("--T");
    if (flow_matching && cli_opt_given(table, train_T) && fo.train_T) {
        fprintf(stderr, "cnf %s: --objective flow-matching holds the end time fixed (T = 1, or "
                "--T): --train-T is not available with it\n", CMD);
        status = 2;
        goto done;
    }
    if (flow_matching && !to.resume) {
        if (!cli_opt_given(table, train_T))
            fo.train_T = 0;
        if (!cli_opt_given(table, T_opt))
            fo.T = 1.0;
    }
    if (flow_matching && to.resume && cnf_flow_velocity_check(R.flow)) {
        fprintf(stderr, "cnf %s: --resume %s cannot be trained by flow matching: %s\n", CMD,
                to.resume, cnf_errmsg());
        status = 2;
        goto done;
    }
    if (to.resume && (u = apply_runtime())) {
        status = u;
        goto done;
    }
    if (objective == cnf_objective_rkl) {
        if (!to.target == !to.target_csv || to.data || !(to.prior_sd > 0)) {
            fprintf(stderr, "cnf %s: --objective reverse-kl needs --target NAME or --target-csv "
                    "FILE (not both), no --data, and --prior-sd > 0\n", CMD);
            status = 2;
        } else {
            status = run_reverse_kl(file);
        }
        goto done;
    }
    if (!to.data) {
        fprintf(stderr, "cnf %s: --data NAME is required (see cnf %s --help)\n", CMD, CMD);
        status = 2;
        goto done;
    }
    const cnf_toy_type *data = NULL;
    R.file = data_is_file(to.data);
    if (R.file && to.plot) {
        fprintf(stderr, "cnf %s: --plot draws 2-D toy sets only\n", CMD);
        status = 2;
        goto done;
    }
    if (!R.file && (rc = cnf_toy_from_name(to.data, &data))) {
        fprintf(stderr, "cnf %s: --data: %s\n", CMD, cnf_errmsg());
        status = 2;
        goto done;
    }
    R.data = data;
    if (to.batch == 0 || to.test_n == 0) {
        fprintf(stderr, "cnf %s: --batch and --test-n must be positive\n", CMD);
        status = 2;
        goto done;
    }
    if ((u = cli_check_count(CMD, "--test-n", to.test_n, 2 * sizeof(double))) ||
        (u = cli_check_count(CMD, "--batch", to.batch, 2 * sizeof(double)))) {
        status = u;
        goto done;
    }
    cnf_rng init;
    cnf_rng_seed(&init, to.seed);
    if (R.file && (u = file_setup(&init))) {
        status = u;
        goto done;
    }
    if (!R.flow && (u = flow_opts_build(CMD, &fo, 2, &init, &R.flow))) {
        status = u;
        goto done;
    }
    /* The held-out set: drawn once from its own stream, so it is the same for every run with
     * this seed and does not disturb the training stream. */
    test = R.file ? NULL : malloc(to.test_n * 2 * sizeof(double));
    if (!test && !R.file) {
        fprintf(stderr, "cnf %s: out of memory for %zu test points\n", CMD, to.test_n);
        goto done;
    }
    cnf_rng tr;
    cnf_rng_seed(&tr, to.seed ^ 0x7e57da7aULL);
    if (!R.file)
        cnf_toy_sample(data, to.test_n, test, &tr);

    cnf_train_config tc = {.iters = to.iters, .batch = to.batch, .clip_norm = to.clip,
                           .val_every = to.val_every ? to.val_every : to.iters,
                           .val_X = test, .val_n = to.test_n, .val_batch = to.test_batch,
                           .next_batch = toy_batch, .batch_ctx = (void *)data,
                           .progress = progress, .objective = objective,
                           .objective_params = flow_matching ? &fmp : NULL,
                           .max_seconds = to.max_seconds, .stop = stop_requested};
    if (R.file) { /* validate on the validation rows (the test rows if there are none) */
        tc.val_X = R.split.n_val ? R.split.val : R.split.test;
        tc.val_n = R.split.n_val ? R.split.n_val : R.split.n_test;
        tc.next_batch = data_batch_fn;
        tc.batch_ctx = &R.db;
        if (tc.val_n == 0)
            tc.val_every = 0;
    }
    if ((R.file || dop.patience) && tc.val_every &&
        (rc = cnf_early_stop_init(&R.es, R.flow, dop.patience))) {
        cli_error(CMD, rc, "early stopping");
        goto done;
    }
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = to.lr;
    tc.optim.weight_decay = to.weight_decay;
    tc.ema_decay = to.ema;
    if ((rc = cnf_trainer_create(&R.trainer, R.flow, &tc, to.seed))) {
        cli_error(CMD, rc, "setting up training");
        status = 2;
        goto done;
    }
    if (file && (rc = cnf_model_restore_trainer(file, R.trainer))) {
        cli_error(CMD, rc, "restoring the training state of --resume");
        goto done;
    }
    R.first_iter = cnf_trainer_iter(R.trainer);
    R.tty = isatty(2);
    printf("cnf train: %s, %s flow with %zu parameters, %s, batch %zu, seed %llu, from "
           "iteration %zu to %zu\n",
           to.data, cnf_flow_kind(R.flow), cnf_flow_n_params(R.flow),
           cnf_cflow_settings(R.flow) ? fo.solver : "no ODE solver", to.batch,
           (unsigned long long)to.seed, R.first_iter, to.iters);
    fflush(stdout);
    R.start = cli_now();
    rc = cnf_trainer_run(R.trainer);
    double seconds = cli_now() - R.start;
    outcome o;
    outcome_of_run(&o, rc);
    if (outcome_good(&o) && R.es.best && R.es.best_nll < INFINITY) {
        cnf_early_stop_restore(&R.es); /* keep the best parameters, as FFJORD's tabular runs */
        printf("kept the parameters of iteration %zu (validation NLL %.4f)\n", R.es.best_iter,
               R.es.best_nll);
    }
    double bpd = NAN;
    if (outcome_good(&o) && R.file && R.split.n_test) {
        rc = cnf_flow_eval_nll(R.flow, R.split.test, R.split.n_test, to.test_batch,
                               &R.last_val, &R.last_val_se, NULL);
        R.has_val = rc == CNF_OK;
        const cnf_pre *p = cnf_pre_flow_pre(R.flow);
        if (!rc && p && cnf_pre_levels(p) > 0)
            bpd = R.last_val / ((double)cnf_pre_dim(p) * log(2.0));
        if (rc)
            outcome_fail(&o, rc, "evaluating the test rows");
        else
            printf("test NLL %.4f +- %.4f nats over %zu rows (%s)", R.last_val, R.last_val_se,
                   R.split.n_test, cnf_pre_is_projection(p) ? "in PCA space" : "in data space");
        if (!rc && isfinite(bpd))
            printf(", %.4f bits/dim over %zu modelled dimensions", bpd, cnf_pre_dim(p));
        if (!rc)
            printf("\n");
    }
    outcome_save(&o);
    if (to.plot && outcome_good(&o)) {
        if ((rc = write_plot(to.plot)))
            outcome_fail(&o, rc, "writing --plot");
        else
            printf("wrote %s\n", to.plot);
    }
    size_t n = R.n_logged ? R.n_logged : 1;
    char nll[96] = "no validation yet";
    if (R.has_val)
        snprintf(nll, sizeof nll, "test NLL %.4f +- %.4f nats", R.last_val, R.last_val_se);
    if (outcome_good(&o))
        printf("done: ");
    else
        printf("stopped (%s): ", cnf_train_status_name(o.st));
    printf("%zu iterations in %.1f s, %s, NFE per iteration %.1f forward, %.1f backward\n",
           cnf_trainer_iter(R.trainer), seconds, nll, R.nfe_f / n, R.nfe_b / n);
    if (to.json) {
        json_status(&o);
        printf(",\"data\":");
        cli_json_string(stdout, to.data);
        printf(",\"model\":");
        cli_json_string(stdout, cnf_flow_kind(cnf_pre_flow_inner(R.flow) ? cnf_pre_flow_inner(R.flow)
                                                                          : R.flow));
        printf(",\"iters\":%zu,\"seconds\":", cnf_trainer_iter(R.trainer));
        cli_json_number(stdout, seconds);
        printf(",\"train_loss\":");
        cli_json_number(stdout, R.n_logged ? R.loss_sum / n : NAN);
        printf(",\"test_nll\":");
        cli_json_number(stdout, R.has_val ? R.last_val : NAN);
        printf(",\"test_nll_stderr\":");
        cli_json_number(stdout, R.has_val ? R.last_val_se : NAN);
        printf(",\"nfe_forward\":");
        cli_json_number(stdout, R.nfe_f / n);
        printf(",\"nfe_backward\":");
        cli_json_number(stdout, R.nfe_b / n);
        if (R.file) {
            printf(",\"bits_per_dim\":");
            cli_json_number(stdout, bpd);
            printf(",\"best_iter\":%zu,\"val_nll\":", R.es.best_iter);
            cli_json_number(stdout, R.es.best_nll);
            printf(",\"n_train\":%zu,\"n_test\":%zu", R.split.n_train, R.split.n_test);
        }
        printf(",\"seed\":%llu}\n", (unsigned long long)to.seed);
    }
    status = outcome_exit(&o);
done:
    fflush(stdout);
    signals_restore();
    cnf_trainer_free(R.trainer);
    cnf_flow_free(R.flow);
    cnf_st_free(file);
    free(test);
    cnf_early_stop_free(&R.es);
    data_split_free(&R.split);
    cnf_target_free(R.target);
    return status;
}
