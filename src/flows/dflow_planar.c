/* Planar and radial flows (Rezende & Mohamed 2015, §4.1 and appendix A), used here in the
 * encode direction y = f(x) (data → base), which makes the density one cheap pass; the inverse
 * (sampling) reduces to a monotone scalar equation solved with GSL's Brent bracketing solver,
 * then polished by Newton steps to machine precision.
 *   planar: y = x + û h(a), a = wᵀx + b, h = tanh; û = u + (m(wᵀu) − wᵀu) w/||w||²,
 *           m(σ) = −1 + softplus(σ), so c := wᵀû = m(wᵀu) > −1 and 1 + h'(a) c > 0.
 *           logdet = log(1 + h'(a) c). Inverse: a + c h(a) = wᵀy + b (root in [t − |c|, t + |c|]).
 *   radial: y = x + β (x − x0)/(α + r), r = ||x − x0||, α = softplus(α̃), β = −α + softplus(β̃).
 *           logdet = (d − 1) log(1 + β/(α+r)) + log(1 + αβ/(α+r)²). Inverse: ρ = ||y − x0|| =
 *           r + βr/(α + r) (increasing in r; root in [0, ρ + |β|]), x = x0 + (y − x0)(α+r)/(α+r+β).
 * GSL's default error handler aborts, so it is switched off before any solver call and every
 * return code is checked. */
#include <gsl/gsl_errno.h>
#include <gsl/gsl_roots.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dflow.h"
#include "core/internal.h"

static double softplus(double a) { return a > 0 ? a + log1p(exp(-a)) : log1p(exp(a)); }
static double sigmoid(double a) { return a >= 0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a)); }

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* A scalar equation g(v) = 0, g increasing, with its derivative. */
typedef struct scalar_eq {
    double (*g)(double v, const void *p);
    double (*dg)(double v, const void *p);
    const void *p;
} scalar_eq;

static double gsl_fn(double v, void *p)
{
    const scalar_eq *e = p;
    return e->g(v, e->p);
}

/* Root of e in [lo, hi] (g(lo) ≤ 0 ≤ g(hi)): Brent to a tight bracket, then Newton steps. */
static int solve_root(const scalar_eq *e, double lo, double hi, double *root)
{
    gsl_set_error_handler_off();
    double glo = e->g(lo, e->p), ghi = e->g(hi, e->p), v;
    if (glo == 0.0 || ghi == 0.0) {
        v = glo == 0.0 ? lo : hi;
    } else {
        gsl_root_fsolver *s = gsl_root_fsolver_alloc(gsl_root_fsolver_brent);
        if (!s)
            return cnf_fail(CNF_ENOMEM, "allocating a GSL root solver");
        gsl_function F = {gsl_fn, (void *)e};
        int st = gsl_root_fsolver_set(s, &F, lo, hi);
        for (int it = 0; st == GSL_SUCCESS && it < 200; it++) {
            st = gsl_root_fsolver_iterate(s);
            if (st)
                break;
            double a = gsl_root_fsolver_x_lower(s), b = gsl_root_fsolver_x_upper(s);
            st = gsl_root_test_interval(a, b, 1e-15, 1e-15);
            if (st != GSL_CONTINUE)
                break;
            st = GSL_SUCCESS;
        }
        v = gsl_root_fsolver_root(s);
        gsl_root_fsolver_free(s);
        if (st != GSL_SUCCESS && st != GSL_CONTINUE)
            return cnf_fail(CNF_ESOLVER, "root solve on [%g, %g] failed: %s", lo, hi,
                            gsl_strerror(st));
    }
    for (int it = 0; it < 3; it++) {
        double dg = e->dg(v, e->p), nv = dg > 0.0 ? v - e->g(v, e->p) / dg : v;
        if (isfinite(nv) && nv >= lo && nv <= hi)
            v = nv;
    }
    if (!isfinite(v))
        return cnf_fail(CNF_ESOLVER, "root solve on [%g, %g] gave %g", lo, hi, v);
    *root = v;
    return CNF_OK;
}

/* ---- planar: θ = [u (d), w (d), b] ------------------------------------------------------------ */

/* State: û and the reverse pass's Σ_i h_i R_i (2d). */
static int planar_create(cnf_dflow_layer *l)
{
    l->n_params = 2 * l->dim + 1;
    return dflow_state_array(l, 2 * l->dim);
}

static void small_normals(const cnf_dflow_layer *l, double *th, cnf_rng *rng)
{
    for (size_t k = 0; k < l->n_params; k++)
        th[k] = 0.1 * cnf_rng_normal(rng);
}

/* û into st->uh and c = wᵀû; CNF_EINVAL if w = 0 (the map is then the identity plus a
 * constant shift, but û is undefined). */
