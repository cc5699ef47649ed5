/* safetensors writer (format: github.com/huggingface/safetensors, README "Format"): tensors and
 * metadata collected in memory, then the header JSON as serde_json writes it and the
 * little-endian F64 data, written atomically. See cnf/safetensors.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/atomic.h"
#include "cnf/safetensors.h"
#include "core/internal.h"
#include "format/safetensors_private.h"

static void put_le64(unsigned char *b, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

typedef struct {
    char *name;
    size_t ndim, count;
    size_t *shape;
    double *data;
} w_tensor;

struct cnf_st_writer {
    w_tensor *t;
    size_t nt, cap_t;
    kv *meta;
    size_t nm, cap_m;
};

int cnf_st_writer_create(cnf_st_writer **out)
{
    if (!out)
        return cnf_fail(CNF_EINVAL, "cnf_st_writer_create: out is NULL");
    *out = cnf_calloc(1, sizeof **out);
    return *out ? CNF_OK : cnf_fail(CNF_ENOMEM, "safetensors writer allocation failed");
}

void cnf_st_writer_free(cnf_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nt; i++) {
        free(w->t[i].name);
        free(w->t[i].shape);
        free(w->t[i].data);
    }
    free(w->t);
    st_free_meta(w->meta, w->nm);
    free(w);
}

static int valid_text(const char *s, const char *what)
{
    if (!s)
        return cnf_fail(CNF_EINVAL, "safetensors %s is NULL", what);
    if (!st_utf8_valid((const unsigned char *)s, strlen(s)))
        return cnf_fail(CNF_EINVAL, "safetensors %s is not valid UTF-8", what);
    return CNF_OK;
}

int cnf_st_writer_add(cnf_st_writer *w, const char *name, size_t ndim, const size_t *shape,
                      const double *data)
{
    int rc = valid_text(name, "tensor name");
    if (rc)
        return rc;
    if (!*name || strcmp(name, "__metadata__") == 0)
        return cnf_fail(CNF_EINVAL, "invalid tensor name '%s'", name);
    for (size_t i = 0; i < w->nt; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return cnf_fail(CNF_EINVAL, "tensor '%s' added twice", name);
    if (ndim > CNF_ST_MAX_DIMS || (ndim && !shape))
        return cnf_fail(CNF_EINVAL, "tensor '%s': %zu dimensions", name, ndim);
    size_t count = 1;
    for (size_t k = 0; k < ndim; k++) {
        if (shape[k] && count > ((size_t)-1 / 8) / shape[k])
            return cnf_fail(CNF_EINVAL, "tensor '%s': size overflows", name);
        count *= shape[k];
    }
    if (count && !data)
        return cnf_fail(CNF_EINVAL, "tensor '%s': data is NULL", name);
    if (st_grow((void **)&w->t, w->nt, &w->cap_t, sizeof *w->t))
        return cnf_fail(CNF_ENOMEM, "tensor '%s'", name);
    w_tensor t = {strdup(name), ndim, count, cnf_calloc(ndim, sizeof(size_t)),
                  cnf_calloc(count, sizeof(double))};
    if (!t.name || !t.shape || !t.data) {
        free(t.name);
        free(t.shape);
        free(t.data);
        return cnf_fail(CNF_ENOMEM, "tensor '%s' (%zu values)", name, count);
    }
    if (ndim)
        memcpy(t.shape, shape, ndim * sizeof *shape);
    if (count)
        memcpy(t.data, data, count * sizeof *data);
    w->t[w->nt++] = t;
    return CNF_OK;
}

int cnf_st_writer_meta(cnf_st_writer *w, const char *key, const char *value)
{
    int rc = valid_text(key, "metadata key");
    if (!rc)
        rc = valid_text(value, "metadata value");
    if (rc)
        return rc;
    char *v = strdup(value);
    if (!v)
        return cnf_fail(CNF_ENOMEM, "metadata '%s'", key);
    for (size_t i = 0; i < w->nm; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return CNF_OK;
        }
    char *k = strdup(key);
    if (!k || st_grow((void **)&w->meta, w->nm, &w->cap_m, sizeof *w->meta)) {
        free(k);
        free(v);
        return cnf_fail(CNF_ENOMEM, "metadata '%s'", key);
    }
    w->meta[w->nm++] = (kv){k, v};
    return CNF_OK;
}

/* A growing byte string for the JSON header. */
typedef struct {
    char *b;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *s, const char *p, size_t n)
{
    if (s->oom)
        return;
    if (s->n + n + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 256;
        while (nc < s->n + n + 1)
            nc *= 2;
        char *q = realloc(s->b, nc);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->b = q;
        s->cap = nc;
    }
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void sb_str(sbuf *s, const char *p) { sb_put(s, p, strlen(p)); }

static void sb_u64(sbuf *s, uint64_t v)
{
    char t[24];
    sb_put(s, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}

/* A JSON string as serde_json writes it: short escapes for " \ \b \f \n \r \t, \u00xx for the
 * other control characters, everything else (UTF-8 included) verbatim. */
static void sb_json_string(sbuf *s, const char *p)
{
    sb_put(s, "\"", 1);
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        }
        if (esc) {
            sb_str(s, esc);
        } else if (c < 0x20) {
            char t[8];
            sb_put(s, t, (size_t)snprintf(t, sizeof t, "\\u%04x", c));
        } else {
            sb_put(s, p, 1);
        }
    }
    sb_put(s, "\"", 1);
}

