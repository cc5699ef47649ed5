/* The contents of the CNF's model files: its settings as metadata, its blocks' MLP tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- model files ---------------------------------------------------------------------------- */

static int put_solver(cnf_st_writer *w, const char *prefix, const cnf_solve_config *sc)
{
    char key[64];
    snprintf(key, sizeof key, "%s.solver", prefix);
    int rc = cnf_st_writer_meta(w, key, cnf_stepper_name(sc->stepper));
    snprintf(key, sizeof key, "%s.rtol", prefix);
    if (!rc) rc = cnf_meta_put_double(w, key, sc->opt.rtol);
    snprintf(key, sizeof key, "%s.atol", prefix);
    if (!rc) rc = cnf_meta_put_double(w, key, sc->opt.atol);
    snprintf(key, sizeof key, "%s.steps", prefix);
    if (!rc) rc = cnf_meta_put_size(w, key, sc->opt.steps);
    return rc;
}

static int get_solver(const cnf_st_file *f, const char *prefix, cnf_solve_config *sc)
{
    char key[64];
    snprintf(key, sizeof key, "%s.solver", prefix);
    const char *name = cnf_meta_get_str(f, key);
    if (!name)
        return CNF_EFORMAT;
    int rc = cnf_stepper_from_name(name, &sc->stepper);
    cnf_ode_options_default(&sc->opt);
    snprintf(key, sizeof key, "%s.rtol", prefix);
    if (!rc) rc = cnf_meta_get_double(f, key, &sc->opt.rtol);
    snprintf(key, sizeof key, "%s.atol", prefix);
    if (!rc) rc = cnf_meta_get_double(f, key, &sc->opt.atol);
    snprintf(key, sizeof key, "%s.steps", prefix);
    if (!rc) rc = cnf_meta_get_size(f, key, &sc->opt.steps);
    return rc;
}

/* Tensor name of MLP block i of CNF block b: "block<b>.<layer>.<W|b|c|wg|bg>". */
static void tensor_name(char *buf, size_t len, size_t b, const char *block)
{
    snprintf(buf, len, "block%zu.%s", b, block);
}

int cflow_describe(const cnf_flow *f, cnf_st_writer *w)
{
    const cflow *c = (const cflow *)f;
    const cnf_cflow_config *g = &c->cfg;
    if (!c->mlp)
        return cnf_fail(CNF_EUNSUPPORTED, "a CNF with a user field cannot be saved");
    int rc = cnf_meta_put_widths(w, "hidden", g->hidden, g->n_hidden);
    if (!rc) rc = cnf_st_writer_meta(w, "act", cnf_act_name(g->act));
    if (!rc) rc = cnf_st_writer_meta(w, "time", cnf_time_mode_name(g->time));
    if (!rc) rc = cnf_meta_put_size(w, "blocks", g->blocks);
    if (!rc) rc = cnf_meta_put_double(w, "T", cflow_end_time(c));
    if (!rc) rc = cnf_meta_put_size(w, "train_T", (size_t)(g->train_T != 0));
    if (!rc) rc = cnf_st_writer_meta(w, "trace", cnf_trace_name(g->trace));
    if (!rc) rc = cnf_meta_put_size(w, "probes", g->probes);
    if (!rc) rc = cnf_st_writer_meta(w, "eval_trace", cnf_trace_name(g->eval_trace));
    if (!rc) rc = cnf_meta_put_double(w, "reg_kinetic", g->reg_kinetic);
    if (!rc) rc = cnf_meta_put_double(w, "reg_jacobian", g->reg_jacobian);
    if (!rc) rc = cnf_st_writer_meta(w, "grad", cnf_grad_mode_name(g->grad));
    if (!rc) rc = cnf_st_writer_meta(w, "precision", cnf_precision_name(g->precision));
    if (!rc) rc = put_solver(w, "train", &g->train);
    if (!rc) rc = put_solver(w, "eval", &g->eval);
    for (size_t b = 0; !rc && b < g->blocks; b++)
        for (size_t i = 0; !rc && i < cnf_mlp_n_blocks(c->mlp); i++) {
            const char *name;
            size_t off, shape[2];
            cnf_mlp_block(c->mlp, i, &name, &off, &shape[0], &shape[1]);
            char key[64];
            tensor_name(key, sizeof key, b, name);
            rc = cnf_st_writer_add(w, key, shape[1] == 1 ? 1 : 2, shape,
                                   c->base.theta + b * c->P + off);
        }
    if (!rc && g->train_T) {
        size_t one = 1;
        rc = cnf_st_writer_add(w, "sqrt_end_time", 1, &one, c->base.theta + c->base.n_params - 1);
    }
    return rc;
}

