/* Private: typed metadata of model files, below the flows (each kind's describe and load write
 * and read its settings with these) and the model files above them. Not installed. */
#ifndef CNF_FORMAT_META_H
#define CNF_FORMAT_META_H

#include "cnf/safetensors.h"

/* Metadata helpers for describe/load: numbers are written with %.17g and read back strictly;
 * a missing or malformed value is CNF_EFORMAT naming the key. */
int cnf_meta_put_double(cnf_st_writer *w, const char *key, double v);
int cnf_meta_put_size(cnf_st_writer *w, const char *key, size_t v);
int cnf_meta_get_double(const cnf_st_file *f, const char *key, double *v);
int cnf_meta_get_size(const cnf_st_file *f, const char *key, size_t *v);
const char *cnf_meta_get_str(const cnf_st_file *f, const char *key); /* NULL + message if absent */
/* Layer widths as "64-64-64" (FFJORD's notation): at most max of them, each ≥ 1. */
int cnf_meta_put_widths(cnf_st_writer *w, const char *key, const size_t *v, size_t n);
int cnf_meta_get_widths(const cnf_st_file *f, const char *key, size_t *v, size_t max, size_t *n);

/* A flow's settings as one table walked by both save and load: each row names a metadata key,
 * how its value is written, and where it lives in the configuration struct (offsetof). */
typedef enum {
    CNF_SET_SIZE,   /* size_t */
    CNF_SET_DOUBLE, /* double */
    CNF_SET_FLAG,   /* int, written as 0 or 1 (read: non-zero is 1) */
    CNF_SET_WIDTHS, /* const size_t * at off, its count (size_t) at off_n; read into the
                     * caller's buffer the pointer holds, of max entries */
    CNF_SET_NAME,   /* an enum (int-sized) written by name: name() and from_name() */
    CNF_SET_CUSTOM, /* put()/get() of the field themselves (a group of keys under key) */
} cnf_setting_type;

typedef struct cnf_setting {
    const char *key;
    cnf_setting_type type;
    size_t off, off_n, max;
    int optional; /* absent when loading: the default stays */
    const char *(*name)(int v);
    int (*from_name)(const char *s, int *v);
    int (*put)(cnf_st_writer *w, const char *key, const void *field);
    int (*get)(const cnf_st_file *f, const char *key, void *field);
} cnf_setting;

/* Write every setting of cfg in table order; read them back into cfg (which holds the defaults).
 * Read: a missing key (not optional) or a malformed value is CNF_EFORMAT naming it. */
int cnf_settings_write(cnf_st_writer *w, const cnf_setting *tab, size_t n, const void *cfg);
int cnf_settings_read(const cnf_st_file *f, const cnf_setting *tab, size_t n, void *cfg);

/* A flow's tensors as one list walked by both save and load: each entry names a tensor, its
 * shape, and the buffer its values live in (data), or, for an integer array such as column
 * indices, the size_t buffer (index; stored as doubles, exact below 2^53). */
typedef struct cnf_tensor_ref {
    char name[64];
    size_t ndim, shape[2]; /* ndim 1 or 2 */
    double *data;
    size_t *index; /* used when data is NULL */
} cnf_tensor_ref;

/* Add every tensor of the list to w; read every one from f into its buffer. Read: an absent
 * tensor is CNF_ENAME, another shape CNF_EDIM (as cnf_st_get_shaped), an index that is not a
 * whole number in [0, 2^53) CNF_EFORMAT, each naming the tensor. */
int cnf_tensors_write(cnf_st_writer *w, const cnf_tensor_ref *t, size_t n);
int cnf_tensors_read(const cnf_st_file *f, const cnf_tensor_ref *t, size_t n);

#endif
