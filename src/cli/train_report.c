/* `cnf train`: reporting a run: the progress callback (live line, log lines, periodic plot and
 * checkpoint, early stopping), and how a run ended (status, message, saving --out, exit status,
 * the start of the JSON line). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

cnf_flow *train_model(train_ctx *c)
{
    cnf_flow *inner = cnf_pre_flow_inner(c->R.flow);
    return inner ? inner : c->R.flow;
}

/* "dopri5 (rtol 1e-05, atol 1e-05)" or "rk4 (4 steps)": a solve configuration in words. */
static void solve_words(char *buf, size_t size, const cnf_solve_config *s)
{
    if (cnf_stepper_is_adaptive(s->stepper) || cnf_stepper_is_cvodes(s->stepper))
        snprintf(buf, size, "%s (rtol %g, atol %g)", cnf_stepper_name(s->stepper), s->opt.rtol,
                 s->opt.atol);
    else
        snprintf(buf, size, "%s (%zu steps)", cnf_stepper_name(s->stepper), s->opt.steps);
}

/* The model is named as what it is (the CNF with its solver, or the discrete flow), and the
 * preprocessing of a data file is said after it. */
void train_banner(train_ctx *c)
{
    cnf_flow *m = train_model(c);
    printf("cnf train: %s, %s flow with %zu parameters", c->to.data, cnf_flow_kind(m),
           cnf_flow_n_params(m));
    const cnf_cflow_config *cf = cnf_cflow_settings(m);
    if (cf) {
        char train[96], eval[96];
        solve_words(train, sizeof train, &cf->train);
        solve_words(eval, sizeof eval, &cf->eval);
        printf(", %s, %s trace", train, cnf_trace_name(cf->trace));
        if (cf->trace != CNF_TRACE_EXACT)
            printf(" (%zu probe%s)", cf->probes, cf->probes == 1 ? "" : "s");
        if (strcmp(train, eval) || cf->eval_trace != cf->trace)
            printf(", evaluated with %s, %s trace", eval, cnf_trace_name(cf->eval_trace));
        printf(", T %g%s", cnf_cflow_end_time(m), cf->train_T ? " (trained)" : "");
    }
    printf(", batch %zu, seed %llu, from iteration %zu to %zu", c->to.batch,
           (unsigned long long)c->to.seed, c->R.first_iter, c->to.iters);
    const cnf_pre *p = cnf_pre_flow_pre(c->R.flow);
    if (p) {
        const size_t D = cnf_pre_input_dim(p), k = cnf_pre_dim(p);
        printf(" (preprocessing of the %zu columns:", D);
        if (cnf_pre_levels(p) > 0)
            printf(" dequantised logit of %g levels,", cnf_pre_levels(p));
        if (cnf_pre_is_projection(p))
            printf(" %s, top %zu principal components", c->dop.standardize ? "standardised" :
                   "centred", k);
        else
            printf(" %s", c->dop.standardize ? "standardised" : "not standardised");
        if (!cnf_pre_is_projection(p) && k < D)
            printf(", %zu constant column%s dropped", D - k, D - k == 1 ? "" : "s");
        printf(")");
    }
    printf("\n");
}

double train_final_loss(const train_ctx *c)
{
    const size_t n = c->R.n_logged < TRAIN_LOSS_WINDOW ? c->R.n_logged : TRAIN_LOSS_WINDOW;
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += c->R.loss_win[i];
    return n ? s / (double)n : NAN;
}

int train_progress(const cnf_train_progress *p, void *ctx)
{
    train_ctx *c = ctx;
    c->R.loss_win[c->R.n_logged % TRAIN_LOSS_WINDOW] = p->loss;
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
    const int log_line = (!c->R.tty && c->to.log_every && p->iter % c->to.log_every == 0) ||
                         p->has_val;
    /* Until the first log line (which may take minutes on a large model), a progress line on a
     * stderr that is not a terminal (a terminal has the live line above) every progress_every
     * seconds. */
    if (!c->R.tty && !c->R.logged && !log_line && c->to.progress_every > 0 &&
        p->seconds - c->R.last_note >= c->to.progress_every) {
        c->R.last_note = p->seconds;
        fprintf(stderr, "cnf %s: iter %zu/%zu  loss %.4f  %.2f it/s  %.0f s so far", CMD, p->iter,
                p->iters, p->loss, rate, p->seconds);
        if (c->to.log_every && c->to.log_every < p->iters)
            fprintf(stderr, " (first log line at iteration %zu)",
                    (p->iter / c->to.log_every + 1) * c->to.log_every);
        fputc('\n', stderr);
    }
    if (log_line) {
        c->R.logged = 1;
        printf("iter %zu/%zu  loss %.4f  nll %.4f  |g| %.3g", p->iter, p->iters, p->loss,
               p->nll, p->grad_norm);
        cnf_flow *m = train_model(c);
        if (cnf_cflow_settings(m))
            printf("  nfe %zu/%zu  T %.4f", p->nfe_forward, p->nfe_backward,
                   cnf_cflow_end_time(m));
        if ((c->to.lr_schedule && strcmp(c->to.lr_schedule, "constant")) || c->to.fine_tune > 0)
            printf("  lr %.4g", p->lr);
        printf("  %.1f it/s", rate);
        if (p->has_val && c->R.target)
            printf("  log Z (IS) %.4f  ESS %.1f%%  ELBO %.4f", p->log_z, 100 * p->ess_fraction,
                   p->elbo);
        else if (p->has_val)
            printf("  %s nll %.4f +- %.4f", c->R.val_name, p->val_nll, p->val_nll_stderr);
        printf("\n");
        fflush(stdout);
    }
    if (c->to.plot && c->to.plot_every && p->iter % c->to.plot_every == 0 && p->iter != p->iters) {
        int rc = train_write_plot(c, c->to.plot);
        if (rc) {
            if (c->R.tty)
                fputc('\n', stderr);
            cli_error(CMD, rc, "writing the --plot-every picture");
            c->R.save_failed = 1;
            return 1;
        }
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
    if (o->st == CNF_TRAIN_TIME_LIMIT) /* the trainer's budget is what was left of the user's */
        snprintf(o->reason, sizeof o->reason, "--max-seconds %g (wall-clock, the whole command): "
                 "training stopped after iteration %zu, leaving time for the final evaluation",
                 c->to.max_seconds, cnf_trainer_iter(c->R.trainer));
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
