/* The continuous normalizing flow object: the MLP as its field, construction, the flow type table,
 * the accessors and loading from a model file. The math is in cflow_internal.h and cnf/cflow.h;
 * the field, solves, gradients and model-file contents in the other cflow_*.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- the MLP as a field --------------------------------------------------------------------- */

static int mlp_work_create(void *ctx, size_t n_max, size_t k_max, void **work)
{
    return cnf_mlp_work_create((cnf_mlp_work **)work, ctx, n_max, k_max);
}

static void mlp_work_free(void *work) { cnf_mlp_work_free(work); }

static int mlp_jvp(void *ctx, const double *theta, double t, const double *X, size_t ldx,
                   size_t n, const double *U, size_t K, double *F, size_t ldf, double *JU,
                   void *work)
{
    return cnf_mlp_jvp(ctx, theta, t, X, ldx, n, U, K, F, ldf, JU, work);
}

static int mlp_backward(void *ctx, const double *theta, const double *R, size_t ldr,
                        const double *S, double *GX, size_t ldgx, double *gtheta, double *gt,
                        void *work)
{
    return cnf_mlp_backward(ctx, theta, R, ldr, S, GX, ldgx, gtheta, gt, work);
}

/* ---- the flow object ------------------------------------------------------------------------ */

static const cnf_flow_type cflow_type;

static cflow *as_cflow(cnf_flow *f) { return f && f->type == &cflow_type ? (cflow *)f : NULL; }

/* ---- construction --------------------------------------------------------------------------- */

static void cflow_free(cnf_flow *f)
{
    cflow *c = (cflow *)f;
    if (c->have_slot)
        cflow_slot_free(c, &c->slot);
    for (size_t i = 0; i < c->n_trs; i++)
        cnf_rk_tape_free(&c->trs[i]);
    free(c->trs);
    free(c->rev);
    for (int i = 0; i < 2; i++)
        cnf_ode_solver_free(c->solver[i].s);
    cnf_mlp_free(c->mlp);
    free(c->hidden);
    free(c->base.theta);
    free(c);
}

/* Velocity regression (flow matching): cflow_fm.c, on this CNF's field. */
static int cflow_velocity_check(const cnf_flow *f)
{
    return cnf_cflow_fm_check(((const cflow *)f)->mlp, &((const cflow *)f)->cfg);
}

static int cflow_velocity_loss(cnf_flow *f, const double *X, size_t n, cnf_path_fn path,
                               void *ctx, double *loss, double *grad)
{
    cflow *c = (cflow *)f;
    return cnf_cflow_fm_loss(c->mlp, f->theta, cflow_end_time(c), f->dim, X, n, path, ctx, loss, grad);
}

static const cnf_flow_type cflow_type = {
    .kind = "cnf",
    .encode = cflow_encode,
    .decode = cflow_decode,
    .nll_grad = cflow_nll_grad,
    .rkl_grad = cflow_rkl_grad,
    .velocity_loss = cflow_velocity_loss,
    .velocity_check = cflow_velocity_check,
    .free = cflow_free,
    .describe = cflow_describe,
};

static int check_config(const cnf_cflow_config *cfg)
{
    if (!cfg)
        return cnf_fail(CNF_EINVAL, "CNF configuration is NULL");
    if (cfg->dim == 0)
        return cnf_fail(CNF_EINVAL, "CNF dimension is 0");
    if (cfg->blocks == 0)
        return cnf_fail(CNF_EINVAL, "CNF needs at least one block");
    if (!(cfg->T > 0.0) || !isfinite(cfg->T))
        return cnf_fail(CNF_EINVAL, "end time T = %g must be positive and finite", cfg->T);
    if (cfg->probes == 0)
        return cnf_fail(CNF_EINVAL, "Hutchinson needs at least one probe");
    if (!(cfg->reg_kinetic >= 0.0) || !(cfg->reg_jacobian >= 0.0))
        return cnf_fail(CNF_EINVAL, "regularizer weights must be non-negative");
    if ((unsigned)cfg->trace > 2 || (unsigned)cfg->eval_trace > 2 || (unsigned)cfg->grad > 2)
        return cnf_fail(CNF_EINVAL, "invalid trace or gradient mode value");
    if (!cfg->train.stepper || !cfg->eval.stepper)
        return cnf_fail(CNF_EINVAL, "CNF needs a training and an evaluation solver");
    return CNF_OK;
}

