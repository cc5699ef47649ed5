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

#endif
