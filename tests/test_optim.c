/* Optimizers: Adam's first steps by hand, convergence on a quadratic, bit-identical resume from
 * saved state, warm-up, weight decay, clipping. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/optim.h"

static cnf_optim *make(cnf_optim_method m, double lr, double wd, int decoupled, double mu,
                       size_t warmup, size_t n)
{
    cnf_optim_settings s;
    cnf_optim_settings_default(&s, m);
    s.lr = lr;
    s.weight_decay = wd;
    s.decoupled = decoupled;
    s.momentum = mu;
    s.warmup = warmup;
    cnf_optim *o = NULL;
    cr_assert_eq(cnf_optim_create(&s, n, &o), CNF_OK, "%s", cnf_errmsg());
    return o;
}

static void assert_close(double a, double b, double rtol, const char *what)
{
    cr_assert(fabs(a - b) <= rtol * fmax(fabs(a), fabs(b)), "%s: %.17g vs %.17g", what, a, b);
}

/* Adam by the textbook formulas (Kingma & Ba, Algorithm 1) with L2 weight decay folded in. */
Test(optim, adam_first_steps_by_hand)
{
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        double p[2] = {1.0, -2.0}, ref[2] = {1.0, -2.0}, m[2] = {0}, v[2] = {0};
        const double grads[3][2] = {{0.5, -3.0}, {-1.0, 0.25}, {2.0, 2.0}};
        cnf_optim *o = make(CNF_OPTIM_ADAM, lr, wd, decoupled, 0, 0, 2);
        for (int t = 1; t <= 3; t++) {
            cr_assert_eq(cnf_optim_step(o, p, grads[t - 1]), CNF_OK);
            for (int i = 0; i < 2; i++) {
                double g = grads[t - 1][i];
                if (decoupled)
                    ref[i] -= lr * wd * ref[i];
                else
                    g += wd * ref[i];
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                double mh = m[i] / (1 - pow(b1, t)), vh = v[i] / (1 - pow(b2, t));
                ref[i] -= lr * mh / (sqrt(vh) + eps);
                assert_close(p[i], ref[i], 1e-14, decoupled ? "AdamW" : "Adam");
            }
        }
        cr_assert_eq(cnf_optim_steps(o), 3);
        cnf_optim_free(o);
    }
    /* At t = 1 without decay Adam moves each coordinate by lr·sign(g) (up to ε). */
    double p[1] = {0.0}, g[1] = {-7.0};
    cnf_optim *o = make(CNF_OPTIM_ADAM, 0.05, 0, 0, 0, 0, 1);
    cnf_optim_step(o, p, g);
    assert_close(p[0], 0.05 * 7.0 / (7.0 + 1e-8), 1e-15, "first Adam step");
    cnf_optim_free(o);
}

/* f(θ) = ½ Σ a_i (θ_i − c_i)², ill-conditioned. */
static void quad_grad(const double *p, double *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double a = pow(10.0, (double)i / (n - 1) * 2 - 1), c = (double)i - 2.0;
        g[i] = a * (p[i] - c);
    }
}

static double run_quadratic(cnf_optim *o, size_t steps)
{
    enum { n = 5 };
    double p[n] = {0}, g[n];
    for (size_t k = 0; k < steps; k++) {
        quad_grad(p, g, n);
        cr_assert_eq(cnf_optim_step(o, p, g), CNF_OK);
    }
    double err = 0;
    for (size_t i = 0; i < n; i++)
        err = fmax(err, fabs(p[i] - ((double)i - 2.0)));
    return err;
}

Test(optim, minimises_a_quadratic)
{
    cnf_optim *adam = make(CNF_OPTIM_ADAM, 0.05, 0, 0, 0, 0, 5);
    double e = run_quadratic(adam, 3000);
    cr_assert(e < 1e-4, "Adam ends %g from the minimum", e);
    cnf_optim_free(adam);
    /* Heavy ball with lr 0.1 on curvatures in [0.1, 10]: contraction ≤ 0.95 per step. */
    cnf_optim *sgd = make(CNF_OPTIM_SGD, 0.1, 0, 0, 0.5, 0, 5);
    e = run_quadratic(sgd, 2000);
    cr_assert(e < 1e-10, "SGD+momentum ends %g from the minimum", e);
    cnf_optim_free(sgd);
    /* Plain SGD from 0: coordinate i ends at c_i (1 − (1 − lr a_i)^k); the slowest is i = 0
     * (a = 0.1, c = −2). The error is read as θ − c ≈ 4e-9 next to |c| = 2: rounding of θ
     * over 2000 steps leaves ~1e-13 absolute, hence the relative tolerance. */
    cnf_optim *plain = make(CNF_OPTIM_SGD, 0.1, 0, 0, 0, 0, 5);
    e = run_quadratic(plain, 2000);
    assert_close(e, 2.0 * pow(1.0 - 0.1 * 0.1, 2000), 1e-5, "SGD error after 2000 steps");
    cnf_optim_free(plain);
}

