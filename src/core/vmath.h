/* Branch-free exp and tanh that GCC vectorizes inside loops (no libm calls, no -ffast-math).
 *
 * glibc's tanh and exp are called per element and cannot be vectorized; at the CNF's sizes they
 * took over a quarter of a training step (perf, DESIGN.md §5). These are written as straight-line
 * code on doubles and 64-bit integers (selects instead of branches), so a loop over an array
 * compiles to SSE2/AVX2/AVX-512 code, and the same function is used for single values
 * (cnf_act_eval) so that batched and scalar results agree bit for bit.
 *
 * cnf_exp_fast: Cody–Waite reduction x = n ln2 + r, |r| ≤ ln2/2, with ln2 split in a head of
 * few bits and a tail (Cephes' constants; Moshier, "Methods and Programs for Mathematical
 * Functions", 1989), then e^r by a degree-13 Taylor polynomial (no division: a vector divide
 * costs as much as a dozen multiply-adds), scaled by 2^n built from its bits. |x| ≤ 708.
 *
 * cnf_tanh_fast: |x| < 0.625: x + x³ P(x²)/Q(x²) (Cephes tanh.c); otherwise
 * 1 − 2/(e^{2|x|} + 1) with |x| clamped to 20 (tanh(20) rounds to 1); sign restored by
 * copysign. NaN propagates. Max error measured against glibc over [−30, 30]: see
 * tests/test_vmath.c (a few ulp). */
#ifndef CNF_VMATH_H
#define CNF_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Kernels that loop over these functions are compiled for AVX-512, AVX2 and baseline SSE2 and
 * picked at load time (GCC function multiversioning), so the binary runs on any x86-64. The
 * build uses -std=c11, hence -ffp-contract=off: every clone gives the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&      \
    !defined(CNF_NO_CLONES)
#define CNF_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CNF_VECTOR_CLONES
#endif

static inline double cnf_bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline uint64_t cnf_double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* e^x for |x| ≤ 708 (larger arguments must be clamped by the caller): e^r by its Taylor
 * polynomial of degree 13 (truncation < 5e-18 relative for |r| ≤ ln2/2), no division. */
static inline double cnf_exp_fast(double x)
{
    const double log2e = 1.4426950408889634074;
    const double c1 = 6.93145751953125E-1, c2 = 1.42860682030941723212E-6; /* ln 2 = c1 + c2 */
    const double shifter = 0x1.8p52; /* adding it rounds to an integer held in the low bits */
    double t = x * log2e + shifter;
    double n = t - shifter;
    double r = x - n * c1;
    r = r - n * c2;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r; /* e^r − 1, its small part first */
    double e = 1.0 + p;
    /* 2^n: n sits in the low bits of t's mantissa (two's complement for n < 0). */
    uint64_t k = cnf_double_to_bits(t) << 52;
    return cnf_bits_to_double(cnf_double_to_bits(e) + k);
}

/* One division per value: the small-|x| branch is a + a z P/Q, the large one 1 − 2/(e^{2a} + 1);
 * the numerator and denominator are selected first. */
static inline double cnf_tanh_fast(double x)
{
    double a = fabs(x);
    a = a > 20.0 ? 20.0 : a; /* NaN stays NaN */
    double z = a * a;
    double p = (-9.64399179425052238628E-1 * z - 9.92877231001918586564E1) * z -
               1.61468768441708447952E3;
    double q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z +
               4.84406305325125486048E3;
    double e = cnf_exp_fast(2.0 * a);
    /* Blend arithmetically (every operand is finite for a ≤ 20), so that the compiler keeps
     * one division instead of a masked division per branch. */
    double m = a < 0.625 ? 1.0 : 0.0;
    double num = m * (a * z * p) + (1.0 - m) * -2.0;
    double den = m * q + (1.0 - m) * (e + 1.0);
    double f = num / den;
    return copysign(m * a + (1.0 - m) + f, x);
}

/* The logistic function 1/(1 + e^{−x}), clamped so e^{−x} neither overflows nor loses 1. */
static inline double cnf_sigmoid_fast(double x)
{
    double a = x < -700.0 ? -700.0 : (x > 700.0 ? 700.0 : x);
    double e = cnf_exp_fast(-a);
    double r = 1.0 / (1.0 + e);
    return x != x ? x : r;
}

static inline float cnf_bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t cnf_float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* tanh in float for mixed precision's activations (16 lanes of AVX-512 instead of 8, and a
 * degree-5 exp): tanh|x| = m / (m + 2) with m = e^{2|x|} − 1 = 2^n (e^r − 1) + (2^n − 1), e^r − 1
 * = r + r² P(r) with r from Cody–Waite in float and P from Cephes expf.c, |x| clamped to 10
 * (tanh(10) rounds to 1 in float). One branch-free path and one division: 30% faster than
 * taking x + x³ Q(x²) below 0.625 and 1 − 2/(e^{2|x|} + 1) above, for 2.5 instead of 1.3 float
 * ulp from the correctly rounded value at most (tests/test_vmath.c; mixed precision's float
 * products round at 2⁻²⁴ anyway). NaN propagates. */
static inline float cnf_tanh_fastf(float x)
{
    float a = fabsf(x);
    a = a > 10.0f ? 10.0f : a; /* NaN stays NaN */
    float y = 2.0f * a;
    float t = y * 1.44269504088896341f + 0x1.8p23f; /* n in the low mantissa bits */
    float n = t - 0x1.8p23f;
    float r = y - n * 0.693359375f;
    r = r - n * -2.12194440E-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    float q = p * (r * r) + r;                                             /* e^r − 1 */
    float s = cnf_bits_to_float(0x3f800000u + (cnf_float_to_bits(t) << 23)); /* 2^n */
    float m = s * q + (s - 1.0f);
    return copysignf(m / (m + 2.0f), x);
}

/* e^x − 1 for x ≤ 0 (ELU's negative branch) without cancellation near 0: 2t/(1 − t) with
 * t = tanh(x/2); for x < −40 the result is −1 to the last bit. Not for large positive x. */
static inline double cnf_expm1_fast(double x)
{
    double t = cnf_tanh_fast(0.5 * x);
    double r = 2.0 * t / (1.0 - t);
    return x < -40.0 ? -1.0 : r;
}

#endif
