/* ODE solvers (issue 3): tableaus and order conditions, empirical convergence orders,
 * adaptive accuracy and cost, reverse-time round trips, the stiff Robertson problem, named
 * failures with the state left at the last accepted step, error norms, the CVODES adjoint
 * against a closed form, and the RK reverse step and tape against the exact discrete adjoint. The problems and their exact answers come from solvers/problems.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cnf/solver.h"
#include "problems.h"
#include "solvers/internal.h"

#define MAXD 16

static const cnf_stepper_type *method(const char *name)
{
    const cnf_stepper_type *T;
    cr_assert_eq(cnf_stepper_from_name(name, &T), CNF_OK, "%s: %s", name, cnf_errmsg());
    return T;
}

static const cnf_problem *problem(const char *name)
{
    const cnf_problem *p = cnf_problem_find(name);
    cr_assert_not_null(p, "problem %s", name);
    return p;
}

/* Solve problem p with method T (steps for fixed-step methods, rtol = atol = tol otherwise);
 * returns the solver's code, the final state in y and the error against the exact answer. */
static int run(const cnf_stepper_type *T, const cnf_problem *p, size_t steps, double tol,
               double *y, cnf_ode_stats *st, double *err)
{
    cnf_ode_solver *s;
    cnf_ode_options opt;
    double ref[MAXD];
    cr_assert_eq(cnf_ode_solver_create(&s, T, p->dim), CNF_OK);
    cnf_ode_options_default(&opt);
    opt.steps = steps;
    opt.rtol = opt.atol = tol;
    p->initial(y);
    int rc = cnf_ode_solve(s, p->f, NULL, p->t0, p->t1, y, &opt, NULL, NULL, st);
    cnf_ode_solver_free(s);
    cr_assert_eq(p->reference(ref), CNF_OK);
    *err = cnf_problem_error(p, y, ref);
    return rc;
}

/* ---- the type tables ------------------------------------------------------------------------ */

Test(solvers, names_and_lookup)
{
    static const char *names[] = {"euler", "midpoint", "rk4", "bosh3", "dopri5", "tsit5",
                                  "cvode-adams", "cvode-bdf"};
    cr_assert_eq(cnf_stepper_count(), 8);
    for (size_t i = 0; i < 8; i++) {
        const cnf_stepper_type *T = method(names[i]);
        cr_assert_eq(T, cnf_stepper_at(i));
        cr_assert_str_eq(cnf_stepper_name(T), names[i]);
        cr_assert_eq(cnf_stepper_is_adaptive(T), i >= 3);
        cr_assert_eq(cnf_stepper_is_cvodes(T), i >= 6);
        cr_assert_eq(cnf_stepper_tableau(T) == NULL, i >= 6);
    }
    const cnf_stepper_type *T = cnf_stepper_euler;
    cr_assert_eq(cnf_stepper_from_name("rk45", &T), CNF_ENAME);
    cr_assert_null(T);
    cr_assert(strstr(cnf_errmsg(), "rk45") && strstr(cnf_errmsg(), "cvode-bdf"), "%s",
              cnf_errmsg());
}

/* Σ_i w_i Π over the 17 rooted trees up to order 5 (Butcher; Hairer, Nørsett & Wanner I,
 * Table II.2.2): residual of the order-q conditions, max over trees of order <= q. */
static double order_residual(const cnf_rk_tableau *t, const double *w, unsigned q)
{
    size_t s = t->stages;
    double c2[16], c3[16], c4[16], Ac[16], Ac2[16], Ac3[16], AAc[16], AcAc[16], AAc2[16],
        AAAc[16];
    for (size_t i = 0; i < s; i++) {
        c2[i] = t->c[i] * t->c[i];
        c3[i] = c2[i] * t->c[i];
        c4[i] = c3[i] * t->c[i];
    }
#define MATVEC(out, v)                                                                         \
    for (size_t i = 0; i < s; i++) {                                                           \
        out[i] = 0;                                                                            \
        for (size_t j = 0; j < s; j++)                                                         \
            out[i] += t->a[i * s + j] * (v)[j];                                                \
    }
    MATVEC(Ac, t->c);
    MATVEC(Ac2, c2);
    MATVEC(Ac3, c3);
    MATVEC(AAc, Ac);
    for (size_t i = 0; i < s; i++)
        AcAc[i] = t->c[i] * Ac[i];
    double cAcAc[16];
    MATVEC(cAcAc, AcAc);
    MATVEC(AAc2, Ac2);
    MATVEC(AAAc, AAc);
#undef MATVEC
    struct { unsigned order; double want; double got; } cond[17] = {
        {1, 1.0, 0}, {2, 1.0 / 2, 0}, {3, 1.0 / 3, 0}, {3, 1.0 / 6, 0}, {4, 1.0 / 4, 0},
        {4, 1.0 / 8, 0}, {4, 1.0 / 12, 0}, {4, 1.0 / 24, 0}, {5, 1.0 / 5, 0}, {5, 1.0 / 10, 0},
        {5, 1.0 / 20, 0}, {5, 1.0 / 15, 0}, {5, 1.0 / 30, 0}, {5, 1.0 / 20, 0}, {5, 1.0 / 40, 0},
        {5, 1.0 / 60, 0}, {5, 1.0 / 120, 0},
    };
    for (size_t i = 0; i < s; i++) {
        double ci = t->c[i];
        double terms[17] = {1, ci, c2[i], Ac[i], c3[i], ci * Ac[i], Ac2[i], AAc[i], c4[i],
                            c2[i] * Ac[i], Ac[i] * Ac[i], ci * Ac2[i], ci * AAc[i], Ac3[i],
                            cAcAc[i], AAc2[i], AAAc[i]};
        for (size_t k = 0; k < 17; k++)
            cond[k].got += w[i] * terms[k];
    }
    double r = 0;
    for (size_t k = 0; k < 17; k++)
        if (cond[k].order <= q)
            r = fmax(r, fabs(cond[k].got - cond[k].want));
    return r;
}

