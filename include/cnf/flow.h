/* The flow interface shared by continuous and discrete flows (DESIGN.md §1).
 *
 * A flow maps data x ∈ R^d to a base point z with a standard normal base density, and gives
 *     log p(x) = log N(z; 0, I) + log |det ∂z/∂x|.
 * Training, evaluation, sampling, the CLI and the examples use only these calls, so they work for
 * every kind of flow unchanged. The flow owns its parameters: one flat array of n_params doubles
 * (cnf_flow_params), which the optimizer updates in place and model files store. */
#ifndef CNF_FLOW_H
#define CNF_FLOW_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_flow cnf_flow;

/* What one call cost and found. Every field is set by the call (zeros where not applicable). */
typedef struct cnf_flow_stats {
    size_t nfe_forward;   /* right-hand-side evaluations in the forward solve(s) */
    size_t nfe_backward;  /* right-hand-side evaluations in the gradient pass */
    size_t steps;         /* accepted forward steps */
    size_t rejected;      /* rejected forward steps */
    double nll;           /* mean negative log-likelihood (nats) of the batch */
    double reg_kinetic;   /* mean kinetic-energy integral ∫||v||² (CNF with regularizers) */
    double reg_jacobian;  /* mean Jacobian Frobenius integral ∫||J||_F² (estimated) */
} cnf_flow_stats;

/* Kind of flow ("cnf", "realnvp", ...), data dimension, parameter count and the parameters. */
CNF_API const char *cnf_flow_kind(const cnf_flow *f);
CNF_API size_t cnf_flow_dim(const cnf_flow *f);
CNF_API size_t cnf_flow_n_params(const cnf_flow *f);
CNF_API double *cnf_flow_params(cnf_flow *f); /* (n_params), owned by f */

/* The map to the base and back. encode: Z (n, d) = z(x_i) and logdet[i] = log|det ∂z/∂x| at x_i,
 * so log p(x) = log N(z; 0, I) + logdet. decode: X (n, d) = x(z_i), the inverse map, with
 * logdet[i] the same quantity at the decoded point. logdet may be NULL. */
CNF_API int cnf_flow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                            cnf_flow_stats *stats);
CNF_API int cnf_flow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                            cnf_flow_stats *stats);

/* logp[i] = log p(x_i) for the n rows of X (n, d). stats may be NULL. On failure logp is
 * unspecified and the code says why (e.g. CNF_ESTEP_UNDERFLOW from the ODE solver). */
CNF_API int cnf_flow_log_prob(cnf_flow *f, const double *X, size_t n, double *logp,
                              cnf_flow_stats *stats);

/* Draw n samples: z_i ~ N(0, I) (n·d normals from rng, row by row), X (n, d) = decode(z) and,
 * if logp is not NULL, their log-density. Draws only from rng. */
CNF_API int cnf_flow_sample(cnf_flow *f, size_t n, cnf_rng *rng, double *X, double *logp,
                            cnf_flow_stats *stats);

/* The training objective on a batch X (n, d) — the mean negative log-likelihood plus the flow's
 * regularizers — into *loss, and its gradient w.r.t. the parameters into grad (n_params,
 * overwritten). rng supplies any randomness of the objective (Hutchinson probes); it may be NULL
 * for flows that need none. */
CNF_API int cnf_flow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng,
                              double *loss, double *grad, cnf_flow_stats *stats);

/* As cnf_flow_nll_grad, and also gx (n, d) = ∂loss/∂X (either of grad and gx may be NULL). */
CNF_API int cnf_flow_nll_grad_x(cnf_flow *f, const double *X, size_t n, cnf_rng *rng,
                                double *loss, double *grad, double *gx, cnf_flow_stats *stats);

/* The objective alone, with the same randomness as cnf_flow_nll_grad given the same rng state
 * (what finite-difference checks compare against). */
CNF_API int cnf_flow_loss(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                          cnf_flow_stats *stats);