/* The header JSON (padded to a multiple of 8) with tensors in the order of idx. */
static int build_header(const cnf_st_writer *w, const w_tensor *const *idx, const kv *const *midx,
                        sbuf *s)
{
    sb_put(s, "{", 1);
    if (w->nm) {
        sb_str(s, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nm; i++) {
            if (i)
                sb_put(s, ",", 1);
            sb_json_string(s, midx[i]->key);
            sb_put(s, ":", 1);
            sb_json_string(s, midx[i]->value);
        }
        sb_put(s, "}", 1);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->nt; i++) {
        const w_tensor *t = idx[i];
        if (i || w->nm)
            sb_put(s, ",", 1);
        sb_json_string(s, t->name);
        sb_str(s, ":{\"dtype\":\"F64\",\"shape\":[");
        for (size_t k = 0; k < t->ndim; k++) {
            if (k)
                sb_put(s, ",", 1);
            sb_u64(s, t->shape[k]);
        }
        sb_str(s, "],\"data_offsets\":[");
        sb_u64(s, off);
        sb_put(s, ",", 1);
        off += 8 * (uint64_t)t->count;
        sb_u64(s, off);
        sb_str(s, "]}");
    }
    sb_put(s, "}", 1);
    while (!s->oom && s->n % 8)
        sb_put(s, " ", 1);
    return s->oom ? cnf_fail(CNF_ENOMEM, "safetensors header") : CNF_OK;
}

static int write_all(const cnf_st_writer *w, const w_tensor *const *idx, const sbuf *h, FILE *fp)
{
    unsigned char len[8], chunk[8 * 512];
    put_le64(len, h->n);
    fwrite(len, 1, 8, fp);
    fwrite(h->b, 1, h->n, fp);
    for (size_t i = 0; i < w->nt && !ferror(fp); i++) {
        const w_tensor *t = idx[i];
        for (size_t j = 0; j < t->count;) {
            size_t m = 0;
            for (; m < 512 && j < t->count; m++, j++) {
                uint64_t bits;
                memcpy(&bits, &t->data[j], 8);
                put_le64(chunk + 8 * m, bits);
            }
            fwrite(chunk, 8, m, fp);
        }
    }
    return ferror(fp) ? -1 : 0;
}

int cnf_st_write(const cnf_st_writer *w, const char *path)
{
    if (!w || !path)
        return cnf_fail(CNF_EINVAL, "cnf_st_write: NULL argument");
    const w_tensor **idx = cnf_calloc(w->nt, sizeof *idx);
    const kv **midx = cnf_calloc(w->nm, sizeof *midx);
    sbuf h = {0};
    int rc = CNF_OK;
    if (!idx || !midx) {
        rc = cnf_fail(CNF_ENOMEM, "%s: tensor index", path);
        goto done;
    }
    /* Sorted bytewise by name: the reference writer's order for tensors of one dtype. */
    for (size_t i = 0; i < w->nt; i++)
        idx[i] = &w->t[i];
    for (size_t i = 0; i < w->nm; i++)
        midx[i] = &w->meta[i];
    qsort(idx, w->nt, sizeof *idx, st_cmp_str_ptr);
    qsort(midx, w->nm, sizeof *midx, st_cmp_str_ptr);
    if ((rc = build_header(w, idx, midx, &h)))
        goto done;
    cnf_atomic_file af;
    if ((rc = cnf_atomic_open(&af, path)))
        goto done;
    if (write_all(w, idx, &h, af.fp)) {
        int e = errno;
        rc = cnf_fail(CNF_EIO, "%s: write failed: %s (previous file left unchanged)", path,
                      strerror(e));
        cnf_atomic_abort(&af);
        goto done;
    }
    rc = cnf_atomic_commit(&af);
done:
    free(idx);
    free(midx);
    free(h.b);
    return rc;
}
