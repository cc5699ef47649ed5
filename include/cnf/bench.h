/* The speed benchmarks of issue 9 as a library call (the `cnf bench` command prints them).
 *
 * Cases, each with warm-up runs and the median over repeats (untrained fields from a fixed
 * seed; "rk4" is 20 steps over the unit interval, "dopri5" rtol = atol = 1e-5):
 *   eval   log-density of a d = 2, 64-64-64 tanh concatsquash CNF, exact trace, 10,000 points;
 *   train  one objective + gradient on 512 points: d = 2 exact, d = 16 and d = 64 Hutchinson
 *          (one Rademacher probe), RK4 and Dopri5, backprop and adjoint; and d = 2 with RK4 at
 *          80 steps, whose peak memory against 20 steps shows how each gradient grows;
 *   rhs    the MLP right-hand side alone (forward + tangents) in GFLOP/s, against the rate of the
 *          same GEMMs (same shapes, same BLAS) timed alone in the same run, both on one thread
 *          (the MLP work is made with one thread; run with OpenBLAS at one thread to compare);
 *   toy    FFJORD's toy configuration (8gaussians, batch 100, Dopri5 1e-5, exact trace, T = 0.5
 *          trained, Adam 1e-3): seconds per training iteration over a short run, with the mean
 *          NFE per iteration; once with the checkpointed adjoint (cnf's default) and once with
 *          backsolve (x integrated backwards with the adjoint: torchdiffeq's odeint_adjoint,
 *          which FFJORD uses).
 * Peak memory of each case is the process's VmHWM after returning freed heap memory to the
 * system (malloc_trim) and resetting VmHWM (/proc/self/clear_refs) just before the case; it
 * includes the process's baseline resident set.
 *
 * Timing is the caller's machine and threads: OpenBLAS's thread count is whatever the process
 * set. Nothing here prints. */
#ifndef CNF_BENCH_H
#define CNF_BENCH_H

#include <stddef.h>

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_bench_result {
    char bench[8];      /* "eval", "train", "rhs", "toy" */
    size_t d;
    char trace[8];      /* "exact", "hutch" */
    char solver[8];     /* "rk4", "dopri5" ("" for rhs) */
    char grad[12];      /* "none", "backprop", "adjoint", "backsolve" (toy) */
    size_t batch;
    size_t steps;       /* RK4 steps (20; train also 80 for the memory check); 0 for Dopri5 */
    size_t width;       /* hidden width of the 3-hidden-layer MLP (64; rhs also 256) */
    char precision[8];  /* "double", "mixed" */
    size_t repeats;     /* timed runs (toy: iterations) */
    double median_s;    /* median seconds of one run (toy: of one iteration) */
    double mean_s;      /* mean seconds of one run (toy: of one iteration) */
    double points_per_s; /* batch / median_s */
    double nfe_fwd, nfe_bwd; /* per run (toy: mean per iteration) */
    /* rhs only (0 otherwise): the RHS's rate, and its layer products timed alone as one GEMM
     * per layer over the batch (gemm) and in the RHS's own cache blocks (gemm_blocked). */
    double gflops, gemm_gflops, gemm_blocked_gflops;
    /* CPU time: process CPU seconds per run (mean; all threads; toy: per iteration), and for
     * rhs the rates by the calling thread's CPU time — figures that a busy machine distorts
     * less than wall time (a single-thread run's CPU time is what it would take on an idle
     * core, up to cache sharing). */
    double cpu_s, gflops_cpu, gemm_gflops_cpu, gemm_blocked_gflops_cpu;
    double peak_rss_mb; /* VmHWM during the case (0 if unavailable) */
} cnf_bench_result;

typedef struct cnf_bench_options {
    int quick;          /* smaller batches, fewer repeats and toy iterations (a smoke run) */
    const char *cases;  /* comma-separated subset of "eval,train,rhs,toy"; NULL = all */
    size_t repeats;     /* timed repeats (0 = default: 5, quick 2) */
    size_t toy_iters;   /* toy iterations (0 = default: 300, quick 10) */
    unsigned precisions; /* bit 0: double, bit 1: mixed (float32 layer products); 0 = double */
    /* Called after each case (may be NULL), e.g. to print it at once. */
    void (*on_result)(const cnf_bench_result *r, void *ctx);
    void *ctx;
} cnf_bench_options;

typedef struct cnf_bench_machine {
    char cpu[128];        /* model name from /proc/cpuinfo */
    int cores;            /* online processors */
    char blas_core[32];   /* openblas_get_corename() */
    char blas_config[128]; /* openblas_get_config() */
    int blas_threads;     /* openblas_get_num_threads() */
    char gemm_library[128]; /* file providing cblas_dgemm to this process (dladdr), "" if unknown */
    int cnf_threads;      /* threads the MLP kernels use over batch chunks */
} cnf_bench_machine;

CNF_API void cnf_bench_machine_info(cnf_bench_machine *m);

/* Run the selected cases. *results (caller frees with free()) holds *n results on success; on
 * failure *results is NULL and the code says which case failed (cnf_errmsg()). CNF_ENAME for an
 * unknown case name. */
CNF_API int cnf_bench_run(const cnf_bench_options *opt, cnf_bench_result **results, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
