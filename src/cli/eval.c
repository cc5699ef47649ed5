/* `cnf eval`, `cnf sample`, `cnf plot`: use a saved model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cnf.h"
#include "dataopts.h"
#include "opts.h"

typedef struct use_opts {
    const char *model, *data, *out;
    const char *scores, *columns, *split; /* eval --data FILE */
    size_t n, batch;
    uint64_t seed;
    int json;
    int drop_missing; /* eval --data FILE: -1 (not given: the model's) or the flag */
} use_opts;

static use_opts uo;

static int load(const char *cmd, cnf_flow **f)
{
    if (!uo.model) {
        fprintf(stderr, "cnf %s: --model FILE is required (see cnf %s --help)\n", cmd, cmd);
        return 2;
    }
    int rc = cnf_model_load(uo.model, f, NULL);
    if (rc) {
        cli_error(cmd, rc, "loading --model");
        return 1;
    }
    return 0;
}

/* Points of --data: a toy set drawn from --seed. */
static int data_points(const char *cmd, size_t n, double **X)
{
    const cnf_toy_type *T;
    if (!uo.data) {
        fprintf(stderr, "cnf %s: --data NAME is required\n", cmd);
        return 2;
    }
    if (cnf_toy_from_name(uo.data, &T)) {
        fprintf(stderr, "cnf %s: --data: %s\n", cmd, cnf_errmsg());
        return 2;
    }
    int u = cli_check_count(cmd, "-n", n, 2 * sizeof(double));
    if (u)
        return u;
    *X = malloc(cnf_size_mul(n, 2 * sizeof(double)));
    if (!*X) {
        fprintf(stderr, "cnf %s: out of memory for %zu points\n", cmd, n);
        return 1;
    }
    cnf_rng r;
    cnf_rng_seed(&r, uo.seed);
    cnf_toy_sample(T, n, *X, &r);
    return 0;
}

#define USE_TABLE(extra...)                                                                    \
    const cli_opt table[] = {                                                                  \
        {"--model", OPT_STR, &uo.model, "FILE", "model file written by cnf train --out", 0},   \
        {"--seed", OPT_U64, &uo.seed, "S", "seed of the random draws", 0},                     \
        extra};                                                                                \
    const size_t n_table = sizeof table / sizeof *table

static const char *eval_help_text =
    "usage: cnf eval --model FILE --data NAME|PATH [-n N] [--scores FILE] [--json]\n\n"
    "Mean negative log-likelihood (nats) of N points of a toy set drawn with --seed, or of the\n"
    "rows of a data file (.csv, .npy, IDX; optionally gzipped), with its standard error, the\n"
    "solver's work (NFE) and the time taken, using the model's evaluation solver. A data file\n"
    "gets the model's recorded preprocessing, the columns it was trained with (--columns and\n"
    "--exclude-columns) and, if it was trained with --drop-missing, rows with a missing value\n"
    "skipped; integer data are dequantised with --seed (values outside the model's levels are\n"
    "an error naming their line) and also reported in bits/dim. --split test evaluates the\n"
    "test rows of the training run's split (same seed, fractions and dropped rows). --scores\n"
    "FILE writes one log p per row, in row order (anomaly scores: low = unusual). --json\n"
    "prints {nll, nll_stderr, n, nfe_per_solve, solves, seconds[, bits_per_dim]} as the last\n"
    "line of stdout: the rows are solved --batch at a time, and nfe_per_solve is the mean NFE\n"
    "of those solves (solves of them).\n\n"
    "Reproducibility: with one BLAS kernel, a row's log p is the same bit for bit from run to\n"
    "run and on any number of threads for the same batch layout (--batch and the rows batched\n"
    "with it); across batch sizes or positions in a batch it agrees within a few ulp (GEMM\n"
    "rounding: the matrix products may round a row at a tile edge differently).\n\n"
    "options:\n";

/* The model's training option key (saved as user.KEY), or NULL. */
static const char *saved_opt(const cnf_st_file *file, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "user.%s", key);
    return cnf_st_meta(file, k);
}

