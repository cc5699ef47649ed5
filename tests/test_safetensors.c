/* safetensors: round trip, byte-exact layout against the format's definition, every class of
 * malformed file, and atomic replacement. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnf/safetensors.h"

static char dir[64], path[128];

static void setup(void)
{
    strcpy(dir, "/tmp/cnf_st_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[400];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    chmod(dir, 0700);
    rmdir(dir);
}

TestSuite(safetensors, .init = setup, .fini = teardown);

/* File contents as a malloc'd buffer. */
static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *fp = fopen(p, "rb");
    cr_assert_not_null(fp, "cannot open %s", p);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    rewind(fp);
    unsigned char *b = malloc(*n + 1);
    cr_assert_eq(fread(b, 1, *n, fp), *n);
    fclose(fp);
    return b;
}

static void spit(const char *p, const void *b, size_t n)
{
    FILE *fp = fopen(p, "wb");
    cr_assert_not_null(fp);
    cr_assert_eq(fwrite(b, 1, n, fp), n);
    fclose(fp);
}

static void le64(unsigned char *b, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

/* A file from a header text (padded with spaces to a multiple of 8, as the format asks) and a
 * data section: returns its length. */
static size_t make_file(const char *p, const char *header, const void *data, size_t dlen)
{
    size_t h = strlen(header), hp = (h + 7) / 8 * 8;
    unsigned char *b = calloc(1, 8 + hp + dlen);
    le64(b, hp);
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', hp - h);
    if (dlen)
        memcpy(b + 8 + hp, data, dlen);
    spit(p, b, 8 + hp + dlen);
    free(b);
    return 8 + hp + dlen;
}

/* Little-endian float64 bytes of v. */
static void f64le(unsigned char *b, const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &v[i], 8);
        le64(b + 8 * i, u);
    }
}

static void write_or_fail(cnf_st_writer *w, const char *p)
{
    int rc = cnf_st_write(w, p);
    cr_assert_eq(rc, CNF_OK, "%s", cnf_errmsg());
}

Test(safetensors, round_trip_bits_shapes_and_metadata)
{
    cnf_st_writer *w;
    cr_assert_eq(cnf_st_writer_create(&w), CNF_OK);
    double a[6] = {1.5, -0.0, 1e-310, 3.141592653589793, -2e300, 7}, s = 42, n3[3] = {NAN, 1, INFINITY};
    size_t sa[2] = {2, 3}, se[2] = {4, 0}, s3[1] = {3};
    cr_assert_eq(cnf_st_writer_add(w, "layers.0.weight", 2, sa, a), CNF_OK);
    cr_assert_eq(cnf_st_writer_add(w, "scalar", 0, NULL, &s), CNF_OK);
    cr_assert_eq(cnf_st_writer_add(w, "empty", 2, se, NULL), CNF_OK);
    cr_assert_eq(cnf_st_writer_add(w, "specials", 1, s3, n3), CNF_OK);
    cr_assert_eq(cnf_st_writer_meta(w, "arch", "64-64-64"), CNF_OK);
    cr_assert_eq(cnf_st_writer_meta(w, "note", "quote \" backslash \\ tab\t nl\n bell\a é ∞"), CNF_OK);
    cr_assert_eq(cnf_st_writer_meta(w, "arch", "32-32"), CNF_OK); /* replaces */
    write_or_fail(w, path);
    cnf_st_writer_free(w);

    cnf_st_file *f;
    cr_assert_eq(cnf_st_read(path, 0, &f), CNF_OK, "%s", cnf_errmsg());
    cr_assert_eq(cnf_st_count(f), 4);
    const size_t *shape;
    size_t nd;
    const double *d;
    cr_assert_eq(cnf_st_get(f, "layers.0.weight", &shape, &nd, &d), CNF_OK);
    cr_assert(nd == 2 && shape[0] == 2 && shape[1] == 3);
    cr_assert(memcmp(d, a, sizeof a) == 0, "values changed bits");
    cr_assert_eq(cnf_st_get(f, "scalar", &shape, &nd, &d), CNF_OK);
    cr_assert(nd == 0 && d[0] == 42);
    cr_assert_eq(cnf_st_get(f, "empty", &shape, &nd, NULL), CNF_OK);
    cr_assert(nd == 2 && shape[0] == 4 && shape[1] == 0);
    cr_assert_eq(cnf_st_get(f, "specials", NULL, NULL, &d), CNF_OK);
    cr_assert(isnan(d[0]) && d[1] == 1 && isinf(d[2]));
    cr_assert_str_eq(cnf_st_dtype(f, "scalar"), "F64");
    cr_assert_str_eq(cnf_st_meta(f, "arch"), "32-32");
    cr_assert_str_eq(cnf_st_meta(f, "note"), "quote \" backslash \\ tab\t nl\n bell\a é ∞");
    cr_assert_null(cnf_st_meta(f, "missing"));
    cr_assert_eq(cnf_st_meta_count(f), 2);
    cr_assert_eq(cnf_st_get(f, "nope", NULL, NULL, NULL), CNF_ENAME);
    cr_assert(strstr(cnf_errmsg(), "nope") && strstr(cnf_errmsg(), path), "%s", cnf_errmsg());
    size_t want[2] = {3, 2};
    cr_assert_eq(cnf_st_get_shaped(f, "layers.0.weight", 2, want, &d), CNF_EDIM);
    cr_assert(strstr(cnf_errmsg(), "[2, 3]") && strstr(cnf_errmsg(), "[3, 2]"), "%s", cnf_errmsg());
    cr_assert_eq(cnf_st_get_shaped(f, "layers.0.weight", 2, sa, &d), CNF_OK);
    cnf_st_free(f);

    /* The same file with the finite check: the NaN is named. */
    cr_assert_eq(cnf_st_read(path, CNF_ST_FINITE, &f), CNF_ENONFINITE);
    cr_assert_null(f);
    cr_assert(strstr(cnf_errmsg(), "specials"), "%s", cnf_errmsg());
}