Test(solvers, tableaus_satisfy_their_order_conditions)
{
    for (size_t m = 0; m < 6; m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        const cnf_rk_tableau *t = cnf_stepper_tableau(T);
        size_t s = t->stages;
        unsigned p = cnf_stepper_order(T);
        for (size_t i = 0; i < s; i++) {
            double row = 0;
            for (size_t j = 0; j < s; j++) {
                row += t->a[i * s + j];
                if (j >= i)
                    cr_assert_eq(t->a[i * s + j], 0.0, "%s: a not strictly lower", cnf_stepper_name(T));
            }
            cr_assert(fabs(row - t->c[i]) < 1e-14, "%s: row %zu sums to %g, c = %g",
                      cnf_stepper_name(T), i, row, t->c[i]);
            if (t->fsal)
                cr_assert_eq(t->a[(s - 1) * s + i], t->b[i], "%s: FSAL row != b",
                             cnf_stepper_name(T));
        }
        cr_assert(order_residual(t, t->b, p) < 1e-12, "%s: order %u residual %g",
                  cnf_stepper_name(T), p, order_residual(t, t->b, p));
        if (p < 5) /* and not one order higher */
            cr_assert(order_residual(t, t->b, p + 1) > 1e-3, "%s", cnf_stepper_name(T));
        if (t->e) {
            double bh[16];
            for (size_t i = 0; i < s; i++)
                bh[i] = t->b[i] - t->e[i];
            unsigned q = p - 1; /* every pair here is p(p−1) */
            cr_assert(order_residual(t, bh, q) < 1e-12, "%s: embedded order %u residual %g",
                      cnf_stepper_name(T), q, order_residual(t, bh, q));
            cr_assert(order_residual(t, bh, q + 1) > 1e-5, "%s: embedded is order %u too",
                      cnf_stepper_name(T), q + 1);
        }
    }
}

/* ---- 1. empirical orders of the fixed-step methods ------------------------------------------ */

static void check_order(const char *mname, const char *pname, size_t n0, double order)
{
    const cnf_stepper_type *T = method(mname);
    const cnf_problem *p = problem(pname);
    double y[MAXD], err[4];
    cnf_ode_stats st;
    for (size_t k = 0; k < 4; k++) {
        cr_assert_eq(run(T, p, n0 << k, 0, y, &st, &err[k]), CNF_OK, "%s", cnf_errmsg());
        cr_assert_eq(st.accepted, n0 << k);
        cr_assert_eq(st.nfe, (n0 << k) * cnf_stepper_tableau(T)->stages);
    }
    for (size_t k = 0; k + 1 < 4; k++) {
        double r = log2(err[k] / err[k + 1]);
        cr_assert(fabs(r - order) <= 0.3, "%s on %s: steps %zu -> %zu: errors %.3e -> %.3e, "
                  "log2 ratio %.3f, expected %g", mname, pname, n0 << k, n0 << (k + 1), err[k],
                  err[k + 1], r, order);
    }
}

Test(solvers, order_euler) { check_order("euler", "linear", 64, 1); check_order("euler", "sin1d", 64, 1); }
Test(solvers, order_midpoint) { check_order("midpoint", "linear", 32, 2); check_order("midpoint", "sin1d", 32, 2); }
Test(solvers, order_rk4) { check_order("rk4", "linear", 16, 4); check_order("rk4", "sin1d", 16, 4); }

/* ---- 2. adaptive accuracy and cost ---------------------------------------------------------- */

static void check_adaptive(const char *mname, const char *pname)
{
    const cnf_stepper_type *T = method(mname);
    const cnf_problem *p = problem(pname);
    double y[MAXD], err;
    size_t nfe[8], acc_prev = 0;
    for (int e = 3; e <= 10; e++) {
        double tol = pow(10.0, -e);
        cnf_ode_stats st;
        cr_assert_eq(run(T, p, 0, tol, y, &st, &err), CNF_OK, "%s: %s", mname, cnf_errmsg());
        cr_assert(err <= 100 * tol, "%s on %s at rtol %g: error %.3e > 100 rtol", mname, pname,
                  tol, err);
        cr_assert(st.accepted >= acc_prev, "%s on %s: %zu steps at rtol %g, fewer than %zu",
                  mname, pname, st.accepted, tol, acc_prev);
        /* NFE grows: per decade for the RK pairs; over every two decades for CVODES, whose
         * order selection can make a tighter run slightly cheaper (e.g. Adams on linear:
         * 83 evaluations at 1e-7, 76 at 1e-8). */
        if (cnf_stepper_is_cvodes(T))
            cr_assert(e < 5 || st.nfe > nfe[e - 5], "%s on %s: NFE %zu at rtol %g, not above "
                      "%zu at 100 rtol", mname, pname, st.nfe, tol, nfe[e - 5]);
        else
            cr_assert(e < 4 || st.nfe > nfe[e - 4], "%s on %s: NFE %zu at rtol %g, not above "
                      "%zu at 10 rtol", mname, pname, st.nfe, tol, nfe[e - 4]);
        nfe[e - 3] = st.nfe;
        acc_prev = st.accepted;
    }
}

