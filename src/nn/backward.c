/* The reverse kernel (DESIGN.md §2): seeds r (on z_L) and s_k (on ż_L) back through the rows a
 * forward call left in the work (forward.c), for cnf_mlp_backward, on one work or over the
 * chunks of a threaded one with a fixed-order reduction of their parameter gradients.
 *
 * For layer l = L..1:
 *   ȳ = g ⊙ r,  ẏ̄_k = g ⊙ s_k;   ∇W += ȳ h_{l−1}ᵀ + Σ_k ẏ̄_k ḣ_{l−1,k}ᵀ;  ∇b += ȳ;  ∇c += t r
 *   γ = r ⊙ y + Σ_k s_k ⊙ ẏ_k;   ∇w^g += t g(1−g) γ;  ∇b^g += g(1−g) γ
 *   p = Wᵀ ȳ, q_k = Wᵀ ẏ̄_k;  r ← σ'(z) ⊙ p + σ''(z) ⊙ Σ_k ż_k ⊙ q_k,  s_k ← σ'(z) ⊙ q_k
 * The time derivative: ∂z/∂t = c + g(1−g) w^g ⊙ y and ∂ż_k/∂t = g(1−g) w^g ⊙ ẏ_k, so
 * ∂φ/∂t = Σ_l [ Σ_i r_i·c + (g(1−g) w^g)·γ ]. */
#include <string.h>

#include "mlp_impl.h"
#include "products.h"

