/* Data files in the CLI (see dataopts.h). */
#include <errno.h>
#include <math.h>
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
         "data files: columns to model, by number from 0 (0-63 or 0,2,5-7) or by the header's "
         "names (waiting,eruptions) (default: all)", 1},
        {"--exclude-columns", OPT_STR, &o->exclude, "LIST",
         "data files: columns not to model (numbers or names, as --columns)", 1},
        {"--drop-missing", OPT_FLAG, &o->drop_missing, NULL,
         "data files: skip rows with a missing value (empty, NA, N/A, NaN, ?) in a modelled "
         "column, saying how many (default: such a value is an error naming its line)", 2},
        {"--val-frac", OPT_DOUBLE, &o->val_frac, "F",
         "data files: fraction of rows for validation (early stopping)", 1},
        {"--test-frac", OPT_DOUBLE, &o->test_frac, "F", "data files: fraction of rows for test",
         1},
        {"--standardize", OPT_FLAG, &o->standardize, NULL,
         "data files: standardise each feature on the training rows (=0 to turn off)", 1},
        {"--drop-constant", OPT_FLAG, &o->drop_constant, NULL,
         "data files: drop columns constant on the training rows (=0 to keep)", 1},
        {"--dequantize", OPT_DOUBLE, &o->levels, "LEVELS",
         "data files: integer data, every value one of 0, 1, ..., LEVELS-1 (pixels: 256): "
         "uniform dequantisation + logit transform; any other value (a fraction, a negative "
         "number) is an error naming its line and column: shift such a column to start at 0 "
         "(0: continuous data)", 1},
        {"--alpha", OPT_DOUBLE, &o->alpha, "A", "the logit transform's alpha (FFJORD: 1e-6)", 1},
        {"--pca", OPT_SIZE, &o->pca, "K",
         "data files: model the top K principal components (NLL is then in PCA space)", 1},
        {"--patience", OPT_SIZE, &o->patience, "N",
         "early stopping: stop after N validations without improvement and keep the best "
         "parameters (0: off)", 1},
    };
    memcpy(t, mine, sizeof mine);
    o->warn_integer = 1; /* the table is the training run's */
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

/* A column as messages name it: in a CSV file "field 4 (column 3)" or "field 4 (column 3,
 * 'waiting')" — the field counted from 1 as the loader's messages do, the column from 0 as
 * --columns does; in a binary file "column 3". */
static const char *col_name(const cnf_data *D, size_t sel, size_t file_col, char *buf, size_t len)
{
    if (D->first_line && D->names)
        snprintf(buf, len, "field %zu (column %zu, '%s')", file_col + 1, file_col, D->names[sel]);
    else if (D->first_line)
        snprintf(buf, len, "field %zu (column %zu)", file_col + 1, file_col);
    else
        snprintf(buf, len, "column %zu", file_col);
    return buf;
}

/* Where row i is in the file: "line 12" (CSV) or "row 12" (counted from 0, binary formats). */
static const char *row_name(const cnf_data *D, const size_t *file_row, size_t i, char *buf,
                            size_t len)
{
    size_t r = D->line || !file_row ? i : file_row[i]; /* the row in the file (or in D->line) */
    if (D->first_line)
        snprintf(buf, len, "line %zu", cnf_data_line(D, r));
    else
        snprintf(buf, len, "row %zu", r);
    return buf;
}

static int push_col(size_t **c, size_t *n, size_t *cap, size_t v)
{
    if (*n == *cap) {
        size_t *t = realloc(*c, 2 * *cap * sizeof **c);
        if (!t)
            return 1;
        *c = t;
        *cap *= 2;
    }
    (*c)[(*n)++] = v;
    return 0;
}

/* Parse s, a list of column names (D has a header) and numbers or ranges "0-3,7", into column
 * indices (unchecked against D->d). 0, 1 (out of memory) or 2 after a message naming opt. */
