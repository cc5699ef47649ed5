/* `cnf gradcheck`: one loss, four gradients (backprop through the solver, the checkpointed
 * adjoint with a built-in method, the CVODES checkpointed adjoint, torchdiffeq's backsolve), each
 * compared with central finite differences along random directions; exit 1 when one is further
 * from them than its threshold (--tol). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "flowopts.h"

#define CMD "gradcheck"

static flow_opts fo;
static size_t dim, batch, dirs;
static uint64_t seed;
static int json;
static double fd_h, tol;
static cli_opt table[FLOW_OPTS_MAX + 8];
static size_t n_table;

static void help(FILE *out)
{
    fprintf(out,
            "usage: cnf gradcheck [options]\n\n"
            "Build a small random CNF and a random batch, and compare the gradient of the same\n"
            "loss (mean NLL + regularizers) computed four ways against central finite\n"
            "differences (5-point) along random directions in parameter space:\n"
            "  backprop   reverse mode through the steps of --solver (an explicit RK method; rk4\n"
            "             with --steps if --solver is CVODES), against FD of that same discrete\n"
            "             loss: agreement is limited only by rounding;\n"
            "  adjoint    the checkpointed continuous adjoint with --solver if built-in (else\n"
            "             dopri5), against FD of the loss solved at 1e-3 x the tolerances;\n"
            "  cvodes     the CVODES checkpointed adjoint (cvode-adams), against the same FD;\n"
            "  backsolve  torchdiffeq's adjoint that re-integrates x backwards (a comparison\n"
            "             mode: wrong for contracting flows), against the same FD.\n"
            "Reported: max over directions of |g.v - FD| / max(|g.v|, |FD|).\n"
            "Each figure is compared with a threshold: --tol X for every method, or by default\n"
            "  backprop (and discrete flows)    1e-6\n"
            "  adjoint, cvodes, backsolve       max(1e-6, 100 x max(rtol, atol)): 1e-6 at the\n"
            "                                   default tolerances\n"
            "  with --precision mixed           at least 1e-3 (float32 rounding in the loss)\n"
            "Exit status: 0 when every gradient is within its threshold; 1 when one is not or\n"
            "a gradient failed (stderr names it and its figure); 2 for bad options.\n"
            "Flow options take the same names and values as cnf train; defaults are small.\n\n"
            "options:\n");
    cli_opts_help(out, table, n_table);
}

/* The threshold of a figure: --tol, else the defaults of the help text (continuous: the mode
 * is an adjoint of the continuous loss, whose accuracy follows the tolerances). */
static double threshold(int continuous, int mixed)
{
    if (tol > 0)
        return tol;
    double t = 1e-6;
    if (continuous)
        t = fmax(t, 100.0 * fmax(fo.rtol, fo.atol));
    return mixed ? fmax(t, 1e-3) : t;
}

/* 0 when the figure of `label` (computed by stepper, if any) is within its threshold, else 1
 * with the figures on stderr. */
static int over(const char *label, const char *stepper, double worst, double thr)
{
    if (worst <= thr)
        return 0;
    fprintf(stderr, "cnf %s: %s gradient%s%s%s differs from finite differences by %.3e (max rel "
            "diff), above its threshold %.3g\n", CMD, label, stepper ? " (" : "",
            stepper ? stepper : "", stepper ? ")" : "", worst, thr);
    return 1;
}

/* FD of the loss along dir at the probes of rng0. */
static int fd_dir(cnf_flow *f, const double *X, const cnf_rng *rng0, const double *dir,
                  double *out)
{
    double *th = cnf_flow_params(f);
    size_t P = cnf_flow_n_params(f);
    double *save = malloc(P * sizeof(double)), v[4];
    if (!save)
        return CNF_ENOMEM;
    memcpy(save, th, P * sizeof(double));
    const double c[4] = {-2, -1, 1, 2};
    int rc = CNF_OK;
    for (int j = 0; j < 4 && !rc; j++) {
        for (size_t i = 0; i < P; i++)
            th[i] = save[i] + c[j] * fd_h * dir[i];
        cnf_rng r = *rng0;
        rc = cnf_flow_loss(f, X, batch, &r, &v[j], NULL);
    }
    memcpy(th, save, P * sizeof(double));
    free(save);
    *out = (v[0] - 8 * v[1] + 8 * v[2] - v[3]) / (12 * fd_h);
    return rc;
}

