/* The options that describe a flow and its solvers, shared by `cnf train` and `cnf gradcheck`
 * (same names and values in both), and the CNF they build. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "flowopts.h"

void flow_opts_default(flow_opts *o)
{
    memset(o, 0, sizeof *o);
    o->model = "cnf";
    o->hidden = "64-64-64";
    o->act = "tanh";
    o->time = "concatsquash";
    o->blocks = 1;
    o->T = 0.5; /* FFJORD train_toy.py: --time_length 0.5 with --train_T True */
    o->train_T = 1;
    o->solver = "dopri5";
    o->atol = o->rtol = 1e-5;
    o->steps = 20;
    o->trace = "exact";
    o->probes = 1;
    o->grad = "adjoint";
    o->layers = 8;
    o->bins = 8;
    o->bound = 4.0;
    o->precision = "double";
}

int flow_opts_is_cnf(const flow_opts *o) { return !strcmp(o->model, "cnf"); }

size_t flow_opts_table(flow_opts *o, cli_opt *t)
{
    const cli_opt opts[] = {
        {"--model", OPT_STR, &o->model, "KIND",
         "flow kind: cnf (continuous), or the discrete baselines planar, radial, nice, realnvp, "
         "glow, maf, iaf, nsf",
         1},
        {"--hidden", OPT_STR, &o->hidden, "W1-W2-...", "hidden widths of each block's MLP", 1},
        {"--act", OPT_STR, &o->act, "NAME", "activation: tanh, softplus, elu, swish", 1},
        {"--time", OPT_STR, &o->time, "MODE", "time input: none, concat, concatsquash", 1},
        {"--blocks", OPT_SIZE, &o->blocks, "N", "stacked CNF blocks", 1},
        {"--T", OPT_DOUBLE, &o->T, "T", "integration end time (initial value with --train-T)", 1},
        {"--train-T", OPT_FLAG, &o->train_T, NULL,
         "train the end time T = s^2 (cnf train: on by default, as FFJORD's toy runs; --train-T=0 "
         "fixes T)",
         1},
        {"--solver", OPT_STR, &o->solver, "NAME",
         "training ODE solver: euler, midpoint, rk4, bosh3, dopri5, tsit5, cvode-adams, cvode-bdf",
         1},
        {"--atol", OPT_DOUBLE, &o->atol, "A", "absolute tolerance (adaptive solvers)", 1},
        {"--rtol", OPT_DOUBLE, &o->rtol, "R", "relative tolerance (adaptive solvers)", 1},
        {"--steps", OPT_SIZE, &o->steps, "N", "steps over [0, T] (fixed-step solvers)", 1},
        {"--test-solver", OPT_STR, &o->test_solver, "NAME",
         "solver for evaluation and sampling (default: --solver)", 1},
        {"--test-atol", OPT_DOUBLE, &o->test_atol, "A", "evaluation atol (0: --atol)", 1},
        {"--test-rtol", OPT_DOUBLE, &o->test_rtol, "R", "evaluation rtol (0: --rtol)", 1},
        {"--test-steps", OPT_SIZE, &o->test_steps, "N", "evaluation steps (0: --steps)", 1},
        {"--trace", OPT_STR, &o->trace, "NAME",
         "divergence in training: exact, hutchinson-gauss, hutchinson-rademacher", 1},
        {"--probes", OPT_SIZE, &o->probes, "K", "Hutchinson probes per sample", 1},
        {"--grad", OPT_STR, &o->grad, "MODE",
         "gradient: adjoint (checkpointed), backprop (through the RK steps), backsolve "
         "(torchdiffeq's; inaccurate for contracting flows)",
         1},
        {"--reg-kinetic", OPT_DOUBLE, &o->reg_kinetic, "W", "weight of the kinetic energy (RNODE)",
         1},
        {"--reg-jacobian", OPT_DOUBLE, &o->reg_jacobian, "W",
         "weight of the Jacobian Frobenius norm (RNODE)", 1},
        {"--layers", OPT_SIZE, &o->layers, "N", "discrete flows: number of flow steps", 1},
        {"--bins", OPT_SIZE, &o->bins, "K", "nsf: spline bins", 1},
        {"--bound", OPT_DOUBLE, &o->bound, "B", "nsf: splines on [-B, B], linear tails outside",
         1},
        {"--batchnorm", OPT_FLAG, &o->batchnorm, NULL,
         "realnvp, maf: batch-norm layers between steps", 1},
        {"--precision", OPT_STR, &o->precision, "P",
         "cnf: double, or mixed (layer products and tanh in float32, state and sums in "
         "double)",
         1},
    };
    size_t n = sizeof opts / sizeof *opts;
    if (t)
        memcpy(t, opts, sizeof opts);
    return n;
}