/* The bytes the format defines, built here from its rules: header length, compact JSON with
 * __metadata__ first and tensors sorted by name, space padding to 8, contiguous little-endian
 * data in that order. */
Test(safetensors, layout_is_the_reference_layout)
{
    double b[3] = {1, 2, 3}, a[2] = {-1.25, 0.5};
    size_t sb[2] = {3, 1}, sa[1] = {2};
    cnf_st_writer *w;
    cnf_st_writer_create(&w);
    cnf_st_writer_add(w, "b", 2, sb, b); /* added first, written second */
    cnf_st_writer_add(w, "a", 1, sa, a);
    cnf_st_writer_meta(w, "z", "1");
    cnf_st_writer_meta(w, "format", "pt");
    write_or_fail(w, path);
    cnf_st_writer_free(w);

    char header[512];
    snprintf(header, sizeof header,
             "{\"__metadata__\":{\"format\":\"pt\",\"z\":\"1\"},"
             "\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,%d]},"
             "\"b\":{\"dtype\":\"F64\",\"shape\":[3,1],\"data_offsets\":[%d,%d]}}",
             16, 16, 16 + 24);
    unsigned char data[40];
    f64le(data, a, 2);
    f64le(data + 16, b, 3);
    char expect_path[160];
    snprintf(expect_path, sizeof expect_path, "%s/expect.safetensors", dir);
    size_t n_expect = make_file(expect_path, header, data, sizeof data), n_got;
    unsigned char *expect = slurp(expect_path, &n_expect), *got = slurp(path, &n_got);
    cr_assert_eq(n_got, n_expect);
    cr_assert((8 + strlen(header) + 7) / 8 * 8 == n_got - sizeof data, "padding to 8");
    cr_assert(memcmp(got, expect, n_got) == 0, "bytes differ from the reference layout");
    free(expect);
    free(got);
}

Test(safetensors, reads_f32_and_any_key_order)
{
    /* Written by hand as another writer might: F32, fields reordered, whitespace, escapes. */
    float v[3] = {0.5f, -3.25f, 1e-3f};
    unsigned char data[12];
    for (int i = 0; i < 3; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++)
            data[4 * i + k] = (unsigned char)(u >> (8 * k));
    }
    make_file(path,
              "{ \"w\\u00e9\\ud83d\\ude00\" : { \"shape\" : [ 3 ], \"data_offsets\" : [0, 12],"
              " \"dtype\" : \"F32\" },\n \"__metadata__\" : { \"k\\/\" : \"v\\n\" } }",
              data, sizeof data);
    cnf_st_file *f;
    cr_assert_eq(cnf_st_read(path, CNF_ST_FINITE, &f), CNF_OK, "%s", cnf_errmsg());
    const double *d;
    cr_assert_eq(cnf_st_get(f, "w\xc3\xa9\xf0\x9f\x98\x80", NULL, NULL, &d), CNF_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(d[i], (double)v[i]);
    cr_assert_str_eq(cnf_st_dtype(f, cnf_st_name(f, 0)), "F32");
    cr_assert_str_eq(cnf_st_meta(f, "k/"), "v\n");
    cnf_st_free(f);
}

/* Reading path must fail with code, and the detail must name the file and contain `what`
 * (code CNF_OK: must succeed, the control for a family of bad variants). */
