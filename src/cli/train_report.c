/* `cnf train`: reporting a run: the progress callback (live line, log lines, periodic plot and
 * checkpoint, early stopping), and how a run ended (status, message, saving --out, exit status,
 * the start of the JSON line). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

int train_progress(const cnf_train_progress *p, void *ctx)
{
    train_ctx *c = ctx;
    c->R.loss_sum += p->loss;
    c->R.nfe_f += (double)p->nfe_forward;
    c->R.nfe_b += (double)p->nfe_backward;
    c->R.n_logged++;
    if (p->has_val) {
        c->R.last_val = c->R.target ? p->log_z : p->val_nll;
        c->R.last_val_se = c->R.target ? p->ess_fraction : p->val_nll_stderr;
        c->R.has_val = 1;
    }
    int stop = p->has_val && c->R.es.best && cnf_early_stop_update(&c->R.es, p->iter, p->val_nll);
    double rate = (double)(p->iter - c->R.first_iter) / fmax(p->seconds, 1e-9);
    double eta = (double)(p->iters - p->iter) / fmax(rate, 1e-9);
    if (c->R.tty) {
        fprintf(stderr, "\r  iter %zu/%zu  loss %.4f  nfe %zu/%zu  %.1f it/s  ETA %.0fs   ",
                p->iter, p->iters, p->loss, p->nfe_forward, p->nfe_backward, rate, eta);
        if (p->iter == p->iters)
            fputc('\n', stderr);
    }
    if ((!c->R.tty && c->to.log_every && p->iter % c->to.log_every == 0) || p->has_val) {
        printf("iter %zu/%zu  loss %.4f  nll %.4f  |g| %.3g", p->iter, p->iters, p->loss,
               p->nll, p->grad_norm);
        if (cnf_cflow_settings(c->R.flow))
            printf("  nfe %zu/%zu  T %.4f", p->nfe_forward, p->nfe_backward,
                   cnf_cflow_end_time(c->R.flow));
        printf("  %.1f it/s", rate);
        if (p->has_val && c->R.target)
            printf("  log Z (IS) %.4f  ESS %.1f%%  ELBO %.4f", p->log_z, 100 * p->ess_fraction,
                   p->elbo);
        else if (p->has_val)
            printf("  test nll %.4f +- %.4f", p->val_nll, p->val_nll_stderr);
        printf("\n");
        fflush(stdout);
    }
    if (c->to.plot && c->to.plot_every && p->iter % c->to.plot_every == 0 && p->iter != p->iters) {
        int rc = train_write_plot(c, c->to.plot);
        if (rc)
            return rc;
    }
    if (c->to.out && c->to.save_every && p->iter % c->to.save_every == 0 && p->iter != p->iters) {
        int rc = train_save_out(c);
        if (rc) {
            if (c->R.tty)
                fputc('\n', stderr);
            cli_error(CMD, rc, "saving the --save-every checkpoint");
            c->R.save_failed = 1;
            return 1;
        }
    }
    if (stop) {
        c->R.stopped = 1;
        printf("early stop at iteration %zu: no better validation NLL for %zu evaluations "
               "(best %.4f at iteration %zu)\n", p->iter, c->dop.patience, c->R.es.best_nll,
               c->R.es.best_iter);
        return 1;
    }
    return 0;
}

/* After cnf_trainer_run returned rc: the status, with a message on stderr for a failure. */
void train_outcome_of_run(train_ctx *c, outcome *o, int rc)
{
    o->st = cnf_trainer_status(c->R.trainer);
    snprintf(o->reason, sizeof o->reason, "%s", cnf_trainer_stop_reason(c->R.trainer));
    if (o->st == CNF_TRAIN_STOPPED && c->R.stopped && !c->R.save_failed) { /* early stopping */
        o->st = CNF_TRAIN_OK;
        o->reason[0] = '\0';
    } else if (o->st == CNF_TRAIN_STOPPED) { /* a --plot-every or --save-every write failed */
        o->st = CNF_TRAIN_ERROR;
        snprintf(o->reason, sizeof o->reason, "a file written during training failed at "
                 "iteration %zu", cnf_trainer_iter(c->R.trainer));
        return; /* the message is on stderr already */
    }
    if (o->st == CNF_TRAIN_OK && train_stop_requested(NULL)) { /* the signal came after the last iteration */
        o->st = CNF_TRAIN_INTERRUPTED;
        snprintf(o->reason, sizeof o->reason, "interrupted after iteration %zu",
                 cnf_trainer_iter(c->R.trainer));
    }
    if (rc && rc != 1) {
        if (c->R.tty)
            fputc('\n', stderr);
        cli_error(CMD, rc, "training stopped");
    } else if (o->st == CNF_TRAIN_INTERRUPTED) {
        if (c->R.tty)
            fputc('\n', stderr);
        fprintf(stderr, "cnf %s: %s (signal): finishing\n", CMD, o->reason);
    }
}

/* A later step (final evaluation, saving, the picture) failed. */
void train_outcome_fail(outcome *o, int rc, const char *what)
{
    cli_error(CMD, rc, what);
    if (o->st == CNF_TRAIN_OK || o->st == CNF_TRAIN_TIME_LIMIT) {
        o->st = CNF_TRAIN_ERROR;
        snprintf(o->reason, sizeof o->reason, "%s: %s", what, cnf_errmsg());
    }
}

int train_outcome_good(const outcome *o)
{
    return o->st == CNF_TRAIN_OK || o->st == CNF_TRAIN_TIME_LIMIT;
}

/* Save --out after the run: always when it ended well or the guard stopped it (the last good
 * parameters, for inspection or --resume), and after an interruption or another failure only if
 * this run got anywhere, so that an earlier file is not replaced by the same or an untrained
 * model. */
void train_outcome_save(train_ctx *c, outcome *o)
{
    if (!c->to.out)
        return;
    const int guard = o->st == CNF_TRAIN_DIVERGED || o->st == CNF_TRAIN_SOLVER_FAILED;
    if (!train_outcome_good(o) && !guard && cnf_trainer_iter(c->R.trainer) == c->R.first_iter) {
        printf("nothing trained in this run: %s left as it was\n", c->to.out);
        return;
    }
    int rc = train_save_out(c);
    if (rc) {
        train_outcome_fail(o, rc, "saving --out");
        return;
    }
    if (train_outcome_good(o))
        printf("saved %s\n", c->to.out);
    else
        printf("saved %s at iteration %zu (%s: stopped early, see its train.stop_reason)\n",
               c->to.out, cnf_trainer_iter(c->R.trainer), cnf_train_status_name(o->st));
}

/* The exit status: 0 ok or time limit, 130 interrupted, 1 otherwise. */
int train_outcome_exit(const outcome *o)
{
    return train_outcome_good(o) ? 0 : o->st == CNF_TRAIN_INTERRUPTED ? 130 : 1;
}

void train_json_status(const outcome *o)
{
    printf("{\"status\":");
    cli_json_string(stdout, cnf_train_status_name(o->st));
    if (o->reason[0]) {
        printf(",\"stop_reason\":");
        cli_json_string(stdout, o->reason);
    }
}
