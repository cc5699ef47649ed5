/* Core: error names, the random generator's reproducibility and moments, GEMM vs naive, and
 * sizes from user input (saturating products; huge counts refused by the library's entry points). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf.h"
#include "cnf/bench.h"
#include "core/internal.h"

Test(core, strerror_names_every_code)
{
    for (int c = 0; c >= CNF_EDIVERGED; c--)
        cr_assert(strncmp(cnf_strerror(c), "CNF_", 4) == 0, "code %d has no name", c);
    cr_assert_str_eq(cnf_strerror(-999), "unknown cnf error code");
}

Test(core, fail_records_detail)
{
    int rc = cnf_fail(CNF_EINVAL, "width %d is zero", 0);
    cr_assert_eq(rc, CNF_EINVAL);
    cr_assert_str_eq(cnf_errmsg(), "width 0 is zero");
}

Test(core, fail_may_wrap_the_current_detail)
{
    cnf_fail(CNF_EFORMAT, "line %d: '%s' is not a number", 5, "NA");
    int rc = cnf_fail(CNF_EFORMAT, "loading m.csv: %s", cnf_errmsg());
    cr_assert_eq(rc, CNF_EFORMAT);
    cr_assert_str_eq(cnf_errmsg(), "loading m.csv: line 5: 'NA' is not a number");
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

/* ---- Sizes from user input ------------------------------------------------------------------ */

Test(core, size_mul_saturates_at_size_max)
{
    const size_t h = (size_t)1 << (sizeof(size_t) * 4); /* 2^32: h·h = 2^64 wraps to 0 */
    cr_assert_eq(cnf_size_mul(3, 5), 15);
    cr_assert_eq(cnf_size_mul(0, SIZE_MAX), 0);
    cr_assert_eq(cnf_size_mul(SIZE_MAX, 1), SIZE_MAX);
    cr_assert_eq(cnf_size_mul(h, h), SIZE_MAX);
    cr_assert_eq(cnf_size_mul(h, h - 1), SIZE_MAX - (h - 1)); /* 2^64 - 2^32: exact */
    cr_assert_eq(cnf_size_mul(SIZE_MAX / 2 + 1, 2), SIZE_MAX); /* 2^63 · 2 */
    cr_assert_eq(cnf_size_mul(SIZE_MAX, SIZE_MAX), SIZE_MAX);
    cr_assert_eq(cnf_size_mul((size_t)1 << 60, 16), SIZE_MAX); /* eval -n 2^60: n·2·8 */
    cr_assert_eq(cnf_size_mul(cnf_size_mul((size_t)1 << 60, 2), sizeof(double)), SIZE_MAX);
    /* chained: a saturated product stays saturated */
    cr_assert_eq(cnf_size_mul(cnf_size_mul(SIZE_MAX, 2), 1), SIZE_MAX);
    cr_assert_eq(cnf_size_mul(SIZE_MAX / 3, 3), SIZE_MAX / 3 * 3); /* exact: no overflow */
}

Test(core, size_ok_tells_addressable_doubles)
{
    cr_assert(cnf_size_ok(0));
    cr_assert(cnf_size_ok(1000));
    cr_assert(cnf_size_ok(SIZE_MAX / 8));
    cr_assert(!cnf_size_ok(SIZE_MAX / 8 + 1));
    cr_assert(!cnf_size_ok(SIZE_MAX));
    cr_assert(!cnf_size_ok(SIZE_MAX - 1));
    cr_assert(!cnf_size_ok(cnf_size_mul((size_t)1 << 60, 2))); /* 2^61 doubles: 2^64 bytes */
    cr_assert(cnf_size_ok(cnf_size_mul((size_t)1 << 59, 2)));  /* 2^60 doubles: 2^63 bytes */
}

/* cnf_calloc/cnf_realloc refuse an overflowing or larger-than-memory block without asking malloc
 * (a sanitizer's malloc would abort on it; an overcommitting kernel would grant it lazily). */
Test(core, calloc_refuses_huge_blocks)
{
    cr_assert_null(cnf_calloc(SIZE_MAX, sizeof(double)));
    cr_assert_null(cnf_calloc(SIZE_MAX / 8 + 1, 8));
    cr_assert_null(cnf_calloc((size_t)1 << 62, 1)); /* addressable, more than any machine here */
    double *p = cnf_calloc(4, sizeof(double));
    cr_assert_not_null(p);
    cr_assert_null(cnf_realloc(p, SIZE_MAX, sizeof(double)));
    cr_assert_null(cnf_realloc(p, (size_t)1 << 61, sizeof(double)));
    p[3] = 1.0; /* still p's after the failed realloc */
    double *q = cnf_realloc(p, 8, sizeof(double));
    cr_assert_not_null(q);
    cr_assert_eq(q[3], 1.0);
    free(q);
}

