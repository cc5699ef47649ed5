/* Reverse KL to an unnormalized target density (cnf_flow_rkl_grad): each iteration draws its own
 * base points, no data; validation estimates log Z by importance sampling (cnf/train.h). */
#include "objective.h"
#include "core/internal.h"

static int rkl_check(const cnf_flow *f, const cnf_train_config *c)
{
    const cnf_rkl_params *p = c->objective_params;
    if (!p || !p->logq)
        return cnf_fail(CNF_EINVAL, "reverse KL needs a target density (objective_params: a "
                        "cnf_rkl_params with logq set)");
    if (c->val_every && c->val_n == 0)
        return cnf_fail(CNF_EINVAL, "validation every %zu iterations but val_n = 0",
                        c->val_every);
    return CNF_OK;
}

static int rkl_loss_grad(cnf_flow *f, const cnf_train_config *c, const double *X, size_t n,
                         cnf_rng *rng, double *loss, double *grad, cnf_flow_stats *st)
{
    const cnf_rkl_params *p = c->objective_params;
    return cnf_flow_rkl_grad(f, n, rng, p->logq, p->ctx, loss, grad, st);
}

static int rkl_validate(cnf_flow *f, const cnf_train_config *c, cnf_rng *rng,
                        cnf_train_progress *pr, double *figure)
{
    const cnf_rkl_params *p = c->objective_params;
    int rc = cnf_flow_importance(f, c->val_n, rng, p->logq, p->ctx, &pr->log_z,
                                 &pr->ess_fraction, &pr->elbo);
    *figure = pr->log_z;
    return rc;
}

static const cnf_objective_type rkl = {
    .name = "reverse-kl",
    .summary = "reverse KL to an unnormalized target density, no data, reporting the ELBO and "
               "log Z by importance sampling",
    .uses_data = 0,
    .figure = "log Z estimate",
    .check = rkl_check,
    .loss_grad = rkl_loss_grad,
    .validate = rkl_validate,
};

const cnf_objective_type *const cnf_objective_rkl = &rkl;
