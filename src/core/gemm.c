/* The single BLAS entry point of cnf (STYLE.md rule 7) and its naive reference. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

#include "cnf/core.h"
#include "internal.h"

/* cnf's layer products are small (a cache block of rows × 64 × 64) and run on cnf's own threads
 * (cnf_mlp_work_create_threads); OpenBLAS's threads under them only add hand-offs, and under
 * cnf's threads they fight for the cores (measured on 2 cores, d = 64 training step with 2 cnf
 * threads: 0.83 s with OpenBLAS's default of 2 threads against 0.19 s with 1). So unless the
 * user chose a count in the environment, OpenBLAS is set to one thread, once per process, when
 * the first MLP workspace is made. */
static void blas_threads_once(void)
{
    if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("GOTO_NUM_THREADS") &&
        !getenv("OMP_NUM_THREADS"))
        openblas_set_num_threads(1);
}

void cnf_blas_single_thread(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_threads_once);
}

void cnf_gemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, double alpha,
              const double *A, size_t lda, const double *B, size_t ldb, double beta, double *C,
              size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
}

void cnf_gemm_naive(int trans_a, int trans_b, size_t M, size_t N, size_t K, double alpha,
                    const double *A, size_t lda, const double *B, size_t ldb, double beta,
                    double *C, size_t ldc)
{
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0.0;
            for (size_t k = 0; k < K; k++) {
                double a = trans_a ? A[k * lda + i] : A[i * lda + k];
                double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            C[i * ldc + j] = alpha * s + (beta == 0.0 ? 0.0 : beta * C[i * ldc + j]);
        }
}
