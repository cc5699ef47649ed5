/* Solver test problems with exact answers (DESIGN.md §3); see problems.h. */
#include <math.h>
#include <string.h>

#include <gsl/gsl_linalg.h>
#include <gsl/gsl_matrix.h>

#include "problems.h"

static void max_abs_errors(const double *y, const double *ref, size_t n, double *err_x)
{
    *err_x = 0;
    for (size_t i = 0; i < n; i++)
        *err_x = fmax(*err_x, fabs(y[i] - ref[i]));
}

/* ---- linear: x' = A x, 4-d, x(T) = expm(T A) x0 (GSL's scaling-and-squaring expm) ---------- */
enum { LIN_D = 4 };
static const double lin_A[LIN_D * LIN_D] = {
    -0.1, 1.0,  0.0,  0.0,
    -1.0, -0.1, 0.5,  0.0,
    0.0,  0.0,  -0.3, 2.0,
    0.0,  0.2,  -2.0, -0.3,
};
#define LIN_T 2.0

static int linear_f(double t, const double *x, double *dx, void *ctx)
{
    for (size_t i = 0; i < LIN_D; i++) {
        dx[i] = 0;
        for (size_t j = 0; j < LIN_D; j++)
            dx[i] += lin_A[i * LIN_D + j] * x[j];
    }
    return 0;
}

static void linear_initial(double *x) { memcpy(x, (double[]){1.0, 0.0, -0.5, 0.5}, 4 * sizeof *x); }

static int linear_reference(double *x)
{
    double TA[LIN_D * LIN_D], E[LIN_D * LIN_D], x0[LIN_D];
    for (size_t i = 0; i < LIN_D * LIN_D; i++)
        TA[i] = LIN_T * lin_A[i];
    gsl_matrix_view mTA = gsl_matrix_view_array(TA, LIN_D, LIN_D);
    gsl_matrix_view mE = gsl_matrix_view_array(E, LIN_D, LIN_D);
    if (gsl_linalg_exponential_ss(&mTA.matrix, &mE.matrix, GSL_PREC_DOUBLE))
        return CNF_ESOLVER;
    linear_initial(x0);
    for (size_t i = 0; i < LIN_D; i++) {
        x[i] = 0;
        for (size_t j = 0; j < LIN_D; j++)
            x[i] += E[i * LIN_D + j] * x0[j];
    }
    return CNF_OK;
}

static void linear_errors(const double *y, const double *ref, double *ex, double *el)
{
    max_abs_errors(y, ref, LIN_D, ex);
    *el = 0;
}

/* ---- rotation: x' = Ω x with Ω = [[0, −ω], [ω, 0]]: x(T) = R(ωT) x0, ||x|| preserved -------- */
#define ROT_W 2.0
#define ROT_T 3.0

static int rotation_f(double t, const double *x, double *dx, void *ctx)
{
    dx[0] = -ROT_W * x[1];
    dx[1] = ROT_W * x[0];
    return 0;
}

static void rotation_initial(double *x)
{
    x[0] = 1.0;
    x[1] = 0.5;
}

static int rotation_reference(double *x)
{
    double x0[2], c = cos(ROT_W * ROT_T), s = sin(ROT_W * ROT_T);
    rotation_initial(x0);
    x[0] = c * x0[0] - s * x0[1];
    x[1] = s * x0[0] + c * x0[1];
    return CNF_OK;
}

static void rotation_errors(const double *y, const double *ref, double *ex, double *el)
{
    max_abs_errors(y, ref, 2, ex);
    *el = 0;
}

/* ---- sin1d: x' = sin x for 4 independent starting points, x(T) = 2 atan(tan(x0/2) e^T) ------ */
enum { SIN_N = 4 };
#define SIN_T 2.0

static int sin1d_f(double t, const double *x, double *dx, void *ctx)
{
    for (size_t i = 0; i < SIN_N; i++)
        dx[i] = sin(x[i]);
    return 0;
}

static void sin1d_initial(double *x)
{
    memcpy(x, (double[]){-2.5, -1.0, 0.5, 2.0}, SIN_N * sizeof *x);
}