static int std_normal(void *ctx, const double *X, size_t n, double *logq, double *grad)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        logq[i] = cnf_std_normal_logpdf(X + 2 * i, 2);
        if (grad)
            for (size_t j = 0; j < 2; j++)
                grad[2 * i + j] = -X[2 * i + j];
    }
    return 0;
}

/* The library's entry points sized by a count: a count whose values cannot be addressed fails with
 * a named error (no wrapped product sizing a small buffer), the output untouched. */
Test(core, huge_counts_fail_cleanly_in_the_library)
{
    const size_t huge[] = {(size_t)1 << 60, (size_t)1 << 63, SIZE_MAX};
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    double X[4] = {7, 7, 7, 7};
    cnf_flow *f = NULL;
    cnf_cflow_config cc;
    cnf_cflow_config_default(&cc, 2);
    const size_t four = 4;
    cc.n_hidden = 1;
    cc.hidden = &four;
    cr_assert_eq(cnf_cflow_create(&f, &cc, &r), CNF_OK, "%s", cnf_errmsg());
    char want[64];
    for (size_t k = 0; k < 3; k++) {
        const size_t n = huge[k];
        snprintf(want, sizeof want, "%zu", n);
        if (n > SIZE_MAX / 2) { /* 2n wraps: cnf_toy_sample would write far past X */
            cr_assert_eq(cnf_toy_sample_named("moons", n, X, &r), CNF_EINVAL);
            cr_assert(strstr(cnf_errmsg(), want), "toy: '%s'", cnf_errmsg());
            cr_assert(X[0] == 7 && X[3] == 7, "X was written");
        }
        double lz, ess, elbo, loss;
        cr_assert_eq(cnf_flow_importance(f, n, &r, std_normal, NULL, &lz, &ess, &elbo),
                     CNF_ENOMEM, "importance %zu", n);
        cr_assert(strstr(cnf_errmsg(), want), "importance: '%s'", cnf_errmsg());
        cr_assert_eq(cnf_flow_rkl_grad(f, n, &r, std_normal, NULL, &loss, NULL, NULL),
                     CNF_ENOMEM, "reverse KL %zu", n);
        cr_assert_eq(cnf_flow_sample(f, n, &r, X, NULL, NULL), CNF_ENOMEM, "sample %zu", n);
        cr_assert(strstr(cnf_errmsg(), want), "sample: '%s'", cnf_errmsg());

        /* Architecture sizes: hidden widths, stacked blocks, flow steps. */
        cnf_flow *g = NULL;
        const size_t wide[2] = {4, n};
        cnf_cflow_config c2 = cc;
        c2.n_hidden = 2;
        c2.hidden = wide;
        cr_assert_lt(cnf_cflow_create(&g, &c2, &r), 0, "hidden width %zu accepted", n);
        cr_assert_null(g);
        c2 = cc;
        c2.blocks = n;
        cr_assert_eq(cnf_cflow_create(&g, &c2, &r), CNF_ENOMEM, "%zu blocks", n);
        cr_assert(strstr(cnf_errmsg(), want), "blocks: '%s'", cnf_errmsg());
        cnf_dflow_config dc;
        cnf_dflow_config_default(&dc, "maf", 2);
        dc.layers = n;
        cr_assert_eq(cnf_dflow_create(&g, &dc, &r), CNF_ENOMEM, "%zu layers", n);
        cr_assert(strstr(cnf_errmsg(), want), "layers: '%s'", cnf_errmsg());
        cnf_mlp *m = NULL;
        cnf_mlp_config mc = {.d_in = 2, .d_out = 2, .n_hidden = 1, .hidden = &n};
        cr_assert_eq(cnf_mlp_create(&m, &mc), CNF_EINVAL, "MLP width %zu", n);
        cr_assert_null(m);

        /* Timings kept per repeat. */
        cnf_bench_options bo = {.quick = 1, .cases = "rhs", .repeats = n};
        cnf_bench_result *res = NULL;
        size_t n_res = 0;
        cr_assert_eq(cnf_bench_run(&bo, &res, &n_res), CNF_ENOMEM, "%zu repeats", n);
        cr_assert(strstr(cnf_errmsg(), want), "bench: '%s'", cnf_errmsg());
        cr_assert_null(res);
    }
    cnf_flow_free(f);
}
