/* `cnf solvers`: compare ODE methods on problems with known answers (issue 3). For each method
 * and each step count (fixed-step methods) or tolerance (adaptive methods, rtol = atol) it solves
 * the problem once and prints NFE, accepted/rejected steps, wall time and the error against the
 * exact answer; --json adds one JSON array as the last line of stdout. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "problems.h"
#include "cli.h"
#include "cnf.h"
#include "opts.h"

#define CMD "solvers"

static void help(FILE *out)
{
    fprintf(out,
            "usage: cnf solvers [--problem NAME | --model FILE --data NAME] [--methods LIST]\n"
            "                   [--steps LIST] [--tols LIST] [--atol A] [--json]\n\n"
            "Solve one problem with several ODE methods and compare their cost and error.\n"
            "Fixed-step methods run once per step count, adaptive ones once per tolerance.\n\n"
            "options:\n"
            "  --problem NAME  problem to solve (default linear), one of:\n");
    for (size_t i = 0; i < cnf_problem_count(); i++)
        fprintf(out, "                    %-9s %s\n", cnf_problem_at(i)->name,
                cnf_problem_at(i)->help);
    fprintf(out, "  --methods LIST  comma-separated methods (default: all), from:\n");
    for (size_t i = 0; i < cnf_stepper_count(); i++) {
        const cnf_stepper_type *T = cnf_stepper_at(i);
        fprintf(out, "                    %-12s order %u, %s\n", cnf_stepper_name(T),
                cnf_stepper_order(T),
                cnf_stepper_is_cvodes(T) ? "SUNDIALS CVODES, variable order (max shown)"
                : cnf_stepper_is_adaptive(T) ? "embedded pair, adaptive (PI control)"
                                             : "fixed step");
    }
    fprintf(out,
            "  --steps LIST    step counts for the fixed-step methods (default 16,32,64,128)\n"
            "  --tols LIST     tolerances for the adaptive methods, used as rtol = atol\n"
            "                  (default 1e-3,1e-6,1e-9)\n"
            "  --atol A        absolute tolerance for every adaptive run instead of atol = rtol\n"
            "                  (robertson's y2 stays below 4e-5: try --atol 1e-10)\n"
            "  --model FILE    instead of a problem, a trained 2-D flow (cnf train --out):\n"
            "                  its log p at -n points of --data drawn with --seed; error is the\n"
            "                  max |log p - reference|, the reference from dopri5 at 1e-12\n"
            "  --data NAME     toy data set for --model\n"
            "  -n N            points for --model (default 1000)\n"
            "  --seed S        seed of those points (default 0)\n"
            "  --json          after the table, print one JSON array on the last line of stdout:\n"
            "                  one object per run with keys method, steps (fixed-step) or rtol\n"
            "                  (adaptive; then also atol), nfe, accepted, rejected, seconds,\n"
            "                  error; gaussian adds\n"
            "                  error_x and error_logp; a failed run has error null and a status\n"
            "                  key naming the error\n"
            "  --help          print this help\n\n"
            "error: max abs error of the final state against the exact answer (robertson: a\n"
            "reference). nfe counts every right-hand-side call, as counted by cnf's driver;\n"
            "with --model it counts the flow's field evaluations, cvode-bdf's Jacobian-vector\n"
            "products (one tangent pass of the field each) included.\n"
            "A run that fails (e.g. too many steps) is reported in its row, not as an exit code.\n"
            "exit status: 0 ok, 1 setup failure, 2 bad options.\n");
}

typedef struct run_result {
    const cnf_stepper_type *T;
    size_t steps; /* 0 for adaptive runs */
    double tol, atol;
    int rc;
    cnf_ode_stats st;
    double seconds, error, err_x, err_logp;
} run_result;

