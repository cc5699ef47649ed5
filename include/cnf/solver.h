/* ODE solvers behind one stepper interface (DESIGN.md §1), modelled on GSL's odeiv2.
 *
 * A system is y' = f(t, y) with y of length dim, given as a callback
 *     int f(double t, const double *y, double *dy, void *ctx)
 * returning 0 (ok), > 0 (recoverable: an adaptive method retries with a smaller step; a fixed-step
 * method fails with CNF_ERHS) or < 0 (fatal: CNF_ERHS). Each method is a const type table; one
 * driver, cnf_ode_solve, integrates from t0 to t1 (t1 < t0 allowed: reverse time) with a fixed
 * number of steps or with rtol/atol, counting every RHS evaluation itself. On failure the state
 * y holds the last accepted state (the one before the failing step) and stats say how far it got. */
#ifndef CNF_SOLVER_H
#define CNF_SOLVER_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*cnf_ode_rhs)(double t, const double *y, double *dy, void *ctx);

/* Optionally, the product of the system's Jacobian with a vector, Jv = (∂f/∂y)(t, y)·v, same
 * ctx and the same 0 / > 0 / < 0 contract as f. Given in cnf_ode_options.jvp; only cvode-bdf
 * uses it (for the J·v products of its Newton–Krylov iteration, instead of difference quotients
 * of f); the other methods ignore it. */
typedef int (*cnf_ode_jvp)(double t, const double *y, const double *v, double *Jv, void *ctx);

/* Butcher tableau of an explicit Runge–Kutta method: a is (stages × stages) row-major, strictly
 * lower triangular; b the weights of the propagated solution; e = b − b̂ the error weights (NULL
 * for methods without an embedded pair); c the nodes. fsal: the last stage equals f(t+h, y_{n+1}).
 * Gradient code (backprop through the solver) reads this table. */
typedef struct cnf_rk_tableau {
    size_t stages;
    const double *a, *b, *e, *c;
    int fsal;
} cnf_rk_tableau;

typedef struct cnf_stepper_type cnf_stepper_type; /* defined privately in solvers/stepper.h */

/* The methods. Names as used by the API and the CLI: "euler", "midpoint", "rk4" (fixed step);
 * "bosh3", "dopri5", "tsit5" (adaptive embedded pairs, PI control); "cvode-adams", "cvode-bdf"
 * (SUNDIALS CVODES: Adams with fixed-point iteration; BDF with matrix-free SPGMR Newton–Krylov). */
CNF_API extern const cnf_stepper_type *const cnf_stepper_euler;
CNF_API extern const cnf_stepper_type *const cnf_stepper_midpoint;
CNF_API extern const cnf_stepper_type *const cnf_stepper_rk4;
CNF_API extern const cnf_stepper_type *const cnf_stepper_bosh3;
CNF_API extern const cnf_stepper_type *const cnf_stepper_dopri5;
CNF_API extern const cnf_stepper_type *const cnf_stepper_tsit5;
CNF_API extern const cnf_stepper_type *const cnf_stepper_cvode_adams;
CNF_API extern const cnf_stepper_type *const cnf_stepper_cvode_bdf;

/* Lookup by name; CNF_ENAME (with the list of valid names in cnf_errmsg) if unknown. */
CNF_API int cnf_stepper_from_name(const char *name, const cnf_stepper_type **out);
/* All methods in a fixed order, for listings: i < cnf_stepper_count(). */
CNF_API size_t cnf_stepper_count(void);
CNF_API const cnf_stepper_type *cnf_stepper_at(size_t i);
CNF_API const char *cnf_stepper_name(const cnf_stepper_type *T);
CNF_API unsigned cnf_stepper_order(const cnf_stepper_type *T);
CNF_API int cnf_stepper_is_adaptive(const cnf_stepper_type *T);
CNF_API int cnf_stepper_is_cvodes(const cnf_stepper_type *T);
/* The tableau of an explicit RK method; NULL for CVODES. */
CNF_API const cnf_rk_tableau *cnf_stepper_tableau(const cnf_stepper_type *T);

