/* tabular_density: any CSV, .npy or IDX table → a CNF, RealNVP and MAF each trained on the same
 * seeded split with the same preprocessing and early stopping → a table of test NLL (nats, ± one
 * standard error; with integer data also bits/dim over the modelled dimensions).
 *
 *   build/examples/tabular_density [options] [DATA [ITERS [LEVELS]]]
 *
 *   --pca K         model the top K principal components (cnf/pre.h): NLL is then the density
 *                   of the K PCA coordinates, not comparable to data-space figures
 *   --rows N        keep only the first N rows after the seeded shuffle (a CPU budget on MNIST)
 *   --val-every N   validation NLL every N iterations (default 25)
 *   --patience N    stop after N validations without improvement (default 8)
 *   --cnf-steps N   CNF: RK4 steps over [0, T] in training (default 8; 2N in validation)
 *   --cnf-width W   CNF: width of its two hidden layers (default 64, as the discrete flows')
 *   --flows LIST    comma-separated subset of cnf,realnvp,maf (default all three)
 *
 * Rows are shuffled with seed 1 and split 80/10/10 (train/validation/test); the flows start from
 * seed 7. LEVELS > 0 marks integer data in [0, LEVELS) (dequantised + logit with α = 0.05);
 * every feature is then standardised and columns constant on the training rows are dropped.
 * Test NLL is in data space without --pca; the CNF's is computed with Dopri5 at rtol = atol =
 * 1e-5 and the exact trace (training uses fixed-step RK4 and a Hutchinson estimate). After the
 * table come the CNF's test NLL minus each baseline's, paired over the same test rows (usually a
 * much smaller standard error than either figure's, since flows err on the same rows). With DATA
 * absent or "-" the program makes a stand-in for Old Faithful (272 rows: eruption minutes and
 * waiting minutes in two clusters) so it also runs as a test; fetch the real table with R (see
 * README). Exit status 0 when every figure is finite. */
#include "fit_common.h"

static void faithful_like(double *X, size_t n, cnf_rng *r)
{
    for (size_t i = 0; i < n; i++) {
        int longer = cnf_rng_uniform(r) < 0.64;
        X[2 * i] = longer ? 4.3 + 0.4 * cnf_rng_normal(r) : 2.0 + 0.25 * cnf_rng_normal(r);
        X[2 * i + 1] = (longer ? 80 : 54) + 6 * cnf_rng_normal(r) + 3 * (X[2 * i] - 3);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: tabular_density [--pca K] [--rows N] [--val-every N] [--patience N] "
                    "[--cnf-steps N] [--cnf-width W] [--flows cnf,realnvp,maf] "
                    "[DATA [ITERS [LEVELS]]]\n");
    return 2;
}

/* The CNF's test NLL with an accurate adaptive solver: the density the trained field defines,
 * rather than that of its fixed-step discretisation. */
static void accurate_eval(cnf_flow *f)
{
    cnf_flow *inner = cnf_pre_flow_inner(f);
    cnf_cflow_config *s = cnf_cflow_settings(inner ? inner : f);
    if (!s)
        return;
    s->eval.stepper = cnf_stepper_dopri5;
    cnf_ode_options_default(&s->eval.opt);
    s->eval.opt.rtol = s->eval.opt.atol = 1e-5;
}

/* lp (n) = log p of the test rows X (n, d), in batches of 500 rows. */
static int test_log_prob(cnf_flow *f, const double *X, size_t n, size_t d, double *lp)
{
    for (size_t i = 0; i < n; i += 500) {
        int rc = cnf_flow_log_prob(f, X + i * d, n - i < 500 ? n - i : 500, lp + i, NULL);
        if (rc)
            return rc;
    }
    return CNF_OK;
}

/* Mean of a (n) − b (n) (b may be NULL: then of −a, the NLL) and its standard error. Paired over
 * the same test rows, the difference of two flows' NLL has a much smaller error than either. */
static void mean_se(const double *a, const double *b, size_t n, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = b ? a[i] - b[i] : -a[i];
        s += x;
        s2 += x * x;
    }
    *mean = s / n;
    *se = n > 1 ? sqrt(fmax(s2 / n - *mean * *mean, 0) / (n - 1)) : NAN;
}

