/* Solver options: the defaults, their resolution against a method and a dimension, and the error
 * norm that adaptive step control uses. Apart from the driver (solver.c) because both the driver
 * and the CVODES wrapper (cvode.c) use them, while the driver lists CVODES's types. */
#include <math.h>
#include <string.h>

#include "stepper.h"

void cnf_ode_options_default(cnf_ode_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->steps = 100;
    opt->rtol = 1e-6;
    opt->atol = 1e-9;
    opt->norm = CNF_NORM_RMS;
}

int cnf_ode_options_resolve(cnf_ode_options *out, const cnf_ode_options *opt,
                            const cnf_stepper_type *T, size_t dim, double t0, double t1)
{
    *out = *opt;
    double span = fabs(t1 - t0);
    if (!isfinite(t0) || !isfinite(t1))
        return cnf_fail(CNF_EINVAL, "t0 = %g and t1 = %g must be finite", t0, t1);
    if (!T->adaptive && opt->steps == 0)
        return cnf_fail(CNF_EINVAL, "fixed-step method %s needs steps >= 1", T->name);
    if (T->adaptive) {
        if (!(opt->rtol >= 0) || !(opt->atol >= 0) || !isfinite(opt->rtol) ||
            !isfinite(opt->atol) || (opt->rtol == 0 && opt->atol == 0))
            return cnf_fail(CNF_EINVAL, "rtol = %g, atol = %g: need both >= 0, finite, not both 0",
                            opt->rtol, opt->atol);
    }
    if (!(opt->h0 >= 0) || !(opt->hmin >= 0) || !(opt->hmax >= 0) || !isfinite(opt->h0) ||
        !isfinite(opt->hmin) || !isfinite(opt->hmax))
        return cnf_fail(CNF_EINVAL, "h0 = %g, hmin = %g, hmax = %g must be finite and >= 0",
                        opt->h0, opt->hmin, opt->hmax);
    if (opt->safety < 0 || opt->safety > 1 || !isfinite(opt->safety))
        return cnf_fail(CNF_EINVAL, "safety factor %g is not in (0, 1]", opt->safety);
    if (opt->norm != CNF_NORM_RMS && opt->norm != CNF_NORM_MAX_BLOCK)
        return cnf_fail(CNF_EINVAL, "unknown norm %d", (int)opt->norm);
    if (opt->block == 0 && opt->block_ctrl != 0)
        return cnf_fail(CNF_EINVAL, "block_ctrl = %zu needs block > 0", opt->block_ctrl);
    if (opt->block && (dim % opt->block || opt->block_ctrl > opt->block))
        return cnf_fail(CNF_EDIM, "dim %zu is not a whole number of blocks of %zu (block_ctrl %zu)",
                        dim, opt->block, opt->block_ctrl);
    if (!out->block)
        out->block = dim;
    if (!out->block_ctrl)
        out->block_ctrl = out->block;
    if (out->hmin == 0)
        out->hmin = 1e-14 * span;
    if (out->hmax == 0)
        out->hmax = span;
    if (out->max_steps == 0)
        out->max_steps = 100000;
    if (out->safety == 0)
        out->safety = 0.9;
    if (out->hmin > out->hmax)
        return cnf_fail(CNF_EINVAL, "hmin = %g exceeds hmax = %g", out->hmin, out->hmax);
    return CNF_OK;
}

double cnf_ode_error_norm(const cnf_ode_options *opt, size_t dim, const double *err,
                          const double *y_old, const double *y_new)
{
    size_t B = opt->block ? opt->block : dim, C = opt->block_ctrl ? opt->block_ctrl : B;
    double total = 0, worst = 0;
    for (size_t b0 = 0; b0 < dim; b0 += B) {
        double s = 0;
        for (size_t i = b0; i < b0 + C; i++) {
            double sc = opt->atol + opt->rtol * fmax(fabs(y_old[i]), fabs(y_new[i]));
            double r = err[i] / sc;
            s += r * r;
        }
        total += s;
        worst = fmax(worst, s / (double)C);
    }
    if (!isfinite(total))
        return total;
    if (opt->norm == CNF_NORM_MAX_BLOCK)
        return sqrt(worst);
    return sqrt(total / (double)(C * (dim / B)));
}
