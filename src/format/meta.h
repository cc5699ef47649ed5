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

#endif