typedef enum {
    CNF_NORM_RMS = 0,       /* weighted RMS over every controlled component */
    CNF_NORM_MAX_BLOCK = 1, /* max over blocks of the weighted RMS within each block */
} cnf_norm;

/* Integration settings; start from cnf_ode_options_default(). The error weight of component i
 * is 1 / (atol + rtol·max(|y_old_i|, |y_new_i|)). With block > 0 the state is a sequence of
 * blocks of `block` components (e.g. one per sample) of which only the first `block_ctrl`
 * (0 = all) are under error control; the rest (e.g. regularizer integrals) are integrated but
 * never shrink the step. CVODES measures with weights 1/(atol + rtol·|y_i|) at the step start
 * and a whole-vector RMS: CNF_NORM_RMS is reproduced exactly, CNF_NORM_MAX_BLOCK is bounded from
 * above by sqrt(Σ_blocks rms²) (never looser, at most sqrt(#blocks) tighter). cvode-bdf gives
 * the uncontrolled components 1e-6 times their weight (taken at |y_i| ≥ 1) instead of 0, because
 * its Krylov solver scales by the weights and needs them positive (with zero weights its Newton
 * iteration fails and it rejects many steps): they count in its error test only if their error
 * exceeds about 1e6 times the tolerance. */
typedef struct cnf_ode_options {
    size_t steps;      /* fixed-step methods: number of equal steps over [t0, t1] (≥ 1) */
    double rtol, atol; /* adaptive methods (≥ 0, not both 0) */
    double h0;         /* first step size; 0 = chosen automatically (Hairer–Wanner II.4) */
    double hmin;       /* smallest |h| before CNF_ESTEP_UNDERFLOW (0 = 1e-14·|t1 − t0|) */
    double hmax;       /* largest |h| (0 = |t1 − t0|) */
    size_t max_steps;  /* accepted + rejected steps before CNF_EMAX_STEPS (0 = 100000; for
                          fixed-step methods 0 = no limit, else steps > max_steps fails) */
    double safety;     /* step-size safety factor (0 = 0.9) */
    cnf_norm norm;
    size_t block, block_ctrl;
    cnf_ode_jvp jvp;   /* optional exact J·v of f (NULL: cvode-bdf uses difference quotients) */
} cnf_ode_options;

CNF_API void cnf_ode_options_default(cnf_ode_options *opt);

typedef struct cnf_ode_stats {
    size_t nfe;      /* right-hand-side evaluations, counted by the driver */
    size_t accepted; /* accepted steps */
    size_t rejected; /* rejected steps (error test or recoverable RHS failure) */
    double h_last;   /* size of the last accepted step (signed) */
    double t_reached;/* time of the state left in y */
    size_t njvp;     /* calls of opt->jvp (or of the adjoint's gj), not counted in nfe */
} cnf_ode_stats;

/* Called after every accepted step from (t, y_old) to (t + h, y_new); a non-zero return stops
 * the solve with that code. For CVODES it is called once per internal step. */
typedef int (*cnf_ode_observer)(double t, double h, const double *y_old, const double *y_new,
                                void *ctx);

typedef struct cnf_ode_solver cnf_ode_solver;

/* A solver object holds the method's workspace for states of length dim, reused across solves.
 * Caller owns it; cnf_ode_solver_free accepts NULL. */
CNF_API int cnf_ode_solver_create(cnf_ode_solver **out, const cnf_stepper_type *T, size_t dim);
CNF_API void cnf_ode_solver_free(cnf_ode_solver *s);

