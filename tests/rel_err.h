/* max_i |a_i − b_i| / max_i |b_i| (1 in the denominator when b is all zeros): the agreement
 * measure of the threads and mixed-precision tests. */
#ifndef CNF_TESTS_REL_ERR_H
#define CNF_TESTS_REL_ERR_H

#include <math.h>
#include <stddef.h>

static inline double rel(const double *a, const double *b, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return e / (s > 0 ? s : 1);
}

#endif
