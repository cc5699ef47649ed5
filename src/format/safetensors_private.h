/* Private to the safetensors files (safetensors_common.c, _write.c, _json.c, _read.c): the
 * reader's tensor table and file object, which the header parser fills, and the helpers they
 * share. Not installed. */
#ifndef CNF_FORMAT_SAFETENSORS_PRIVATE_H
#define CNF_FORMAT_SAFETENSORS_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "cnf/safetensors.h"

typedef struct {
    char *key, *value;
} kv;

typedef struct {
    char *name;
    char dtype[4]; /* "F64" or "F32" */
    size_t ndim;
    size_t shape[CNF_ST_MAX_DIMS];
    uint64_t begin, end;
    int have_dtype, have_shape, have_offsets;
    size_t count;
    double *data;
} r_tensor;

struct cnf_st_file {
    char *path;
    r_tensor *t;
    size_t nt, cap_t;
    kv *meta;
    size_t nm, cap_m;
    int have_meta;
};

typedef struct {
    const unsigned char *s;
    size_t n, i;
    const char *path;
} parser;

/* Well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF), RFC 3629 section 4. */
int st_utf8_valid(const unsigned char *s, size_t n);
/* qsort comparator of pointers to char * (bytewise by the strings). */
int st_cmp_str_ptr(const void *a, const void *b);
/* Free n metadata pairs and their array. */
void st_free_meta(kv *meta, size_t n);
/* Make room for one more element of size sz in *arr (count n, capacity *cap): 0, or -1 when
 * out of memory (*arr unchanged). */
int st_grow(void **arr, size_t n, size_t *cap, size_t sz);
/* Parse the header JSON p->s[0..p->n) into f's tensors (name, dtype, shape, offsets) and
 * metadata; CNF_EFORMAT naming the byte offset of the first error. */
int st_parse_header(parser *p, cnf_st_file *f);

#endif
