/* The driver: method lookup and cnf_ode_solve — fixed steps, or adaptive
 * steps with an embedded pair and PI control (Hairer & Wanner, "Solving ODEs I" §II.4 and
 * "Solving ODEs II" §IV.2; Söderlind, "Automatic control and adaptive time-stepping", Numer.
 * Algorithms 31, 2002). CVODES methods own their step control: the driver hands them the whole
 * interval through the type's integrate slot. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stepper.h"

static const cnf_stepper_type *const *const all_types[] = {
    &cnf_stepper_euler, &cnf_stepper_midpoint, &cnf_stepper_rk4,
    &cnf_stepper_bosh3, &cnf_stepper_dopri5,   &cnf_stepper_tsit5,
    &cnf_stepper_cvode_adams, &cnf_stepper_cvode_bdf,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

size_t cnf_stepper_count(void) { return N_TYPES; }

const cnf_stepper_type *cnf_stepper_at(size_t i) { return i < N_TYPES ? *all_types[i] : NULL; }

int cnf_stepper_from_name(const char *name, const cnf_stepper_type **out)
{
    char valid[256] = "";
    size_t len = 0;
    *out = NULL;
    for (size_t i = 0; i < N_TYPES; i++) {
        if (name && !strcmp(name, (*all_types[i])->name)) {
            *out = *all_types[i];
            return CNF_OK;
        }
        len += (size_t)snprintf(valid + len, sizeof valid - len, "%s%s", i ? ", " : "",
                                (*all_types[i])->name);
    }
    return cnf_fail(CNF_ENAME, "unknown ODE method '%s' (valid: %s)", name ? name : "(null)",
                    valid);
}

const char *cnf_stepper_name(const cnf_stepper_type *T) { return T->name; }
unsigned cnf_stepper_order(const cnf_stepper_type *T) { return T->order; }
int cnf_stepper_is_adaptive(const cnf_stepper_type *T) { return T->adaptive; }
int cnf_stepper_is_cvodes(const cnf_stepper_type *T) { return T->integrate != NULL; }
const cnf_rk_tableau *cnf_stepper_tableau(const cnf_stepper_type *T) { return T->tableau; }

struct cnf_ode_solver {
    const cnf_stepper_type *T;
    size_t dim;
    void *state;
    double *y_new, *yerr, *k_in, *k_out; /* (dim) each; RK methods only */
};

const double *cnf_ode_solver_stage_arg(const cnf_ode_solver *s, size_t i)
{
    return s->T->tableau ? cnf_erk_stage_arg(s->state, s->T, i) : NULL;
}

const cnf_rk_tableau *cnf_ode_solver_tableau(const cnf_ode_solver *s) { return s->T->tableau; }

int cnf_ode_solver_create(cnf_ode_solver **out, const cnf_stepper_type *T, size_t dim)
{
    *out = NULL;
    if (!T)
        return cnf_fail(CNF_EINVAL, "no ODE method given");
    if (dim == 0)
        return cnf_fail(CNF_EINVAL, "ODE state dimension is 0");
    if (!cnf_size_ok(dim))
        return cnf_fail(CNF_ENOMEM, "ODE state dimension %zu is too large to address", dim);
    cnf_ode_solver *s = cnf_calloc(1, sizeof *s);
    if (!s)
        return cnf_fail(CNF_ENOMEM, "ODE solver object");
    s->T = T;
    s->dim = dim;
    s->state = T->alloc(T, dim);
    if (!T->integrate) {
        s->y_new = cnf_calloc(dim, sizeof(double));
        s->yerr = cnf_calloc(dim, sizeof(double));
        s->k_in = cnf_calloc(dim, sizeof(double));
        s->k_out = cnf_calloc(dim, sizeof(double));
    }
    if (!s->state || (!T->integrate && (!s->y_new || !s->yerr || !s->k_in || !s->k_out))) {
        int rc = s->state ? CNF_ENOMEM : (T->integrate ? CNF_ESOLVER : CNF_ENOMEM);
        cnf_ode_solver_free(s);
        return cnf_fail(rc, "cannot allocate the %s workspace for dim %zu", T->name, dim);
    }
    *out = s;
    return CNF_OK;
}

