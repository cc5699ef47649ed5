/* The training loop (see cnf/train.h): the objective's table does the objective-specific work,
 * the loop the rest (batches, clipping, the optimizer, the health guard, averaging, progress). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "objective.h"
#include "core/internal.h"

struct cnf_trainer {
    cnf_flow *flow;
    cnf_train_config cfg; /* cfg.objective is set (the default filled in) */
    const cnf_objective_type *obj;
    cnf_optim *optim;
    cnf_rng rng;
    size_t iter;
    double *X, *grad; /* (batch, d), (n_params) */
    /* ema_decay > 0: the average θ̄ and a place for the iterate θ while θ̄ sits in the flow
     * (n_params each), and the number of averaging steps taken. */
    double *avg, *raw;
    size_t ema_steps;
    /* The health guard: the parameters before this step (n_params), and the last good state
     * (see cnf/train.h): parameters, optimizer buffers (n_buffers × n_params), the average. */
    double *prev;
    struct snapshot {
        int valid, validated;
        double *theta, *buf, *avg;
        uint64_t steps;
        cnf_rng rng;
        size_t iter, ema_steps;
    } good;
    cnf_train_status status;
    char reason[1024];
};

const char *cnf_train_status_name(cnf_train_status s)
{
    switch (s) {
    case CNF_TRAIN_OK: return "ok";
    case CNF_TRAIN_DIVERGED: return "diverged";
    case CNF_TRAIN_SOLVER_FAILED: return "solver_failed";
    case CNF_TRAIN_INTERRUPTED: return "interrupted";
    case CNF_TRAIN_TIME_LIMIT: return "time_limit";
    case CNF_TRAIN_STOPPED: return "stopped";
    case CNF_TRAIN_ERROR: return "error";
    }
    return "unknown";
}

int cnf_lr_schedule_from_name(const char *name, cnf_lr_schedule *out)
{
    if (name && !strcmp(name, "constant"))
        *out = CNF_LR_CONSTANT;
    else if (name && !strcmp(name, "cosine"))
        *out = CNF_LR_COSINE;
    else
        return cnf_fail(CNF_ENAME, "unknown learning-rate schedule '%s' (constant, cosine)",
                        name ? name : "(null)");
    return CNF_OK;
}

const char *cnf_lr_schedule_name(cnf_lr_schedule s)
{
    switch (s) {
    case CNF_LR_CONSTANT: return "constant";
    case CNF_LR_COSINE: return "cosine";
    }
    return "unknown";
}

