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
