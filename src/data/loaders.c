/* Data set loaders: CSV, NumPy .npy (v1–3), IDX, each optionally gzipped (see cnf/loaders.h).
 *
 * Every parser works on a memory buffer holding the whole (inflated) file, so every size a header
 * declares is checked against the bytes that are really there before anything is allocated; the
 * output array is at most 8 bytes per input byte for the binary formats and per two bytes for
 * CSV. The same parsers are the fuzz targets (tests/fuzz/). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "cnf/loaders.h"
#include "core/internal.h"

void cnf_data_clear(cnf_data *out)
{
    if (!out)
        return;
    free(out->X);
    free(out->line);
    for (size_t j = 0; out->names && j < out->d; j++)
        free(out->names[j]);
    free(out->names);
    memset(out, 0, sizeof *out);
}

/* ---- gzip ------------------------------------------------------------------------------------ */

/* Inflate a gzip stream (concatenated members allowed) into *out. The buffer grows with the
 * output, and never past 1032·len + 1024 bytes (deflate cannot expand more) or the global cap. */
static int gunzip(const unsigned char *buf, size_t len, const char *name, unsigned char **out,
                  size_t *out_len)
{
    size_t cap_max = len > (CNF_DATA_MAX_BYTES - 1024) / 1032 ? CNF_DATA_MAX_BYTES
                                                               : 1032 * len + 1024;
    size_t cap = len * 4 + 1024 < cap_max ? len * 4 + 1024 : cap_max, used = 0;
    unsigned char *o = malloc(cap);
    if (!o)
        return cnf_fail(CNF_ENOMEM, "%s: %zu bytes for inflating", name, cap);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        free(o);
        return cnf_fail(CNF_ENOMEM, "%s: zlib initialisation failed", name);
    }
    size_t in_pos = 0;
    int rc = CNF_OK;
    for (;;) {
        if (used == cap) {
            if (cap == cap_max) {
                rc = cnf_fail(CNF_EFORMAT, "%s: gzip data inflate beyond %zu bytes (corrupt or "
                              "too large)", name, cap_max);
                break;
            }
            size_t nc = cap > cap_max / 2 ? cap_max : 2 * cap;
            unsigned char *t = realloc(o, nc);
            if (!t) {
                rc = cnf_fail(CNF_ENOMEM, "%s: %zu bytes for inflating", name, nc);
                break;
            }
            o = t;
            cap = nc;
        }
        size_t in_chunk = len - in_pos > (1u << 30) ? (1u << 30) : len - in_pos;
        size_t out_chunk = cap - used > (1u << 30) ? (1u << 30) : cap - used;
        zs.next_in = (unsigned char *)buf + in_pos;
        zs.avail_in = (uInt)in_chunk;
        zs.next_out = o + used;
        zs.avail_out = (uInt)out_chunk;
        int zr = inflate(&zs, Z_NO_FLUSH);
        in_pos += in_chunk - zs.avail_in;
        used += out_chunk - zs.avail_out;
        if (zr == Z_STREAM_END) {
            if (in_pos == len)
                break;
            inflateReset(&zs); /* another gzip member follows */
            continue;
        }
        if (zr == Z_OK)
            continue;
        if (zr == Z_BUF_ERROR && in_pos == len) {
            rc = cnf_fail(CNF_EFORMAT, "%s: gzip stream is truncated (after %zu compressed bytes)",
                          name, len);
            break;
        }
        if (zr == Z_BUF_ERROR)
            continue;
        rc = cnf_fail(CNF_EFORMAT, "%s: corrupt gzip data at compressed byte %zu (%s)", name,
                      in_pos, zs.msg ? zs.msg : "inflate failed");
        break;
    }
    inflateEnd(&zs);
    if (rc) {
        free(o);
        return rc;
    }
    *out = o;
    *out_len = used;
    return CNF_OK;
}

/* ---- CSV ------------------------------------------------------------------------------------- */

typedef struct vec {
    double *v;
    size_t n, cap;
} vec;

