/* Core: error names, the random generator's reproducibility and moments, GEMM vs naive. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "cnf/core.h"
#include "core/internal.h"

Test(core, strerror_names_every_code)
{
    for (int c = 0; c >= CNF_EUNSUPPORTED; c--)
        cr_assert(strncmp(cnf_strerror(c), "CNF_", 4) == 0, "code %d has no name", c);
    cr_assert_str_eq(cnf_strerror(-999), "unknown cnf error code");
}

Test(core, fail_records_detail)
{
    int rc = cnf_fail(CNF_EINVAL, "width %d is zero", 0);
    cr_assert_eq(rc, CNF_EINVAL);
    cr_assert_str_eq(cnf_errmsg(), "width 0 is zero");
}

Test(core, rng_same_seed_same_bits)
{
    cnf_rng a, b;
    cnf_rng_seed(&a, 42);
    cnf_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(cnf_rng_u64(&a), cnf_rng_u64(&b));
        double x = cnf_rng_normal(&a), y = cnf_rng_normal(&b);
        cr_assert(memcmp(&x, &y, sizeof x) == 0);
    }
    cnf_rng_seed(&b, 43);
    cr_assert_neq(cnf_rng_u64(&a), cnf_rng_u64(&b));
}

Test(core, rng_moments)
{
    cnf_rng r;
    cnf_rng_seed(&r, 7);
    const int n = 200000;
    double su = 0, sn = 0, sn2 = 0, sr = 0;
    for (int i = 0; i < n; i++) {
        double u = cnf_rng_uniform(&r);
        cr_assert(u >= 0.0 && u < 1.0);
        su += u;
        double z = cnf_rng_normal(&r);
        sn += z;
        sn2 += z * z;
        double e = cnf_rng_rademacher(&r);
        cr_assert(e == 1.0 || e == -1.0);
        sr += e;
        cr_assert(cnf_rng_below(&r, 10) < 10);
    }
    /* 5 standard errors of each mean. */
    cr_assert(fabs(su / n - 0.5) < 5 * sqrt(1.0 / 12 / n));
    cr_assert(fabs(sn / n) < 5 / sqrt(n));
    cr_assert(fabs(sn2 / n - 1.0) < 5 * sqrt(2.0 / n));
    cr_assert(fabs(sr / n) < 5 / sqrt(n));
}

Test(core, gemm_matches_naive_all_transposes)
{
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    enum { M = 7, N = 5, K = 9 };
    double A[M * K + K * M], B[K * N + N * K], C1[M * N], C2[M * N];
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (size_t i = 0; i < sizeof A / sizeof *A; i++) A[i] = cnf_rng_normal(&r);
            for (size_t i = 0; i < sizeof B / sizeof *B; i++) B[i] = cnf_rng_normal(&r);
            for (int i = 0; i < M * N; i++) C1[i] = C2[i] = cnf_rng_normal(&r);
            size_t lda = ta ? M : K, ldb = tb ? K : N;
            cnf_gemm(ta, tb, M, N, K, 0.7, A, lda, B, ldb, 0.3, C1, N);
            cnf_gemm_naive(ta, tb, M, N, K, 0.7, A, lda, B, ldb, 0.3, C2, N);
            for (int i = 0; i < M * N; i++)
                cr_assert_float_eq(C1[i], C2[i], 1e-12, "ta=%d tb=%d i=%d", ta, tb, i);
        }
}
