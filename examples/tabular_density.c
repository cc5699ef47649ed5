/* tabular_density: any CSV or .npy table → a CNF, RealNVP and MAF each trained on the same seeded
 * split with the same preprocessing and early stopping → a table of test NLL (nats, in data
 * space after dropping constant columns; ± one standard error).
 *
 *   build/examples/tabular_density [DATA [ITERS [LEVELS]]]
 *
 * Rows are shuffled with seed 1 and split 80/10/10 (train/validation/test). LEVELS > 0 marks
 * integer data in [0, LEVELS) (dequantised + logit, cnf/pre.h); otherwise each feature is
 * standardised. With DATA absent or "-" the program makes a stand-in for Old Faithful (272
 * rows: eruption minutes and waiting minutes in two clusters) so it also runs as a test; fetch
 * the real table with R (see README). Exit status 0 when every figure is finite. */
#include "fit_common.h"

static void faithful_like(double *X, size_t n, cnf_rng *r)
{
    for (size_t i = 0; i < n; i++) {
        int longer = cnf_rng_uniform(r) < 0.64;
        X[2 * i] = longer ? 4.3 + 0.4 * cnf_rng_normal(r) : 2.0 + 0.25 * cnf_rng_normal(r);
        X[2 * i + 1] = (longer ? 80 : 54) + 6 * cnf_rng_normal(r) + 3 * (X[2 * i] - 3);
    }
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "-";
    size_t iters = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
    double levels = argc > 3 ? strtod(argv[3], NULL) : 0;
    cnf_data D;
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    if (load_or_make("tabular_density", path, 272, 2, faithful_like, &r, &D))
        return 1;
    if (!strcmp(path, "-"))
        path = "synthetic Old-Faithful-like";
    size_t d = D.d, n_va = D.n / 10, n_te = D.n / 10, n_tr = D.n - n_va - n_te;
    cnf_data_shuffle(D.X, D.n, d, &r);
    double *val = D.X + n_tr * d, *test = val + n_va * d;
    if (levels > 0)
        cnf_data_dequantize(val, n_va + n_te, d, &r);
    cnf_pre_config pc;
    cnf_pre_config_default(&pc);
    pc.levels = levels;
    pc.alpha = 0.05;
    rows train = {D.X, n_tr, d, levels};
    printf("%s: %zu rows x %zu columns; train %zu, validation %zu, test %zu; up to %zu "
           "iterations, early stopping on validation NLL\n\n", path, D.n, d, n_tr, n_va, n_te,
           iters);
    printf("| flow    | parameters | test NLL (nats) |\n|---------|-----------:|-----------------|\n");
    const char *kinds[] = {"cnf", "realnvp", "maf"};
    int ok = 1;
    for (size_t k = 0; k < 3; k++) {
        cnf_flow *f;
        double mean = NAN, se = NAN;
        int rc = fit_flow(kinds[k], &train, val, n_va, &pc, iters, 7, &f);
        if (!rc) {
            rc = cnf_flow_eval_nll(f, test, n_te, 500, &mean, &se, NULL);
            printf("| %-7s | %10zu | %.3f ± %.3f |\n", kinds[k], cnf_flow_n_params(f), mean, se);
            cnf_flow_free(f);
        }
        if (rc)
            fprintf(stderr, "tabular_density: %s: %s (%s)\n", kinds[k], cnf_strerror(rc),
                    cnf_errmsg());
        ok &= rc == CNF_OK && isfinite(mean);
        fflush(stdout);
    }
    cnf_data_clear(&D);
    return ok ? 0 : 1;
}
