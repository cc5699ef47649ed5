/* The MLP velocity field v_θ(t, x) and its exact derivatives (DESIGN.md §2).
 *
 * Layers l = 1..L with h_0 = x (d inputs) and L−1 hidden widths:
 *     y_l = W_l h_{l−1} + b_l,   z_l = g_l ⊙ y_l + c_l t,   h_l = σ(z_l) (l < L),   f = z_L.
 * Time conditioning:  none:  g_l = 1, c_l = 0;
 *                     concat: g_l = 1, c_l = the weight column of the time input;
 *                     concatsquash (FFJORD's ConcatSquashLinear): g_l = sigmoid(w^g_l t + b^g_l).
 *
 * Parameters are not owned by the MLP: every operation takes θ as one flat array of length
 * cnf_mlp_n_params(), laid out layer by layer as W_l (out×in, row-major), b_l, then c_l (concat,
 * concatsquash), then w^g_l, b^g_l (concatsquash). Gradients are arrays of the same length.
 *
 * Batches are rows: X is (n, d) with a row stride ldx ≥ d, so an ODE state that interleaves other
 * per-sample quantities with x can be passed without copying. Tangent directions U are K slabs
 * (K, n, d), slab k holding direction u_k for every sample.
 *
 * A cnf_mlp_work holds the forward quantities that the reverse pass needs; a forward call fills
 * it, and cnf_mlp_backward reads it. One work per thread. */
#ifndef CNF_MLP_H
#define CNF_MLP_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_ACT_TANH = 0,     /* σ = tanh z;            σ' = 1 − σ²,   σ'' = −2σσ' */
    CNF_ACT_SOFTPLUS = 1, /* σ = log(1 + e^z);      σ' = s(z),     σ'' = s(1 − s), s = sigmoid */
    CNF_ACT_ELU = 2,      /* σ = z (z > 0), e^z − 1; σ' = 1 or e^z, σ'' = 0 or e^z */
    CNF_ACT_SWISH = 3,    /* σ = z s(z);            σ' = s + z s(1−s), σ'' = s(1−s)(2 + z(1 − 2s)) */
} cnf_act;

typedef enum {
    CNF_TIME_NONE = 0,
    CNF_TIME_CONCAT = 1,
    CNF_TIME_CONCATSQUASH = 2,
} cnf_time_mode;

/* Name ↔ value: "tanh", "softplus", "elu", "swish"; "none", "concat", "concatsquash".
 * Unknown names give CNF_ENAME. */
CNF_API int cnf_act_from_name(const char *name, cnf_act *out);
CNF_API const char *cnf_act_name(cnf_act act);
CNF_API int cnf_time_mode_from_name(const char *name, cnf_time_mode *out);
CNF_API const char *cnf_time_mode_name(cnf_time_mode mode);

/* σ, σ', σ'' of act at z (the scalar definition the batched kernels use). */
CNF_API void cnf_act_eval(cnf_act act, double z, double *s, double *ds, double *d2s);

typedef enum {
    CNF_PRECISION_DOUBLE = 0, /* everything in double (the default; gradient checks use it) */
    CNF_PRECISION_MIXED = 1,  /* layer products in float32 (cblas_sgemm) from float copies of
                               * the layer inputs and weights; tanh layers and the tangents' ḣ
                               * in float (2.5 float ulp; other activations are computed in
                               * double), σ', σ'' kept in float; the reverse pass's seeds,
                               * accumulations (∇θ is summed in double) and outputs in double */
} cnf_precision;

/* "double", "mixed" ↔ value; CNF_ENAME for other names. */
CNF_API int cnf_precision_from_name(const char *name, cnf_precision *out);
CNF_API const char *cnf_precision_name(cnf_precision p);

