/* Data loaders (issue 7): good files of every format and variant read back exactly; every entry
 * of the malformed corpus (bad_corpus.h) fails with its code and a message naming the file and
 * the problem; splits and dequantisation are seeded. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bad_corpus.h"
#include "cnf.h"
#include "cnf/loaders.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/cnf_test_loaders_%d", (int)getpid());
    mkdir(dir, 0700);
}

static const char *write_bytes(const char *name, const void *b, size_t len)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    cr_assert_eq(fwrite(b, 1, len, fp), len);
    fclose(fp);
    return path;
}

static void expect_matrix(const cnf_data *D, size_t n, size_t d, const double *X)
{
    cr_assert_eq(D->n, n, "n = %zu, expected %zu", D->n, n);
    cr_assert_eq(D->d, d, "d = %zu, expected %zu", D->d, d);
    for (size_t i = 0; i < n * d; i++)
        cr_assert_eq(D->X[i], X[i], "element %zu: %.17g vs %.17g", i, D->X[i], X[i]);
}

TestSuite(loaders, .init = make_dir);

Test(loaders, csv_variants)
{
    const double X[] = {1, 2.5, -3e-2, 4, 5, 6};
    static const char *texts[] = {
        "1,2.5,-3e-2\n4,5,6\n",                       /* plain */
        "a,b,c\n1, 2.5 ,-0.03\n4,5,6",                /* header, spaces, no final newline */
        "# comment\r\n1\t2.5  -3e-2\r\n\r\n4 5 6\r\n", /* whitespace, CRLF, blank line */
        "\"x\",\"y\",\"z\"\n1,2.5,-3e-2\n4,5,6\n",    /* quoted header */
    };
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        cnf_data D;
        const char *p = write_bytes("good.csv", texts[k], strlen(texts[k]));
        cr_assert_eq(cnf_data_load(p, CNF_DATA_AUTO, &D), CNF_OK, "text %zu: %s", k, cnf_errmsg());
        expect_matrix(&D, 2, 3, X);
        cr_assert_not(D.integer);
        cnf_data_clear(&D);
    }
}

/* cnf_write_npy / cnf_write_csv output reads back bit for bit (17 digits in CSV). */
Test(loaders, writers_round_trip)
{
    double X[5 * 3];
    cnf_rng r;
    cnf_rng_seed(&r, 1);
    for (size_t i = 0; i < 15; i++)
        X[i] = cnf_rng_normal(&r) * 1e3;
    char p[512];
    cnf_data D;
    snprintf(p, sizeof p, "%s/w.npy", dir);
    cr_assert_eq(cnf_write_npy(p, X, 5, 3), CNF_OK);
    cr_assert_eq(cnf_data_load(p, CNF_DATA_AUTO, &D), CNF_OK, "%s", cnf_errmsg());
    expect_matrix(&D, 5, 3, X);
    cnf_data_clear(&D);
    snprintf(p, sizeof p, "%s/w.csv", dir);
    cr_assert_eq(cnf_write_csv(p, X, 5, 3), CNF_OK);
    cr_assert_eq(cnf_data_load(p, CNF_DATA_AUTO, &D), CNF_OK, "%s", cnf_errmsg());
    expect_matrix(&D, 5, 3, X);
    cnf_data_clear(&D);
}

/* Build a .npy of version v with dtype descr and shape text, data bytes appended. */
static size_t npy(unsigned char *out, int v, const char *descr, const char *shape,
                  const void *data, size_t dlen)
{
    char dict[200];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       descr, shape);
    size_t pre = v == 1 ? 10 : 12, hlen = (size_t)len + 1;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)v;
    out[7] = 0;
    for (size_t k = 0; k < pre - 8; k++)
        out[8 + k] = (unsigned char)(hlen >> (8 * k));
    memcpy(out + pre, dict, (size_t)len);
    out[pre + len] = '\n';
    memcpy(out + pre + hlen, data, dlen);
    return pre + hlen + dlen;
}