CNF_VECTOR_CLONES static void add_to(double *restrict dst, const double *restrict src,
                                     size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

CNF_VECTOR_CLONES static void add_float(double *restrict dst, const float *restrict src,
                                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += (double)src[i];
}

/* ∇W (out, in) += Ȳᵀ (M, out) · In (M, in) for the first M rows of the layer's forward input
 * (= with fresh). In mixed precision Ȳ's float copy is af, made here unless have_af says it is
 * there. */
static void layer_grad_w(const cnf_mlp *m, cnf_mlp_work *w, size_t l, size_t M,
                         const double *Yb, int have_af, const double *In, double *gW, int fresh)
{
    const size_t in = m->layer[l].in, o = m->layer[l].out;
    if (!w->Xf) {
        cnf_gemm(1, 0, o, in, M, 1.0, Yb, o, In, in, fresh ? 0.0 : 1.0, gW, in);
        return;
    }
    if (!have_af)
        to_float(w->af, Yb, M * o);
    sgemm(1, 0, o, in, M, w->af, o, w->Xf[l], in, w->gwf, in);
    if (fresh)
        to_double(gW, w->gwf, o * in);
    else
        add_float(gW, w->gwf, o * in);
}

/* P (M, in) = Ȳ (M, out) · W_l; in mixed precision into cf (float), from af (made here from Yb
 * unless have_af). */
static void layer_back(const cnf_mlp *m, cnf_mlp_work *w, const cnf_mlp_work *pw, size_t l,
                       size_t M, const double *Yb, int have_af, const double *W, double *P)
{
    const size_t in = m->layer[l].in, o = m->layer[l].out;
    if (!w->Xf) {
        cnf_gemm(0, 0, M, in, o, 1.0, Yb, o, W, in, 0.0, P, in);
        return;
    }
    if (!have_af)
        to_float(w->af, Yb, M * o);
    sgemm(0, 0, M, in, o, w->af, o, pw->Wf[l], in, w->cf, in);
}

/* The elementwise passes: ybar_tmpl.c (top layer) and seed_ybar_tmpl.c (hidden layers). */
#define NAME ybar_pass
#define TO double
#include "ybar_tmpl.c"
#define NAME ybar_pass_f
#define TO float
#include "ybar_tmpl.c"
#define NAME seed_ybar_pass
#define T double
#define UNIT 0
#define TO double
#include "seed_ybar_tmpl.c"
#define NAME seed_ybar_pass_f
#define T float
#define UNIT 0
#define TO float
#include "seed_ybar_tmpl.c"
#define NAME seed_ybar_pass_fu
#define T float
#define UNIT 1
#define TO float
#include "seed_ybar_tmpl.c"
#define NAME seed_ybar_pass_fud
#define T float
#define UNIT 1
#define TO double
#include "seed_ybar_tmpl.c"

/* CNF_OK when w holds a forward call on m and the seed and gradient row strides fit, else the
 * error, named. */
static int check_backward(const cnf_mlp *m, const cnf_mlp_work *w, const double *R, size_t ldr,
                          const double *GX, size_t ldgx)
{
    if (!w || w->m != m)
        return cnf_fail(CNF_EINVAL, "cnf_mlp_backward needs a workspace filled by a forward "
                        "call on the same MLP");
    if (R && ldr < m->cfg.d_out)
        return cnf_fail(CNF_EDIM, "seed row stride %zu < output dimension %zu", ldr,
                        m->cfg.d_out);
    if (GX && ldgx < m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "gradient row stride %zu < input dimension %zu", ldgx,
                        m->cfg.d_in);
    return CNF_OK;
}

/* *g += v, or *g = v for a fresh gradient slot. */
static inline void put_grad(double *g, double v, int fresh)
{
    *g = fresh ? v : *g + v;
}

/* The reverse kernel on one single-thread work; slab k of S starts at S + k·lds. fresh: gtheta
 * is written, not added to (every entry). */
static int backward1(const cnf_mlp *m, const double *theta, const double *R, size_t ldr,
                     const double *S, size_t lds, double *GX, size_t ldgx, double *gtheta,
                     int fresh, double *gt, cnf_mlp_work *w, const cnf_mlp_work *pw)
{
    int rc = check_backward(m, w, R, ldr, GX, ldgx);
    if (rc)
        return rc;
    const size_t n = w->n;
    if (n == 0) {
        if (gtheta && fresh)
            memset(gtheta, 0, m->n_params * sizeof(double));
        return CNF_OK;
    }
    if (!pw) /* a call on w alone (not a chunk): the weights its forward call prepared */
        pw = w;
    /* Without tangent seeds the tangent rows carry nothing back: run over the primal rows only.
     * (r still needs no ż terms then, since every q_k is zero.) */
    const size_t K = S ? w->K : 0, rows = n * (1 + K);
    const double t = w->t;

    /* rs = seeds on z_L: primal rows r, then the tangent slabs s_k; below the top layer the
     * seeds are made inside seed_ybar_pass from pq = (p, q_k) of the layer above. Mixed
     * precision: ȳ goes straight to float (af) for sgemm, p and q come back in float (cf). */
    double *rs = w->buf_a, *yb = w->buf_b, *pq = w->buf_c;
    const int mixed = w->Xf != NULL;
    const size_t dout = m->cfg.d_out;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < dout; j++)
            rs[i * dout + j] = R ? R[i * ldr + j] : 0.0;
    for (size_t k = 0; k < K; k++)
        memcpy(rs + (1 + k) * n * dout, S + k * lds, n * dout * sizeof(double));

    for (size_t l = m->L; l-- > 0;) {
        const struct layer *ly = &m->layer[l];
        const size_t o = ly->out, in = ly->in;
        const double *W = theta + ly->W, *g = w->G[l], *Y = w->Y[l];
        const int first = (l == 0);
        const double *Hin = first ? w->X0 : w->H[l - 1];
        const int unit_cols = first && w->unit && K && gtheta; /* ∇W's unit-tangent columns */
        /* ȳ in double: always, but in mixed precision only for those columns' sums. */
        const int yb_double = !mixed || unit_cols;

        /* One pass over the rows: ȳ = g ⊙ r (all rows), γ = Σ r ⊙ y, and the column sums of the
         * primal r and ȳ for ∇b, ∇c and ∂φ/∂t. */
        double *gam = w->gamma, *rsum = gam + o, *ybsum = rsum + o, *acc = ybsum + o;
        if (l + 1 == m->L) {
            if (yb_double)
                ybar_pass(n, rows, o, g, rs, Y, yb, gam, rsum, ybsum);
            else
                ybar_pass_f(n, rows, o, g, rs, Y, w->af, gam, rsum, ybsum);
        } else {
            const double *ds = w->DS[l], *d2s = w->D2S[l];
            const double *Zt = w->Z[l] ? w->Z[l] + n * o : NULL; /* mixed: unit tangents' ż */
            /* Mixed precision: what run_forward kept in float in the same buffers. */
            const float *dsf = (const float *)ds, *d2f = (const float *)d2s,
                        *Yf = (const float *)Y;
            const double *bl = theta + ly->b;
            if (!mixed)
                seed_ybar_pass(n, K, o, g, bl, ds, d2s, Y, NULL, NULL, pq, yb, gam, rsum, ybsum,
                               acc);
            else if (!(first && w->unit))
                seed_ybar_pass_f(n, K, o, g, bl, dsf, d2f, Yf, NULL, NULL, w->cf, w->af, gam,
                                 rsum, ybsum, acc);
            else if (yb_double)
                seed_ybar_pass_fud(n, K, o, g, bl, dsf, d2f, Yf, Y + n * o, Zt, w->cf, yb, gam,
                                   rsum, ybsum, acc);
            else
                seed_ybar_pass_fu(n, K, o, g, bl, dsf, d2f, Yf, Y + n * o, Zt, w->cf, w->af,
                                  gam, rsum, ybsum, acc);
        }
        if (gtheta || gt) {
            for (size_t j = 0; j < o; j++) {
                double gg = ly->wg != ABSENT ? g[j] * (1.0 - g[j]) * gam[j] : 0.0;
                if (gtheta) {
                    put_grad(gtheta + ly->b + j, ybsum[j], fresh);
                    if (ly->c != ABSENT)
                        put_grad(gtheta + ly->c + j, t * rsum[j], fresh);
                    if (ly->wg != ABSENT) {
                        put_grad(gtheta + ly->wg + j, t * gg, fresh);
                        put_grad(gtheta + ly->bg + j, gg, fresh);
                    }
                }
                if (gt) {
                    if (ly->c != ABSENT)
                        *gt += rsum[j] * theta[ly->c + j];
                    if (ly->wg != ABSENT)
                        *gt += gg * theta[ly->wg + j];
                }
            }
        }
        int have_af = mixed && !yb_double; /* mixed: af holds ȳ of all rows in float */
        if (gtheta) {
            /* ∇W += ȳᵀ h_{l−1} over all rows (primal and tangents) in one GEMM. */
            if (unit_cols) {
                layer_grad_w(m, w, l, n, yb, 0, Hin, gtheta + ly->W, fresh);
                for (size_t k = 0; k < K; k++)
                    for (size_t i = 0; i < n; i++) {
                        const double *yk = yb + ((1 + k) * n + i) * o;
                        for (size_t j = 0; j < o; j++)
                            gtheta[ly->W + j * in + k] += yk[j];
                    }
            } else {
                layer_grad_w(m, w, l, rows, yb, have_af, Hin, gtheta + ly->W, fresh);
                have_af = mixed;
            }
        }
        if (first && !GX)
            break;
        /* p, q_k = Wᵀ ȳ, Wᵀ ẏ̄_k: rows × in (pq, or cf in mixed precision). */
        layer_back(m, w, pw, l, rows, yb, have_af, W, pq);
        if (first) {
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < in; j++)
                    GX[i * ldgx + j] += mixed ? (double)w->cf[i * in + j] : pq[i * in + j];
            break;
        }
    }
    return CNF_OK;
}

