/* Model files and checkpoints: save → load → eval to 1e-12, bit-identical resume, malformed
 * files rejected with named errors, a failed save keeping the previous file, every flow kind and
 * precision surviving save and load, and checkpoints of averaging runs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf.h"
#include "train_util.h"

Test(model, save_load_eval_reproduces_nll)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 1);
    enum { n = 64 };
    double X[n * 2], lp1[n], lp2[n];
    cnf_rng r;
    cnf_rng_seed(&r, 2);
    cnf_toy_sample_named("moons", n, X, &r);
    cr_assert_eq(cnf_flow_log_prob(f, X, n, lp1, NULL), CNF_OK);
    const char *path = tmp_path("a.safetensors");
    const char *extra[] = {"data", "moons", NULL};
    cr_assert_eq(cnf_model_save(path, f, NULL, extra), CNF_OK, "%s", cnf_errmsg());
    cnf_flow *g;
    cnf_st_file *file;
    cr_assert_eq(cnf_model_load(path, &g, &file), CNF_OK, "%s", cnf_errmsg());
    cr_assert_str_eq(cnf_st_meta(file, "user.data"), "moons");
    cr_assert_eq(cnf_flow_n_params(g), cnf_flow_n_params(f));
    cr_assert(memcmp(cnf_flow_params(g), cnf_flow_params(f),
                     cnf_flow_n_params(f) * sizeof(double)) == 0);
    cr_assert_eq(cnf_flow_log_prob(g, X, n, lp2, NULL), CNF_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(lp1[i] - lp2[i]) <= 1e-12, "%.17g vs %.17g", lp1[i], lp2[i]);
    /* The restored settings are the saved ones. */
    const cnf_cflow_config *a = cnf_cflow_settings(f), *b = cnf_cflow_settings(g);
    cr_assert_eq(a->train.stepper, b->train.stepper);
    cr_assert_eq(a->train.opt.steps, b->train.opt.steps);
    cr_assert_eq(a->eval.opt.rtol, b->eval.opt.rtol);
    cr_assert_eq(a->reg_kinetic, b->reg_kinetic);
    cr_assert_eq(cnf_cflow_end_time(f), cnf_cflow_end_time(g));
    /* A weights-only file has no training state. */
    cnf_trainer *t;
    cnf_train_config tc = train_config(1);
    cr_assert_eq(cnf_trainer_create(&t, g, &tc, 0), CNF_OK);
    cr_assert_eq(cnf_model_restore_trainer(file, t), CNF_EFORMAT);
    cnf_trainer_free(t);
    cnf_st_free(file);
    cnf_flow_free(g);
    cnf_flow_free(f);
    unlink(path);
}

Test(model, resume_is_bit_identical)
{
    const size_t total = 12, half = 5;
    /* Uninterrupted. */
    cnf_flow *f = small_cnf(CNF_TRACE_HUTCH_RADEMACHER, 3);
    cnf_train_config tc = train_config(total);
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 99), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK, "%s", cnf_errmsg());
    /* Interrupted at `half`, saved, reloaded into fresh objects, continued. */
    cnf_flow *g = small_cnf(CNF_TRACE_HUTCH_RADEMACHER, 3);
    cnf_train_config tc2 = train_config(half);
    cnf_trainer *t2;
    cr_assert_eq(cnf_trainer_create(&t2, g, &tc2, 99), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t2), CNF_OK);
    const char *path = tmp_path("ckpt.safetensors");
    cr_assert_eq(cnf_model_save(path, g, t2, NULL), CNF_OK, "%s", cnf_errmsg());
    cnf_trainer_free(t2);
    cnf_flow_free(g);
    cnf_st_file *file;
    cr_assert_eq(cnf_model_load(path, &g, &file), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_create(&t2, g, &tc, 12345 /* overwritten by the checkpoint */),
                 CNF_OK);
    cr_assert_eq(cnf_model_restore_trainer(file, t2), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_trainer_iter(t2), half);
    cr_assert_eq(cnf_trainer_run(t2), CNF_OK);
    cr_assert_eq(cnf_trainer_iter(t2), total);
    cr_assert(memcmp(cnf_flow_params(f), cnf_flow_params(g),
                     cnf_flow_n_params(f) * sizeof(double)) == 0,
              "resumed parameters differ from the uninterrupted run");
    cnf_st_free(file);
    cnf_trainer_free(t);
    cnf_trainer_free(t2);
    cnf_flow_free(f);
    cnf_flow_free(g);
    unlink(path);
}