void cnf_ode_solver_free(cnf_ode_solver *s)
{
    if (!s)
        return;
    if (s->state)
        s->T->free(s->state);
    free(s->y_new);
    free(s->yerr);
    free(s->k_in);
    free(s->k_out);
    free(s);
}

/* The driver's state-sized loops, run through the system's parallel loop (cnf_sys_par). */
typedef struct state_pass {
    const double *v;
    double *out;      /* copy: out = v */
    atomic_int bad;   /* finite check: set when a value is not finite */
} state_pass;

static void finite_part(void *arg, size_t i0, size_t i1)
{
    state_pass *p = arg;
    for (size_t i = i0; i < i1; i++)
        if (!isfinite(p->v[i])) {
            atomic_store_explicit(&p->bad, 1, memory_order_relaxed);
            return;
        }
}

static void copy_part(void *arg, size_t i0, size_t i1)
{
    state_pass *p = arg;
    memcpy(p->out + i0, p->v + i0, (i1 - i0) * sizeof *p->v);
}

static int all_finite(cnf_sys *sys, const double *v)
{
    state_pass p = {.v = v};
    atomic_init(&p.bad, 0);
    cnf_sys_par(sys, finite_part, &p);
    return !atomic_load_explicit(&p.bad, memory_order_relaxed);
}

/* An accepted step: report it, then move y to y_new. */
static int accept(cnf_ode_solver *s, cnf_sys *sys, double t, double h, double *y,
                  cnf_ode_observer observer, void *observer_ctx, cnf_ode_stats *st)
{
    int rc = observer ? observer(t, h, y, s->y_new, observer_ctx) : 0;
    state_pass p = {.v = s->y_new, .out = y};
    cnf_sys_par(sys, copy_part, &p);
    st->accepted++;
    st->h_last = h;
    st->t_reached = t + h;
    return rc;
}

static int solve_fixed(cnf_ode_solver *s, cnf_sys *sys, double t0, double t1, double *y,
                       const cnf_ode_options *opt, size_t max_steps, cnf_ode_observer observer,
                       void *observer_ctx, cnf_ode_stats *st)
{
    double H = (t1 - t0) / (double)opt->steps;
    for (size_t n = 0; n < opt->steps; n++) {
        double t = t0 + (double)n * H;
        double h = (n + 1 == opt->steps ? t1 : t0 + (double)(n + 1) * H) - t;
        if (max_steps && n >= max_steps)
            return cnf_fail(CNF_EMAX_STEPS, "%s: %zu steps asked, max_steps is %zu (t = %g)",
                            s->T->name, opt->steps, max_steps, t);
        int rc = s->T->apply(s->state, s->T, sys, t, h, y, s->y_new, NULL, NULL, NULL);
        if (rc)
            return cnf_fail(CNF_ERHS, "%s: right-hand side returned %d at t = %g (fixed step "
                            "of %g cannot shrink)", s->T->name, rc, t, h);
        if (!all_finite(sys, s->y_new))
            return cnf_fail(CNF_ENONFINITE, "%s: state became non-finite in the step from "
                            "t = %g to %g", s->T->name, t, t + h);
        if ((rc = accept(s, sys, t, h, y, observer, observer_ctx, st)))
            return rc;
        st->t_reached = n + 1 == opt->steps ? t1 : st->t_reached;
    }
    return CNF_OK;
}

/* First step size (Hairer, Nørsett & Wanner, "Solving ODEs I", §II.4, "Starting step size"):
 * h0 = 0.01·‖y0‖/‖f0‖, one explicit Euler trial step to estimate ‖f'‖, then
 * h = min(100 h0, (0.01 / max(‖f0‖, ‖f'‖))^(1/(p+1))). Costs one RHS evaluation. */