static int solve_one(const cnf_problem *p, const double *ref, run_result *r)
{
    cnf_ode_solver *s;
    cnf_ode_options opt;
    double *y = calloc(p->dim, sizeof *y);
    int rc = y ? cnf_ode_solver_create(&s, r->T, p->dim) : CNF_ENOMEM;
    if (rc) {
        free(y);
        return rc;
    }
    cnf_ode_options_default(&opt);
    opt.steps = r->steps;
    opt.rtol = r->tol;
    opt.atol = r->atol;
    opt.block = p->block;
    p->initial(y);
    double t = cli_now();
    r->rc = cnf_ode_solve(s, p->f, NULL, p->t0, p->t1, y, &opt, NULL, NULL, &r->st);
    r->seconds = cli_now() - t;
    p->errors(y, ref, &r->err_x, &r->err_logp);
    r->error = cnf_problem_error(p, y, ref);
    cnf_ode_solver_free(s);
    free(y);
    return CNF_OK;
}

/* A trained flow as the problem: the error is the largest |log p − reference| over the points,
 * the reference being log p from Dopri5 at rtol = atol = 1e-12. */
typedef struct model_problem {
    cnf_flow *flow;
    double *X, *ref, *lp;
    size_t n;
} model_problem;

static int solve_model(model_problem *mp, run_result *r)
{
    cnf_cflow_config *s = cnf_cflow_settings(mp->flow);
    s->eval.stepper = r->T;
    cnf_ode_options_default(&s->eval.opt);
    s->eval.opt.steps = r->steps;
    s->eval.opt.rtol = r->tol;
    s->eval.opt.atol = r->atol;
    cnf_flow_stats st;
    double t = cli_now();
    r->rc = cnf_flow_log_prob(mp->flow, mp->X, mp->n, mp->lp, &st);
    r->seconds = cli_now() - t;
    r->st.nfe = st.nfe_forward;
    r->st.accepted = st.steps;
    r->st.rejected = st.rejected;
    r->error = 0;
    for (size_t i = 0; !r->rc && i < mp->n; i++)
        r->error = fmax(r->error, fabs(mp->lp[i] - mp->ref[i]));
    r->err_x = r->err_logp = r->error;
    return CNF_OK;
}

static int model_setup(model_problem *mp, const char *path, const char *data, size_t n,
                       unsigned long long seed)
{
    const cnf_toy_type *T;
    if (cnf_toy_from_name(data, &T)) {
        fprintf(stderr, "cnf solvers: --data: %s\n", cnf_errmsg());
        return 2;
    }
    int u = cli_check_count(CMD, "-n", n, 4 * sizeof(double)); /* X (n, 2), ref and lp */
    if (u)
        return u;
    int rc = cnf_model_load(path, &mp->flow, NULL);
    if (rc) {
        cli_error(CMD, rc, "loading --model");
        return 1;
    }
    if (!cnf_cflow_settings(mp->flow) || cnf_flow_dim(mp->flow) != 2) {
        fprintf(stderr, "cnf solvers: --model must be a 2-D continuous flow (kind cnf)\n");
        return 1;
    }
    mp->n = n;
    mp->X = malloc(cnf_size_mul(n, 2 * sizeof(double)));
    mp->ref = malloc(cnf_size_mul(n, sizeof(double)));
    mp->lp = malloc(cnf_size_mul(n, sizeof(double)));
    if (!mp->X || !mp->ref || !mp->lp) {
        fprintf(stderr, "cnf solvers: out of memory for -n %zu points\n", n);
        return 1;
    }
    cnf_rng r;
    cnf_rng_seed(&r, seed);
    cnf_toy_sample(T, n, mp->X, &r);
    run_result ref = {.T = cnf_stepper_dopri5, .tol = 1e-12, .atol = 1e-12};
    double *keep = mp->lp;
    mp->lp = mp->ref;
    solve_model(mp, &ref);
    mp->lp = keep;
    if (ref.rc) {
        cli_error(CMD, ref.rc, "computing the reference log-densities");
        return 1;
    }
    return 0;
}

static void model_free(model_problem *mp)
{
    cnf_flow_free(mp->flow);
    free(mp->X);
    free(mp->ref);
    free(mp->lp);
}

