/* The finite-difference check every gradient test uses.
 *
 * A test computes an analytic directional derivative g·v (or a derivative of a vector along one
 * input direction) and compares it with central differences of the function along the same line,
 * φ(t) = f(x + t v), as kann's kad_check_grad does. The tolerance is not a guess: the derivative
 * comes from Ridders' method (central differences at steps 2h, h and h/2, extrapolated in a
 * Richardson table), which also estimates its own error from how much successive entries of the
 * table disagree (truncation and rounding alike). A check passes when
 *
 *     |analytic − FD|  ≤  min(GC_SAFETY · err + rel · |FD|,  cap),
 *
 * with rel the analytic side's own relative accuracy (GC_EXACT_REL for an exact gradient; a
 * multiple of the solver tolerance for an adjoint) and cap the loosest tolerance the check may
 * use (what the test accepted before this helper). A finite difference too noisy to judge at
 * the cap (GC_SAFETY · err > cap) fails instead of passing by default.
 *
 * Header only (static functions), free of Criterion: callers assert on gc_result.ok and print
 * GC_FMT / GC_ARGS. With CNF_GC_LOG set in the environment every judgement is printed to
 * stderr (to see how far each check is from its tolerance). */
#ifndef CNF_TESTS_GRADCHECK_H
#define CNF_TESTS_GRADCHECK_H

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* φ(t) ∈ R^m at t: the function on the line through the point, in the direction checked. */
typedef void (*gc_fn)(void *ctx, double t, double *out);
/* A scalar φ(t). */
typedef double (*gc_fn1)(void *ctx, double t);

/* How many error estimates the accepted difference may be: an order of magnitude. Ridders'
 * estimate is the disagreement of the best table entry with its two neighbours, an overestimate
 * of that entry's error when truncation dominates, but one sample of the rounding noise when
 * that dominates, which can be small by chance. */
#define GC_SAFETY 10.0

/* The relative accuracy of an exact gradient computed in double precision: 1e-10, about 5·10⁵
 * ulps, room for the conditioning of the formulas (a layer's log-determinant and its
 * derivatives: the largest difference seen against a converged table is 1e-11 relative). */
#define GC_EXACT_REL 1e-10

/* dφ/dt at 0 for every component (d[m]) and its error estimate (e[m]), by Ridders' method on
 * central differences at steps 2h, h, h/2 (6 evaluations of φ). The estimate is at least the
 * rounding noise of the finest difference, 2·DBL_EPSILON·|φ|/(h/2). */
static inline void gc_diff(gc_fn phi, void *ctx, size_t m, double h, double *d, double *e)
{
    enum { L = 3 };
    /* T[i][j][k], then φ(+h_i), φ(−h_i) and the rounding floor */
    double *T = malloc((L * L + 3) * m * sizeof(double));
    double *fp = T + L * L * m, *fm = fp + m, *fl = fm + m;
    for (size_t k = 0; k < m; k++)
        e[k] = INFINITY, d[k] = NAN;
    double step = 2 * h;
    for (size_t i = 0; i < L; i++, step /= 2) {
        phi(ctx, step, fp);
        phi(ctx, -step, fm);
        for (size_t k = 0; k < m; k++) {
            T[(i * L) * m + k] = (fp[k] - fm[k]) / (2 * step);
            fl[k] = 2 * DBL_EPSILON * fmax(fabs(fp[k]), fabs(fm[k])) / step;
        }
        for (size_t j = 1; j <= i; j++) {
            const double c = (double)(1u << (2 * j)); /* 4^j: the h^2j term cancels */
            for (size_t k = 0; k < m; k++) {
                double a = T[(i * L + j - 1) * m + k], b = T[((i - 1) * L + j - 1) * m + k];
                double t = (c * a - b) / (c - 1);
                T[(i * L + j) * m + k] = t;
                double err = fmax(fabs(t - a), fabs(t - b));
                if (err < e[k]) {
                    e[k] = err;
                    d[k] = t;
                }
            }
        }
    }
    for (size_t k = 0; k < m; k++)
        e[k] = fmax(e[k], fl[k]);
    free(T);
}

/* The scalar case. */
typedef struct {
    gc_fn1 f;
    void *ctx;
} gc_scalar_ctx;

static inline void gc_scalar_eval(void *ctx, double t, double *out)
{
    gc_scalar_ctx *c = ctx;
    *out = c->f(c->ctx, t);
}

static inline double gc_diff1(gc_fn1 f, void *ctx, double h, double *err)
{
    gc_scalar_ctx c = {f, ctx};
    double d;
    gc_diff(gc_scalar_eval, &c, 1, h, &d, err);
    return d;
}

/* A function of a vector x (n entries) moved in place along v: eval reads x. */
typedef struct {
    double *x;
    const double *v;
    size_t n;
    double (*eval)(void *ctx);
    void *ctx;
} gc_vec_ctx;

