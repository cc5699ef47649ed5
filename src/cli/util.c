/* Helpers shared by the `cnf` subcommands: JSON output and comma-separated option lists. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_check_output_path(const char *cmd, const char *opt, const char *path)
{
    if (!path)
        return 0;
    if (!*path) {
        fprintf(stderr, "cnf %s: %s: empty file name\n", cmd, opt);
        return 2;
    }
    struct stat st;
    if (path[strlen(path) - 1] == '/' || (stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        fprintf(stderr, "cnf %s: %s %s: is a directory, not a file name\n", cmd, opt, path);
        return 2;
    }
    /* The file is written as a temporary file in the same directory, then renamed over the
     * target: what matters is that the directory exists and can be written. */
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    char *dir = malloc(len + 1);
    if (!dir) {
        fprintf(stderr, "cnf %s: out of memory checking %s\n", cmd, opt);
        return 2;
    }
    memcpy(dir, slash ? path : ".", len);
    dir[len] = '\0';
    int bad = 0;
    const char *why = NULL;
    if (stat(dir, &st) != 0)
        bad = 1, why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        bad = 1, why = "not a directory";
    else if (access(dir, W_OK | X_OK) != 0)
        bad = 1, why = strerror(errno);
    if (bad)
        fprintf(stderr, "cnf %s: %s %s: cannot write into directory '%s': %s\n", cmd, opt, path,
                dir, why);
    free(dir);
    return bad ? 2 : 0;
}

void cli_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

void cli_json_number(FILE *out, double v)
{
    char buf[32];
    if (isfinite(v)) {
        /* The shortest of 15..17 digits that reads back as the same double. */
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(buf, sizeof buf, "%.*g", digits, v);
            if (strtod(buf, NULL) == v)
                break;
        }
        fputs(buf, out);
    } else
        fputs("null", out); /* JSON has no NaN or Inf */
}

/* The items of a comma-separated list, or NULL (message on stderr) if an item is empty. */
static char **split(const char *cmd, const char *opt, const char *arg, size_t *n)
{
    size_t count = 1, len = strlen(arg);
    for (const char *p = arg; *p; p++)
        count += *p == ',';
    char **items = calloc(count, sizeof *items);
    char *buf = malloc(len + 1);
    if (!items || !buf) {
        free(items);
        free(buf);
        fprintf(stderr, "cnf %s: out of memory reading %s\n", cmd, opt);
        return NULL;
    }
    memcpy(buf, arg, len + 1);
    char *p = buf;
    for (size_t i = 0; i < count; i++) {
        items[i] = p;
        char *comma = strchr(p, ',');
        if (comma)
            *comma = 0;
        if (!*items[i]) {
            fprintf(stderr, "cnf %s: %s '%s': empty item %zu in the comma-separated list\n",
                    cmd, opt, arg, i + 1);
            free(buf);
            free(items);
            return NULL;
        }
        p = comma ? comma + 1 : p + strlen(p);
    }
    *n = count;
    return items; /* items[0] is the start of buf: cli_free_list frees both */
}

void cli_free_list(char **items)
{
    if (items)
        free(items[0]);
    free(items);
}

int cli_parse_names(const char *cmd, const char *opt, const char *arg, char ***out, size_t *n)
{
    *out = split(cmd, opt, arg, n);
    return *out ? 0 : -1;
}

/* One list item into *dst, or -1 with a message on stderr. */
typedef int (*item_parser)(const char *cmd, const char *opt, const char *item, void *dst);

static int parse_double(const char *cmd, const char *opt, const char *item, void *dst)
{
    char *end;
    errno = 0;
    double v = strtod(item, &end);
    if (*end || errno || !isfinite(v)) {
        fprintf(stderr, "cnf %s: %s: '%s' is not a finite number\n", cmd, opt, item);
        return -1;
    }
    *(double *)dst = v;
    return 0;
}

static int parse_size(const char *cmd, const char *opt, const char *item, void *dst)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(item, &end, 10);
    if (*end || errno || item[0] == '-' || item[0] == '+' || v == 0 || v > SIZE_MAX) {
        fprintf(stderr, "cnf %s: %s: '%s' is not a positive integer\n", cmd, opt, item);
        return -1;
    }
    *(size_t *)dst = (size_t)v;
    return 0;
}

/* A list of n values of size bytes each, parsed item by item; *out NULL on failure. */
static int parse_list(const char *cmd, const char *opt, const char *arg, size_t size,
                      item_parser parse, void **out, size_t *n)
{
    char **items = split(cmd, opt, arg, n);
    *out = NULL;
    if (!items)
        return -1;
    char *v = calloc(*n, size);
    int rc = v ? 0 : -1;
    if (!v)
        fprintf(stderr, "cnf %s: out of memory reading %s\n", cmd, opt);
    for (size_t i = 0; !rc && i < *n; i++)
        rc = parse(cmd, opt, items[i], v + i * size);
    cli_free_list(items);
    if (rc)
        free(v);
    else
        *out = v;
    return rc;
}

int cli_parse_doubles(const char *cmd, const char *opt, const char *arg, double **out, size_t *n)
{
    void *v;
    int rc = parse_list(cmd, opt, arg, sizeof **out, parse_double, &v, n);
    *out = v;
    return rc;
}

int cli_parse_sizes(const char *cmd, const char *opt, const char *arg, size_t **out, size_t *n)
{
    void *v;
    int rc = parse_list(cmd, opt, arg, sizeof **out, parse_size, &v, n);
    *out = v;
    return rc;
}

int cli_option_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t len = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, len))
        return 0;
    if (a[len] == '=') {
        *value = a + len + 1;
        return 1;
    }
    if (a[len])
        return 0;
    if (*i + 1 >= argc) {
        *value = NULL;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