static int create(cnf_flow **out, const cnf_cflow_config *cfg, cnf_mlp *mlp,
                  const cnf_field_ops *ops, void *ctx)
{
    cflow *c = calloc(1, sizeof *c);
    if (!c) {
        cnf_mlp_free(mlp);
        return cnf_fail(CNF_ENOMEM, "allocating the CNF");
    }
    c->cfg = *cfg;
    c->mlp = mlp;
    c->ops = *ops;
    c->field_ctx = ctx;
    c->P = ops->n_params;
    c->base.type = &cflow_type;
    c->base.dim = cfg->dim;
    c->base.n_params = cnf_size_mul(cfg->blocks, c->P); /* saturated: fails below */
    c->base.n_params += c->base.n_params < SIZE_MAX && cfg->train_T ? 1 : 0;
    c->base.theta = cnf_calloc(c->base.n_params, sizeof(double));
    if (mlp) {
        c->hidden = cnf_calloc(cfg->n_hidden, sizeof(size_t));
        if (c->hidden && cfg->n_hidden)
            memcpy(c->hidden, cfg->hidden, cfg->n_hidden * sizeof(size_t));
        c->cfg.hidden = c->hidden;
    }
    if (!c->base.theta || (mlp && !c->hidden)) {
        cflow_free(&c->base);
        return cnf_fail(CNF_ENOMEM, "allocating the CNF parameters (%zu blocks of %zu)",
                        cfg->blocks, ops->n_params);
    }
    if (cfg->train_T)
        c->base.theta[c->base.n_params - 1] = sqrt(cfg->T);
    *out = &c->base;
    return CNF_OK;
}

int cnf_cflow_create(cnf_flow **out, const cnf_cflow_config *cfg, cnf_rng *rng)
{
    *out = NULL;
    int rc = check_config(cfg);
    if (rc)
        return rc;
    if (!rng)
        return cnf_fail(CNF_EINVAL, "CNF initialisation needs a random generator");
    cnf_mlp_config mc = {.d_in = cfg->dim, .d_out = cfg->dim, .n_hidden = cfg->n_hidden,
                         .hidden = cfg->hidden, .act = cfg->act, .time = cfg->time,
                         .precision = cfg->precision};
    cnf_mlp *mlp = NULL;
    rc = cnf_mlp_create(&mlp, &mc);
    if (rc)
        return rc;
    cnf_field_ops ops = {.n_params = cnf_mlp_n_params(mlp), .work_create = mlp_work_create,
                         .work_free = mlp_work_free, .jvp = mlp_jvp, .backward = mlp_backward};
    rc = create(out, cfg, mlp, &ops, mlp);
    if (rc)
        return rc;
    cflow *c = (cflow *)*out;
    for (size_t b = 0; b < cfg->blocks; b++)
        cnf_mlp_init(mlp, c->base.theta + b * c->P, rng);
    return CNF_OK;
}

int cnf_cflow_create_field(cnf_flow **out, const cnf_cflow_config *cfg, const cnf_field_ops *ops,
                           void *ctx)
{
    *out = NULL;
    int rc = check_config(cfg);
    if (rc)
        return rc;
    if (!ops || !ops->work_create || !ops->work_free || !ops->jvp || !ops->backward)
        return cnf_fail(CNF_EINVAL, "field operations incomplete");
    return create(out, cfg, NULL, ops, ctx);
}

cnf_cflow_config *cnf_cflow_settings(cnf_flow *f)
{
    cflow *c = as_cflow(f);
    return c ? &c->cfg : NULL;
}

const cnf_mlp *cnf_cflow_mlp(const cnf_flow *f)
{
    cflow *c = as_cflow((cnf_flow *)f);
    return c ? c->mlp : NULL;
}

double cnf_cflow_end_time(const cnf_flow *f)
{
    cflow *c = as_cflow((cnf_flow *)f);
    return c ? cflow_end_time(c) : 0.0;
}

int cnf_cflow_load(const cnf_st_file *f, cnf_flow **out)
{
    cnf_cflow_config cfg;
    size_t hidden[64];
    int rc = cflow_read_config(f, &cfg, hidden);
    if (rc)
        return rc;
    cnf_rng r;
    cnf_rng_seed(&r, 0);
    rc = cnf_cflow_create(out, &cfg, &r);
    if (rc == CNF_ENOMEM) /* a valid file too large for this machine is not a format error */
        return rc;
    if (rc)
        return cnf_fail(CNF_EFORMAT, "model architecture is invalid: %s", cnf_errmsg());
    rc = cflow_read_tensors(f, (cflow *)*out);
    if (rc) {
        cnf_flow_free(*out);
        *out = NULL;
    }
    return rc;
}
