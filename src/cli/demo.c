/* cnf demo: a small random MLP velocity field, its exact divergence and Hutchinson estimates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"

int cmd_demo(int argc, char **argv)
{
    unsigned long long seed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: cnf demo [--seed N]\n\n"
                   "Builds a random 2-d velocity field v(t, x) (MLP 64-64-64, tanh, concatsquash\n"
                   "time gating, Glorot initialisation from the seed, default 0) and prints, at\n"
                   "t = 0.5 for four points, v, the exact divergence tr dv/dx, and the mean of\n"
                   "1000 Rademacher Hutchinson estimates e'(dv/dx)e.\n");
            return 0;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end) {
                fprintf(stderr, "cnf demo: --seed needs a non-negative integer, got '%s'\n",
                        argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "cnf demo: unknown option '%s' (see cnf demo --help)\n", argv[i]);
            return 2;
        }
    }
    enum { D = 2, N = 4, PROBES = 1000 };
    const size_t hidden[] = {64, 64, 64};
    cnf_mlp_config cfg = {.d_in = D, .d_out = D, .n_hidden = 3, .hidden = hidden,
                          .act = CNF_ACT_TANH, .time = CNF_TIME_CONCATSQUASH};
    cnf_mlp *m = NULL;
    cnf_mlp_work *w = NULL;
    double *theta = NULL, *E = NULL, *X = NULL, *est = NULL;
    int rc = cnf_mlp_create(&m, &cfg);
    if (rc == CNF_OK)
        rc = cnf_mlp_work_create(&w, m, N * PROBES, D);
    if (rc) {
        cli_error("demo", rc, "building the MLP");
        cnf_mlp_free(m);
        return 1;
    }
    theta = malloc(cnf_mlp_n_params(m) * sizeof *theta);
    X = malloc(N * PROBES * D * sizeof *X);
    E = malloc(N * PROBES * D * sizeof *E);
    est = malloc(N * PROBES * sizeof *est);
    int status = 1;
    if (!theta || !X || !E || !est) {
        fprintf(stderr, "cnf demo: out of memory\n");
        goto done;
    }
    cnf_rng rng;
    cnf_rng_seed(&rng, seed);
    cnf_mlp_init(m, theta, &rng);
    const double pts[N][D] = {{0, 0}, {1, -0.5}, {-2, 1.5}, {0.3, 2.5}};
    double F[N * D], div[N];
    printf("MLP %zu-64-64-64-%zu tanh concatsquash, %zu parameters, seed %llu, t = 0.5\n",
           (size_t)D, (size_t)D, cnf_mlp_n_params(m), seed);
    rc = cnf_mlp_div_exact(m, theta, 0.5, &pts[0][0], D, N, F, D, div, w);
    if (rc) {
        cli_error("demo", rc, "exact divergence");
        goto done;
    }
    /* Each point repeated PROBES times, one Rademacher probe per copy. */
    for (size_t i = 0; i < N * PROBES; i++) {
        memcpy(X + i * D, pts[i / PROBES], sizeof pts[0]);
        for (size_t j = 0; j < D; j++)
            E[i * D + j] = cnf_rng_rademacher(&rng);
    }
    rc = cnf_mlp_div_hutch(m, theta, 0.5, X, D, N * PROBES, E, 1, NULL, D, est, w);
    if (rc) {
        cli_error("demo", rc, "Hutchinson estimate");
        goto done;
    }
    printf("%-16s %-26s %-12s %s\n", "x", "v(0.5, x)", "tr J", "Hutchinson (mean of 1000)");
    for (size_t i = 0; i < N; i++) {
        double s = 0;
        for (size_t k = 0; k < PROBES; k++)
            s += est[i * PROBES + k];
        printf("(%5.2f, %5.2f)   (%10.6f, %10.6f)   %10.6f   %10.6f\n", pts[i][0], pts[i][1],
               F[i * D], F[i * D + 1], div[i], s / PROBES);
    }
    status = 0;
done:
    free(theta);
    free(X);
    free(E);
    free(est);
    cnf_mlp_work_free(w);
    cnf_mlp_free(m);
    return status;
}
