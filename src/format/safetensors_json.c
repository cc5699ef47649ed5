/* The safetensors header parser: a small strict JSON parser shaped by the header's fixed
 * schema, so its nesting depth is bounded by construction (top object -> tensor object ->
 * integer array). It fills the tensor table and metadata of a cnf_st_file; the reader
 * (safetensors_read.c) checks the layout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "format/safetensors_private.h"

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
        if (st_grow((void **)&f->meta, f->nm, &f->cap_m, sizeof *f->meta)) {
            free(k);
            free(v);
            return cnf_fail(CNF_ENOMEM, "%s: metadata", f->path);
        }
        f->meta[f->nm++] = (kv){k, v};
        if ((rc = next_or_close(p, '}')) <= 0)
            return rc;
    }
}

int st_parse_header(parser *p, cnf_st_file *f)
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
            if (st_grow((void **)&f->t, f->nt, &f->cap_t, sizeof *f->t)) {
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
