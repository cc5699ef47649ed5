/* safetensors reader (format: github.com/huggingface/safetensors, README "Format"): the whole
 * file read, its header parsed (safetensors_json.c), the tensor ranges checked to tile the data
 * section exactly, F64/F32 data decoded to doubles; and the lookups. See cnf/safetensors.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnf/safetensors.h"
#include "core/internal.h"
#include "format/safetensors_private.h"

#define MAX_HEADER ((uint64_t)100000000) /* as the reference implementation */

static uint64_t get_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | b[k];
    return v;
}

void cnf_st_free(cnf_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nt; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->t);
    st_free_meta(f->meta, f->nm);
    free(f->path);
    free(f);
}

/* Duplicate keys: sort pointers to the names and compare neighbours (O(n log n)). */
static int check_unique(const char *path, const char *what, char **names, size_t stride_bytes,
                        size_t n)
{
    const char ***idx = cnf_calloc(n, sizeof *idx);
    if (!idx)
        return cnf_fail(CNF_ENOMEM, "%s: name index", path);
    for (size_t i = 0; i < n; i++)
        idx[i] = (const char **)((char *)names + i * stride_bytes);
    qsort(idx, n, sizeof *idx, st_cmp_str_ptr);
    int rc = CNF_OK;
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(*idx[i - 1], *idx[i]) == 0)
            rc = cnf_fail(CNF_EFORMAT, "%s: %s '%s' appears twice", path, what, *idx[i]);
    free(idx);
    return rc;
}

