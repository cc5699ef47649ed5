/* The layer products' helpers shared by the forward (forward.c) and reverse (backward.c) passes.
 * Double: cnf_gemm. Mixed: the operands are rounded to float, multiplied by cblas_sgemm, and the
 * product is widened back to double (for ∇W it is added to the double accumulator). Static:
 * each pass's file has its own copy, called (and inlined) within it. */
#ifndef CNF_NN_PRODUCTS_H
#define CNF_NN_PRODUCTS_H

#include <cblas.h>
#include <stddef.h>

#include "core/vmath.h"

CNF_VECTOR_CLONES static void to_float(float *restrict dst, const double *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

CNF_VECTOR_CLONES static void to_double(double *restrict dst, const float *restrict src,
                                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (double)src[i];
}

static void sgemm(int ta, int tb, size_t M, size_t N, size_t K, const float *A, size_t lda,
                  const float *B, size_t ldb, float *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
}

#endif