static int initial_step(cnf_ode_solver *s, cnf_sys *sys, double t0, const double *y0,
                        const double *f0, double dir, const cnf_ode_options *opt, double *h)
{
    size_t dim = s->dim;
    double d0 = cnf_ode_error_norm(opt, dim, y0, y0, y0);
    double d1 = cnf_ode_error_norm(opt, dim, f0, y0, y0);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = fmin(h0, opt->hmax);
    for (size_t i = 0; i < dim; i++)
        s->y_new[i] = y0[i] + dir * h0 * f0[i];
    int rc = cnf_sys_eval(sys, t0 + dir * h0, s->y_new, s->k_out);
    if (rc < 0)
        return cnf_fail(CNF_ERHS, "%s: right-hand side returned %d at t = %g (first-step "
                        "trial)", s->T->name, rc, t0 + dir * h0);
    if (rc > 0) {
        *h = dir * fmax(0.01 * h0, opt->hmin);
        return CNF_OK;
    }
    for (size_t i = 0; i < dim; i++)
        s->yerr[i] = (s->k_out[i] - f0[i]) / h0;
    double d2 = cnf_ode_error_norm(opt, dim, s->yerr, y0, y0);
    double dm = fmax(d1, d2), h1;
    if (!isfinite(dm))
        h1 = h0;
    else if (dm <= 1e-15)
        h1 = fmax(1e-6, h0 * 1e-3);
    else
        h1 = pow(0.01 / dm, 1.0 / (s->T->order + 1.0));
    *h = dir * fmax(fmin(fmin(100 * h0, h1), opt->hmax), opt->hmin);
    return CNF_OK;
}

static int solve_adaptive(cnf_ode_solver *s, cnf_sys *sys, double t0, double t1, double *y,
                          const cnf_ode_options *opt, cnf_ode_observer observer,
                          void *observer_ctx, cnf_ode_stats *st)
{
    const cnf_stepper_type *T = s->T;
    const int fsal = T->tableau->fsal;
    const double dir = t1 > t0 ? 1.0 : -1.0;
    /* PI control on err^(−α)·err_prev^(β), α = 0.7/k, β = 0.4/k with k the order of the
     * embedded (lower-order) solution plus one (Hairer & Wanner II, §IV.2, eq. (2.43c)). */
    const double k = T->err_order + 1.0, alpha = 0.7 / k, beta = 0.4 / k;
    const double fac_min = 0.2, fac_max = 10.0;
    double t = t0, h = 0, err_prev = 1e-4;
    int have_k = 0, last_rejected = 0, rc;

    if ((rc = cnf_sys_eval(sys, t0, y, s->k_in)))
        return cnf_fail(CNF_ERHS, "%s: right-hand side returned %d at the initial point "
                        "t = %g", T->name, rc, t0);
    if (!all_finite(sys, s->k_in))
        return cnf_fail(CNF_ENONFINITE, "%s: f(t0, y0) is not finite at t = %g", T->name, t0);
    have_k = 1;
    if (opt->h0 > 0)
        h = dir * fmin(fmax(opt->h0, opt->hmin), opt->hmax);
    else if ((rc = initial_step(s, sys, t0, y, s->k_in, dir, opt, &h)))
        return rc;

    for (;;) {
        if (st->accepted + st->rejected >= opt->max_steps)
            return cnf_fail(CNF_EMAX_STEPS, "%s: %zu steps (%zu accepted, %zu rejected) did not "
                            "reach t = %g from t = %g", T->name, opt->max_steps, st->accepted,
                            st->rejected, t1, t);
        int last = dir * (t + h - t1) >= 0;
        if (last)
            h = t1 - t;
        if (!last && (fabs(h) < opt->hmin || t + h == t))
            return cnf_fail(CNF_ESTEP_UNDERFLOW, "%s: step size %g at t = %g is below hmin = %g",
                            T->name, h, t, opt->hmin);
        rc = T->apply(s->state, T, sys, t, h, y, s->y_new, s->yerr, have_k ? s->k_in : NULL,
                      fsal ? s->k_out : NULL);
        if (rc < 0)
            return cnf_fail(CNF_ERHS, "%s: right-hand side returned %d (fatal) in the step from "
                            "t = %g, h = %g", T->name, rc, t, h);
        double err = rc > 0 ? NAN : cnf_ode_error_norm(opt, s->dim, s->yerr, y, s->y_new);
        if (rc == 0 && !all_finite(sys, s->y_new))
            err = NAN;
        if (!(err <= 1.0)) {
            /* Rejected: by the error test, or (err NaN) by a recoverable RHS failure or a
             * non-finite trial state — both retried with a much smaller step. */
            st->rejected++;
            last_rejected = 1;
            double fac = isfinite(err) ? fmax(fac_min, opt->safety * pow(err, -1.0 / k)) : 0.25;
            h *= fac;
            if (fabs(h) < opt->hmin) {
                if (rc > 0)
                    return cnf_fail(CNF_ESTEP_UNDERFLOW, "%s: right-hand side kept returning "
                                    "%d (recoverable) down to h = %g at t = %g", T->name, rc,
                                    h / fac, t);
                if (!isfinite(err))
                    return cnf_fail(CNF_ENONFINITE, "%s: the trial state or its error estimate "
                                    "is non-finite down to h = %g at t = %g", T->name, h / fac,
                                    t);
                return cnf_fail(CNF_ESTEP_UNDERFLOW, "%s: error test failed (norm %g) down to "
                                "h = %g at t = %g (hmin = %g)", T->name, err, h / fac, t,
                                opt->hmin);
            }
            continue;
        }
        double fac = err == 0 ? fac_max
                              : opt->safety * pow(err, -alpha) * pow(err_prev, beta);
        fac = fmin(fac_max, fmax(fac_min, fac));
        if (last_rejected)
            fac = fmin(fac, 1.0);
        err_prev = fmax(err, 1e-4);
        last_rejected = 0;
        if ((rc = accept(s, sys, t, h, y, observer, observer_ctx, st)))
            return rc;
        t = last ? t1 : t + h;
        st->t_reached = t;
        if (fsal) {
            double *tmp = s->k_in;
            s->k_in = s->k_out;
            s->k_out = tmp;
        }
        have_k = fsal;
        if (last)
            return CNF_OK;
        h = dir * fmin(fabs(h) * fac, opt->hmax);
    }
}