/* ---- Sampling an unnormalized density: reverse KL ---------------------------------------------
 * For a target q̃ known up to its normaliser Z, the flow p_θ is fitted by minimising
 *     KL(p_θ || q̃/Z) − log Z = E_{z~N(0,I)} [ log p_θ(x) − log q̃(x) ],  x = decode(z),
 * with gradients through the samples (reparametrisation). The target is a callback: logq (n) =
 * log q̃ at the rows of X (n, d), and, when grad is not NULL, grad (n, d) = ∇ₓ log q̃. It returns 0,
 * or non-zero to stop (a negative cnf code is passed on). */
typedef int (*cnf_logq_fn)(void *ctx, const double *X, size_t n, double *logq, double *grad);

/* The reverse-KL objective on n fresh base points from rng: *loss = mean [log p − log q̃] (so
 * −loss is the ELBO of log Z), and grad (n_params, overwritten) its gradient, or NULL for the
 * loss only. stats->nll receives the ELBO. */
CNF_API int cnf_flow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                              double *loss, double *grad, cnf_flow_stats *stats);

/* Importance sampling with the flow as proposal over n samples: w_i = q̃(x_i)/p(x_i),
 * log Ẑ = log mean w (log-sum-exp), ESS fraction = (Σw)² / (n Σw²), ELBO = mean log w. */
CNF_API int cnf_flow_importance(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq,
                                void *ctx, double *log_z, double *ess_fraction, double *elbo);

/* ---- Velocity regression (flow matching) -------------------------------------------------------
 * Some flows are given by a velocity field  dy/dt = v_θ(t, y), t ∈ [0, T],  in coordinates y of
 * their own: the CNF with one block and a fixed T (y = x), and the preprocessing wrapper around
 * such a CNF (cnf/pre.h: y is the preprocessed x, of the inner flow's dimension k). Such a field
 * can be regressed onto the velocity of a path between data and base points, which trains it
 * without solving the ODE (conditional flow matching, cnf/fm.h). The regression, its paths and
 * any pairing of data with base points all live in the field's space y: for a preprocessing
 * wrapper that is the preprocessed (standardised, logit, PCA) space, not the data space.
 *
 * The path comes from the caller as a callback, because only the flow knows its coordinates:
 * given the batch in them, Y (n, k), it fills path times tau (n) in [0, 1], points on the paths
 * Yt (n, k) and the paths' velocities U (n, k) = dy/dτ. It returns 0, or non-zero to stop (a
 * negative cnf code is passed on). */
typedef int (*cnf_path_fn)(void *ctx, const double *Y, size_t n, size_t k, double *tau,
                           double *Yt, double *U);

/* The regression loss for the data batch X (n, d), path time τ mapping to field time Tτ:
 *     loss = (1/n) Σ_i ‖v_θ(T τ_i, Yt_i) − U_i / T‖²,
 * and grad (n_params, overwritten; NULL for the loss only) its gradient w.r.t. the parameters.
 * Consecutive rows with the same τ are evaluated as one batch of the field. Errors: those of
 * cnf_flow_velocity_check, CNF_EINVAL for an empty batch or no path, the callback's code. */
CNF_API int cnf_flow_velocity_loss(cnf_flow *f, const double *X, size_t n, cnf_path_fn path,
                                   void *ctx, double *loss, double *grad);

/* CNF_OK when f has a velocity field cnf_flow_velocity_loss can regress; else, with a detail
 * saying why, CNF_EUNSUPPORTED (no such field: the discrete flows, a CNF with a user field) or
 * CNF_EINVAL (a CNF with more than one block, or one that trains its end time T: a path on
 * τ ∈ [0, 1] gives T no gradient). */
CNF_API int cnf_flow_velocity_check(const cnf_flow *f);

CNF_API void cnf_flow_free(cnf_flow *f);

/* log N(z; 0, I) for one point of dimension d. */
CNF_API double cnf_std_normal_logpdf(const double *z, size_t d);

#ifdef __cplusplus
}
#endif
#endif