Test(solvers, adaptive_bosh3) { check_adaptive("bosh3", "linear"); check_adaptive("bosh3", "sin1d"); }
Test(solvers, adaptive_dopri5) { check_adaptive("dopri5", "linear"); check_adaptive("dopri5", "sin1d"); }
Test(solvers, adaptive_tsit5) { check_adaptive("tsit5", "linear"); check_adaptive("tsit5", "sin1d"); }
Test(solvers, adaptive_cvode_adams) { check_adaptive("cvode-adams", "linear"); check_adaptive("cvode-adams", "sin1d"); }

/* The other problems with exact answers, at one tolerance, for every adaptive method. */
Test(solvers, adaptive_rotation_gaussian_all_methods)
{
    static const char *pn[] = {"rotation", "gaussian"};
    for (size_t m = 3; m < cnf_stepper_count(); m++)
        for (size_t k = 0; k < 2; k++) {
            double y[MAXD], err;
            cnf_ode_stats st;
            const cnf_stepper_type *T = cnf_stepper_at(m);
            cr_assert_eq(run(T, problem(pn[k]), 0, 1e-8, y, &st, &err), CNF_OK, "%s",
                         cnf_errmsg());
            cr_assert(err <= 1e-6, "%s on %s: error %.3e", cnf_stepper_name(T), pn[k], err);
        }
}

/* FSAL: s − 1 evaluations per attempted step, plus f(t0, y0) and the first-step trial. */
Test(solvers, fsal_costs_s_minus_1_evaluations_per_step)
{
    double y[MAXD], err;
    cnf_ode_stats st;
    for (size_t m = 3; m < 6; m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        size_t s = cnf_stepper_tableau(T)->stages;
        cr_assert_eq(run(T, problem("sin1d"), 0, 1e-7, y, &st, &err), CNF_OK);
        cr_assert_eq(st.nfe, 2 + (s - 1) * (st.accepted + st.rejected), "%s: nfe %zu, steps "
                     "%zu + %zu", cnf_stepper_name(T), st.nfe, st.accepted, st.rejected);
    }
}

/* ---- 3. forward then backward in time ------------------------------------------------------- */

Test(solvers, round_trip_dopri5)
{
    static const char *pn[] = {"linear", "sin1d", "rotation"};
    cnf_ode_solver *s;
    cnf_ode_options opt;
    cnf_ode_options_default(&opt);
    opt.rtol = opt.atol = 1e-10;
    for (size_t k = 0; k < 3; k++) {
        const cnf_problem *p = problem(pn[k]);
        double y0[MAXD], y[MAXD];
        cnf_ode_stats fw, bw;
        cr_assert_eq(cnf_ode_solver_create(&s, cnf_stepper_dopri5, p->dim), CNF_OK);
        p->initial(y0);
        memcpy(y, y0, sizeof y);
        cr_assert_eq(cnf_ode_solve(s, p->f, NULL, p->t0, p->t1, y, &opt, NULL, NULL, &fw), 0);
        cr_assert_eq(cnf_ode_solve(s, p->f, NULL, p->t1, p->t0, y, &opt, NULL, NULL, &bw), 0);
        cr_assert_eq(bw.t_reached, p->t0);
        cr_assert(bw.h_last < 0);
        for (size_t i = 0; i < p->dim; i++)
            cr_assert(fabs(y[i] - y0[i]) <= 1e-8, "%s: component %zu back at %.15g, started "
                      "at %.15g", pn[k], i, y[i], y0[i]);
        cnf_ode_solver_free(s);
    }
}

/* ---- 4. stiff: Robertson --------------------------------------------------------------------- */