Test(loaders, npy_versions_dtypes_shapes)
{
    const double X[] = {1.5, -2, 3, 4e10, 5, 6};
    float Xf[6];
    for (int i = 0; i < 6; i++)
        Xf[i] = (float)X[i];
    unsigned char buf[512];
    for (int v = 1; v <= 3; v++) {
        cnf_data D;
        size_t len = npy(buf, v, "<f8", "(2, 3)", X, sizeof X);
        cr_assert_eq(cnf_data_load(write_bytes("a.npy", buf, len), CNF_DATA_AUTO, &D), CNF_OK,
                     "v%d: %s", v, cnf_errmsg());
        expect_matrix(&D, 2, 3, X);
        cnf_data_clear(&D);
        len = npy(buf, v, "<f4", "(2, 1, 3)", Xf, sizeof Xf);
        cr_assert_eq(cnf_data_load(write_bytes("b.npy", buf, len), CNF_DATA_AUTO, &D), CNF_OK,
                     "v%d f4: %s", v, cnf_errmsg());
        expect_matrix(&D, 2, 3, X);
        cr_assert_eq(D.height, 1);
        cr_assert_eq(D.width, 3);
        cnf_data_clear(&D);
        len = npy(buf, v, "<f8", "(6,)", X, sizeof X);
        cr_assert_eq(cnf_data_load(write_bytes("c.npy", buf, len), CNF_DATA_AUTO, &D), CNF_OK);
        expect_matrix(&D, 6, 1, X);
        cnf_data_clear(&D);
    }
}

static size_t idx(unsigned char *out, unsigned char type, const unsigned *dims, size_t ndim,
                  const unsigned char *data, size_t dlen)
{
    out[0] = out[1] = 0;
    out[2] = type;
    out[3] = (unsigned char)ndim;
    for (size_t i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++)
            out[4 + 4 * i + k] = (unsigned char)(dims[i] >> (8 * (3 - k)));
    memcpy(out + 4 + 4 * ndim, data, dlen);
    return 4 + 4 * ndim + dlen;
}

Test(loaders, idx_types_and_gzip)
{
    unsigned char buf[256];
    const unsigned dims[] = {2, 2, 3};
    const unsigned char u8[] = {0, 255, 3, 4, 5, 6, 7, 8, 9, 10, 11, 128};
    cnf_data D;
    size_t len = idx(buf, 0x08, dims, 3, u8, sizeof u8);
    cr_assert_eq(cnf_data_load(write_bytes("img-ubyte", buf, len), CNF_DATA_AUTO, &D), CNF_OK,
                 "%s", cnf_errmsg());
    const double U[] = {0, 255, 3, 4, 5, 6, 7, 8, 9, 10, 11, 128};
    expect_matrix(&D, 2, 6, U);
    cr_assert(D.integer);
    cr_assert_eq(D.height, 2);
    cr_assert_eq(D.width, 3);
    cnf_data_clear(&D);
    /* Signed 16-bit big-endian, 1-d (labels): n = 3, d = 1. */
    const unsigned char i16[] = {0xff, 0xfe, 0x01, 0x00, 0x00, 0x07};
    const unsigned d1[] = {3};
    len = idx(buf, 0x0B, d1, 1, i16, sizeof i16);
    cr_assert_eq(cnf_data_load(write_bytes("s.idx", buf, len), CNF_DATA_AUTO, &D), CNF_OK);
    expect_matrix(&D, 3, 1, (const double[]){-2, 256, 7});
    cnf_data_clear(&D);
    /* Big-endian float64 (0x0E). */
    const unsigned char f64[] = {0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0};
    const unsigned d2[] = {2, 1};
    len = idx(buf, 0x0E, d2, 2, f64, sizeof f64);
    cr_assert_eq(cnf_data_load(write_bytes("f.idx", buf, len), CNF_DATA_AUTO, &D), CNF_OK);
    expect_matrix(&D, 2, 1, (const double[]){1.5, -2});
    cnf_data_clear(&D);
    /* The same u8 images gzipped read back the same (as Fashion-MNIST ships them). */
    len = idx(buf, 0x08, dims, 3, u8, sizeof u8);
    bad_file e = {"img-ubyte.gz", (const char *)buf, len, 0, "", 1, 0, 0};
    char path[512];
    cr_assert_eq(bad_write(&e, dir, path, sizeof path), 0);
    cr_assert_eq(cnf_data_load(path, CNF_DATA_AUTO, &D), CNF_OK, "%s", cnf_errmsg());
    expect_matrix(&D, 2, 6, U);
    cnf_data_clear(&D);
}