int cnf_trainer_create(cnf_trainer **out, cnf_flow *f, const cnf_train_config *cfg,
                       uint64_t seed)
{
    *out = NULL;
    if (!f || !cfg)
        return cnf_fail(CNF_EINVAL, "trainer needs a flow and a configuration");
    if (cfg->batch == 0)
        return cnf_fail(CNF_EINVAL, "batch size is 0");
    if (!(cfg->clip_norm >= 0.0) || !(cfg->max_seconds >= 0.0))
        return cnf_fail(CNF_EINVAL, "clipping norm %g and time limit %g must be >= 0",
                        cfg->clip_norm, cfg->max_seconds);
    if (!(cfg->ema_decay >= 0.0 && cfg->ema_decay < 1.0))
        return cnf_fail(CNF_EINVAL, "EMA decay %g is not in [0, 1)", cfg->ema_decay);
    if (cfg->lr_schedule != CNF_LR_CONSTANT && cfg->lr_schedule != CNF_LR_COSINE)
        return cnf_fail(CNF_EINVAL, "unknown learning-rate schedule %d", (int)cfg->lr_schedule);
    if (cfg->lr_schedule == CNF_LR_COSINE &&
        !(cfg->lr_final >= 0.0 && cfg->lr_final <= cfg->optim.lr))
        return cnf_fail(CNF_EINVAL, "final learning rate %g is not in [0, lr = %g]", cfg->lr_final,
                        cfg->optim.lr);
    if (isnan(cfg->guard_loss) || isnan(cfg->guard_grad) || isnan(cfg->guard_step))
        return cnf_fail(CNF_EINVAL, "a guard threshold is NaN");
    cnf_train_config c = *cfg;
    if (!c.objective)
        c.objective = cnf_objective_ml;
    int rc = c.objective->check(f, &c);
    if (rc)
        return rc;
    cnf_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return cnf_fail(CNF_ENOMEM, "allocating the trainer");
    t->flow = f;
    t->cfg = c;
    t->obj = c.objective;
    cnf_rng_seed(&t->rng, seed);
    rc = cnf_optim_create(&cfg->optim, cnf_flow_n_params(f), &t->optim);
    if (rc) {
        free(t);
        return rc;
    }
    const size_t P = cnf_flow_n_params(f), nb = cnf_optim_n_buffers(t->optim);
    t->X = cnf_calloc(cnf_size_mul(cfg->batch, cnf_flow_dim(f)), sizeof(double));
    t->grad = cnf_calloc(P, sizeof(double));
    t->prev = cnf_calloc(P, sizeof(double));
    t->good.theta = cnf_calloc(P, sizeof(double));
    t->good.buf = nb ? cnf_calloc(cnf_size_mul(nb, P), sizeof(double)) : NULL;
    if (cfg->ema_decay > 0) {
        t->avg = cnf_calloc(P, sizeof(double));
        t->raw = cnf_calloc(P, sizeof(double));
        t->good.avg = cnf_calloc(P, sizeof(double));
    }
    if (!t->X || !t->grad || !t->prev || !t->good.theta || (nb && !t->good.buf) ||
        (cfg->ema_decay > 0 && (!t->avg || !t->raw || !t->good.avg))) {
        cnf_trainer_free(t);
        return cnf_fail(CNF_ENOMEM, "allocating a batch of %zu", cfg->batch);
    }
    *out = t;
    return CNF_OK;
}

void cnf_trainer_free(cnf_trainer *t)
{
    if (!t)
        return;
    cnf_optim_free(t->optim);
    free(t->X);
    free(t->grad);
    free(t->avg);
    free(t->raw);
    free(t->prev);
    free(t->good.theta);
    free(t->good.buf);
    free(t->good.avg);
    free(t);
}

cnf_train_status cnf_trainer_status(const cnf_trainer *t) { return t->status; }
const char *cnf_trainer_stop_reason(const cnf_trainer *t) { return t->reason; }
const double *cnf_trainer_average(const cnf_trainer *t)
{
    return t->avg && t->ema_steps ? t->avg : NULL;
}

size_t cnf_trainer_iter(const cnf_trainer *t) { return t->iter; }
void cnf_trainer_set_iter(cnf_trainer *t, size_t iter) { t->iter = iter; }
cnf_rng *cnf_trainer_rng(cnf_trainer *t) { return &t->rng; }
cnf_optim *cnf_trainer_optim(cnf_trainer *t) { return t->optim; }
cnf_flow *cnf_trainer_flow(cnf_trainer *t) { return t->flow; }
const cnf_train_config *cnf_trainer_config(const cnf_trainer *t) { return &t->cfg; }

/* θ̄ into the flow (the iterate kept aside), and back. */
static void use_average(cnf_trainer *t, double *theta, size_t P)
{
    memcpy(t->raw, theta, P * sizeof(double));
    memcpy(theta, t->avg, P * sizeof(double));
}

static void use_iterate(cnf_trainer *t, double *theta, size_t P)
{
    memcpy(theta, t->raw, P * sizeof(double));
}

/* ---- the health guard ---------------------------------------------------------------------- */

/* A threshold of the guard: 0 → its default, negative → off (INFINITY). */
static double guard(double v, double dflt) { return v == 0 ? dflt : v < 0 ? INFINITY : v; }

/* Root mean square of a (n), and of a − b. */
static double rms(const double *a, size_t n)
{
    double amax = 0, ss = 0;
    for (size_t i = 0; i < n; i++)
        amax = fmax(amax, fabs(a[i]));
    for (size_t i = 0; amax > 0 && i < n; i++)
        ss += (a[i] / amax) * (a[i] / amax);
    return n ? amax * sqrt(ss / (double)n) : 0.0;
}