/* Write `len` bytes of `data` to path. */
static void put(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(*len);
    cr_assert_eq(fread(b, 1, *len, fp), *len);
    fclose(fp);
    return b;
}

static void expect_reject(const char *path, int code, const char *needle)
{
    cnf_flow *g = (cnf_flow *)1;
    int rc = cnf_model_load(path, &g, NULL);
    cr_assert_eq(rc, code, "expected %s, got %s (%s)", cnf_strerror(code), cnf_strerror(rc),
                 cnf_errmsg());
    cr_assert_null(g);
    cr_assert(strstr(cnf_errmsg(), needle), "message '%s' lacks '%s'", cnf_errmsg(), needle);
}

Test(model, malformed_files_are_rejected)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 4);
    const char *good = tmp_path("good.safetensors"), *bad = tmp_path("bad.safetensors");
    cr_assert_eq(cnf_model_save(good, f, NULL, NULL), CNF_OK);
    size_t len;
    unsigned char *b = slurp(good, &len);
    /* Truncated: data cut short, then the header itself cut. */
    put(bad, b, len - 9);
    expect_reject(bad, CNF_EFORMAT, bad);
    put(bad, b, 20);
    expect_reject(bad, CNF_EFORMAT, bad);
    /* Corrupted header length. */
    unsigned char *c = malloc(len);
    memcpy(c, b, len);
    c[3] = 0x7f;
    put(bad, c, len);
    expect_reject(bad, CNF_EFORMAT, bad);
    /* Corrupted JSON: overwrite a brace in the header. */
    memcpy(c, b, len);
    c[8] = '[';
    put(bad, c, len);
    expect_reject(bad, CNF_EFORMAT, bad);
    free(c);
    /* Missing file. */
    expect_reject(tmp_path("absent.safetensors"), CNF_EIO, "absent");

    /* Well-formed safetensors that are not valid models: rebuild from the good file with one
     * change each. */
    cnf_st_file *src;
    cr_assert_eq(cnf_st_read(good, 0, &src), CNF_OK);
    for (int variant = 0; variant < 4; variant++) {
        cnf_st_writer *w;
        cr_assert_eq(cnf_st_writer_create(&w), CNF_OK);
        for (size_t i = 0; i < cnf_st_meta_count(src); i++) {
            const char *k = cnf_st_meta_key(src, i), *v = cnf_st_meta(src, k);
            if (variant == 0 && !strcmp(k, "kind"))
                v = "spline-of-doom";
            if (variant == 1 && !strcmp(k, "hidden"))
                v = "8-x";
            if (variant == 3 && !strcmp(k, "format"))
                continue;
            cnf_st_writer_meta(w, k, v);
        }
        for (size_t i = 0; i < cnf_st_count(src); i++) {
            const char *name = cnf_st_name(src, i);
            const size_t *shape;
            size_t ndim;
            const double *data;
            cnf_st_get(src, name, &shape, &ndim, &data);
            size_t sh[2] = {shape[0], ndim > 1 ? shape[1] : 1};
            if (variant == 2 && !strcmp(name, "block0.1.W")) {
                /* Wrong dimension: a 3-column input layer in a 2-D model. */
                double w3[8 * 3] = {0};
                sh[1] = 3;
                cnf_st_writer_add(w, name, 2, sh, w3);
                continue;
            }
            cnf_st_writer_add(w, name, ndim, sh, data);
        }
        cr_assert_eq(cnf_st_write(w, bad), CNF_OK);
        cnf_st_writer_free(w);
        static const int codes[] = {CNF_EFORMAT, CNF_EFORMAT, CNF_EDIM, CNF_EFORMAT};
        static const char *needles[] = {"spline-of-doom", "hidden", "block0.1.W", "format"};
        expect_reject(bad, codes[variant], needles[variant]);
    }
    cnf_st_free(src);
    free(b);
    cnf_flow_free(f);
    unlink(good);
    unlink(bad);
}

