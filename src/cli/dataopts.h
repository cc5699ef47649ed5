/* Data files in the CLI (dataopts.c): `--data PATH` for cnf train and cnf eval, with column
 * selection, a seeded train/validation/test split and the preprocessing options (cnf/pre.h). */
#ifndef CNF_CLI_DATAOPTS_H
#define CNF_CLI_DATAOPTS_H

#include "cnf.h"
#include "opts.h"

typedef struct data_opts {
    const char *columns;      /* "0-63,65", "waiting,eruptions" or NULL: every column */
    const char *exclude;      /* --exclude-columns: the same kind of list, or NULL */
    int drop_missing;         /* skip rows with a missing value (else: an error naming it) */
    const double *keep;       /* cnf eval: the model's modelled columns (its "pre.keep": indices
                               * into the selected columns), n_keep of them, for the --dequantize
                               * check; NULL: those varying on the training rows */
    size_t n_keep;
    size_t dim;               /* cnf eval: the model's dimension (0: any), checked after the
                               * column selection */
    int warn_integer;         /* warn about integer data without --dequantize (training runs:
                               * set by data_opts_table) */
    double val_frac, test_frac;
    int standardize, drop_constant;
    double levels, alpha;     /* --dequantize LEVELS (0: continuous data), --alpha */
    size_t pca;
    size_t patience;          /* early stopping: validations without improvement (0: off) */
} data_opts;

enum { DATA_OPTS_COUNT = 11 };

void data_opts_default(data_opts *o);
/* Append the options (DATA_OPTS_COUNT entries, saved in model files; --drop-missing only when
 * given, so that files of runs without it are what they were) to t; returns the count. These are
 * training options: o->warn_integer is set. */
size_t data_opts_table(data_opts *o, cli_opt *t);

/* Is name a file rather than one of the toy sets? (it contains '/' or '.', or it is no toy set's
 * name and a file of that name exists) */
int data_is_file(const char *name);

/* The rows of a data file split into three consecutive blocks of one seeded shuffle:
 * train (n_train), validation (n_val), test (n_test). */
typedef struct data_split {
    cnf_data all;     /* every selected row, shuffled */
    double *train, *val, *test; /* views into all.X */
    size_t n_train, n_val, n_test;
} data_split;

/* Load path, select --columns (a column list, or NULL for all) minus o->exclude, shuffle with
 * seed and split. Before the shuffle: a missing value in a selected column is an error naming
 * its file line and column, or its row is dropped (o->drop_missing, with a note on stderr);
 * with o->levels > 0 every value must be an integer in [0, levels) (else an error naming the
 * file's line, column and value); integer data without o->levels get a warning when
 * o->warn_integer. With o->dim > 0, another count of selected columns is an error (after the
 * missing values, before the --dequantize check). With shuffle = 0 the rows keep their file order and everything is "train"
 * (eval --scores). 0, or 1 or 2 after a message on stderr. */
int data_load(const char *cmd, const char *path, const char *columns, const data_opts *o,
              uint64_t seed, int shuffle, data_split *out);
void data_split_free(data_split *s);

/* Fill X (n, d) with rows drawn uniformly (with replacement) from ctx, a data_batch, and
 * dequantised when levels > 0. */
typedef struct data_batch {
    const double *X;
    size_t n, d;
    double levels;
} data_batch;
int data_batch_fn(void *ctx, size_t n, double *X, cnf_rng *rng);

#endif
