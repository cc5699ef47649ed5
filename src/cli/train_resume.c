/* `cnf train --resume`: the rules for options when resuming from a model file, and the saved
 * options written into model files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

/* With --resume, take every saved option from the model file unless given on the command line. */
int train_apply_saved(train_ctx *c, const cnf_st_file *file)
{
    for (size_t i = 0; i < c->n_table; i++) {
        if (!c->table[i].saved || cli_opt_given(c->table, &c->table[i]))
            continue;
        char key[64];
        snprintf(key, sizeof key, "user.%s", c->table[i].name + 2);
        const char *v = cnf_st_meta(file, key);
        if (v && cli_opt_set(CMD, &c->table[i], v))
            return 2;
    }
    return 0;
}


/* The options that make the model what it is (its parameters' shapes and meaning, and the
 * preprocessing stored with it): --resume refuses a value other than the file's. */
static int is_architecture(const char *name)
{
    static const char *const names[] = {
        "--model", "--hidden", "--act", "--time", "--blocks", "--T", "--train-T", "--layers",
        "--bins", "--bound", "--batchnorm", "--standardize", "--drop-constant", "--dequantize",
        "--alpha", "--pca"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i]))
            return 1;
    return 0;
}

/* --resume: 2 after a message naming every architecture option given with another value than
 * the file's. */
int train_check_architecture(train_ctx *c, const cnf_st_file *file)
{
    char bad[1024] = "";
    for (size_t i = 0; i < c->n_table; i++) {
        if (!c->table[i].saved || !is_architecture(c->table[i].name) ||
            !cli_opt_given(c->table, &c->table[i]))
            continue;
        char key[64], buf[64];
        snprintf(key, sizeof key, "user.%s", c->table[i].name + 2);
        const char *was = cnf_st_meta(file, key), *now = cli_opt_format(&c->table[i], buf, sizeof buf);
        if (!was || !now || !strcmp(was, now))
            continue;
        size_t len = strlen(bad);
        snprintf(bad + len, sizeof bad - len, "%s%s %s (the model has %s)", len ? ", " : "",
                 c->table[i].name, now, was);
    }
    if (!*bad)
        return 0;
    fprintf(stderr, "cnf %s: --resume %s: the architecture cannot change when resuming: %s; "
            "leave these options out, or train a new model\n", CMD, c->to.resume, bad);
    return 2;
}

/* --resume: the checkpoint's iteration must be below --iters (the total to reach). */
int train_check_iterations(train_ctx *c, const cnf_st_file *file)
{
    const char *v = cnf_st_meta(file, "train.iter");
    unsigned long long done = v ? strtoull(v, NULL, 10) : 0;
    if (!v || (unsigned long long)c->to.iters > done)
        return 0;
    fprintf(stderr, "cnf %s: --resume %s is at iteration %llu already: --iters %zu is the total "
            "to reach, give more than %llu\n", CMD, c->to.resume, done, c->to.iters, done);
    return 2;
}

/* --resume: put the run-time options (the saved ones, overridden by those given) into the loaded
 * flow, and say which were given. 0, 1 or 2 after a message. */
int train_apply_runtime(train_ctx *c)
{
    char applied[1024] = "", ignored[512] = "";
    cnf_flow *inner = cnf_pre_flow_inner(c->R.flow) ? cnf_pre_flow_inner(c->R.flow) : c->R.flow;
    cnf_cflow_config *s = cnf_cflow_settings(inner);
    for (size_t i = 0; i < c->n_table; i++) {
        if (!c->table[i].saved || is_architecture(c->table[i].name) ||
            !cli_opt_given(c->table, &c->table[i]))
            continue;
        char buf[64];
        const char *v = cli_opt_format(&c->table[i], buf, sizeof buf);
        if (c->table[i].kind == OPT_DOUBLE)
            snprintf(buf, sizeof buf, "%g", *(double *)c->table[i].ptr);
        char *list = !s && i < c->n_flow_opts ? ignored : applied;
        size_t cap = list == ignored ? sizeof ignored : sizeof applied, len = strlen(list);
        snprintf(list + len, cap - len, "%s%s %s", len ? ", " : "", c->table[i].name, v ? v : "");
    }
    if (s) {
        cnf_cflow_config cfg;
        size_t *hidden;
        int u = flow_opts_config(CMD, &c->fo, s->dim, &cfg, &hidden);
        free(hidden);
        if (u)
            return u;
        if (cfg.probes == 0 || !(cfg.reg_kinetic >= 0) || !(cfg.reg_jacobian >= 0)) {
            fprintf(stderr, "cnf %s: --probes must be >= 1 and the regularizer weights >= 0\n",
                    CMD);
            return 2;
        }
        s->trace = cfg.trace;
        s->probes = cfg.probes;
        s->reg_kinetic = cfg.reg_kinetic;
        s->reg_jacobian = cfg.reg_jacobian;
        s->grad = cfg.grad;
        s->train = cfg.train;
        s->eval = cfg.eval;
        if (cfg.precision != s->precision) { /* fixed when the MLP is built: build it anew */
            if (inner != c->R.flow) {
                fprintf(stderr, "cnf %s: --precision cannot change when resuming a model with "
                        "preprocessing (data files)\n", CMD);
                return 2;
            }
            cnf_cflow_config nc = *s;
            nc.precision = cfg.precision;
            cnf_rng r;
            cnf_rng_seed(&r, 0);
            cnf_flow *nf;
            int rc = cnf_cflow_create(&nf, &nc, &r);
            if (rc) {
                cli_error(CMD, rc, "rebuilding the model for --precision");
                return 1;
            }
            memcpy(cnf_flow_params(nf), cnf_flow_params(c->R.flow),
                   cnf_flow_n_params(nf) * sizeof(double));
            cnf_flow_free(c->R.flow);
            c->R.flow = nf;
        }
    }
    printf("resuming %s: %s%s%s\n", c->to.resume, *applied ? "applied " : "",
           *applied ? applied : "the saved settings", *applied ? "; the rest as saved" : "");
    if (*ignored)
        printf("(a discrete flow solves no ODE: %s has no effect)\n", ignored);
    return 0;
}

/* The saved options as metadata pairs: "key", "value", …, NULL. Strings point into store. */
const char **train_saved_pairs(train_ctx *c, char store[][64])
{
    static const char *pairs[2 * (FLOW_OPTS_MAX + TRAIN_OPTS_MAX + DATA_OPTS_COUNT) + 1];
    size_t k = 0;
    for (size_t i = 0; i < c->n_table; i++) {
        if (!c->table[i].saved)
            continue;
        const char *v = cli_opt_format(&c->table[i], store[i], 64);
        if (!v || (c->table[i].saved == 2 && !strcmp(v, "0")))
            continue;
        pairs[k++] = c->table[i].name + 2;
        pairs[k++] = v;
    }
    pairs[k] = NULL;
    return pairs;
}