/* Acceptance 3: every malformed file fails with its code, naming the file and the problem, and
 * leaves the output empty. */
Test(loaders, malformed_corpus)
{
    cr_assert_geq(N_BAD, 30, "the corpus has %d files", (int)N_BAD);
    for (size_t k = 0; k < N_BAD; k++) {
        const bad_file *e = &bad_corpus[k];
        char path[512];
        cr_assert_eq(bad_write(e, dir, path, sizeof path), 0, "writing %s", e->name);
        cnf_data D = {.n = 7};
        int rc = cnf_data_load(path, CNF_DATA_AUTO, &D);
        cr_assert_eq(rc, e->code, "%s: returned %s (%s), expected %s", e->name, cnf_strerror(rc),
                     cnf_errmsg(), cnf_strerror(e->code));
        cr_assert(strstr(cnf_errmsg(), e->phrase), "%s: message '%s' lacks '%s'", e->name,
                  cnf_errmsg(), e->phrase);
        cr_assert(strstr(cnf_errmsg(), e->name), "%s: message '%s' does not name the file",
                  e->name, cnf_errmsg());
        cr_assert(D.X == NULL && D.n == 0, "%s: output not cleared", e->name);
    }
}

/* A gzip stream that would inflate far beyond what its size allows is cut off, not allocated. */
Test(loaders, gzip_expansion_is_bounded)
{
    size_t big = 8u << 20; /* 8 MiB of zeros compress to about 8 KiB: ratio ~1000, allowed */
    char *zeros = calloc(big, 1);
    memcpy(zeros, "0\n", 2);
    for (size_t i = 2; i + 1 < big; i += 2)
        memcpy(zeros + i, "0\n", 2);
    bad_file e = {"zeros.csv.gz", zeros, big, 0, "", 1, 0, 0};
    char path[512];
    cr_assert_eq(bad_write(&e, dir, path, sizeof path), 0);
    cnf_data D;
    cr_assert_eq(cnf_data_load(path, CNF_DATA_AUTO, &D), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(D.n, big / 2);
    cr_assert_eq(D.d, 1);
    cnf_data_clear(&D);
    free(zeros);
}

Test(loaders, select_shuffle_dequantize)
{
    const char *t = "1,2,3\n4,5,6\n7,8,9\n10,11,12\n";
    cnf_data D;
    cr_assert_eq(cnf_data_load(write_bytes("s.csv", t, strlen(t)), CNF_DATA_AUTO, &D), CNF_OK);
    cr_assert(D.integer);
    const size_t cols[] = {2, 0};
    cr_assert_eq(cnf_data_select(&D, cols, 2), CNF_OK);
    expect_matrix(&D, 4, 2, (const double[]){3, 1, 6, 4, 9, 7, 12, 10});
    const size_t bad[] = {5};
    cr_assert_eq(cnf_data_select(&D, bad, 1), CNF_EINVAL);
    cr_assert(strstr(cnf_errmsg(), "column 5"));
    /* A permutation of the rows (each row intact), the same for the same seed. */
    double A[8], B[8];
    memcpy(A, D.X, sizeof A);
    memcpy(B, D.X, sizeof B);
    cnf_rng r1, r2;
    cnf_rng_seed(&r1, 9);
    cnf_rng_seed(&r2, 9);
    cnf_data_shuffle(A, 4, 2, &r1);
    cnf_data_shuffle(B, 4, 2, &r2);
    cr_assert_eq(memcmp(A, B, sizeof A), 0);
    double sum = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(A[2 * i], A[2 * i + 1] + 2, "row %d broken", i);
        sum += A[2 * i + 1];
    }
    cr_assert_eq(sum, 1 + 4 + 7 + 10);
    cnf_data_dequantize(A, 4, 2, &r1);
    for (int i = 0; i < 8; i++)
        cr_assert(A[i] >= B[i] && A[i] < B[i] + 1);
    cnf_data_clear(&D);
}