static int solve_config(const char *cmd, const char *name, double atol, double rtol,
                        size_t steps, cnf_solve_config *sc)
{
    int rc = cnf_stepper_from_name(name, &sc->stepper);
    if (rc) {
        fprintf(stderr, "cnf %s: %s\n", cmd, cnf_errmsg());
        return 2;
    }
    cnf_ode_options_default(&sc->opt);
    sc->opt.atol = atol;
    sc->opt.rtol = rtol;
    sc->opt.steps = steps;
    if (!(atol >= 0 && rtol >= 0 && atol + rtol > 0) || steps == 0) {
        fprintf(stderr, "cnf %s: tolerances must be >= 0 and not both 0, steps >= 1\n", cmd);
        return 2;
    }
    return 0;
}

int flow_opts_config(const char *cmd, const flow_opts *o, size_t dim, cnf_cflow_config *cfg,
                     size_t **hidden)
{
    *hidden = NULL;
    cnf_cflow_config_default(cfg, dim);
    /* FFJORD writes the widths with dashes: 64-64-64. */
    size_t nh = 0;
    char *copy = strdup(o->hidden);
    for (char *p = copy; copy && *p; p++)
        if (*p == '-')
            *p = ',';
    int bad = !copy || (*copy && cli_parse_sizes(cmd, "--hidden", copy, hidden, &nh));
    free(copy);
    if (bad)
        return 2;
    cfg->hidden = *hidden;
    cfg->n_hidden = nh;
    int rc = cnf_act_from_name(o->act, &cfg->act);
    if (!rc) rc = cnf_precision_from_name(o->precision, &cfg->precision);
    if (!rc) rc = cnf_time_mode_from_name(o->time, &cfg->time);
    if (!rc) rc = cnf_trace_from_name(o->trace, &cfg->trace);
    if (!rc) rc = cnf_grad_mode_from_name(o->grad, &cfg->grad);
    if (rc) {
        fprintf(stderr, "cnf %s: %s\n", cmd, cnf_errmsg());
        return 2;
    }
    cfg->blocks = o->blocks;
    cfg->T = o->T;
    cfg->train_T = o->train_T;
    cfg->probes = o->probes;
    cfg->reg_kinetic = o->reg_kinetic;
    cfg->reg_jacobian = o->reg_jacobian;
    if (solve_config(cmd, o->solver, o->atol, o->rtol, o->steps, &cfg->train) ||
        solve_config(cmd, o->test_solver && *o->test_solver ? o->test_solver : o->solver,
                     o->test_atol > 0 ? o->test_atol : o->atol,
                     o->test_rtol > 0 ? o->test_rtol : o->rtol,
                     o->test_steps ? o->test_steps : o->steps, &cfg->eval))
        return 2;
    return 0;
}

int flow_opts_build(const char *cmd, const flow_opts *o, size_t dim, cnf_rng *rng,
                    cnf_flow **out)
{
    cnf_cflow_config cfg;
    size_t *hidden;
    int u = flow_opts_config(cmd, o, dim, &cfg, &hidden);
    if (u) {
        free(hidden);
        return u;
    }
    int rc;
    if (flow_opts_is_cnf(o)) {
        rc = cnf_cflow_create(out, &cfg, rng);
    } else {
        cnf_dflow_config dc;
        cnf_dflow_config_default(&dc, o->model, dim);
        dc.layers = o->layers;
        dc.hidden = cfg.hidden;
        dc.n_hidden = cfg.n_hidden;
        dc.act = cfg.act;
        dc.bins = o->bins;
        dc.bound = o->bound;
        dc.batchnorm = o->batchnorm;
        rc = cnf_dflow_create(out, &dc, rng);
        if (rc == CNF_ENAME) {
            fprintf(stderr, "cnf %s: --model: %s (or cnf)\n", cmd, cnf_errmsg());
            free(hidden);
            return 2;
        }
    }
    free(hidden);
    if (rc) {
        cli_error(cmd, rc, "building the flow");
        return 2;
    }
    return 0;
}