typedef struct check {
    const char *key, *label;
    cnf_grad_mode mode;
    const cnf_stepper_type *stepper;
    size_t nfe_bwd;
    double worst;
    int rc;
    char err[256];
} check;

static void print_json(const char *const *keys, const double *v, size_t n)
{
    printf("{");
    for (size_t c = 0; c < n; c++) {
        printf("%s\"%s\":", c ? "," : "", keys[c]);
        cli_json_number(stdout, v[c]);
    }
    printf("}\n");
}

static const char *const json_keys[4] = {"backprop_vs_fd", "adjoint_vs_fd", "cvodes_vs_fd",
                                         "backsolve_vs_fd"};

/* A discrete flow has one gradient, its hand-written reverse pass: backprop_vs_fd (the other
 * keys are null). */
static int discrete_check(cnf_flow *f)
{
    const size_t P = cnf_flow_n_params(f);
    cnf_rng rng;
    cnf_rng_seed(&rng, seed + 1);
    double *X = malloc(cnf_size_mul(cnf_size_mul(batch, dim), sizeof(double)));
    double *g = malloc(cnf_size_mul(P, sizeof(double)));
    double *d = malloc(cnf_size_mul(P, sizeof(double))), worst = 0, loss;
    if (!X || !g || !d) {
        fprintf(stderr, "cnf %s: out of memory for a batch of %zu x %zu and %zu parameters\n",
                CMD, batch, dim, P);
        free(X);
        free(g);
        free(d);
        cnf_flow_free(f);
        return 1;
    }
    int rc = CNF_OK;
    for (size_t i = 0; !rc && i < batch * dim; i++)
        X[i] = cnf_rng_normal(&rng);
    if (!rc)
        rc = cnf_flow_nll_grad(f, X, batch, NULL, &loss, g, NULL);
    for (size_t k = 0; !rc && k < dirs; k++) {
        double an = 0, fd;
        for (size_t i = 0; i < P; i++) {
            d[i] = cnf_rng_normal(&rng);
            an += g[i] * d[i];
        }
        rc = fd_dir(f, X, &rng, d, &fd);
        double den = fmax(fabs(an), fabs(fd));
        worst = fmax(worst, den > 0 ? fabs(an - fd) / den : 0.0);
    }
    if (!rc) {
        printf("%s flow d=%zu, %zu parameters, batch %zu, %zu directions\n", cnf_flow_kind(f),
               dim, P, batch, dirs);
        printf("backprop (hand-written reverse pass) vs FD: max rel diff %.3e\n", worst);
        if (json) {
            double v[4] = {worst, NAN, NAN, NAN};
            print_json(json_keys, v, 4);
        }
    } else {
        cli_error(CMD, rc, "gradient check");
    }
    free(X);
    free(g);
    free(d);
    cnf_flow_free(f);
    return rc ? 1 : over("backprop", NULL, worst, threshold(0, 0));
}

