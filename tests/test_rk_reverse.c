/* The reverse of the explicit RK engine (solvers/erk_reverse.c): one step and a taped solve,
 * against the exact discrete adjoint of a linear ODE, for every explicit tableau. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cnf/solver.h"
#include "solvers/internal.h"

static const cnf_stepper_type *method(const char *name)
{
    const cnf_stepper_type *T;
    cr_assert_eq(cnf_stepper_from_name(name, &T), CNF_OK, "%s: %s", name, cnf_errmsg());
    return T;
}


/* A linear ODE y' = A(t) y with A(t) = A0 + t A1 (fixed, non-symmetric): one RK step is linear
 * in y_n, y_{n+1} = P y_n, and its exact discrete adjoint is λ_n = Pᵀ λ_{n+1}. */
enum { RD = 4 };
static const double A0[RD * RD] = {-0.5, 1.2, 0.3, 0.0, -0.8, -0.1, 0.7, 0.4,
                                   0.2,  -0.6, 0.1, 0.9, 0.5, 0.0,  -0.9, -0.3};
static const double A1[RD * RD] = {0.1, 0.0, -0.4, 0.2, 0.3, -0.2, 0.0, 0.1,
                                   0.0, 0.5, 0.2,  -0.1, -0.3, 0.1, 0.4, 0.0};

static void lin_apply(double t, const double *y, double *dy, int transpose)
{
    for (size_t i = 0; i < RD; i++) {
        double s = 0.0;
        for (size_t j = 0; j < RD; j++) {
            size_t ij = transpose ? j * RD + i : i * RD + j;
            s += (A0[ij] + t * A1[ij]) * y[j];
        }
        dy[i] = s;
    }
}

static int rev_f(double t, const double *y, double *dy, void *ctx)
{
    (void)ctx;
    lin_apply(t, y, dy, 0);
    return 0;
}

static int rev_vjp(void *ctx, double t, const double *y, const double *w, double *gy)
{
    (void)y;
    double g[RD];
    lin_apply(t, w, g, 1); /* wᵀ A(t) = (A(t)ᵀ w)ᵀ */
    for (size_t i = 0; i < RD; i++)
        gy[i] += g[i];
    ++*(size_t *)ctx;
    return 0;
}

/* One step of tab from (t, y) of size h by the tableau's formula, written here independently of
 * the engine; the arguments of stages 2..s into ys (s - 1 rows) if not NULL. */
static void tableau_step(const cnf_rk_tableau *tab, double t, double h, const double *y,
                         double *out, double *ys)
{
    double k[16][RD], Y[RD];
    cr_assert(tab->stages <= 16);
    for (size_t i = 0; i < tab->stages; i++) {
        for (size_t m = 0; m < RD; m++) {
            Y[m] = y[m];
            for (size_t j = 0; j < i; j++)
                Y[m] += h * tab->a[i * tab->stages + j] * k[j][m];
        }
        if (ys && i)
            memcpy(ys + (i - 1) * RD, Y, sizeof Y);
        lin_apply(t + tab->c[i] * h, Y, k[i], 0);
    }
    for (size_t m = 0; m < RD; m++) {
        out[m] = y[m];
        for (size_t i = 0; i < tab->stages; i++)
            out[m] += h * tab->b[i] * k[i][m];
    }
}

/* P (row-major) of the steps (t_n, h_n), n = 0..len-1 in order, by stepping the basis vectors. */
static void propagator(const cnf_rk_tableau *tab, const double *t, const double *h, size_t len,
                       double *P)
{
    for (size_t c = 0; c < RD; c++) {
        double y[RD] = {0}, z[RD];
        y[c] = 1.0;
        for (size_t n = 0; n < len; n++) {
            tableau_step(tab, t[n], h[n], y, z, NULL);
            memcpy(y, z, sizeof y);
        }
        for (size_t r = 0; r < RD; r++)
            P[r * RD + c] = y[r];
    }
}

static double max_rel(const double *a, const double *b, size_t n)
{
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return e / s;
}

/* λ_n = Pᵀ λ_{n+1} of the step's own propagator, as the sum over output components. */
static void adjoint_by_propagator(const double *P, const double *lam, double *out)
{
    for (size_t c = 0; c < RD; c++) {
        out[c] = 0.0;
        for (size_t r = 0; r < RD; r++)
            out[c] += P[r * RD + c] * lam[r];
    }
}

/* A par_for that splits the range in three uneven pieces: the results must not change by a bit. */
static void split3(void *par_ctx, size_t n, void (*fn)(void *, size_t, size_t), void *arg)
{
    (void)par_ctx;
    size_t a = n / 3, b = n - n / 4;
    fn(arg, 0, a);
    fn(arg, a, b);
    fn(arg, b, n);
}

/* One reverse step of RK4 and Dopri5 (7 stages, FSAL, last weight zero) against Pᵀ λ, to 1e-13,
 * with the stage arguments the tableau gives; the same bits through a par_for. */
