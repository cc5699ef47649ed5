/* safetensors reader and writer (format: github.com/huggingface/safetensors, README "Format"),
 * with a small strict JSON parser shaped by the header's fixed schema, so its nesting depth is
 * bounded by construction (top object → tensor object → integer array). See cnf/safetensors.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/atomic.h"
#include "cnf/safetensors.h"
#include "core/internal.h"

#define MAX_HEADER ((uint64_t)100000000) /* as the reference implementation */

/* ---- Shared helpers -------------------------------------------------------------------- */

/* Well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF), RFC 3629 §4. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static void put_le64(unsigned char *b, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | b[k];
    return v;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

/* ---- Writer ---------------------------------------------------------------------------- */

typedef struct {
    char *name;
    size_t ndim, count;
    size_t *shape;
    double *data;
} w_tensor;

typedef struct {
    char *key, *value;
} kv;

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

/* Free n metadata pairs and their array. */
static void free_meta(kv *meta, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(meta[i].key);
        free(meta[i].value);
    }
    free(meta);
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
    free_meta(w->meta, w->nm);
    free(w);
}

/* Make room for one more element of size sz in *arr (count n, capacity *cap). */
static int grow(void **arr, size_t n, size_t *cap, size_t sz)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? 2 * *cap : 8;
    void *p = cnf_realloc(*arr, nc, sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static int valid_text(const char *s, const char *what)
{
    if (!s)
        return cnf_fail(CNF_EINVAL, "safetensors %s is NULL", what);
    if (!utf8_valid((const unsigned char *)s, strlen(s)))
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
    if (grow((void **)&w->t, w->nt, &w->cap_t, sizeof *w->t))
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
    if (!k || grow((void **)&w->meta, w->nm, &w->cap_m, sizeof *w->meta)) {
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
    qsort(idx, w->nt, sizeof *idx, cmp_str_ptr);
    qsort(midx, w->nm, sizeof *midx, cmp_str_ptr);
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

/* ---- Reader ---------------------------------------------------------------------------- */

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

void cnf_st_free(cnf_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nt; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->t);
    free_meta(f->meta, f->nm);
    free(f->path);
    free(f);
}

typedef struct {
    const unsigned char *s;
    size_t n, i;
    const char *path;
} parser;

static int perr(const parser *p, const char *what)
{
    return cnf_fail(CNF_EFORMAT, "%s: bad safetensors header at byte %zu: %s", p->path, 8 + p->i,
                    what);
}

static void ws(parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static int expect(parser *p, char c)
{
    ws(p);
    if (p->i >= p->n || p->s[p->i] != (unsigned char)c) {
        char msg[40];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return perr(p, msg);
    }
    p->i++;
    return CNF_OK;
}

/* After an element: 1 if a ',' follows (more elements), 0 at the closing bracket, <0 error. */
static int next_or_close(parser *p, char close)
{
    ws(p);
    if (p->i < p->n && p->s[p->i] == ',') {
        p->i++;
        return 1;
    }
    if (p->i < p->n && p->s[p->i] == (unsigned char)close) {
        p->i++;
        return 0;
    }
    char msg[40];
    snprintf(msg, sizeof msg, "expected ',' or '%c'", close);
    return perr(p, msg);
}

/* 1 if the next token closes the container (and consumes it), else 0. */
static int at_close(parser *p, char close)
{
    ws(p);
    if (p->i < p->n && p->s[p->i] == (unsigned char)close) {
        p->i++;
        return 1;
    }
    return 0;
}

static int hex4(parser *p, unsigned *v)
{
    if (p->n - p->i < 4)
        return perr(p, "truncated \\u escape");
    *v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = p->s[p->i++], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return perr(p, "bad hex digit in \\u escape");
        *v = *v << 4 | d;
    }
    return CNF_OK;
}

/* A JSON string into a new NUL-terminated buffer (escapes decoded to UTF-8). Strings holding
 * U+0000 are rejected, as cnf keeps names as C strings. */
static int parse_string(parser *p, char **out)
{
    *out = NULL;
    int rc = expect(p, '"');
    if (rc)
        return rc;
    size_t start = p->i;
    char *b = malloc(p->n - start + 1); /* decoded text is never longer than its source */
    if (!b)
        return cnf_fail(CNF_ENOMEM, "%s: header string", p->path);
    size_t m = 0;
    for (;;) {
        if (p->i >= p->n) {
            free(b);
            return perr(p, "unterminated string");
        }
        unsigned c = p->s[p->i++];
        if (c == '"')
            break;
        if (c < 0x20) {
            free(b);
            p->i--;
            return perr(p, "control character in string");
        }
        if (c != '\\') {
            b[m++] = (char)c;
            continue;
        }
        if (p->i >= p->n) {
            free(b);
            return perr(p, "unterminated escape");
        }
        c = p->s[p->i++];
        const char *simple = strchr("\"\\/bfnrt", (int)c);
        if (c && simple) {
            b[m++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') {
            free(b);
            p->i--;
            return perr(p, "invalid escape");
        }
        unsigned u, lo;
        if ((rc = hex4(p, &u))) {
            free(b);
            return rc;
        }
        if (u >= 0xDC00 && u <= 0xDFFF) {
            free(b);
            return perr(p, "lone low surrogate in \\u escape");
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                free(b);
                return perr(p, "high surrogate without its low half");
            }
            p->i += 2;
            if ((rc = hex4(p, &lo))) {
                free(b);
                return rc;
            }
            if (lo < 0xDC00 || lo > 0xDFFF) {
                free(b);
                return perr(p, "high surrogate without its low half");
            }
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (u == 0) {
            free(b);
            return perr(p, "\\u0000 in a string");
        }
        if (u < 0x80) {
            b[m++] = (char)u;
        } else if (u < 0x800) {
            b[m++] = (char)(0xC0 | u >> 6);
            b[m++] = (char)(0x80 | (u & 0x3F));
        } else if (u < 0x10000) {
            b[m++] = (char)(0xE0 | u >> 12);
            b[m++] = (char)(0x80 | (u >> 6 & 0x3F));
            b[m++] = (char)(0x80 | (u & 0x3F));
        } else {
            b[m++] = (char)(0xF0 | u >> 18);
            b[m++] = (char)(0x80 | (u >> 12 & 0x3F));
            b[m++] = (char)(0x80 | (u >> 6 & 0x3F));
            b[m++] = (char)(0x80 | (u & 0x3F));
        }
    }
    b[m] = '\0';
    *out = b;
    return CNF_OK;
}

/* A non-negative JSON integer (no sign, fraction, exponent or leading zero) that fits uint64. */
static int parse_uint(parser *p, uint64_t *v)
{
    ws(p);
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return perr(p, "expected a non-negative integer");
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return perr(p, "integer with a leading zero");
    *v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = p->s[p->i] - '0';
        if (*v > (UINT64_MAX - d) / 10)
            return perr(p, "integer too large");
        *v = *v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return perr(p, "expected an integer, found a fraction or exponent");
    return CNF_OK;
}

/* [u, u, ...] with at most max elements. */
static int parse_uint_array(parser *p, uint64_t *v, size_t max, size_t *count)
{
    int rc = expect(p, '[');
    *count = 0;
    if (rc || at_close(p, ']'))
        return rc;
    for (;;) {
        if (*count == max)
            return perr(p, "too many array elements");
        if ((rc = parse_uint(p, &v[(*count)++])))
            return rc;
        if ((rc = next_or_close(p, ']')) <= 0)
            return rc;
    }
}

/* {"dtype": "...", "shape": [...], "data_offsets": [b, e]}, each exactly once. */
static int parse_tensor(parser *p, r_tensor *t)
{
    int rc = expect(p, '{');
    if (rc)
        return rc;
    if (at_close(p, '}'))
        return perr(p, "empty tensor entry");
    for (;;) {
        char *key;
        if ((rc = parse_string(p, &key)) || (rc = expect(p, ':'))) {
            free(key);
            return rc;
        }
        if (strcmp(key, "dtype") == 0 && !t->have_dtype) {
            char *d;
            t->have_dtype = 1;
            if ((rc = parse_string(p, &d)) == CNF_OK) {
                if (strcmp(d, "F64") && strcmp(d, "F32")) {
                    rc = cnf_fail(CNF_EFORMAT,
                                  "%s: tensor '%s' has dtype '%.16s'; cnf reads F64 and F32",
                                  p->path, t->name, d);
                } else {
                    memcpy(t->dtype, d, 4);
                }
            }
            free(d);
        } else if (strcmp(key, "shape") == 0 && !t->have_shape) {
            uint64_t s[CNF_ST_MAX_DIMS];
            t->have_shape = 1;
            rc = parse_uint_array(p, s, CNF_ST_MAX_DIMS, &t->ndim);
            for (size_t k = 0; !rc && k < t->ndim; k++) {
#if SIZE_MAX < UINT64_MAX
                if (s[k] > SIZE_MAX)
                    rc = perr(p, "dimension too large");
#endif
                t->shape[k] = (size_t)s[k];
            }
        } else if (strcmp(key, "data_offsets") == 0 && !t->have_offsets) {
            uint64_t o[2];
            size_t k;
            t->have_offsets = 1;
            rc = parse_uint_array(p, o, 2, &k);
            if (!rc && k != 2)
                rc = perr(p, "data_offsets must hold two integers");
            t->begin = o[0];
            t->end = o[1];
        } else {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown or repeated field '%.40s' in tensor '%.30s'", key,
                     t->name);
            rc = perr(p, msg);
        }
        free(key);
        if (rc || (rc = next_or_close(p, '}')) <= 0)
            break;
    }
    if (!rc && !(t->have_dtype && t->have_shape && t->have_offsets))
        rc = cnf_fail(CNF_EFORMAT, "%s: tensor '%s' lacks dtype, shape or data_offsets", p->path,
                      t->name);
    return rc;
}

/* {"key": "value", ...} */
static int parse_meta(parser *p, cnf_st_file *f)
{
    int rc = expect(p, '{');
    if (rc || at_close(p, '}'))
        return rc;
    for (;;) {
        char *k = NULL, *v = NULL;
        if ((rc = parse_string(p, &k)) || (rc = expect(p, ':')) ||
            (rc = parse_string(p, &v))) {
            free(k);
            free(v);
            return rc == CNF_EFORMAT ? perr(p, "__metadata__ must map strings to strings") : rc;
        }
        if (grow((void **)&f->meta, f->nm, &f->cap_m, sizeof *f->meta)) {
            free(k);
            free(v);
            return cnf_fail(CNF_ENOMEM, "%s: metadata", f->path);
        }
        f->meta[f->nm++] = (kv){k, v};
        if ((rc = next_or_close(p, '}')) <= 0)
            return rc;
    }
}

static int parse_header(parser *p, cnf_st_file *f)
{
    ws(p);
    if (p->i >= p->n || p->s[p->i] != '{')
        return perr(p, "the header must be a JSON object");
    int rc = expect(p, '{');
    if (rc || at_close(p, '}'))
        goto end;
    for (;;) {
        char *key;
        if ((rc = parse_string(p, &key)) || (rc = expect(p, ':'))) {
            free(key);
            return rc;
        }
        if (strcmp(key, "__metadata__") == 0) {
            free(key);
            if (f->have_meta)
                return perr(p, "__metadata__ appears twice");
            f->have_meta = 1;
            rc = parse_meta(p, f);
        } else {
            if (grow((void **)&f->t, f->nt, &f->cap_t, sizeof *f->t)) {
                free(key);
                return cnf_fail(CNF_ENOMEM, "%s: tensor table", f->path);
            }
            r_tensor *t = &f->t[f->nt++];
            memset(t, 0, sizeof *t);
            t->name = key;
            rc = parse_tensor(p, t);
        }
        if (rc || (rc = next_or_close(p, '}')) <= 0)
            break;
    }
end:
    if (rc)
        return rc;
    ws(p);
    return p->i == p->n ? CNF_OK : perr(p, "characters after the header object");
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
    qsort(idx, n, sizeof *idx, cmp_str_ptr);
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
    if (!utf8_valid(buf + 8, (size_t)n)) {
        rc = cnf_fail(CNF_EFORMAT, "%s: header is not valid UTF-8", path);
        goto done;
    }
    parser p = {buf + 8, (size_t)n, 0, path};
    if ((rc = parse_header(&p, f)))
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