Test(solvers, robertson_bdf_far_cheaper_than_dopri5)
{
    /* y2 stays below 4e-5, so atol must sit well under it for the error in y2 (which feeds
     * y1' and y3' through 1e4·y2·y3 over the whole span) to be controlled: rtol 1e-6 with
     * atol 1e-10. With rtol = atol = 1e-6 both methods are off by ~1e-4 (cnf solvers shows it). */
    const cnf_problem *p = problem("robertson");
    const cnf_stepper_type *types[2] = {cnf_stepper_cvode_bdf, cnf_stepper_dopri5};
    cnf_ode_stats st[2];
    double ref[3], err[2];
    const double rtol = 1e-6;
    cr_assert_eq(p->reference(ref), CNF_OK, "%s", cnf_errmsg());
    for (int k = 0; k < 2; k++) {
        cnf_ode_solver *s;
        cnf_ode_options opt;
        double y[3];
        cnf_ode_options_default(&opt);
        opt.rtol = rtol;
        opt.atol = 1e-10;
        cr_assert_eq(cnf_ode_solver_create(&s, types[k], 3), CNF_OK);
        p->initial(y);
        cr_assert_eq(cnf_ode_solve(s, p->f, NULL, p->t0, p->t1, y, &opt, NULL, NULL, &st[k]),
                     CNF_OK, "%s", cnf_errmsg());
        cnf_ode_solver_free(s);
        err[k] = cnf_problem_error(p, y, ref);
        cr_assert(err[k] <= 10 * rtol, "%s: error %.3e at rtol %g", cnf_stepper_name(types[k]),
                  err[k], rtol);
    }
    cr_assert(10 * st[0].nfe <= st[1].nfe, "BDF %zu RHS calls vs Dopri5 %zu", st[0].nfe,
              st[1].nfe);
}

/* ---- 5. failures ---------------------------------------------------------------------------- */

/* Records the last accepted step, to check that a failed solve leaves y there. */
typedef struct {
    double t_end;
    double y[MAXD];
    size_t n, dim;
} last_step;

static int record(double t, double h, const double *y_old, const double *y_new, void *ctx)
{
    last_step *ls = ctx;
    ls->t_end = t + h;
    memcpy(ls->y, y_new, ls->dim * sizeof *y_new);
    ls->n++;
    return 0;
}

static int nan_field(double t, const double *y, double *dy, void *ctx)
{
    dy[0] = t > 0.5 ? NAN : -y[0];
    return 0;
}

static int blowup(double t, const double *y, double *dy, void *ctx)
{
    dy[0] = y[0] * y[0];
    return 0;
}

/* -1 once t passes 0.7: a fatal RHS failure. */
static int fatal_late(double t, const double *y, double *dy, void *ctx)
{
    dy[0] = -y[0];
    return t > 0.7 ? -3 : 0;
}

/* Solve a scalar problem; returns the code and checks y == the last accepted state. */
static int fail_run(const cnf_stepper_type *T, cnf_ode_rhs f, double t1, size_t steps,
                    size_t max_steps, cnf_ode_stats *st, double *y)
{
    cnf_ode_solver *s;
    cnf_ode_options opt;
    last_step ls = {.t_end = 0, .y = {1.0}, .n = 0, .dim = 1};
    cnf_ode_options_default(&opt);
    opt.steps = steps;
    opt.max_steps = max_steps;
    cr_assert_eq(cnf_ode_solver_create(&s, T, 1), CNF_OK);
    y[0] = 1.0;
    int rc = cnf_ode_solve(s, f, NULL, 0.0, t1, y, &opt, record, &ls, st);
    cnf_ode_solver_free(s);
    cr_assert(rc < 0, "%s: solve returned %d", cnf_stepper_name(T), rc);
    cr_assert(strstr(cnf_errmsg(), cnf_stepper_name(T)), "%s: detail '%s' does not name the method",
              cnf_stepper_name(T), cnf_errmsg());
    cr_assert(isfinite(y[0]), "%s: y = %g", cnf_stepper_name(T), y[0]);
    cr_assert_eq(y[0], ls.y[0], "%s: y = %.17g, last accepted %.17g", cnf_stepper_name(T), y[0], ls.y[0]);
    cr_assert_eq(st->t_reached, ls.t_end, "%s: t_reached %.17g, last step ended at %.17g",
                 cnf_stepper_name(T), st->t_reached, ls.t_end);
    cr_assert_eq(st->accepted, ls.n);
    return rc;
}

/* Every method fails with code on a field that is y' = −y until it fails, stopping with t in
 * (t_lo, t_hi] on the decaying solution; with max_steps > 0, after exactly that many attempts. */
static void expect_failure(cnf_ode_rhs f, double t1, size_t max_steps, int code, double t_lo,
                           double t_hi)
{
    for (size_t m = 0; m < cnf_stepper_count(); m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        cnf_ode_stats st;
        double y[1];
        int rc = fail_run(T, f, t1, 100, max_steps, &st, y);
        cr_assert_eq(rc, code, "%s: %s (%s)", cnf_stepper_name(T), cnf_strerror(rc),
                     cnf_errmsg());
        cr_assert(st.t_reached > t_lo && st.t_reached <= t_hi, "%s: t %.17g",
                  cnf_stepper_name(T), st.t_reached);
        cr_assert(fabs(y[0] - exp(-st.t_reached)) < 1e-2, "%s: y %g at t %g",
                  cnf_stepper_name(T), y[0], st.t_reached);
        if (max_steps)
            cr_assert(st.accepted <= max_steps && st.accepted + st.rejected >= max_steps,
                      "%s: %zu + %zu steps", cnf_stepper_name(T), st.accepted, st.rejected);
    }
}

/* NaN from t > 0.5 on. Euler's step from 0.5 uses f(0.5) only and succeeds; every other
 * method fails in the step that first evaluates f beyond 0.5. */
Test(solvers, nan_field_is_enonfinite)
{
    expect_failure(nan_field, 1.0, 0, CNF_ENONFINITE, 0.3, 0.51 + 1e-12);
}