static double rms_diff(const double *a, const double *b, size_t n)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (a[i] - b[i]) * (a[i] - b[i]);
    return n ? sqrt(ss / (double)n) : 0.0;
}

/* The state of iteration `iter` (θ the iterate, rng as it stood before that iteration's draws)
 * becomes the last good one. */
static void snapshot_take(cnf_trainer *t, const double *theta, const cnf_rng *rng, size_t iter)
{
    const size_t P = cnf_flow_n_params(t->flow);
    memcpy(t->good.theta, theta, P * sizeof(double));
    for (size_t i = 0; i < cnf_optim_n_buffers(t->optim); i++)
        memcpy(t->good.buf + i * P, cnf_optim_buffer(t->optim, i, NULL), P * sizeof(double));
    t->good.steps = cnf_optim_steps(t->optim);
    t->good.rng = *rng;
    t->good.iter = iter;
    if (t->avg) {
        memcpy(t->good.avg, t->avg, P * sizeof(double));
        t->good.ema_steps = t->ema_steps;
    }
    t->good.valid = 1;
}

/* Back to the last good state (the flow gets its iterate, or its average with ema_decay). */
static void snapshot_restore(cnf_trainer *t)
{
    const size_t P = cnf_flow_n_params(t->flow);
    double *theta = cnf_flow_params(t->flow);
    if (!t->good.valid)
        return;
    memcpy(theta, t->good.theta, P * sizeof(double));
    for (size_t i = 0; i < cnf_optim_n_buffers(t->optim); i++)
        memcpy(cnf_optim_buffer(t->optim, i, NULL), t->good.buf + i * P, P * sizeof(double));
    cnf_optim_set_steps(t->optim, t->good.steps);
    t->rng = t->good.rng;
    t->iter = t->good.iter;
    if (t->avg) {
        memcpy(t->avg, t->good.avg, P * sizeof(double));
        t->ema_steps = t->good.ema_steps;
        if (t->ema_steps)
            memcpy(theta, t->avg, P * sizeof(double));
    }
}

static int is_solver_code(int rc)
{
    return rc == CNF_EMAX_STEPS || rc == CNF_ESTEP_UNDERFLOW || rc == CNF_ESOLVER ||
           rc == CNF_ERHS || rc == CNF_ENONFINITE;
}

/* End the run on a health failure at iteration `iter`: classify it, go back to the last good
 * state, and set status, reason and the error detail. what is the failure in words. */
static int stop_unhealthy(cnf_trainer *t, int rc, size_t iter, const char *what)
{
    const size_t P = cnf_flow_n_params(t->flow);
    const double *theta = cnf_flow_params(t->flow);
    double drift = 0, scale = 1;
    if (t->good.valid && rc != CNF_EDIVERGED) {
        /* How far the parameters the solver failed on (the iterate: the flow holds it outside
         * validation) are from the last good ones. */
        drift = rms_diff(theta, t->good.theta, P);
        scale = fmax(rms(t->good.theta, P), 1.0);
    }
    const double gs = guard(t->cfg.guard_step, 1.0);
    const int diverged = rc == CNF_EDIVERGED || rc == CNF_ENONFINITE || drift > gs * scale;
    t->status = diverged ? CNF_TRAIN_DIVERGED : CNF_TRAIN_SOLVER_FAILED;
    snapshot_restore(t);
    char kept[160];
    if (!t->good.valid)
        snprintf(kept, sizeof kept, "the parameters are those the run started from");
    else
        snprintf(kept, sizeof kept, "kept the parameters of iteration %zu (%s)", t->good.iter,
                 t->good.validated ? "its validation was finite" : "the last with a healthy loss and gradient");
    const char *hint =
        diverged ? "try a smaller learning rate, gradient clipping, or regularization "
                   "(kinetic / Jacobian)"
                 : "try looser or tighter tolerances, more solver steps, a fixed-step or stiff "
                   "solver, or regularization (kinetic / Jacobian) to keep the dynamics tame";
    snprintf(t->reason, sizeof t->reason, "%s at iteration %zu: %s%s; %s; %s",
             diverged ? "diverged" : "solver failed", iter, what,
             diverged && rc != CNF_EDIVERGED && drift > gs * scale
                 ? " (the parameters had run away from the last good ones)"
                 : "",
             kept, hint);
    return cnf_fail(diverged ? CNF_EDIVERGED : rc, "%s", t->reason);
}

