/* Private definition of the stepper type table (GSL's gsl_odeiv2_step_type) and the pieces the
 * driver (solver.c), the explicit RK engine (erk.c) and the CVODES wrapper (cvode.c) share. */
#ifndef CNF_SOLVERS_STEPPER_H
#define CNF_SOLVERS_STEPPER_H

#include "cnf/solver.h"
#include "internal.h"

/* The system being integrated, with the driver's own RHS counter and the caller's parallel loop
 * for state-sized work (NULL: on the calling thread; see cnf_ode_solve_par). */
typedef struct cnf_sys {
    cnf_ode_rhs f;
    void *ctx;
    size_t dim;
    size_t nfe;
    cnf_par_for par;
    void *par_ctx;
} cnf_sys;

/* fn over the state's values [0, dim). */
static inline void cnf_sys_par(cnf_sys *sys, void (*fn)(void *, size_t, size_t), void *arg)
{
    if (sys->par)
        sys->par(sys->par_ctx, sys->dim, fn, arg);
    else
        fn(arg, 0, sys->dim);
}

/* One counted RHS evaluation. */
static inline int cnf_sys_eval(cnf_sys *sys, double t, const double *y, double *dy)
{
    sys->nfe++;
    return sys->f(t, y, dy, sys->ctx);
}

struct cnf_stepper_type {
    const char *name;
    unsigned order;          /* order of the propagated solution */
    unsigned err_order;      /* order of the embedded solution (0: no error estimate) */
    int adaptive;
    const cnf_rk_tableau *tableau; /* NULL for CVODES */
    int lmm;                 /* CVODES: CV_ADAMS or CV_BDF; 0 otherwise */

    /* Workspace for states of length dim; NULL on allocation failure. */
    void *(*alloc)(const cnf_stepper_type *T, size_t dim);
    /* One step from (t, y) to y_out = y(t + h). dydt_in: f(t, y) if already known (else NULL);
     * dydt_out: if non-NULL, filled with f(t + h, y_out) (free for FSAL tables); yerr: if
     * non-NULL, the embedded error estimate. Returns 0 or the RHS's non-zero code. */
    int (*apply)(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t, double h,
                 const double *y, double *y_out, double *yerr, const double *dydt_in,
                 double *dydt_out);
    void (*reset)(void *state);
    void (*free)(void *state);

    /* Whole-interval integration for methods that own their step control (CVODES); NULL for
     * the RK tables, which the driver steps itself. Same contract as cnf_ode_solve. */
    int (*integrate)(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t0, double t1,
                     double *y, const cnf_ode_options *opt, cnf_ode_observer observer,
                     void *observer_ctx, cnf_ode_stats *stats);
};

/* The generic explicit RK engine (erk.c), shared by every tableau method. */
void *cnf_erk_alloc(const cnf_stepper_type *T, size_t dim);
int cnf_erk_apply(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t, double h,
                  const double *y, double *y_out, double *yerr, const double *dydt_in,
                  double *dydt_out);
void cnf_erk_reset(void *state);
void cnf_erk_free(void *state);
/* The argument Y_i = y + h Σ_{j<i} a_ij k_j of stage i (0-based, 1 ≤ i < stages) of the engine's
 * last step, valid until its next step; NULL for stage 0 (y itself) and an FSAL table's last
 * stage (the step's result). */
const double *cnf_erk_stage_arg(const void *state, const cnf_stepper_type *T, size_t i);
/* The same through a solver of an explicit RK method (solver.c); NULL for other methods. */
const double *cnf_ode_solver_stage_arg(const cnf_ode_solver *s, size_t i);
/* The tableau of a solver's method; NULL for CVODES. */
const cnf_rk_tableau *cnf_ode_solver_tableau(const cnf_ode_solver *s);

/* CVODES (cvode.c). */
void *cnf_cvode_alloc(const cnf_stepper_type *T, size_t dim);
void cnf_cvode_free(void *state);
int cnf_cvode_integrate(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t0,
                        double t1, double *y, const cnf_ode_options *opt,
                        cnf_ode_observer observer, void *observer_ctx, cnf_ode_stats *stats);

/* Options with every 0 ("default") replaced by its value and checked against dim; options.c. */
int cnf_ode_options_resolve(cnf_ode_options *out, const cnf_ode_options *opt,
                            const cnf_stepper_type *T, size_t dim, double t0, double t1);

/* Error norm of err (dim) with weights 1 / (atol + rtol·max(|y_old|, |y_new|)) per opt's norm
 * and blocks; options.c. */
double cnf_ode_error_norm(const cnf_ode_options *opt, size_t dim, const double *err,
                          const double *y_old, const double *y_new);

/* A table entry for an explicit RK method named NAME with tableau TAB. */
#define CNF_ERK_TYPE(NAME, ORDER, ERR_ORDER, TAB)                                              \
    {                                                                                          \
        .name = NAME, .order = ORDER, .err_order = ERR_ORDER, .adaptive = (ERR_ORDER) > 0,     \
        .tableau = &(TAB), .alloc = cnf_erk_alloc, .apply = cnf_erk_apply,                     \
        .reset = cnf_erk_reset, .free = cnf_erk_free                                           \
    }

#endif
