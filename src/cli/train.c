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
#include "train_cmd.h"

static const train_ctx *help_ctx; /* for help(), which cli_opts_parse calls without a context */

static void build_table(train_ctx *c)
{
    c->n_table = c->n_flow_opts = flow_opts_table(&c->fo, c->table);
    size_t len = (size_t)snprintf(c->objective_help, sizeof c->objective_help, "what to minimise:");
    for (size_t i = 0; i < cnf_objective_count() && len < sizeof c->objective_help; i++)
        len += (size_t)snprintf(c->objective_help + len, sizeof c->objective_help - len, "%s %s: %s",
                                i ? ";" : "", cnf_objective_name(cnf_objective_at(i)),
                                cnf_objective_summary(cnf_objective_at(i)));
    const cli_opt mine[] = {
        {"--data", OPT_STR, &c->to.data, "NAME",
         "training data: 8gaussians, checkerboard, 2spirals, moons, pinwheel, circles, rings, "
         "swissroll, or a file (.csv, .npy, IDX such as *-ubyte; optionally gzipped)",
         1},
        {"--iters", OPT_SIZE, &c->to.iters, "N", "training iterations (in total, with --resume)", 0},
        {"--batch", OPT_SIZE, &c->to.batch, "N", "batch size", 1},
        {"--lr", OPT_DOUBLE, &c->to.lr, "LR", "Adam learning rate", 1},
        {"--lr-schedule", OPT_STR, &c->to.lr_schedule, "NAME",
         "learning-rate schedule: constant (the default: --lr throughout) or cosine (from --lr "
         "to --lr-final along a half cosine of the elapsed fraction of the run: of --max-seconds "
         "when given, else of the iterations; with --fine-tune each phase has its own)", 1},
        {"--lr-final", OPT_DOUBLE, &c->to.lr_final, "LR",
         "--lr-schedule cosine: the learning rate at the end (0 <= LR <= --lr)", 2},
        {"--weight-decay", OPT_DOUBLE, &c->to.weight_decay, "W", "Adam weight decay (L2)", 1},
        {"--clip", OPT_DOUBLE, &c->to.clip, "NORM", "clip the gradient norm (0: no clipping)", 1},
        {"--seed", OPT_U64, &c->to.seed, "S", "seed of every random draw", 1},
        {"--test-n", OPT_SIZE, &c->to.test_n, "N",
         "toy sets: held-out points drawn once for the test NLL (data files use their split)", 1},
        {"--test-batch", OPT_SIZE, &c->to.test_batch, "N", "evaluation batch size", 1},
        {"--val-every", OPT_SIZE, &c->to.val_every, "N",
         "validate every N iterations and at the end (0: only at the end): test NLL on toy "
         "sets, validation rows of a data file, log Z and ESS for reverse-kl", 1},
        {"--val-n", OPT_SIZE, &c->to.val_n, "N",
         "data files: validate on the first N validation rows of the split (a fixed random "
         "subset; 0: all); the final test NLL uses all test rows", 2},
        {"--log-every", OPT_SIZE, &c->to.log_every, "N", "log line every N iterations", 0},
        {"--out", OPT_STR, &c->to.out, "FILE",
         "save the model with its training state (safetensors; usable with --resume)", 0},
        {"--plot", OPT_STR, &c->to.plot, "FILE.png",
         "write FFJORD's figure at the end: data, model density, model samples", 0},
        {"--plot-every", OPT_SIZE, &c->to.plot_every, "N", "also write --plot every N iterations",
         0},
        {"--save-every", OPT_SIZE, &c->to.save_every, "N",
         "also save --out (atomically, with the training state) every N iterations", 0},
        {"--resume", OPT_STR, &c->to.resume, "FILE",
         "continue from a model saved with --out: its settings are used unless given here; "
         "run-time options given (solver, tolerances, steps, trace, grad, precision, "
         "regularizers, lr, batch, ...) apply, architecture options must match the file; "
         "--iters is the total to reach (bit-identical to an uninterrupted run, except with "
         "--ema: the average restarts)", 0},
        {"--json", OPT_FLAG, &c->to.json, NULL,
         "print a JSON object as the last line of stdout once training has started, whatever "
         "its outcome (a run refused before that - bad options, unreadable data - only prints "
         "its error on stderr and exits 1 or 2): status (ok, "
         "diverged, solver_failed, interrupted, time_limit, error), iters, seconds (wall-clock "
         "of the whole command), max_seconds (null without a limit), train_loss (the mean loss "
         "of the last 100 iterations, or of all if fewer ran), test_nll, test_nll_stderr, "
         "nfe_forward, nfe_backward (means per iteration); data files also: bits_per_dim, "
         "best_iter and val_nll (null without validation rows), n_train, n_test; with "
         "reverse-kl, instead of train_loss, test_nll and its stderr: elbo, log_z_estimate, "
         "ess_fraction, log_z_true (where known); with --fine-tune also fm_iters and ml_iters, the "
         "iterations of each phase",
         0},
        {"--objective", OPT_STR, &c->to.objective, "NAME", c->objective_help, 1},
        {"--target", OPT_STR, &c->to.target, "NAME",
         "reverse-kl target: banana, funnel (d=10), ring, mixture, twomoons", 1},
        {"--target-csv", OPT_STR, &c->to.target_csv, "FILE",
         "reverse-kl target: the posterior of Bayesian logistic regression on a data file (last "
         "column the 0/1 label, other columns standardised features, intercept added)",
         1},
        {"--prior-sd", OPT_DOUBLE, &c->to.prior_sd, "S", "--target-csv: prior w ~ N(0, S^2 I)", 1},
        {"--fm-variant", OPT_STR, &c->to.fm_variant, "NAME",
         "flow matching: icfm (independent pairs) or otcfm (minibatch optimal transport)", 1},
        {"--fm-sigma", OPT_DOUBLE, &c->to.fm_sigma, "S", "flow matching: path noise", 1},
        {"--max-seconds", OPT_DOUBLE, &c->to.max_seconds, "S",
         "wall-clock budget of the whole command (0: no limit), counted from its start (the "
         "process's own start, a few tens of milliseconds, is not counted): loading the data, "
         "training, the final validation and the test evaluation all fit in it; training stops "
         "early enough for the evaluations, whose time is estimated from the validations so "
         "far; the JSON's status is then time_limit", 0},
        {"--fine-tune", OPT_DOUBLE, &c->to.fine_tune, "F",
         "--objective flow-matching: train the last fraction F (0 <= F < 1) of the iterations, "
         "and with --max-seconds of the time, by maximum likelihood, starting from the "
         "flow-matching parameters (the best validated ones on a data file): own learning rate "
         "--fine-tune-lr, Hutchinson (Rademacher) trace in more than 2 dimensions unless --trace "
         "is given (the evaluation trace stays), the regularizers --reg-kinetic and "
         "--reg-jacobian, T fixed; a new Adam state and --ema average, the cosine schedule "
         "restarts; model selection spans both phases; not with --resume", 2},
        {"--fine-tune-lr", OPT_DOUBLE, &c->to.fine_tune_lr, "LR",
         "--fine-tune: its learning rate (0: --lr / 10; --lr-final scales with it)", 2},
        {"--ema", OPT_DOUBLE, &c->to.ema, "DECAY",
         "average the weights (exponential moving average with this decay, e.g. 0.999; 0: off): "
         "validation, the final figures and the saved model use the average (--plot-every "
         "pictures between validations show the current weights; --resume starts a new average)",
         1},
        {"--progress-every", OPT_DOUBLE, &c->to.progress_every, "S",
         "when stderr is not a terminal: a progress line there every S seconds until the first "
         "log line (0: none; a terminal gets a live line instead)", 0},
    };
    _Static_assert(sizeof mine / sizeof *mine <= TRAIN_OPTS_MAX, "raise TRAIN_OPTS_MAX");
    memcpy(c->table + c->n_table, mine, sizeof mine);
    c->n_table += sizeof mine / sizeof *mine;
    c->n_table += data_opts_table(&c->dop, c->table + c->n_table);
}

