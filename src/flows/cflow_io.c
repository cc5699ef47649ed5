/* The contents of the CNF's model files: its settings as metadata, its blocks' MLP tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "cflow_internal.h"
#include "format/meta.h"

/* ---- model files ---------------------------------------------------------------------------- */

static int put_solver(cnf_st_writer *w, const char *prefix, const void *field)
{
    const cnf_solve_config *sc = field;
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

static int get_solver(const cnf_st_file *f, const char *prefix, void *field)
{
    cnf_solve_config *sc = field;
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

/* The enums by name, for the table. */
static const char *act_name(int v) { return cnf_act_name((cnf_act)v); }
static int act_from(const char *s, int *v) { return cnf_act_from_name(s, (cnf_act *)v); }
static const char *time_name(int v) { return cnf_time_mode_name((cnf_time_mode)v); }
static int time_from(const char *s, int *v)
{
    return cnf_time_mode_from_name(s, (cnf_time_mode *)v);
}
static const char *trace_name(int v) { return cnf_trace_name((cnf_trace)v); }
static int trace_from(const char *s, int *v)
{
    return cnf_trace_from_name(s, (cnf_trace *)v);
}
static const char *grad_name(int v) { return cnf_grad_mode_name((cnf_grad_mode)v); }
static int grad_from(const char *s, int *v)
{
    return cnf_grad_mode_from_name(s, (cnf_grad_mode *)v);
}
static const char *prec_name(int v) { return cnf_precision_name((cnf_precision)v); }
static int prec_from(const char *s, int *v)
{
    return cnf_precision_from_name(s, (cnf_precision *)v);
}

#define OFF(F) offsetof(cnf_cflow_config, F)
#define NAMED(KEY, F, N)                                                                          \
    {.key = KEY, .type = CNF_SET_NAME, .off = OFF(F), .name = N##_name, .from_name = N##_from}

/* The CNF's settings in a model file, in the order they are written. "T" is the end time reached
 * (cflow_describe writes √T² when T is trained); "precision" is absent from files written before
 * mixed precision existed (then double). */
static const cnf_setting settings[] = {
    {.key = "hidden", .type = CNF_SET_WIDTHS, .off = OFF(hidden), .off_n = OFF(n_hidden),
     .max = 64},
    NAMED("act", act, act),
    NAMED("time", time, time),
    {.key = "blocks", .type = CNF_SET_SIZE, .off = OFF(blocks)},
    {.key = "T", .type = CNF_SET_DOUBLE, .off = OFF(T)},
    {.key = "train_T", .type = CNF_SET_FLAG, .off = OFF(train_T)},
    NAMED("trace", trace, trace),
    {.key = "probes", .type = CNF_SET_SIZE, .off = OFF(probes)},
    NAMED("eval_trace", eval_trace, trace),
    {.key = "reg_kinetic", .type = CNF_SET_DOUBLE, .off = OFF(reg_kinetic)},
    {.key = "reg_jacobian", .type = CNF_SET_DOUBLE, .off = OFF(reg_jacobian)},
    NAMED("grad", grad, grad),
    {.key = "precision", .type = CNF_SET_NAME, .off = OFF(precision), .optional = 1,
     .name = prec_name, .from_name = prec_from},
    {.key = "train", .type = CNF_SET_CUSTOM, .off = OFF(train), .put = put_solver,
     .get = get_solver},
    {.key = "eval", .type = CNF_SET_CUSTOM, .off = OFF(eval), .put = put_solver, .get = get_solver},
};

/* The tensors of c: MLP block i of CNF block b as "block<b>.<layer>.<W|b|c|wg|bg>" (a matrix, or
 * a vector when it has one column), then "sqrt_end_time" when T is trained. A new list of *n
 * entries, NULL if out of memory. */
static cnf_tensor_ref *block_tensors(const cflow *c, size_t *n)
{
    const size_t per = cnf_mlp_n_blocks(c->mlp);
    cnf_tensor_ref *t = cnf_calloc(cnf_size_mul(c->cfg.blocks, per) + 1, sizeof *t);
    *n = 0;
    for (size_t b = 0; t && b < c->cfg.blocks; b++)
        for (size_t i = 0; i < per; i++) {
            cnf_tensor_ref *r = &t[(*n)++];
            const char *name;
            size_t off;
            cnf_mlp_block(c->mlp, i, &name, &off, &r->shape[0], &r->shape[1]);
            snprintf(r->name, sizeof r->name, "block%zu.%s", b, name);
            r->ndim = r->shape[1] == 1 ? 1 : 2;
            r->data = c->base.theta + b * c->P + off;
        }
    if (t && c->cfg.train_T) {
        cnf_tensor_ref *r = &t[(*n)++];
        snprintf(r->name, sizeof r->name, "sqrt_end_time");
        r->ndim = 1;
        r->shape[0] = 1;
        r->data = c->base.theta + c->base.n_params - 1;
    }
    return t;
}

/* Write (save, w) or read (load, f) the tensors of c. */
static int block_tensors_io(const cflow *c, cnf_st_writer *w, const cnf_st_file *f)
{
    size_t n;
    cnf_tensor_ref *t = block_tensors(c, &n);
    if (!t)
        return cnf_fail(CNF_ENOMEM, "listing %zu CNF blocks' tensors", c->cfg.blocks);
    int rc = w ? cnf_tensors_write(w, t, n) : cnf_tensors_read(f, t, n);
    free(t);
    return rc;
}

int cflow_describe(const cnf_flow *f, cnf_st_writer *w)
{
    const cflow *c = (const cflow *)f;
    if (!c->mlp)
        return cnf_fail(CNF_EUNSUPPORTED, "a CNF with a user field cannot be saved");
    cnf_cflow_config saved = c->cfg;
    saved.T = cflow_end_time(c);
    int rc = cnf_settings_write(w, settings, sizeof settings / sizeof *settings, &saved);
    return rc ? rc : block_tensors_io(c, w, NULL);
}

/* The settings of a CNF model file into cfg, its hidden widths into hidden (room for 64). */
int cflow_read_config(const cnf_st_file *f, cnf_cflow_config *cfg, size_t *hidden)
{
    size_t dim;
    int rc = cnf_meta_get_size(f, "dim", &dim);
    if (rc)
        return rc;
    cnf_cflow_config_default(cfg, dim);
    cfg->hidden = hidden;
    if ((rc = cnf_settings_read(f, settings, sizeof settings / sizeof *settings, cfg)))
        return rc;
    if (cfg->blocks > 1024)
        return cnf_fail(CNF_EFORMAT, "model metadata 'blocks' = %zu is implausible", cfg->blocks);
    return CNF_OK;
}

/* The blocks' tensors (and √T) of a CNF model file into c, created from its settings. */
int cflow_read_tensors(const cnf_st_file *f, cflow *c) { return block_tensors_io(c, NULL, f); }
