/* Option tables (see opts.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf/core.h"

#include "opts.h"

/* Which options the last parse saw, by address: small tables only. */
static const cli_opt *given[128];
static size_t n_given;

int cli_opt_given(const cli_opt *opts, const cli_opt *o)
{
    (void)opts;
    for (size_t i = 0; i < n_given; i++)
        if (given[i] == o)
            return 1;
    return 0;
}

int cli_opt_set(const char *cmd, const cli_opt *o, const char *value)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case OPT_STR:
        *(const char **)o->ptr = value;
        return 0;
    case OPT_FLAG:
        if (!strcmp(value, "1") || !strcmp(value, "true")) {
            *(int *)o->ptr = 1;
            return 0;
        }
        if (!strcmp(value, "0") || !strcmp(value, "false")) {
            *(int *)o->ptr = 0;
            return 0;
        }
        break;
    case OPT_SIZE:
    case OPT_U64: {
        if (*value == '-' || !*value)
            break;
        unsigned long long v = strtoull(value, &end, 10);
        if (*end || errno == ERANGE)
            break;
        if (o->kind == OPT_SIZE)
            *(size_t *)o->ptr = (size_t)v;
        else
            *(uint64_t *)o->ptr = (uint64_t)v;
        return 0;
    }
    case OPT_DOUBLE: {
        double v = strtod(value, &end);
        if (end == value || *end || errno == ERANGE || !isfinite(v))
            break;
        *(double *)o->ptr = v;
        return 0;
    }
    }
    fprintf(stderr, "cnf %s: %s needs %s, got '%s'\n", cmd, o->name,
            o->kind == OPT_DOUBLE ? "a finite number"
            : o->kind == OPT_FLAG ? "0 or 1"
                                  : "a non-negative integer",
            value);
    return 2;
}

const char *cli_opt_format(const cli_opt *o, char *buf, size_t len)
{
    switch (o->kind) {
    case OPT_STR:
        return *(const char **)o->ptr;
    case OPT_FLAG:
        snprintf(buf, len, "%d", *(int *)o->ptr);
        break;
    case OPT_SIZE:
        snprintf(buf, len, "%zu", *(size_t *)o->ptr);
        break;
    case OPT_U64:
        snprintf(buf, len, "%" PRIu64, *(uint64_t *)o->ptr);
        break;
    case OPT_DOUBLE:
        snprintf(buf, len, "%.17g", *(double *)o->ptr);
        break;
    }
    return buf;
}

void cli_opts_help(FILE *out, const cli_opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char left[64], val[64];
        snprintf(left, sizeof left, "%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        const char *def = cli_opt_format(&opts[i], val, sizeof val);
        if (opts[i].kind == OPT_DOUBLE)
            snprintf(val, sizeof val, "%g", *(double *)opts[i].ptr);
        if (opts[i].kind == OPT_FLAG || !def)
            fprintf(out, "  %-24s %s\n", left, opts[i].help);
        else
            fprintf(out, "  %-24s %s (default %s)\n", left, opts[i].help, def);
    }
}

int cli_opts_parse(const char *cmd, const cli_opt *opts, size_t n, int argc, char **argv,
                   void (*help)(FILE *))
{
    n_given = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help(stdout);
            return 1;
        }
        const cli_opt *o = NULL;
        const char *value = NULL;
        for (size_t k = 0; k < n && !o; k++) {
            size_t len = strlen(opts[k].name);
            if (strncmp(argv[i], opts[k].name, len))
                continue;
            if (argv[i][len] == '=') {
                value = argv[i] + len + 1;
                o = &opts[k];
            } else if (!argv[i][len]) {
                o = &opts[k];
                if (o->kind == OPT_FLAG)
                    value = "1";
                else if (i + 1 < argc)
                    value = argv[++i];
            }
        }
        if (!o) {
            fprintf(stderr, "cnf %s: unknown option '%s' (see cnf %s --help)\n", cmd, argv[i],
                    cmd);
            return 2;
        }
        if (!value) {
            fprintf(stderr, "cnf %s: %s needs a value\n", cmd, o->name);
            return 2;
        }
        if (cli_opt_set(cmd, o, value))
            return 2;
        if (n_given < sizeof given / sizeof *given)
            given[n_given++] = o;
    }
    return 0;
}

int cli_check_count(const char *cmd, const char *opt, size_t n, size_t each)
{
    size_t bytes = cnf_size_mul(n, each);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t mem = pages > 0 && page > 0 ? cnf_size_mul((size_t)pages, (size_t)page) : SIZE_MAX;
    if (bytes == SIZE_MAX) {
        fprintf(stderr, "cnf %s: %s %zu is too large: %zu x %zu bytes cannot be addressed\n", cmd,
                opt, n, n, each);
        return 2;
    }
    if (bytes > mem) {
        fprintf(stderr, "cnf %s: %s %zu is too large: it needs %.3g GB, more than this machine's "
                "%.3g GB of memory\n", cmd, opt, n, (double)bytes / 1e9, (double)mem / 1e9);
        return 2;
    }
    return 0;
}