/* Integrate y from t0 to t1 in place. observer may be NULL; stats may be NULL.
 * Errors: CNF_EINVAL (bad options), CNF_ESTEP_UNDERFLOW, CNF_EMAX_STEPS, CNF_ENONFINITE (the
 * state or the error estimate became NaN/Inf), CNF_ERHS (fatal RHS return, or any non-zero RHS
 * return for fixed-step methods), CNF_ESOLVER (other CVODES failures). */
CNF_API int cnf_ode_solve(cnf_ode_solver *s, cnf_ode_rhs f, void *ctx, double t0, double t1,
                          double *y /* (dim) */, const cnf_ode_options *opt,
                          cnf_ode_observer observer, void *observer_ctx, cnf_ode_stats *stats);

/* ---- Checkpointed adjoint with CVODES (CVodeAdjInit, CV_HERMITE) ----------------------------
 * For a loss L(y(t1)) the backward system is  λ' = g(t, y, λ)  from t1 to t0, with the parameter
 * quadrature q' = gq(t, y, λ), q(t1) = 0. The forward trajectory y(t) comes from CVODES's
 * checkpoints and Hermite interpolation, never from integrating y backwards.
 * Usage: cnf_cvodes_adj_create; cnf_cvodes_adj_forward (y(t0) → y(t1)); the caller forms
 * λ(t1) = ∂L/∂y(t1); cnf_cvodes_adj_backward (λ(t1) → λ(t0), q(t0)). With g = −(∂f/∂y)ᵀλ and
 * gq = −(∂f/∂θ)ᵀλ, CVODES's sign convention makes q(t0) = +dL/dθ and λ(t0) = dL/dy(t0). */
typedef int (*cnf_ode_rhs_b)(double t, const double *y, const double *lam, double *out, void *ctx);
/* Optionally, Jv = (∂g/∂λ)(t, y, λ)·v for cvode-bdf's backward Newton–Krylov iteration. For the
 * adjoint g = −(∂f/∂y)ᵀλ, linear in λ, this is g(t, y, v) itself. */
typedef int (*cnf_ode_jvp_b)(double t, const double *y, const double *lam, const double *v,
                             double *Jv, void *ctx);

typedef struct cnf_cvodes_adj cnf_cvodes_adj;

/* T must be cnf_stepper_cvode_adams or cnf_stepper_cvode_bdf; steps_per_checkpoint ≥ 1. */
CNF_API int cnf_cvodes_adj_create(cnf_cvodes_adj **out, const cnf_stepper_type *T, size_t dim,
                                  size_t dim_b, size_t dim_q, size_t steps_per_checkpoint);
CNF_API void cnf_cvodes_adj_free(cnf_cvodes_adj *a);
CNF_API int cnf_cvodes_adj_forward(cnf_cvodes_adj *a, cnf_ode_rhs f, void *ctx, double t0,
                                   double t1, double *y, const cnf_ode_options *opt,
                                   cnf_ode_stats *stats);
/* lam: in λ(t1), out λ(t0); q: out q(t0). The backward pass uses opt's rtol and atol for λ (a
 * whole-vector weighted RMS; opt's blocks, norm and jvp apply to the forward pass only) and the
 * same rtol and atol for q, which is under error control as well (CVodeQuadSStolerancesB,
 * CVodeSetQuadErrConB): dL/dθ is as accurate as the tolerances ask, not only as accurate as the
 * steps λ needs. gj (may be NULL: difference quotients) is cvode-bdf's backward J·v. stats
 * counts backward RHS calls (g and gq each count as one) plus the forward re-runs CVODES makes
 * between checkpoints, and gj's calls (and opt->jvp's in those re-runs) in njvp. */
CNF_API int cnf_cvodes_adj_backward(cnf_cvodes_adj *a, cnf_ode_rhs_b g, cnf_ode_rhs_b gq,
                                    cnf_ode_jvp_b gj, void *ctx, double *lam /* (dim_b) */,
                                    double *q /* (dim_q) */, const cnf_ode_options *opt,
                                    cnf_ode_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
