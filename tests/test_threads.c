/* Threads over batch chunks (cnf_mlp_work_create_threads): the split kernels agree with the
 * single-thread ones to rounding, and two runs with the same thread count give identical bits —
 * for the MLP's forward, tangents and reverse kernel, and for a CNF's loss and gradient. */
#include <cblas.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/cflow.h"
#include "cnf/mlp.h"
#include "rel_err.h"

enum { D = 3, N = 203, K = 2 }; /* N: odd, above the 16-rows-per-thread threshold */

typedef struct {
    double F[N * D], JU[K * N * D], GX[N * D], gt;
    double *g;
} outputs;

/* jvp with probes (unit = 0) or unit tangents, then the reverse kernel with seeds R, S. */
static void run(const cnf_mlp *m, const double *theta, size_t threads, int unit, outputs *o)
{
    cnf_mlp_work *w = NULL;
    cr_assert_eq(cnf_mlp_work_create_threads(&w, m, N, D, threads), CNF_OK, "%s", cnf_errmsg());
    cnf_rng r;
    cnf_rng_seed(&r, 11);
    static double X[N * (D + 1)], U[K * N * D], R[N * D], S[D * N * D];
    for (size_t i = 0; i < N * (D + 1); i++)
        X[i] = cnf_rng_normal(&r);
    for (size_t i = 0; i < K * N * D; i++)
        U[i] = cnf_rng_rademacher(&r);
    for (size_t i = 0; i < N * D; i++)
        R[i] = cnf_rng_normal(&r);
    for (size_t i = 0; i < D * N * D; i++)
        S[i] = cnf_rng_normal(&r);
    size_t nt = unit ? D : K;
    memset(o->JU, 0, sizeof o->JU);
    double JU[D * N * D];
    cr_assert_eq(cnf_mlp_jvp(m, theta, 0.3, X, D + 1, N, unit ? NULL : U, nt, o->F, D, JU, w),
                 CNF_OK);
    memcpy(o->JU, JU, (unit ? K : nt) * N * D * sizeof(double));
    memset(o->GX, 0, sizeof o->GX);
    memset(o->g, 0, cnf_mlp_n_params(m) * sizeof(double));
    o->gt = 0.0;
    cr_assert_eq(cnf_mlp_backward(m, theta, R, D, S, o->GX, D, o->g, &o->gt, w), CNF_OK);
    cnf_mlp_work_free(w);
}


Test(threads, mlp_chunks_match_single_thread_and_repeat_bitwise)
{
    size_t hidden[] = {32, 32};
    cnf_mlp_config cfg = {.d_in = D, .d_out = D, .n_hidden = 2, .hidden = hidden,
                          .act = CNF_ACT_TANH, .time = CNF_TIME_CONCATSQUASH};
    cnf_mlp *m = NULL;
    cr_assert_eq(cnf_mlp_create(&m, &cfg), CNF_OK);
    size_t np = cnf_mlp_n_params(m);
    double *theta = malloc(np * sizeof(double));
    cnf_rng r;
    cnf_rng_seed(&r, 5);
    cnf_mlp_init(m, theta, &r);
    for (size_t i = 0; i < np; i++)
        theta[i] += 0.2 * cnf_rng_normal(&r);
    for (int unit = 0; unit <= 1; unit++) {
        static outputs a, b, c;
        a.g = calloc(np, sizeof(double));
        b.g = calloc(np, sizeof(double));
        c.g = calloc(np, sizeof(double));
        run(m, theta, 1, unit, &a);
        run(m, theta, 3, unit, &b);
        run(m, theta, 3, unit, &c);
        cr_assert(rel(b.F, a.F, N * D) < 1e-13, "F differs (unit %d)", unit);
        cr_assert(rel(b.JU, a.JU, K * N * D) < 1e-13, "JU differs (unit %d)", unit);
        cr_assert(rel(b.GX, a.GX, N * D) < 1e-13, "GX differs (unit %d)", unit);
        cr_assert(rel(b.g, a.g, np) < 1e-12, "gtheta differs: %g (unit %d)", rel(b.g, a.g, np),
                  unit);
        cr_assert(fabs(b.gt - a.gt) <= 1e-12 * fabs(a.gt), "dphi/dt differs (unit %d)", unit);
        cr_assert(!memcmp(b.F, c.F, sizeof b.F) && !memcmp(b.JU, c.JU, sizeof b.JU) &&
                  !memcmp(b.GX, c.GX, sizeof b.GX) && !memcmp(b.g, c.g, np * sizeof(double)) &&
                  !memcmp(&b.gt, &c.gt, sizeof b.gt), "two threaded runs differ (unit %d)", unit);
        free(a.g);
        free(b.g);
        free(c.g);
    }
    free(theta);
    cnf_mlp_free(m);
}

