/* FFJORD's eight 2-D toy distributions (Grathwohl et al., "FFJORD", ICLR 2019, lib/toy_data.py),
 * written from their definitions; see cnf/toy.h for the math. The sklearn-based sets follow
 * sklearn's make_moons / make_circles / make_swiss_roll as a distribution. Each set is one
 * sampler function and one line in the table at the end. */
#include <math.h>
#include <string.h>

#include "cnf/toy.h"
#include "core/internal.h"

struct cnf_toy_type {
    const char *name;
    /* Fill X (n, 2); n ≥ 1, X and rng valid. */
    void (*sample)(size_t n, double *X, cnf_rng *rng);
};

/* Fisher–Yates shuffle of the n rows of X (n, 2): the stratified sets return their parts mixed. */
static void shuffle_rows(size_t n, double *X, cnf_rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)cnf_rng_below(rng, i);
        double a = X[2 * (i - 1)], b = X[2 * (i - 1) + 1];
        X[2 * (i - 1)] = X[2 * j];
        X[2 * (i - 1) + 1] = X[2 * j + 1];
        X[2 * j] = a;
        X[2 * j + 1] = b;
    }
}

/* numpy's linspace(0, stop, m, endpoint) at index k. */
static double linspace(double stop, size_t m, size_t k, int endpoint)
{
    if (endpoint)
        return m > 1 ? stop * (double)k / (double)(m - 1) : 0.0;
    return stop * (double)k / (double)m;
}

/* Add sd·N(0, I) to every coordinate. */
static void add_noise(size_t n, double *X, double sd, cnf_rng *rng)
{
    for (size_t i = 0; i < 2 * n; i++)
        X[i] += sd * cnf_rng_normal(rng);
}

static void eight_gaussians(size_t n, double *X, cnf_rng *rng)
{
    const double s = 4.0, r = 1.0 / sqrt(2.0);
    const double c[8][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {r, r}, {r, -r}, {-r, r}, {-r, -r}};
    for (size_t i = 0; i < n; i++) {
        double px = 0.5 * cnf_rng_normal(rng), py = 0.5 * cnf_rng_normal(rng);
        size_t k = (size_t)cnf_rng_below(rng, 8);
        X[2 * i] = (px + s * c[k][0]) / 1.414;
        X[2 * i + 1] = (py + s * c[k][1]) / 1.414;
    }
}

static void checkerboard(size_t n, double *X, cnf_rng *rng)
{
    for (size_t i = 0; i < n; i++) {
        double x1 = 4.0 * cnf_rng_uniform(rng) - 2.0;
        double x2 = cnf_rng_uniform(rng) - 2.0 * (double)cnf_rng_below(rng, 2);
        x2 += fmod(floor(x1) + 2.0, 2.0); /* Python's floor(x1) % 2, in {0, 1} */
        X[2 * i] = 2.0 * x1;
        X[2 * i + 1] = 2.0 * x2;
    }
}

static void two_spirals(size_t n, double *X, cnf_rng *rng)
{
    size_t half = n - n / 2;
    for (size_t i = 0; i < n; i++) {
        double s = sqrt(cnf_rng_uniform(rng)) * 540.0 * (2.0 * M_PI) / 360.0;
        double x = -cos(s) * s + 0.5 * cnf_rng_uniform(rng);
        double y = sin(s) * s + 0.5 * cnf_rng_uniform(rng);
        double sign = i < half ? 1.0 : -1.0;
        X[2 * i] = sign * x / 3.0;
        X[2 * i + 1] = sign * y / 3.0;
    }
    add_noise(n, X, 0.1, rng);
}

static void moons(size_t n, double *X, cnf_rng *rng)
{
    size_t n_out = n / 2, n_in = n - n_out;
    for (size_t k = 0; k < n_out; k++) {
        double a = linspace(M_PI, n_out, k, 1);
        X[2 * k] = cos(a);
        X[2 * k + 1] = sin(a);
    }
    for (size_t k = 0; k < n_in; k++) {
        double a = linspace(M_PI, n_in, k, 1);
        X[2 * (n_out + k)] = 1.0 - cos(a);
        X[2 * (n_out + k) + 1] = 1.0 - sin(a) - 0.5;
    }
    shuffle_rows(n, X, rng);
    add_noise(n, X, 0.1, rng);
    for (size_t i = 0; i < n; i++) {
        X[2 * i] = 2.0 * X[2 * i] - 1.0;
        X[2 * i + 1] = 2.0 * X[2 * i + 1] - 0.2;
    }
}