static inline double gc_vec_eval(void *ctx, double t)
{
    gc_vec_ctx *c = ctx;
    double *x0 = malloc(c->n * sizeof(double));
    memcpy(x0, c->x, c->n * sizeof(double));
    for (size_t i = 0; i < c->n; i++)
        c->x[i] = x0[i] + t * c->v[i];
    double y = c->eval(c->ctx);
    memcpy(c->x, x0, c->n * sizeof(double));
    free(x0);
    return y;
}

/* g·v, the analytic directional derivative. */
static inline double gc_dot(const double *g, const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += g[i] * v[i];
    return s;
}

/* What a check accepts: rel is the analytic side's own relative accuracy; the cap is
 * max(cap_abs, cap_rel · min(|analytic|, |FD|)). */
typedef struct {
    double rel, cap_rel, cap_abs;
} gc_tol;

typedef struct {
    double an, fd, err; /* analytic, finite difference, its error estimate */
    double tol, cap;    /* the accepted |an − fd| and the most it may be */
    int ok;
} gc_result;

static inline gc_result gc_judge(double an, double fd, double err, gc_tol t)
{
    gc_result r = {.an = an, .fd = fd, .err = err};
    r.cap = fmax(t.cap_abs, t.cap_rel * fmin(fabs(an), fabs(fd)));
    r.tol = fmin(GC_SAFETY * err + t.rel * fabs(fd), r.cap);
    r.ok = fabs(an - fd) <= r.tol && GC_SAFETY * err <= r.cap;
    if (getenv("CNF_GC_LOG"))
        fprintf(stderr,
                "gradcheck: |diff|/err %.3g |diff| %.3g tol %.3g cap %.3g rel.tol %.3g %s\n",
                fabs(an - fd) / err, fabs(an - fd), r.tol, r.cap, r.tol / fmax(fabs(fd), 1e-300),
                r.ok ? "ok" : "FAIL");
    return r;
}

/* A vector: every entry within GC_SAFETY · err_k + rel · |fd_k|, and the norms of the
 * differences and of GC_SAFETY · err within max(cap_abs, cap_rel · min(‖an‖, ‖fd‖)). The result
 * reports the worst entry (largest |diff| / bound) and, as tol, the norm of the bounds. */
static inline gc_result gc_judge_vec(const double *an, const double *fd, const double *err,
                                     size_t m, gc_tol t)
{
    gc_result r = {.an = NAN, .fd = NAN, .err = NAN, .ok = 1};
    double worst = -1, na = 0, nf = 0, nt = 0, nd = 0, ne = 0;
    for (size_t k = 0; k < m; k++) {
        double tol = GC_SAFETY * err[k] + t.rel * fabs(fd[k]), diff = fabs(an[k] - fd[k]);
        if (!(diff <= tol))
            r.ok = 0;
        double q = diff / tol;
        if (!(q <= worst)) {
            worst = q;
            r.an = an[k], r.fd = fd[k], r.err = err[k];
        }
        na += an[k] * an[k], nf += fd[k] * fd[k], nt += tol * tol, nd += diff * diff;
        ne += err[k] * err[k];
    }
    r.cap = fmax(t.cap_abs, t.cap_rel * sqrt(fmin(na, nf)));
    r.tol = fmin(sqrt(nt), r.cap);
    if (!(sqrt(nd) <= r.cap && GC_SAFETY * sqrt(ne) <= r.cap))
        r.ok = 0;
    if (getenv("CNF_GC_LOG"))
        fprintf(stderr, "gradcheck vec: |diff|/err %.3g bound norm %.3g cap %.3g %s\n",
                worst * GC_SAFETY, r.tol, r.cap, r.ok ? "ok" : "FAIL");
    return r;
}

/* Judge an analytic dφ/dt(0) against Ridders' difference of a scalar φ. */
static inline gc_result gc_check1(gc_fn1 f, void *ctx, double h, double an, gc_tol t)
{
    double err, fd = gc_diff1(f, ctx, h, &err);
    return gc_judge(an, fd, err, t);
}

/* Judge g·v against differences of eval() with x moved along v in place (x restored). */
static inline gc_result gc_check_vec(double *x, const double *v, size_t n,
                                     double (*eval)(void *ctx), void *ctx, double h,
                                     const double *g, gc_tol t)
{
    gc_vec_ctx c = {x, v, n, eval, ctx};
    return gc_check1(gc_vec_eval, &c, h, gc_dot(g, v, n), t);
}

#define GC_FMT "analytic %.12g, FD %.12g ± %.2g: |diff| %.2g, tolerance %.2g (cap %.2g)"
#define GC_ARGS(r) (r).an, (r).fd, (r).err, fabs((r).an - (r).fd), (r).tol, (r).cap

#endif
