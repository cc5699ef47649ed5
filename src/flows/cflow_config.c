/* The CNF's settings: the names of its trace estimators and gradient modes, and its defaults. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- names and defaults --------------------------------------------------------------------- */

static const char *const trace_names[] = {"exact", "hutchinson-gauss", "hutchinson-rademacher"};
static const char *const grad_names[] = {"backprop", "adjoint", "backsolve"};

static int name_lookup(const char *what, const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(name, names[i]))
            return i;
    cnf_fail(CNF_ENAME, "unknown %s '%s' (valid: %s, %s, %s)", what, name ? name : "(null)",
             names[0], names[1], names[2]);
    return -1;
}

int cnf_trace_from_name(const char *name, cnf_trace *out)
{
    int i = name_lookup("trace estimator", trace_names, 3, name);
    if (i < 0)
        return CNF_ENAME;
    *out = (cnf_trace)i;
    return CNF_OK;
}

const char *cnf_trace_name(cnf_trace t) { return (unsigned)t < 3 ? trace_names[t] : "invalid"; }

int cnf_grad_mode_from_name(const char *name, cnf_grad_mode *out)
{
    int i = name_lookup("gradient mode", grad_names, 3, name);
    if (i < 0)
        return CNF_ENAME;
    *out = (cnf_grad_mode)i;
    return CNF_OK;
}

const char *cnf_grad_mode_name(cnf_grad_mode g)
{
    return (unsigned)g < 3 ? grad_names[g] : "invalid";
}

void cnf_cflow_config_default(cnf_cflow_config *cfg, size_t dim)
{
    static const size_t toy_hidden[] = {64, 64, 64};
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = dim;
    cfg->n_hidden = 3;
    cfg->hidden = toy_hidden;
    cfg->act = CNF_ACT_TANH;
    cfg->time = CNF_TIME_CONCATSQUASH;
    cfg->blocks = 1;
    cfg->T = 1.0;
    cfg->trace = CNF_TRACE_EXACT;
    cfg->probes = 1;
    cfg->eval_trace = CNF_TRACE_EXACT;
    cfg->grad = CNF_GRAD_ADJOINT;
    cfg->train.stepper = cnf_stepper_dopri5;
    cnf_ode_options_default(&cfg->train.opt);
    cfg->train.opt.rtol = cfg->train.opt.atol = 1e-5;
    cfg->eval = cfg->train;
    cfg->checkpoint_steps = 50;
}