static int parse_columns(const char *cmd, const char *opt, const char *path, const cnf_data *D,
                         const char *s, size_t **cols, size_t *k)
{
    size_t cap = 16, n = 0;
    size_t *c = malloc(cap * sizeof *c);
    const char *p = s;
    if (!*p)
        goto bad;
    while (c && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (e && !e[1]))
            goto bad;
        size_t j = D->d;
        for (size_t q = 0; D->names && q < D->d; q++)
            if (strlen(D->names[q]) == len && !strncmp(D->names[q], p, len)) {
                j = q;
                break;
            }
        if (j < D->d) { /* a name */
            if (push_col(&c, &n, &cap, j))
                goto nomem;
            p += len + (e != NULL);
            continue;
        }
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9')
            goto noname;
        unsigned long long a = strtoull(p, &end, 10), b = a;
        if (*end == '-') {
            if (end[1] < '0' || end[1] > '9')
                goto noname;
            b = strtoull(end + 1, &end, 10);
        }
        if (errno || b < a || b - a > 1000000 || end != p + len)
            goto noname;
        for (unsigned long long v = a; v <= b; v++)
            if (push_col(&c, &n, &cap, (size_t)v))
                goto nomem;
        p += len + (e != NULL);
    }
    if (!c)
        goto nomem;
    *cols = c;
    *k = n;
    return 0;
nomem:
    free(c);
    fprintf(stderr, "cnf %s: out of memory\n", cmd);
    return 1;
noname:
    if (D->names) {
        size_t len = strcspn(p, ",");
        fprintf(stderr, "cnf %s: %s: %s has no column named '%.*s' (its header names", cmd, opt,
                path, (int)len, p);
        for (size_t q = 0; q < D->d && q < 12; q++)
            fprintf(stderr, "%s%s", q ? ", " : " ", D->names[q]);
        fprintf(stderr, "%s; numbers and ranges like 0,2,5-7 work too)\n", D->d > 12 ? ", ..." : "");
        free(c);
        return 2;
    }
bad:
    free(c);
    fprintf(stderr, "cnf %s: %s '%s' is not a list like 0-63 or 0,2,5-7%s\n", cmd, opt, s,
            D->names ? " or of column names" : " (columns by name need a header line)");
    return 2;
}

/* The columns to model: --columns (or all) minus --exclude-columns, as file indices. */
static int resolve_columns(const char *cmd, const char *path, const cnf_data *D,
                           const char *columns, const char *exclude, size_t **cols, size_t *k)
{
    size_t *c = NULL, n = 0, *x = NULL, m = 0;
    int u = 0;
    if (columns) {
        u = parse_columns(cmd, "--columns", path, D, columns, &c, &n);
    } else {
        c = malloc(D->d * sizeof *c); /* d values are in memory already */
        if (!c) {
            fprintf(stderr, "cnf %s: out of memory\n", cmd);
            return 1;
        }
        for (n = 0; n < D->d; n++)
            c[n] = n;
    }
    if (!u && exclude)
        u = parse_columns(cmd, "--exclude-columns", path, D, exclude, &x, &m);
    for (size_t i = 0; !u && i < m; i++)
        if (x[i] >= D->d) {
            fprintf(stderr, "cnf %s: --exclude-columns: column %zu does not exist (%s has %zu "
                    "columns, numbered from 0)\n", cmd, x[i], path, D->d);
            u = 2;
        }
    if (!u && m) {
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            int out = 0;
            for (size_t j = 0; j < m && !out; j++)
                out = c[i] == x[j];
            if (!out)
                c[kept++] = c[i];
        }
        n = kept;
        if (n == 0) {
            fprintf(stderr, "cnf %s: --exclude-columns '%s' leaves no column to model\n", cmd,
                    exclude);
            u = 2;
        }
    }
    free(x);
    if (u) {
        free(c);
        return u;
    }
    *cols = c;
    *k = n;
    return 0;
}

/* Missing values (NaN after loading) in the selected columns: an error naming the first, or with
 * --drop-missing its rows are dropped. cols maps selected columns to the file's. */
