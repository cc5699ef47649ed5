/* The fused elementwise pass of one hidden layer over n primal rows (o units):
 *     z = g ⊙ (y + b) + ct;  h, σ', σ'' = σ(z), σ'(z), σ''(z)
 * written once and compiled per activation and row type (act.c includes it once per kernel, with
 *     NAME  the kernel's name,
 *     ACT   the activation: act_tanh, act_softplus, act_elu or act_swish (act.c),
 *     T     the rows' type: double, or float in mixed precision,
 * and it #undefs them at its end); one function per activation so that each loop vectorizes.
 * D2 = NULL when no reverse pass follows (cnf_mlp_work_set_keep(w, 0)): then only h and σ' (for
 * the tangents) are stored. Neither y + b nor z is stored: the reverse pass forms y + b (for the
 * gate's gradient) from the GEMM's y, left in place. T = float: y is sgemm's row, h goes straight
 * into the next layer's float input and σ', σ'' are kept in float (tanh there has its own
 * all-float pass, tanh_rows_f in act.c). */
#if !defined(NAME) || !defined(ACT) || !defined(T)
#error "define NAME, ACT and T before including act_rows_tmpl.c"
#endif

CNF_VECTOR_CLONES static void NAME(size_t n, size_t o, const double *restrict b,
                                   const double *restrict g, const double *restrict ct,
                                   const T *restrict Y, T *restrict H, T *restrict D1,
                                   T *restrict D2)
{
    for (size_t i = 0; i < n; i++) {
        const T *y = Y + i * o;
        T *h = H + i * o, *d1 = D1 + i * o, *d2 = D2 ? D2 + i * o : NULL;
        if (d2) {
            for (size_t j = 0; j < o; j++) {
                double zj = g[j] * ((double)y[j] + b[j]) + ct[j], hj, aj, bj;
                ACT(zj, &hj, &aj, &bj);
                h[j] = (T)hj;
                d1[j] = (T)aj;
                d2[j] = (T)bj;
            }
        } else {
            for (size_t j = 0; j < o; j++) {
                double zj = g[j] * ((double)y[j] + b[j]) + ct[j], hj, aj, bj;
                ACT(zj, &hj, &aj, &bj);
                h[j] = (T)hj;
                d1[j] = (T)aj;
            }
        }
    }
}

#undef NAME
#undef ACT
#undef T
