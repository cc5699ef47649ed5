/* Private helpers of the core layer (src/core) for every layer above it; not installed. */
#ifndef CNF_CORE_INTERNAL_H
#define CNF_CORE_INTERNAL_H

#include "cnf/core.h"

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
 * OMP_NUM_THREADS is set (src/core/gemm.c says why). Called when an MLP workspace is made. */
void cnf_blas_single_thread(void);

/* A parallel loop: fn(arg, i0, i1) over parts that cover [0, n) once each, all returned before it
 * returns; fn's results must not depend on the split. */
typedef void (*cnf_par_for)(void *par_ctx, size_t n, void (*fn)(void *arg, size_t i0, size_t i1),
                            void *arg);

#endif