static int cmp_begin(const void *a, const void *b)
{
    const r_tensor *x = *(const r_tensor *const *)a, *y = *(const r_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Sizes against shapes, and the ranges tiling [0, dlen) exactly. */
static int check_layout(cnf_st_file *f, uint64_t dlen)
{
    for (size_t i = 0; i < f->nt; i++) {
        r_tensor *t = &f->t[i];
        size_t es = strcmp(t->dtype, "F64") == 0 ? 8 : 4, count = 1;
        for (size_t k = 0; k < t->ndim; k++) {
            if (t->shape[k] && count > ((size_t)-1 / 8) / t->shape[k])
                return cnf_fail(CNF_EFORMAT, "%s: tensor '%s': shape overflows", f->path,
                                t->name);
            count *= t->shape[k];
        }
        t->count = count;
        if (t->end < t->begin)
            return cnf_fail(CNF_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] decrease",
                            f->path, t->name, (unsigned long long)t->begin,
                            (unsigned long long)t->end);
        if (t->end > dlen)
            return cnf_fail(CNF_EFORMAT,
                            "%s: tensor '%s': data_offsets end %llu beyond the %llu-byte data "
                            "section (truncated file?)",
                            f->path, t->name, (unsigned long long)t->end,
                            (unsigned long long)dlen);
        if (t->end - t->begin != (uint64_t)count * es)
            return cnf_fail(CNF_EFORMAT,
                            "%s: tensor '%s': %zu %s values need %llu bytes, data_offsets give %llu",
                            f->path, t->name, count, t->dtype, (unsigned long long)count * es,
                            (unsigned long long)(t->end - t->begin));
    }
    r_tensor **ord = cnf_calloc(f->nt, sizeof *ord);
    if (!ord)
        return cnf_fail(CNF_ENOMEM, "%s: tensor order", f->path);
    for (size_t i = 0; i < f->nt; i++)
        ord[i] = &f->t[i];
    qsort(ord, f->nt, sizeof *ord, cmp_begin);
    uint64_t at = 0;
    int rc = CNF_OK;
    for (size_t i = 0; i < f->nt && !rc; i++) {
        if (ord[i]->begin < at)
            rc = cnf_fail(CNF_EFORMAT, "%s: tensors '%s' and '%s' overlap", f->path,
                          ord[i - 1]->name, ord[i]->name);
        else if (ord[i]->begin > at)
            rc = cnf_fail(CNF_EFORMAT, "%s: %llu unused bytes before tensor '%s'", f->path,
                          (unsigned long long)(ord[i]->begin - at), ord[i]->name);
        at = ord[i]->end;
    }
    if (!rc && at != dlen)
        rc = cnf_fail(CNF_EFORMAT, "%s: %llu bytes after the last tensor", f->path,
                      (unsigned long long)(dlen - at));
    /* Keep the tensors in data order for cnf_st_name. */
    if (!rc) {
        r_tensor *sorted = cnf_calloc(f->nt, sizeof *sorted);
        if (!sorted)
            rc = cnf_fail(CNF_ENOMEM, "%s: tensor order", f->path);
        for (size_t i = 0; !rc && i < f->nt; i++)
            sorted[i] = *ord[i];
        if (!rc) {
            free(f->t);
            f->t = sorted;
            f->cap_t = f->nt;
        }
    }
    free(ord);
    return rc;
}

static int decode(cnf_st_file *f, const unsigned char *data, unsigned flags)
{
    for (size_t i = 0; i < f->nt; i++) {
        r_tensor *t = &f->t[i];
        if (!(t->data = cnf_calloc(t->count, sizeof(double))))
            return cnf_fail(CNF_ENOMEM, "%s: tensor '%s' (%zu values)", f->path, t->name,
                            t->count);
        const unsigned char *b = data + t->begin;
        int f64 = t->dtype[1] == '6';
        for (size_t j = 0; j < t->count; j++) {
            if (f64) {
                uint64_t bits = get_le64(b + 8 * j);
                memcpy(&t->data[j], &bits, 8);
            } else {
                const unsigned char *q = b + 4 * j;
                uint32_t bits = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                                (uint32_t)q[3] << 24;
                float v;
                memcpy(&v, &bits, 4);
                t->data[j] = v;
            }
            if ((flags & CNF_ST_FINITE) && !isfinite(t->data[j]))
                return cnf_fail(CNF_ENONFINITE, "%s: tensor '%s' element %zu is %g", f->path,
                                t->name, j, t->data[j]);
        }
    }
    return CNF_OK;
}

/* The whole file into memory (model files are small); CNF_EIO on any failure. */
static int slurp(const char *path, unsigned char **buf, uint64_t *size)
{
    *buf = NULL;
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return cnf_fail(CNF_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = CNF_OK;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cnf_fail(CNF_EIO, "%s: not a regular file", path);
    } else if (!(*buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = cnf_fail(CNF_ENOMEM, "%s: %lld bytes", path, (long long)st.st_size);
    } else if (fread(*buf, 1, (size_t)st.st_size, fp) != (size_t)st.st_size) {
        rc = cnf_fail(CNF_EIO, "%s: read failed: %s", path, ferror(fp) ? strerror(errno) : "EOF");
    } else {
        *size = (uint64_t)st.st_size;
    }
    fclose(fp);
    if (rc) {
        free(*buf);
        *buf = NULL;
    }
    return rc;
}

int cnf_st_read(const char *path, unsigned flags, cnf_st_file **out)
{
    if (!out)
        return cnf_fail(CNF_EINVAL, "cnf_st_read: out is NULL");
    *out = NULL;
    if (!path)
        return cnf_fail(CNF_EINVAL, "cnf_st_read: path is NULL");
    unsigned char *buf;
    uint64_t size;
    int rc = slurp(path, &buf, &size);
    if (rc)
        return rc;
    cnf_st_file *f = cnf_calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        rc = cnf_fail(CNF_ENOMEM, "%s: file object", path);
        goto done;
    }
    if (size < 8) {
        rc = cnf_fail(CNF_EFORMAT, "%s: %llu bytes, too short for the 8-byte header length", path,
                      (unsigned long long)size);
        goto done;
    }
    uint64_t n = get_le64(buf);
    if (n > MAX_HEADER || n > size - 8) {
        rc = cnf_fail(CNF_EFORMAT,
                      "%s: header length %llu does not fit the %llu-byte file (corrupt or "
                      "truncated)",
                      path, (unsigned long long)n, (unsigned long long)size);
        goto done;
    }
    if (!st_utf8_valid(buf + 8, (size_t)n)) {
        rc = cnf_fail(CNF_EFORMAT, "%s: header is not valid UTF-8", path);
        goto done;
    }
    parser p = {buf + 8, (size_t)n, 0, path};
    if ((rc = st_parse_header(&p, f)))
        goto done;
    if (f->nt > 1 && (rc = check_unique(path, "tensor", &f->t[0].name, sizeof *f->t, f->nt)))
        goto done;
    if (f->nm > 1 && (rc = check_unique(path, "metadata key", &f->meta[0].key, sizeof *f->meta,
                                        f->nm)))
        goto done;
    if (!(rc = check_layout(f, size - 8 - n)))
        rc = decode(f, buf + 8 + n, flags);
done:
    free(buf);
    if (rc)
        cnf_st_free(f);
    else
        *out = f;
    return rc;
}

static const r_tensor *find(const cnf_st_file *f, const char *name)
{
    for (size_t i = 0; f && name && i < f->nt; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    return NULL;
}

int cnf_st_get(const cnf_st_file *f, const char *name, const size_t **shape, size_t *ndim,
               const double **data)
{
    const r_tensor *t = find(f, name);
    if (!t)
        return cnf_fail(CNF_ENAME, "%s: no tensor '%s'", f ? f->path : "(null)",
                        name ? name : "(null)");
    if (shape)
        *shape = t->shape;
    if (ndim)
        *ndim = t->ndim;
    if (data)
        *data = t->data;
    return CNF_OK;
}

/* "[2, 3]" into buf. */
static void shape_str(char *buf, size_t cap, size_t ndim, const size_t *shape)
{
    size_t m = (size_t)snprintf(buf, cap, "[");
    for (size_t k = 0; k < ndim && m < cap; k++)
        m += (size_t)snprintf(buf + m, cap - m, k ? ", %zu" : "%zu", shape[k]);
    if (m < cap)
        snprintf(buf + m, cap - m, "]");
}

int cnf_st_get_shaped(const cnf_st_file *f, const char *name, size_t ndim, const size_t *shape,
                      const double **data)
{
    const size_t *s;
    size_t nd;
    int rc = cnf_st_get(f, name, &s, &nd, data);
    if (rc)
        return rc;
    if (nd == ndim && (ndim == 0 || memcmp(s, shape, ndim * sizeof *s) == 0))
        return CNF_OK;
    char have[128], want[128];
    shape_str(have, sizeof have, nd, s);
    shape_str(want, sizeof want, ndim, shape);
    return cnf_fail(CNF_EDIM, "%s: tensor '%s' has shape %s, expected %s", f->path, name, have,
                    want);
}

size_t cnf_st_count(const cnf_st_file *f) { return f ? f->nt : 0; }

const char *cnf_st_name(const cnf_st_file *f, size_t i)
{
    return i < cnf_st_count(f) ? f->t[i].name : NULL;
}

const char *cnf_st_dtype(const cnf_st_file *f, const char *name)
{
    const r_tensor *t = find(f, name);
    return t ? t->dtype : NULL;
}

const char *cnf_st_meta(const cnf_st_file *f, const char *key)
{
    for (size_t i = 0; f && key && i < f->nm; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

size_t cnf_st_meta_count(const cnf_st_file *f) { return f ? f->nm : 0; }

const char *cnf_st_meta_key(const cnf_st_file *f, size_t i)
{
    return i < cnf_st_meta_count(f) ? f->meta[i].key : NULL;
}