Test(model, failed_save_keeps_previous_file)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 5);
    const char *path = tmp_path("keep.safetensors");
    cr_assert_eq(cnf_model_save(path, f, NULL, NULL), CNF_OK);
    size_t len1;
    unsigned char *before = slurp(path, &len1);
    const char *bad_extra[] = {"key-without-value", NULL};
    cr_assert_eq(cnf_model_save(path, f, NULL, bad_extra), CNF_EINVAL);
    size_t len2;
    unsigned char *after = slurp(path, &len2);
    cr_assert(len1 == len2 && memcmp(before, after, len1) == 0);
    cr_assert_eq(cnf_model_save("/nonexistent-dir/x.safetensors", f, NULL, NULL), CNF_EIO);
    free(before);
    free(after);
    cnf_flow_free(f);
    unlink(path);
}

/* Every discrete flow kind survives save → load with the same log-density, bit for bit. */
/* Save f to a file, load it, save the loaded flow again: the two files must be the same bytes
 * (saving is deterministic, so a setting or tensor that load misread or left at its default
 * shows). The loaded flow is returned. */
static cnf_flow *resave_same_bytes(const cnf_flow *f, const char *what)
{
    const char *p1 = tmp_path("first.safetensors"), *p2 = tmp_path("again.safetensors");
    cnf_flow *g;
    cr_assert_eq(cnf_model_save(p1, f, NULL, NULL), CNF_OK, "%s: %s", what, cnf_errmsg());
    cr_assert_eq(cnf_model_load(p1, &g, NULL), CNF_OK, "%s: %s", what, cnf_errmsg());
    cr_assert_eq(cnf_model_save(p2, g, NULL, NULL), CNF_OK, "%s: %s", what, cnf_errmsg());
    size_t n1, n2;
    unsigned char *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2);
    cr_assert(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: the reloaded flow saves other bytes",
              what);
    cr_assert_eq(cnf_flow_n_params(g), cnf_flow_n_params(f), "%s", what);
    cr_assert(memcmp(cnf_flow_params((cnf_flow *)f), cnf_flow_params(g),
                     cnf_flow_n_params(f) * sizeof(double)) == 0, "%s: parameters differ", what);
    free(b1);
    free(b2);
    unlink(p1);
    unlink(p2);
    return g;
}

/* f saved with entry 0 of tensor `name` set to v must be rejected with code and needle. */
static void expect_reject_edited(const cnf_flow *f, const char *name, double v, int code,
                                 const char *needle)
{
    const char *good = tmp_path("edit_good.safetensors"), *bad = tmp_path("edit_bad.safetensors");
    cr_assert_eq(cnf_model_save(good, f, NULL, NULL), CNF_OK, "%s", cnf_errmsg());
    cnf_st_file *src;
    cnf_st_writer *w;
    cr_assert_eq(cnf_st_read(good, 0, &src), CNF_OK);
    cr_assert_eq(cnf_st_writer_create(&w), CNF_OK);
    for (size_t i = 0; i < cnf_st_meta_count(src); i++) {
        const char *k = cnf_st_meta_key(src, i);
        cnf_st_writer_meta(w, k, cnf_st_meta(src, k));
    }
    for (size_t i = 0; i < cnf_st_count(src); i++) {
        const char *t = cnf_st_name(src, i);
        const size_t *shape;
        size_t ndim;
        const double *data;
        cnf_st_get(src, t, &shape, &ndim, &data);
        size_t m = ndim > 1 ? shape[0] * shape[1] : shape[0];
        double *copy = malloc(m * sizeof *copy);
        memcpy(copy, data, m * sizeof *copy);
        if (!strcmp(t, name))
            copy[0] = v;
        cr_assert_eq(cnf_st_writer_add(w, t, ndim, shape, copy), CNF_OK);
        free(copy);
    }
    cr_assert_eq(cnf_st_write(w, bad), CNF_OK);
    cnf_st_writer_free(w);
    cnf_st_free(src);
    expect_reject(bad, code, needle);
    unlink(good);
    unlink(bad);
}

/* Every discrete kind with every setting away from its default comes back with the same
 * settings, parameters (batch-norm statistics included) and log-densities. */
