/* Toy datasets: finiteness, reproducibility, and each set's geometry against its definition. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/toy.h"

#define N 4000

static double *draw(const char *name, size_t n, uint64_t seed)
{
    double *X = malloc(2 * n * sizeof *X);
    cr_assert_not_null(X);
    cnf_rng rng;
    cnf_rng_seed(&rng, seed);
    int rc = cnf_toy_sample_named(name, n, X, &rng);
    cr_assert_eq(rc, CNF_OK, "%s: %s", name, cnf_errmsg());
    return X;
}

/* Mean of f over the points and its standard error. */
static void mean_se(const double *v, size_t n, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (size_t i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *se = sqrt(s2 / (n - 1) / n);
}

/* Asserts the mean of r² = x² + y² is expect within 5 standard errors. */
static void assert_mean_r2(const char *name, const double *X, size_t n, double expect)
{
    double *r2 = malloc(n * sizeof *r2), m, se;
    for (size_t i = 0; i < n; i++)
        r2[i] = X[2 * i] * X[2 * i] + X[2 * i + 1] * X[2 * i + 1];
    mean_se(r2, n, &m, &se);
    free(r2);
    cr_assert(fabs(m - expect) < 5 * se, "%s: mean r² %g, expected %g ± %g", name, m, expect, 5 * se);
}

/* Asserts coordinate c has mean expect within 5 standard errors. */
static void assert_mean_coord(const char *name, const double *X, size_t n, int c, double expect)
{
    double *v = malloc(n * sizeof *v), m, se;
    for (size_t i = 0; i < n; i++)
        v[i] = X[2 * i + c];
    mean_se(v, n, &m, &se);
    free(v);
    cr_assert(fabs(m - expect) < 5 * se, "%s: mean of x%d %g, expected %g ± %g", name, c, m, expect,
              5 * se);
}

Test(toy, every_set_finite_and_reproducible)
{
    cr_assert_eq(cnf_toy_count(), 8);
    cr_assert_null(cnf_toy_at(8));
    for (size_t k = 0; k < cnf_toy_count(); k++) {
        const char *name = cnf_toy_name(cnf_toy_at(k));
        double *a = draw(name, 1001, 5), *b = draw(name, 1001, 5), *c = draw(name, 1001, 6);
        for (size_t i = 0; i < 2 * 1001; i++)
            cr_assert(isfinite(a[i]) && fabs(a[i]) < 8.0, "%s: point %zu = %g", name, i / 2, a[i]);
        cr_assert(memcmp(a, b, 2 * 1001 * sizeof *a) == 0, "%s: same seed, different points", name);
        cr_assert(memcmp(a, c, 2 * 1001 * sizeof *a) != 0, "%s: seed is ignored", name);
        free(a);
        free(b);
        free(c);
        /* Tiny batches are valid too. */
        for (size_t n = 1; n < 6; n++)
            free(draw(name, n, 1));
    }
}

Test(toy, unknown_name_and_bad_arguments)
{
    const cnf_toy_type *T = NULL;
    cnf_rng rng;
    cnf_rng_seed(&rng, 1);
    double x[2];
    cr_assert_eq(cnf_toy_from_name("9gaussians", &T), CNF_ENAME);
    cr_assert(strstr(cnf_errmsg(), "9gaussians") && strstr(cnf_errmsg(), "checkerboard"),
              "detail should name the input and the valid names: %s", cnf_errmsg());
    cr_assert_eq(cnf_toy_sample_named("nope", 1, x, &rng), CNF_ENAME);
    cr_assert_eq(cnf_toy_from_name(NULL, &T), CNF_EINVAL);
    cr_assert_eq(cnf_toy_sample(NULL, 1, x, &rng), CNF_EINVAL);
    cr_assert_eq(cnf_toy_from_name("rings", &T), CNF_OK);
    cr_assert_str_eq(cnf_toy_name(T), "rings");
    cr_assert_eq(cnf_toy_sample(T, 1, NULL, &rng), CNF_EINVAL);
    cr_assert_eq(cnf_toy_sample(T, 0, NULL, &rng), CNF_OK);
}

Test(toy, eight_gaussians_cluster_at_centres)
{
    double *X = draw("8gaussians", N, 11);
    const double sd = 0.5 / 1.414;
    size_t count[8] = {0};
    for (size_t i = 0; i < N; i++) {
        double best = INFINITY;
        size_t kbest = 0;
        for (size_t k = 0; k < 8; k++) {
            double a = 2 * M_PI * k / 8, cx = 4 * cos(a) / 1.414, cy = 4 * sin(a) / 1.414;
            double d = hypot(X[2 * i] - cx, X[2 * i + 1] - cy);
            if (d < best)
                best = d, kbest = k;
        }
        cr_assert(best < 6 * sd, "point %zu is %g from every centre", i, best);
        count[kbest]++;
    }
    for (size_t k = 0; k < 8; k++)
        cr_assert(fabs(count[k] - N / 8.0) < 5 * sqrt(N * (1 / 8.0) * (7 / 8.0)), "centre %zu: %zu",
                  k, count[k]);
    /* E r² = (4² + 2·0.5²) / 1.414². */
    assert_mean_r2("8gaussians", X, N, (16 + 0.5) / (1.414 * 1.414));
    free(X);
}

Test(toy, checkerboard_points_in_black_squares)
{
    double *X = draw("checkerboard", N, 12);
    size_t count[8] = {0};
    for (size_t i = 0; i < N; i++) {
        double x = X[2 * i], y = X[2 * i + 1];
        cr_assert(x >= -4 && x < 4 && y >= -4 && y < 4, "point %zu (%g, %g) outside", i, x, y);
        long cx = (long)floor(x / 2), cy = (long)floor(y / 2);
        cr_assert(((cx + cy) % 2 + 2) % 2 == 0, "point %zu (%g, %g) in a white square", i, x, y);
        count[(cx + 2) * 2 + (cy + 2) / 2]++;
    }
    for (size_t k = 0; k < 8; k++)
        cr_assert(fabs(count[k] - N / 8.0) < 5 * sqrt(N * (1 / 8.0) * (7 / 8.0)), "square %zu: %zu",
                  k, count[k]);
    assert_mean_coord("checkerboard", X, N, 0, 0.0);
    assert_mean_coord("checkerboard", X, N, 1, 0.0);
    free(X);
}

Test(toy, two_spirals_lie_on_the_spirals)
{
    size_t n = 1000;
    double *X = draw("2spirals", n, 13);
    size_t plus = 0;
    for (size_t i = 0; i < n; i++) {
        double px = 3 * X[2 * i], py = 3 * X[2 * i + 1], best[2] = {INFINITY, INFINITY};
        for (int g = 0; g <= 3000; g++) {
            double s = 3 * M_PI * g / 3000.0, cx = -cos(s) * s, cy = sin(s) * s;
            best[0] = fmin(best[0], hypot(px - cx, py - cy));
            best[1] = fmin(best[1], hypot(px + cx, py + cy));
        }
        /* Offset U[0,½]² (≤ 0.71) plus noise 3·0.1·N (≤ 6 sd): within 2.5 of its arm; the arms
         * are 2π apart. */
        cr_assert(fmin(best[0], best[1]) < 2.5, "point %zu is %g from both spirals", i,
                  fmin(best[0], best[1]));
        plus += best[0] < best[1];
    }
    cr_assert(fabs(plus - n / 2.0) < 5 * sqrt(n / 4.0), "%zu of %zu on the first spiral", plus, n);
    free(X);
}

Test(toy, moons_mean_and_arcs)
{
    double *X = draw("moons", N, 14);
    /* Before the affine map the two arcs average to (½, ¼) exactly; after ·2 + (−1, −0.2): (0, 0.3). */
    assert_mean_coord("moons", X, N, 0, 0.0);
    assert_mean_coord("moons", X, N, 1, 0.3);
    for (size_t i = 0; i < N; i++) {
        double u = (X[2 * i] + 1) / 2, v = (X[2 * i + 1] + 0.2) / 2;
        double d_up = fabs(hypot(u, v) - 1), d_lo = fabs(hypot(u - 1, v - 0.5) - 1);
        cr_assert(fmin(d_up, d_lo) < 0.6, "point %zu far from both arcs", i);
    }
    free(X);
}

Test(toy, pinwheel_radius_and_symmetry)
{
    double *X = draw("pinwheel", N, 15);
    /* |x|² = 4(f1² + f2²), E = 4(1 + 0.3² + 0.1²); the five arms are rotations: mean 0. */
    assert_mean_r2("pinwheel", X, N, 4 * (1 + 0.09 + 0.01));
    assert_mean_coord("pinwheel", X, N, 0, 0.0);
    assert_mean_coord("pinwheel", X, N, 1, 0.0);
    free(X);
}

Test(toy, circles_radii)
{
    double *X = draw("circles", N, 16);
    size_t outer = 0;
    for (size_t i = 0; i < N; i++)
        outer += hypot(X[2 * i], X[2 * i + 1]) > 2.25;
    cr_assert(fabs(outer - N / 2.0) < 5 * sqrt(N / 4.0), "%zu points on the outer circle", outer);
    /* E r² = ½(3² + 1.5²) + 2·(3·0.08)². */
    assert_mean_r2("circles", X, N, 0.5 * (9 + 2.25) + 2 * 0.24 * 0.24);
    free(X);
}

Test(toy, rings_radii)
{
    double *X = draw("rings", N, 17);
    const double R[4] = {3, 2.25, 1.5, 0.75};
    size_t count[4] = {0};
    for (size_t i = 0; i < N; i++) {
        double r = hypot(X[2 * i], X[2 * i + 1]);
        size_t k = 0;
        for (size_t j = 1; j < 4; j++)
            if (fabs(r - R[j]) < fabs(r - R[k]))
                k = j;
        count[k]++;
    }
    /* Stratified: N/4 per ring; a point leaves its ring only beyond 4.7 noise sd. */
    for (size_t k = 0; k < 4; k++)
        cr_assert(labs((long)count[k] - N / 4) <= 3, "ring %zu: %zu points", k, count[k]);
    assert_mean_r2("rings", X, N, (9 + 2.25 * 2.25 + 2.25 + 0.75 * 0.75) / 4 + 2 * 0.08 * 0.08);
    free(X);
}

Test(toy, swissroll_radius)
{
    double *X = draw("swissroll", N, 18);
    /* 25|x|² = t² + noise, t ~ U[1.5π, 4.5π]: E t² = (a² + ab + b²)/3 = 9.75π², noise adds 2. */
    assert_mean_r2("swissroll", X, N, (9.75 * M_PI * M_PI + 2) / 25);
    free(X);
}
