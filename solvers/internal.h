/* Private entry points of the solver layer (solvers/) for the layers above it; not installed.
 * The steppers' own table and engines are in stepper.h. */
#ifndef CNF_SOLVERS_INTERNAL_H
#define CNF_SOLVERS_INTERNAL_H

#include "cnf/solver.h"
#include "core/internal.h"

/* cnf_ode_solve with the explicit RK engine's state-sized loops (the stage combinations) run by
 * par (NULL: on the caller); the same bits either way. For src/flows/cflow.c's large states. */
int cnf_ode_solve_par(cnf_ode_solver *s, cnf_ode_rhs f, void *ctx, double t0, double t1,
                      double *y, const cnf_ode_options *opt, cnf_ode_observer observer,
                      void *observer_ctx, cnf_ode_stats *stats, cnf_par_for par, void *par_ctx);

/* Reverse mode through explicit RK steps (erk_reverse.c). A tape holds a solve's accepted steps:
 * t_n, h_n and y_n (len of them; t, h (len), y (len, dim)), and with keep_stages the arguments
 * of the stages 2..s' that feed each step's result (ys, (len, stages, dim)), copied from the
 * engine as the step is accepted. Record by passing cnf_rk_tape_record and the tape as the
 * solve's observer after cnf_rk_tape_begin with the solver that will run it (keep_stages needs
 * an explicit RK method). A tape's buffers are reused by the next begin; cnf_rk_tape_free
 * releases them (a zeroed tape is empty). */
typedef struct cnf_rk_tape {
    size_t dim, len, cap;
    double *t, *h, *y;
    size_t stages;
    double *ys;
    const cnf_ode_solver *solver;
    const cnf_rk_tableau *tab; /* NULL: stages not kept */
} cnf_rk_tape;

int cnf_rk_tape_begin(cnf_rk_tape *tp, const cnf_ode_solver *s, size_t dim, int keep_stages);
int cnf_rk_tape_record(double t, double h, const double *y_old, const double *y_new, void *tape);
void cnf_rk_tape_free(cnf_rk_tape *tp);

/* The right-hand side's vector-Jacobian product at one stage: gy += wᵀ ∂f/∂y (t, y) (the
 * caller accumulates its parameters' gradients itself). 0 or a negative CNF_E* code. */
typedef int (*cnf_rk_vjp)(void *ctx, double t, const double *y, const double *w, double *gy);

/* Doubles of scratch a reverse step of tab on states of length dim needs. */
size_t cnf_rk_reverse_work_len(const cnf_rk_tableau *tab, size_t dim);

/* Reverse one step of tab from (t, y_n) of size h, with ys the arguments of stages 2..s' (as a
 * tape keeps them): lam holds ∂L/∂y_{n+1} on entry and ∂L/∂y_n on return. work:
 * cnf_rk_reverse_work_len values whose last dim must be zero on entry (they are left zero). The
 * state-sized loops run through par (NULL: on the caller), with the same bits either way. */
int cnf_rk_reverse_step(const cnf_rk_tableau *tab, double t, double h, const double *yn,
                        const double *ys, size_t dim, double *lam, double *work, cnf_rk_vjp vjp,
                        void *ctx, cnf_par_for par, void *par_ctx);

/* Every step of a tape recorded with its stages, last first (work as above, any contents). */
int cnf_rk_tape_reverse(const cnf_rk_tape *tp, double *lam, double *work, cnf_rk_vjp vjp,
                        void *ctx, cnf_par_for par, void *par_ctx);

#endif
