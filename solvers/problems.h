/* Test problems with known answers for the ODE solvers (DESIGN.md §3), shared by `cnf solvers`
 * and tests/test_solvers.c so each formula is written once. Private: compiled into the library
 * (hidden) for the tests and into the CLI. */
#ifndef CNF_PROBLEMS_H
#define CNF_PROBLEMS_H

#include "cnf/solver.h"

typedef struct cnf_problem {
    const char *name;
    const char *help;       /* one line for `cnf solvers --help` */
    size_t dim;             /* state length */
    size_t block;           /* components per sample (for the block norm) */
    double t0, t1;
    cnf_ode_rhs f;          /* ctx unused (NULL) */
    void (*initial)(double *y0 /* (dim) */);
    /* y(t1): the closed form, or for robertson a reference computed with dopri5 at
     * rtol 1e-12, atol 1e-16 (cnf_problem_reference's return code). */
    int (*reference)(double *y1 /* (dim) */);
    /* Error of y against ref: the max abs error over x (every component but log p), and the
     * max abs error in log p (gaussian only; 0 otherwise). */
    void (*errors)(const double *y, const double *ref, double *err_x, double *err_logp);
} cnf_problem;

size_t cnf_problem_count(void);
const cnf_problem *cnf_problem_at(size_t i);
/* NULL if unknown. */
const cnf_problem *cnf_problem_find(const char *name);

/* Max(err_x, err_logp) of a final state: the figure `cnf solvers` reports. */
double cnf_problem_error(const cnf_problem *p, const double *y, const double *ref);

#endif