Test(model, discrete_flows_save_and_load)
{
    for (size_t k = 0; k < cnf_dflow_kind_count(); k++) {
        const char *kind = cnf_dflow_kind_at(k);
        static const size_t hidden[] = {5, 3};
        cnf_dflow_config c;
        cnf_dflow_config_default(&c, kind, 3);
        c.layers = 3;
        c.hidden = hidden;
        c.n_hidden = 2;
        c.act = CNF_ACT_SOFTPLUS;
        c.bins = 5;
        c.bound = 2.5;
        c.scale_bound = 2.0;
        c.batchnorm = 1; /* realnvp and maf insert batch norm; the others keep the flag */
        c.bn_momentum = 0.3;
        c.bn_eps = 1e-4;
        cnf_rng r;
        cnf_rng_seed(&r, 10 + k);
        cnf_flow *f;
        cr_assert_eq(cnf_dflow_create(&f, &c, &r), CNF_OK, "%s: %s", kind, cnf_errmsg());
        double *th = cnf_flow_params(f);
        for (size_t i = 0; i < cnf_flow_n_params(f); i++)
            th[i] += 0.1 * cnf_rng_normal(&r); /* no parameter left at its initial value */
        double X[24], lp1[8], lp2[8], loss;
        for (size_t i = 0; i < 24; i++)
            X[i] = cnf_rng_normal(&r);
        /* One training-mode call (ActNorm's data initialisation, batch-norm statistics). */
        cr_assert_eq(cnf_flow_loss(f, X, 8, &r, &loss, NULL), CNF_OK, "%s: %s", kind,
                     cnf_errmsg());
        cr_assert_eq(cnf_flow_log_prob(f, X, 8, lp1, NULL), CNF_OK);
        cnf_flow *g = resave_same_bytes(f, kind);
        cr_assert_str_eq(cnf_flow_kind(g), kind);
        const cnf_dflow_config *a = cnf_dflow_get_config(f), *b = cnf_dflow_get_config(g);
        cr_assert_not_null(b, "%s: not a discrete flow on reload", kind);
        cr_assert(a->dim == b->dim && a->layers == b->layers && a->n_hidden == b->n_hidden &&
                  a->act == b->act && a->bins == b->bins && a->bound == b->bound &&
                  a->scale_bound == b->scale_bound && a->batchnorm == b->batchnorm &&
                  a->bn_momentum == b->bn_momentum && a->bn_eps == b->bn_eps, "%s: settings",
                  kind);
        cr_assert(memcmp(a->hidden, b->hidden, a->n_hidden * sizeof *a->hidden) == 0);
        cr_assert_eq(cnf_dflow_n_layers(g), cnf_dflow_n_layers(f), "%s", kind);
        cr_assert_eq(cnf_flow_log_prob(g, X, 8, lp2, NULL), CNF_OK);
        cr_assert(memcmp(lp1, lp2, sizeof lp1) == 0, "%s: log p changed on reload", kind);
        cnf_flow_free(f);
        cnf_flow_free(g);
    }
}

/* The preprocessing wrapper in each of its forms (logit transform with its alpha, PCA,
 * standardisation off, constant columns kept) comes back as it was saved. */
