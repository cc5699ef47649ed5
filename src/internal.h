/* Private helpers shared by the library's source files; not installed. */
#ifndef CNF_INTERNAL_H
#define CNF_INTERNAL_H

#include "cnf/core.h"
#include "cnf/solver.h"

/* Record a detail message for cnf_errmsg() and return code, so a failure is one line:
 *     return cnf_fail(CNF_EINVAL, "hidden width %zu is zero", w); */
int cnf_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic wall-clock time in seconds (an arbitrary origin): for durations. */
double cnf_wall_seconds(void);

/* calloc and realloc of n·size bytes that fail (NULL; the caller reports CNF_ENOMEM) when n·size
 * overflows or exceeds the machine's physical memory, without asking malloc for it. realloc
 * leaves p as it was on failure. */
void *cnf_calloc(size_t n, size_t size);
void *cnf_realloc(void *p, size_t n, size_t size);

/* OpenBLAS to one thread, once per process, unless OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
 * OMP_NUM_THREADS is set (src/gemm.c says why). Called when an MLP workspace is made. */
void cnf_blas_single_thread(void);

/* The cache blocks an MLP call on n samples with K tangents is split into (src/mlp.c, for a
 * batch of at least one block per thread), for cnf bench's same-shape GEMM reference. */
size_t cnf_mlp_cache_chunks(size_t n, size_t K);

/* hold = 1: the caller promises that the values of a θ array passed to calls on w do not change
 * until hold = 0, so the weights prepared from it (transposed, in float) are reused while the
 * same array comes back (src/cflow.c holds them for one solve). */
struct cnf_mlp_work;
void cnf_mlp_work_hold_weights(struct cnf_mlp_work *w, int hold);

/* fn(ctx, i0, i1) over [0, n) in one part per thread of w's pool (all on the caller without
 * one): for per-sample loops between MLP calls (src/cflow.c), whose results must not depend on
 * the split. */
void cnf_mlp_work_rows(struct cnf_mlp_work *w, size_t n,
                       void (*fn)(void *ctx, size_t i0, size_t i1), void *ctx);

/* A parallel loop: fn(arg, i0, i1) over parts that cover [0, n) once each, all returned before it
 * returns; fn's results must not depend on the split. */
typedef void (*cnf_par_for)(void *par_ctx, size_t n, void (*fn)(void *arg, size_t i0, size_t i1),
                            void *arg);

/* cnf_ode_solve with the explicit RK engine's state-sized loops (the stage combinations) run by
 * par (NULL: on the caller); the same bits either way. For src/cflow.c's large states. */
int cnf_ode_solve_par(cnf_ode_solver *s, cnf_ode_rhs f, void *ctx, double t0, double t1,
                      double *y, const cnf_ode_options *opt, cnf_ode_observer observer,
                      void *observer_ctx, cnf_ode_stats *stats, cnf_par_for par, void *par_ctx);

#endif
