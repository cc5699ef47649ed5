/* Unnormalized target densities q̃ for the reverse-KL objective (cnf_flow_rkl_grad), each with
 * its gradient, and the true log Z where it is known in closed form.
 *
 *   banana    d = 2: log q̃ = −x₁²/8 − (x₂ − x₁²/4 + 1)²/2;                    Z = 4π
 *   funnel    d = 10 (Neal 2003): v = x₁, log q̃ = −v²/18 − Σ_{i≥2} x_i² e^{−v}/2 − 9v/2;
 *             Z = 3 (2π)⁵
 *   ring      d = 2: log q̃ = −(‖x‖ − 2)²/(2·0.25²);
 *             Z = 2π [σ² e^{−r²/2σ²} + rσ√(π/2) (1 + erf(r/(σ√2)))], r = 2, σ = 0.25
 *   mixture   d = 2: q̃ = Σ_k w_k N(x; μ_k, 0.7² I), μ_k on a circle of radius 2 at angles 2πk/5,
 *             unnormalised weights w = (1, 2, 3, 4, 5);                         Z = Σ w_k = 15
 *   twomoons  d = 2 (Rezende & Mohamed 2015, U₁): log q̃ = −½((‖x‖ − 2)/0.4)²
 *             + log(e^{−½((x₁−2)/0.6)²} + e^{−½((x₁+2)/0.6)²}); Z by 2-D quadrature
 *   logreg    Bayesian logistic regression (see cnf_target_logreg_create); Z unknown.
 *
 * A target is used through cnf_target_logq, whose signature is cnf_logq_fn with the target as
 * its context. Ownership: the caller frees targets with cnf_target_free (NULL allowed). */
#ifndef CNF_TARGET_H
#define CNF_TARGET_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_target cnf_target;

/* A built-in target by name; CNF_ENAME lists the valid names. */
CNF_API int cnf_target_create(const char *name, cnf_target **out);

/* The posterior of Bayesian logistic regression: labels y_i ∈ {0, 1}, features X (n, p) — an
 * intercept is added, so the dimension is p + 1 — and prior w ~ N(0, prior_sd² I):
 *     log q̃(w) = Σ_i [ y_i log σ(x̃_iᵀw) + (1 − y_i) log(1 − σ(x̃_iᵀw)) ] − ‖w‖²/(2 prior_sd²).
 * The data are copied. CNF_EINVAL for a label other than 0/1, non-finite data or prior_sd ≤ 0. */
CNF_API int cnf_target_logreg_create(cnf_target **out, const double *X, const double *y,
                                     size_t n, size_t p, double prior_sd);

/* The same from a data file (CSV, .npy, … as cnf_data_load reads them): the last column is the
 * label (0/1), the others are features, standardised to mean 0 and standard deviation 1 before
 * use (constant features are left at 0). Errors name the file and the row. */
CNF_API int cnf_target_logreg_file(cnf_target **out, const char *path, double prior_sd);

CNF_API void cnf_target_free(cnf_target *t);
CNF_API const char *cnf_target_name(const cnf_target *t);
CNF_API size_t cnf_target_dim(const cnf_target *t);
/* log Z if known (closed form, or quadrature for twomoons), NaN otherwise. */
CNF_API double cnf_target_log_z(const cnf_target *t);
/* Number of built-in targets and their names (for listings). */
CNF_API size_t cnf_target_count(void);
CNF_API const char *cnf_target_at(size_t i);

/* cnf_logq_fn: logq (n) = log q̃ at the rows of X (n, d); grad (n, d) = ∇ log q̃ if not NULL.
 * ctx is the cnf_target. */
CNF_API int cnf_target_logq(void *ctx, const double *X, size_t n, double *logq, double *grad);

#ifdef __cplusplus
}
#endif
#endif
