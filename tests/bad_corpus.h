/* The malformed-input corpus for the data loaders (issue 7, acceptance 3): each entry is a file
 * name (its extension picks the format), its bytes, the error code the loader must return and a
 * phrase the message must contain. Entries marked gz are gzipped before writing, then cut to
 * gz_cut bytes (0: whole) or with byte gz_flip inverted, to make truncated and corrupt streams.
 * Used by test_loaders.c (library), make_corpus.c (files for the CLI test and fuzz seeds). */
#ifndef CNF_TESTS_BAD_CORPUS_H
#define CNF_TESTS_BAD_CORPUS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cnf/core.h"

typedef struct bad_file {
    const char *name;
    const char *bytes;
    size_t len;      /* 0: strlen(bytes) */
    int code;
    const char *phrase;
    int gz;
    size_t gz_cut;   /* keep this many compressed bytes (0: all) */
    size_t gz_flip;  /* invert this compressed byte (0: none) */
} bad_file;

#define S(lit) lit, sizeof(lit) - 1
/* A v1 .npy header for a dict text (padded by hand to a total of 64 bytes is not required). */
#define NPY1(dict) "\x93NUMPY\x01\x00" dict
#define F8_1 "\x00\x00\x00\x00\x00\x00\xf0\x3f" /* 1.0 little-endian */