static void print_table(const cnf_problem *p, const run_result *r, size_t n)
{
    int logp = !strcmp(p->name, "gaussian");
    printf("problem %s: %s\n\n", p->name, p->help);
    printf("%-12s %10s %9s %9s %9s %11s %11s%s\n", "method", "steps/rtol", "nfe", "accepted",
           "rejected", "seconds", "error", logp ? "     error_x  error_logp" : "");
    for (size_t i = 0; i < n; i++) {
        char setting[32];
        if (r[i].steps)
            snprintf(setting, sizeof setting, "%zu", r[i].steps);
        else
            snprintf(setting, sizeof setting, "%.0e", r[i].tol);
        printf("%-12s %10s %9zu %9zu %9zu %11.3e ", cnf_stepper_name(r[i].T), setting,
               r[i].st.nfe, r[i].st.accepted, r[i].st.rejected, r[i].seconds);
        if (r[i].rc)
            printf("failed: %s at t = %g\n", cnf_strerror(r[i].rc), r[i].st.t_reached);
        else if (logp)
            printf("%11.3e %11.3e %11.3e\n", r[i].error, r[i].err_x, r[i].err_logp);
        else
            printf("%11.3e\n", r[i].error);
    }
}

static void print_json(const cnf_problem *p, const run_result *r, size_t n)
{
    int logp = !strcmp(p->name, "gaussian");
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        printf("%s{\"method\":", i ? "," : "");
        cli_json_string(stdout, cnf_stepper_name(r[i].T));
        if (r[i].steps) {
            printf(",\"steps\":%zu", r[i].steps);
        } else {
            printf(",\"rtol\":");
            cli_json_number(stdout, r[i].tol);
            printf(",\"atol\":");
            cli_json_number(stdout, r[i].atol);
        }
        printf(",\"nfe\":%zu,\"accepted\":%zu,\"rejected\":%zu,\"seconds\":", r[i].st.nfe,
               r[i].st.accepted, r[i].st.rejected);
        cli_json_number(stdout, r[i].seconds);
        printf(",\"error\":");
        cli_json_number(stdout, r[i].rc ? NAN : r[i].error);
        if (logp && !r[i].rc) {
            printf(",\"error_x\":");
            cli_json_number(stdout, r[i].err_x);
            printf(",\"error_logp\":");
            cli_json_number(stdout, r[i].err_logp);
        }
        if (r[i].rc) {
            printf(",\"status\":");
            cli_json_string(stdout, cnf_strerror(r[i].rc));
        }
        putchar('}');
    }
    printf("]\n");
}

static void list_names(FILE *out, int problems)
{
    size_t n = problems ? cnf_problem_count() : cnf_stepper_count();
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s%s", i ? ", " : "",
                problems ? cnf_problem_at(i)->name : cnf_stepper_name(cnf_stepper_at(i)));
}

