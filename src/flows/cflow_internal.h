/* Private: what the files of the continuous normalizing flow share (src/flows/cflow*.c).
 *
 * Continuous normalizing flow: the augmented ODE, log-density, sampling, and the three gradient
 * passes (see cnf/cflow.h for the math and DESIGN.md §2 for its derivation).
 *
 * State layout: one block of S = d + 3 numbers per sample, (x, ℓ, E, N), so the MLP reads x with
 * row stride S and the solver's max-over-blocks norm sees one sample per block; only x and ℓ are
 * under error control (block_ctrl = d + 1). Time is τ ∈ [0, 1]: g(τ, s) = T·[v, −D, ||v||², F̂]
 * evaluated at t = Tτ.
 *
 * The adjoint of the loss L w.r.t. the state, λ = (a, λ_ℓ, λ_E, λ_N) per sample, has constant
 * λ_ℓ, λ_E, λ_N (g does not depend on ℓ, E, N). Every backward pass needs the same vector-Jacobian
 * product of g, φ = λ·g, which is one call of the field's reverse kernel with seeds
 *     R = T (a + 2 λ_E v),   S_k = T (−λ_ℓ w u_k + (2 λ_N / K) J u_k),
 * w = 1 for the exact trace (u_k = e_k) and 1/K for Hutchinson; and ∂φ/∂T = φ/T + τ ∂φ/∂t. */
#ifndef CNF_SRC_FLOWS_CFLOW_INTERNAL_H
#define CNF_SRC_FLOWS_CFLOW_INTERNAL_H

#include "cnf/cflow.h"
#include "flow.h"
#include "core/internal.h"
#include "core/vmath.h"
#include "nn/internal.h"
#include "solvers/internal.h"

/* One evaluation of g with everything its VJP needs: the field's workspace and v, J u, D, F̂. */
typedef struct slot {
    void *work;
    double *F;  /* (n, d) v, unscaled */
    double *JU; /* (K, n, d) */
    double *D;  /* (n) divergence (estimate) */
    double *Fh; /* (n) Frobenius (estimate) */
    double *R, *S; /* (n, d), (K, n, d) seeds */
    double *phi;   /* (n) cflow_aug_vjp's per-sample part of φ */
} slot;


typedef struct cflow {
    cnf_flow base;
    cnf_cflow_config cfg;
    size_t *hidden;
    cnf_mlp *mlp; /* NULL for a user field */
    cnf_field_ops ops;
    void *field_ctx;
    size_t P; /* field parameters per block */
    /* Scratch sized for n_cap samples and k_cap tangents, grown on demand. */
    size_t n_cap, k_cap;
    slot slot;     /* every evaluation's (cflow_ensure_slot) */
    int have_slot;
    /* Each block's forward steps for the gradient (cnf_rk_tape), kept from call to call so that a
     * training loop reuses the pages instead of faulting them in again. */
    cnf_rk_tape *trs;
    size_t n_trs;
    /* The reverse passes' state-sized scratch (backprop's stage cotangents, the adjoint's
     * backward state), kept likewise (cflow_rev_scratch). */
    double *rev;
    size_t rev_cap;
    /* The solvers of the last forward (0) and adjoint (1) solves, with their workspaces, reused
     * while the method and the state's length stay the same (cflow_solver). */
    struct {
        cnf_ode_solver *s;
        const cnf_stepper_type *T;
        size_t dim;
    } solver[2];
} cflow;


/* What one solve integrates: block b, n samples, its divergence estimator and probes. */
typedef struct aug {
    cflow *c;
    size_t b, n;
    cnf_trace trace;
    size_t K;
    const double *U; /* (K, n, d) probes; NULL for the exact trace */
    double T;
    /* Backward passes: the constant adjoint components per sample (stride S) and, for the
     * built-in adjoint, the solve's own parameter count. */
    const double *lam;
    size_t nq;
    size_t nfe; /* field evaluations (forward or reverse) counted here */
} aug;