typedef struct cnf_mlp_config {
    size_t d_in;          /* input dimension d ≥ 1 */
    size_t d_out;         /* output dimension ≥ 1 (d for a velocity field) */
    size_t n_hidden;      /* number of hidden layers (0 allowed: one affine layer) */
    const size_t *hidden; /* (n_hidden) widths, each ≥ 1; copied by cnf_mlp_create */
    cnf_act act;
    cnf_time_mode time;
    cnf_precision precision; /* 0 = double */
} cnf_mlp_config;

typedef struct cnf_mlp cnf_mlp;
typedef struct cnf_mlp_work cnf_mlp_work;

/* Create an MLP; *out is NULL on failure (CNF_EINVAL for zero sizes or bad enum values). The
 * caller owns the result and frees it with cnf_mlp_free (NULL allowed). */
CNF_API int cnf_mlp_create(cnf_mlp **out, const cnf_mlp_config *cfg);
CNF_API void cnf_mlp_free(cnf_mlp *m);
CNF_API size_t cnf_mlp_n_params(const cnf_mlp *m);
CNF_API const cnf_mlp_config *cnf_mlp_get_config(const cnf_mlp *m); /* hidden points inside m */

/* Named view of the parameter block i (0 ≤ i < cnf_mlp_n_blocks): name such as "1.W", "1.b",
 * "1.c", "1.wg", "1.bg" (layers numbered from 1), its offset in θ and its shape rows×cols. */
CNF_API size_t cnf_mlp_n_blocks(const cnf_mlp *m);
CNF_API int cnf_mlp_block(const cnf_mlp *m, size_t i, const char **name, size_t *offset,
                          size_t *rows, size_t *cols);

/* Initialise θ as PyTorch's nn.Linear does by default — Kaiming-uniform with a = √5, i.e. W_l
 * and b_l uniform in ±1/√fan_in (fan_in = inputs, + 1 for concat, whose c_l is the time column
 * of the same layer) — and FFJORD's ConcatSquashLinear: w^g_l, b^g_l, c_l are Linear(1, out)
 * layers, uniform in ±1. FFJORD's networks start from exactly this; on checkerboard after
 * FFJORD's 1,000 toy iterations it gave 3.87 nats against 4.01 with Glorot-uniform weights and
 * zero biases (seed 0). Draws only from rng. */
CNF_API void cnf_mlp_init(const cnf_mlp *m, double *theta /* (n_params) */, cnf_rng *rng);

/* Workspace for batches of up to n_max rows with up to k_max tangent directions.
 * Caller owns it; cnf_mlp_work_free accepts NULL. */
CNF_API int cnf_mlp_work_create(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max, size_t k_max);

/* As cnf_mlp_work_create, with the calls on it split over `threads` threads (0: the default
 * below) by batch chunks: each chunk runs the whole network on its rows with its own buffers,
 * and parameter gradients are reduced in chunk order, so for a given thread count the same
 * inputs give the same bits. Batches below 16 rows per thread run unsplit. The work owns its
 * helper threads (idle ones sleep after a short spin) and stops them in cnf_mlp_work_free. A
 * work must not be used from two threads at once.
 * BLAS threads: the first workspace made in a process sets OpenBLAS to one thread
 * (openblas_set_num_threads(1)) unless OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
 * OMP_NUM_THREADS is set. The layer products are small and already run on these threads;
 * OpenBLAS's own threads under them made a training step 4x slower on 2 cores (measured). If
 * you set one of those variables, the two thread counts multiply. With an OpenMP build of
 * OpenBLAS the call also sets OpenMP's default thread count: set OMP_NUM_THREADS to keep yours.
 * A count set earlier through openblas_set_num_threads is overridden. */
CNF_API int cnf_mlp_work_create_threads(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max,
                                        size_t k_max, size_t threads);
/* Threads per work by default: $CNF_NUM_THREADS if set, else the number of online processors
 * (at most 16). Set CNF_NUM_THREADS=1 on a machine shared with other jobs (measured; see
 * src/nn/work.c). */