int cmd_solvers(int argc, char **argv)
{
    const char *problem = "linear", *methods = NULL, *steps_arg = "16,32,64,128";
    const char *tols_arg = "1e-3,1e-6,1e-9", *atol_arg = NULL, *v;
    const char *model = NULL, *data = NULL, *n_arg = "1000", *seed_arg = "0";
    int json = 0, status = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        const char **dst = NULL, *name = NULL;
        static const char *const opts[] = {"--problem", "--methods", "--steps", "--tols",
                                           "--atol", "--model", "--data", "-n", "--seed"};
        const char **dsts[] = {&problem, &methods, &steps_arg, &tols_arg, &atol_arg,
                               &model, &data, &n_arg, &seed_arg};
        for (size_t k = 0; k < 9 && !dst; k++)
            if (cli_option_value(argc, argv, &i, opts[k], &v)) {
                dst = dsts[k];
                name = opts[k];
            }
        if (!dst) {
            fprintf(stderr, "cnf solvers: unknown option '%s' (cnf solvers --help lists them)\n",
                    a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "cnf solvers: %s needs a value\n", name);
            return 2;
        }
        *dst = v;
    }

    static const cnf_problem model_as_problem = {
        .name = "model", .help = "log p of a trained flow at toy-data points, error against "
                                 "Dopri5 at 1e-12"};
    model_problem mp = {0};
    if (model || data) {
        size_t *nn = NULL, n_nn = 0;
        char *end;
        unsigned long long seed = strtoull(seed_arg, &end, 10);
        if (!model || !data || cli_parse_sizes(CMD, "-n", n_arg, &nn, &n_nn) || n_nn != 1 ||
            *end || *seed_arg == '-') {
            if (!model || !data)
                fprintf(stderr, "cnf solvers: --model and --data go together\n");
            else if (n_nn != 1 || *end)
                fprintf(stderr, "cnf solvers: -n takes one count, --seed one integer\n");
            free(nn);
            return 2;
        }
        int u = model_setup(&mp, model, data, nn[0], seed);
        free(nn);
        if (u) {
            model_free(&mp);
            return u;
        }
    }
    const cnf_problem *p = mp.flow ? &model_as_problem : cnf_problem_find(problem);
    if (!p) {
        fprintf(stderr, "cnf solvers: unknown problem '%s' (valid: ", problem);
        list_names(stderr, 1);
        fprintf(stderr, ")\n");
        return 2;
    }
    char **mnames = NULL;
    size_t n_methods = cnf_stepper_count(), n_steps = 0, n_tols = 0, n_runs = 0;
    size_t *steps = NULL;
    double *tols = NULL, *ref = NULL, *atol = NULL;
    const cnf_stepper_type **types = NULL;
    run_result *runs = NULL;
    if ((methods && cli_parse_names(CMD, "--methods", methods, &mnames, &n_methods)) ||
        cli_parse_sizes(CMD, "--steps", steps_arg, &steps, &n_steps) ||
        cli_parse_doubles(CMD, "--tols", tols_arg, &tols, &n_tols))
        goto done;
    size_t n_atol = 0;
    if (atol_arg && cli_parse_doubles(CMD, "--atol", atol_arg, &atol, &n_atol))
        goto done;
    if (atol && (n_atol != 1 || !(atol[0] > 0))) {
        fprintf(stderr, "cnf solvers: --atol needs one positive number, not '%s'\n", atol_arg);
        goto done;
    }
    for (size_t k = 0; k < n_tols; k++)
        if (!(tols[k] > 0)) {
            fprintf(stderr, "cnf solvers: --tols: %g is not a positive tolerance\n", tols[k]);
            goto done;
        }
    types = calloc(n_methods, sizeof *types);
    if (!types)
        goto oom;
    for (size_t m = 0; m < n_methods; m++) {
        if (!mnames) {
            types[m] = cnf_stepper_at(m);
        } else if (cnf_stepper_from_name(mnames[m], &types[m])) {
            fprintf(stderr, "cnf solvers: --methods: unknown method '%s' (valid: ", mnames[m]);
            list_names(stderr, 0);
            fprintf(stderr, ")\n");
            goto done;
        }
        n_runs += cnf_stepper_is_adaptive(types[m]) ? n_tols : n_steps;
    }

    status = 1;
    runs = calloc(n_runs ? n_runs : 1, sizeof *runs);
    ref = calloc(mp.flow ? 1 : p->dim, sizeof *ref);
    if (!runs || !ref)
        goto oom;
    int rc = mp.flow ? CNF_OK : p->reference(ref);
    if (rc) {
        cli_error(CMD, rc, "computing the reference solution");
        goto done;
    }
    size_t r = 0;
    for (size_t m = 0; m < n_methods; m++) {
        int adaptive = cnf_stepper_is_adaptive(types[m]);
        for (size_t k = 0; k < (adaptive ? n_tols : n_steps); k++, r++) {
            runs[r].T = types[m];
            runs[r].steps = adaptive ? 0 : steps[k];
            runs[r].tol = adaptive ? tols[k] : 0;
            runs[r].atol = adaptive ? (atol ? atol[0] : tols[k]) : 0;
            if ((rc = mp.flow ? solve_model(&mp, &runs[r]) : solve_one(p, ref, &runs[r]))) {
                cli_error(CMD, rc, "setting up a solver");
                goto done;
            }
        }
    }
    print_table(p, runs, n_runs);
    printf("\nadaptive runs: atol = %s\n", atol ? atol_arg : "rtol");
    if (json)
        print_json(p, runs, n_runs);
    status = 0;
    goto done;
oom:
    fprintf(stderr, "cnf solvers: out of memory\n");
done:
    cli_free_list(mnames);
    free(steps);
    free(tols);
    free(atol);
    free(types);
    free(runs);
    free(ref);
    model_free(&mp);
    return status;
}
