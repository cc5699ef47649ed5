/* Writing point sets: CSV (one row per point, %.17g, no header) and NumPy .npy (version 1.0,
 * '<f8', C order, shape (n, d)). Both are written atomically (temporary file + rename): a failed
 * write leaves any previous file intact. Errors: CNF_EIO naming the path and the cause. */
#ifndef CNF_IO_H
#define CNF_IO_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

CNF_API int cnf_write_csv(const char *path, const double *X /* (n, d) */, size_t n, size_t d);
CNF_API int cnf_write_npy(const char *path, const double *X /* (n, d) */, size_t n, size_t d);

#ifdef __cplusplus
}
#endif
#endif
