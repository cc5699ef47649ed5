/* Preprocessing recorded with the model: a wrapper flow ("pre") that maps a data row x ∈ R^D
 * through fixed transforms fitted on the training set, then through an inner flow of dimension k:
 *
 *   1. keep the columns that vary on the training set (constant columns are dropped: their
 *      values are recorded and restored when sampling; they contribute nothing to log p);
 *   2. with levels > 0 (integer data in [0, levels), dequantised by the caller with
 *      cnf_data_dequantize), FFJORD's logit transform (Dinh et al. 2017, §4.1):
 *          u = logit(α + (1 − 2α)·x / levels),
 *   3. per-feature standardisation s = (u − mean) / std;
 *   4. optionally PCA: v = Wᵀ s with W the top-k eigenvectors of the training covariance of s.
 *
 * Without PCA every step is a bijection on the kept columns, and the wrapper adds its
 * log-determinant, so log p(x) is a density in DATA space (for pixel data: per unit of the
 * dequantised pixel value in [0, levels), the standard measure for bits/dim; with α > 0 the logit
 * covers a bounded interval only, so — as in FFJORD — the density misses the inner flow's mass
 * outside it and integrates to slightly less than one). With PCA the map is
 * a projection: log p is the density of the k PCA coordinates v (a different space: NLL figures
 * are not comparable to data-space ones, and the CLI says so).
 *
 * The wrapper's dimension is D; its base points carry the inner flow's z in the first k
 * coordinates and zeros after them (encode), and log-determinants are adjusted so that
 * cnf_flow_log_prob and cnf_flow_sample give the densities just described. Parameters are the
 * inner flow's (same array). In a model file the wrapper is stored as its inner flow (metadata
 * "kind" and "dim" are the inner's, so other readers see a plain model) plus "pre.*" metadata and
 * tensors; cnf_model_load re-attaches it. */
#ifndef CNF_PRE_H
#define CNF_PRE_H

#include "cnf/flow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_pre_config {
    int drop_constant; /* drop columns constant on the training set (default 1) */
    int standardize;   /* per-feature standardisation (default 1) */
    double levels;     /* > 0: integer data in [0, levels): logit transform (default 0: none) */
    double alpha;      /* the logit's α in [0, 0.5) (default 1e-6, FFJORD's MNIST value) */
    size_t pca;        /* 0: no PCA (default); else keep this many principal components */
} cnf_pre_config;

typedef struct cnf_pre cnf_pre;

CNF_API void cnf_pre_config_default(cnf_pre_config *c);

/* Fit the transforms on training rows X (n, D). With levels > 0 every value must lie in
 * [0, levels]. CNF_EINVAL names the problem (every column constant, pca > kept columns, a value
 * out of range); *out is NULL on failure. */
CNF_API int cnf_pre_fit(cnf_pre **out, const cnf_pre_config *c, const double *X, size_t n,
                        size_t D);
CNF_API void cnf_pre_free(cnf_pre *p); /* NULL is fine */

/* Output dimension k (what the inner flow models), input dimension D, the levels, whether PCA is
 * used (log p in PCA space rather than data space). */
CNF_API size_t cnf_pre_dim(const cnf_pre *p);
CNF_API size_t cnf_pre_input_dim(const cnf_pre *p);
CNF_API double cnf_pre_levels(const cnf_pre *p);
CNF_API int cnf_pre_is_projection(const cnf_pre *p);

/* Y (n, k) = the transform of X (n, D), and logdet[i] its log-determinant (0 with PCA); logdet
 * may be NULL. CNF_EINVAL names a row and column outside [0, levels]. */
CNF_API int cnf_pre_apply(const cnf_pre *p, const double *X, size_t n, double *Y, double *logdet);

/* The wrapper flow over inner (dimension cnf_pre_dim(p)). Takes ownership of p and inner, also
 * on failure (then both are freed and *out is NULL). */
CNF_API int cnf_pre_flow_create(cnf_flow **out, cnf_pre *p, cnf_flow *inner);
/* The preprocessing and inner flow of a wrapper; NULL if f is not one. Borrowed from f. */
CNF_API const cnf_pre *cnf_pre_flow_pre(const cnf_flow *f);
CNF_API cnf_flow *cnf_pre_flow_inner(cnf_flow *f);

#ifdef __cplusplus
}
#endif
#endif
