/* cnf core: error codes, the explicit random generator, and the one GEMM wrapper.
 *
 * Errors. Every function that can fail returns int: CNF_OK (0) or a negative CNF_E* code.
 * cnf_strerror(code) names the code; cnf_errmsg() gives the detail of the most recent failure in
 * the calling thread (which file, which value, which option). The library never prints, exits or
 * aborts. */
#ifndef CNF_CORE_H
#define CNF_CORE_H

#include <stddef.h>
#include <stdint.h>

#if defined(CNF_BUILDING)
#define CNF_API __attribute__((visibility("default")))
#else
#define CNF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define CNF_VERSION_STRING "0.1.0"

/* Return codes. Negative values are errors; each has a name through cnf_strerror(). */
enum {
    CNF_OK = 0,
    CNF_EINVAL = -1,          /* an argument or option is invalid (zero width, d = 0, bad value) */
    CNF_ENOMEM = -2,          /* an allocation failed */
    CNF_EDIM = -3,            /* dimensions do not match */
    CNF_ENAME = -4,           /* unknown name (activation, solver, dataset, ...) */
    CNF_EIO = -5,             /* reading or writing a file failed */
    CNF_EFORMAT = -6,         /* a file or input is malformed, truncated or of the wrong type */
    CNF_ENONFINITE = -7,      /* NaN or Inf where a finite number is needed */
    CNF_ESTEP_UNDERFLOW = -8, /* the ODE step size fell below its minimum */
    CNF_EMAX_STEPS = -9,      /* the ODE solver took more steps than allowed */
    CNF_ERHS = -10,           /* the right-hand side returned a fatal (negative) code */
    CNF_ESOLVER = -11,        /* the ODE solver failed for another reason (see cnf_errmsg) */
    CNF_EUNSUPPORTED = -12,   /* the combination of options is not supported */
    CNF_EDIVERGED = -13,      /* training diverged (loss, gradient or step exploded) */
};

/* The name of a return code, e.g. "CNF_EDIM: dimensions do not match". Never NULL. */
CNF_API const char *cnf_strerror(int code);

/* Detail of the most recent error set in this thread ("" if none). Valid until the next failing
 * call in the same thread. */
CNF_API const char *cnf_errmsg(void);

/* Version string of the library, "MAJOR.MINOR.PATCH". */
CNF_API const char *cnf_version(void);

/* ---- Random numbers -------------------------------------------------------------------------
 * xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64: the same seed gives the same
 * bits on every machine. The state is a plain struct so checkpoints can store it. Every random
 * draw in cnf goes through one of these, passed in explicitly. */
typedef struct cnf_rng {
    uint64_t s[4];
    double spare;   /* second Box–Muller normal, valid if has_spare */
    int has_spare;
} cnf_rng;

/* Seed the generator (any 64-bit seed, 0 included). */
CNF_API void cnf_rng_seed(cnf_rng *rng, uint64_t seed);
/* Uniform 64-bit integer. */
CNF_API uint64_t cnf_rng_u64(cnf_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
CNF_API double cnf_rng_uniform(cnf_rng *rng);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
CNF_API uint64_t cnf_rng_below(cnf_rng *rng, uint64_t n);
/* Standard normal N(0, 1) (Box–Muller; pairs are cached in the state). */
CNF_API double cnf_rng_normal(cnf_rng *rng);
/* +1 or −1 with probability 1/2 each. */
CNF_API double cnf_rng_rademacher(cnf_rng *rng);

/* ---- Sizes ---------------------------------------------------------------------------------
 * a·b, or SIZE_MAX when the product overflows. Saturating, so products chain
 * (cnf_size_mul(cnf_size_mul(n, d), sizeof(double))) and a size that overflowed fails its
 * allocation instead of wrapping round to a small buffer; cnf_size_ok tells it apart. Every size
 * the library or the command line computes from user input goes through it. */
static inline size_t cnf_size_mul(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}
/* 1 when n doubles (8 bytes each) can be addressed: n is no saturated product and n·8 fits. */
static inline int cnf_size_ok(size_t n_values)
{
    return n_values != SIZE_MAX && n_values <= SIZE_MAX / 8;
}

/* ---- Linear algebra -------------------------------------------------------------------------
 * C = alpha · op(A) · op(B) + beta · C, row-major (C is M×N, op(A) M×K, op(B) K×N); trans_a and
 * trans_b are 0 (op = identity) or 1 (op = transpose). The only call to BLAS in cnf. */
CNF_API void cnf_gemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, double alpha,
                      const double *A, size_t lda, const double *B, size_t ldb, double beta,
                      double *C, size_t ldc);
/* The same product by three plain loops: the reference the tests compare cnf_gemm against. */
CNF_API void cnf_gemm_naive(int trans_a, int trans_b, size_t M, size_t N, size_t K, double alpha,
                            const double *A, size_t lda, const double *B, size_t ldb, double beta,
                            double *C, size_t ldc);

#ifdef __cplusplus
}
#endif
#endif
