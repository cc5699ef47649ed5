/* libFuzzer entry point for the model-file reader: the input is written to a file (the reader
 * takes a path) and loaded with cnf_model_load, which validates the safetensors layout, the
 * metadata and the architecture, and rebuilds the flow (with the preprocessing wrapper when
 * "pre.*" metadata are present). */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "cnf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/cnf_fuzz_model_%d.safetensors", (int)getpid());
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return 0;
    fwrite(data, 1, size, fp);
    fclose(fp);
    cnf_flow *f;
    if (cnf_model_load(path, &f, NULL) == CNF_OK) {
        double x[64] = {0}, lp;
        if (cnf_flow_dim(f) <= 64)
            cnf_flow_log_prob(f, x, 1, &lp, NULL);
        cnf_flow_free(f);
    }
    return 0;
}