static int vec_push(vec *a, double x, const char *name)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 256;
        double *t = nc < a->cap ? NULL : cnf_realloc(a->v, nc, sizeof(double));
        if (!t)
            return cnf_fail(CNF_ENOMEM, "%s: %zu values", name, nc);
        a->v = t;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return CNF_OK;
}

enum { FIELD_MAX = 128 };

/* Parse one field as a number: 1 if it is one (value in *x), 0 if not. */
static int field_number(const char *s, size_t len, double *x)
{
    char tmp[FIELD_MAX + 1];
    if (len == 0 || len > FIELD_MAX)
        return 0;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    if (tmp[0] == ' ' || tmp[0] == '\t')
        return 0;
    char *end;
    errno = 0;
    *x = strtod(tmp, &end);
    return end == tmp + len;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* A missing-value marker: empty, NA, N/A, NaN (any case) or ?. */
static int is_missing(const char *s, size_t len)
{
    static const char *const marks[] = {"na", "n/a", "nan", "?"};
    if (len == 0)
        return 1;
    for (size_t m = 0; m < sizeof marks / sizeof *marks; m++) {
        size_t k = strlen(marks[m]), i = 0;
        while (i < k && i < len && (s[i] | 0x20) == marks[m][i])
            i++;
        if (i == k && k == len)
            return 1;
    }
    return 0;
}

/* Split line [s, s+len) into fields; calls back with each field (trimmed). Returns the count, or
 * sets *empty to the 1-based index of an empty comma-separated field. */
typedef struct field {
    const char *s;
    size_t len;
} field;

static size_t split(const char *s, size_t len, char delim, field *f, size_t max, size_t *empty)
{
    size_t k = 0, i = 0;
    *empty = 0;
    if (delim == ',') {
        for (;;) {
            size_t a = i;
            while (i < len && s[i] != ',')
                i++;
            size_t b = i;
            while (a < b && is_blank(s[a]))
                a++;
            while (b > a && is_blank(s[b - 1]))
                b--;
            if (a == b && !*empty)
                *empty = k + 1;
            if (k < max)
                f[k] = (field){s + a, b - a};
            k++;
            if (i == len)
                break;
            i++; /* past the comma */
        }
        return k;
    }
    while (i < len) {
        while (i < len && is_blank(s[i]))
            i++;
        if (i == len)
            break;
        size_t a = i;
        while (i < len && !is_blank(s[i]))
            i++;
        if (k < max)
            f[k] = (field){s + a, i - a};
        k++;
    }
    return k;
}

/* The header's names: each field with surrounding double quotes removed; NULL if out of memory. */
static char **header_names(const field *f, size_t k)
{
    char **names = calloc(k, sizeof *names);
    for (size_t j = 0; names && j < k; j++) {
        const char *s = f[j].s;
        size_t l = f[j].len;
        if (l >= 2 && s[0] == '"' && s[l - 1] == '"') {
            s++;
            l -= 2;
        }
        if (!(names[j] = malloc(l + 1))) {
            for (size_t i = 0; i < j; i++)
                free(names[i]);
            free(names);
            return NULL;
        }
        memcpy(names[j], s, l);
        names[j][l] = '\0';
    }
    return names;
}

static int parse_csv(const char *buf, size_t len, const char *name, unsigned flags,
                     cnf_data *out)
{
    vec a = {0};
    size_t line = 0, pos = 0, d = 0, header_d = 0, n = 0;
    char delim = 0;
    int rc = CNF_OK, integer = 1, missing_ok = (flags & CNF_DATA_MISSING_NAN) != 0;
    field *f = NULL;
    size_t fmax = 0, *lines = NULL, lcap = 0, first_line = 0;
    char **names = NULL;
    while (pos < len && rc == CNF_OK) {
        line++;
        const char *s = buf + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - s) : len - pos;
        pos += l + (nl != NULL);
        if (memchr(s, '\0', l)) {
            rc = cnf_fail(CNF_EFORMAT, "%s: line %zu: binary data (a NUL byte), not text", name,
                          line);
            break;
        }
        size_t b = 0;
        while (b < l && is_blank(s[b]))
            b++;
        if (b == l || s[b] == '#')
            continue;
        if (!delim)
            delim = memchr(s, ',', l) ? ',' : ' ';
        size_t empty;
        size_t k = split(s, l, delim, f, fmax, &empty);
        if (k > fmax) { /* room for this many fields, then split again */
            field *t = cnf_realloc(f, k, sizeof *f);
            if (!t) {
                rc = cnf_fail(CNF_ENOMEM, "%s: line %zu: %zu fields", name, line, k);
                break;
            }
            f = t;
            fmax = k;
            split(s, l, delim, f, fmax, &empty);
        }
        if (empty && !missing_ok) {
            rc = cnf_fail(CNF_EFORMAT, "%s: line %zu, field %zu: empty field", name, line, empty);
            break;
        }
        size_t expect = d ? d : header_d;
        if (expect && k != expect) {
            rc = cnf_fail(CNF_EFORMAT, "%s: line %zu has %zu fields, expected %zu (ragged rows)",
                          name, line, k, expect);
            break;
        }
        size_t numeric = 0, first_bad = 0, missing = 0;
        double x;
        for (size_t j = 0; j < k; j++) {
            if (missing_ok && is_missing(f[j].s, f[j].len))
                missing++;
            else if (field_number(f[j].s, f[j].len, &x))
                numeric++;
            else if (!first_bad)
                first_bad = j + 1;
        }
        /* The header line: no number (and, when missing values are read, not only markers). */
        if (numeric == 0 && missing < k && !d && !header_d) {
            header_d = k;
            if (!(names = header_names(f, k))) {
                rc = cnf_fail(CNF_ENOMEM, "%s: line %zu: %zu column names", name, line, k);
                break;
            }
            continue;
        }
        if (first_bad) {
            const field *g = &f[first_bad - 1];
            int shown = g->len > 40 ? 40 : (int)g->len;
            rc = cnf_fail(CNF_EFORMAT, "%s: line %zu, field %zu: '%.*s%s' is not a number", name,
                          line, first_bad, shown, g->s, g->len > 40 ? "..." : "");
            break;
        }
        for (size_t j = 0; j < k && rc == CNF_OK; j++) {
            if (missing_ok && is_missing(f[j].s, f[j].len)) {
                rc = vec_push(&a, NAN, name);
                continue;
            }
            field_number(f[j].s, f[j].len, &x);
            if (!isfinite(x))
                rc = cnf_fail(CNF_ENONFINITE, "%s: line %zu, field %zu: '%.*s' is not finite",
                              name, line, j + 1, (int)(f[j].len > 40 ? 40 : f[j].len), f[j].s);
            else if (x != floor(x))
                integer = 0;
            if (!rc)
                rc = vec_push(&a, x, name);
        }
        if (rc == CNF_OK && n && !lines && line != first_line + n) {
            /* Not right after the previous row (a comment or blank line between): the rows'
             * lines are stored, one entry per line of the file, allocated once. */
            for (const char *q = buf; (q = memchr(q, '\n', len - (size_t)(q - buf))); q++)
                lcap++;
            lcap++;
            if (!(lines = cnf_calloc(lcap, sizeof *lines)))
                rc = cnf_fail(CNF_ENOMEM, "%s: %zu line numbers", name, lcap);
            for (size_t i = 0; lines && i < n; i++)
                lines[i] = first_line + i;
        }
        if (rc)
            break;
        if (!n)
            first_line = line;
        if (lines)
            lines[n] = line;
        d = k;
        n++;
    }
    free(f);
    if (rc == CNF_OK && n == 0)
        rc = cnf_fail(CNF_EFORMAT, "%s: no data rows (%zu lines)", name, line);
    if (rc) {
        free(a.v);
        free(lines);
        for (size_t j = 0; names && j < header_d; j++)
            free(names[j]);
        free(names);
        return rc;
    }
    out->X = a.v;
    out->n = n;
    out->d = d;
    out->integer = integer;
    out->line = lines;
    out->first_line = first_line;
    out->names = names;
    return CNF_OK;
}

