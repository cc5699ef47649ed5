/* libFuzzer entry point for the npy loader (cnf_data_parse with CNF_DATA_NPY; a gzip magic makes
 * it inflate first, so the gzip path is fuzzed too). Build: meson setup -Dfuzz=true with CC=clang;
 * run: tests/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "cnf/loaders.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cnf_data d;
    if (cnf_data_parse(data, size, CNF_DATA_NPY, "fuzz", &d) == CNF_OK) {
        volatile double s = 0;
        for (size_t i = 0; i < d.n * d.d; i++) /* touch every value: a short array shows up */
            s += d.X[i];
    }
    cnf_data_clear(&d);
    return 0;
}
