/* Flow options shared by `cnf train` and `cnf gradcheck` (flowopts.c). */
#ifndef CNF_CLI_FLOWOPTS_H
#define CNF_CLI_FLOWOPTS_H

#include "cnf.h"
#include "opts.h"

typedef struct flow_opts {
    const char *model, *hidden, *act, *time;
    size_t blocks;
    double T;
    int train_T;
    const char *solver;
    double atol, rtol;
    size_t steps;
    const char *test_solver;
    double test_atol, test_rtol;
    size_t test_steps;
    const char *trace;
    size_t probes;
    const char *grad;
    double reg_kinetic, reg_jacobian;
    /* Discrete flows (--model planar … nsf). */
    size_t layers, bins;
    double bound;
    int batchnorm;
    const char *precision; /* cnf: "double" or "mixed" */
} flow_opts;

enum { FLOW_OPTS_MAX = 32 };

void flow_opts_default(flow_opts *o);
/* Fill t (room for FLOW_OPTS_MAX) with the option table bound to o; returns the count. */
size_t flow_opts_table(flow_opts *o, cli_opt *t);
/* The CNF configuration the options describe, for data of dimension dim; *hidden is allocated
 * (free it after use). 0, or 2 after a usage message. */
int flow_opts_config(const char *cmd, const flow_opts *o, size_t dim, cnf_cflow_config *cfg,
                     size_t **hidden);
/* Is the --model a continuous flow? */
int flow_opts_is_cnf(const flow_opts *o);
/* Build the flow (parameters initialised from rng). 0, or 2 after a message. */
int flow_opts_build(const char *cmd, const flow_opts *o, size_t dim, cnf_rng *rng,
                    cnf_flow **out);

#endif
