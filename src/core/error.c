/* Error codes and the per-thread detail message (see cnf/core.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static _Thread_local char errmsg[1024];

const char *cnf_strerror(int code)
{
    switch (code) {
    case CNF_OK: return "CNF_OK: success";
    case CNF_EINVAL: return "CNF_EINVAL: invalid argument";
    case CNF_ENOMEM: return "CNF_ENOMEM: out of memory";
    case CNF_EDIM: return "CNF_EDIM: dimensions do not match";
    case CNF_ENAME: return "CNF_ENAME: unknown name";
    case CNF_EIO: return "CNF_EIO: input/output error";
    case CNF_EFORMAT: return "CNF_EFORMAT: malformed input";
    case CNF_ENONFINITE: return "CNF_ENONFINITE: non-finite value";
    case CNF_ESTEP_UNDERFLOW: return "CNF_ESTEP_UNDERFLOW: ODE step size underflow";
    case CNF_EMAX_STEPS: return "CNF_EMAX_STEPS: too many ODE steps";
    case CNF_ERHS: return "CNF_ERHS: right-hand side failed";
    case CNF_ESOLVER: return "CNF_ESOLVER: ODE solver failure";
    case CNF_EUNSUPPORTED: return "CNF_EUNSUPPORTED: unsupported combination";
    case CNF_EDIVERGED: return "CNF_EDIVERGED: training diverged";
    default: return "unknown cnf error code";
    }
}

const char *cnf_errmsg(void) { return errmsg; }

const char *cnf_version(void) { return CNF_VERSION_STRING; }

/* Formatted into a local buffer first: callers may pass cnf_errmsg() itself as an argument (to
 * wrap an inner failure's detail), and vsnprintf's source and destination must not overlap. */
int cnf_fail(int code, const char *fmt, ...)
{
    char buf[sizeof errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(errmsg, buf, sizeof errmsg);
    return code;
}

/* The machine's physical memory in bytes (SIZE_MAX when unknown). */
static size_t physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? cnf_size_mul((size_t)pages, (size_t)page) : SIZE_MAX;
}

/* n·size bytes (at least 1), or 0 when they cannot be had: n·size overflows, or is more than the
 * machine's physical memory. Such a block would either fail in malloc anyway or, with the kernel
 * overcommitting, be granted and then kill the process when touched (and a sanitizer's allocator
 * aborts on it), so it is refused here, before malloc sees it. */
static size_t alloc_bytes(size_t n, size_t size)
{
    size_t bytes = cnf_size_mul(n ? n : 1, size ? size : 1);
    if (bytes == SIZE_MAX || (bytes > ((size_t)1 << 30) && bytes > physical_bytes()))
        return 0;
    return bytes;
}

void *cnf_calloc(size_t n, size_t size)
{
    if (!alloc_bytes(n, size))
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *cnf_realloc(void *p, size_t n, size_t size)
{
    size_t bytes = alloc_bytes(n, size);
    return bytes ? realloc(p, bytes) : NULL;
}

double cnf_wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