static int planar_uhat(cnf_dflow_layer *l, const double *th, double *c)
{
    const size_t d = l->dim;
    const double *u = th, *w = th + d;
    double ww = dot(w, w, d), wu = dot(w, u, d), m = -1.0 + softplus(wu);
    if (!(ww > 0.0))
        return cnf_fail(CNF_EINVAL, "planar: w is zero");
    double *uh = (double *)l->state;
    for (size_t j = 0; j < d; j++)
        uh[j] = u[j] + (m - wu) * w[j] / ww;
    *c = m;
    return CNF_OK;
}

static int planar_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                          double *Y, double *ld, int train)
{
    const size_t d = l->dim;
    const double *w = th + d, b = th[2 * d], *uh = (double *)l->state;
    double c;
    int rc = planar_uhat(l, th, &c);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        double h = tanh(dot(w, X + i * d, d) + b);
        for (size_t j = 0; j < d; j++)
            Y[i * d + j] = X[i * d + j] + uh[j] * h;
        ld[i] += log1p((1.0 - h * h) * c);
    }
    return CNF_OK;
}

typedef struct planar_eq {
    double c, t;
} planar_eq;
static double planar_g(double a, const void *p)
{
    const planar_eq *q = p;
    return a + q->c * tanh(a) - q->t;
}
static double planar_dg(double a, const void *p)
{
    const planar_eq *q = p;
    double h = tanh(a);
    return 1.0 + q->c * (1.0 - h * h);
}

static int planar_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n,
                          double *X, double *ld)
{
    const size_t d = l->dim;
    const double *w = th + d, b = th[2 * d], *uh = (double *)l->state;
    planar_eq q;
    int rc = planar_uhat(l, th, &q.c);
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        q.t = dot(w, Y + i * d, d) + b;
        scalar_eq e = {planar_g, planar_dg, &q};
        double a, r = fabs(q.c) + 1.0;
        rc = solve_root(&e, q.t - r, q.t + r, &a);
        double h = tanh(a);
        for (size_t j = 0; j < d; j++)
            X[i * d + j] = Y[i * d + j] - uh[j] * h;
        ld[i] += log1p((1.0 - h * h) * q.c);
    }
    return rc;
}

static int planar_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                           const double *GY, const double *GL, double *GX, double *gth,
                           int train)
{
    const size_t d = l->dim;
    const double *u = th, *w = th + d, b = th[2 * d], *uh = (double *)l->state;
    double *gu = gth, *gw = gth + d, c;
    int rc = planar_uhat(l, th, &c);
    if (rc)
        return rc;
    /* Per row, with ψ = 1 + h' c: coefficient of da is (R·û) h' + GL h'' c / ψ, of dc is
     * GL h'/ψ, of dû is h R. Then û(u, w) and c = m(wᵀu) by the chain rule, summed over rows. */
    double Gc = 0.0, gb = 0.0, *Gh = (double *)l->state + d; /* Gh = Σ_i h_i R_i */
    memset(Gh, 0, d * sizeof *Gh);
    for (size_t i = 0; i < n; i++) {
        const double *x = X + i * d, *R = GY + i * d;
        double h = tanh(dot(w, x, d) + b), dh = 1.0 - h * h, d2h = -2.0 * h * dh;
        double psi = 1.0 + dh * c;
        double ga = dot(R, uh, d) * dh + GL[i] * d2h * c / psi;
        Gc += GL[i] * dh / psi;
        for (size_t j = 0; j < d; j++) {
            GX[i * d + j] += R[j] + ga * w[j];
            gw[j] += ga * x[j];
            Gh[j] += h * R[j];
        }
        gb += ga;
    }
    gth[2 * d] += gb;
    /* û = u + (m(σ) − σ) w/||w||², c = m(σ), σ = wᵀu, m' = sigmoid. */
    double ww = dot(w, w, d), sig = dot(w, u, d), m = c, mp = sigmoid(sig);
    double Ghw = dot(Gh, w, d);
    double kappa = (mp - 1.0) * Ghw / ww + Gc * mp;
    for (size_t j = 0; j < d; j++) {
        gu[j] += Gh[j] + kappa * w[j];
        gw[j] += kappa * u[j] + (m - sig) * (Gh[j] / ww - 2.0 * Ghw * w[j] / (ww * ww));
    }
    return CNF_OK;
}

const dflow_layer_type dflow_planar = {
    .name = "planar", .create = planar_create, .init = small_normals, .forward = planar_forward,
    .inverse = planar_inverse, .backward = planar_backward, .free_state = free};

/* ---- radial: θ = [x0 (d), α̃, β̃] -------------------------------------------------------------- */