/* Messages name the file's line: a CSV row records its 1-based line (after a header, comments
 * and blank lines), and a header its names (quotes removed); select keeps both consistent. */
Test(loaders, csv_rows_know_their_lines_and_columns_their_names)
{
    const char *text = "# c\n\"w\",e,j\n\n1,2,3\n# x\n4,5,6\n7,8,9\n";
    cnf_data D;
    cr_assert_eq(cnf_data_parse(text, strlen(text), CNF_DATA_CSV, "t.csv", &D), CNF_OK, "%s",
                 cnf_errmsg());
    cr_assert_eq(D.n, 3);
    cr_assert(D.line && D.names, "a comment between rows: lines stored");
    cr_assert_eq(cnf_data_line(&D, 0), 4);
    cr_assert_eq(cnf_data_line(&D, 1), 6);
    cr_assert_eq(cnf_data_line(&D, 2), 7);
    cr_assert_str_eq(D.names[0], "w");
    cr_assert_str_eq(D.names[2], "j");
    const size_t cols[] = {2, 0};
    cr_assert_eq(cnf_data_select(&D, cols, 2), CNF_OK);
    cr_assert_str_eq(D.names[0], "j");
    cr_assert_str_eq(D.names[1], "w");
    cr_assert_eq(D.X[2], 6.0);
    cr_assert_eq(cnf_data_line(&D, 2), 7);
    cnf_data_clear(&D);
    const char *plain = "1 2\n3 4\n";
    cr_assert_eq(cnf_data_parse(plain, strlen(plain), CNF_DATA_CSV, "p", &D), CNF_OK);
    cr_assert_null(D.names, "no header, no names");
    cr_assert_null(D.line, "consecutive rows: no array");
    cr_assert_eq(cnf_data_line(&D, 1), 2);
    cnf_data_clear(&D);
}

/* Missing values: an error naming line and field by default; NaN with CNF_DATA_MISSING_NAN, and
 * cnf_data_drop_missing removes exactly those rows (lines and the integer flag follow). */
Test(loaders, missing_values_read_as_nan_on_request_and_dropped)
{
    const char *text = "a,b\n1,2\nNA,3\n4,\n5,nan\n6,?\n7,N/A\n8,9\n";
    cnf_data D;
    cr_assert_eq(cnf_data_parse(text, strlen(text), CNF_DATA_CSV, "m.csv", &D), CNF_EFORMAT);
    cr_assert(strstr(cnf_errmsg(), "m.csv: line 3, field 1"), "%s", cnf_errmsg());
    cr_assert_eq(cnf_data_parse_flags(text, strlen(text), CNF_DATA_CSV, CNF_DATA_MISSING_NAN,
                                      "m.csv", &D), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(D.n, 7);
    size_t r, c;
    cr_assert(cnf_data_missing(&D, &r, &c));
    cr_assert_eq(r, 1);
    cr_assert_eq(c, 0);
    size_t dropped;
    cr_assert_eq(cnf_data_drop_missing(&D, &dropped), CNF_OK);
    cr_assert_eq(dropped, 5);
    cr_assert_eq(D.n, 2);
    cr_assert_eq(D.X[2], 8.0);
    cr_assert_eq(cnf_data_line(&D, 1), 8);
    cr_assert(D.integer);
    cr_assert_not(cnf_data_missing(&D, &r, &c));
    cnf_data_clear(&D);
    /* Not a marker: still "not a number"; inf still not finite. */
    const char *bad = "1,x2\n";
    cr_assert_eq(cnf_data_parse_flags(bad, strlen(bad), CNF_DATA_CSV, CNF_DATA_MISSING_NAN, "b",
                                      &D), CNF_EFORMAT);
    const char *inf = "1,2\n1,inf\n";
    cr_assert_eq(cnf_data_parse_flags(inf, strlen(inf), CNF_DATA_CSV, CNF_DATA_MISSING_NAN, "i",
                                      &D), CNF_ENONFINITE);
}
