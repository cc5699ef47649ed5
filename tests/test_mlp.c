/* MLP velocity field: every derivative against central finite differences, the divergence against
 * a finite-difference Jacobian, Hutchinson's mean and variance, batched vs a naive loop, and bad
 * configurations. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/mlp.h"
#include "gradcheck.h"

enum { D = 3, N = 4, KT = 2 };
static const size_t HIDDEN[] = {7, 5};

typedef struct {
    cnf_mlp *m;
    cnf_mlp_work *w;
    double *theta;
    size_t np;
    cnf_rng rng;
} fixture;

static fixture make(cnf_act act, cnf_time_mode tm, size_t d, size_t n_max, size_t k_max,
                    uint64_t seed)
{
    fixture f;
    cnf_mlp_config cfg = {.d_in = d, .d_out = d, .n_hidden = 2, .hidden = HIDDEN, .act = act,
                          .time = tm};
    cr_assert_eq(cnf_mlp_create(&f.m, &cfg), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_mlp_work_create(&f.w, f.m, n_max, k_max), CNF_OK);
    f.np = cnf_mlp_n_params(f.m);
    f.theta = malloc(f.np * sizeof(double));
    cnf_rng_seed(&f.rng, seed);
    cnf_mlp_init(f.m, f.theta, &f.rng);
    /* Non-zero biases and gates so that every parameter matters. */
    for (size_t i = 0; i < f.np; i++)
        f.theta[i] += 0.3 * cnf_rng_normal(&f.rng);
    return f;
}

static void release(fixture *f)
{
    cnf_mlp_work_free(f->w);
    cnf_mlp_free(f->m);
    free(f->theta);
}