/* The CVODES adjoint's forward and backward passes run at this multiple of rtol and atol.
 * CVODES keeps the local error of the solution it propagates near the tolerance, while the
 * built-in pairs (Dopri5, Tsit5) propagate the higher-order solution of the pair and land far
 * below it: on a small CNF at rtol = atol = 1e-6, 1e-8 and 1e-10, cvode-adams's loss was
 * 1400, 1700 and 400 times further from the exact one than Dopri5's, and its gradient as much
 * less accurate. At 1e-3 × the tolerances its gradients are about as accurate as the built-in
 * adjoint's at the tolerances given. */
#define CFLOW_CVODES_ADJ_TOL_SCALE 1e-3

/* y = a x over n values (vectorized per width; no reduction, so the same bits). */
CNF_VECTOR_CLONES static inline void scale_to(double *restrict y, double a,
                                              const double *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = a * x[i];
}

/* cflow_field.c */
void cflow_slot_free(cflow *c, slot *s);
int cflow_ensure_slot(cflow *c, size_t n, size_t K);
double cflow_end_time(const cflow *c);
void cflow_hold_weights(cflow *c, int hold);
double *cflow_rev_scratch(cflow *c, size_t len, const char *what);
void cflow_split_rows(const aug *a, size_t values, size_t n, void (*fn)(void *, size_t, size_t),
                      void *ctx);
void cflow_state_par(void *ctx, size_t n, void (*fn)(void *, size_t, size_t), void *arg);
int cflow_aug_eval(aug *a, slot *s, double tau, const double *X, size_t ldx, int for_vjp);
void cflow_aug_store(const aug *a, const slot *s, double *dy);
int cflow_aug_vjp(aug *a, slot *s, double tau, const double *ax, size_t lda, const double *lam,
                  double sg, double *gx, size_t ldgx, double *gtheta, double *gT);
int cflow_aug_rhs(double tau, const double *y, double *dy, void *ctx);
int cflow_aug_jvp(double tau, const double *y, const double *w, double *Jw, void *ctx);

/* cflow_solve.c */
void cflow_add_stats(cnf_flow_stats *st, const cnf_ode_stats *os);
cnf_ode_options cflow_state_options(const cflow *c, const cnf_solve_config *sc);
int cflow_solver(cflow *c, int which, const cnf_stepper_type *T, size_t dim,
                 cnf_ode_solver **out);
int cflow_solve(const cnf_solve_config *sc, aug *a, size_t dim, double t0, double t1, double *y,
                const cnf_ode_options *opt, cnf_ode_observer obs, void *obs_ctx,
                cnf_ode_stats *os);
size_t cflow_n_tangents(const cflow *c, cnf_trace trace);
void cflow_draw_probes(cnf_trace trace, double *U, size_t m, cnf_rng *rng);
int cflow_encode(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                 cnf_flow_stats *st);
int cflow_decode(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                 cnf_flow_stats *st);

/* cflow_backprop.c */
int cflow_backprop_block(aug *a, const cnf_rk_tape *tp, double *lam, double *gtheta, double *gT);

/* cflow_adjoint.c */
int cflow_adjoint_block(aug *a, const cnf_rk_tape *tr, const double *y_end, double t_end,
                        double t_start, const cnf_solve_config *sc, int backsolve, double *lam,
                        double *gtheta, double *gT, size_t *nfe);
int cflow_cvodes_backward(aug *a, cnf_cvodes_adj *adj, const cnf_ode_options *opt, double *lam,
                          double *gtheta, double *gT, size_t *nfe);

/* cflow_grad.c */
int cflow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                   double *grad, double *gx, cnf_flow_stats *st);
int cflow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                   double *loss, double *grad, cnf_flow_stats *st);

/* cflow_io.c */
int cflow_describe(const cnf_flow *f, cnf_st_writer *w);
int cflow_read_config(const cnf_st_file *f, cnf_cflow_config *cfg, size_t *hidden);
int cflow_read_tensors(const cnf_st_file *f, cflow *c);

#endif