static int handle_missing(const char *cmd, const char *path, const data_opts *o, cnf_data *D,
                          const size_t *cols)
{
    size_t i, j, dropped, n0 = D->n;
    char rb[48], cb[320];
    if (!cnf_data_missing(D, &i, &j))
        return 0;
    if (!o->drop_missing) { /* "field F: empty field" as the loader says, then the column */
        if (D->names)
            snprintf(cb, sizeof cb, "column %zu ('%s')", cols[j], D->names[j]);
        else
            snprintf(cb, sizeof cb, "column %zu", cols[j]);
        fprintf(stderr, "cnf %s: %s: %s, field %zu: empty field or missing value (NA, N/A, NaN or "
                "?) in %s, a modelled column; cnf %s --drop-missing skips the rows that have one\n", cmd,
                path, row_name(D, NULL, i, rb, sizeof rb), cols[j] + 1, cb, cmd);
        return 1;
    }
    row_name(D, NULL, i, rb, sizeof rb);
    int rc = cnf_data_drop_missing(D, &dropped);
    if (rc) {
        cli_error(cmd, rc, "--drop-missing");
        return 1;
    }
    fprintf(stderr, "cnf %s: %s: --drop-missing dropped %zu of %zu rows (a missing value in a "
            "modelled column; the first at %s)\n", cmd, path, dropped, n0, rb);
    if (D->n == 0) {
        fprintf(stderr, "cnf %s: %s: no row is left\n", cmd, path);
        return 1;
    }
    return 0;
}

/* --dequantize LEVELS: every value x of a modelled column must be an integer with x + 1 <= LEVELS
 * (so that x + u, u ~ U[0, 1), stays in [0, LEVELS)). Modelled: those in o->keep (a model's), or
 * varying on the n_train training rows (the preprocessing drops the others unless
 * --drop-constant=0). Checked on the file's values, before any dequantisation. */
static int check_levels(const char *cmd, const char *path, const data_opts *o, const cnf_data *D,
                        const size_t *file_row, size_t n_train, const size_t *cols)
{
    char rb[48], cb[320];
    size_t d = D->d;
    for (size_t j = 0; j < d; j++) {
        int varies = !o->drop_constant && !o->keep;
        for (size_t q = 0; q < o->n_keep && !varies; q++)
            varies = o->keep[q] == (double)j;
        for (size_t i = 1; !o->keep && i < n_train && !varies; i++)
            varies = D->X[i * d + j] != D->X[j];
        if (!varies)
            continue;
        size_t bad = D->n;
        const size_t *pos = D->line ? D->line : file_row; /* position in the file, or NULL */
        for (size_t i = 0; i < D->n; i++) {
            double x = D->X[i * d + j];
            if (!(x == floor(x) && x >= 0 && x + 1.0 <= o->levels) &&
                (bad == D->n || (pos ? pos[i] < pos[bad] : i < bad)))
                bad = i; /* the first in the file */
        }
        if (bad == D->n)
            continue;
        double x = D->X[bad * d + j], lo = x, hi = x;
        for (size_t r = 0; r < D->n; r++) {
            lo = fmin(lo, D->X[r * d + j]);
            hi = fmax(hi, D->X[r * d + j]);
        }
        fprintf(stderr, "cnf %s: %s: %s, %s: %.17g is %s [0, %g) that --dequantize %g needs "
                "(this column's values span [%.17g, %.17g]). --dequantize is for integer data "
                "with the values 0, 1, ..., LEVELS-1 in every modelled column: %s\n",
                cmd, path, row_name(D, file_row, bad, rb, sizeof rb),
                col_name(D, j, cols[j], cb, sizeof cb),
                x, x == floor(x) ? "outside the integers in" : "not one of the integers in",
                o->levels, o->levels, lo, hi,
                x != floor(x) ? "leave it out for continuous data (or --exclude-columns this "
                                "column)"
                : lo < 0      ? "shift the column in the file so that its smallest value is 0 "
                                "(or --exclude-columns it)"
                              : "give a larger LEVELS");
        return 1;
    }
    return 0;
}

/* Shuffle the rows of D (and D->line if there is one) with r; without D->line *file_row = each
 * row's index in the file (owned by the caller), else NULL. */
