/* The reverse kernel's elementwise pass for the top layer, written once and compiled per output
 * type (backward.c includes it with
 *     NAME  the kernel's name,
 *     TO    ȳ's type: double, or float where mixed precision hands ȳ to sgemm,
 * and it #undefs them at its end): over the rows of seeds rs (n primal rows first), ȳ = g ⊙ r,
 * γ = Σ_rows r ⊙ y, and over the primal rows Σ r and Σ ȳ (all three (o) outputs zeroed here).
 * Compiled for each vector width (CNF_VECTOR_CLONES). */
#if !defined(NAME) || !defined(TO)
#error "define NAME and TO before including ybar_tmpl.c"
#endif

CNF_VECTOR_CLONES static void NAME(size_t n, size_t rows, size_t o,
                                   const double *restrict g, const double *restrict rs,
                                   const double *restrict Y, TO *restrict yb,
                                   double *restrict gam, double *restrict rsum,
                                   double *restrict ybsum)
{
    for (size_t j = 0; j < o; j++)
        gam[j] = rsum[j] = ybsum[j] = 0.0;
    for (size_t r = 0; r < n; r++) {
        const double *rr = rs + r * o, *yr = Y + r * o;
        TO *ybr = yb + r * o;
        for (size_t j = 0; j < o; j++) {
            double v = rr[j], u = g[j] * v;
            ybr[j] = (TO)u;
            gam[j] += v * yr[j];
            rsum[j] += v;
            ybsum[j] += u;
        }
    }
    for (size_t r = n; r < rows; r++) {
        const double *rr = rs + r * o, *yr = Y + r * o;
        TO *ybr = yb + r * o;
        for (size_t j = 0; j < o; j++) {
            double v = rr[j];
            ybr[j] = (TO)(g[j] * v);
            gam[j] += v * yr[j];
        }
    }
}

#undef NAME
#undef TO