static void backward_chunk(void *arg, size_t c, size_t thread)
{
    (void)thread; /* chunk c's state is in sub[c], whoever runs it */
    cnf_mlp_work *w = arg;
    const struct task *tk = w->task;
    const cnf_mlp *m = tk->m;
    const size_t d = m->cfg.d_out, n = w->n;
    size_t i0, i1;
    cnf_nn_chunk_rows(n, w->nch, c, &i0, &i1);
    /* Chunk 0 accumulates into gtheta itself; chunk c ≥ 1 writes its own slot, every entry
     * (fresh: no zeroing pass first). */
    double *g = !tk->gtheta ? NULL : c == 0 ? tk->gtheta : w->gpart + c * m->n_params;
    w->gtpart[c] = 0.0;
    w->rcpart[c] =
        backward1(m, tk->theta, tk->R ? tk->R + i0 * tk->ldr : NULL, tk->ldr,
                  tk->S ? tk->S + i0 * d : NULL, n * d, tk->GX ? tk->GX + i0 * tk->ldgx : NULL,
                  tk->ldgx, g, c > 0, tk->want_gt ? &w->gtpart[c] : NULL, w->sub[c], w);
}

/* Slice c of ns of the chunk gradients' reduction into gtheta (cnf_mlp_backward). */
static void reduce_slice_of(cnf_mlp_work *w, size_t c, size_t ns)
{
    const struct task *tk = w->task;
    const size_t P = tk->m->n_params, j0 = P * c / ns, j1 = P * (c + 1) / ns;
    for (size_t ch = 1; ch < w->nch; ch++)
        add_to(tk->gtheta + j0, w->gpart + ch * P + j0, j1 - j0);
}

static void reduce_slice(void *arg, size_t c, size_t thread)
{
    (void)thread;
    cnf_mlp_work *w = arg;
    reduce_slice_of(w, c, w->threads);
}

int cnf_mlp_backward(const cnf_mlp *m, const double *theta, const double *R, size_t ldr,
                     const double *S, double *GX, size_t ldgx, double *gtheta, double *gt,
                     cnf_mlp_work *w)
{
    if (w && !w->kept)
        return cnf_fail(CNF_EINVAL, "cnf_mlp_backward after a forward call that did not keep "
                        "its state (cnf_mlp_work_set_keep(w, 0))");
    if (!w || w->n_sub <= 1)
        return backward1(m, theta, R, ldr, S, w ? w->n * m->cfg.d_out : 0, GX, ldgx,
                         gtheta, 0, gt, w, NULL);
    int rc = check_backward(m, w, R, ldr, GX, ldgx);
    if (rc)
        return rc;
    if (w->n == 0)
        return CNF_OK;
    struct task tk = {.m = m, .theta = theta, .R = R, .ldr = ldr, .S = S, .GX = GX,
                      .ldgx = ldgx, .gtheta = gtheta, .want_gt = gt != NULL};
    w->task = &tk;
    if (w->nch == 1)
        backward_chunk(w, 0, 0);
    else
        cnf_pool_run(w->pool, backward_chunk, w, w->nch);
    w->task = NULL;
    for (size_t c = 0; c < w->nch; c++)
        if (w->rcpart[c])
            return w->rcpart[c];
    /* Fixed-order reduction (chunk 0 accumulated into gtheta itself), split over the threads by
     * parameter slices when there is enough of it: each entry adds its chunks in chunk order. */
    if (gtheta && w->nch > 1) {
        w->task = &tk;
        if (w->pool && (w->nch - 1) * m->n_params >= 32768)
            cnf_pool_run(w->pool, reduce_slice, w, w->threads);
        else
            reduce_slice_of(w, 0, 1);
        w->task = NULL;
    }
    for (size_t c = 0; gt && c < w->nch; c++)
        *gt += w->gtpart[c];
    return CNF_OK;
}