static void pinwheel(size_t n, double *X, cnf_rng *rng)
{
    const double radial_sd = 0.3, tangential_sd = 0.1, rate = 0.25;
    for (size_t i = 0; i < n; i++) {
        double f1 = 1.0 + radial_sd * cnf_rng_normal(rng);
        double f2 = tangential_sd * cnf_rng_normal(rng);
        double th = 2.0 * M_PI * (double)(i % 5) / 5.0 + rate * exp(f1);
        X[2 * i] = 2.0 * (f1 * cos(th) + f2 * sin(th));
        X[2 * i + 1] = 2.0 * (-f1 * sin(th) + f2 * cos(th));
    }
    shuffle_rows(n, X, rng);
}

/* Points evenly spaced in angle (endpoint excluded) on concentric circles of the given radii,
 * with counts[j] points on circle j; rows are written consecutively from X. */
static void concentric(size_t parts, const size_t *counts, const double *radii, double *X)
{
    size_t row = 0;
    for (size_t j = 0; j < parts; j++)
        for (size_t k = 0; k < counts[j]; k++, row++) {
            double a = linspace(2.0 * M_PI, counts[j], k, 0);
            X[2 * row] = radii[j] * cos(a);
            X[2 * row + 1] = radii[j] * sin(a);
        }
}

static void circles(size_t n, double *X, cnf_rng *rng)
{
    const size_t counts[2] = {n / 2, n - n / 2};
    const double radii[2] = {1.0, 0.5};
    concentric(2, counts, radii, X);
    shuffle_rows(n, X, rng);
    add_noise(n, X, 0.08, rng);
    for (size_t i = 0; i < 2 * n; i++)
        X[i] *= 3.0;
}

static void rings(size_t n, double *X, cnf_rng *rng)
{
    const size_t q = n / 4;
    const size_t counts[4] = {q, q, q, n - 3 * q};
    const double radii[4] = {3.0, 2.25, 1.5, 0.75};
    concentric(4, counts, radii, X);
    shuffle_rows(n, X, rng);
    add_noise(n, X, 0.08, rng);
}

static void swissroll(size_t n, double *X, cnf_rng *rng)
{
    for (size_t i = 0; i < n; i++) {
        double t = 1.5 * M_PI * (1.0 + 2.0 * cnf_rng_uniform(rng));
        X[2 * i] = t * cos(t);
        X[2 * i + 1] = t * sin(t);
    }
    add_noise(n, X, 1.0, rng);
    for (size_t i = 0; i < 2 * n; i++)
        X[i] /= 5.0;
}

static const cnf_toy_type toys[] = {
    {"8gaussians", eight_gaussians}, {"checkerboard", checkerboard}, {"2spirals", two_spirals},
    {"moons", moons},                {"pinwheel", pinwheel},         {"circles", circles},
    {"rings", rings},                {"swissroll", swissroll},
};
#define N_TOYS (sizeof toys / sizeof toys[0])

size_t cnf_toy_count(void) { return N_TOYS; }

const cnf_toy_type *cnf_toy_at(size_t i) { return i < N_TOYS ? &toys[i] : NULL; }

const char *cnf_toy_name(const cnf_toy_type *T) { return T ? T->name : NULL; }

int cnf_toy_from_name(const char *name, const cnf_toy_type **out)
{
    if (!name || !out)
        return cnf_fail(CNF_EINVAL, "cnf_toy_from_name: name and out must not be NULL");
    for (size_t i = 0; i < N_TOYS; i++)
        if (strcmp(name, toys[i].name) == 0) {
            *out = &toys[i];
            return CNF_OK;
        }
    char list[256] = "";
    for (size_t i = 0; i < N_TOYS; i++) {
        if (i)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, toys[i].name, sizeof list - strlen(list) - 1);
    }
    return cnf_fail(CNF_ENAME, "unknown dataset '%s' (valid: %s)", name, list);
}

int cnf_toy_sample(const cnf_toy_type *T, size_t n, double *X, cnf_rng *rng)
{
    if (!T || (n > 0 && (!X || !rng)))
        return cnf_fail(CNF_EINVAL, "cnf_toy_sample: dataset, X and rng must not be NULL");
    if (!cnf_size_ok(cnf_size_mul(n, 2))) /* X cannot hold them: 2n would wrap */
        return cnf_fail(CNF_EINVAL, "cnf_toy_sample: %zu points cannot be addressed", n);
    if (n > 0)
        T->sample(n, X, rng);
    return CNF_OK;
}

int cnf_toy_sample_named(const char *name, size_t n, double *X, cnf_rng *rng)
{
    const cnf_toy_type *T;
    int rc = cnf_toy_from_name(name, &T);
    return rc ? rc : cnf_toy_sample(T, n, X, rng);
}