/* ---- NumPy .npy ------------------------------------------------------------------------------ */

typedef struct hdr {
    const char *s;
    size_t len, pos, base; /* base: file offset of s, for messages */
    const char *name;
} hdr;

static int hfail(const hdr *h, const char *what)
{
    return cnf_fail(CNF_EFORMAT, "%s: .npy header byte %zu: %s", h->name, h->base + h->pos, what);
}

static void hskip(hdr *h)
{
    while (h->pos < h->len && (h->s[h->pos] == ' ' || h->s[h->pos] == '\t'))
        h->pos++;
}

static int hchar(hdr *h, char c)
{
    hskip(h);
    if (h->pos < h->len && h->s[h->pos] == c) {
        h->pos++;
        return 1;
    }
    return 0;
}

/* A Python string literal '...' or "..." without escapes, into out (≤ cap−1 chars). */
static int hstring(hdr *h, char *out, size_t cap)
{
    hskip(h);
    if (h->pos >= h->len || (h->s[h->pos] != '\'' && h->s[h->pos] != '"'))
        return hfail(h, "expected a quoted string");
    char q = h->s[h->pos++];
    size_t k = 0;
    while (h->pos < h->len && h->s[h->pos] != q) {
        if (h->s[h->pos] == '\\')
            return hfail(h, "escapes are not supported in header strings");
        if (k + 1 >= cap)
            return hfail(h, "string too long");
        out[k++] = h->s[h->pos++];
    }
    if (h->pos >= h->len)
        return hfail(h, "unterminated string");
    h->pos++;
    out[k] = '\0';
    return CNF_OK;
}