int cmd_gradcheck(int argc, char **argv)
{
    flow_opts_default(&fo);
    fo.hidden = "16-16";
    fo.T = 1.0;
    fo.train_T = 0;
    fo.atol = fo.rtol = 1e-8;
    dim = 2;
    batch = 8;
    dirs = 3;
    seed = 0;
    json = 0;
    fd_h = 0;
    tol = 0;
    n_table = flow_opts_table(&fo, table);
    /* gradcheck computes every gradient and evaluates nothing: --grad and the evaluation
     * solver options of cnf train do not apply (not accepted, not listed). */
    size_t kept = 0;
    for (size_t i = 0; i < n_table; i++)
        if (strcmp(table[i].name, "--grad") && strncmp(table[i].name, "--test-", 7))
            table[kept++] = table[i];
    n_table = kept;
    const cli_opt mine[] = {
        {"--dim", OPT_SIZE, &dim, "D", "data dimension", 0},
        {"--batch", OPT_SIZE, &batch, "N", "random points in the batch", 0},
        {"--directions", OPT_SIZE, &dirs, "K", "random directions for the differences", 0},
        {"--fd-step", OPT_DOUBLE, &fd_h, "H",
         "finite-difference step (0: 1e-3 for cnf, 1e-4 for discrete flows, whose spline knots "
         "move with the parameters)",
         0},
        {"--seed", OPT_U64, &seed, "S", "seed of the flow, batch, probes and directions", 0},
        {"--tol", OPT_DOUBLE, &tol, "X",
         "exit 1 when a gradient's max rel diff exceeds X (0: the thresholds above)", 0},
        {"--json", OPT_FLAG, &json, NULL,
         "last line: JSON object with backprop_vs_fd, adjoint_vs_fd, cvodes_vs_fd, "
         "backsolve_vs_fd (null where a mode failed)",
         0},
    };
    memcpy(table + n_table, mine, sizeof mine);
    n_table += sizeof mine / sizeof *mine;
    int u = cli_opts_parse(CMD, table, n_table, argc, argv, help);
    if (u)
        return u == 1 ? 0 : 2;
    if (dim == 0 || batch == 0 || dirs == 0 || !(fd_h >= 0) || !(tol >= 0)) {
        fprintf(stderr, "cnf %s: --dim, --batch, --directions must be positive, --fd-step and "
                "--tol >= 0\n", CMD);
        return 2;
    }
    if (!cnf_size_ok(cnf_size_mul(batch, dim))) {
        fprintf(stderr, "cnf %s: --batch %zu with --dim %zu: the batch of %zu x %zu values is too "
                "large to address\n", CMD, batch, dim, batch, dim);
        return 2;
    }
    if (fd_h == 0)
        fd_h = flow_opts_is_cnf(&fo) ? 1e-3 : 1e-4;
    cnf_rng rng;
    cnf_rng_seed(&rng, seed);
    cnf_flow *f = NULL;
    if ((u = flow_opts_build(CMD, &fo, dim, &rng, &f)))
        return u;
    if (!cnf_size_ok(cnf_size_mul(dirs, cnf_flow_n_params(f)))) {
        fprintf(stderr, "cnf %s: --directions %zu: %zu directions of %zu parameters are too many "
                "to address\n", CMD, dirs, dirs, cnf_flow_n_params(f));
        cnf_flow_free(f);
        return 2;
    }
    if (!cnf_cflow_settings(f))
        return discrete_check(f);
    cnf_cflow_config *s = cnf_cflow_settings(f);
    const cnf_solve_config user = s->train;
    const size_t P = cnf_flow_n_params(f);
    double *X = malloc(cnf_size_mul(cnf_size_mul(batch, dim), sizeof(double)));
    double *g = malloc(cnf_size_mul(P, sizeof(double)));
    double *D = malloc(cnf_size_mul(cnf_size_mul(dirs, P), sizeof(double)));
    int status = 1;
    if (!X || !g || !D) {
        fprintf(stderr, "cnf %s: out of memory for a batch of %zu x %zu and %zu directions of %zu "
                "parameters\n", CMD, batch, dim, dirs, P);
        goto done;
    }
    for (size_t i = 0; i < batch * dim; i++)
        X[i] = cnf_rng_normal(&rng);
    for (size_t i = 0; i < dirs * P; i++)
        D[i] = cnf_rng_normal(&rng);
    const cnf_rng probes = rng;

    /* The discretisation backprop differentiates, and the tight one the adjoints approximate. */
    cnf_solve_config discrete = user, tight = user;
    if (!cnf_stepper_tableau(user.stepper)) {
        discrete.stepper = cnf_stepper_rk4;
        discrete.opt.steps = fo.steps;
    }
    if (cnf_stepper_is_cvodes(user.stepper))
        tight.stepper = cnf_stepper_dopri5;
    tight.opt.rtol *= 1e-3;
    tight.opt.atol *= 1e-3;
    double *fd_discrete = malloc(cnf_size_mul(dirs, sizeof(double)));
    double *fd_tight = malloc(cnf_size_mul(dirs, sizeof(double)));
    if (!fd_discrete || !fd_tight) {
        free(fd_discrete);
        free(fd_tight);
        fprintf(stderr, "cnf %s: out of memory\n", CMD);
        goto done;
    }
    int rc = CNF_OK;
    for (size_t k = 0; k < dirs && !rc; k++) {
        s->train = discrete;
        rc = fd_dir(f, X, &probes, D + k * P, &fd_discrete[k]);
        s->train = tight;
        if (!rc)
            rc = fd_dir(f, X, &probes, D + k * P, &fd_tight[k]);
    }
    if (rc) {
        cli_error(CMD, rc, "finite differences");
        free(fd_discrete);
        free(fd_tight);
        goto done;
    }
    check checks[4] = {
        {.key = json_keys[0], .label = "backprop", .mode = CNF_GRAD_BACKPROP,
         .stepper = discrete.stepper},
        {.key = json_keys[1], .label = "adjoint", .mode = CNF_GRAD_ADJOINT,
         .stepper = cnf_stepper_is_cvodes(user.stepper) ? cnf_stepper_dopri5 : user.stepper},
        {.key = json_keys[2], .label = "cvodes", .mode = CNF_GRAD_ADJOINT,
         .stepper = cnf_stepper_cvode_adams},
        {.key = json_keys[3], .label = "backsolve", .mode = CNF_GRAD_BACKSOLVE,
         .stepper = cnf_stepper_is_cvodes(user.stepper) ? cnf_stepper_dopri5 : user.stepper},
    };
    printf("CNF d=%zu hidden %s %s/%s, trace %s, %zu parameters, batch %zu, %zu directions\n",
           dim, fo.hidden, fo.act, fo.time, fo.trace, P, batch, dirs);
    printf("%-10s %-12s %10s %14s\n", "gradient", "solver", "nfe_bwd", "max rel diff");
    for (size_t c = 0; c < 4; c++) {
        check *ch = &checks[c];
        s->grad = ch->mode;
        s->train = c == 0 ? discrete : user;
        s->train.stepper = ch->stepper;
        cnf_rng r = probes;
        double loss;
        cnf_flow_stats st;
        ch->rc = cnf_flow_nll_grad(f, X, batch, &r, &loss, g, &st);
        ch->worst = 0;
        if (ch->rc) {
            snprintf(ch->err, sizeof ch->err, "%s: %s", cnf_strerror(ch->rc), cnf_errmsg());
            printf("%-10s %-12s %10s %14s  (%s)\n", ch->label, cnf_stepper_name(ch->stepper), "-",
                   "failed", ch->err);
            continue;
        }
        ch->nfe_bwd = st.nfe_backward;
        for (size_t k = 0; k < dirs; k++) {
            double an = 0, ref = c == 0 ? fd_discrete[k] : fd_tight[k];
            for (size_t i = 0; i < P; i++)
                an += g[i] * D[k * P + i];
            double den = fmax(fabs(an), fabs(ref));
            ch->worst = fmax(ch->worst, den > 0 ? fabs(an - ref) / den : 0.0);
        }
        printf("%-10s %-12s %10zu %14.3e\n", ch->label, cnf_stepper_name(ch->stepper),
               ch->nfe_bwd, ch->worst);
    }
    if (json) {
        double v[4];
        for (size_t c = 0; c < 4; c++)
            v[c] = checks[c].rc ? NAN : checks[c].worst;
        print_json(json_keys, v, 4);
    }
    free(fd_discrete);
    free(fd_tight);
    status = 0;
    const int mixed = !strcmp(fo.precision, "mixed");
    for (size_t c = 0; c < 4; c++) {
        const check *ch = &checks[c];
        if (ch->rc) {
            fprintf(stderr, "cnf %s: %s gradient (%s) failed: %s\n", CMD, ch->label,
                    cnf_stepper_name(ch->stepper), ch->err);
            status = 1;
        } else if (over(ch->label, cnf_stepper_name(ch->stepper), ch->worst,
                        threshold(c > 0, mixed))) {
            status = 1;
        }
    }
done:
    free(X);
    free(g);
    free(D);
    cnf_flow_free(f);
    return status;
}