static int sin1d_reference(double *x)
{
    sin1d_initial(x);
    for (size_t i = 0; i < SIN_N; i++)
        x[i] = 2 * atan(tan(x[i] / 2) * exp(SIN_T));
    return CNF_OK;
}

static void sin1d_errors(const double *y, const double *ref, double *ex, double *el)
{
    max_abs_errors(y, ref, SIN_N, ex);
    *el = 0;
}

/* ---- gaussian: the Gaussian-to-Gaussian flow of DESIGN.md §3 in d = 2, three samples, each
 * with state (x, ℓ), ℓ' = −div v = −d (s1 − s0)/σ_t. μ_t = (1−t) m0 + t m1, σ_t = (1−t) s0 + t s1,
 * v = (m1 − m0) + (s1 − s0)(x − μ_t)/σ_t; x(1) = m1 + s1 (x0 − m0)/s0, ℓ(1) = −d log(s1/s0);
 * log p(x0) = log N(x(1); m1, s1² I) − ℓ(1). ------------------------------------------------ */
enum { GAU_D = 2, GAU_N = 3, GAU_B = GAU_D + 1 };
static const double gau_m0[GAU_D] = {0.0, 0.0}, gau_m1[GAU_D] = {2.0, -1.0};
static const double gau_s0 = 1.0, gau_s1 = 0.5;

static int gaussian_f(double t, const double *y, double *dy, void *ctx)
{
    double sig = (1 - t) * gau_s0 + t * gau_s1, ds = gau_s1 - gau_s0;
    for (size_t n = 0; n < GAU_N; n++) {
        const double *x = y + n * GAU_B;
        double *dx = dy + n * GAU_B;
        for (size_t k = 0; k < GAU_D; k++) {
            double mu = (1 - t) * gau_m0[k] + t * gau_m1[k];
            dx[k] = (gau_m1[k] - gau_m0[k]) + ds * (x[k] - mu) / sig;
        }
        dx[GAU_D] = -(double)GAU_D * ds / sig;
    }
    return 0;
}

static void gaussian_initial(double *y)
{
    static const double x0[GAU_N][GAU_D] = {{0.3, -0.7}, {-1.2, 0.4}, {2.0, 1.5}};
    for (size_t n = 0; n < GAU_N; n++) {
        for (size_t k = 0; k < GAU_D; k++)
            y[n * GAU_B + k] = x0[n][k];
        y[n * GAU_B + GAU_D] = 0.0;
    }
}

static int gaussian_reference(double *y)
{
    gaussian_initial(y);
    for (size_t n = 0; n < GAU_N; n++) {
        for (size_t k = 0; k < GAU_D; k++)
            y[n * GAU_B + k] = gau_m1[k] + gau_s1 * (y[n * GAU_B + k] - gau_m0[k]) / gau_s0;
        y[n * GAU_B + GAU_D] = -(double)GAU_D * log(gau_s1 / gau_s0);
    }
    return CNF_OK;
}

/* log p(x0) = log N(z; m1, s1² I) − ℓ(1) for one sample's final state (z, ℓ). */
static double gaussian_logp(const double *s)
{
    double q = 0;
    for (size_t k = 0; k < GAU_D; k++)
        q += (s[k] - gau_m1[k]) * (s[k] - gau_m1[k]);
    return -0.5 * GAU_D * log(2 * M_PI) - GAU_D * log(gau_s1) - 0.5 * q / (gau_s1 * gau_s1) -
           s[GAU_D];
}

static void gaussian_errors(const double *y, const double *ref, double *ex, double *el)
{
    *ex = *el = 0;
    for (size_t n = 0; n < GAU_N; n++) {
        for (size_t k = 0; k < GAU_D; k++)
            *ex = fmax(*ex, fabs(y[n * GAU_B + k] - ref[n * GAU_B + k]));
        *el = fmax(*el, fabs(gaussian_logp(y + n * GAU_B) - gaussian_logp(ref + n * GAU_B)));
    }
}