static int shuffle_rows(const char *cmd, cnf_data *D, cnf_rng *r, size_t **file_row)
{
    /* The same draws on a column of row indices give the permutation. */
    double *perm = malloc((D->n ? D->n : 1) * sizeof *perm); /* n values are in memory */
    size_t *row = malloc((D->n ? D->n : 1) * sizeof *row);
    *file_row = NULL;
    if (!perm || !row) {
        free(perm);
        free(row);
        fprintf(stderr, "cnf %s: out of memory\n", cmd);
        return 1;
    }
    for (size_t i = 0; i < D->n; i++)
        perm[i] = (double)i;
    cnf_rng r2 = *r;
    cnf_data_shuffle(perm, D->n, 1, &r2);
    for (size_t i = 0; i < D->n; i++)
        row[i] = D->line ? D->line[(size_t)perm[i]] : (size_t)perm[i];
    free(perm);
    if (D->line) {
        free(D->line);
        D->line = row;
    } else {
        *file_row = row;
    }
    cnf_data_shuffle(D->X, D->n, D->d, r);
    return 0;
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
    int rc = cnf_data_load_flags(path, CNF_DATA_AUTO, CNF_DATA_MISSING_NAN, &out->all);
    if (rc) {
        cli_error(cmd, rc, "reading --data");
        return 1;
    }
    size_t *cols = NULL, k;
    int u = resolve_columns(cmd, path, &out->all, columns, o->exclude, &cols, &k);
    if (!u && (columns || o->exclude)) {
        rc = cnf_data_select(&out->all, cols, k);
        if (rc) {
            cli_error(cmd, rc, "--columns");
            u = 2;
        }
    }
    if (!u)
        u = handle_missing(cmd, path, o, &out->all, cols);
    if (!u && o->dim && out->all.d != o->dim) {
        fprintf(stderr, "cnf %s: the model has dimension %zu, %s has %zu columns\n", cmd, o->dim,
                path, out->all.d);
        u = 1;
    }
    if (u) {
        free(cols);
        data_split_free(out);
        return u;
    }
    if (o->warn_integer && o->levels == 0 && out->all.integer)
        fprintf(stderr, "cnf %s: warning: every value in %s is an integer: a continuous density "
                "on integer data has no meaningful NLL (it grows without bound as the model "
                "concentrates on the integers). For counts or pixels in [0, LEVELS) use "
                "--dequantize LEVELS (uniform dequantisation; NLL then per unit cell, as "
                "bits/dim)\n", cmd, path);
    size_t n = out->all.n, d = out->all.d;
    if (!shuffle) {
        out->train = out->all.X;
        out->n_train = n;
        u = o->levels > 0 ? check_levels(cmd, path, o, &out->all, NULL, n, cols) : 0;
        free(cols);
        if (u)
            data_split_free(out);
        return u;
    }
    cnf_rng r;
    cnf_rng_seed(&r, seed ^ 0x5b1175ULL); /* the split's own stream */
    size_t *file_row;
    if ((u = shuffle_rows(cmd, &out->all, &r, &file_row))) {
        free(cols);
        data_split_free(out);
        return u;
    }
    out->n_val = (size_t)(o->val_frac * (double)n);
    out->n_test = (size_t)(o->test_frac * (double)n);
    out->n_train = n - out->n_val - out->n_test;
    if (out->n_train < 2 || (o->val_frac > 0 && out->n_val == 0) ||
        (o->test_frac > 0 && out->n_test == 0)) {
        fprintf(stderr, "cnf %s: %s: %zu rows are too few for the split (train %zu, validation "
                "%zu, test %zu)\n", cmd, path, n, out->n_train, out->n_val, out->n_test);
        free(cols);
        free(file_row);
        data_split_free(out);
        return 1;
    }
    u = o->levels > 0 ? check_levels(cmd, path, o, &out->all, file_row, out->n_train, cols) : 0;
    free(cols);
    free(file_row);
    if (u) {
        data_split_free(out);
        return u;
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
