/* anomaly: density-based anomaly detection. Train a flow on the rows of one class ("normal"),
 * score held-out normal rows and every row of the other classes by log p, and report the ROC
 * AUC: the probability that a random held-out normal row scores higher than a random anomaly
 * (Mann–Whitney U / (n_normal · n_anomalous), ties counted ½).
 *
 *   build/examples/anomaly [DATA.csv[.gz] [ITERS [CLASS [KIND]]]]
 *
 * DATA has the features first and the class label in the last column, as the UCI handwritten
 * digits in Debian's python3-sklearn (/usr/lib/python3/dist-packages/sklearn/datasets/data/
 * digits.csv.gz: 1,797 rows of 64 pixels in 0..16, then the digit). The pixels are integers:
 * they are dequantised (levels 17) and logit-transformed (α = 0.05), standardised, and columns
 * constant on the normal class are dropped (cnf/pre.h). With DATA absent or "-" the program
 * makes synthetic 8×8 "digits" (10 stroke patterns, 0..16, with noise) so it also runs as a test.
 * Exit status 0 when the AUC is at least 0.9 (the README states the figure on real digits). */
#include "fit_common.h"

/* Synthetic stand-in: class c lights pixels of a fixed random pattern (about 20 of 64) at
 * intensity 12 ± 3, others 0..2, rounded to integers and clipped to 0..16. */
static void synthetic(double *X, size_t n, cnf_rng *r)
{
    unsigned char pat[10][64];
    cnf_rng pr;
    cnf_rng_seed(&pr, 77);
    for (int c = 0; c < 10; c++)
        for (int j = 0; j < 64; j++)
            pat[c][j] = cnf_rng_uniform(&pr) < 0.3;
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % 10);
        for (int j = 0; j < 64; j++) {
            double v = pat[c][j] ? 12 + 3 * cnf_rng_normal(r) : 2 * cnf_rng_uniform(r);
            X[i * 65 + j] = fmin(16, fmax(0, round(v)));
        }
        X[i * 65 + 64] = c;
    }
}

typedef struct scored {
    double s;
    int normal;
} scored;

static int by_score(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

/* ROC AUC with normal = positive, higher score = more normal, average ranks for ties. */
static double roc_auc(scored *s, size_t n)
{
    qsort(s, n, sizeof *s, by_score);
    double rank_sum = 0, n_pos = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j].s == s[i].s)
            j++;
        double avg = 0.5 * (double)(i + j + 1); /* ranks i+1 … j */
        for (size_t k = i; k < j; k++)
            if (s[k].normal) {
                rank_sum += avg;
                n_pos++;
            }
        i = j;
    }
    double n_neg = (double)n - n_pos;
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "-";
    size_t iters = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
    int normal = argc > 3 ? atoi(argv[3]) : 0;
    const char *kind = argc > 4 ? argv[4] : "cnf";
    cnf_data D;
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    if (load_or_make("anomaly", path, 600, 65, synthetic, &r, &D))
        return 1;
    if (!strcmp(path, "-"))
        path = "synthetic 8x8 digits";
    size_t d = D.d - 1;
    cnf_data_shuffle(D.X, D.n, D.d, &r);
    /* Features of the normal class: 70% train, 15% validation, 15% held out for scoring. */
    size_t n_norm = 0;
    for (size_t i = 0; i < D.n; i++)
        n_norm += D.X[i * D.d + d] == normal;
    double *N = malloc(n_norm * d * sizeof(double)), *A = malloc(D.n * d * sizeof(double));
    int *is_norm = malloc(D.n * sizeof(int));
    size_t k = 0, m = 0;
    for (size_t i = 0; i < D.n; i++)
        if (D.X[i * D.d + d] == normal)
            memcpy(N + k++ * d, D.X + i * D.d, d * sizeof(double));
    size_t n_tr = n_norm * 70 / 100, n_va = n_norm * 15 / 100, n_ho = n_norm - n_tr - n_va;
    for (size_t i = 0; i < n_ho; i++) { /* held-out normal rows, then every other class */
        memcpy(A + m * d, N + (n_tr + n_va + i) * d, d * sizeof(double));
        is_norm[m++] = 1;
    }
    for (size_t i = 0; i < D.n; i++)
        if (D.X[i * D.d + d] != normal) {
            memcpy(A + m * d, D.X + i * D.d, d * sizeof(double));
            is_norm[m++] = 0;
        }
    printf("%s: %zu rows, class %d normal: %zu train, %zu validation; scoring %zu held-out "
           "normal and %zu other rows\n", path, D.n, normal, n_tr, n_va, n_ho, m - n_ho);
    cnf_data_dequantize(N + n_tr * d, n_va, d, &r);
    cnf_data_dequantize(A, m, d, &r);
    cnf_pre_config pc;
    cnf_pre_config_default(&pc);
    pc.levels = 17;
    pc.alpha = 0.05;
    rows train = {N, n_tr, d, pc.levels};
    cnf_flow *f = NULL;
    int rc = fit_flow(kind, &train, N + n_tr * d, n_va, &pc, iters, 3, &f);
    double *lp = malloc(m * sizeof(double));
    scored *s = malloc(m * sizeof *s);
    if (!rc)
        rc = cnf_flow_log_prob(f, A, m, lp, NULL);
    double auc = NAN;
    if (!rc) {
        for (size_t i = 0; i < m; i++)
            s[i] = (scored){lp[i], is_norm[i]};
        auc = roc_auc(s, m);
        printf("%s flow (%zu parameters): ROC AUC %.4f (normal class %d vs the rest)\n", kind,
               cnf_flow_n_params(f), auc, normal);
    } else {
        fprintf(stderr, "anomaly: %s (%s)\n", cnf_strerror(rc), cnf_errmsg());
    }
    free(lp);
    free(s);
    free(N);
    free(A);
    free(is_norm);
    cnf_flow_free(f);
    cnf_data_clear(&D);
    return !rc && auc >= 0.9 ? 0 : 1;
}