/* On [0, 0.5] the field is finite: only the step limit stops the solve. */
Test(solvers, max_steps_is_emax_steps)
{
    expect_failure(nan_field, 0.5, 3, CNF_EMAX_STEPS, 0.0, 0.5 - 1e-12);
}

Test(solvers, fatal_rhs_is_erhs)
{
    expect_failure(fatal_late, 1.0, 0, CNF_ERHS, 0.2, 0.7 + 1e-12);
}

Test(solvers, blowup_is_a_named_error)
{
    for (size_t m = 3; m < cnf_stepper_count(); m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        cnf_ode_stats st;
        double y[1];
        int rc = fail_run(T, blowup, 2.0, 0, 0, &st, y);
        cr_assert_eq(rc, CNF_ESTEP_UNDERFLOW, "%s: %s (%s)", cnf_stepper_name(T),
                     cnf_strerror(rc), cnf_errmsg());
        /* Stopped at the numerical solution's own singularity, which the global error
         * (relative, rtol 1e-6) moves off t = 1 by about 1e-6 (the RK pairs stop just after 1,
         * the CVODES ones just before). */
        cr_assert(fabs(st.t_reached - 1.0) < 1e-4, "%s: t %.17g", cnf_stepper_name(T),
                  st.t_reached);
        cr_assert(y[0] > 1e6, "%s: y %g at t %.17g", cnf_stepper_name(T), y[0], st.t_reached);
    }
    /* A fixed-step method cannot see the singularity; with enough steps it overflows. */
    cnf_ode_stats st;
    double y[1];
    cr_assert_eq(fail_run(cnf_stepper_euler, blowup, 2.0, 100, 0, &st, y), CNF_ENONFINITE);
    cr_assert_eq(fail_run(cnf_stepper_rk4, blowup, 2.0, 100, 0, &st, y), CNF_ENONFINITE);
}

/* Returns +1 (recoverable) from its 20th to its 24th call: adaptive methods retry. */
typedef struct { size_t calls; } flaky;
static int flaky_decay(double t, const double *y, double *dy, void *ctx)
{
    flaky *fl = ctx;
    fl->calls++;
    dy[0] = -y[0];
    return fl->calls >= 20 && fl->calls < 25 ? 1 : 0;
}

Test(solvers, recoverable_rhs_shrinks_the_step)
{
    for (size_t m = 0; m < cnf_stepper_count(); m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        cnf_ode_solver *s;
        cnf_ode_options opt;
        cnf_ode_stats st;
        flaky fl = {0};
        double y[1] = {1.0};
        cnf_ode_options_default(&opt);
        opt.rtol = opt.atol = 1e-8;
        cr_assert_eq(cnf_ode_solver_create(&s, T, 1), CNF_OK);
        int rc = cnf_ode_solve(s, flaky_decay, &fl, 0.0, 2.0, y, &opt, NULL, NULL, &st);
        cnf_ode_solver_free(s);
        cr_assert_eq(st.nfe, fl.calls, "%s: driver counted %zu, RHS saw %zu", cnf_stepper_name(T), st.nfe,
                     fl.calls);
        if (!cnf_stepper_is_adaptive(T)) {
            cr_assert_eq(rc, CNF_ERHS, "%s", cnf_stepper_name(T));
            continue;
        }
        cr_assert_eq(rc, CNF_OK, "%s: %s", cnf_stepper_name(T), cnf_errmsg());
        cr_assert(st.rejected >= 1, "%s", cnf_stepper_name(T));
        cr_assert(fabs(y[0] - exp(-2.0)) < 1e-6, "%s: %g", cnf_stepper_name(T), y[0]);
    }
}

/* The observer sees contiguous steps covering [t0, t1]; a non-zero return stops the solve. */
typedef struct { double t, y; size_t n, stop_at; } chain;
static int check_chain(double t, double h, const double *y_old, const double *y_new, void *ctx)
{
    chain *c = ctx;
    cr_assert_eq(t, c->t);
    cr_assert_eq(y_old[0], c->y);
    c->t = t + h;
    c->y = y_new[0];
    return ++c->n == c->stop_at ? 42 : 0;
}

Test(solvers, observer_sees_every_accepted_step)
{
    for (size_t m = 0; m < cnf_stepper_count(); m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        cnf_ode_solver *s;
        cnf_ode_options opt;
        cnf_ode_stats st;
        chain c = {.t = 0.0, .y = 1.0, .n = 0, .stop_at = 0};
        double y[1] = {1.0};
        cnf_ode_options_default(&opt);
        cr_assert_eq(cnf_ode_solver_create(&s, T, 1), CNF_OK);
        cr_assert_eq(cnf_ode_solve(s, blowup, NULL, 0.0, 0.5, y, &opt, check_chain, &c, &st), 0,
                     "%s: %s", cnf_stepper_name(T), cnf_errmsg());
        cr_assert_eq(c.n, st.accepted);
        cr_assert(fabs(c.t - 0.5) < 1e-15 && y[0] == c.y, "%s: ends at %.17g", cnf_stepper_name(T), c.t);
        cr_assert(st.accepted > 3, "%s", cnf_stepper_name(T));
        c = (chain){.t = 0.0, .y = 1.0, .n = 0, .stop_at = 3};
        y[0] = 1.0;
        cr_assert_eq(cnf_ode_solve(s, blowup, NULL, 0.0, 0.5, y, &opt, check_chain, &c, &st), 42,
                     "%s", cnf_stepper_name(T));
        cr_assert_eq(st.accepted, 3);
        cr_assert_eq(y[0], c.y); /* the stopping step was accepted */
        cnf_ode_solver_free(s);
    }
}