/* Run 7 steps, save (t, buffers, params), run 9 more; restore into a fresh optimizer, run the same
 * 9: bit-identical. */
static void check_resume(cnf_optim_method m, double mu, size_t warmup)
{
    enum { n = 6 };
    double p[n], g[n], saved_p[n], saved_buf[2][n];
    for (size_t i = 0; i < n; i++)
        p[i] = 0.3 * (double)i - 1.0;
    cnf_optim *a = make(m, 0.02, 1e-3, 0, mu, warmup, n);
    for (int k = 0; k < 7; k++) {
        quad_grad(p, g, n);
        cnf_optim_step(a, p, g);
    }
    uint64_t t = cnf_optim_steps(a);
    size_t nb = cnf_optim_n_buffers(a);
    cr_assert_eq(nb, m == CNF_OPTIM_ADAM ? 2 : (mu > 0 ? 1 : 0));
    for (size_t b = 0; b < nb; b++)
        memcpy(saved_buf[b], cnf_optim_buffer(a, b, NULL), sizeof saved_buf[b]);
    memcpy(saved_p, p, sizeof p);
    for (int k = 0; k < 9; k++) {
        quad_grad(p, g, n);
        cnf_optim_step(a, p, g);
    }
    cnf_optim *b2 = make(m, 0.02, 1e-3, 0, mu, warmup, n);
    cnf_optim_set_steps(b2, t);
    for (size_t b = 0; b < nb; b++) {
        const char *name = NULL;
        memcpy(cnf_optim_buffer(b2, b, &name), saved_buf[b], sizeof saved_buf[b]);
        cr_assert_not_null(name);
    }
    cr_assert_null(cnf_optim_buffer(b2, nb, NULL));
    for (int k = 0; k < 9; k++) {
        quad_grad(saved_p, g, n);
        cnf_optim_step(b2, saved_p, g);
    }
    cr_assert(memcmp(p, saved_p, sizeof p) == 0, "resumed %s differs", cnf_optim_method_name(m));
    for (size_t b = 0; b < nb; b++)
        cr_assert(memcmp(cnf_optim_buffer(a, b, NULL), cnf_optim_buffer(b2, b, NULL),
                         n * sizeof(double)) == 0);
    cnf_optim_free(a);
    cnf_optim_free(b2);
}

Test(optim, resume_from_state_is_bit_identical)
{
    check_resume(CNF_OPTIM_ADAM, 0, 0);
    check_resume(CNF_OPTIM_ADAM, 0, 10);
    check_resume(CNF_OPTIM_SGD, 0.9, 0);
    check_resume(CNF_OPTIM_SGD, 0, 3);
}

Test(optim, linear_warmup)
{
    /* Plain SGD on a constant gradient 1: step t moves by lr·min(1, t/4). */
    cnf_optim *o = make(CNF_OPTIM_SGD, 0.4, 0, 0, 0, 4, 1);
    double p[1] = {0}, g[1] = {1}, before;
    for (int t = 1; t <= 6; t++) {
        double expect = 0.4 * fmin(1.0, t / 4.0);
        assert_close(cnf_optim_lr(o), expect, 1e-15, "lr before the step");
        before = p[0];
        cnf_optim_step(o, p, g);
        assert_close(before - p[0], expect, 1e-14, "warm-up step");
    }
    cr_assert_eq(cnf_optim_set_lr(o, 0.1), CNF_OK);
    assert_close(cnf_optim_lr(o), 0.1, 0, "new lr");
    cr_assert_eq(cnf_optim_set_lr(o, -1), CNF_EINVAL);
    cnf_optim_free(o);
}