static int radial_create(cnf_dflow_layer *l)
{
    l->n_params = l->dim + 2;
    return CNF_OK;
}

static void radial_ab(const cnf_dflow_layer *l, const double *th, double *al, double *be)
{
    *al = softplus(th[l->dim]);
    *be = -*al + softplus(th[l->dim + 1]);
}

static double radial_logdet(size_t d, double al, double be, double r)
{
    double q = al + r;
    return (double)(d - 1) * log1p(be / q) + log1p(al * be / (q * q));
}

static int radial_forward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                          double *Y, double *ld, int train)
{
    const size_t d = l->dim;
    const double *x0 = th;
    double al, be;
    radial_ab(l, th, &al, &be);
    for (size_t i = 0; i < n; i++) {
        double r2 = 0.0;
        for (size_t j = 0; j < d; j++)
            r2 += (X[i * d + j] - x0[j]) * (X[i * d + j] - x0[j]);
        double r = sqrt(r2), f = be / (al + r);
        for (size_t j = 0; j < d; j++)
            Y[i * d + j] = X[i * d + j] + f * (X[i * d + j] - x0[j]);
        ld[i] += radial_logdet(d, al, be, r);
    }
    return CNF_OK;
}

typedef struct radial_eq {
    double al, be, rho;
} radial_eq;
static double radial_g(double r, const void *p)
{
    const radial_eq *q = p;
    return r + q->be * r / (q->al + r) - q->rho;
}
static double radial_dg(double r, const void *p)
{
    const radial_eq *q = p;
    double s = q->al + r;
    return 1.0 + q->be * q->al / (s * s);
}

static int radial_inverse(cnf_dflow_layer *l, const double *th, const double *Y, size_t n,
                          double *X, double *ld)
{
    const size_t d = l->dim;
    const double *x0 = th;
    radial_eq q;
    radial_ab(l, th, &q.al, &q.be);
    int rc = CNF_OK;
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        double rho2 = 0.0;
        for (size_t j = 0; j < d; j++)
            rho2 += (Y[i * d + j] - x0[j]) * (Y[i * d + j] - x0[j]);
        q.rho = sqrt(rho2);
        scalar_eq e = {radial_g, radial_dg, &q};
        double r = 0.0;
        if (q.rho > 0.0)
            rc = solve_root(&e, 0.0, q.rho + fabs(q.be), &r);
        double f = (q.al + r) / (q.al + r + q.be);
        for (size_t j = 0; j < d; j++)
            X[i * d + j] = x0[j] + (Y[i * d + j] - x0[j]) * f;
        ld[i] += radial_logdet(d, q.al, q.be, r);
    }
    return rc;
}

static int radial_backward(cnf_dflow_layer *l, const double *th, const double *X, size_t n,
                           const double *GY, const double *GL, double *GX, double *gth,
                           int train)
{
    const size_t d = l->dim;
    const double *x0 = th, dm1 = (double)(d - 1);
    double al, be, *gx0 = gth;
    radial_ab(l, th, &al, &be);
    double Ga = 0.0, Gb = 0.0; /* ∂φ/∂α, ∂φ/∂β summed over rows */
    for (size_t i = 0; i < n; i++) {
        const double *x = X + i * d, *R = GY + i * d;
        double r2 = 0.0, Re = 0.0;
        for (size_t j = 0; j < d; j++) {
            double e = x[j] - x0[j];
            r2 += e * e;
            Re += R[j] * e;
        }
        double r = sqrt(r2), q = al + r, h = 1.0 / q, A = 1.0 + be * h,
               Bq = 1.0 + al * be * h * h, gl = GL[i];
        /* y = x + β h e, h = 1/q, q = α + r; ld = (d−1) log A + log Bq. */
        double cb = Re * h + gl * (dm1 * h / A + al * h * h / Bq);
        double cr = -Re * be * h * h + gl * (-dm1 * be * h * h / A - 2.0 * al * be * h * h * h / Bq);
        double ca = cr + gl * be * h * h / Bq;
        Gb += cb;
        Ga += ca;
        for (size_t j = 0; j < d; j++) {
            double e = x[j] - x0[j], ge = be * h * R[j] + (r > 0.0 ? cr * e / r : 0.0);
            GX[i * d + j] += R[j] + ge;
            gx0[j] -= ge;
        }
    }
    /* α = softplus(α̃), β = −α + softplus(β̃). */
    gth[d] += (Ga - Gb) * sigmoid(th[d]);
    gth[d + 1] += Gb * sigmoid(th[d + 1]);
    return CNF_OK;
}

const dflow_layer_type dflow_radial = {
    .name = "radial", .create = radial_create, .init = small_normals, .forward = radial_forward,
    .inverse = radial_inverse, .backward = radial_backward};