static const bad_file bad_corpus[] = {
    /* CSV */
    {"ragged.csv", S("1,2\n3\n"), CNF_EFORMAT, "line 2 has 1 fields", 0, 0, 0},
    {"word.csv", S("1,2\n3,abc\n"), CNF_EFORMAT, "line 2, field 2: 'abc' is not a number", 0, 0, 0},
    {"nan.csv", S("1,nan\n"), CNF_ENONFINITE, "line 1, field 2", 0, 0, 0},
    {"inf.csv", S("1,2\n-inf,3\n"), CNF_ENONFINITE, "line 2, field 1", 0, 0, 0},
    {"overflow.csv", S("1e999,1\n"), CNF_ENONFINITE, "line 1, field 1", 0, 0, 0},
    {"empty_field.csv", S("1,,2\n"), CNF_EFORMAT, "field 2: empty field", 0, 0, 0},
    {"trailing_comma.csv", S("1,2,\n"), CNF_EFORMAT, "field 3: empty field", 0, 0, 0},
    {"header_only.csv", S("a,b\n"), CNF_EFORMAT, "no data rows", 0, 0, 0},
    {"empty.csv", S(""), CNF_EFORMAT, "no data rows", 0, 0, 0},
    {"nul.csv", S("1,2\n\0\n"), CNF_EFORMAT, "NUL byte", 0, 0, 0},
    {"header_count.csv", S("a,b,c\n1,2\n"), CNF_EFORMAT, "line 2 has 2 fields, expected 3", 0, 0, 0},
    {"mixed_header.csv", S("a,1\n2,3\n"), CNF_EFORMAT, "line 1, field 1: 'a'", 0, 0, 0},
    {"ragged_ws.txt", S("1 2 3\n4 5\n"), CNF_EFORMAT, "line 2 has 2 fields", 0, 0, 0},
    {"comma_in_ws.txt", S("1 2\n3,4 5\n"), CNF_EFORMAT, "line 2, field 1: '3,4'", 0, 0, 0},
    {"long_field.csv",
     S("1,1111111111111111111111111111111111111111111111111111111111111111111111111111111111111"
       "111111111111111111111111111111111111111111111111111111111111111\n"),
     CNF_EFORMAT, "line 1, field 2", 0, 0, 0},
    {"suffix.csv", S("1,2\n3,4x\n"), CNF_EFORMAT, "'4x' is not a number", 0, 0, 0},
    {"second_header.csv", S("1,2\na,b\n"), CNF_EFORMAT, "line 2, field 1: 'a'", 0, 0, 0},
    {"semicolon.csv", S("1;2\n3;4\n"), CNF_EFORMAT, "line 2, field 1: '3;4'", 0, 0, 0},
    {"gz_truncated.csv.gz", S("1,2\n3,4\n5,6\n7,8\n"), CNF_EFORMAT, "truncated", 1, 20, 0},
    {"gz_corrupt.csv.gz", S("1,2\n3,4\n5,6\n7,8\n"), CNF_EFORMAT, "gzip", 1, 0, 12},
    /* NumPy .npy */
    {"short.npy", S("\x93NUMPY"), CNF_EFORMAT, "truncated", 0, 0, 0},
    {"magic.npy", S("\x93NUMPZ\x01\x00\x10\x00{}                   \n"), CNF_EFORMAT, "bad magic", 0, 0, 0},
    {"version.npy", S("\x93NUMPY\x04\x00\x02\x00{}"), CNF_EFORMAT, "version 4.0", 0, 0, 0},
    {"hlen.npy", S("\x93NUMPY\x01\x00\xff\x7f{'descr'"), CNF_EFORMAT, "header declares 32767 bytes", 0, 0, 0},
    {"int_dtype.npy", S(NPY1("\x3a\x00{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }\n")),
     CNF_EFORMAT, "dtype '<i8'", 0, 0, 0},
    {"big_endian.npy", S(NPY1("\x3a\x00{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }\n")),
     CNF_EFORMAT, "dtype '>f8'", 0, 0, 0},
    {"fortran.npy", S(NPY1("\x3b\x00{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n")),
     CNF_EFORMAT, "Fortran", 0, 0, 0},
    {"scalar.npy", S(NPY1("\x38\x00{'descr': '<f8', 'fortran_order': False, 'shape': (), }\n" F8_1)),
     CNF_EFORMAT, "scalar", 0, 0, 0},
    {"zero_dim.npy", S(NPY1("\x3c\x00{'descr': '<f8', 'fortran_order': False, 'shape': (0, 2), }\n")),
     CNF_EFORMAT, "zero", 0, 0, 0},
    {"truncated_data.npy",
     S(NPY1("\x3c\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }\n" F8_1)),
     CNF_EFORMAT, "truncated", 0, 0, 0},
    {"trailing_data.npy",
     S(NPY1("\x3a\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n" F8_1 F8_1)),
     CNF_EFORMAT, "trailing data", 0, 0, 0},
    {"nan.npy",
     S(NPY1("\x3a\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n" F8_1
            "\x00\x00\x00\x00\x00\x00\xf8\x7f")),
     CNF_ENONFINITE, "element 1", 0, 0, 0},
    {"inf32.npy", S(NPY1("\x3a\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n"
                         "\x00\x00\x80\x7f")),
     CNF_ENONFINITE, "element 0", 0, 0, 0},
    {"no_shape.npy", S(NPY1("\x29\x00{'descr': '<f8', 'fortran_order': False}\n")),
     CNF_EFORMAT, "lacks 'shape'", 0, 0, 0},
    {"repeated_key.npy", S(NPY1("\x30\x00{'descr': '<f8', 'descr': '<f8', 'shape': (1,)}\n" F8_1)),
     CNF_EFORMAT, "repeated key 'descr'", 0, 0, 0},
    {"not_dict.npy", S(NPY1("\x07\x00[1, 2]\n")), CNF_EFORMAT, "Python dict", 0, 0, 0},
    {"huge_shape.npy",
     S(NPY1("\x4c\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000000, 100000000), }\n"
            F8_1)),
     CNF_EFORMAT, "too large", 0, 0, 0},
    {"huge_rows.npy",
     S(NPY1("\x46\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 64), }\n"
            F8_1)),
     CNF_EFORMAT, "truncated", 0, 0, 0},
    {"no_newline.npy", S(NPY1("\x3a\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } "
                              F8_1)),
     CNF_EFORMAT, "newline", 0, 0, 0},
    {"negative_dim.npy", S(NPY1("\x3b\x00{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }\n")),
     CNF_EFORMAT, "non-negative integer", 0, 0, 0},
    /* IDX */
    {"short.idx", S("\x00\x00\x08"), CNF_EFORMAT, "truncated", 0, 0, 0},
    {"magic.idx", S("\x01\x00\x08\x01\x00\x00\x00\x01\x05"), CNF_EFORMAT, "not an IDX file", 0, 0, 0},
    {"type.idx", S("\x00\x00\x07\x01\x00\x00\x00\x01\x05"), CNF_EFORMAT, "type 0x07", 0, 0, 0},
    {"ndim0.idx", S("\x00\x00\x08\x00\x05"), CNF_EFORMAT, "0 dimensions", 0, 0, 0},
    {"header.idx", S("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00"), CNF_EFORMAT, "16-byte header", 0, 0, 0},
    {"huge.idx", S("\x00\x00\x08\x03\x00\x00\xea\x60\x00\x00\x00\x1c\x00\x00\x00\x1c\x01\x02\x03"),
     CNF_EFORMAT, "truncated: the header declares 47040000 values", 0, 0, 0},
    {"trailing.idx", S("\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06"), CNF_EFORMAT, "trailing data", 0, 0, 0},
    {"zero.idx", S("\x00\x00\x08\x02\x00\x00\x00\x00\x00\x00\x00\x01"), CNF_EFORMAT, "dimension 0 is zero", 0, 0, 0},
    {"nan.idx", S("\x00\x00\x0d\x01\x00\x00\x00\x01\x7f\xc0\x00\x00"), CNF_ENONFINITE, "element 0", 0, 0, 0},
    {"gz_truncated-ubyte.gz", S("\x00\x00\x08\x01\x00\x00\x00\x04\x01\x02\x03\x04"), CNF_EFORMAT,
     "truncated", 1, 15, 0},
    {"missing.csv", NULL, 0, CNF_EIO, "cannot open", 0, 0, 0},
};
#undef S

enum { N_BAD = sizeof bad_corpus / sizeof *bad_corpus };

/* Write entry e into dir (missing.csv is not written). 0 ok, -1 on failure. The path is in
 * path (cap bytes). */
static inline int bad_write(const bad_file *e, const char *dir, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, e->name);
    if (!e->bytes)
        return 0;
    size_t len = e->len;
    unsigned char *data = (unsigned char *)e->bytes, *z = NULL;
    if (e->gz) {
        uLong zcap = compressBound(len) + 32;
        z = malloc(zcap);
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (!z || deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return free(z), -1;
        zs.next_in = data;
        zs.avail_in = (uInt)len;
        zs.next_out = z;
        zs.avail_out = (uInt)zcap;
        deflate(&zs, Z_FINISH);
        len = zcap - zs.avail_out;
        deflateEnd(&zs);
        if (e->gz_cut && e->gz_cut < len)
            len = e->gz_cut;
        if (e->gz_flip && e->gz_flip < len)
            z[e->gz_flip] ^= 0xff;
        data = z;
    }
    FILE *fp = fopen(path, "wb");
    int ok = fp && fwrite(data, 1, len, fp) == len;
    if (fp)
        ok &= fclose(fp) == 0;
    free(z);
    return ok ? 0 : -1;
}

#endif