Test(optim, sgd_weight_decay_and_momentum_by_hand)
{
    /* L2: g' = g + wd·θ; b1 = g'1, b2 = μ b1 + g'2. */
    cnf_optim *o = make(CNF_OPTIM_SGD, 0.1, 0.5, 0, 0.9, 0, 1);
    double p[1] = {2.0}, g[1] = {1.0};
    cnf_optim_step(o, p, g);               /* g' = 2, b = 2, θ = 1.8 */
    assert_close(p[0], 1.8, 1e-15, "step 1");
    cnf_optim_step(o, p, g);               /* g' = 1.9, b = 1.8 + 1.9 = 3.7, θ = 1.43 */
    assert_close(p[0], 1.43, 1e-15, "step 2");
    cnf_optim_free(o);
}

Test(optim, nonfinite_gradient_changes_nothing)
{
    cnf_optim *o = make(CNF_OPTIM_ADAM, 0.1, 0, 0, 0, 0, 3);
    double p[3] = {1, 2, 3}, g[3] = {1, NAN, 1}, p0[3];
    memcpy(p0, p, sizeof p);
    cr_assert_eq(cnf_optim_step(o, p, g), CNF_ENONFINITE);
    cr_assert(memcmp(p, p0, sizeof p) == 0);
    cr_assert_eq(cnf_optim_steps(o), 0);
    cr_assert_eq(cnf_optim_buffer(o, 0, NULL)[0], 0.0);
    cnf_optim_free(o);
}

Test(optim, clip_grad_norm)
{
    double g[2] = {3.0, 4.0}, r;
    cr_assert_eq(cnf_optim_clip_norm(g, 2, 1.0, &r), CNF_OK);
    assert_close(r, 5.0, 1e-15, "norm before clipping");
    assert_close(hypot(g[0], g[1]), 5.0 / (5.0 + 1e-6), 1e-15, "norm after clipping");
    assert_close(g[0] / g[1], 0.75, 1e-15, "direction kept");
    double h[2] = {0.3, 0.4};
    cr_assert_eq(cnf_optim_clip_norm(h, 2, 1.0, &r), CNF_OK);
    cr_assert(h[0] == 0.3 && h[1] == 0.4, "a small gradient is not scaled");
    double big[2] = {3e300, 4e300};
    cr_assert_eq(cnf_optim_clip_norm(big, 2, INFINITY, &r), CNF_OK);
    assert_close(r, 5e300, 1e-15, "norm without overflow");
    double bad[2] = {1.0, INFINITY};
    cr_assert_eq(cnf_optim_clip_norm(bad, 2, 1.0, &r), CNF_ENONFINITE);
    cr_assert(isinf(r) && bad[0] == 1.0);
    double nan_[3] = {INFINITY, NAN, 1.0};
    cr_assert_eq(cnf_optim_clip_norm(nan_, 3, 1.0, &r), CNF_ENONFINITE);
    cr_assert(isnan(r));
    cr_assert_eq(cnf_optim_clip_norm(g, 2, 0.0, &r), CNF_EINVAL);
}

Test(optim, settings_and_names)
{
    cnf_optim_settings s;
    cnf_optim_settings_default(&s, CNF_OPTIM_ADAM);
    cnf_optim *o = (cnf_optim *)1;
    s.beta1 = 1.0;
    cr_assert_eq(cnf_optim_create(&s, 3, &o), CNF_EINVAL);
    cr_assert_null(o);
    cnf_optim_settings_default(&s, CNF_OPTIM_SGD);
    cr_assert_eq(cnf_optim_create(&s, 0, &o), CNF_EINVAL);
    s.lr = NAN;
    cr_assert_eq(cnf_optim_create(&s, 3, &o), CNF_EINVAL);
    cnf_optim_method m;
    cr_assert_eq(cnf_optim_method_from_name("sgd", &m), CNF_OK);
    cr_assert_eq(m, CNF_OPTIM_SGD);
    cr_assert_str_eq(cnf_optim_method_name(CNF_OPTIM_ADAM), "adam");
    cr_assert_eq(cnf_optim_method_from_name("rmsprop", &m), CNF_ENAME);
    cr_assert(strstr(cnf_errmsg(), "rmsprop"));
    cnf_optim_free(NULL);
}
