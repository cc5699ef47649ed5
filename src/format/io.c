/* CSV and .npy writers (see cnf/io.h). The .npy header follows NumPy's format description
 * (numpy/lib/format.py, version 1.0): magic "\x93NUMPY", version 1.0, a little-endian uint16
 * header length, and a Python-literal dict padded with spaces so the data start at a multiple
 * of 64 bytes, ending in '\n'. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/atomic.h"
#include "cnf/io.h"
#include "core/internal.h"

int cnf_write_csv(const char *path, const double *X, size_t n, size_t d)
{
    cnf_atomic_file af;
    int rc = cnf_atomic_open(&af, path);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            fprintf(af.fp, "%.17g%c", X[i * d + j], j + 1 < d ? ',' : '\n');
    return cnf_atomic_commit(&af);
}

int cnf_write_npy(const char *path, const double *X, size_t n, size_t d)
{
    char dict[128];
    int len = snprintf(dict, sizeof dict,
                       "{'descr': '<f8', 'fortran_order': False, 'shape': (%zu, %zu), }", n, d);
    size_t total = 10 + (size_t)len + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)len + pad + 1;
    if (hlen > 65535)
        return cnf_fail(CNF_EINVAL, "npy header too long");
    cnf_atomic_file af;
    int rc = cnf_atomic_open(&af, path);
    if (rc)
        return rc;
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                              (unsigned char)(hlen >> 8)};
    fwrite(head, 1, sizeof head, af.fp);
    fwrite(dict, 1, (size_t)len, af.fp);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', af.fp);
    fputc('\n', af.fp);
    /* Little-endian doubles, byte by byte so the file is the same on any host. */
    for (size_t i = 0; i < n * d; i++) {
        uint64_t u;
        memcpy(&u, &X[i], sizeof u);
        unsigned char b[8];
        for (int k = 0; k < 8; k++)
            b[k] = (unsigned char)(u >> (8 * k));
        fwrite(b, 1, 8, af.fp);
    }
    return cnf_atomic_commit(&af);
}
