/* Helpers the safetensors writer, JSON header parser and reader share (safetensors_private.h). */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "format/safetensors_private.h"

/* Well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF), RFC 3629 §4. */
int st_utf8_valid(const unsigned char *s, size_t n)
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

int st_cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a, **(const char *const *const *)b);
}

/* Free n metadata pairs and their array. */
void st_free_meta(kv *meta, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(meta[i].key);
        free(meta[i].value);
    }
    free(meta);
}

/* Make room for one more element of size sz in *arr (count n, capacity *cap). */
int st_grow(void **arr, size_t n, size_t *cap, size_t sz)
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
