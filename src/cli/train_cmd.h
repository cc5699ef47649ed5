/* Private to `cnf train` (train*.c): its options, the state of one run, and the pieces the
 * command is made of. The context is passed to each piece; nothing is shared at file scope. */
#ifndef CNF_CLI_TRAIN_CMD_H
#define CNF_CLI_TRAIN_CMD_H

#include <signal.h>

#include "cnf.h"
#include "dataopts.h"
#include "flowopts.h"
#include "opts.h"

#define CMD "train"
#define TRAIN_OPTS_MAX 32 /* cnf train's own options (build_table checks) */
#define TRAIN_LOSS_WINDOW 100 /* the JSON's train_loss: mean loss of the last this many iterations */

typedef struct train_opts {
    const char *data;
    size_t iters, batch, test_batch, test_n, val_n, val_every, log_every, plot_every, save_every;
    double lr, weight_decay, clip;
    uint64_t seed;
    const char *out, *plot, *resume;
    int json;
    const char *objective, *target, *target_csv, *fm_variant;
    double fm_sigma, max_seconds, prior_sd, ema;
    const char *lr_schedule; /* NULL: constant */
    double lr_final;
    double fine_tune, fine_tune_lr; /* flow matching then ML: the last fraction, its lr (0: lr/10) */
    double progress_every; /* stderr not a terminal: a progress line this often until the first
                              log line (seconds; 0: never) */
} train_opts;

typedef struct run {
    const cnf_toy_type *data;
    double t0;    /* the command's start: --max-seconds and the summary's seconds count from it */
    double start, nfe_f, nfe_b;
    double loss_win[TRAIN_LOSS_WINDOW]; /* the last iterations' losses (a ring) */
    size_t n_logged, first_iter;
    int tty;
    int logged;        /* a log line was printed on stdout */
    double last_note;  /* when the last progress line before it went to stderr */
    const char *val_name; /* what validation measures: "test" (toy sets) or "val" (data files) */
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


/* Everything one `cnf train` run uses: its options, their table, and the run's state. */
typedef struct train_ctx {
    flow_opts fo;
    data_opts dop;
    train_opts to;
    cli_opt table[FLOW_OPTS_MAX + TRAIN_OPTS_MAX + DATA_OPTS_COUNT];
    size_t n_table, n_flow_opts; /* the first n_flow_opts entries are flow_opts' */
    char objective_help[1024];   /* --objective's help: the library's list of objectives */
    run R;
} train_ctx;

typedef struct outcome {
    cnf_train_status st;
    char reason[1200]; /* why it stopped early ("" if it did not) */
} outcome;

/* train_signals.c: the signals (the first ends the run after its iteration, a second exits). */
void train_signals_install(void);
void train_signals_restore(void);
/* Around a file write: a second signal meanwhile exits only once the write is over. */
void train_write_begin(void);
void train_write_end(void);
int train_stop_requested(void *ctx); /* the trainer's stop callback: 1 once a signal came */
/* --out (model, training state, options) and the --plot picture, with the signals held off. */
int train_save_out(train_ctx *c);
int train_write_plot(train_ctx *c, const char *path);

/* train_report.c */
cnf_flow *train_model(train_ctx *c); /* the flow inside the preprocessing wrapper, or the flow */
void train_banner(train_ctx *c);     /* the run's first line: data, model, solver, batch, seed */
double train_final_loss(const train_ctx *c); /* mean loss of the last TRAIN_LOSS_WINDOW iterations */
int train_progress(const cnf_train_progress *p, void *ctx); /* ctx: the train_ctx */
void train_outcome_of_run(train_ctx *c, outcome *o, int rc);
void train_outcome_fail(outcome *o, int rc, const char *what);
int train_outcome_good(const outcome *o);
void train_outcome_save(train_ctx *c, outcome *o);
int train_outcome_exit(const outcome *o);
void train_json_status(const outcome *o);

/* train_setup.c: --data FILE. 0, 1 or 2 after a message. */
int train_file_setup(train_ctx *c, cnf_rng *init);

/* train_resume.c: --resume rules (0, 1 or 2 after a message) and the saved options. */
int train_apply_saved(train_ctx *c, const cnf_st_file *file);
int train_check_architecture(train_ctx *c, const cnf_st_file *file);
int train_check_iterations(train_ctx *c, const cnf_st_file *file);
int train_apply_runtime(train_ctx *c);
const char **train_saved_pairs(train_ctx *c, char store[][64]);

/* train.c: --lr-schedule and --lr-final into a trainer configuration (0, or 2 after a message). */
int train_lr_schedule(const train_ctx *c, cnf_train_config *tc);

/* train_rkl.c: --objective reverse-kl; the exit status. */
int train_reverse_kl(train_ctx *c, cnf_st_file *file);

#endif