CNF_API size_t cnf_mlp_threads_default(void);
CNF_API void cnf_mlp_work_free(cnf_mlp_work *w);
/* keep = 1 (the default): forward calls on w keep what cnf_mlp_backward needs. keep = 0 is for
 * calls no reverse pass follows (e.g. the right-hand side of a forward ODE solve): the chunks of
 * a large batch then reuse one set of buffers per thread, which stays in cache, instead of
 * writing every chunk's activations to memory (10,000 samples, d = 2, 64-64-64: 1.7x faster).
 * Results are bit-identical either way; cnf_mlp_backward after a call made with keep = 0 fails
 * with CNF_EINVAL. The divergence calls always keep. */
CNF_API void cnf_mlp_work_set_keep(cnf_mlp_work *w, int keep);

/* 1. F = f(t, X). One GEMM per layer. F may be NULL (then only the work is filled). */
CNF_API int cnf_mlp_forward(const cnf_mlp *m, const double *theta, double t,
                            const double *X /* (n, ldx) */, size_t ldx, size_t n,
                            double *F /* (n, ldf) */, size_t ldf, cnf_mlp_work *w);

/* 2. F = f(t, X) and JU_k = J(x_i) u_{k,i} for k < K in one pass, primal and tangent rows stacked
 * so each layer is one GEMM over n(1+K) rows. U = NULL with K = d means the unit vectors e_k
 * (exact trace; the first layer then needs no GEMM). JU may be NULL. */
CNF_API int cnf_mlp_jvp(const cnf_mlp *m, const double *theta, double t,
                        const double *X /* (n, ldx) */, size_t ldx, size_t n,
                        const double *U /* (K, n, d) or NULL */, size_t K,
                        double *F /* (n, ldf) or NULL */, size_t ldf,
                        double *JU /* (K, n, d) or NULL */, cnf_mlp_work *w);

/* 3. Divergence tr J(x_i) exactly (d unit tangents), and the Hutchinson estimate
 * (1/K) Σ_k ε_kᵀ J ε_k for given probes E (K, n, d). Both also return F when it is not NULL and
 * leave w ready for cnf_mlp_backward with the same tangents. */
CNF_API int cnf_mlp_div_exact(const cnf_mlp *m, const double *theta, double t,
                              const double *X, size_t ldx, size_t n, double *F, size_t ldf,
                              double *div /* (n) */, cnf_mlp_work *w);
CNF_API int cnf_mlp_div_hutch(const cnf_mlp *m, const double *theta, double t,
                              const double *X, size_t ldx, size_t n, const double *E, size_t K,
                              double *F, size_t ldf, double *div /* (n) */, cnf_mlp_work *w);

/* 4. The reverse kernel, after a cnf_mlp_jvp / cnf_mlp_div_* / cnf_mlp_forward call on w (K = 0
 * for a plain forward). For seeds R (n, d) and S (K, n, d), either may be NULL (= 0), and
 *     φ = Σ_i [ R_i · f(t, x_i) + Σ_k S_{k,i} · J(x_i) u_{k,i} ]   (u held fixed),
 * ACCUMULATES ∇_x φ into GX (n, ldgx) and ∇_θ φ into gtheta (n_params), and ∂φ/∂t into *gt;
 * any of the three may be NULL. One routine gives plain VJPs (S = 0), the gradient of the exact
 * (S_k = e_k) or Hutchinson (S_k = ε_k) divergence and, with S_k = 2 J u_k, of ||J u||².
 * theta must be the forward call's, unchanged: the reverse pass reuses that call's activations
 * and, in mixed precision, the float weights it prepared (double precision reads theta). */
CNF_API int cnf_mlp_backward(const cnf_mlp *m, const double *theta, const double *R, size_t ldr,
                             const double *S, double *GX, size_t ldgx, double *gtheta, double *gt,
                             cnf_mlp_work *w);

#ifdef __cplusplus
}
#endif
#endif
