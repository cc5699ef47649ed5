/* Model files and checkpoints (see cnf/model.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/dflow.h"
#include "cnf/model.h"
#include "flows/flow.h"
#include "core/internal.h"

#define FORMAT "cnf-model-1"

/* ---- save ----------------------------------------------------------------------------------- */

static int put_trainer(cnf_st_writer *w, cnf_trainer *t)
{
    cnf_optim *o = cnf_trainer_optim(t);
    const cnf_train_config *c = cnf_trainer_config(t);
    const cnf_rng *r = cnf_trainer_rng(t);
    char rng[160];
    snprintf(rng, sizeof rng, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %d %a",
             r->s[0], r->s[1], r->s[2], r->s[3], r->has_spare, r->spare);
    int rc = cnf_meta_put_size(w, "train.iter", cnf_trainer_iter(t));
    if (!rc) rc = cnf_st_writer_meta(w, "train.rng", rng);
    if (!rc) rc = cnf_st_writer_meta(w, "optim.method", cnf_optim_method_name(c->optim.method));
    /* How the run that wrote it ended: "ok" or why it stopped early (cnf/train.h). */
    if (!rc) rc = cnf_st_writer_meta(w, "train.status",
                                     cnf_train_status_name(cnf_trainer_status(t)));
    if (!rc && *cnf_trainer_stop_reason(t))
        rc = cnf_st_writer_meta(w, "train.stop_reason", cnf_trainer_stop_reason(t));
    if (!rc) rc = cnf_meta_put_size(w, "optim.steps", (size_t)cnf_optim_steps(o));
    size_t n = cnf_optim_n_params(o);
    for (size_t i = 0; !rc && i < cnf_optim_n_buffers(o); i++) {
        const char *name;
        const double *buf = cnf_optim_buffer(o, i, &name);
        char key[96];
        snprintf(key, sizeof key, "optim.%s", name);
        rc = cnf_st_writer_add(w, key, 1, &n, buf);
    }
    return rc;
}

int cnf_model_save(const char *path, const cnf_flow *f, cnf_trainer *t, const char *const *extra)
{
    if (!f->type->describe)
        return cnf_fail(CNF_EUNSUPPORTED, "flow kind '%s' cannot be saved", f->type->kind);
    cnf_st_writer *w = NULL;
    int rc = cnf_st_writer_create(&w);
    if (!rc) rc = cnf_st_writer_meta(w, "format", FORMAT);
    if (!rc) rc = cnf_st_writer_meta(w, "kind", f->type->kind);
    if (!rc) rc = cnf_meta_put_size(w, "dim", f->dim);
    if (!rc) rc = cnf_meta_put_size(w, "n_params", f->n_params);
    if (!rc && t && cnf_trainer_flow(t) != f)
        rc = cnf_fail(CNF_EINVAL, "the trainer trains another flow");
    /* A run with parameter averaging is saved with its average θ̄ (what it validates and ends
     * with), wherever the flow's parameters stand mid-run. */
    const double *avg = !rc && t ? cnf_trainer_average(t) : NULL;
    double *theta = avg ? cnf_flow_params(cnf_trainer_flow(t)) : NULL, *keep = NULL;
    if (avg && !(keep = cnf_calloc(f->n_params, sizeof(double))))
        rc = cnf_fail(CNF_ENOMEM, "saving: a copy of %zu parameters", f->n_params);
    if (keep) {
        memcpy(keep, theta, f->n_params * sizeof(double));
        memcpy(theta, avg, f->n_params * sizeof(double));
    }
    if (!rc) rc = f->type->describe(f, w);
    if (keep) {
        memcpy(theta, keep, f->n_params * sizeof(double));
        free(keep);
    }
    if (!rc && t)
        rc = put_trainer(w, t);
    for (size_t i = 0; !rc && extra && extra[i]; i += 2) {
        if (!extra[i + 1]) {
            rc = cnf_fail(CNF_EINVAL, "metadata key '%s' has no value", extra[i]);
            break;
        }
        char key[128];
        snprintf(key, sizeof key, "user.%s", extra[i]);
        rc = cnf_st_writer_meta(w, key, extra[i + 1]);
    }
    if (!rc)
        rc = cnf_st_write(w, path);
    cnf_st_writer_free(w);
    return rc;
}

/* ---- load ----------------------------------------------------------------------------------- */