/* eval --data FILE: log p of every row (or the test rows of the training split), in batches. */
static int eval_file(cnf_flow *f, const cnf_st_file *file)
{
    data_opts o;
    data_opts_default(&o);
    /* The model's column selection (--columns replaces it whole) and missing-value rule. */
    const char *cols = uo.columns ? uo.columns : saved_opt(file, "columns");
    o.exclude = uo.columns ? NULL : saved_opt(file, "exclude-columns");
    const char *dm = saved_opt(file, "drop-missing");
    o.drop_missing = uo.drop_missing >= 0 ? uo.drop_missing : dm && !strcmp(dm, "1");
    const cnf_pre *p = cnf_pre_flow_pre(f);
    const double *keep = NULL;
    const size_t *keep_shape;
    size_t keep_ndim;
    if (p && cnf_pre_levels(p) > 0 &&
        !cnf_st_get(file, "pre.keep", &keep_shape, &keep_ndim, &keep) && keep_ndim == 1) {
        o.levels = cnf_pre_levels(p); /* the file's values checked as cnf train checks them */
        o.keep = keep;
        o.n_keep = keep_shape[0];
    }
    o.dim = cnf_flow_dim(f);
    int test = uo.split && !strcmp(uo.split, "test");
    if (uo.split && !test && strcmp(uo.split, "all")) {
        fprintf(stderr, "cnf eval: --split is all or test, not '%s'\n", uo.split);
        return 2;
    }
    uint64_t seed = 0;
    const char *s;
    char *end;
    if (test) { /* the training run's split: its seed and fractions */
        if (!(s = saved_opt(file, "seed")) || (seed = strtoull(s, &end, 10), *end) ||
            !(s = saved_opt(file, "val-frac")) || (o.val_frac = strtod(s, &end), *end) ||
            !(s = saved_opt(file, "test-frac")) || (o.test_frac = strtod(s, &end), *end)) {
            fprintf(stderr, "cnf eval: --split test: %s does not record its split\n", uo.model);
            return 1;
        }
    }
    data_split D;
    int u = data_load("eval", uo.data, cols, &o, seed, test, &D);
    if (u)
        return u;
    const double *X = test ? D.test : D.train;
    size_t n = test ? D.n_test : D.n_train, d = D.all.d;
    int status = 1;
    double *lp = malloc((n ? n : 1) * sizeof(double));
    if (!lp) {
        fprintf(stderr, "cnf eval: out of memory for %zu scores\n", n);
        goto out;
    }
    if (p && cnf_pre_levels(p) > 0) { /* integer data: one seeded dequantisation draw */
        cnf_rng r;
        cnf_rng_seed(&r, uo.seed);
        cnf_data_dequantize(D.all.X, D.all.n, d, &r);
    }
    size_t bs = uo.batch ? uo.batch : n, nfe = 0, solves = (n + bs - 1) / bs;
    double t0 = cli_now(), sum = 0, sum2 = 0;
    cnf_flow_stats st;
    for (size_t i = 0; i < n; i += bs) {
        size_t m = n - i < bs ? n - i : bs;
        int rc = cnf_flow_log_prob(f, X + i * d, m, lp + i, &st);
        if (rc) {
            fprintf(stderr, "cnf eval: rows %zu to %zu: ", i, i + m - 1);
            cli_error("eval", rc, "evaluating");
            goto out;
        }
        nfe += st.nfe_forward;
    }
    double sec = cli_now() - t0;
    for (size_t i = 0; i < n; i++) {
        sum -= lp[i];
        sum2 += lp[i] * lp[i];
    }
    double mean = sum / (double)n;
    double var = n > 1 ? (sum2 - (double)n * mean * mean) / (double)(n - 1) : 0.0;
    double se = sqrt(fmax(var, 0.0) / (double)n);
    double bpd = p && cnf_pre_levels(p) > 0 ? mean / ((double)cnf_pre_dim(p) * log(2.0)) : NAN;
    if (uo.scores) {
        int rc = cnf_write_csv(uo.scores, lp, n, 1);
        if (rc) {
            cli_error("eval", rc, "writing --scores");
            goto out;
        }
    }
    printf("%s: NLL %.6f +- %.6f nats over %zu %srows of %s (%s), NFE %.1f per solve (%zu "
           "solves), %.3f s\n", uo.model, mean, se, n, test ? "test " : "", uo.data,
           p && cnf_pre_is_projection(p) ? "in PCA space" : "in data space",
           (double)nfe / (double)solves, solves, sec);
    if (isfinite(bpd))
        printf("%.4f bits/dim over %zu modelled dimensions\n", bpd, cnf_pre_dim(p));
    if (uo.scores)
        printf("wrote %zu scores (log p, one per row in order%s) to %s\n", n,
               o.drop_missing ? ", rows with a missing value left out" : "", uo.scores);
    if (uo.json) {
        printf("{\"nll\":");
        cli_json_number(stdout, mean);
        printf(",\"nll_stderr\":");
        cli_json_number(stdout, se);
        printf(",\"n\":%zu,\"nfe_per_solve\":", n);
        cli_json_number(stdout, (double)nfe / (double)solves);
        printf(",\"solves\":%zu,\"seconds\":", solves);
        cli_json_number(stdout, sec);
        printf(",\"bits_per_dim\":");
        cli_json_number(stdout, bpd);
        printf("}\n");
    }
    status = 0;
out:
    free(lp);
    data_split_free(&D);
    return status;
}
static const cli_opt *help_table;
static size_t help_n;
static const char *help_text;
static void help(FILE *out)
{
    fputs(help_text, out);
    cli_opts_help(out, help_table, help_n);
}