/* A failure of the loss, gradient or validation call: solver failures and non-finite values go
 * through the guard, anything else ends the run as an error. */
static int stop_failed(cnf_trainer *t, int rc, size_t iter, const char *during)
{
    if (!is_solver_code(rc)) {
        t->status = CNF_TRAIN_ERROR;
        snprintf(t->reason, sizeof t->reason, "%s at iteration %zu: %s", during, iter,
                 cnf_errmsg());
        return rc;
    }
    char what[1200];
    snprintf(what, sizeof what, "%s: %s: %s", during, cnf_strerror(rc), cnf_errmsg());
    return stop_unhealthy(t, rc, iter, what);
}

/* ---- the time budget (max_seconds, see cnf/train.h) ------------------------------------------ */

typedef struct budget {
    double iter_s;   /* the last iteration's time, without validation */
    double row_s;    /* evaluation time per row (NAN: not measured yet) */
    double row_nfe;  /* the smoothed training forward NFE when row_s was measured */
    size_t row_iter; /* the iteration it was measured at */
    int refreshed;   /* measured again near the end */
    double nfe;      /* the smoothed training forward NFE now */
} budget;

/* Time per evaluated row now: the measurement, with a 10% margin, scaled by the NFE's growth. */
static double budget_row_s(const budget *b)
{
    const double grow = b->row_nfe > 0 && b->nfe > 0 ? fmax(b->nfe / b->row_nfe, 1.0) : 1.0;
    return 1.1 * b->row_s * grow;
}

/* Before any validation: time the objective's validation on one evaluation batch of the
 * validation data (the batch layout a validation uses), or on the training batch without any. */
static void budget_probe(cnf_trainer *t, budget *b, const cnf_train_progress *p)
{
    cnf_train_config pc = t->cfg;
    if (pc.val_n == 0) {
        pc.val_X = t->X;
        pc.val_n = pc.batch;
    } else if (pc.val_batch > 0 && pc.val_batch < pc.val_n) {
        pc.val_n = pc.val_batch;
    }
    pc.val_batch = 0;
    cnf_train_progress pp = *p;
    cnf_rng r;
    cnf_rng_seed(&r, 0x9b0be);
    double figure;
    const double s0 = cnf_wall_seconds();
    const int rc = t->obj->validate(t->flow, &pc, &r, &pp, &figure);
    const double s = cnf_wall_seconds() - s0;
    b->row_s = rc ? b->iter_s / (double)pc.batch : s / (double)pc.val_n;
    b->row_nfe = b->nfe;
    b->row_iter = t->iter;
}

/* After iteration p->iter (periodic: it validates anyway): is it the last the budget allows? */
static int budget_spent(cnf_trainer *t, budget *b, const cnf_train_progress *p, int periodic,
                        double start)
{
    const cnf_train_config *c = &t->cfg;
    const size_t final_rows = (c->val_every ? c->val_n : 0) + c->after_rows;
    if (final_rows > 0 && isnan(b->row_s))
        budget_probe(t, b, p);
    for (;;) {
        const double r = final_rows > 0 ? budget_row_s(b) : 0.0;
        const double val = c->val_every ? r * (double)c->val_n : 0.0;
        const double need = b->iter_s + val + r * (double)c->after_rows + (periodic ? val : 0.0);
        const double left = c->max_seconds - (cnf_wall_seconds() - start);
        /* The evaluations' cost grows with the field's stiffness faster than the training NFE
         * says: near the end, an estimate more than 10 iterations old is measured once more. */
        if (final_rows > 0 && !b->refreshed && need >= 0.5 * left && t->iter > b->row_iter + 10) {
            budget_probe(t, b, p);
            b->refreshed = 1;
            continue;
        }
        return need >= left;
    }
}

