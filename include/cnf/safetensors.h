/* Model files in the safetensors format (https://github.com/huggingface/safetensors), so a Python
 * user can load cnf's weights with the `safetensors` package or PyTorch.
 *
 * Layout: an 8-byte little-endian unsigned N; N bytes of UTF-8 JSON
 *     {"__metadata__":{"key":"value",...},
 *      "name":{"dtype":"F64","shape":[d0,d1,...],"data_offsets":[begin,end]},...}
 * padded with spaces to a multiple of 8; then the data section: each tensor's elements in C order,
 * little-endian, at [begin, end) counted from the start of the data section.
 *
 * Writing (cnf_st_writer): tensors are float64 ("F64"). Like the reference writer, the header is
 * compact JSON with "__metadata__" first (omitted when empty, keys sorted bytewise), then the
 * tensors sorted bytewise by name, laid out contiguously in that order. The file is replaced
 * atomically (temporary file in the same directory, fsync, rename): a failure never leaves a
 * half-written target and never destroys the previous file.
 *
 * Reading (cnf_st_read) validates everything before returning: file size against the header
 * length (at most 100 MB of header), strict JSON (objects, arrays, strings with escapes and
 * \u surrogate pairs, non-negative integers; valid UTF-8; no duplicate keys), the schema (exactly
 * dtype/shape/data_offsets per tensor, string→string metadata, at most 64 dimensions), dtype F64
 * or F32 (F32 is converted to double), shape × element size = end − begin without overflow, and —
 * as the reference reader does — ranges that tile the data section exactly (inside it, no overlap,
 * no gap, nothing after the last tensor). Errors: CNF_EIO (cannot open/read), CNF_EFORMAT
 * (malformed), CNF_ENONFINITE (NaN/Inf with CNF_ST_FINITE), CNF_ENOMEM; the detail names the
 * file and the problem (and the tensor or the header byte offset where that applies). */
#ifndef CNF_SAFETENSORS_H
#define CNF_SAFETENSORS_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CNF_ST_MAX_DIMS 64

/* ---- Writing ---------------------------------------------------------------------------- */
typedef struct cnf_st_writer cnf_st_writer;

CNF_API int cnf_st_writer_create(cnf_st_writer **out); /* CNF_ENOMEM; *out NULL on failure */
CNF_API void cnf_st_writer_free(cnf_st_writer *w);     /* NULL is fine */

/* Add tensor `name` of shape (ndim ≤ CNF_ST_MAX_DIMS; ndim = 0 is a scalar) with data in C order;
 * the data are copied. CNF_EINVAL for an empty, duplicate, "__metadata__" or non-UTF-8 name, or a
 * NULL data/shape with elements; CNF_ENOMEM. The writer is unchanged on failure. */
CNF_API int cnf_st_writer_add(cnf_st_writer *w, const char *name, size_t ndim, const size_t *shape,
                              const double *data /* (shape...) */);
/* Set metadata key → value (both copied, UTF-8); replaces an earlier value of the same key. */
CNF_API int cnf_st_writer_meta(cnf_st_writer *w, const char *key, const char *value);
/* Write the file atomically. CNF_EIO (detail names path and cause) leaves any previous file. */
CNF_API int cnf_st_write(const cnf_st_writer *w, const char *path);

/* ---- Reading ---------------------------------------------------------------------------- */
typedef struct cnf_st_file cnf_st_file;

enum { CNF_ST_FINITE = 1 }; /* reject tensors holding NaN or Inf (CNF_ENONFINITE) */

/* Read and validate the whole file; flags is 0 or CNF_ST_FINITE. On success *out owns every
 * tensor (converted to double) and string; on failure *out is NULL. */
CNF_API int cnf_st_read(const char *path, unsigned flags, cnf_st_file **out);
CNF_API void cnf_st_free(cnf_st_file *f); /* NULL is fine */

/* Tensor lookup. CNF_ENAME (detail names file and tensor) if absent. shape/ndim/data may each be
 * NULL; the pointers stay valid until cnf_st_free. */
CNF_API int cnf_st_get(const cnf_st_file *f, const char *name, const size_t **shape, size_t *ndim,
                       const double **data);
/* Lookup that also checks the shape: CNF_EDIM (detail gives both shapes) if it differs. */
CNF_API int cnf_st_get_shaped(const cnf_st_file *f, const char *name, size_t ndim,
                              const size_t *shape, const double **data);
/* Tensors in file order of their data (i < cnf_st_count); NULL past the end. */
CNF_API size_t cnf_st_count(const cnf_st_file *f);
CNF_API const char *cnf_st_name(const cnf_st_file *f, size_t i);
/* The dtype the tensor was stored in ("F64" or "F32"); NULL if absent. */
CNF_API const char *cnf_st_dtype(const cnf_st_file *f, const char *name);
/* Metadata value of key, NULL if absent; keys in file order, i < cnf_st_meta_count. */
CNF_API const char *cnf_st_meta(const cnf_st_file *f, const char *key);
CNF_API size_t cnf_st_meta_count(const cnf_st_file *f);
CNF_API const char *cnf_st_meta_key(const cnf_st_file *f, size_t i);

#ifdef __cplusplus
}
#endif
#endif