/* Parse a subcommand's options against its table, with text above the option list for --help:
 * 0, or the exit status to return (0 after --help, 2 after a usage message). */
static int parse(const char *cmd, const cli_opt *table, size_t n, const char *text, int argc,
                 char **argv, int *status)
{
    help_table = table;
    help_n = n;
    help_text = text;
    int u = cli_opts_parse(cmd, table, n, argc, argv, help);
    *status = u == 1 ? 0 : 2;
    return u;
}

int cmd_eval(int argc, char **argv)
{
    memset(&uo, 0, sizeof uo);
    uo.n = 5000;
    uo.batch = 1000;
    uo.drop_missing = -1;
    USE_TABLE({"--data", OPT_STR, &uo.data, "NAME|PATH", "toy data set or data file", 0},
              {"-n", OPT_SIZE, &uo.n, "N", "number of points (toy sets)", 0},
              {"--scores", OPT_STR, &uo.scores, "FILE", "data files: write log p per row", 0},
              {"--columns", OPT_STR, &uo.columns, "LIST",
               "data files: columns (default: those the model was trained on)", 0},
              {"--drop-missing", OPT_FLAG, &uo.drop_missing, NULL,
               "data files: skip rows with a missing value in a modelled column (default: as the "
               "model was trained; =0: such a value is an error)", 0},
              {"--split", OPT_STR, &uo.split, "all|test",
               "data files: every row (default) or the training run's test rows", 0},
              {"--batch", OPT_SIZE, &uo.batch, "N", "evaluation batch size", 0},
              {"--json", OPT_FLAG, &uo.json, NULL, "JSON object as the last line", 0});
    int u, status;
    if ((u = parse("eval", table, n_table, eval_help_text, argc, argv, &status)))
        return status;
    if ((u = cli_check_output_path("eval", "--scores", uo.scores)))
        return u;
    if (uo.n == 0) {
        fprintf(stderr, "cnf eval: -n must be positive\n");
        return 2;
    }
    cnf_flow *f = NULL;
    double *X = NULL;
    if (uo.data && data_is_file(uo.data)) {
        if (!uo.model) {
            fprintf(stderr, "cnf eval: --model FILE is required\n");
            return 2;
        }
        cnf_st_file *file;
        int rc = cnf_model_load(uo.model, &f, &file);
        if (rc) {
            cli_error("eval", rc, "loading --model");
            return 1;
        }
        u = eval_file(f, file);
        cnf_st_free(file);
        cnf_flow_free(f);
        return u;
    }
    if (uo.scores) {
        fprintf(stderr, "cnf eval: --scores needs --data FILE\n");
        return 2;
    }
    if ((u = load("eval", &f)) || (u = data_points("eval", uo.n, &X))) {
        cnf_flow_free(f);
        return u;
    }
    if (cnf_flow_dim(f) != 2) {
        fprintf(stderr, "cnf eval: the model has dimension %zu, the data 2\n", cnf_flow_dim(f));
        cnf_flow_free(f);
        free(X);
        return 1;
    }
    double mean, se, t0 = cli_now();
    cnf_flow_stats st;
    const size_t solves = uo.batch && uo.batch < uo.n ? (uo.n + uo.batch - 1) / uo.batch : 1;
    int rc = cnf_flow_eval_nll(f, X, uo.n, uo.batch, &mean, &se, &st);
    double sec = cli_now() - t0;
    status = 1;
    if (rc) {
        cli_error("eval", rc, "evaluating");
    } else {
        printf("%s: NLL %.6f +- %.6f nats over %zu points of %s, NFE %.1f per solve (%zu "
               "solves), %.3f s\n", uo.model, mean, se, uo.n, uo.data,
               (double)st.nfe_forward / (double)solves, solves, sec);
        if (uo.json) {
            printf("{\"nll\":");
            cli_json_number(stdout, mean);
            printf(",\"nll_stderr\":");
            cli_json_number(stdout, se);
            printf(",\"n\":%zu,\"nfe_per_solve\":", uo.n);
            cli_json_number(stdout, (double)st.nfe_forward / (double)solves);
            printf(",\"solves\":%zu,\"seconds\":", solves);
            cli_json_number(stdout, sec);
            printf("}\n");
        }
        status = 0;
    }
    free(X);
    cnf_flow_free(f);
    return status;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int cmd_sample(int argc, char **argv)
{
    memset(&uo, 0, sizeof uo);
    uo.n = 1000;
    USE_TABLE({"-n", OPT_SIZE, &uo.n, "N", "number of samples", 0},
              {"--out", OPT_STR, &uo.out, "FILE", "output: .csv (one row per sample) or .npy", 0});
    static const char *text = "usage: cnf sample --model FILE --out FILE.csv|FILE.npy [-n N] [--seed S]\n\n"
                "Draw N samples from a saved model (base points from --seed, mapped through the\n"
                "flow with its evaluation solver) and write them as CSV or NumPy .npy.\n\n"
                "options:\n";
    int u, status;
    if ((u = parse("sample", table, n_table, text, argc, argv, &status)))
        return status;
    if ((u = cli_check_output_path("sample", "--out", uo.out)))
        return u;
    if (!uo.out || !(ends_with(uo.out, ".csv") || ends_with(uo.out, ".npy"))) {
        fprintf(stderr, "cnf sample: --out FILE.csv or FILE.npy is required\n");
        return 2;
    }
    if (uo.n == 0) {
        fprintf(stderr, "cnf sample: -n must be positive\n");
        return 2;
    }
    cnf_flow *f = NULL;
    if ((u = load("sample", &f)))
        return u;
    size_t d = cnf_flow_dim(f);
    if ((u = cli_check_count("sample", "-n", uo.n, cnf_size_mul(d, sizeof(double))))) {
        cnf_flow_free(f);
        return u;
    }
    double *X = malloc(cnf_size_mul(uo.n, d * sizeof(double)));
    cnf_rng r;
    cnf_rng_seed(&r, uo.seed);
    int rc = X ? cnf_flow_sample(f, uo.n, &r, X, NULL, NULL) : CNF_ENOMEM;
    if (!rc)
        rc = ends_with(uo.out, ".npy") ? cnf_write_npy(uo.out, X, uo.n, d)
                                       : cnf_write_csv(uo.out, X, uo.n, d);
    if (rc)
        cli_error("sample", rc, "sampling");
    else
        printf("wrote %zu samples of dimension %zu to %s\n", uo.n, d, uo.out);
    free(X);
    cnf_flow_free(f);
    return rc ? 1 : 0;
}

int cmd_plot(int argc, char **argv)
{
    memset(&uo, 0, sizeof uo);
    uo.n = 20000;
    USE_TABLE({"--data", OPT_STR, &uo.data, "NAME", "toy data set for the first panel", 0},
              {"-n", OPT_SIZE, &uo.n, "N", "points in the data and sample histograms", 0},
              {"--out", OPT_STR, &uo.out, "FILE.png", "picture to write", 0});
    static const char *text = "usage: cnf plot --model FILE --data NAME --out FILE.png\n\n"
                "FFJORD's figure of a 2-D model on [-4, 4]^2, three panels left to right: a\n"
                "histogram of the data, the model density exp(log p) on a 100x100 grid, and a\n"
                "histogram of model samples (viridis; the extent is in the PNG's tEXt chunk).\n\n"
                "options:\n";
    int u, status;
    if ((u = parse("plot", table, n_table, text, argc, argv, &status)))
        return status;
    if ((u = cli_check_output_path("plot", "--out", uo.out)))
        return u;
    if (!uo.out) {
        fprintf(stderr, "cnf plot: --out FILE.png is required\n");
        return 2;
    }
    if (uo.n == 0) {
        fprintf(stderr, "cnf plot: -n must be positive\n");
        return 2;
    }
    cnf_flow *f = NULL;
    double *X = NULL;
    if ((u = load("plot", &f)) || (u = data_points("plot", uo.n, &X))) {
        cnf_flow_free(f);
        return u;
    }
    cnf_rng r;
    cnf_rng_seed(&r, uo.seed + 1);
    int rc = cnf_plot_flow(uo.out, f, X, uo.n, 100, uo.n, &r, NULL);
    if (rc)
        cli_error("plot", rc, "plotting");
    else
        printf("wrote %s\n", uo.out);
    free(X);
    cnf_flow_free(f);
    return rc ? 1 : 0;
}