/* A CNF trained on a batch above the threshold: loss and gradient bit-identical across runs. */
Test(threads, cnf_gradient_repeats_bitwise)
{
    setenv("CNF_NUM_THREADS", "2", 1);
    for (int hutch = 0; hutch <= 1; hutch++) {
        double loss[2], *g[2];
        size_t np = 0;
        for (int run_i = 0; run_i < 2; run_i++) {
            cnf_cflow_config cfg;
            size_t hidden[] = {16, 16};
            cnf_cflow_config_default(&cfg, 2);
            cfg.hidden = hidden;
            cfg.n_hidden = 2;
            cfg.trace = hutch ? CNF_TRACE_HUTCH_RADEMACHER : CNF_TRACE_EXACT;
            cfg.train.opt.rtol = cfg.train.opt.atol = 1e-4;
            cnf_rng r;
            cnf_rng_seed(&r, 7);
            cnf_flow *f = NULL;
            cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK, "%s", cnf_errmsg());
            np = cnf_flow_n_params(f);
            double X[2 * 100];
            for (size_t i = 0; i < 200; i++)
                X[i] = cnf_rng_normal(&r);
            g[run_i] = calloc(np, sizeof(double));
            cr_assert_eq(cnf_flow_nll_grad(f, X, 100, &r, &loss[run_i], g[run_i], NULL), CNF_OK,
                         "%s", cnf_errmsg());
            cnf_flow_free(f);
        }
        cr_assert(!memcmp(&loss[0], &loss[1], sizeof loss[0]), "loss differs (hutch %d)", hutch);
        cr_assert(!memcmp(g[0], g[1], np * sizeof(double)), "gradient differs (hutch %d)", hutch);
        free(g[0]);
        free(g[1]);
    }
}

/* Loss and gradient of a CNF with threads count (CNF_NUM_THREADS) on a batch whose solver states
 * are above the size from which the solver's loops (stage combinations, finite checks, copies)
 * and the adjoint's per-step passes are shared by the MLP's threads: n = 1024, d = 16 (forward
 * state 19,456 values, adjoint state 32,768 + P). */
static double big_batch_grad(const char *threads, cnf_grad_mode grad, const cnf_stepper_type *st,
                             double **g, size_t *np)
{
    enum { BD = 16, BN = 1024 };
    setenv("CNF_NUM_THREADS", threads, 1);
    cnf_cflow_config cfg;
    size_t hidden[] = {16, 16};
    cnf_cflow_config_default(&cfg, BD);
    cfg.hidden = hidden;
    cfg.n_hidden = 2;
    cfg.trace = CNF_TRACE_HUTCH_RADEMACHER;
    cfg.grad = grad;
    cfg.train.stepper = st;
    cfg.train.opt.steps = 3;
    cfg.train.opt.rtol = cfg.train.opt.atol = 1e-4;
    cnf_rng r;
    cnf_rng_seed(&r, 5);
    cnf_flow *f = NULL;
    cr_assert_eq(cnf_cflow_create(&f, &cfg, &r), CNF_OK, "%s", cnf_errmsg());
    *np = cnf_flow_n_params(f);
    static double X[BN * BD];
    for (size_t i = 0; i < BN * BD; i++)
        X[i] = cnf_rng_normal(&r);
    *g = calloc(*np, sizeof(double));
    double loss = 0.0;
    cr_assert_eq(cnf_flow_nll_grad(f, X, BN, &r, &loss, *g, NULL), CNF_OK, "%s", cnf_errmsg());
    cr_assert(isfinite(loss));
    cnf_flow_free(f);
    return loss;
}

/* The same bits with 1 and 3 threads (the chunking of a batch this large is the same for any
 * thread count, and every shared loop is elementwise or per sample) — adjoint and backprop, RK4
 * and Dopri5. */
Test(threads, large_batch_solver_loops_give_the_same_bits_on_any_thread_count)
{
    const cnf_stepper_type *st[] = {cnf_stepper_rk4, cnf_stepper_dopri5};
    const cnf_grad_mode gm[] = {CNF_GRAD_ADJOINT, CNF_GRAD_BACKPROP};
    for (size_t s = 0; s < 2; s++)
        for (size_t k = 0; k < 2; k++) {
            double *g1, *g3;
            size_t np;
            double l1 = big_batch_grad("1", gm[k], st[s], &g1, &np);
            double l3 = big_batch_grad("3", gm[k], st[s], &g3, &np);
            cr_assert(!memcmp(&l1, &l3, sizeof l1), "loss differs (%s, %s)", cnf_stepper_name(st[s]),
                      cnf_grad_mode_name(gm[k]));
            cr_assert(!memcmp(g1, g3, np * sizeof(double)), "gradient differs (%s, %s)",
                      cnf_stepper_name(st[s]), cnf_grad_mode_name(gm[k]));
            free(g1);
            free(g3);
        }
    unsetenv("CNF_NUM_THREADS");
}