static void randn(cnf_rng *r, double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = cnf_rng_normal(r);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* φ(θ, X, t) = Σ R·f + Σ_k S_k·J u_k (U NULL: unit vectors), or Σ_k ||J u_k||² when sq. */
typedef struct {
    fixture *f;
    const double *R, *S, *U;
    size_t K;
    int sq;
} phi_spec;

static double phi(const phi_spec *p, const double *theta, const double *X, double t)
{
    double F[N * D], JU[D * N * D];
    size_t K = p->K;
    cr_assert_eq(cnf_mlp_jvp(p->f->m, theta, t, X, D, N, p->U, K, F, D, JU, p->f->w), CNF_OK);
    double s = 0;
    if (p->R)
        s += dot(p->R, F, N * D);
    if (p->S)
        s += dot(p->S, JU, K * N * D);
    if (p->sq)
        s += dot(JU, JU, K * N * D);
    return s;
}

/* φ on a line through (θ, X, t) along a direction in θ, X or t. */
enum { ALONG_THETA, ALONG_X, ALONG_T };
typedef struct {
    const phi_spec *p;
    const double *X, *dir;
    double t;
    int along;
} phi_line;

static double phi_at(void *ctx, double s)
{
    const phi_line *l = ctx;
    fixture *f = l->p->f;
    double *th = malloc(f->np * sizeof(double)), Xs[N * D], ts = l->t;
    memcpy(th, f->theta, f->np * sizeof(double));
    memcpy(Xs, l->X, sizeof Xs);
    if (l->along == ALONG_THETA)
        for (size_t i = 0; i < f->np; i++) th[i] += s * l->dir[i];
    else if (l->along == ALONG_X)
        for (size_t i = 0; i < N * D; i++) Xs[i] += s * l->dir[i];
    else
        ts += s;
    double v = phi(l->p, th, Xs, ts);
    free(th);
    return v;
}

/* f(θ, X + s·dir, t) for n rows of width d. */
typedef struct {
    fixture *f;
    const double *X, *dir;
    double t;
    size_t len, d, n;
} f_line;

static void f_at(void *ctx, double s, double *out)
{
    const f_line *l = ctx;
    double *Xs = malloc(l->len * sizeof(double));
    for (size_t i = 0; i < l->len; i++)
        Xs[i] = l->X[i] + s * l->dir[i];
    cr_assert_eq(cnf_mlp_forward(l->f->m, l->f->theta, l->t, Xs, l->d, l->n, out, l->d, l->f->w),
                 CNF_OK);
    free(Xs);
}

/* An exact derivative: nothing but the finite difference's own error, at most 1e-6 relative. */
static const gc_tol EXACT = {.rel = GC_EXACT_REL, .cap_rel = 1e-6, .cap_abs = 0};

/* Check ∇_θ φ, ∇_X φ and ∂φ/∂t from cnf_mlp_backward with seeds (R, S) against central
 * differences of φ along random directions (gradcheck.h). */
static void check_gradients(phi_spec *p, const double *X, double t, const double *Rseed,
                            const double *Sseed, const char *what)
{
    fixture *f = p->f;
    double F[N * D];
    phi(p, f->theta, X, t); /* fills the workspace with the same tangents */
    (void)F;
    double *gth = calloc(f->np, sizeof(double)), GX[N * D] = {0}, gt = 0;
    cr_assert_eq(cnf_mlp_backward(f->m, f->theta, Rseed, D, Sseed, GX, D, gth, &gt, f->w),
                 CNF_OK);
    double *dth = malloc(f->np * sizeof(double)), dX[N * D];
    randn(&f->rng, dth, f->np);
    randn(&f->rng, dX, N * D);
    const cnf_mlp_config *c = cnf_mlp_get_config(f->m);
    phi_line lth = {p, X, dth, t, ALONG_THETA}, lx = {p, X, dX, t, ALONG_X};
    phi_line lt = {p, X, NULL, t, ALONG_T};
    gc_result r1 = gc_check1(phi_at, &lth, 1e-4, dot(gth, dth, f->np), EXACT);
    gc_result r2 = gc_check1(phi_at, &lx, 1e-4, dot(GX, dX, N * D), EXACT);
    cr_assert(r1.ok, "%s %s/%s: theta " GC_FMT, what, cnf_act_name(c->act),
              cnf_time_mode_name(c->time), GC_ARGS(r1));
    cr_assert(r2.ok, "%s %s/%s: x " GC_FMT, what, cnf_act_name(c->act),
              cnf_time_mode_name(c->time), GC_ARGS(r2));
    /* Without time conditioning φ does not depend on t: the kernel must say exactly 0. */
    if (c->time == CNF_TIME_NONE) {
        cr_assert(gt == 0, "%s %s/none: dphi/dt %g", what, cnf_act_name(c->act), gt);
    } else {
        gc_result r3 = gc_check1(phi_at, &lt, 1e-4, gt, EXACT);
        cr_assert(r3.ok, "%s %s/%s: t " GC_FMT, what, cnf_act_name(c->act),
                  cnf_time_mode_name(c->time), GC_ARGS(r3));
    }
    free(gth);
    free(dth);
}

static void check_combo(cnf_act act, cnf_time_mode tm)
{
    fixture f = make(act, tm, D, N, D, 1000 + 10 * act + tm);
    double X[N * D], U[KT * N * D], R[N * D], S[KT * N * D], t = 0.37;
    randn(&f.rng, X, N * D);
    randn(&f.rng, U, KT * N * D);
    randn(&f.rng, R, N * D);
    randn(&f.rng, S, KT * N * D);

    /* JVP against the central differences of f along u, every entry. */
    double F[N * D], JU[KT * N * D], FD[N * D], E[N * D];
    cr_assert_eq(cnf_mlp_jvp(f.m, f.theta, t, X, D, N, U, KT, F, D, JU, f.w), CNF_OK);
    for (size_t k = 0; k < KT; k++) {
        f_line l = {&f, X, U + k * N * D, t, N * D, D, N};
        gc_diff(f_at, &l, N * D, 1e-4, FD, E);
        for (size_t i = 0; i < N; i++) {
            gc_result r = gc_judge_vec(JU + (k * N + i) * D, FD + i * D, E + i * D, D, EXACT);
            cr_assert(r.ok, "JVP %s/%s sample %zu: " GC_FMT, cnf_act_name(act),
                      cnf_time_mode_name(tm), i, GC_ARGS(r));
        }
    }

    /* VJP: φ = R·f. */
    phi_spec vjp = {.f = &f, .R = R};
    check_gradients(&vjp, X, t, R, NULL, "VJP");
    /* Hutchinson divergence: φ = Σ ε·J ε (S = U = ε). */
    phi_spec hut = {.f = &f, .S = U, .U = U, .K = KT};
    check_gradients(&hut, X, t, NULL, U, "grad eps'J eps");
    /* Exact divergence: φ = Σ_k e_k·J e_k (S_k = e_k, unit tangents). */
    double Sunit[D * N * D] = {0};
    for (size_t k = 0; k < D; k++)
        for (size_t i = 0; i < N; i++)
            Sunit[(k * N + i) * D + k] = 1.0;
    phi_spec ex = {.f = &f, .S = Sunit, .U = NULL, .K = D};
    check_gradients(&ex, X, t, NULL, Sunit, "grad tr J");
    /* The general kernel: φ = R·f + Σ S_k·J u_k. */
    phi_spec gen = {.f = &f, .R = R, .S = S, .U = U, .K = KT};
    check_gradients(&gen, X, t, R, S, "general");
    /* ||J u||²: seed S_k = 2 J u_k with J u held fixed. */
    double S2[KT * N * D];
    cr_assert_eq(cnf_mlp_jvp(f.m, f.theta, t, X, D, N, U, KT, NULL, D, S2, f.w), CNF_OK);
    for (size_t i = 0; i < KT * N * D; i++)
        S2[i] *= 2;
    phi_spec sq = {.f = &f, .U = U, .K = KT, .sq = 1};
    check_gradients(&sq, X, t, NULL, S2, "grad ||Ju||^2");
    release(&f);
}

#define COMBO(a, tm) \
    Test(mlp_fd, a##_##tm) { check_combo(CNF_ACT_##a, CNF_TIME_##tm); }
COMBO(TANH, NONE)
COMBO(TANH, CONCAT)
COMBO(TANH, CONCATSQUASH)
COMBO(SOFTPLUS, NONE)
COMBO(SOFTPLUS, CONCAT)
COMBO(SOFTPLUS, CONCATSQUASH)
COMBO(ELU, NONE)
COMBO(ELU, CONCAT)
COMBO(ELU, CONCATSQUASH)
COMBO(SWISH, NONE)
COMBO(SWISH, CONCAT)
COMBO(SWISH, CONCATSQUASH)

/* The Jacobian of one sample by central differences, column by column, with the error
 * estimate of every entry (E may be NULL). */
static void fd_jacobian(fixture *f, double t, const double *x, size_t d, double *J, double *E)
{
    double *e = calloc(d, sizeof(double)), *col = malloc(d * sizeof(double));
    double *ce = malloc(d * sizeof(double));
    for (size_t c = 0; c < d; c++) {
        e[c] = 1;
        f_line l = {f, x, e, t, d, d, 1};
        gc_diff(f_at, &l, d, 1e-4, col, ce);
        e[c] = 0;
        for (size_t r = 0; r < d; r++) {
            J[r * d + c] = col[r];
            if (E)
                E[r * d + c] = ce[r];
        }
    }
    free(e);
    free(col);
    free(ce);
}

Test(mlp_div, exact_equals_fd_trace)
{
    for (int act = 0; act < 4; act++) {
        enum { d = 5 };
        fixture f = make((cnf_act)act, CNF_TIME_CONCATSQUASH, d, 3, d, 77 + act);
        double X[3 * d], div[3], J[d * d], E[d * d];
        randn(&f.rng, X, 3 * d);
        cr_assert_eq(cnf_mlp_div_exact(f.m, f.theta, 0.6, X, d, 3, NULL, d, div, f.w), CNF_OK);
        for (size_t i = 0; i < 3; i++) {
            fd_jacobian(&f, 0.6, X + i * d, d, J, E);
            double tr = 0, err = 0;
            for (size_t k = 0; k < d; k++)
                tr += J[k * d + k], err += E[k * d + k];
            gc_result r = gc_judge(div[i], tr, err, (gc_tol){GC_EXACT_REL, 1e-7, 1e-7});
            cr_assert(r.ok, "act %d: divergence " GC_FMT, act, GC_ARGS(r));
        }
        release(&f);
    }
}

/* Hutchinson: the mean of many Rademacher estimates is within 4 standard errors of tr J, and the
 * sample variances match 2||J_s||_F² (Gaussian) and 2 Σ_{i≠j} (J_s)_ij² (Rademacher). */
Test(mlp_div, hutchinson_mean_and_variance)
{
    enum { d = 4, M = 20000, CH = 500 };
    fixture f = make(CNF_ACT_TANH, CNF_TIME_CONCAT, d, CH, 1, 5);
    double x[d], J[d * d], tr = 0, fro = 0, off = 0;
    randn(&f.rng, x, d);
    fd_jacobian(&f, 0.2, x, d, J, NULL);
    for (size_t i = 0; i < d; i++) {
        tr += J[i * d + i];
        for (size_t j = 0; j < d; j++) {
            double s = 0.5 * (J[i * d + j] + J[j * d + i]);
            fro += s * s;
            if (i != j)
                off += s * s;
        }
    }
    /* One batch of CH copies of x per call, with one probe per copy. */
    double *X = malloc(CH * d * sizeof(double)), *E = malloc(CH * d * sizeof(double));
    double *est = malloc(CH * sizeof(double));
    for (size_t i = 0; i < CH; i++)
        memcpy(X + i * d, x, sizeof x);
    for (int gauss = 0; gauss < 2; gauss++) {
        double s1 = 0, s2 = 0;
        for (size_t b = 0; b < M / CH; b++) {
            for (size_t i = 0; i < CH * d; i++)
                E[i] = gauss ? cnf_rng_normal(&f.rng) : cnf_rng_rademacher(&f.rng);
            cr_assert_eq(cnf_mlp_div_hutch(f.m, f.theta, 0.2, X, d, CH, E, 1, NULL, d, est, f.w),
                         CNF_OK);
            for (size_t i = 0; i < CH; i++) {
                s1 += est[i];
                s2 += est[i] * est[i];
            }
        }
        double mean = s1 / M, var = (s2 - M * mean * mean) / (M - 1);
        double expect = gauss ? 2 * fro : 2 * off;
        cr_assert(fabs(var - expect) <= 0.1 * expect, "%s variance %g, formula %g",
                  gauss ? "Gaussian" : "Rademacher", var, expect);
        if (!gauss)
            cr_assert(fabs(mean - tr) <= 4 * sqrt(var / M), "mean %g vs trace %g (se %g)", mean,
                      tr, sqrt(var / M));
    }
    free(X);
    free(E);
    free(est);
    release(&f);
}

/* A naive per-sample evaluation straight from the definition, sharing nothing with the batched
 * kernels but the parameter layout and cnf_act_eval. */
static void naive_forward(const cnf_mlp *m, const double *theta, double t, const double *x,
                          double *out)
{
    const cnf_mlp_config *c = cnf_mlp_get_config(m);
    double h[64], z[64];
    size_t in = c->d_in, off = 0;
    memcpy(h, x, in * sizeof(double));
    for (size_t l = 0; l <= c->n_hidden; l++) {
        size_t o = l < c->n_hidden ? c->hidden[l] : c->d_out;
        const double *W = theta + off, *b = W + o * in, *cc = b + o, *wg = cc + o, *bg = wg + o;
        for (size_t j = 0; j < o; j++) {
            double y = b[j];
            for (size_t k = 0; k < in; k++)
                y += W[j * in + k] * h[k];
            double g = c->time == CNF_TIME_CONCATSQUASH ? 1 / (1 + exp(-(wg[j] * t + bg[j]))) : 1;
            z[j] = g * y + (c->time != CNF_TIME_NONE ? cc[j] * t : 0);
        }
        off += o * in + o + (c->time != CNF_TIME_NONE ? o : 0) +
               (c->time == CNF_TIME_CONCATSQUASH ? 2 * o : 0);
        for (size_t j = 0; j < o; j++) {
            if (l < c->n_hidden)
                cnf_act_eval(c->act, z[j], &h[j], NULL, NULL);
            else
                out[j] = z[j];
        }
        in = o;
    }
}

Test(mlp, batched_forward_matches_naive_loop)
{
    enum { d = 6, n = 37 };
    for (int tm = 0; tm < 3; tm++)
        for (int act = 0; act < 4; act++) {
            fixture f = make((cnf_act)act, (cnf_time_mode)tm, d, n, 0, 9 + tm);
            double X[n * (d + 2)], F[n * d], ref[d];
            randn(&f.rng, X, n * (d + 2));
            /* Row stride d + 2, as in an ODE state that carries log p and more per sample. */
            cr_assert_eq(cnf_mlp_forward(f.m, f.theta, 0.8, X, d + 2, n, F, d, f.w), CNF_OK);
            for (size_t i = 0; i < n; i++) {
                naive_forward(f.m, f.theta, 0.8, X + i * (d + 2), ref);
                for (size_t j = 0; j < d; j++)
                    cr_assert(fabs(F[i * d + j] - ref[j]) <= 1e-12 * fmax(1, fabs(ref[j])),
                              "act %d time %d: %.17g vs %.17g", act, tm, F[i * d + j], ref[j]);
            }
            release(&f);
        }
}

Test(mlp, activations_match_their_derivatives)
{
    for (int act = 0; act < 4; act++)
        for (double z = -3.3; z < 3.3; z += 0.7) {
            double s, ds, d2s, sp, sm, dsp, dsm;
            const double h = 1e-6;
            cnf_act_eval((cnf_act)act, z, &s, &ds, &d2s);
            cnf_act_eval((cnf_act)act, z + h, &sp, &dsp, NULL);
            cnf_act_eval((cnf_act)act, z - h, &sm, &dsm, NULL);
            cr_assert(fabs(ds - (sp - sm) / (2 * h)) < 1e-8, "act %d z %g", act, z);
            cr_assert(fabs(d2s - (dsp - dsm) / (2 * h)) < 1e-8, "act %d z %g", act, z);
        }
}

Test(mlp, invalid_configurations_are_named_errors)
{
    cnf_mlp *m = (cnf_mlp *)1;
    size_t zero[] = {8, 0};
    cnf_mlp_config c = {.d_in = 2, .d_out = 2, .n_hidden = 2, .hidden = zero};
    cr_assert_eq(cnf_mlp_create(&m, &c), CNF_EINVAL);
    cr_assert_null(m);
    cr_assert(strstr(cnf_errmsg(), "width 0"), "%s", cnf_errmsg());
    c.hidden = HIDDEN;
    c.d_in = 0;
    cr_assert_eq(cnf_mlp_create(&m, &c), CNF_EINVAL);
    c.d_in = 2;
    c.act = (cnf_act)9;
    cr_assert_eq(cnf_mlp_create(&m, &c), CNF_EINVAL);
    c.act = CNF_ACT_TANH;
    c.n_hidden = 1;
    c.hidden = NULL;
    cr_assert_eq(cnf_mlp_create(&m, &c), CNF_EINVAL);
    cnf_act a;
    cr_assert_eq(cnf_act_from_name("relu6", &a), CNF_ENAME);
    cr_assert(strstr(cnf_errmsg(), "tanh"), "message lists valid names: %s", cnf_errmsg());
    cnf_time_mode tm;
    cr_assert_eq(cnf_time_mode_from_name("squash", &tm), CNF_ENAME);
    cr_assert_eq(cnf_time_mode_from_name("concatsquash", &tm), CNF_OK);
    cr_assert_eq(tm, CNF_TIME_CONCATSQUASH);

    /* Workspace too small, stride too short. */
    fixture f = make(CNF_ACT_TANH, CNF_TIME_NONE, 2, 3, 1, 1);
    double X[8] = {0}, F[8];
    cr_assert_eq(cnf_mlp_forward(f.m, f.theta, 0, X, 2, 4, F, 2, f.w), CNF_EDIM);
    cr_assert_eq(cnf_mlp_forward(f.m, f.theta, 0, X, 1, 2, F, 2, f.w), CNF_EDIM);
    cr_assert_eq(cnf_mlp_div_exact(f.m, f.theta, 0, X, 2, 2, F, 2, F, f.w), CNF_EDIM,
                 "exact trace with k_max = 1 < d");
    cnf_mlp_work *w0 = (cnf_mlp_work *)1;
    cr_assert_eq(cnf_mlp_work_create(&w0, f.m, 0, 0), CNF_EINVAL);
    cr_assert_null(w0);
    release(&f);
}

Test(mlp, parameter_blocks_cover_theta)
{
    fixture f = make(CNF_ACT_TANH, CNF_TIME_CONCATSQUASH, 2, 1, 0, 3);
    size_t total = 0;
    for (size_t i = 0; i < cnf_mlp_n_blocks(f.m); i++) {
        const char *name;
        size_t off, r, c;
        cr_assert_eq(cnf_mlp_block(f.m, i, &name, &off, &r, &c), CNF_OK);
        cr_assert_eq(off, total, "block %s is not contiguous", name);
        total += r * c;
    }
    cr_assert_eq(total, f.np);
    /* d=2, 7, 5, 2 with 5 blocks per layer: W + b + c + wg + bg. */
    cr_assert_eq(f.np, (2 * 7 + 4 * 7) + (7 * 5 + 4 * 5) + (5 * 2 + 4 * 2));
    release(&f);
}