static void expect_error(int code, const char *what)
{
    cnf_st_file *f = (cnf_st_file *)1;
    int rc = cnf_st_read(path, 0, &f);
    cr_assert_eq(rc, code, "expected %s for '%s', got %d (%s)", cnf_strerror(code), what, rc,
                 cnf_errmsg());
    if (code == CNF_OK) {
        cr_assert_not_null(f);
        cnf_st_free(f);
        return;
    }
    cr_assert_null(f);
    cr_assert(strstr(cnf_errmsg(), path), "detail does not name the file: %s", cnf_errmsg());
    cr_assert(strstr(cnf_errmsg(), what), "detail '%s' does not say '%s'", cnf_errmsg(), what);
}

#define T1 "\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}"

/* A one-tensor header variant with 16 bytes of data. */
static void bad_header(const char *header, int code, const char *what)
{
    double v[2] = {1, 2};
    unsigned char data[16];
    f64le(data, v, 2);
    make_file(path, header, data, sizeof data);
    expect_error(code, what);
}

Test(safetensors, malformed_json_is_rejected)
{
    bad_header("{" T1 "}", CNF_OK, ""); /* the control: valid */
    bad_header("[" T1 "]", CNF_EFORMAT, "JSON object");
    bad_header("{" T1, CNF_EFORMAT, "expected ',' or '}'");
    bad_header("{" T1 ",}", CNF_EFORMAT, "expected '\"'");
    bad_header("{" T1 "}x", CNF_EFORMAT, "after the header object");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[02],\"data_offsets\":[0,16]}}", CNF_EFORMAT,
               "leading zero");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[-2],\"data_offsets\":[0,16]}}", CNF_EFORMAT,
               "non-negative integer");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[2.0],\"data_offsets\":[0,16]}}", CNF_EFORMAT,
               "fraction");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[99999999999999999999],\"data_offsets\":[0,16]}}",
               CNF_EFORMAT, "too large");
    bad_header("{\"t\\q\":{}}", CNF_EFORMAT, "invalid escape");
    bad_header("{\"t\\ud800\":{}}", CNF_EFORMAT, "surrogate");
    bad_header("{\"t\x01\":{}}", CNF_EFORMAT, "control character");
    bad_header("{\"t\xff\":{}}", CNF_EFORMAT, "UTF-8");
    bad_header("{" T1 "," T1 "}", CNF_EFORMAT, "appears twice");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
               CNF_EFORMAT, "repeated field");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16],\"x\":1}}",
               CNF_EFORMAT, "unknown or repeated field 'x'");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[2]}}", CNF_EFORMAT, "lacks");
    bad_header("{\"__metadata__\":{\"k\":1}," T1 "}", CNF_EFORMAT, "strings to strings");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16,32]}}",
               CNF_EFORMAT, "too many");
    /* Deep nesting is refused at the first level the schema does not allow: no recursion. */
    char deep[4096] = "{\"t\":";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "[");
    bad_header(deep, CNF_EFORMAT, "expected '{'");
}

Test(safetensors, wrong_dtype_sizes_and_ranges)
{
    bad_header("{\"t\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", CNF_EFORMAT,
               "dtype 'I64'");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,16]}}", CNF_EFORMAT,
               "need 24 bytes");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[0,32]}}", CNF_EFORMAT,
               "beyond the 16-byte data section");
    bad_header("{\"t\":{\"dtype\":\"F64\",\"shape\":[0],\"data_offsets\":[16,8]}}", CNF_EFORMAT,
               "decrease");
    bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}",
               CNF_EFORMAT, "overlap");
    bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", CNF_EFORMAT,
               "unused bytes before tensor 'a'");
    bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", CNF_EFORMAT,
               "8 bytes after the last tensor");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", CNF_OK, "");
    bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,16]}}",
               CNF_EFORMAT, "overflows");
}

Test(safetensors, truncated_and_corrupt_lengths)
{
    double v[4] = {1, 2, 3, 4};
    size_t s[1] = {4}, n;
    cnf_st_writer *w;
    cnf_st_writer_create(&w);
    cnf_st_writer_add(w, "t", 1, s, v);
    write_or_fail(w, path);
    cnf_st_writer_free(w);
    unsigned char *b = slurp(path, &n);
    spit(path, b, n - 5); /* truncated inside the data */
    expect_error(CNF_EFORMAT, "beyond");
    spit(path, b, 30); /* truncated inside the header */
    expect_error(CNF_EFORMAT, "does not fit");
    spit(path, b, 5);
    expect_error(CNF_EFORMAT, "too short");
    unsigned char *c = malloc(n);
    memcpy(c, b, n);
    le64(c, (uint64_t)1 << 62); /* corrupted header length */
    spit(path, c, n);
    expect_error(CNF_EFORMAT, "header length");
    memcpy(c, b, n);
    c[0] -= 8; /* shorter header: the JSON is cut */
    spit(path, c, n);
    expect_error(CNF_EFORMAT, "bad safetensors header");
    free(b);
    free(c);
    unlink(path);
    expect_error(CNF_EIO, "cannot open");
}