Test(solvers, invalid_options)
{
    cnf_ode_solver *s;
    cnf_ode_options opt;
    double y[4] = {1, 1, 1, 1};
    cr_assert_eq(cnf_ode_solver_create(&s, cnf_stepper_dopri5, 0), CNF_EINVAL);
    cr_assert_null(s);
    cr_assert_eq(cnf_ode_solver_create(&s, cnf_stepper_dopri5, 4), CNF_OK);
    cnf_ode_options_default(&opt);
    opt.rtol = opt.atol = 0;
    cr_assert_eq(cnf_ode_solve(s, blowup, NULL, 0, 1, y, &opt, NULL, NULL, NULL), CNF_EINVAL);
    cnf_ode_options_default(&opt);
    opt.block = 3;
    cr_assert_eq(cnf_ode_solve(s, blowup, NULL, 0, 1, y, &opt, NULL, NULL, NULL), CNF_EDIM);
    cnf_ode_options_default(&opt);
    cr_assert_eq(cnf_ode_solve(s, blowup, NULL, 0, NAN, y, &opt, NULL, NULL, NULL), CNF_EINVAL);
    cnf_ode_solver_free(s);
    cnf_ode_solver_free(NULL);
}

/* ---- error norms ---------------------------------------------------------------------------- */

/* 40 samples of x' = sin x: 39 at the fixed point 0 and one at x0 = 2. The RMS over the batch
 * lets the moving sample's error grow by about sqrt(40); the max-over-blocks norm does not. */
static int sin_batch(double t, const double *y, double *dy, void *ctx)
{
    for (size_t i = 0; i < 40; i++)
        dy[i] = sin(y[i]);
    return 0;
}

Test(solvers, max_block_norm_controls_every_sample)
{
    const double tol = 1e-6, exact = 2 * atan(tan(1.0) * exp(2.0));
    for (size_t m = 3; m < cnf_stepper_count(); m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        double err[2];
        for (int k = 0; k < 2; k++) {
            cnf_ode_solver *s;
            cnf_ode_options opt;
            double y[40] = {0};
            y[17] = 2.0;
            cnf_ode_options_default(&opt);
            opt.rtol = opt.atol = tol;
            opt.block = 1;
            opt.norm = k ? CNF_NORM_MAX_BLOCK : CNF_NORM_RMS;
            cr_assert_eq(cnf_ode_solver_create(&s, T, 40), CNF_OK);
            cr_assert_eq(cnf_ode_solve(s, sin_batch, NULL, 0, 2, y, &opt, NULL, NULL, NULL), 0);
            cnf_ode_solver_free(s);
            err[k] = fabs(y[17] - exact);
        }
        cr_assert(err[1] < err[0], "%s: max-block error %.3e not below RMS error %.3e",
                  cnf_stepper_name(T), err[1], err[0]);
        cr_assert(err[1] <= 100 * tol, "%s: %.3e", cnf_stepper_name(T), err[1]);
    }
}

/* Components outside block_ctrl (e.g. regularizer integrals) never shrink the step. */
static int with_wild_extra(double t, const double *y, double *dy, void *ctx)
{
    for (size_t b = 0; b < 3; b++) {
        dy[2 * b] = sin(y[2 * b]);
        dy[2 * b + 1] = 1e3 * cos(1e3 * t * (double)(b + 1));
    }
    return 0;
}

static int without_extra(double t, const double *y, double *dy, void *ctx)
{
    for (size_t b = 0; b < 3; b++)
        dy[b] = sin(y[b]);
    return 0;
}

Test(solvers, uncontrolled_components_do_not_shrink_steps)
{
    for (size_t m = 3; m < 6; m++) {
        const cnf_stepper_type *T = cnf_stepper_at(m);
        cnf_ode_solver *s2, *s1;
        cnf_ode_options opt;
        cnf_ode_stats st2, st1;
        double y2[6] = {0.5, 0, 1.0, 0, 2.0, 0}, y1[3] = {0.5, 1.0, 2.0};
        cnf_ode_options_default(&opt);
        cr_assert_eq(cnf_ode_solver_create(&s1, T, 3), CNF_OK);
        cr_assert_eq(cnf_ode_solve(s1, without_extra, NULL, 0, 2, y1, &opt, NULL, NULL, &st1), 0);
        opt.block = 2;
        opt.block_ctrl = 1;
        cr_assert_eq(cnf_ode_solver_create(&s2, T, 6), CNF_OK);
        cr_assert_eq(cnf_ode_solve(s2, with_wild_extra, NULL, 0, 2, y2, &opt, NULL, NULL, &st2),
                     0);
        cr_assert_eq(st2.accepted, st1.accepted, "%s", cnf_stepper_name(T));
        cr_assert_eq(st2.nfe, st1.nfe, "%s", cnf_stepper_name(T));
        for (size_t b = 0; b < 3; b++)
            cr_assert_eq(y2[2 * b], y1[b], "%s", cnf_stepper_name(T));
        cnf_ode_solver_free(s1);
        cnf_ode_solver_free(s2);
    }
}