Test(model, preprocessed_flows_save_and_load)
{
    enum { n = 60, D = 4 };
    double X[n * D], lp1[n], lp2[n];
    cnf_rng r;
    cnf_rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) {
        double a = floor(16 * cnf_rng_uniform(&r));
        X[i * D + 0] = a + cnf_rng_uniform(&r);
        X[i * D + 1] = 5.0; /* constant */
        X[i * D + 2] = fmin(15, floor(a / 2 + 8 * cnf_rng_uniform(&r))) + cnf_rng_uniform(&r);
        X[i * D + 3] = 16 * cnf_rng_uniform(&r);
    }
    for (int variant = 0; variant < 4; variant++) {
        cnf_pre_config pc;
        cnf_pre_config_default(&pc);
        if (variant == 0)
            pc.levels = 16, pc.alpha = 0.05;
        if (variant == 1)
            pc.pca = 2;
        if (variant == 2)
            pc.standardize = 0, pc.levels = 16;
        if (variant == 3)
            pc.drop_constant = 0, pc.pca = 3;
        cnf_pre *p;
        cr_assert_eq(cnf_pre_fit(&p, &pc, X, n, D), CNF_OK, "%d: %s", variant, cnf_errmsg());
        cnf_dflow_config c;
        static const size_t hidden[] = {4};
        cnf_dflow_config_default(&c, variant % 2 ? "maf" : "realnvp", cnf_pre_dim(p));
        c.layers = 2;
        c.hidden = hidden;
        c.n_hidden = 1;
        cnf_flow *inner, *f;
        cr_assert_eq(cnf_dflow_create(&inner, &c, &r), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(cnf_pre_flow_create(&f, p, inner), CNF_OK, "%s", cnf_errmsg());
        double *th = cnf_flow_params(f);
        for (size_t i = 0; i < cnf_flow_n_params(f); i++)
            th[i] += 0.1 * cnf_rng_normal(&r);
        cr_assert_eq(cnf_flow_log_prob(f, X, n, lp1, NULL), CNF_OK, "%s", cnf_errmsg());
        char what[32];
        snprintf(what, sizeof what, "variant %d", variant);
        cnf_flow *g = resave_same_bytes(f, what);
        const cnf_pre *a = cnf_pre_flow_pre(f), *b = cnf_pre_flow_pre(g);
        cr_assert_not_null(b, "%s: the preprocessing is lost", what);
        cr_assert(cnf_pre_dim(a) == cnf_pre_dim(b) && cnf_pre_input_dim(a) == cnf_pre_input_dim(b)
                  && cnf_pre_levels(a) == cnf_pre_levels(b) &&
                  cnf_pre_is_projection(a) == cnf_pre_is_projection(b), "%s: settings", what);
        cr_assert_eq(cnf_flow_log_prob(g, X, n, lp2, NULL), CNF_OK, "%s", cnf_errmsg());
        cr_assert(memcmp(lp1, lp2, sizeof lp1) == 0, "%s: log p changed on reload", what);
        if (variant == 0) /* a kept column index that is not a whole number */
            expect_reject_edited(f, "pre.keep", 0.5, CNF_EFORMAT, "pre.keep");
        cnf_flow_free(f);
        cnf_flow_free(g);
    }
}

/* The precision is part of the model file: a mixed-precision CNF reloads as mixed. */
Test(model, mixed_precision_survives_save_and_load)
{
    static const size_t hidden[] = {8, 8};
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.hidden = hidden;
    cfg.n_hidden = 2;
    cfg.precision = CNF_PRECISION_MIXED;
    cnf_rng r;
    cnf_rng_seed(&r, 12);
    cnf_flow *f, *g;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK, "%s", cnf_errmsg());
    double X[16], lp1[8], lp2[8];
    for (size_t i = 0; i < 16; i++)
        X[i] = cnf_rng_normal(&r);
    cr_assert_eq(cnf_flow_log_prob(f, X, 8, lp1, NULL), CNF_OK);
    const char *path = tmp_path("mixed.safetensors");
    cr_assert_eq(cnf_model_save(path, f, NULL, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_model_load(path, &g, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_cflow_settings(g)->precision, CNF_PRECISION_MIXED);
    cr_assert_eq(cnf_flow_log_prob(g, X, 8, lp2, NULL), CNF_OK);
    cr_assert(memcmp(lp1, lp2, sizeof lp1) == 0, "log p changed on reload");
    cnf_flow_free(f);
    cnf_flow_free(g);
    unlink(path);
}

Test(model, checkpoint_of_an_averaging_run_holds_the_average)
{
    cnf_flow *f = small_cnf(CNF_TRACE_EXACT, 26);
    cnf_train_config tc = train_config(6);
    tc.ema_decay = 0.9;
    cnf_trainer *t;
    cr_assert_eq(cnf_trainer_create(&t, f, &tc, 1), CNF_OK);
    cr_assert_eq(cnf_trainer_run(t), CNF_OK);
    size_t P = cnf_flow_n_params(f);
    const double *avg = cnf_trainer_average(t);
    cr_assert_not_null(avg);
    /* Put a different iterate into the flow, as mid-run: the file still holds θ̄. */
    cnf_flow_params(f)[0] += 1.0;
    const char *path = tmp_path("ema.safetensors");
    cr_assert_eq(cnf_model_save(path, f, t, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_flow_params(f)[0], avg[0] + 1.0, "the flow's parameters are put back");
    cnf_flow *g;
    cr_assert_eq(cnf_model_load(path, &g, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert(memcmp(cnf_flow_params(g), avg, P * sizeof(double)) == 0);
    unlink(path);
    cnf_flow_free(g);
    cnf_trainer_free(t);
    cnf_flow_free(f);
}