/* cnf_mlp_work_set_keep(w, 0): chunks reuse their thread's buffers and store only h and σ' (in
 * mixed precision, float rows from layer to layer). F and J u are the same bits as with keep = 1
 * — double and mixed precision; unit tangents and probes; 1 and 3 threads; a batch of many cache
 * blocks and one that fits a single block —, a reverse pass after such a call is refused with
 * CNF_EINVAL, and one after a keep = 1 call on the same work still runs. */
Test(threads, forward_without_keep_gives_the_same_bits)
{
    enum { NB = 2000 }; /* ~24 cache blocks of 85 samples with the unit tangents */
    size_t hidden[] = {64, 64};
    double *X = malloc(NB * 2 * sizeof(double)), *U = malloc(2 * NB * 2 * sizeof(double));
    double *F[2], *JU[2];
    cnf_rng r;
    cnf_rng_seed(&r, 8);
    for (size_t i = 0; i < NB * 2; i++)
        X[i] = 2.0 * cnf_rng_normal(&r);
    for (size_t i = 0; i < 2 * NB * 2; i++)
        U[i] = cnf_rng_rademacher(&r);
    for (int k = 0; k < 2; k++) {
        F[k] = malloc(NB * 2 * sizeof(double));
        JU[k] = malloc(2 * NB * 2 * sizeof(double));
    }
    for (int prec = 0; prec < 2; prec++) {
        cnf_mlp_config cfg = {.d_in = 2, .d_out = 2, .n_hidden = 2, .hidden = hidden,
                              .act = CNF_ACT_TANH, .time = CNF_TIME_CONCATSQUASH,
                              .precision = prec ? CNF_PRECISION_MIXED : CNF_PRECISION_DOUBLE};
        cnf_mlp *m = NULL;
        cr_assert_eq(cnf_mlp_create(&m, &cfg), CNF_OK);
        size_t np = cnf_mlp_n_params(m);
        double *theta = malloc(np * sizeof(double)), *g = calloc(np, sizeof(double));
        cnf_mlp_init(m, theta, &r);
        const size_t threads[] = {1, 3, 1}, batch[] = {NB, NB, 50};
        for (size_t ti = 0; ti < 3; ti++)
            for (int probe = 0; probe < 2; probe++) {
                const size_t nb = batch[ti], nk = probe ? 1 : 2;
                const double *u = probe ? U : NULL;
                cnf_mlp_work *w = NULL;
                cr_assert_eq(cnf_mlp_work_create_threads(&w, m, nb, 2, threads[ti]), CNF_OK);
                for (int keep = 1; keep >= 0; keep--) {
                    cnf_mlp_work_set_keep(w, keep);
                    cr_assert_eq(cnf_mlp_jvp(m, theta, 0.4, X, 2, nb, u, nk, F[keep], 2, JU[keep],
                                             w),
                                 CNF_OK, "%s", cnf_errmsg());
                }
                cr_assert(!memcmp(F[0], F[1], nb * 2 * sizeof(double)),
                          "F differs (%s, %zu threads, %zu, probe %d)", cnf_precision_name(prec),
                          threads[ti], nb, probe);
                cr_assert(!memcmp(JU[0], JU[1], nk * nb * 2 * sizeof(double)),
                          "J u differs (%s, %zu threads, %zu, probe %d)",
                          cnf_precision_name(prec), threads[ti], nb, probe);
                cr_assert_eq(cnf_mlp_backward(m, theta, F[0], 2, NULL, NULL, 0, g, NULL, w),
                             CNF_EINVAL, "reverse pass after a call that kept nothing");
                cnf_mlp_work_set_keep(w, 1);
                cr_assert_eq(cnf_mlp_jvp(m, theta, 0.4, X, 2, nb, u, nk, F[1], 2, NULL, w), CNF_OK);
                cr_assert_eq(cnf_mlp_backward(m, theta, F[0], 2, NULL, NULL, 0, g, NULL, w),
                             CNF_OK, "%s", cnf_errmsg());
                cnf_mlp_work_free(w);
            }
        free(g);
        free(theta);
        cnf_mlp_free(m);
    }
    for (int k = 0; k < 2; k++) {
        free(F[k]);
        free(JU[k]);
    }
    free(U);
    free(X);
}