/* ---- CVODES checkpointed adjoint: y' = a y, L = ½ y(T)²  (DESIGN.md §3) ----------------------
 * λ' = −a λ, λ(T) = y(T); q' = −y λ (∂f/∂a = y): λ(0) = dL/dy0 = y0 e^{2aT}, q(0) = dL/da =
 * T y0² e^{2aT}. */
typedef struct { double a; } decay;

static int lin_f(double t, const double *y, double *dy, void *ctx)
{
    dy[0] = ((decay *)ctx)->a * y[0];
    return 0;
}

static int lin_g(double t, const double *y, const double *lam, double *out, void *ctx)
{
    out[0] = -((decay *)ctx)->a * lam[0];
    return 0;
}

static int lin_gq(double t, const double *y, const double *lam, double *out, void *ctx)
{
    out[0] = -y[0] * lam[0];
    return 0;
}

/* The exact J·v of f and of g, for cvode-bdf. */
static int lin_jvp(double t, const double *y, const double *v, double *Jv, void *ctx)
{
    Jv[0] = ((decay *)ctx)->a * v[0];
    return 0;
}

static int lin_gj(double t, const double *y, const double *lam, const double *v, double *Jv,
                  void *ctx)
{
    Jv[0] = -((decay *)ctx)->a * v[0];
    return 0;
}

Test(solvers, cvodes_adjoint_closed_form)
{
    const cnf_stepper_type *types[2] = {cnf_stepper_cvode_adams, cnf_stepper_cvode_bdf};
    const double y0 = 1.3, T = 1.5;
    const double as[2] = {-0.7, 0.4};
    /* m = 2: cvode-bdf with the exact J·v forward and backward. */
    for (size_t m = 0; m < 3; m++)
        for (size_t k = 0; k < 2; k++) {
            const int exact = m == 2;
            decay d = {as[k]};
            cnf_cvodes_adj *adj;
            cnf_ode_options opt;
            cnf_ode_stats fst, bst;
            double y = y0, lam, q;
            cnf_ode_options_default(&opt);
            opt.rtol = opt.atol = 1e-10;
            opt.jvp = exact ? lin_jvp : NULL;
            const cnf_stepper_type *Tm = types[exact ? 1 : m];
            cr_assert_eq(cnf_cvodes_adj_create(&adj, Tm, 1, 1, 1, 20), CNF_OK, "%s",
                         cnf_errmsg());
            cr_assert_eq(cnf_cvodes_adj_forward(adj, lin_f, &d, 0, T, &y, &opt, &fst), 0, "%s",
                         cnf_errmsg());
            cr_assert(fabs(y - y0 * exp(d.a * T)) < 1e-8);
            lam = y; /* ∂L/∂y(T) */
            cr_assert_eq(cnf_cvodes_adj_backward(adj, lin_g, lin_gq, exact ? lin_gj : NULL, &d,
                                                 &lam, &q, &opt, &bst),
                         0, "%s", cnf_errmsg());
            double e2 = exp(2 * d.a * T);
            cr_assert(fabs(lam - y0 * e2) <= 1e-7 * y0 * e2, "%s a=%g: dL/dy0 %.12g vs %.12g",
                      cnf_stepper_name(Tm), d.a, lam, y0 * e2);
            cr_assert(fabs(q - T * y0 * y0 * e2) <= 1e-7 * T * y0 * y0 * e2,
                      "%s a=%g: dL/da %.12g vs %.12g", cnf_stepper_name(Tm), d.a, q,
                      T * y0 * y0 * e2);
            cr_assert(fst.nfe > 0 && bst.nfe > 0 && bst.accepted > 0);
            /* The J·v callbacks are used exactly when given. */
            cr_assert(exact ? fst.njvp > 0 && bst.njvp > 0 : fst.njvp == 0 && bst.njvp == 0,
                      "%s: njvp forward %zu, backward %zu", cnf_stepper_name(Tm), fst.njvp,
                      bst.njvp);
            cnf_cvodes_adj_free(adj);
        }
    cnf_cvodes_adj *adj;
    cr_assert_eq(cnf_cvodes_adj_create(&adj, cnf_stepper_dopri5, 1, 1, 1, 20), CNF_EINVAL);
    cnf_cvodes_adj_free(NULL);
}

/* ---- cvode-bdf with uncontrolled components and an exact J·v ---------------------------------
 * Three "samples" in the layout of a CNF's state, (x1, x2, ℓ, E) each, with x' = A x,
 * A = [[−½, 3], [−3, −½]], ℓ' = −tr A = 1 and E' = |x|², E uncontrolled (block 4, block_ctrl 3):
 * x(t) = e^{−t/2} R(3t) x0, ℓ(t) = t, E(t) = |x0|² (1 − e^{−t}). J·w = (A w_x, 0, 2 x·w_x). */
#define UC_N 3