int main(int argc, char **argv)
{
    fit_settings fs;
    fit_settings_default(&fs, 2000);
    size_t pca = 0, max_rows = 0;
    const char *flows = "cnf,realnvp,maf";
    int a = 1;
    for (; a < argc && !strncmp(argv[a], "--", 2); a += 2) {
        if (a + 1 >= argc)
            return usage();
        const char *o = argv[a], *v = argv[a + 1];
        char *end;
        size_t x = strtoul(v, &end, 10);
        if (!strcmp(o, "--flows")) {
            flows = v;
            continue;
        }
        if (*end || end == v)
            return usage();
        if (!strcmp(o, "--pca"))
            pca = x;
        else if (!strcmp(o, "--rows"))
            max_rows = x;
        else if (!strcmp(o, "--val-every") && x > 0)
            fs.val_every = x;
        else if (!strcmp(o, "--patience"))
            fs.patience = x;
        else if (!strcmp(o, "--cnf-steps") && x > 0)
            fs.cnf_steps = x;
        else if (!strcmp(o, "--cnf-width") && x > 0)
            fs.cnf_width = x;
        else
            return usage();
    }
    const char *path = a < argc ? argv[a] : "-";
    if (a + 1 < argc)
        fs.iters = strtoul(argv[a + 1], NULL, 10);
    double levels = a + 2 < argc ? strtod(argv[a + 2], NULL) : 0;
    cnf_data D;
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    if (load_or_make("tabular_density", path, 272, 2, faithful_like, &r, &D))
        return 1;
    if (!strcmp(path, "-"))
        path = "synthetic Old-Faithful-like";
    size_t d = D.d, n_all = D.n;
    cnf_data_shuffle(D.X, D.n, d, &r);
    if (max_rows && max_rows < D.n)
        D.n = max_rows; /* the first rows of the shuffle: a uniform subset */
    size_t n_va = D.n / 10, n_te = D.n / 10, n_tr = D.n - n_va - n_te;
    double *val = D.X + n_tr * d, *test = val + n_va * d;
    if (levels > 0)
        cnf_data_dequantize(val, n_va + n_te, d, &r);
    cnf_pre_config pc;
    cnf_pre_config_default(&pc);
    pc.levels = levels;
    pc.alpha = 0.05;
    pc.pca = pca;
    rows train = {D.X, n_tr, d, levels};
    printf("%s: %zu of %zu rows x %zu columns; train %zu, validation %zu, test %zu; up to %zu "
           "iterations (batch 64), validation every %zu, patience %zu, CNF %zu-%zu tanh with RK4 "
           "%zu steps; seeds 1 (split), 7 (flows)%s\n\n", path, D.n, n_all, d, n_tr, n_va, n_te,
           fs.iters, fs.val_every, fs.patience, fs.cnf_width, fs.cnf_width, fs.cnf_steps,
           pca ? "; NLL of the PCA coordinates, not data space" : "");
    printf("| flow    | dims | parameters | best iter | iters run | train s | test NLL (nats) "
           "| bits/dim |\n|---------|-----:|-----------:|----------:|----------:|--------:|"
           "-----------------|---------:|\n");
    const char *kinds[] = {"cnf", "realnvp", "maf"};
    double *lp = calloc(3 * n_te, sizeof(double)); /* (3, n_te) log p per flow */
    int ok = lp != NULL, have[3] = {0, 0, 0};
    for (size_t k = 0; k < 3 && lp; k++) {
        const char *hit = strstr(flows, kinds[k]);
        if (!hit || (hit > flows && hit[-1] != ',') || (hit[strlen(kinds[k])] != ',' &&
                                                        hit[strlen(kinds[k])] != '\0'))
            continue;
        cnf_flow *f;
        fit_report rep;
        double mean = NAN, se = NAN;
        int rc = fit_flow_with(kinds[k], &train, val, n_va, &pc, &fs, 7, &f, &rep);
        if (!rc) {
            accurate_eval(f);
            rc = test_log_prob(f, test, n_te, d, lp + k * n_te);
            have[k] = rc == CNF_OK;
            mean_se(lp + k * n_te, NULL, n_te, &mean, &se);
            size_t k_dims = cnf_pre_dim(cnf_pre_flow_pre(f));
            printf("| %-7s | %4zu | %10zu | %9zu | %9zu | %7.1f | %.3f ± %.3f | ", kinds[k],
                   k_dims, cnf_flow_n_params(f), rep.best_iter, rep.iters_run, rep.seconds, mean,
                   se);
            if (levels > 0) /* per modelled dimension (constant columns add 0 nats) */
                printf("%.4f |\n", mean / (k_dims * log(2.0)));
            else
                printf("- |\n");
            cnf_flow_free(f);
        }
        if (rc)
            fprintf(stderr, "tabular_density: %s: %s (%s)\n", kinds[k], cnf_strerror(rc),
                    cnf_errmsg());
        ok &= rc == CNF_OK && isfinite(mean);
        fflush(stdout);
    }
    for (size_t k = 1; k < 3; k++)
        if (have[0] && have[k]) {
            double m, e;
            mean_se(lp + k * n_te, lp, n_te, &m, &e); /* NLL_cnf − NLL_k = lp_k − lp_cnf */
            printf("%sCNF - %s, paired over the test rows: %.3f ± %.3f nats\n",
                   k == 1 || !have[1] ? "\n" : "", kinds[k], m, e);
        }
    free(lp);
    cnf_data_clear(&D);
    return ok ? 0 : 1;
}