int cnf_ode_solve(cnf_ode_solver *s, cnf_ode_rhs f, void *ctx, double t0, double t1,
                  double *y, const cnf_ode_options *opt, cnf_ode_observer observer,
                  void *observer_ctx, cnf_ode_stats *stats)
{
    return cnf_ode_solve_par(s, f, ctx, t0, t1, y, opt, observer, observer_ctx, stats, NULL, NULL);
}

int cnf_ode_solve_par(cnf_ode_solver *s, cnf_ode_rhs f, void *ctx, double t0, double t1,
                      double *y, const cnf_ode_options *opt, cnf_ode_observer observer,
                      void *observer_ctx, cnf_ode_stats *stats, cnf_par_for par, void *par_ctx)
{
    cnf_ode_stats local;
    cnf_ode_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    st->t_reached = t0;
    if (!s || !f || !y || !opt)
        return cnf_fail(CNF_EINVAL, "cnf_ode_solve: solver, f, y and options are required");
    cnf_ode_options o;
    int rc = cnf_ode_options_resolve(&o, opt, s->T, s->dim, t0, t1);
    if (rc)
        return rc;
    cnf_sys sys = {.f = f, .ctx = ctx, .dim = s->dim, .nfe = 0, .par = par, .par_ctx = par_ctx};
    if (s->T->reset)
        s->T->reset(s->state);
    if (t0 == t1)
        rc = CNF_OK;
    else if (s->T->integrate)
        rc = s->T->integrate(s->state, s->T, &sys, t0, t1, y, &o, observer, observer_ctx, st);
    else if (s->T->adaptive)
        rc = solve_adaptive(s, &sys, t0, t1, y, &o, observer, observer_ctx, st);
    else
        rc = solve_fixed(s, &sys, t0, t1, y, &o, opt->max_steps, observer, observer_ctx, st);
    st->nfe = sys.nfe;
    return rc;
}