static int uc_f(double t, const double *y, double *dy, void *ctx)
{
    for (size_t i = 0; i < UC_N; i++) {
        const double *s = y + 4 * i;
        double *o = dy + 4 * i;
        o[0] = -0.5 * s[0] + 3.0 * s[1];
        o[1] = -3.0 * s[0] - 0.5 * s[1];
        o[2] = 1.0;
        o[3] = s[0] * s[0] + s[1] * s[1];
    }
    return 0;
}

static int uc_jvp(double t, const double *y, const double *v, double *Jv, void *ctx)
{
    int *calls = ctx;
    ++*calls;
    for (size_t i = 0; i < UC_N; i++) {
        const double *s = y + 4 * i, *w = v + 4 * i;
        double *o = Jv + 4 * i;
        o[0] = -0.5 * w[0] + 3.0 * w[1];
        o[1] = -3.0 * w[0] - 0.5 * w[1];
        o[2] = 0.0;
        o[3] = 2.0 * (s[0] * w[0] + s[1] * w[1]);
    }
    return 0;
}

/* A zero error weight on the uncontrolled E broke the scaling of cvode-bdf's Krylov solver: its
 * Newton iteration failed and it rejected most steps. With and without the exact J·v it now
 * agrees with the exact solution and with Dopri5, and rejects few steps. */
Test(solvers, cvode_bdf_uncontrolled_components_exact_jvp)
{
    const double x0[UC_N][2] = {{1.0, 0.0}, {-0.5, 2.0}, {0.3, -1.2}}, t1 = 2.0;
    double exact[4 * UC_N], ydp[4 * UC_N] = {0};
    for (size_t i = 0; i < UC_N; i++) {
        double c = cos(3 * t1), s = sin(3 * t1), e = exp(-0.5 * t1);
        exact[4 * i] = e * (c * x0[i][0] + s * x0[i][1]);
        exact[4 * i + 1] = e * (-s * x0[i][0] + c * x0[i][1]);
        exact[4 * i + 2] = t1;
        exact[4 * i + 3] = (x0[i][0] * x0[i][0] + x0[i][1] * x0[i][1]) * (1 - exp(-t1));
    }
    const cnf_stepper_type *types[3] = {cnf_stepper_dopri5, cnf_stepper_cvode_bdf,
                                        cnf_stepper_cvode_bdf};
    for (int k = 0; k < 3; k++) {
        cnf_ode_solver *s;
        cnf_ode_options opt;
        cnf_ode_stats st;
        double y[4 * UC_N];
        int calls = 0;
        cr_assert_eq(cnf_ode_solver_create(&s, types[k], 4 * UC_N), CNF_OK);
        cnf_ode_options_default(&opt);
        opt.rtol = opt.atol = 1e-8;
        opt.block = 4;
        opt.block_ctrl = 3;
        opt.jvp = k == 2 ? uc_jvp : NULL;
        memset(y, 0, sizeof y);
        for (size_t i = 0; i < UC_N; i++)
            memcpy(y + 4 * i, x0[i], sizeof x0[i]);
        cr_assert_eq(cnf_ode_solve(s, uc_f, &calls, 0.0, t1, y, &opt, NULL, NULL, &st), CNF_OK,
                     "%s: %s", cnf_stepper_name(types[k]), cnf_errmsg());
        cnf_ode_solver_free(s);
        if (k == 0)
            memcpy(ydp, y, sizeof y);
        double err = 0, vs_dp = 0;
        for (size_t i = 0; i < 4 * UC_N; i++) {
            err = fmax(err, fabs(y[i] - exact[i]));
            vs_dp = fmax(vs_dp, fabs(y[i] - ydp[i]));
        }
        cr_assert(10 * st.rejected < st.accepted + st.rejected,
                  "%s (jvp %d): %zu of %zu steps rejected", cnf_stepper_name(types[k]), k == 2,
                  st.rejected, st.accepted + st.rejected);
        cr_assert(err < 1e-5 && vs_dp < 1e-5, "%s (jvp %d): error %g, vs dopri5 %g",
                  cnf_stepper_name(types[k]), k == 2, err, vs_dp);
        cr_assert_eq(st.njvp, (size_t)calls, "njvp %zu counts the %d calls", st.njvp, calls);
        cr_assert(k == 2 ? calls > 0 : calls == 0);
    }
}

/* Sizes that cannot be addressed fail cleanly instead of wrapping round. */
Test(solvers, huge_dimensions_fail_cleanly)
{
    cnf_ode_solver *s = (cnf_ode_solver *)1;
    cr_assert_eq(cnf_ode_solver_create(&s, cnf_stepper_dopri5, SIZE_MAX / 4), CNF_ENOMEM);
    cr_assert_null(s);
    cr_assert_eq(cnf_ode_solver_create(&s, cnf_stepper_cvode_bdf, SIZE_MAX / 8 + 1), CNF_ENOMEM);
    cnf_cvodes_adj *adj = (cnf_cvodes_adj *)1;
    cr_assert_eq(cnf_cvodes_adj_create(&adj, cnf_stepper_cvode_adams, 4, SIZE_MAX / 4, 1, 10),
                 CNF_ENOMEM);
    cr_assert_null(adj);
}