/* A workspace shape that overflows is a named error, not a division by zero. */
Test(threads, absurd_workspace_is_refused)
{
    size_t hidden[] = {4};
    cnf_mlp_config cfg = {.d_in = 2, .d_out = 2, .n_hidden = 1, .hidden = hidden,
                          .act = CNF_ACT_TANH, .time = CNF_TIME_CONCAT};
    cnf_mlp *m = NULL;
    cr_assert_eq(cnf_mlp_create(&m, &cfg), CNF_OK);
    cnf_mlp_work *w = NULL;
    cr_assert_eq(cnf_mlp_work_create_threads(&w, m, 1000, (size_t)-1, 2), CNF_EINVAL);
    cr_assert_null(w);
    cr_assert_eq(cnf_mlp_work_create_threads(&w, m, 0, 2, 2), CNF_EINVAL);
    cnf_mlp_free(m);
}

/* The first workspace sets OpenBLAS to one thread unless the environment chose a count (each
 * Criterion test runs in its own process, so each sees a fresh "first"). */
static int make_work_and_count_blas_threads(void)
{
    size_t hidden[] = {4};
    cnf_mlp_config cfg = {.d_in = 2, .d_out = 2, .n_hidden = 1, .hidden = hidden,
                          .act = CNF_ACT_TANH, .time = CNF_TIME_CONCAT};
    cnf_mlp *m = NULL;
    cnf_mlp_work *w = NULL;
    cr_assert_eq(cnf_mlp_create(&m, &cfg), CNF_OK);
    cr_assert_eq(cnf_mlp_work_create(&w, m, 10, 2), CNF_OK);
    cnf_mlp_work_free(w);
    cnf_mlp_free(m);
    return openblas_get_num_threads();
}

Test(threads, first_workspace_sets_openblas_to_one_thread)
{
    unsetenv("OPENBLAS_NUM_THREADS");
    unsetenv("GOTO_NUM_THREADS");
    unsetenv("OMP_NUM_THREADS");
    openblas_set_num_threads(2);
    cr_assert_eq(make_work_and_count_blas_threads(), 1);
}

Test(threads, openblas_threads_chosen_in_the_environment_are_kept)
{
    setenv("OPENBLAS_NUM_THREADS", "2", 1);
    openblas_set_num_threads(2);
    int before = openblas_get_num_threads(); /* 1 on a one-core machine */
    cr_assert_eq(make_work_and_count_blas_threads(), before);
}

/* A work fits the MLP it was made for, or one of the same layers, parameters and precision;
 * another shape (same depth, wider layer; or the same widths with another time input, hence
 * more parameters) is refused before anything is written (single and threaded works). */
Test(threads, work_of_another_shape_is_refused)
{
    size_t h4[] = {4}, h8[] = {8};
    cnf_mlp_config c4 = {.d_in = 2, .d_out = 2, .n_hidden = 1, .hidden = h4,
                         .act = CNF_ACT_TANH, .time = CNF_TIME_CONCAT};
    cnf_mlp_config c8 = c4, c4s = c4;
    c8.hidden = h8;
    c4s.time = CNF_TIME_CONCATSQUASH;
    cnf_mlp *m4 = NULL, *m8 = NULL, *m4b = NULL, *m4s = NULL;
    cr_assert_eq(cnf_mlp_create(&m4, &c4), CNF_OK);
    cr_assert_eq(cnf_mlp_create(&m8, &c8), CNF_OK);
    cr_assert_eq(cnf_mlp_create(&m4b, &c4), CNF_OK);
    cr_assert_eq(cnf_mlp_create(&m4s, &c4s), CNF_OK);
    double theta[200] = {0}, X[2 * 100] = {0}, F[2 * 100];
    for (size_t threads = 1; threads <= 2; threads++) {
        cnf_mlp_work *w = NULL;
        cr_assert_eq(cnf_mlp_work_create_threads(&w, m4, 100, 0, threads), CNF_OK);
        cr_assert_eq(cnf_mlp_forward(m8, theta, 0.0, X, 2, 100, F, 2, w), CNF_EINVAL);
        cr_assert_eq(cnf_mlp_forward(m4s, theta, 0.0, X, 2, 100, F, 2, w), CNF_EINVAL);
        cr_assert_eq(cnf_mlp_forward(m4b, theta, 0.0, X, 2, 100, F, 2, w), CNF_OK);
        cnf_mlp_work_free(w);
    }
    cnf_mlp_free(m4);
    cnf_mlp_free(m8);
    cnf_mlp_free(m4b);
    cnf_mlp_free(m4s);
}
