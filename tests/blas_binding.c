/* Built like a user's program: linked with libcnf alone (shared, or static with its
 * dependencies), nothing else. libcnf's GEMMs must come from OpenBLAS, not from the reference
 * CBLAS that GSL's pkg-config file also links (gslcblas, ~4x slower here): whichever library
 * comes first in the loader's search order provides cblas_dgemm (meson.build's lib_deps). */
#include <stdio.h>
#include <string.h>

#include "cnf/bench.h"

int main(void)
{
    cnf_bench_machine m;
    cnf_bench_machine_info(&m);
    printf("cblas_dgemm from '%s'\n", m.gemm_library);
    if (!strstr(m.gemm_library, "openblas")) {
        fprintf(stderr, "blas_binding: cblas_dgemm resolves to '%s', not OpenBLAS\n",
                m.gemm_library);
        return 1;
    }
    return 0;
}
