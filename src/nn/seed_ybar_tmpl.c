/* The reverse kernel's elementwise pass for a hidden layer, its seeds made on the fly from the
 * layer above's p, q_k (PQ: primal rows, then slab k): r = σ' ⊙ p + σ'' ⊙ Σ_k ż_k ⊙ q_k,
 * s_k = σ' ⊙ q_k, never stored; then as ybar_tmpl.c: ȳ = g ⊙ r, γ, Σ r, Σ ȳ. y + b and ż = g ⊙ ẏ
 * are formed again from the GEMM's rows Yf as the forward left them. acc: (o) scratch. The same
 * operations in the same order as forming the seeds first and running ybar_pass on them.
 * Written once and compiled per type (backward.c includes it with
 *     NAME  the kernel's name,
 *     T     the type of σ', σ'', the rows and p, q: double, or float in mixed precision (where
 *           sgemm made p, q),
 *     UNIT  1 (mixed precision only) for the first layer's unit tangents, whose ẏ (W's columns)
 *           and ż are double rows Ytd, Ztd; else 0,
 *     TO    ȳ's type (float where mixed precision hands ȳ to sgemm),
 * and it #undefs them at its end). */
#if !defined(NAME) || !defined(T) || !defined(UNIT) || !defined(TO)
#error "define NAME, T, UNIT and TO before including seed_ybar_tmpl.c"
#endif

CNF_VECTOR_CLONES static void NAME(
    size_t n, size_t K, size_t o, const double *restrict g, const double *restrict b,
    const T *restrict ds, const T *restrict d2s, const T *restrict Yf,
    const double *restrict Ytd, const double *restrict Ztd, const T *restrict pq,
    TO *restrict yb, double *restrict gam, double *restrict rsum, double *restrict ybsum,
    double *restrict acc)
{
    for (size_t j = 0; j < o; j++)
        gam[j] = rsum[j] = ybsum[j] = 0.0;
    for (size_t i = 0; i < n; i++) {
        const size_t r0 = i * o;
        for (size_t k = 0; k < K; k++) {
            const T *qk = pq + (1 + k) * n * o + r0;
            const T *yk = Yf + (1 + k) * n * o + r0;
            const double *zk = UNIT ? Ztd + k * n * o + r0 : NULL;
            for (size_t j = 0; j < o; j++) {
                double z = UNIT ? zk[j] : g[j] * (double)yk[j];
                acc[j] = k == 0 ? z * (double)qk[j] : acc[j] + z * (double)qk[j];
            }
        }
        if (!K)
            for (size_t j = 0; j < o; j++)
                acc[j] = 0.0;
        const T *dsi = ds + r0, *d2i = d2s + r0, *yr = Yf + r0;
        const T *p = pq + r0;
        TO *ybr = yb + r0;
        for (size_t j = 0; j < o; j++) {
            double v = (double)dsi[j] * (double)p[j] + (double)d2i[j] * acc[j],
                   u = g[j] * v;
            ybr[j] = (TO)u;
            gam[j] += v * ((double)yr[j] + b[j]);
            rsum[j] += v;
            ybsum[j] += u;
        }
    }
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const size_t r = ((1 + k) * n + i) * o;
            const T *dsi = ds + i * o, *yk = Yf + r;
            const T *qk = pq + r;
            const double *ytk = UNIT ? Ytd + (k * n + i) * o : NULL;
            TO *ybr = yb + r;
            for (size_t j = 0; j < o; j++) {
                double v = (double)dsi[j] * (double)qk[j];
                ybr[j] = (TO)(g[j] * v);
                gam[j] += v * (UNIT ? ytk[j] : (double)yk[j]);
            }
        }
}

#undef NAME
#undef T
#undef UNIT
#undef TO
