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
Test(model, discrete_flows_save_and_load)
{
    for (size_t k = 0; k < cnf_dflow_kind_count(); k++) {
        const char *kind = cnf_dflow_kind_at(k);
        static const size_t hidden[] = {6};
        cnf_dflow_config c;
        cnf_dflow_config_default(&c, kind, 2);
        c.layers = 2;
        c.hidden = hidden;
        c.n_hidden = 1;
        c.batchnorm = !strcmp(kind, "realnvp");
        cnf_rng r;
        cnf_rng_seed(&r, 10 + k);
        cnf_flow *f, *g;
        cr_assert_eq(cnf_dflow_create(&f, &c, &r), CNF_OK, "%s: %s", kind, cnf_errmsg());
        double X[16], lp1[8], lp2[8], loss;
        for (size_t i = 0; i < 16; i++)
            X[i] = cnf_rng_normal(&r);
        /* One training-mode call (ActNorm's data initialisation, batch-norm statistics). */
        cr_assert_eq(cnf_flow_loss(f, X, 8, &r, &loss, NULL), CNF_OK);
        cr_assert_eq(cnf_flow_log_prob(f, X, 8, lp1, NULL), CNF_OK);
        const char *path = tmp_path("d.safetensors");
        cr_assert_eq(cnf_model_save(path, f, NULL, NULL), CNF_OK, "%s: %s", kind, cnf_errmsg());
        cr_assert_eq(cnf_model_load(path, &g, NULL), CNF_OK, "%s: %s", kind, cnf_errmsg());
        cr_assert_str_eq(cnf_flow_kind(g), kind);
        cr_assert_eq(cnf_flow_log_prob(g, X, 8, lp2, NULL), CNF_OK);
        cr_assert(memcmp(lp1, lp2, sizeof lp1) == 0, "%s: log p changed on reload", kind);
        cnf_flow_free(f);
        cnf_flow_free(g);
        unlink(path);
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
