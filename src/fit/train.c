/* The training loop and batched evaluation (see cnf/train.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnf/train.h"
#include "core/internal.h"

struct cnf_trainer {
    cnf_flow *flow;
    cnf_train_config cfg;
    cnf_optim *optim;
    cnf_rng rng;
    size_t iter;
    double *X, *grad; /* (batch, d), (n_params) */
    /* ema_decay > 0: the average θ̄ and a place for the iterate θ while θ̄ sits in the flow
     * (n_params each), and the number of averaging steps taken. */
    double *avg, *raw;
    size_t ema_steps;
};

int cnf_trainer_create(cnf_trainer **out, cnf_flow *f, const cnf_train_config *cfg,
                       uint64_t seed)
{
    *out = NULL;
    if (!f || !cfg)
        return cnf_fail(CNF_EINVAL, "trainer needs a flow and a configuration");
    if (cfg->batch == 0)
        return cnf_fail(CNF_EINVAL, "batch size is 0");
    if (!cfg->next_batch && !cfg->target)
        return cnf_fail(CNF_EINVAL, "trainer needs a data callback or a target density");
    if (cfg->val_every && cfg->target && cfg->val_n == 0)
        return cnf_fail(CNF_EINVAL, "validation every %zu iterations but val_n = 0",
                        cfg->val_every);
    if (cfg->val_every && !cfg->target && (!cfg->val_X || cfg->val_n == 0))
        return cnf_fail(CNF_EINVAL, "validation every %zu iterations but no validation data",
                        cfg->val_every);
    if (cfg->flow_matching && cfg->target)
        return cnf_fail(CNF_EINVAL, "flow matching and reverse KL are different objectives");
    if (!(cfg->clip_norm >= 0.0) || !(cfg->max_seconds >= 0.0))
        return cnf_fail(CNF_EINVAL, "clipping norm %g and time limit %g must be >= 0",
                        cfg->clip_norm, cfg->max_seconds);
    if (!(cfg->ema_decay >= 0.0 && cfg->ema_decay < 1.0))
        return cnf_fail(CNF_EINVAL, "EMA decay %g is not in [0, 1)", cfg->ema_decay);
    cnf_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return cnf_fail(CNF_ENOMEM, "allocating the trainer");
    t->flow = f;
    t->cfg = *cfg;
    cnf_rng_seed(&t->rng, seed);
    int rc = cnf_optim_create(&cfg->optim, cnf_flow_n_params(f), &t->optim);
    if (rc) {
        free(t);
        return rc;
    }
    t->X = cnf_calloc(cfg->batch * cnf_flow_dim(f), sizeof(double));
    t->grad = cnf_calloc(cnf_flow_n_params(f), sizeof(double));
    if (cfg->ema_decay > 0) {
        t->avg = cnf_calloc(cnf_flow_n_params(f), sizeof(double));
        t->raw = cnf_calloc(cnf_flow_n_params(f), sizeof(double));
    }
    if (!t->X || !t->grad || (cfg->ema_decay > 0 && (!t->avg || !t->raw))) {
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
    free(t);
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

int cnf_trainer_run(cnf_trainer *t)
{
    const cnf_train_config *c = &t->cfg;
    const size_t P = cnf_flow_n_params(t->flow);
    double *theta = cnf_flow_params(t->flow);
    const double start = cnf_wall_seconds();
    const int ema = t->avg != NULL;
    while (t->iter < c->iters) {
        int rc = CNF_OK;
        if (!c->target && (rc = c->next_batch(c->batch_ctx, c->batch, t->X, &t->rng)) != 0)
            return rc < 0 ? rc : cnf_fail(CNF_EINVAL, "data callback stopped with %d", rc);
        cnf_train_progress p = {.iter = t->iter + 1, .iters = c->iters};
        cnf_flow_stats st;
        if (c->target) {
            rc = cnf_flow_rkl_grad(t->flow, c->batch, &t->rng, c->target, c->target_ctx,
                                   &p.loss, t->grad, &st);
        } else if (c->flow_matching) {
            memset(&st, 0, sizeof st);
            rc = cnf_fm_loss_grad(t->flow, t->X, c->batch, c->fm_variant, c->fm_sigma,
                                  &t->rng, &p.loss, t->grad);
            st.nll = p.loss;
        } else
            rc = cnf_flow_nll_grad(t->flow, t->X, c->batch, &t->rng, &p.loss, t->grad, &st);
        if (rc)
            return rc;
        if (!isfinite(p.loss))
            return cnf_fail(CNF_ENONFINITE, "loss is %g at iteration %zu", p.loss, p.iter);
        rc = cnf_optim_clip_norm(t->grad, P, c->clip_norm > 0 ? c->clip_norm : INFINITY,
                                 &p.grad_norm);
        if (rc)
            return cnf_fail(rc, "gradient at iteration %zu: %s", p.iter, cnf_errmsg());
        p.lr = cnf_optim_lr(t->optim);
        if (ema && t->ema_steps == 0) /* θ̄ starts from the parameters before the first step */
            memcpy(t->avg, theta, P * sizeof(double));
        rc = cnf_optim_step(t->optim, theta, t->grad);
        if (rc)
            return rc;
        t->iter++;
        if (ema) {
            const double k = (double)t->ema_steps++, b = fmin(c->ema_decay, (1 + k) / (10 + k));
            for (size_t i = 0; i < P; i++)
                t->avg[i] = b * t->avg[i] + (1 - b) * theta[i];
        }
        p.nll = st.nll;
        p.nfe_forward = st.nfe_forward;
        p.nfe_backward = st.nfe_backward;
        const int out_of_time = c->max_seconds > 0 && cnf_wall_seconds() - start >= c->max_seconds;
        if (c->val_every &&
            (t->iter % c->val_every == 0 || t->iter == c->iters || out_of_time)) {
            /* Importance sampling draws from its own stream so that validating does not change
             * the training run. */
            cnf_rng vr;
            cnf_rng_seed(&vr, 0x5a4d1e + t->iter);
            if (ema)
                use_average(t, theta, P);
            rc = c->target ? cnf_flow_importance(t->flow, c->val_n, &vr, c->target,
                                                 c->target_ctx, &p.log_z, &p.ess_fraction,
                                                 &p.elbo)
                           : cnf_flow_eval_nll(t->flow, c->val_X, c->val_n, c->val_batch,
                                               &p.val_nll, &p.val_nll_stderr, NULL);
            if (rc) {
                if (ema)
                    use_iterate(t, theta, P);
                return rc;
            }
            p.has_val = 1;
        }
        p.seconds = cnf_wall_seconds() - start;
        if (out_of_time)
            p.iters = t->iter;
        if (c->progress && (rc = c->progress(&p, c->progress_ctx)) != 0) {
            if (ema) /* a stop ends the run: the flow gets θ̄ */
                memcpy(theta, t->avg, P * sizeof(double));
            return rc;
        }
        if (out_of_time)
            break;
        if (ema && p.has_val)
            use_iterate(t, theta, P);
    }
    if (ema && t->ema_steps > 0)
        memcpy(theta, t->avg, P * sizeof(double));
    return CNF_OK;
}

int cnf_flow_eval_nll(cnf_flow *f, const double *X, size_t n, size_t batch, double *mean,
                      double *stderr_out, cnf_flow_stats *stats)
{
    if (n == 0)
        return cnf_fail(CNF_EINVAL, "no points to evaluate");
    if (batch == 0 || batch > n)
        batch = n;
    double *lp = cnf_calloc(batch, sizeof(double));
    if (!lp)
        return cnf_fail(CNF_ENOMEM, "allocating %zu log-densities", batch);
    if (stats)
        memset(stats, 0, sizeof *stats);
    const size_t d = cnf_flow_dim(f);
    /* Welford's running mean and variance of −log p. */
    double m = 0.0, s2 = 0.0;
    size_t k = 0;
    int rc = CNF_OK;
    for (size_t i = 0; i < n && rc == CNF_OK; i += batch) {
        size_t b = n - i < batch ? n - i : batch;
        cnf_flow_stats st;
        rc = cnf_flow_log_prob(f, X + i * d, b, lp, &st);
        for (size_t j = 0; rc == CNF_OK && j < b; j++) {
            double v = -lp[j], dm = v - m;
            m += dm / (double)++k;
            s2 += dm * (v - m);
        }
        if (stats && rc == CNF_OK) {
            stats->nfe_forward += st.nfe_forward;
            stats->steps += st.steps;
            stats->rejected += st.rejected;
        }
    }
    free(lp);
    if (rc)
        return rc;
    *mean = m;
    if (stats)
        stats->nll = m;
    if (stderr_out)
        *stderr_out = n > 1 ? sqrt(s2 / (double)(n - 1) / (double)n) : 0.0;
    return CNF_OK;
}