/* ---- robertson: the stiff chemical kinetics of H. H. Robertson (1966), as in Hairer & Wanner
 * II §IV.1 and SUNDIALS' cvRoberts_dns: y1' = −0.04 y1 + 1e4 y2 y3, y3' = 3e7 y2²,
 * y2' = −y1' − y3', y(0) = (1, 0, 0), over [0, 40]. ------------------------------------------ */
#define ROB_T 40.0

static int robertson_f(double t, const double *y, double *dy, void *ctx)
{
    double r1 = 0.04 * y[0], r2 = 1e4 * y[1] * y[2], r3 = 3e7 * y[1] * y[1];
    dy[0] = -r1 + r2;
    dy[1] = r1 - r2 - r3;
    dy[2] = r3;
    return 0;
}

static void robertson_initial(double *y)
{
    y[0] = 1.0;
    y[1] = y[2] = 0.0;
}

/* A tight explicit solution: dopri5's steps are limited by stability here, so a tight tolerance
 * costs little more than a loose one, and the reference does not come from the BDF method
 * that the comparison is about. */
static int robertson_reference(double *y)
{
    cnf_ode_solver *s;
    cnf_ode_options opt;
    int rc = cnf_ode_solver_create(&s, cnf_stepper_dopri5, 3);
    if (rc)
        return rc;
    cnf_ode_options_default(&opt);
    opt.rtol = 1e-12;
    opt.atol = 1e-16;
    opt.max_steps = 1000000;
    robertson_initial(y);
    rc = cnf_ode_solve(s, robertson_f, NULL, 0.0, ROB_T, y, &opt, NULL, NULL, NULL);
    cnf_ode_solver_free(s);
    return rc;
}

static void robertson_errors(const double *y, const double *ref, double *ex, double *el)
{
    max_abs_errors(y, ref, 3, ex);
    *el = 0;
}

static const cnf_problem problems[] = {
    {"linear", "x' = A x, 4-d (A fixed, non-normal, decaying spirals), t in [0, 2]; exact "
     "x(2) = expm(2A) x0", LIN_D, LIN_D, 0.0, LIN_T, linear_f, linear_initial, linear_reference,
     linear_errors},
    {"rotation", "x' = [[0, -2], [2, 0]] x (skew field), 2-d, t in [0, 3]; exact rotation by 6 "
     "rad", 2, 2, 0.0, ROT_T, rotation_f, rotation_initial, rotation_reference, rotation_errors},
    {"sin1d", "x' = sin x for 4 starting points, t in [0, 2]; exact 2 atan(tan(x0/2) e^t)",
     SIN_N, 1, 0.0, SIN_T, sin1d_f, sin1d_initial, sin1d_reference, sin1d_errors},
    {"gaussian", "flow from N(0, I) to N((2, -1), 0.25 I) in 2-d, 3 samples, state (x, log p "
     "change), t in [0, 1]; error is max of the errors in x and in log p", GAU_N * GAU_B, GAU_B,
     0.0, 1.0, gaussian_f, gaussian_initial, gaussian_reference, gaussian_errors},
    {"robertson", "stiff Robertson kinetics, 3-d, t in [0, 40]; error vs a dopri5 reference at "
     "rtol 1e-12, atol 1e-16", 3, 3, 0.0, ROB_T, robertson_f, robertson_initial,
     robertson_reference, robertson_errors},
};

size_t cnf_problem_count(void) { return sizeof problems / sizeof problems[0]; }

const cnf_problem *cnf_problem_at(size_t i)
{
    return i < cnf_problem_count() ? &problems[i] : NULL;
}

const cnf_problem *cnf_problem_find(const char *name)
{
    for (size_t i = 0; i < cnf_problem_count(); i++)
        if (!strcmp(problems[i].name, name))
            return &problems[i];
    return NULL;
}

double cnf_problem_error(const cnf_problem *p, const double *y, const double *ref)
{
    double ex, el;
    p->errors(y, ref, &ex, &el);
    return isnan(ex) || isnan(el) ? NAN : fmax(ex, el);
}