Test(safetensors, writer_rejects_bad_names)
{
    cnf_st_writer *w;
    cnf_st_writer_create(&w);
    double v = 1;
    cr_assert_eq(cnf_st_writer_add(w, "x", 0, NULL, &v), CNF_OK);
    cr_assert_eq(cnf_st_writer_add(w, "x", 0, NULL, &v), CNF_EINVAL);
    cr_assert_eq(cnf_st_writer_add(w, "__metadata__", 0, NULL, &v), CNF_EINVAL);
    cr_assert_eq(cnf_st_writer_add(w, "", 0, NULL, &v), CNF_EINVAL);
    cr_assert_eq(cnf_st_writer_add(w, "bad\xc3", 0, NULL, &v), CNF_EINVAL);
    cr_assert_eq(cnf_st_writer_add(w, "y", 0, NULL, NULL), CNF_EINVAL);
    cr_assert_eq(cnf_st_writer_meta(w, "k", "\xed\xa0\x80"), CNF_EINVAL); /* a surrogate */
    cnf_st_writer_free(w);
    cnf_st_writer_free(NULL);
    cnf_st_free(NULL);
}

/* The previous model file, byte for byte, and no temporary file left behind. */
static void assert_previous_intact(const unsigned char *old, size_t n_old)
{
    size_t n;
    unsigned char *now = slurp(path, &n);
    cr_assert(n == n_old && memcmp(now, old, n) == 0, "the previous file was changed");
    free(now);
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t entries = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            cr_assert(!strstr(e->d_name, ".tmp."), "left behind: %s", e->d_name);
        }
    closedir(d);
    cr_assert_eq(entries, 1);
}

static cnf_st_writer *writer_of(size_t count, double fill)
{
    cnf_st_writer *w;
    cnf_st_writer_create(&w);
    double *v = malloc(count * sizeof *v);
    for (size_t i = 0; i < count; i++)
        v[i] = fill;
    cnf_st_writer_add(w, "theta", 1, &count, v);
    free(v);
    return w;
}

Test(safetensors, failed_write_keeps_previous_file)
{
    cnf_st_writer *small = writer_of(4, 1.0), *big = writer_of(100000, 2.0);
    write_or_fail(small, path);
    size_t n_old;
    unsigned char *old = slurp(path, &n_old);
    /* Writes beyond 64 KiB fail with EFBIG: the 800 kB model cannot be written. Criterion runs
     * each test in its own process, so the limit stays here. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {65536, 65536};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_eq(cnf_st_write(big, path), CNF_EIO);
    cr_assert(strstr(cnf_errmsg(), path) && strstr(cnf_errmsg(), "previous file left unchanged"),
              "%s", cnf_errmsg());
    assert_previous_intact(old, n_old);
    /* A target that cannot be replaced (a directory in its place) fails at rename. */
    char sub[200];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(cnf_st_write(small, sub), CNF_EIO);
    cr_assert(strstr(cnf_errmsg(), "rename"), "%s", cnf_errmsg());
    rmdir(sub);
    assert_previous_intact(old, n_old);
    /* A directory that does not exist. */
    char gone[200];
    snprintf(gone, sizeof gone, "%s/no/such/dir/m.safetensors", dir);
    cr_assert_eq(cnf_st_write(small, gone), CNF_EIO);
    cr_assert(strstr(cnf_errmsg(), gone), "%s", cnf_errmsg());
    free(old);
    cnf_st_writer_free(small);
    cnf_st_writer_free(big);
}

Test(safetensors, unwritable_directory_keeps_previous_file)
{
    if (geteuid() == 0)
        cr_skip_test("running as root: directory permissions do not bind root");
    cnf_st_writer *a = writer_of(4, 1.0), *b = writer_of(4, 3.0);
    write_or_fail(a, path);
    size_t n_old;
    unsigned char *old = slurp(path, &n_old);
    cr_assert_eq(chmod(dir, 0500), 0);
    cr_assert_eq(cnf_st_write(b, path), CNF_EIO);
    cr_assert(strstr(cnf_errmsg(), "temporary"), "%s", cnf_errmsg());
    chmod(dir, 0700);
    assert_previous_intact(old, n_old);
    free(old);
    cnf_st_writer_free(a);
    cnf_st_writer_free(b);
}