enum { NPY_MAX_DIMS = 32 };

static int hshape(hdr *h, size_t *shape, size_t *ndim)
{
    if (!hchar(h, '('))
        return hfail(h, "'shape' must be a tuple");
    *ndim = 0;
    for (;;) {
        if (hchar(h, ')'))
            return CNF_OK;
        hskip(h);
        if (h->pos >= h->len || h->s[h->pos] < '0' || h->s[h->pos] > '9')
            return hfail(h, "expected a non-negative integer in 'shape'");
        size_t v = 0;
        while (h->pos < h->len && h->s[h->pos] >= '0' && h->s[h->pos] <= '9') {
            if (v > ((size_t)1 << 48))
                return hfail(h, "dimension too large");
            v = 10 * v + (size_t)(h->s[h->pos++] - '0');
        }
        if (*ndim == NPY_MAX_DIMS)
            return hfail(h, "more than 32 dimensions");
        shape[(*ndim)++] = v;
        if (hchar(h, ','))
            continue;
        if (hchar(h, ')'))
            return CNF_OK;
        return hfail(h, "expected ',' or ')' in 'shape'");
    }
}

static uint64_t le(const unsigned char *p, size_t k)
{
    uint64_t v = 0;
    for (size_t i = k; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t be(const unsigned char *p, size_t k)
{
    uint64_t v = 0;
    for (size_t i = 0; i < k; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Count of elements (product of dims) without overflow: 0 on overflow or a zero dimension. */
static size_t product(const size_t *shape, size_t ndim, size_t from)
{
    size_t p = 1;
    for (size_t i = from; i < ndim; i++) {
        if (shape[i] == 0 || p > ((size_t)1 << 50) / shape[i])
            return 0;
        p *= shape[i];
    }
    return p;
}

/* Fill out from data bytes p of count elements, esize bytes each, as float (is_float) or signed/
 * unsigned integers, little (little = 1) or big endian; checks finiteness. */
static int convert(const unsigned char *p, size_t count, size_t esize, int is_float, int is_signed,
                   int little, const char *name, const char *where, size_t data_off,
                   cnf_data *out)
{
    double *X = cnf_calloc(count, sizeof(double));
    if (!X)
        return cnf_fail(CNF_ENOMEM, "%s: %zu values", name, count);
    int integer = 1;
    for (size_t i = 0; i < count; i++) {
        uint64_t u = little ? le(p + i * esize, esize) : be(p + i * esize, esize);
        double x;
        if (is_float && esize == 8) {
            memcpy(&x, &u, 8);
        } else if (is_float) {
            uint32_t w = (uint32_t)u;
            float y;
            memcpy(&y, &w, 4);
            x = y;
        } else if (is_signed) {
            uint64_t sign = (uint64_t)1 << (8 * esize - 1);
            x = (double)(int64_t)((u ^ sign) - sign);
        } else {
            x = (double)u;
        }
        if (!isfinite(x)) {
            free(X);
            return cnf_fail(CNF_ENONFINITE, "%s: %s element %zu (byte %zu) is %g", name, where, i,
                            data_off + i * esize, x);
        }
        if (x != floor(x))
            integer = 0;
        X[i] = x;
    }
    out->X = X;
    out->integer = integer;
    return CNF_OK;
}

static void set_shape(cnf_data *out, const size_t *shape, size_t ndim)
{
    out->n = shape[0];
    out->d = ndim == 1 ? 1 : product(shape, ndim, 1);
    if (ndim == 3) {
        out->height = shape[1];
        out->width = shape[2];
    }
}

static int parse_npy(const unsigned char *b, size_t len, const char *name, cnf_data *out)
{
    if (len < 10)
        return cnf_fail(CNF_EFORMAT, "%s: truncated: %zu bytes, a .npy header needs at least 10",
                        name, len);
    if (memcmp(b, "\x93NUMPY", 6))
        return cnf_fail(CNF_EFORMAT, "%s: not a .npy file (bad magic at byte 0)", name);
    if (b[6] < 1 || b[6] > 3 || b[7] != 0)
        return cnf_fail(CNF_EFORMAT, "%s: .npy version %u.%u is not supported (1.0, 2.0, 3.0)",
                        name, b[6], b[7]);
    size_t off = b[6] == 1 ? 10 : 12;
    if (len < off)
        return cnf_fail(CNF_EFORMAT, "%s: truncated .npy header (%zu bytes)", name, len);
    size_t hlen = (size_t)le(b + 8, off - 8);
    if (hlen > len - off)
        return cnf_fail(CNF_EFORMAT, "%s: truncated: the header declares %zu bytes, the file has "
                        "%zu after byte %zu", name, hlen, len - off, off);
    hdr h = {(const char *)b + off, hlen, 0, off, name};
    char key[32], descr[32] = "";
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0, rc;
    size_t shape[NPY_MAX_DIMS], ndim = 0;
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)h.s[i] < 0x20 && h.s[i] != '\n' && h.s[i] != '\t') {
            h.pos = i;
            return hfail(&h, "control character in the header");
        }
    if (!hchar(&h, '{'))
        return hfail(&h, "the header must be a Python dict '{...}'");
    while (!hchar(&h, '}')) {
        if ((rc = hstring(&h, key, sizeof key)))
            return rc;
        if (!hchar(&h, ':'))
            return hfail(&h, "expected ':'");
        if (!strcmp(key, "descr") && !have_descr) {
            if ((rc = hstring(&h, descr, sizeof descr)))
                return rc;
            have_descr = 1;
        } else if (!strcmp(key, "fortran_order") && !have_order) {
            hskip(&h);
            if (h.len - h.pos >= 4 && !memcmp(h.s + h.pos, "True", 4)) {
                fortran = 1;
                h.pos += 4;
            } else if (h.len - h.pos >= 5 && !memcmp(h.s + h.pos, "False", 5)) {
                h.pos += 5;
            } else {
                return hfail(&h, "'fortran_order' must be True or False");
            }
            have_order = 1;
        } else if (!strcmp(key, "shape") && !have_shape) {
            if ((rc = hshape(&h, shape, &ndim)))
                return rc;
            have_shape = 1;
        } else {
            return cnf_fail(CNF_EFORMAT, "%s: .npy header: unexpected or repeated key '%s'", name,
                            key);
        }
        if (!hchar(&h, ',')) {
            if (hchar(&h, '}'))
                break;
            return hfail(&h, "expected ',' or '}'");
        }
    }
    hskip(&h);
    if (h.pos != hlen - 1 || h.s[h.pos] != '\n')
        return hfail(&h, "the header must end with a newline after the dict");
    if (!have_descr || !have_order || !have_shape)
        return cnf_fail(CNF_EFORMAT, "%s: .npy header lacks '%s'", name,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    size_t esize;
    if (!strcmp(descr, "<f8"))
        esize = 8;
    else if (!strcmp(descr, "<f4"))
        esize = 4;
    else
        return cnf_fail(CNF_EFORMAT, "%s: dtype '%s' is not supported: cnf reads little-endian "
                        "float64 '<f8' or float32 '<f4'", name, descr);
    if (ndim == 0)
        return cnf_fail(CNF_EFORMAT, "%s: shape () is a scalar, expected (n, d)", name);
    if (fortran && ndim > 1)
        return cnf_fail(CNF_EFORMAT, "%s: Fortran (column-major) order is not supported; save "
                        "with C order (numpy.ascontiguousarray)", name);
    size_t count = product(shape, ndim, 0);
    if (count == 0)
        return cnf_fail(CNF_EFORMAT, "%s: shape has a zero or too large dimension (empty or "
                        "impossible array)", name);
    size_t data_off = off + hlen, have = len - data_off;
    if (count > have / esize || count * esize != have)
        return cnf_fail(CNF_EFORMAT, "%s: %s: the shape declares %zu values (%zu bytes) after "
                        "byte %zu, the file has %zu bytes", name,
                        count > have / esize ? "truncated" : "trailing data", count,
                        count > have / esize ? 0 : count * esize, data_off, have);
    rc = convert(b + data_off, count, esize, 1, 0, 1, name, "data", data_off, out);
    if (!rc)
        set_shape(out, shape, ndim);
    return rc;
}

/* ---- IDX ------------------------------------------------------------------------------------- */

static int parse_idx(const unsigned char *b, size_t len, const char *name, cnf_data *out)
{
    if (len < 4)
        return cnf_fail(CNF_EFORMAT, "%s: truncated: %zu bytes, an IDX header needs at least 4",
                        name, len);
    if (b[0] || b[1])
        return cnf_fail(CNF_EFORMAT, "%s: not an IDX file (bytes 0-1 must be zero)", name);
    size_t esize;
    int is_float = 0, is_signed = 1;
    switch (b[2]) {
    case 0x08: esize = 1; is_signed = 0; break;
    case 0x09: esize = 1; break;
    case 0x0B: esize = 2; break;
    case 0x0C: esize = 4; break;
    case 0x0D: esize = 4; is_float = 1; break;
    case 0x0E: esize = 8; is_float = 1; break;
    default:
        return cnf_fail(CNF_EFORMAT, "%s: byte 2: IDX type 0x%02x is not one of 08 09 0B 0C 0D 0E",
                        name, b[2]);
    }
    size_t ndim = b[3];
    if (ndim == 0 || ndim > NPY_MAX_DIMS)
        return cnf_fail(CNF_EFORMAT, "%s: byte 3: %zu dimensions (1 to 32 supported)", name, ndim);
    size_t off = 4 + 4 * ndim;
    if (len < off)
        return cnf_fail(CNF_EFORMAT, "%s: truncated: %zu dimensions need a %zu-byte header, the "
                        "file has %zu bytes", name, ndim, off, len);
    size_t shape[NPY_MAX_DIMS];
    for (size_t i = 0; i < ndim; i++) {
        shape[i] = (size_t)be(b + 4 + 4 * i, 4);
        if (shape[i] == 0)
            return cnf_fail(CNF_EFORMAT, "%s: byte %zu: dimension %zu is zero (empty array)", name,
                            4 + 4 * i, i);
    }
    size_t count = product(shape, ndim, 0), have = len - off;
    if (count == 0 || count > have / esize || count * esize != have)
        return cnf_fail(CNF_EFORMAT, "%s: %s: the header declares %zu values of %zu bytes after "
                        "byte %zu, the file has %zu bytes", name,
                        count == 0 || count > have / esize ? "truncated" : "trailing data", count,
                        esize, off, have);
    int rc = convert(b + off, count, esize, is_float, is_signed, 0, name, "data", off, out);
    if (!rc)
        set_shape(out, shape, ndim);
    return rc;
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static cnf_data_format by_extension(const char *path)
{
    char base[4096];
    snprintf(base, sizeof base, "%s", path);
    if (ends_with(base, ".gz"))
        base[strlen(base) - 3] = '\0';
    if (ends_with(base, ".csv") || ends_with(base, ".txt") || ends_with(base, ".tsv") ||
        ends_with(base, ".dat"))
        return CNF_DATA_CSV;
    if (ends_with(base, ".npy"))
        return CNF_DATA_NPY;
    if (ends_with(base, ".idx") || ends_with(base, "-ubyte") || strstr(base, ".idx"))
        return CNF_DATA_IDX;
    return CNF_DATA_AUTO;
}

int cnf_data_parse(const void *buf, size_t len, cnf_data_format fmt, const char *name,
                   cnf_data *out)
{
    return cnf_data_parse_flags(buf, len, fmt, 0, name, out);
}

int cnf_data_parse_flags(const void *buf, size_t len, cnf_data_format fmt, unsigned flags,
                         const char *name, cnf_data *out)
{
    if (!out || (!buf && len))
        return cnf_fail(CNF_EINVAL, "cnf_data_parse: NULL argument");
    memset(out, 0, sizeof *out);
    if (!name)
        name = "(memory)";
    const unsigned char *b = buf;
    unsigned char *inflated = NULL;
    if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
        int rc = gunzip(b, len, name, &inflated, &len);
        if (rc)
            return rc;
        b = inflated;
    }
    if (fmt == CNF_DATA_AUTO) {
        if (len >= 6 && !memcmp(b, "\x93NUMPY", 6))
            fmt = CNF_DATA_NPY;
        else if (len >= 2 && b[0] == 0 && b[1] == 0)
            fmt = CNF_DATA_IDX;
        else
            fmt = CNF_DATA_CSV;
    }
    int rc;
    switch (fmt) {
    case CNF_DATA_CSV: rc = parse_csv((const char *)b, len, name, flags, out); break;
    case CNF_DATA_NPY: rc = parse_npy(b, len, name, out); break;
    case CNF_DATA_IDX: rc = parse_idx(b, len, name, out); break;
    default: rc = cnf_fail(CNF_EINVAL, "%s: unknown data format %d", name, (int)fmt);
    }
    free(inflated);
    if (rc)
        cnf_data_clear(out);
    return rc;
}

int cnf_data_load(const char *path, cnf_data_format fmt, cnf_data *out)
{
    return cnf_data_load_flags(path, fmt, 0, out);
}

int cnf_data_load_flags(const char *path, cnf_data_format fmt, unsigned flags, cnf_data *out)
{
    if (!path || !out)
        return cnf_fail(CNF_EINVAL, "cnf_data_load: NULL argument");
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return cnf_fail(CNF_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return cnf_fail(CNF_EIO, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > CNF_DATA_MAX_BYTES) {
        fclose(fp);
        return cnf_fail(CNF_EFORMAT, "%s: %lld bytes, more than the %zu the loaders accept", path,
                        (long long)st.st_size, CNF_DATA_MAX_BYTES);
    }
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(fp);
        return cnf_fail(CNF_ENOMEM, "%s: %zu bytes", path, len);
    }
    size_t got = fread(buf, 1, len, fp);
    int err = ferror(fp);
    fclose(fp);
    if (got != len || err) {
        free(buf);
        return cnf_fail(CNF_EIO, "%s: read %zu of %zu bytes", path, got, len);
    }
    if (fmt == CNF_DATA_AUTO)
        fmt = by_extension(path);
    int rc = cnf_data_parse_flags(buf, len, fmt, flags, path, out);
    free(buf);
    return rc;
}

int cnf_data_select(cnf_data *data, const size_t *cols, size_t k)
{
    if (k == 0)
        return cnf_fail(CNF_EINVAL, "no columns selected");
    for (size_t j = 0; j < k; j++)
        if (cols[j] >= data->d)
            return cnf_fail(CNF_EINVAL, "column %zu does not exist (the data have %zu columns, "
                            "numbered from 0)", cols[j], data->d);
    double *Y = cnf_calloc(cnf_size_mul(data->n, k), sizeof(double));
    char **names = data->names ? calloc(k, sizeof *names) : NULL;
    for (size_t j = 0; names && j < k; j++)
        names[j] = malloc(strlen(data->names[cols[j]]) + 1);
    int nomem = !Y || (data->names && !names);
    for (size_t j = 0; names && j < k; j++)
        nomem |= !names[j];
    if (nomem) {
        for (size_t j = 0; names && j < k; j++)
            free(names[j]);
        free(names);
        free(Y);
        return cnf_fail(CNF_ENOMEM, "%zu x %zu values", data->n, k);
    }
    for (size_t j = 0; names && j < k; j++)
        strcpy(names[j], data->names[cols[j]]);
    for (size_t j = 0; data->names && j < data->d; j++)
        free(data->names[j]);
    free(data->names);
    data->names = names;
    int integer = 1;
    for (size_t i = 0; i < data->n; i++)
        for (size_t j = 0; j < k; j++) {
            double x = data->X[i * data->d + cols[j]];
            Y[i * k + j] = x;
            integer &= x == floor(x);
        }
    free(data->X);
    data->X = Y;
    if (k != data->d)
        data->height = data->width = 0;
    data->d = k;
    data->integer = integer;
    return CNF_OK;
}

void cnf_data_shuffle(double *X, size_t n, size_t d, cnf_rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)cnf_rng_below(rng, i);
        for (size_t c = 0; c < d; c++) {
            double t = X[(i - 1) * d + c];
            X[(i - 1) * d + c] = X[j * d + c];
            X[j * d + c] = t;
        }
    }
}

void cnf_data_dequantize(double *X, size_t n, size_t d, cnf_rng *rng)
{
    for (size_t i = 0; i < n * d; i++)
        X[i] += cnf_rng_uniform(rng);
}

int cnf_data_missing(const cnf_data *data, size_t *row, size_t *col)
{
    for (size_t i = 0; i < data->n; i++)
        for (size_t j = 0; j < data->d; j++)
            if (isnan(data->X[i * data->d + j])) {
                *row = i;
                *col = j;
                return 1;
            }
    return 0;
}

size_t cnf_data_line(const cnf_data *data, size_t row)
{
    return data->line ? data->line[row] : data->first_line ? data->first_line + row : 0;
}

int cnf_data_drop_missing(cnf_data *data, size_t *dropped)
{
    size_t d = data->d, m = 0, r, c;
    int integer = 1;
    *dropped = 0;
    if (!data->line && data->first_line && cnf_data_missing(data, &r, &c)) {
        /* the rows kept are no longer consecutive lines: store each one's */
        if (!(data->line = cnf_calloc(data->n, sizeof *data->line)))
            return cnf_fail(CNF_ENOMEM, "%zu line numbers", data->n);
        for (size_t i = 0; i < data->n; i++)
            data->line[i] = data->first_line + i;
    }
    for (size_t i = 0; i < data->n; i++) {
        const double *x = data->X + i * d;
        int miss = 0;
        for (size_t j = 0; j < d && !miss; j++)
            miss = isnan(x[j]);
        if (miss)
            continue;
        for (size_t j = 0; j < d; j++)
            integer &= x[j] == floor(x[j]);
        if (m != i) {
            memmove(data->X + m * d, x, d * sizeof(double));
            if (data->line)
                data->line[m] = data->line[i];
        }
        m++;
    }
    *dropped = data->n - m;
    data->n = m;
    data->integer = integer;
    return CNF_OK;
}