Test(rk_reverse, rk_reverse_step_is_the_discrete_adjoint)
{
    static const char *names[] = {"rk4", "dopri5", "bosh3", "tsit5", "midpoint"};
    for (size_t m = 0; m < sizeof names / sizeof *names; m++) {
        const cnf_rk_tableau *tab = cnf_stepper_tableau(method(names[m]));
        cr_assert_not_null(tab, "%s", names[m]);
        const double t = 0.3, h = 0.25, yn[RD] = {0.7, -1.1, 0.4, 2.0};
        double ys[15 * RD], y1[RD], P[RD * RD], want[RD];
        tableau_step(tab, t, h, yn, y1, ys);
        propagator(tab, &t, &h, 1, P);
        const double lam0[RD] = {1.3, -0.2, 0.5, -0.9};
        adjoint_by_propagator(P, lam0, want);
        double work[17 * RD], lam[RD], lam_par[RD];
        cr_assert_leq(cnf_rk_reverse_work_len(tab, RD), sizeof work / sizeof *work);
        for (int par = 0; par < 2; par++) {
            double *l = par ? lam_par : lam;
            memset(work, 0, sizeof work);
            memcpy(l, lam0, sizeof lam0);
            size_t calls = 0;
            cr_assert_eq(cnf_rk_reverse_step(tab, t, h, yn, ys, RD, l, work, rev_vjp, &calls,
                                             par ? split3 : NULL, NULL), CNF_OK);
            /* One VJP per stage up to the last with a non-zero weight (Dopri5's 7th has none). */
            size_t used = 0;
            for (size_t i = 0; i < tab->stages; i++)
                if (tab->b[i] != 0.0)
                    used = i + 1;
            cr_assert_eq(calls, used, "%s: %zu VJPs", names[m], calls);
            for (size_t i = cnf_rk_reverse_work_len(tab, RD) - RD;
                 i < cnf_rk_reverse_work_len(tab, RD); i++)
                cr_assert(work[i] == 0.0, "%s: the zeroed scratch is left dirty", names[m]);
        }
        double e = max_rel(lam, want, RD);
        cr_assert(e < 1e-13, "%s: reverse step vs Pᵀ λ: relative error %.3g", names[m], e);
        cr_assert(memcmp(lam, lam_par, sizeof lam) == 0, "%s: par_for changed the bits",
                  names[m]);
    }
}

/* A whole solve recorded on a tape (RK4 with 12 fixed steps, Dopri5 adaptive with its own step
 * sizes) and reversed: ∂(λᵀ y(T))/∂y(0) = Pᵀ λ with P the product of the taped steps'
 * propagators; the tape's states are the ones those steps give from y(0). */
Test(rk_reverse, rk_tape_reverse_is_the_discrete_adjoint)
{
    static const char *names[] = {"rk4", "dopri5"};
    for (size_t m = 0; m < 2; m++) {
        const cnf_stepper_type *T = method(names[m]);
        const cnf_rk_tableau *tab = cnf_stepper_tableau(T);
        cnf_ode_solver *s;
        cr_assert_eq(cnf_ode_solver_create(&s, T, RD), CNF_OK);
        cnf_ode_options opt;
        cnf_ode_options_default(&opt);
        opt.steps = 12;
        opt.rtol = opt.atol = 1e-7;
        cnf_rk_tape tp = {0};
        cr_assert_eq(cnf_rk_tape_begin(&tp, s, RD, 1), CNF_OK, "%s", cnf_errmsg());
        const double y0[RD] = {0.7, -1.1, 0.4, 2.0};
        double y[RD];
        memcpy(y, y0, sizeof y);
        cr_assert_eq(cnf_ode_solve(s, rev_f, NULL, 0.0, 1.5, y, &opt, cnf_rk_tape_record, &tp,
                                   NULL), CNF_OK, "%s: %s", names[m], cnf_errmsg());
        cr_assert_geq(tp.len, 4, "%s: %zu steps", names[m], tp.len);
        double *P = malloc(RD * RD * sizeof *P), yP[RD], want[RD];
        propagator(tab, tp.t, tp.h, tp.len, P);
        for (size_t r = 0; r < RD; r++) { /* P y(0) is the solver's y(T) */
            yP[r] = 0.0;
            for (size_t c = 0; c < RD; c++)
                yP[r] += P[r * RD + c] * y0[c];
        }
        cr_assert(max_rel(y, yP, RD) < 1e-13, "%s: the taped steps are not the solve's",
                  names[m]);
        const double lam0[RD] = {1.3, -0.2, 0.5, -0.9};
        adjoint_by_propagator(P, lam0, want);
        double lam[RD], work[17 * RD];
        memcpy(lam, lam0, sizeof lam);
        for (size_t i = 0; i < sizeof work / sizeof *work; i++)
            work[i] = 1e300; /* any contents */
        size_t calls = 0;
        cr_assert_eq(cnf_rk_tape_reverse(&tp, lam, work, rev_vjp, &calls, NULL, NULL), CNF_OK);
        double e = max_rel(lam, want, RD);
        cr_assert(e < 1e-13, "%s: tape reverse vs Pᵀ λ over %zu steps: relative error %.3g",
                  names[m], tp.len, e);
        /* A tape recorded without its stages cannot be reversed; a clear error, not a crash. */
        cr_assert_eq(cnf_rk_tape_begin(&tp, s, RD, 0), CNF_OK);
        cr_assert_eq(cnf_rk_tape_reverse(&tp, lam, work, rev_vjp, &calls, NULL, NULL),
                     CNF_EINVAL);
        cnf_rk_tape_free(&tp);
        free(P);
        cnf_ode_solver_free(s);
    }
}
