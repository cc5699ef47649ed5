/* Typed metadata of model files (see meta.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "format/meta.h"

int cnf_meta_put_double(cnf_st_writer *w, const char *key, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    return cnf_st_writer_meta(w, key, buf);
}

int cnf_meta_put_size(cnf_st_writer *w, const char *key, size_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%zu", v);
    return cnf_st_writer_meta(w, key, buf);
}

const char *cnf_meta_get_str(const cnf_st_file *f, const char *key)
{
    const char *v = cnf_st_meta(f, key);
    if (!v)
        cnf_fail(CNF_EFORMAT, "model file has no metadata '%s'", key);
    return v;
}

int cnf_meta_get_double(const cnf_st_file *f, const char *key, double *v)
{
    const char *s = cnf_meta_get_str(f, key);
    if (!s)
        return CNF_EFORMAT;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x))
        return cnf_fail(CNF_EFORMAT, "model metadata '%s' = '%s' is not a finite number", key, s);
    *v = x;
    return CNF_OK;
}

int cnf_meta_get_size(const cnf_st_file *f, const char *key, size_t *v)
{
    const char *s = cnf_meta_get_str(f, key);
    if (!s)
        return CNF_EFORMAT;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (end == s || *end || *s == '-' || errno == ERANGE || x > (size_t)-1)
        return cnf_fail(CNF_EFORMAT, "model metadata '%s' = '%s' is not a count", key, s);
    *v = (size_t)x;
    return CNF_OK;
}

int cnf_meta_put_widths(cnf_st_writer *w, const char *key, const size_t *v, size_t n)
{
    char buf[512] = "";
    for (size_t i = 0; i < n; i++) {
        char part[32];
        snprintf(part, sizeof part, i ? "-%zu" : "%zu", v[i]);
        if (strlen(buf) + strlen(part) >= sizeof buf)
            return cnf_fail(CNF_EINVAL, "too many widths for metadata '%s'", key);
        strcat(buf, part);
    }
    return cnf_st_writer_meta(w, key, buf);
}

int cnf_meta_get_widths(const cnf_st_file *f, const char *key, size_t *v, size_t max, size_t *n)
{
    const char *s = cnf_meta_get_str(f, key);
    if (!s)
        return CNF_EFORMAT;
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p || x == 0 || *n == max || (*end && *end != '-'))
            return cnf_fail(CNF_EFORMAT, "model metadata '%s' = '%s' is malformed", key, s);
        v[(*n)++] = (size_t)x;
        p = *end ? end + 1 : end;
    }
    return CNF_OK;
}

int cnf_settings_write(cnf_st_writer *w, const cnf_setting *tab, size_t n, const void *cfg)
{
    int rc = CNF_OK;
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        const cnf_setting *s = &tab[i];
        const void *p = (const char *)cfg + s->off;
        switch (s->type) {
        case CNF_SET_SIZE: rc = cnf_meta_put_size(w, s->key, *(const size_t *)p); break;
        case CNF_SET_DOUBLE: rc = cnf_meta_put_double(w, s->key, *(const double *)p); break;
        case CNF_SET_FLAG: rc = cnf_meta_put_size(w, s->key, *(const int *)p != 0); break;
        case CNF_SET_WIDTHS:
            rc = cnf_meta_put_widths(w, s->key, *(const size_t *const *)p,
                                     *(const size_t *)((const char *)cfg + s->off_n));
            break;
        case CNF_SET_NAME: rc = cnf_st_writer_meta(w, s->key, s->name(*(const int *)p)); break;
        case CNF_SET_CUSTOM: rc = s->put(w, s->key, p); break;
        }
    }
    return rc;
}

static int read_one(const cnf_st_file *f, const cnf_setting *s, void *cfg)
{
    void *p = (char *)cfg + s->off;
    size_t v;
    int rc;
    switch (s->type) {
    case CNF_SET_SIZE: return cnf_meta_get_size(f, s->key, p);
    case CNF_SET_DOUBLE: return cnf_meta_get_double(f, s->key, p);
    case CNF_SET_FLAG:
        if ((rc = cnf_meta_get_size(f, s->key, &v)) == CNF_OK)
            *(int *)p = v != 0;
        return rc;
    case CNF_SET_WIDTHS:
        return cnf_meta_get_widths(f, s->key, *(size_t **)p, s->max,
                                   (size_t *)((char *)cfg + s->off_n));
    case CNF_SET_NAME: {
        const char *name = cnf_meta_get_str(f, s->key);
        return name ? s->from_name(name, p) : CNF_EFORMAT;
    }
    case CNF_SET_CUSTOM: return s->get(f, s->key, p);
    }
    return cnf_fail(CNF_EINVAL, "setting '%s' has no type", s->key);
}

int cnf_settings_read(const cnf_st_file *f, const cnf_setting *tab, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++) {
        if (tab[i].optional && !cnf_st_meta(f, tab[i].key))
            continue;
        int rc = read_one(f, &tab[i], cfg);
        if (rc)
            return rc == CNF_ENAME ? cnf_fail(CNF_EFORMAT, "%s", cnf_errmsg()) : rc;
    }
    return CNF_OK;
}

static size_t tensor_count(const cnf_tensor_ref *t)
{
    return t->ndim == 2 ? cnf_size_mul(t->shape[0], t->shape[1]) : t->shape[0];
}

int cnf_tensors_write(cnf_st_writer *w, const cnf_tensor_ref *t, size_t n)
{
    int rc = CNF_OK;
    for (size_t i = 0; rc == CNF_OK && i < n; i++) {
        size_t m = tensor_count(&t[i]);
        double *v = t[i].data ? NULL : cnf_calloc(m ? m : 1, sizeof(double));
        if (!t[i].data && !v)
            return cnf_fail(CNF_ENOMEM, "saving tensor '%s' of %zu values", t[i].name, m);
        for (size_t j = 0; v && j < m; j++)
            v[j] = (double)t[i].index[j];
        rc = cnf_st_writer_add(w, t[i].name, t[i].ndim, t[i].shape, v ? v : t[i].data);
        free(v);
    }
    return rc;
}

int cnf_tensors_read(const cnf_st_file *f, const cnf_tensor_ref *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const double *v;
        int rc = cnf_st_get_shaped(f, t[i].name, t[i].ndim, t[i].shape, &v);
        if (rc)
            return rc;
        size_t m = tensor_count(&t[i]);
        if (t[i].data) {
            memcpy(t[i].data, v, m * sizeof(double));
            continue;
        }
        for (size_t j = 0; j < m; j++) {
            if (!(v[j] >= 0 && v[j] < 0x1p53 && v[j] == floor(v[j])))
                return cnf_fail(CNF_EFORMAT, "model tensor '%s' entry %zu = %g is not an index",
                                t[i].name, j, v[j]);
            t[i].index[j] = (size_t)v[j];
        }
    }
    return CNF_OK;
}
