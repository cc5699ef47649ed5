/* Reading data sets from files (DESIGN.md §4): CSV, NumPy .npy and IDX (MNIST-style), each
 * optionally gzipped, into an (n, d) array of doubles; seeded row permutations for
 * train/validation/test splits; uniform dequantisation of integer data.
 *
 * Formats.
 *   CSV   one row per line; fields separated by commas (if the first data line holds a comma)
 *         or else by runs of spaces/tabs; an optional header line (every field non-numeric);
 *         blank lines and lines starting with '#' are skipped; CRLF is accepted. Every row must
 *         have the same number of fields, each a number strtod reads completely (C locale).
 *   .npy  versions 1.0, 2.0 and 3.0 of the format (https://numpy.org/neps/nep-0001-npy-format.html):
 *         dtype '<f8' or '<f4' (little-endian float64/float32), C order, shape (n,) → d = 1,
 *         (n, d), or (n, h, w, …) → d = h·w·… (with height/width set for 3 dimensions).
 *   IDX   MNIST's format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
 *         (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64), the number of dimensions,
 *         the dimensions as big-endian u32, then the big-endian data; n is the first dimension.
 *   A file starting with the gzip magic (1f 8b) is inflated first (zlib), whatever its format.
 *
 * Validation. Every size is checked against the bytes actually present before anything is
 * allocated: a header that declares more data than the file holds is "truncated", more bytes
 * than declared is "trailing data", and a gzip stream is inflated into a buffer that grows only
 * as output arrives, never past 1032 times the compressed size (deflate's maximum ratio) nor
 * CNF_DATA_MAX_BYTES. Errors: CNF_EIO (cannot open or read), CNF_EFORMAT (malformed: ragged
 * rows, non-numeric fields, bad magic, wrong dtype/order/shape, truncated, trailing data,
 * corrupt gzip), CNF_ENONFINITE (NaN or Inf), CNF_ENOMEM. cnf_errmsg() names the file and where:
 * "digits.csv: line 12, field 3: 'x7' is not a number", "a.npy: header byte 23: ...". */
#ifndef CNF_LOADERS_H
#define CNF_LOADERS_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest file (after inflating) the loaders accept: 4 GiB. */
#define CNF_DATA_MAX_BYTES ((size_t)1 << 32)

typedef enum cnf_data_format {
    CNF_DATA_AUTO = 0, /* by extension (.csv .txt .tsv .dat / .npy / .idx, *-ubyte), then content */
    CNF_DATA_CSV,
    CNF_DATA_NPY,
    CNF_DATA_IDX,
} cnf_data_format;

/* A loaded data set: n rows of d values. */
typedef struct cnf_data {
    double *X;            /* (n, d) row-major, owned; free with cnf_data_clear */
    size_t n, d;
    size_t height, width; /* image shape when the file has 3 dimensions (d = height·width), else 0 */
    int integer;          /* every value is an integer (counts, pixels): a hint to dequantise */
    size_t first_line;    /* CSV: the 1-based file line of row 0; 0 for the binary formats */
    size_t *line;         /* (n) CSV: the line of each row when the rows are not consecutive
                           * lines (comments or blank lines between them), else NULL (row i is
                           * on line first_line + i); see cnf_data_line */
    char **names;         /* (d) CSV: the header's column names (quotes removed); else NULL */
} cnf_data;

/* Flags of cnf_data_load_flags / cnf_data_parse_flags. */
enum {
    /* CSV: a missing value — an empty field, NA, N/A, NaN (any case) or ? — is read as NaN
     * instead of failing with CNF_EFORMAT; see cnf_data_missing and cnf_data_drop_missing. */
    CNF_DATA_MISSING_NAN = 1,
};

/* Read path in format fmt into *out. On failure *out is zeroed and nothing is allocated. */
CNF_API int cnf_data_load(const char *path, cnf_data_format fmt, cnf_data *out);
/* The same from memory (len bytes at buf; name is used in messages). fmt must not be AUTO for
 * content that is neither .npy nor IDX, which are recognised by their magic bytes. */
CNF_API int cnf_data_parse(const void *buf, size_t len, cnf_data_format fmt, const char *name,
                           cnf_data *out);
/* cnf_data_load / cnf_data_parse with flags (a combination of CNF_DATA_* flags above; 0 gives
 * the functions above). */
CNF_API int cnf_data_load_flags(const char *path, cnf_data_format fmt, unsigned flags,
                                cnf_data *out);
CNF_API int cnf_data_parse_flags(const void *buf, size_t len, cnf_data_format fmt, unsigned flags,
                                 const char *name, cnf_data *out);
/* Free out->X, out->line, out->names and zero *out (NULL is fine). */
CNF_API void cnf_data_clear(cnf_data *out);

/* Keep only the columns listed in cols (k indices < d, in that order): X becomes (n, k), and
 * names (if any) follow. CNF_EINVAL names an out-of-range index; *data is unchanged on failure. */
CNF_API int cnf_data_select(cnf_data *data, const size_t *cols, size_t k);

/* The first missing value (NaN, from CNF_DATA_MISSING_NAN) in row-major order: 1 with its row and
 * column in *row, *col, or 0 if there is none. */
CNF_API int cnf_data_missing(const cnf_data *data, size_t *row, size_t *col);
/* The file line of row (CSV, counted from 1), or 0 if the format has no lines. */
CNF_API size_t cnf_data_line(const cnf_data *data, size_t row);
/* Remove every row holding a missing value (NaN), keeping the order of the others (and their
 * lines); *dropped = the number removed; integer is recomputed on the rows kept. CNF_ENOMEM
 * (with *data unchanged) if the line numbers cannot be stored. */
CNF_API int cnf_data_drop_missing(cnf_data *data, size_t *dropped);

/* Shuffle the rows of X (n, d) in place by a Fisher–Yates permutation drawn from rng: the same
 * seed gives the same split on every machine. */
CNF_API void cnf_data_shuffle(double *X /* (n, d) */, size_t n, size_t d, cnf_rng *rng);

/* Uniform dequantisation (Theis et al. 2016; FFJORD): X += u, u ~ U[0, 1) per entry, from rng. */
CNF_API void cnf_data_dequantize(double *X /* (n, d) */, size_t n, size_t d, cnf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
