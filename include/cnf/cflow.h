/* Continuous normalizing flow (FFJORD; Grathwohl et al. 2019) behind the flow interface.
 *
 * Data x is at t = 0 and the base point is z = x(T). Each of `blocks` stacked CNF blocks has its
 * own MLP field v_θb(t, x) (cnf/mlp.h) and integrates, for every sample, the augmented state
 * s = (x, ℓ, E, N) (DESIGN.md §2):
 *     x' = v,   ℓ' = −D,   E' = ||v||²,   N' = F̂,        ℓ(0) = E(0) = N(0) = 0,
 * D = tr ∂v/∂x (exact: d stacked unit tangents) or (1/K) Σ_k ε_kᵀ J ε_k (Hutchinson, K probes
 * per sample drawn once per solve), F̂ = ||J||_F² (exact) or (1/K) Σ_k ||J ε_k||².
 *     log p(x) = log N(z; 0, I) − ℓ(T),
 *     loss = mean_i [ −log N(z_i) + ℓ_i(T) + λ_K E_i(T) + λ_J N_i(T) ]   (RNODE regularizers).
 * Internally time is rescaled to τ = t/T ∈ [0, 1] (the field becomes T·v(Tτ, x)), which makes
 * the end time T an ordinary parameter: with train_T it is trained as T = s² (FFJORD's
 * sqrt_end_time), s being the last entry of the parameter array. The adaptive steps are the same
 * as on [0, T] since embedded error estimates are invariant under this rescaling.
 *
 * Gradients of the loss w.r.t. θ (and s):
 *   CNF_GRAD_BACKPROP  discretize-then-optimize: reverse-mode through the RK steps actually taken
 *                      (explicit RK methods only); the exact gradient of the computed loss.
 *                      Memory: the forward solve keeps each accepted step's state and the
 *                      arguments of the stages its result uses (RK4: 4 states per step), and
 *                      the reverse pass evaluates each stage just before reversing it.
 *   CNF_GRAD_ADJOINT   the continuous adjoint a' = −∇ₓ(a·g), q' = −∇_θ(a·g) integrated T → 0 with
 *                      the forward trajectory from checkpoints: CVODES's checkpointed adjoint
 *                      (CVodeAdjInit, Hermite) when the solver is CVODES, with q under error
 *                      control and both passes at 1e-3 × rtol and atol (CVODES propagates the
 *                      solution whose local error it controls, the built-in pairs a higher-order
 *                      one far more accurate than the tolerance: so scaled, its gradients are
 *                      about as accurate as the built-in adjoint's); for the built-in methods
 *                      the accepted forward states are stored and x is restarted from the stored
 *                      state at every step boundary, so x is only ever re-integrated backwards
 *                      within one forward step.
 *   CNF_GRAD_BACKSOLVE torchdiffeq's adjoint that re-integrates x backwards over the whole
 *                      interval. A labelled comparison mode only: it is inaccurate whenever the
 *                      flow contracts (errors in x grow like e^{∫|λ_max|}), e.g. v = −16·tanh(x−1).
 *
 * cvode-bdf's Newton–Krylov iteration gets the augmented field's J·v from the field's tangent
 * pass (cnf_ode_options.jvp; exact in the x and E rows, the ℓ and N rows' dependence on x
 * through the divergence left out, which only delays their Newton convergence by one iteration)
 * and, in the adjoint, the backward J·v exactly; those products count in the stats' NFE.
 *
 * Ownership: cnf_cflow_create returns a cnf_flow that the caller frees with cnf_flow_free. */
#ifndef CNF_CFLOW_H
#define CNF_CFLOW_H

#include "cnf/flow.h"
#include "cnf/mlp.h"
#include "cnf/solver.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_TRACE_EXACT = 0,           /* "exact" */
    CNF_TRACE_HUTCH_GAUSS = 1,     /* "hutchinson-gauss" */
    CNF_TRACE_HUTCH_RADEMACHER = 2 /* "hutchinson-rademacher" */
} cnf_trace;

typedef enum {
    CNF_GRAD_BACKPROP = 0, /* "backprop" */
    CNF_GRAD_ADJOINT = 1,  /* "adjoint" */
    CNF_GRAD_BACKSOLVE = 2 /* "backsolve" */
} cnf_grad_mode;

CNF_API int cnf_trace_from_name(const char *name, cnf_trace *out);
CNF_API const char *cnf_trace_name(cnf_trace t);
CNF_API int cnf_grad_mode_from_name(const char *name, cnf_grad_mode *out);
CNF_API const char *cnf_grad_mode_name(cnf_grad_mode g);