static void help(FILE *out)
{
    const train_ctx *c = help_ctx;
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
    cli_opts_help(out, c->table, c->n_table);
    fprintf(out, "\nProgress: a live line on a terminal (stderr), log lines on stdout otherwise\n"
                 "(and on stderr a progress line every --progress-every seconds until the first\n"
                 "of them). A CNF's log lines show the NFE of the iteration (forward/backward)\n"
                 "and the current end time T. Test NLL is the mean -log p in nats over the\n"
                 "held-out points, +- its standard error.\n\n"
                 "Model selection: on a toy set validation is the test NLL of --test-n fresh\n"
                 "points; on a data file it is the NLL of the validation rows (\"val nll\"), the\n"
                 "parameters of the best validation are kept and then scored once on the test\n"
                 "rows. With --val-frac 0 there are no validation rows: nothing is selected (the\n"
                 "test rows are never used to choose), the final parameters (the average with\n"
                 "--ema) are kept, and --patience is refused.\n\n"
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

static int toy_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    return cnf_toy_sample(ctx, n, X, rng);
}

int train_lr_schedule(const train_ctx *c, cnf_train_config *tc)
{
    if (c->to.lr_schedule && cnf_lr_schedule_from_name(c->to.lr_schedule, &tc->lr_schedule)) {
        fprintf(stderr, "cnf %s: --lr-schedule: %s\n", CMD, cnf_errmsg());
        return 2;
    }
    if (tc->lr_schedule == CNF_LR_CONSTANT && c->to.lr_final != 0) {
        fprintf(stderr, "cnf %s: --lr-final needs --lr-schedule cosine\n", CMD);
        return 2;
    }
    if (!(c->to.lr_final >= 0 && c->to.lr_final <= c->to.lr)) {
        fprintf(stderr, "cnf %s: --lr-final %g must be in [0, --lr %g]\n", CMD, c->to.lr_final,
                c->to.lr);
        return 2;
    }
    tc->lr_final = c->to.lr_final;
    return 0;
}

static cli_opt *find_opt(train_ctx *c, const char *name);

/* --fine-tune: after flow matching (fm_done iterations, configuration fm), a new trainer for
 * n_ml iterations of maximum likelihood on the same flow (see the option's help). 0, or 1 or 2
 * after a message. */
static int fine_tune(train_ctx *c, const cnf_train_config *fm, size_t fm_done, size_t n_ml)
{
    if (c->R.es.best && c->R.es.best_nll < INFINITY) {
        cnf_early_stop_restore(&c->R.es);
        printf("fine-tuning from the parameters of iteration %zu (validation NLL %.4f)\n",
               c->R.es.best_iter, c->R.es.best_nll);
    }
    cnf_flow *inner = cnf_pre_flow_inner(c->R.flow) ? cnf_pre_flow_inner(c->R.flow) : c->R.flow;
    cnf_cflow_config *set = cnf_cflow_settings(inner);
    if (!set) { /* flow matching accepted it, so it is a CNF */
        fprintf(stderr, "cnf %s: --fine-tune needs a CNF\n", CMD);
        return 2;
    }
    if (cnf_flow_dim(inner) > 2 && !cli_opt_given(c->table, find_opt(c, "--trace")))
        set->trace = CNF_TRACE_HUTCH_RADEMACHER;
    cnf_train_config tc = *fm;
    tc.objective = cnf_objective_ml;
    tc.objective_params = NULL;
    tc.iters = fm_done + n_ml;
    if (tc.val_every) /* validate at the end of this phase too (not without validation rows) */
        tc.val_every = c->to.val_every ? c->to.val_every : tc.iters;
    tc.lr_iter0 = fm_done;
    tc.optim.lr = c->to.fine_tune_lr > 0 ? c->to.fine_tune_lr : c->to.lr / 10;
    tc.lr_final = c->to.lr_final * (tc.optim.lr / c->to.lr);
    if (tc.lr_final > tc.optim.lr) /* rounding */
        tc.lr_final = tc.optim.lr;
    tc.max_seconds = 0;
    if (c->to.max_seconds > 0)
        tc.max_seconds = fmax(c->to.max_seconds - (cli_now() - c->R.t0), 1e-9);
    tc.after_rows = c->R.file ? c->R.split.n_test : 0;
    cnf_trainer *t;
    int rc = cnf_trainer_create(&t, c->R.flow, &tc, c->to.seed + 1);
    if (rc) {
        cli_error(CMD, rc, "setting up fine-tuning");
        return 2;
    }
    cnf_trainer_set_iter(t, fm_done);
    cnf_trainer_free(c->R.trainer);
    c->R.trainer = t;
    c->R.first_iter = fm_done;
    printf("fine-tuning by maximum likelihood: iterations %zu to %zu, lr %g, %s trace, "
           "regularizers kinetic %g, Jacobian %g\n", fm_done + 1, tc.iters, tc.optim.lr,
           cnf_trace_name(set->trace), set->reg_kinetic, set->reg_jacobian);
    fflush(stdout);
    return 0;
}

static cli_opt *find_opt(train_ctx *c, const char *name)
{
    for (size_t i = 0; i < c->n_table; i++)
        if (!strcmp(c->table[i].name, name))
            return &c->table[i];
    return NULL;
}

int cmd_train(int argc, char **argv)
{
    const double t0 = cli_now();
    train_ctx ctx, *c = &ctx;
    memset(c, 0, sizeof *c);
    help_ctx = c;
    flow_opts_default(&c->fo);
    data_opts_default(&c->dop);
    memset(&c->to, 0, sizeof c->to);
    c->to.iters = 1000;
    c->to.batch = 100;
    c->to.lr = 1e-3;
    c->to.weight_decay = 1e-5;
    c->to.test_n = 5000;
    c->to.test_batch = 1000;
    c->to.val_every = 100;
    c->to.log_every = 100;
    c->to.objective = "ml";
    c->to.prior_sd = 1.0;
    c->to.fm_variant = "icfm";
    c->to.progress_every = 10;
    build_table(c);
    int u = cli_opts_parse(CMD, c->table, c->n_table, argc, argv, help);
    if (u)
        return u == 1 ? 0 : 2;
    /* Output paths first: a bad one must not cost a training run. */
    if ((u = cli_check_output_path(CMD, "--out", c->to.out)) ||
        (u = cli_check_output_path(CMD, "--plot", c->to.plot)))
        return u;
    if (!(c->to.max_seconds >= 0) || !(c->to.progress_every >= 0)) {
        fprintf(stderr, "cnf %s: --max-seconds and --progress-every must be >= 0\n", CMD);
        return 2;
    }
    if (c->to.save_every && !c->to.out) {
        fprintf(stderr, "cnf %s: --save-every needs --out FILE\n", CMD);
        return 2;
    }

    memset(&c->R, 0, sizeof c->R);
    c->R.t0 = t0;
    cnf_st_file *file = NULL;
    int status = 1, rc;
    double *test = NULL;
    train_signals_install();
    if (c->to.resume) {
        rc = cnf_model_load(c->to.resume, &c->R.flow, &file);
        if (rc) {
            cli_error(CMD, rc, "loading --resume");
            train_signals_restore();
            return 1;
        }
        if ((u = train_check_architecture(c, file)) || (u = train_check_iterations(c, file)) ||
            (u = train_apply_saved(c, file))) {
            status = u;
            goto done;
        }
    }
    const cnf_objective_type *objective;
    if (cnf_objective_from_name(c->to.objective, &objective)) {
        fprintf(stderr, "cnf %s: --objective: %s\n", CMD, cnf_errmsg());
        status = 2;
        goto done;
    }
    cnf_fm_params fmp = {.variant = CNF_FM_ICFM, .sigma = c->to.fm_sigma};
    const int flow_matching = objective == cnf_objective_fm;
    if (flow_matching && (cnf_fm_variant_from_name(c->to.fm_variant, &fmp.variant) ||
                          !(c->to.fm_sigma >= 0))) {
        fprintf(stderr, "cnf %s: --fm-variant icfm|otcfm and --fm-sigma >= 0\n", CMD);
        status = 2;
        goto done;
    }
    /* Flow matching's path lives on the unit interval: T is fixed, 1 unless --T is given. */
    const cli_opt *train_T = find_opt(c, "--train-T"), *T_opt = find_opt(c, "--T");
    if (flow_matching && cli_opt_given(c->table, train_T) && c->fo.train_T) {
        fprintf(stderr, "cnf %s: --objective flow-matching holds the end time fixed (T = 1, or "
                "--T): --train-T is not available with it\n", CMD);
        status = 2;
        goto done;
    }
    if (flow_matching && !c->to.resume) {
        if (!cli_opt_given(c->table, train_T))
            c->fo.train_T = 0;
        if (!cli_opt_given(c->table, T_opt))
            c->fo.T = 1.0;
    }
    if (flow_matching && c->to.resume && cnf_flow_velocity_check(c->R.flow)) {
        fprintf(stderr, "cnf %s: --resume %s cannot be trained by flow matching: %s\n", CMD,
                c->to.resume, cnf_errmsg());
        status = 2;
        goto done;
    }
    if (!(c->to.fine_tune >= 0 && c->to.fine_tune < 1) || !(c->to.fine_tune_lr >= 0)) {
        fprintf(stderr, "cnf %s: --fine-tune must be in [0, 1) and --fine-tune-lr >= 0\n", CMD);
        status = 2;
        goto done;
    }
    if (c->to.fine_tune > 0 && (!flow_matching || c->to.resume)) {
        fprintf(stderr, "cnf %s: --fine-tune follows flow matching: it needs --objective "
                "flow-matching, and is not available with --resume\n", CMD);
        status = 2;
        goto done;
    }
    if (c->to.resume && (u = train_apply_runtime(c))) {
        status = u;
        goto done;
    }
    if (objective == cnf_objective_rkl) {
        if (!c->to.target == !c->to.target_csv || c->to.data || !(c->to.prior_sd > 0)) {
            fprintf(stderr, "cnf %s: --objective reverse-kl needs --target NAME or --target-csv "
                    "FILE (not both), no --data, and --prior-sd > 0\n", CMD);
            status = 2;
        } else {
            status = train_reverse_kl(c, file);
        }
        goto done;
    }
    if (!c->to.data) {
        fprintf(stderr, "cnf %s: --data NAME is required (see cnf %s --help)\n", CMD, CMD);
        status = 2;
        goto done;
    }
    const cnf_toy_type *data = NULL;
    c->R.file = data_is_file(c->to.data);
    if (c->R.file && c->to.plot) {
        fprintf(stderr, "cnf %s: --plot draws 2-D toy sets only\n", CMD);
        status = 2;
        goto done;
    }
    if (!c->R.file && (rc = cnf_toy_from_name(c->to.data, &data))) {
        fprintf(stderr, "cnf %s: --data: %s\n", CMD, cnf_errmsg());
        status = 2;
        goto done;
    }
    c->R.data = data;
    if (c->to.val_n && !c->R.file) {
        fprintf(stderr, "cnf %s: --val-n is for data files (toy sets validate on --test-n "
                "points)\n", CMD);
        status = 2;
        goto done;
    }
    if (c->to.batch == 0 || c->to.test_n == 0) {
        fprintf(stderr, "cnf %s: --batch and --test-n must be positive\n", CMD);
        status = 2;
        goto done;
    }
    if ((u = cli_check_count(CMD, "--test-n", c->to.test_n, 2 * sizeof(double))) ||
        (u = cli_check_count(CMD, "--batch", c->to.batch, 2 * sizeof(double)))) {
        status = u;
        goto done;
    }
    cnf_rng init;
    cnf_rng_seed(&init, c->to.seed);
    if (c->R.file && (u = train_file_setup(c, &init))) {
        status = u;
        goto done;
    }
    if (!c->R.flow && (u = flow_opts_build(CMD, &c->fo, 2, &init, &c->R.flow))) {
        status = u;
        goto done;
    }
    /* The held-out set: drawn once from its own stream, so it is the same for every run with
     * this seed and does not disturb the training stream. */
    test = c->R.file ? NULL : malloc(c->to.test_n * 2 * sizeof(double));
    if (!test && !c->R.file) {
        fprintf(stderr, "cnf %s: out of memory for %zu test points\n", CMD, c->to.test_n);
        goto done;
    }
    cnf_rng tr;
    cnf_rng_seed(&tr, c->to.seed ^ 0x7e57da7aULL);
    if (!c->R.file)
        cnf_toy_sample(data, c->to.test_n, test, &tr);

    cnf_train_config tc = {.iters = c->to.iters, .batch = c->to.batch, .clip_norm = c->to.clip,
                           .val_every = c->to.val_every ? c->to.val_every : c->to.iters,
                           .val_X = test, .val_n = c->to.test_n, .val_batch = c->to.test_batch,
                           .next_batch = toy_batch, .batch_ctx = (void *)data,
                           .progress = train_progress, .progress_ctx = c, .objective = objective,
                           .objective_params = flow_matching ? &fmp : NULL,
                           .stop = train_stop_requested};
    if (c->to.max_seconds > 0) /* the budget counts from the command's start */
        tc.max_seconds = fmax(c->to.max_seconds - (cli_now() - c->R.t0), 1e-9);
    c->R.val_name = c->R.file ? "val" : "test";
    if (c->R.file) { /* validate on the validation rows; never on the test rows */
        tc.val_X = c->R.split.val;
        tc.val_n = c->R.split.n_val;
        if (c->to.val_n && c->to.val_n < tc.val_n) {
            tc.val_n = c->to.val_n;
            printf("validating on %zu of the %zu validation rows\n", tc.val_n, c->R.split.n_val);
        }
        tc.next_batch = data_batch_fn;
        tc.batch_ctx = &c->R.db;
        tc.after_rows = c->R.split.n_test; /* scored after the run, within --max-seconds */
        if (tc.val_n == 0) {
            tc.val_X = NULL;
            tc.val_every = 0;
            if (c->dop.patience) {
                fprintf(stderr, "cnf %s: --patience stops on the validation NLL, but %s leaves "
                        "no validation rows (--val-frac %g): give --val-frac > 0\n", CMD,
                        c->to.data, c->dop.val_frac);
                status = 2;
                goto done;
            }
        }
    }
    if ((c->R.file || c->dop.patience) && tc.val_every &&
        (rc = cnf_early_stop_init(&c->R.es, c->R.flow, c->dop.patience))) {
        cli_error(CMD, rc, "early stopping");
        goto done;
    }
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = c->to.lr;
    tc.optim.weight_decay = c->to.weight_decay;
    tc.ema_decay = c->to.ema;
    if ((u = train_lr_schedule(c, &tc))) {
        status = u;
        goto done;
    }
    /* --fine-tune: flow matching gets the first 1 - F of the iterations (and of the time). */
    const size_t n_ml = (size_t)llround(c->to.fine_tune * (double)c->to.iters);
    if (n_ml > 0) {
        if (n_ml >= c->to.iters) {
            fprintf(stderr, "cnf %s: --fine-tune %g of --iters %zu leaves no flow-matching "
                    "iterations\n", CMD, c->to.fine_tune, c->to.iters);
            status = 2;
            goto done;
        }
        tc.iters = c->to.iters - n_ml;
        if (tc.val_every > tc.iters)
            tc.val_every = tc.iters;
        tc.max_seconds *= 1 - c->to.fine_tune;
        tc.after_rows = 0; /* the test rows are scored after fine-tuning */
    }
    if ((rc = cnf_trainer_create(&c->R.trainer, c->R.flow, &tc, c->to.seed))) {
        cli_error(CMD, rc, "setting up training");
        status = 2;
        goto done;
    }
    if (file && (rc = cnf_model_restore_trainer(file, c->R.trainer))) {
        cli_error(CMD, rc, "restoring the training state of --resume");
        goto done;
    }
    c->R.first_iter = cnf_trainer_iter(c->R.trainer);
    c->R.tty = isatty(2);
    train_banner(c);
    if (c->R.file && !c->R.split.n_val)
        printf("no validation rows (--val-frac %g): no model selection; the final parameters%s "
               "are kept and scored on the test rows\n", c->dop.val_frac,
               c->to.ema > 0 ? " (their average)" : "");
    fflush(stdout);
    c->R.start = cli_now();
    rc = cnf_trainer_run(c->R.trainer);
    double seconds;
    outcome o;
    train_outcome_of_run(c, &o, rc);
    const size_t fm_done = cnf_trainer_iter(c->R.trainer);
    if (n_ml > 0 && train_outcome_good(&o) && !c->R.stopped && !train_stop_requested(NULL)) {
        if ((u = fine_tune(c, &tc, fm_done, n_ml)) != 0) {
            status = u;
            goto done;
        }
        rc = cnf_trainer_run(c->R.trainer);
        train_outcome_of_run(c, &o, rc);
    }
    const size_t ml_done = cnf_trainer_iter(c->R.trainer) - fm_done;
    if (train_outcome_good(&o) && c->R.es.best && c->R.es.best_nll < INFINITY) {
        cnf_early_stop_restore(&c->R.es); /* keep the best parameters, as FFJORD's tabular runs */
        printf("kept the parameters of iteration %zu (validation NLL %.4f)\n", c->R.es.best_iter,
               c->R.es.best_nll);
    }
    double bpd = NAN;
    if (train_outcome_good(&o) && c->R.file && c->R.split.n_test) {
        rc = cnf_flow_eval_nll(c->R.flow, c->R.split.test, c->R.split.n_test, c->to.test_batch,
                               &c->R.last_val, &c->R.last_val_se, NULL);
        c->R.has_val = rc == CNF_OK;
        const cnf_pre *p = cnf_pre_flow_pre(c->R.flow);
        if (!rc && p && cnf_pre_levels(p) > 0)
            bpd = c->R.last_val / ((double)cnf_pre_dim(p) * log(2.0));
        if (rc)
            train_outcome_fail(&o, rc, "evaluating the test rows");
        else
            c->R.val_name = "test";
        if (!rc)
            printf("test NLL %.4f +- %.4f nats over %zu rows (%s)", c->R.last_val, c->R.last_val_se,
                   c->R.split.n_test, cnf_pre_is_projection(p) ? "in PCA space" : "in data space");
        if (!rc && isfinite(bpd))
            printf(", %.4f bits/dim over %zu modelled dimensions", bpd, cnf_pre_dim(p));
        if (!rc)
            printf("\n");
    }
    train_outcome_save(c, &o);
    if (c->to.plot && train_outcome_good(&o)) {
        if ((rc = train_write_plot(c, c->to.plot)))
            train_outcome_fail(&o, rc, "writing --plot");
        else
            printf("wrote %s\n", c->to.plot);
    }
    size_t n = c->R.n_logged ? c->R.n_logged : 1;
    char nll[96] = "no validation yet";
    const int is_test = !strcmp(c->R.val_name, "test");
    if (c->R.has_val)
        snprintf(nll, sizeof nll, "%s NLL %.4f +- %.4f nats", is_test ? "test" : "validation",
                 c->R.last_val, c->R.last_val_se);
    seconds = cli_now() - c->R.t0; /* the whole command, as --max-seconds counts it */
    if (o.st == CNF_TRAIN_TIME_LIMIT)
        printf("done (--max-seconds %g reached): ", c->to.max_seconds);
    else if (train_outcome_good(&o))
        printf("done: ");
    else
        printf("stopped (%s): ", cnf_train_status_name(o.st));
    printf("%zu iterations in %.1f s, %s, NFE per iteration %.1f forward, %.1f backward\n",
           cnf_trainer_iter(c->R.trainer), seconds, nll, c->R.nfe_f / n, c->R.nfe_b / n);
    if (c->to.json) {
        train_json_status(&o);
        printf(",\"data\":");
        cli_json_string(stdout, c->to.data);
        printf(",\"model\":");
        cli_json_string(stdout, cnf_flow_kind(cnf_pre_flow_inner(c->R.flow) ? cnf_pre_flow_inner(c->R.flow)
                                                                          : c->R.flow));
        printf(",\"iters\":%zu,\"seconds\":", cnf_trainer_iter(c->R.trainer));
        cli_json_number(stdout, seconds);
        printf(",\"max_seconds\":");
        cli_json_number(stdout, c->to.max_seconds > 0 ? c->to.max_seconds : NAN);
        printf(",\"train_loss\":");
        cli_json_number(stdout, train_final_loss(c));
        printf(",\"test_nll\":");
        cli_json_number(stdout, c->R.has_val && is_test ? c->R.last_val : NAN);
        printf(",\"test_nll_stderr\":");
        cli_json_number(stdout, c->R.has_val && is_test ? c->R.last_val_se : NAN);
        printf(",\"nfe_forward\":");
        cli_json_number(stdout, c->R.nfe_f / n);
        printf(",\"nfe_backward\":");
        cli_json_number(stdout, c->R.nfe_b / n);
        if (c->R.file) {
            printf(",\"bits_per_dim\":");
            cli_json_number(stdout, bpd);
            const int sel = c->R.es.best && c->R.es.best_nll < INFINITY;
            printf(",\"best_iter\":");
            cli_json_number(stdout, sel ? (double)c->R.es.best_iter : NAN);
            printf(",\"val_nll\":");
            cli_json_number(stdout, sel ? c->R.es.best_nll : NAN);
            printf(",\"n_train\":%zu,\"n_test\":%zu", c->R.split.n_train, c->R.split.n_test);
        }
        if (n_ml > 0)
            printf(",\"fm_iters\":%zu,\"ml_iters\":%zu", fm_done, ml_done);
        printf(",\"seed\":%llu}\n", (unsigned long long)c->to.seed);
    }
    status = train_outcome_exit(&o);
done:
    fflush(stdout);
    train_signals_restore();
    cnf_trainer_free(c->R.trainer);
    cnf_flow_free(c->R.flow);
    cnf_st_free(file);
    free(test);
    cnf_early_stop_free(&c->R.es);
    data_split_free(&c->R.split);
    cnf_target_free(c->R.target);
    return status;
}
