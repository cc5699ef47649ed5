/* `cnf train`: SIGINT / SIGTERM, and the writes (model, picture) that hold them off. */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

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

void train_signals_block(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, old);
}


/* Save --out (model, training state, options) with the signals held off. */
int train_save_out(train_ctx *c)
{
    char store[FLOW_OPTS_MAX + TRAIN_OPTS_MAX + DATA_OPTS_COUNT][64];
    sigset_t old;
    train_signals_block(&old);
    int rc = cnf_model_save(c->to.out, c->R.flow, c->R.trainer, train_saved_pairs(c, store));
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int train_write_plot(train_ctx *c, const char *path)
{
    double *D = malloc(20000 * 2 * sizeof(double));
    if (!D)
        return CNF_ENOMEM;
    cnf_rng r;
    cnf_rng_seed(&r, c->to.seed ^ 0x5eed0f0f);
    int rc = cnf_toy_sample(c->R.data, 20000, D, &r);
    sigset_t old;
    train_signals_block(&old);
    if (!rc)
        rc = cnf_plot_flow(path, c->R.flow, D, 20000, 100, 20000, &r, NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(D);
    return rc;
}