/* The settings of a CNF model file into cfg, its hidden widths into hidden (room for max). */
int cflow_read_config(const cnf_st_file *f, cnf_cflow_config *cfg, size_t *hidden, size_t max)
{
    size_t dim, n_hidden = 0, train_T;
    int rc = cnf_meta_get_size(f, "dim", &dim);
    if (rc)
        return rc;
    cnf_cflow_config_default(cfg, dim);
    if ((rc = cnf_meta_get_widths(f, "hidden", hidden, max, &n_hidden)))
        return rc;
    cfg->hidden = hidden;
    cfg->n_hidden = n_hidden;
    const char *act = cnf_meta_get_str(f, "act"), *tm = cnf_meta_get_str(f, "time");
    const char *tr = cnf_meta_get_str(f, "trace"), *etr = cnf_meta_get_str(f, "eval_trace");
    const char *gm = cnf_meta_get_str(f, "grad");
    if (!act || !tm || !tr || !etr || !gm)
        return CNF_EFORMAT;
    if (!rc) rc = cnf_act_from_name(act, &cfg->act);
    if (!rc) rc = cnf_time_mode_from_name(tm, &cfg->time);
    if (!rc) rc = cnf_trace_from_name(tr, &cfg->trace);
    if (!rc) rc = cnf_trace_from_name(etr, &cfg->eval_trace);
    if (!rc) rc = cnf_grad_mode_from_name(gm, &cfg->grad);
    /* Files written before mixed precision existed have no key: double. */
    const char *prec = cnf_st_meta(f, "precision");
    if (!rc && prec)
        rc = cnf_precision_from_name(prec, &cfg->precision);
    if (!rc) rc = cnf_meta_get_size(f, "blocks", &cfg->blocks);
    if (!rc) rc = cnf_meta_get_double(f, "T", &cfg->T);
    if (!rc) rc = cnf_meta_get_size(f, "train_T", &train_T);
    if (!rc) rc = cnf_meta_get_size(f, "probes", &cfg->probes);
    if (!rc) rc = cnf_meta_get_double(f, "reg_kinetic", &cfg->reg_kinetic);
    if (!rc) rc = cnf_meta_get_double(f, "reg_jacobian", &cfg->reg_jacobian);
    if (!rc) rc = get_solver(f, "train", &cfg->train);
    if (!rc) rc = get_solver(f, "eval", &cfg->eval);
    if (rc)
        return rc == CNF_ENAME ? cnf_fail(CNF_EFORMAT, "%s", cnf_errmsg()) : rc;
    cfg->train_T = train_T != 0;
    if (cfg->blocks > 1024)
        return cnf_fail(CNF_EFORMAT, "model metadata 'blocks' = %zu is implausible", cfg->blocks);
    return CNF_OK;
}

/* The blocks' tensors (and √T) of a CNF model file into c, created from its settings. */
int cflow_read_tensors(const cnf_st_file *f, cflow *c)
{
    int rc = CNF_OK;
    for (size_t b = 0; !rc && b < c->cfg.blocks; b++)
        for (size_t i = 0; !rc && i < cnf_mlp_n_blocks(c->mlp); i++) {
            const char *name;
            size_t off, shape[2];
            cnf_mlp_block(c->mlp, i, &name, &off, &shape[0], &shape[1]);
            char key[64];
            tensor_name(key, sizeof key, b, name);
            const double *data;
            rc = cnf_st_get_shaped(f, key, shape[1] == 1 ? 1 : 2, shape, &data);
            if (!rc)
                memcpy(c->base.theta + b * c->P + off, data, shape[0] * shape[1] * sizeof(double));
        }
    if (!rc && c->cfg.train_T) {
        size_t one = 1;
        const double *data;
        rc = cnf_st_get_shaped(f, "sqrt_end_time", 1, &one, &data);
        if (!rc)
            c->base.theta[c->base.n_params - 1] = data[0];
    }
    return rc;
}