/* Loaders by kind; every discrete kind (cnf/dflow.h) goes to cnf_dflow_load. */
static const struct {
    const char *kind;
    int (*load)(const cnf_st_file *f, cnf_flow **out);
} loaders[] = {
    {"cnf", cnf_cflow_load},
};

int cnf_model_load(const char *path, cnf_flow **out, cnf_st_file **file)
{
    *out = NULL;
    if (file)
        *file = NULL;
    cnf_st_file *f = NULL;
    int rc = cnf_st_read(path, CNF_ST_FINITE, &f);
    if (rc)
        return rc;
    const char *fmt = cnf_st_meta(f, "format"), *kind = cnf_st_meta(f, "kind");
    if (!fmt || strcmp(fmt, FORMAT)) {
        rc = cnf_fail(CNF_EFORMAT, "%s: not a cnf model file (format '%s', expected '%s')", path,
                      fmt ? fmt : "(none)", FORMAT);
    } else {
        rc = cnf_fail(CNF_EFORMAT, "%s: unknown flow kind '%s'", path, kind ? kind : "(none)");
        for (size_t i = 0; i < sizeof loaders / sizeof *loaders; i++)
            if (kind && !strcmp(kind, loaders[i].kind))
                rc = loaders[i].load(f, out);
        for (size_t i = 0; kind && i < cnf_dflow_kind_count(); i++)
            if (!strcmp(kind, cnf_dflow_kind_at(i)))
                rc = cnf_dflow_load(f, out);
    }
    size_t dim, np;
    if (rc == CNF_OK && (cnf_meta_get_size(f, "dim", &dim) || cnf_meta_get_size(f, "n_params", &np) ||
                         dim != (*out)->dim || np != (*out)->n_params))
        rc = cnf_fail(CNF_EFORMAT, "%s: dimension or parameter count disagrees with the "
                      "architecture", path);
    if (rc == CNF_OK && cnf_st_meta(f, "pre.dim"))
        rc = cnf_pre_attach(f, out); /* preprocessing recorded with the model (cnf/pre.h) */
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", cnf_errmsg());
        cnf_flow_free(*out);
        *out = NULL;
        cnf_st_free(f);
        if (!strstr(msg, path))
            return cnf_fail(rc, "%s: %s", path, msg);
        return rc;
    }
    if (file)
        *file = f;
    else
        cnf_st_free(f);
    return CNF_OK;
}

int cnf_model_restore_trainer(const cnf_st_file *file, cnf_trainer *t)
{
    size_t iter, steps;
    int rc = cnf_meta_get_size(file, "train.iter", &iter);
    if (!rc) rc = cnf_meta_get_size(file, "optim.steps", &steps);
    const char *rs = rc ? NULL : cnf_meta_get_str(file, "train.rng");
    const char *method = rc ? NULL : cnf_meta_get_str(file, "optim.method");
    if (!rs || !method)
        return cnf_fail(CNF_EFORMAT, "model file holds no training state (%s)", cnf_errmsg());
    cnf_optim *o = cnf_trainer_optim(t);
    if (strcmp(method, cnf_optim_method_name(cnf_trainer_config(t)->optim.method)))
        return cnf_fail(CNF_EINVAL, "checkpoint was trained with %s, not %s", method,
                        cnf_optim_method_name(cnf_trainer_config(t)->optim.method));
    cnf_rng r;
    int consumed = 0;
    if (sscanf(rs, "%" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %d %la%n", &r.s[0], &r.s[1],
               &r.s[2], &r.s[3], &r.has_spare, &r.spare, &consumed) != 6 ||
        rs[consumed] != '\0')
        return cnf_fail(CNF_EFORMAT, "model metadata 'train.rng' is malformed");
    size_t n = cnf_optim_n_params(o);
    for (size_t i = 0; i < cnf_optim_n_buffers(o); i++) {
        const char *name;
        double *buf = cnf_optim_buffer(o, i, &name);
        char key[96];
        snprintf(key, sizeof key, "optim.%s", name);
        const double *data;
        rc = cnf_st_get_shaped(file, key, 1, &n, &data);
        if (rc)
            return rc;
        memcpy(buf, data, n * sizeof(double));
    }
    cnf_optim_set_steps(o, steps);
    *cnf_trainer_rng(t) = r;
    cnf_trainer_set_iter(t, iter);
    return CNF_OK;
}