/* The scheduled base learning rate of the step of iteration `iter` (1-based), see cnf/train.h. */
static double scheduled_lr(const cnf_train_config *c, size_t iter, double elapsed)
{
    double f;
    if (c->max_seconds > 0)
        f = elapsed / c->max_seconds;
    else
        f = c->iters > c->lr_iter0 + 1 && iter > c->lr_iter0
                ? (double)(iter - 1 - c->lr_iter0) / (double)(c->iters - 1 - c->lr_iter0)
                : 0.0;
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    return c->lr_final + (c->optim.lr - c->lr_final) * 0.5 * (1 + cos(M_PI * f));
}

int cnf_trainer_run(cnf_trainer *t)
{
    const cnf_train_config *c = &t->cfg;
    const size_t P = cnf_flow_n_params(t->flow);
    double *theta = cnf_flow_params(t->flow);
    const double start = cnf_wall_seconds();
    const int ema = t->avg != NULL;
    const double g_loss = guard(c->guard_loss, 1e10), g_grad = guard(c->guard_grad, 1e10),
                 g_step = guard(c->guard_step, 1.0);
    t->status = CNF_TRAIN_OK;
    t->reason[0] = '\0';
    t->good.valid = t->good.validated = 0;
    budget B = {.row_s = NAN};
    while (t->iter < c->iters) {
        const double it0 = cnf_wall_seconds();
        if (c->stop && c->stop(c->stop_ctx)) {
            t->status = CNF_TRAIN_INTERRUPTED;
            snprintf(t->reason, sizeof t->reason, "interrupted after iteration %zu", t->iter);
            break;
        }
        int rc = CNF_OK;
        const cnf_rng rng0 = t->rng;
        if (t->obj->uses_data &&
            (rc = c->next_batch(c->batch_ctx, c->batch, t->X, &t->rng)) != 0) {
            t->status = CNF_TRAIN_ERROR;
            rc = rc < 0 ? rc : cnf_fail(CNF_EINVAL, "data callback stopped with %d", rc);
            snprintf(t->reason, sizeof t->reason, "data at iteration %zu: %s", t->iter + 1,
                     cnf_errmsg());
            return rc;
        }
        cnf_train_progress p = {.iter = t->iter + 1, .iters = c->iters};
        cnf_flow_stats st;
        rc = t->obj->loss_grad(t->flow, c, t->obj->uses_data ? t->X : NULL, c->batch, &t->rng,
                               &p.loss, t->grad, &st);
        if (rc)
            return stop_failed(t, rc, p.iter, "computing the loss and gradient");
        char what[200];
        if (!isfinite(p.loss) || fabs(p.loss) > g_loss) {
            snprintf(what, sizeof what, "the loss is %g%s", p.loss,
                     isfinite(p.loss) ? " (beyond the guard's limit)" : "");
            return stop_unhealthy(t, CNF_EDIVERGED, p.iter, what);
        }
        cnf_optim_clip_norm(t->grad, P, INFINITY, &p.grad_norm);
        if (!isfinite(p.grad_norm) || p.grad_norm > g_grad) {
            snprintf(what, sizeof what, "the gradient norm is %g%s", p.grad_norm,
                     isfinite(p.grad_norm) ? " (beyond the guard's limit)" : "");
            return stop_unhealthy(t, CNF_EDIVERGED, p.iter, what);
        }
        if (c->clip_norm > 0 && (rc = cnf_optim_clip_norm(t->grad, P, c->clip_norm, NULL))) {
            t->status = CNF_TRAIN_ERROR;
            snprintf(t->reason, sizeof t->reason, "clipping the gradient at iteration %zu: %s",
                     p.iter, cnf_errmsg());
            return cnf_fail(rc, "%s", t->reason);
        }
        /* θ gave a healthy loss and gradient: until a validation vouches for later parameters,
         * this is the state to come back to. */
        if (!t->good.validated)
            snapshot_take(t, theta, &rng0, t->iter);
        if (c->lr_schedule == CNF_LR_COSINE &&
            (rc = cnf_optim_set_lr(t->optim, scheduled_lr(c, p.iter,
                                                          cnf_wall_seconds() - start))) != 0) {
            t->status = CNF_TRAIN_ERROR;
            snprintf(t->reason, sizeof t->reason, "learning rate at iteration %zu: %s", p.iter,
                     cnf_errmsg());
            return rc;
        }
        p.lr = cnf_optim_lr(t->optim);
        if (ema && t->ema_steps == 0) /* θ̄ starts from the parameters before the first step */
            memcpy(t->avg, theta, P * sizeof(double));
        memcpy(t->prev, theta, P * sizeof(double));
        rc = cnf_optim_step(t->optim, theta, t->grad);
        if (rc) {
            t->status = CNF_TRAIN_ERROR;
            snprintf(t->reason, sizeof t->reason, "optimizer step at iteration %zu: %s", p.iter,
                     cnf_errmsg());
            return rc;
        }
        const double moved = rms_diff(theta, t->prev, P), scale = fmax(rms(t->prev, P), 1.0);
        if (!(moved <= g_step * scale)) {
            snprintf(what, sizeof what, "one optimizer step moved the parameters by RMS %g, "
                     "more than their scale %g", moved, scale);
            return stop_unhealthy(t, CNF_EDIVERGED, p.iter, what);
        }
        t->iter++;
        if (ema) {
            const double k = (double)t->ema_steps++, b = fmin(c->ema_decay, (1 + k) / (10 + k));
            for (size_t i = 0; i < P; i++)
                t->avg[i] = b * t->avg[i] + (1 - b) * theta[i];
        }
        p.nll = st.nll;
        p.nfe_forward = st.nfe_forward;
        p.nfe_backward = st.nfe_backward;
        const int periodic = c->val_every && (t->iter % c->val_every == 0 || t->iter == c->iters);
        int out_of_time = 0;
        if (c->max_seconds > 0) {
            B.iter_s = cnf_wall_seconds() - it0;
            B.nfe = B.nfe > 0 ? 0.9 * B.nfe + 0.1 * (double)st.nfe_forward : (double)st.nfe_forward;
            out_of_time = budget_spent(t, &B, &p, periodic, start);
        }
        if (periodic || (c->val_every && out_of_time)) {
            const double v0 = cnf_wall_seconds();
            /* Validation draws (importance sampling) from its own stream so that validating does
             * not change the training run. */
            cnf_rng vr;
            cnf_rng_seed(&vr, 0x5a4d1e + t->iter);
            if (ema)
                use_average(t, theta, P);
            double figure = NAN;
            rc = t->obj->validate(t->flow, c, &vr, &p, &figure);
            if (ema)
                use_iterate(t, theta, P);
            if (rc)
                return stop_failed(t, rc, t->iter, "validating");
            if (c->max_seconds > 0 && c->val_n > 0) {
                B.row_s = (cnf_wall_seconds() - v0) / (double)c->val_n;
                B.row_nfe = B.nfe;
                B.row_iter = t->iter;
            }
            if (!isfinite(figure) || fabs(figure) > g_loss) {
                snprintf(what, sizeof what, "the validation %s is %g", t->obj->figure, figure);
                return stop_unhealthy(t, CNF_EDIVERGED, t->iter, what);
            }
            snapshot_take(t, theta, &t->rng, t->iter);
            t->good.validated = 1;
            if (ema)
                use_average(t, theta, P);
            p.has_val = 1;
        }
        p.seconds = cnf_wall_seconds() - start;
        if (out_of_time)
            p.iters = t->iter;
        if (c->progress && (rc = c->progress(&p, c->progress_ctx)) != 0) {
            if (ema) /* a stop ends the run: the flow gets θ̄ */
                memcpy(theta, t->avg, P * sizeof(double));
            t->status = CNF_TRAIN_STOPPED;
            snprintf(t->reason, sizeof t->reason, "stopped by the progress callback after "
                     "iteration %zu", t->iter);
            return rc;
        }
        if (out_of_time) {
            t->status = CNF_TRAIN_TIME_LIMIT;
            snprintf(t->reason, sizeof t->reason, "time limit of %g s reached after iteration "
                     "%zu", c->max_seconds, t->iter);
            if (ema && p.has_val)
                use_iterate(t, theta, P);
            break;
        }
        if (ema && p.has_val)
            use_iterate(t, theta, P);
    }
    if (ema && t->ema_steps > 0)
        memcpy(theta, t->avg, P * sizeof(double));
    return CNF_OK;
}
