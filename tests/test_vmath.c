/* The vectorizable exp, tanh, sigmoid and expm1 of src/core/vmath.h against glibc, in units in the
 * last place of the libm value. Measured maxima (x86-64, glibc 2.36): tanh 2 ulp over [−30, 30]
 * and tiny arguments, exp 2 ulp over [−708, 708], expm1 2 ulp over [−50, 0], sigmoid 4 ulp
 * against 1/(1 + exp(−x)) (itself rounded twice). The bounds below leave one ulp of slack. */
#include <criterion/criterion.h>
#include <math.h>

#include "core/vmath.h"

static double ulps(double a, double ref)
{
    if (a == ref)
        return 0.0;
    double u = nextafter(fabs(ref), INFINITY) - fabs(ref);
    return fabs(a - ref) / u;
}

static double worst(double (*f)(double), double (*ref)(double), double lo, double hi, long n)
{
    double m = 0.0;
    for (long i = 0; i <= n; i++) {
        double x = lo + (hi - lo) * (double)i / (double)n;
        double u = ulps(f(x), ref(x));
        m = u > m ? u : m;
    }
    return m;
}

static double f_tanh(double x) { return cnf_tanh_fast(x); }
static double f_exp(double x) { return cnf_exp_fast(x); }
static double f_expm1(double x) { return cnf_expm1_fast(x); }
static double f_sig(double x) { return cnf_sigmoid_fast(x); }
static double r_sig(double x) { return 1.0 / (1.0 + exp(-x)); }

Test(vmath, tanh_within_3_ulp_of_libm)
{
    double m = worst(f_tanh, tanh, -30.0, 30.0, 600001);
    m = fmax(m, worst(f_tanh, tanh, -0.7, 0.7, 200001));
    for (int e = -320; e <= 0; e++) {
        double x = ldexp(1.2345, e);
        m = fmax(m, fmax(ulps(cnf_tanh_fast(x), tanh(x)), ulps(cnf_tanh_fast(-x), tanh(-x))));
    }
    cr_assert(m <= 3.0, "tanh max error %g ulp", m);
}

Test(vmath, exp_expm1_sigmoid_within_bounds)
{
    double me = worst(f_exp, exp, -708.0, 708.0, 600001);
    double mm = worst(f_expm1, expm1, -50.0, 0.0, 600001);
    double ms = worst(f_sig, r_sig, -40.0, 40.0, 600001);
    cr_assert(me <= 3.0, "exp max error %g ulp", me);
    cr_assert(mm <= 3.0, "expm1 max error %g ulp", mm);
    cr_assert(ms <= 5.0, "sigmoid max error %g ulp", ms);
}

/* The float tanh of mixed precision against the double tanh rounded to float. */
Test(vmath, float_tanh_within_2_5_float_ulp)
{
    double m = 0.0;
    for (long i = -3000000; i <= 3000000; i++) {
        float x = (float)((double)i * 1e-5);
        double ref = tanh((double)x);
        float rf = (float)ref, u = nextafterf(fabsf(rf), INFINITY) - fabsf(rf);
        m = fmax(m, fabs((double)cnf_tanh_fastf(x) - ref) / u);
    }
    for (int e = -140; e <= 0; e++) {
        float x = ldexpf(1.2345f, e);
        float rf = (float)tanh((double)x), u = nextafterf(rf, INFINITY) - rf;
        m = fmax(m, fabs((double)cnf_tanh_fastf(x) - tanh((double)x)) / u);
    }
    cr_assert(m <= 2.5, "float tanh max error %g float ulp", m);
    cr_assert(isnan(cnf_tanh_fastf(NAN)));
    cr_assert(cnf_tanh_fastf(INFINITY) == 1.0f && cnf_tanh_fastf(-50.0f) == -1.0f);
    cr_assert(cnf_tanh_fastf(0.0f) == 0.0f && signbit(cnf_tanh_fastf(-0.0f)));
}

Test(vmath, special_values)
{
    cr_assert(isnan(cnf_tanh_fast(NAN)));
    cr_assert(cnf_tanh_fast(INFINITY) == 1.0 && cnf_tanh_fast(-INFINITY) == -1.0);
    cr_assert(cnf_tanh_fast(0.0) == 0.0 && signbit(cnf_tanh_fast(-0.0)));
    cr_assert(cnf_tanh_fast(1e3) == 1.0 && cnf_tanh_fast(-1e3) == -1.0);
    cr_assert(isnan(cnf_sigmoid_fast(NAN)));
    cr_assert(cnf_sigmoid_fast(1e4) == 1.0 && cnf_sigmoid_fast(-1e4) >= 0.0);
    cr_assert(cnf_exp_fast(0.0) == 1.0);
    cr_assert(cnf_expm1_fast(-1e3) == -1.0 && cnf_expm1_fast(0.0) == 0.0);
}
