/* Private helpers of the MLP layer (src/nn) for the layers above it; not installed. */
#ifndef CNF_NN_INTERNAL_H
#define CNF_NN_INTERNAL_H

#include "cnf/mlp.h"
#include "core/internal.h"

/* The cache blocks an MLP call on n samples with K tangents is split into (src/nn/work.c, for a
 * batch of at least one block per thread), for cnf bench's same-shape GEMM reference. */
size_t cnf_mlp_cache_chunks(size_t n, size_t K);

/* hold = 1: the caller promises that the values of a θ array passed to calls on w do not change
 * until hold = 0, so the weights prepared from it (transposed, in float) are reused while the
 * same array comes back (src/flows/cflow.c holds them for one solve). */
void cnf_mlp_work_hold_weights(cnf_mlp_work *w, int hold);

/* fn(ctx, i0, i1) over [0, n) in one part per thread of w's pool (all on the caller without
 * one): for per-sample loops between MLP calls (src/flows/cflow.c), whose results must not
 * depend on the split. */
void cnf_mlp_work_rows(cnf_mlp_work *w, size_t n,
                       void (*fn)(void *ctx, size_t i0, size_t i1), void *ctx);

#endif