/* A solver choice: the method and its options (steps for fixed-step methods, rtol/atol …). */
typedef struct cnf_solve_config {
    const cnf_stepper_type *stepper;
    cnf_ode_options opt;
} cnf_solve_config;

typedef struct cnf_cflow_config {
    /* Architecture: fixed at creation. */
    size_t dim;           /* data dimension d ≥ 1 */
    size_t n_hidden;      /* hidden layers of each block's MLP */
    const size_t *hidden; /* (n_hidden) widths; copied */
    cnf_act act;
    cnf_time_mode time;
    size_t blocks;        /* stacked CNF blocks ≥ 1 */
    double T;             /* end time > 0 (initial value when train_T) */
    int train_T;          /* train T as s², s the last parameter */
    /* Settings: may be changed between calls through cnf_cflow_settings(). */
    cnf_trace trace;      /* divergence for training (nll_grad) */
    size_t probes;        /* Hutchinson probes per sample ≥ 1 */
    cnf_trace eval_trace; /* divergence for log_prob and sample (default exact) */
    double reg_kinetic;   /* λ_K ≥ 0 */
    double reg_jacobian;  /* λ_J ≥ 0 */
    cnf_grad_mode grad;
    cnf_solve_config train; /* solver for nll_grad (FFJORD's --solver/--atol/--rtol) */
    cnf_solve_config eval;  /* solver for log_prob/sample (FFJORD's --test_solver …) */
    size_t checkpoint_steps; /* CVODES adjoint: steps between checkpoints (default 50) */
    cnf_precision precision; /* the MLP's layer products (cnf/mlp.h); fixed at creation */
} cnf_cflow_config;

/* FFJORD's toy defaults for dimension d: 64-64-64 tanh concatsquash, one block, T = 1, exact
 * trace, no regularizers, adjoint gradients, Dopri5 with rtol = atol = 1e-5 for training and
 * evaluation. hidden points to a static array. */
CNF_API void cnf_cflow_config_default(cnf_cflow_config *cfg, size_t dim);

/* Build a CNF with parameters initialised from rng (cnf_mlp_init per block). Errors: CNF_EINVAL
 * naming the bad field; *out is NULL on failure. */
CNF_API int cnf_cflow_create(cnf_flow **out, const cnf_cflow_config *cfg, cnf_rng *rng);

/* A velocity field of the user's own, for neural-ODE users and for checks with known answers:
 * v(t, x; θ) with forward-mode tangents and the reverse kernel, the same contract as cnf_mlp_jvp
 * and cnf_mlp_backward (the MLP is one implementation of it). work is the field's own per-call
 * workspace: jvp fills it and backward reads it. θ is the block's slice of the flow's parameters. */
typedef struct cnf_field_ops {
    size_t n_params; /* parameters per block */
    int (*work_create)(void *ctx, size_t n_max, size_t k_max, void **work);
    void (*work_free)(void *work);
    /* F (n, ldf) = v(t, X); JU (K, n, d) = J u_k, with U = NULL and K = d meaning unit vectors. */
    int (*jvp)(void *ctx, const double *theta, double t, const double *X, size_t ldx, size_t n,
               const double *U, size_t K, double *F, size_t ldf, double *JU, void *work);
    /* Accumulate ∇ₓ, ∇_θ, ∂/∂t of Σ R·F + Σ S_k·J u_k (any output may be NULL). */
    int (*backward)(void *ctx, const double *theta, const double *R, size_t ldr, const double *S,
                    double *GX, size_t ldgx, double *gtheta, double *gt, void *work);
} cnf_field_ops;

/* A CNF driven by a user field: cfg's architecture fields (n_hidden, hidden, act, time) are
 * ignored; ops and ctx must outlive the flow. Parameters start at zero (set them through
 * cnf_flow_params). */
CNF_API int cnf_cflow_create_field(cnf_flow **out, const cnf_cflow_config *cfg,
                                   const cnf_field_ops *ops, void *ctx);

/* The CNF's configuration. The settings fields (trace … checkpoint_steps) may be changed in
 * place between calls; changing the architecture fields has no effect. NULL if f is not a CNF. */
CNF_API cnf_cflow_config *cnf_cflow_settings(cnf_flow *f);
/* The MLP shared by all blocks (block b's parameters start at b·cnf_mlp_n_params(mlp)); NULL
 * for a user field. */
CNF_API const cnf_mlp *cnf_cflow_mlp(const cnf_flow *f);
/* The current end time T. */
CNF_API double cnf_cflow_end_time(const cnf_flow *f);

#ifdef __cplusplus
}
#endif
#endif
