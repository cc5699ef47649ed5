/* The tangent rows of a hidden layer without ż (no reverse pass follows): ḣ = σ'(z) ⊙ (g ⊙ ẏ)
 * over K slabs of n rows (o units). Yt = NULL: g already holds ż, the same for every row (the
 * first layer's unit tangents). Written once and compiled per type (forward.c includes it with
 *     NAME  the kernel's name,
 *     T     double, or float in mixed precision (g rounded to float too: every operation has 16
 *           lanes),
 * and it #undefs them at its end). */
#if !defined(NAME) || !defined(T)
#error "define NAME and T before including tangent_lean_tmpl.c"
#endif

CNF_VECTOR_CLONES static void NAME(size_t n, size_t K, size_t o, const T *restrict g,
                                   const T *restrict ds, const T *restrict Yt,
                                   T *restrict Ht)
{
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const T *dsi = ds + i * o;
            T *hk = Ht + (k * n + i) * o;
            if (!Yt) {
                for (size_t j = 0; j < o; j++)
                    hk[j] = dsi[j] * g[j];
                continue;
            }
            const T *yk = Yt + (k * n + i) * o;
            for (size_t j = 0; j < o; j++)
                hk[j] = dsi[j] * (g[j] * yk[j]);
        }
}

#undef NAME
#undef T
