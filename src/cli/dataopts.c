/* Data files in the CLI (see dataopts.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dataopts.h"

void data_opts_default(data_opts *o)
{
    memset(o, 0, sizeof *o);
    o->val_frac = 0.1;
    o->test_frac = 0.1;
    o->standardize = 1;
    o->drop_constant = 1;
    o->alpha = 1e-6;
    o->patience = 0;
}

size_t data_opts_table(data_opts *o, cli_opt *t)
{
    const cli_opt mine[DATA_OPTS_COUNT] = {
        {"--columns", OPT_STR, &o->columns, "LIST",
         "data files: columns to model, e.g. 0-63 or 0,2,5-7 (default: all)", 1},
        {"--val-frac", OPT_DOUBLE, &o->val_frac, "F",
         "data files: fraction of rows for validation (early stopping)", 1},
        {"--test-frac", OPT_DOUBLE, &o->test_frac, "F", "data files: fraction of rows for test",
         1},
        {"--standardize", OPT_FLAG, &o->standardize, NULL,
         "data files: standardise each feature on the training rows (=0 to turn off)", 1},
        {"--drop-constant", OPT_FLAG, &o->drop_constant, NULL,
         "data files: drop columns constant on the training rows (=0 to keep)", 1},
        {"--dequantize", OPT_DOUBLE, &o->levels, "LEVELS",
         "data files: integer data in [0, LEVELS) (pixels: 256): uniform dequantisation + "
         "logit transform (0: continuous data)", 1},
        {"--alpha", OPT_DOUBLE, &o->alpha, "A", "the logit transform's alpha (FFJORD: 1e-6)", 1},
        {"--pca", OPT_SIZE, &o->pca, "K",
         "data files: model the top K principal components (NLL is then in PCA space)", 1},
        {"--patience", OPT_SIZE, &o->patience, "N",
         "early stopping: stop after N validations without improvement and keep the best "
         "parameters (0: off)", 1},
    };
    memcpy(t, mine, sizeof mine);
    return DATA_OPTS_COUNT;
}

int data_is_file(const char *name)
{
    const cnf_toy_type *toy;
    if (strchr(name, '/') || strchr(name, '.'))
        return 1;
    /* MNIST's IDX files are named without an extension (train-images-idx3-ubyte). */
    return cnf_toy_from_name(name, &toy) != CNF_OK && access(name, F_OK) == 0;
}

/* Parse "0-3,7" into column indices. */
static int parse_columns(const char *cmd, const char *s, size_t **cols, size_t *k)
{
    size_t cap = 16, n = 0;
    size_t *c = malloc(cap * sizeof *c);
    const char *p = s;
    while (c && *p) {
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9')
            goto bad;
        unsigned long long a = strtoull(p, &end, 10), b = a;
        if (*end == '-') {
            if (end[1] < '0' || end[1] > '9')
                goto bad;
            b = strtoull(end + 1, &end, 10);
        }
        if (errno || b < a || b - a > 1000000 || (*end && *end != ','))
            goto bad;
        for (unsigned long long v = a; v <= b; v++) {
            if (n == cap) {
                size_t *t = realloc(c, 2 * cap * sizeof *c);
                if (!t) {
                    free(c);
                    c = NULL;
                    break;
                }
                c = t;
                cap *= 2;
            }
            c[n++] = (size_t)v;
        }
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p)
            goto bad;
    }
    if (!c) {
        fprintf(stderr, "cnf %s: out of memory\n", cmd);
        return 1;
    }
    *cols = c;
    *k = n;
    return 0;
bad:
    free(c);
    fprintf(stderr, "cnf %s: --columns '%s' is not a list like 0-63 or 0,2,5-7\n", cmd, s);
    return 2;
}

int data_load(const char *cmd, const char *path, const char *columns, const data_opts *o,
              uint64_t seed, int shuffle, data_split *out)
{
    memset(out, 0, sizeof *out);
    if (!(o->val_frac >= 0 && o->test_frac >= 0 && o->val_frac + o->test_frac < 1)) {
        fprintf(stderr, "cnf %s: --val-frac and --test-frac must be >= 0 with a sum below 1\n",
                cmd);
        return 2;
    }
    int rc = cnf_data_load(path, CNF_DATA_AUTO, &out->all);
    if (rc) {
        cli_error(cmd, rc, "reading --data");
        return 1;
    }
    if (columns) {
        size_t *cols, k;
        int u = parse_columns(cmd, columns, &cols, &k);
        if (u) {
            data_split_free(out);
            return u;
        }
        rc = cnf_data_select(&out->all, cols, k);
        free(cols);
        if (rc) {
            cli_error(cmd, rc, "--columns");
            data_split_free(out);
            return 2;
        }
    }
    size_t n = out->all.n, d = out->all.d;
    if (!shuffle) {
        out->train = out->all.X;
        out->n_train = n;
        return 0;
    }
    cnf_rng r;
    cnf_rng_seed(&r, seed ^ 0x5b1175ULL); /* the split's own stream */
    cnf_data_shuffle(out->all.X, n, d, &r);
    out->n_val = (size_t)(o->val_frac * (double)n);
    out->n_test = (size_t)(o->test_frac * (double)n);
    out->n_train = n - out->n_val - out->n_test;
    if (out->n_train < 2 || (o->val_frac > 0 && out->n_val == 0) ||
        (o->test_frac > 0 && out->n_test == 0)) {
        fprintf(stderr, "cnf %s: %s: %zu rows are too few for the split (train %zu, validation "
                "%zu, test %zu)\n", cmd, path, n, out->n_train, out->n_val, out->n_test);
        data_split_free(out);
        return 1;
    }
    out->train = out->all.X;
    out->val = out->all.X + out->n_train * d;
    out->test = out->val + out->n_val * d;
    return 0;
}

void data_split_free(data_split *s)
{
    cnf_data_clear(&s->all);
    memset(s, 0, sizeof *s);
}

int data_batch_fn(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    const data_batch *b = ctx;
    for (size_t i = 0; i < n; i++) {
        size_t r = (size_t)cnf_rng_below(rng, b->n);
        memcpy(X + i * b->d, b->X + r * b->d, b->d * sizeof(double));
    }
    if (b->levels > 0)
        cnf_data_dequantize(X, n, b->d, rng);
    return 0;
}
