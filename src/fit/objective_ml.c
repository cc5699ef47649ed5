/* Maximum likelihood: the flow's own training loss (mean NLL plus its regularizers) on data
 * batches, validated by the held-out NLL; and the batched NLL evaluation it rests on (see
 * cnf/train.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "objective.h"
#include "core/internal.h"

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

int cnf_objective_check_data(const cnf_train_config *c)
{
    if (!c->next_batch)
        return cnf_fail(CNF_EINVAL, "objective '%s' fits data: the trainer needs a data callback",
                        c->objective->name);
    if (c->val_every && (!c->val_X || c->val_n == 0))
        return cnf_fail(CNF_EINVAL, "validation every %zu iterations but no validation data",
                        c->val_every);
    return CNF_OK;
}

int cnf_objective_validate_nll(cnf_flow *f, const cnf_train_config *c, cnf_rng *rng,
                               cnf_train_progress *p, double *figure)
{
    int rc = cnf_flow_eval_nll(f, c->val_X, c->val_n, c->val_batch, &p->val_nll,
                               &p->val_nll_stderr, NULL);
    *figure = p->val_nll;
    return rc;
}

static int ml_check(const cnf_flow *f, const cnf_train_config *c)
{
    return cnf_objective_check_data(c);
}

static int ml_loss_grad(cnf_flow *f, const cnf_train_config *c, const double *X, size_t n,
                        cnf_rng *rng, double *loss, double *grad, cnf_flow_stats *st)
{
    return cnf_flow_nll_grad(f, X, n, rng, loss, grad, st);
}

static const cnf_objective_type ml = {
    .name = "ml",
    .summary = "maximum likelihood on data, the flow's NLL plus its regularizers",
    .uses_data = 1,
    .figure = "NLL",
    .check = ml_check,
    .loss_grad = ml_loss_grad,
    .validate = cnf_objective_validate_nll,
};

const cnf_objective_type *const cnf_objective_ml = &ml;
