/* `cnf train`: SIGINT / SIGTERM, and the writes (model, picture) that hold them off. */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

/* SIGINT / SIGTERM. The first asks the trainer (through its stop callback) to end after the
 * iteration in progress; the run is then saved and summarised. A second one exits at once, except
 * while a model or picture is being written: then it takes effect right after the file is
 * complete, so the atomic writer never leaves its temporary file behind. The handler decides by a
 * flag, not by a blocked signal mask: a process-directed signal may be delivered to any thread
 * (the MLP's pool, OpenBLAS's), and a mask set on the writing thread does not hold them off.
 * These are the file-scope flags a handler needs. */
static volatile sig_atomic_t n_signals, writing;

static void on_signal(int sig)
{
    (void)sig;
    if (n_signals++ && !writing)
        _exit(130);
}

int train_stop_requested(void *ctx)
{
    (void)ctx;
    return n_signals > 0;
}

static struct sigaction old_int, old_term;

void train_signals_install(void)
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

void train_signals_restore(void)
{
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}

void train_write_begin(void) { writing = 1; }

void train_write_end(void)
{
    writing = 0;
    if (n_signals > 1) /* a second signal came during the write: the file is complete now */
        _exit(130);
}

/* Save --out (model, training state, options) with the signals held off. */
int train_save_out(train_ctx *c)
{
    char store[FLOW_OPTS_MAX + TRAIN_OPTS_MAX + DATA_OPTS_COUNT][64];
    train_write_begin();
    int rc = cnf_model_save(c->to.out, c->R.flow, c->R.trainer, train_saved_pairs(c, store));
    train_write_end();
    return rc;
}

/* The --plot picture: the model's density and samples beside the data (toy sets) or the target
 * (reverse KL), with the signals held off. */
int train_write_plot(train_ctx *c, const char *path)
{
    cnf_rng r;
    cnf_rng_seed(&r, c->to.seed ^ 0x5eed0f0f);
    if (c->R.target) {
        train_write_begin();
        int rc = cnf_plot_target(path, c->R.flow, cnf_target_logq, c->R.target, 100, 20000, &r,
                                 NULL);
        train_write_end();
        return rc;
    }
    double *D = malloc(20000 * 2 * sizeof(double));
    if (!D)
        return CNF_ENOMEM;
    int rc = cnf_toy_sample(c->R.data, 20000, D, &r);
    train_write_begin();
    if (!rc)
        rc = cnf_plot_flow(path, c->R.flow, D, 20000, 100, 20000, &r, NULL);
    train_write_end();
    free(D);
    return rc;
}
