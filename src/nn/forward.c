/* The forward pass with tangents (DESIGN.md §2): f = MLP(x, t) and the Jacobian-vector products
 * J u_k, for cnf_mlp_forward, cnf_mlp_jvp and the divergences, on one work or over the chunks of
 * a threaded one (work.c).
 *
 * Rows of every buffer are samples; a buffer with tangents holds (1 + K)·n rows: the n primal rows
 * first, then slab k (n rows) for tangent k. Each layer is then one GEMM over all rows, and the
 * bias and time terms are added to the primal rows only (tangents are linear in the input). What
 * a forward call leaves in the work is what the reverse kernel (backward.c) reads. */
#include <math.h>
#include <string.h>

#include "mlp_impl.h"
#include "products.h"

/* The gate's sigmoid: libm, one call per unit and evaluation (not on the hot path). */
static double sigmoid(double z)
{
    if (z >= 0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* b, g, c t of a layer in float into vf, for tanh's all-float pass (act.c). */
static void layer_vectors_f(size_t o, const double *b, const double *g, const double *ct,
                            float *vf)
{
    to_float(vf, b, o);
    to_float(vf + o, g, o);
    to_float(vf + 2 * o, ct, o);
}

/* Fill w's prepared weights from θ at a forward call: Wt, and in mixed precision Wtf and Wf
 * (the reverse pass that may follow uses the forward call's, as it uses its activations).
 * Skipped while the caller holds the weights (cnf_mlp_work_hold_weights) and θ is the array
 * prepared last. */
static void prep_weights(const cnf_mlp *m, const double *theta, cnf_mlp_work *w)
{
    if (w->hold && w->prepped == theta)
        return;
    w->prepped = theta;
    for (size_t l = 0; l < m->L; l++) {
        const size_t in = m->layer[l].in, o = m->layer[l].out;
        const double *W = theta + m->layer[l].W;
        double *Wt = w->Wt[l];
        for (size_t i = 0; i < in; i++)
            for (size_t j = 0; j < o; j++)
                Wt[i * o + j] = W[j * in + i];
        if (w->Wtf) {
            to_float(w->Wtf[l], Wt, o * in);
            to_float(w->Wf[l], W, o * in);
        }
    }
}

/* Tangent rows of a hidden layer (K slabs of n rows, o units): ż = g ⊙ ẏ, ḣ = σ'(z) ⊙ ż. */
CNF_VECTOR_CLONES static void tangent_pass(size_t n, size_t K, size_t o, const double *restrict g,
                                           const double *restrict ds, const double *restrict Yt,
                                           double *restrict Ht)
{
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const double *yk = Yt + (k * n + i) * o, *dsi = ds + i * o;
            double *hk = Ht + (k * n + i) * o;
            for (size_t j = 0; j < o; j++)
                hk[j] = dsi[j] * (g[j] * yk[j]);
        }
}

/* The same in mixed precision, in float (g rounded to gf), ḣ straight into the next layer's float
 * input: from sgemm's float rows Yt, which stay for the reverse pass (it forms ż = g ⊙ ẏ from
 * them again, in double) ... */
CNF_VECTOR_CLONES static void tangent_keep_f(size_t n, size_t K, size_t o,
                                             const float *restrict gf, const float *restrict ds,
                                             const float *restrict Yt, float *restrict Hf)
{
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const size_t r = (k * n + i) * o;
            const float *dsi = ds + i * o;
            for (size_t j = 0; j < o; j++)
                Hf[r + j] = dsi[j] * (gf[j] * Yt[r + j]);
        }
}

/* ... or, for the first layer's unit tangents, from Y's double rows (W's columns), with ż kept
 * in Zt. */
CNF_VECTOR_CLONES static void tangent_keep_unit_f(size_t n, size_t K, size_t o,
                                                  const double *restrict g,
                                                  const float *restrict ds,
                                                  const double *restrict Yt,
                                                  double *restrict Zt, float *restrict Hf)
{
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const size_t r = (k * n + i) * o;
            const float *dsi = ds + i * o;
            for (size_t j = 0; j < o; j++) {
                double zj = g[j] * Yt[r + j];
                Zt[r + j] = zj;
                Hf[r + j] = dsi[j] * (float)zj;
            }
        }
}

/* tangent_lean (double) and tangent_lean_f (float): tangent_lean_tmpl.c. */
#define NAME tangent_lean
#define T double
#include "tangent_lean_tmpl.c"
#define NAME tangent_lean_f
#define T float
#include "tangent_lean_tmpl.c"

/* Y (M, out) = In (M, in) · W_lᵀ with W_lᵀ from pw (prep_weights); mixed precision keeps the
 * float input for the reverse pass (In = NULL: already in Xf[l]). */
static void layer_forward(const cnf_mlp *m, cnf_mlp_work *w, const cnf_mlp_work *pw, size_t l,
                          size_t M, const double *In, double *Y)
{
    const size_t in = m->layer[l].in, o = m->layer[l].out;
    if (!w->Xf) {
        cnf_gemm(0, 0, M, o, in, 1.0, In, in, pw->Wt[l], o, 0.0, Y, o);
        return;
    }
    if (In)
        to_float(w->Xf[l], In, M * in);
    sgemm(0, 0, M, o, in, w->Xf[l], in, pw->Wtf[l], o, w->cf, o);
    to_double(Y, w->cf, M * o);
}

/* ż of the first layer for the unit tangent e_k, the same for every row: g ⊙ W e_k into gw (the
 * products the tangent pass would form from ẏ = W e_k). */
static const double *unit_tangent(const struct layer *ly, const double *W, const double *g,
                                  size_t k, double *gw)
{
    for (size_t j = 0; j < ly->out; j++)
        gw[j] = g[j] * W[j * ly->in + k];
    return gw;
}

/* Mixed precision: out (M, out) = Xf[l] · W_lᵀ in float, with Xf[l] made from In, or already
 * written by the layer below when In is NULL. */
static void layer_forward_f(const cnf_mlp *m, cnf_mlp_work *w, const cnf_mlp_work *pw,
                            size_t l, size_t M, const double *In, float *out)
{
    const size_t in = m->layer[l].in, o = m->layer[l].out;
    if (In)
        to_float(w->Xf[l], In, M * in);
    sgemm(0, 0, M, o, in, w->Xf[l], in, pw->Wtf[l], o, out, o);
}

/* The output layer in mixed precision, from sgemm's float rows yf (rows, o): primal rows
 * y = yf + b (into Y unless NULL), z = g ⊙ y + c t into Zp (row stride ldp); tangent rows
 * ż = g ⊙ ẏ (Y keeps ẏ) into slab k at Zt + k·ldt (rows of o). */
CNF_VECTOR_CLONES static void output_pass_f(size_t n, size_t K, size_t o,
                                            const double *restrict b, const double *restrict g,
                                            const double *restrict ct, const float *restrict yf,
                                            double *restrict Y, double *restrict Zp, size_t ldp,
                                            double *restrict Zt, size_t ldt)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < o; j++) {
            double yj = (double)yf[i * o + j] + b[j];
            if (Y)
                Y[i * o + j] = yj;
            Zp[i * ldp + j] = g[j] * yj + ct[j];
        }
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            const size_t r = ((1 + k) * n + i) * o;
            double *zt = Zt + k * ldt + i * o;
            for (size_t j = 0; j < o; j++) {
                double yj = (double)yf[r + j];
                if (Y)
                    Y[r + j] = yj;
                zt[j] = g[j] * yj;
            }
        }
}

/* ẏ_{k,i} = W e_k = column k of W for the first layer's unit tangents: no GEMM for them. */
static void unit_rows(const struct layer *ly, const double *W, size_t n, size_t K, double *Y)
{
    const size_t o = ly->out;
    for (size_t k = 0; k < K; k++)
        for (size_t i = 0; i < n; i++) {
            double *yk = Y + ((1 + k) * n + i) * o;
            for (size_t j = 0; j < o; j++)
                yk[j] = W[j * ly->in + k];
        }
}

/* The shared pass behind forward, jvp and the divergences: fills w for n rows and K tangents;
 * slab k of U starts at U + k·ldu (ldu = n·d for a whole batch, more for a chunk of one). The
 * outputs go to F (n, ldf) and JU (slab k at JU + k·ldju) when given, else stay in Z[L−1]. */
static int run_forward(const cnf_mlp *m, const double *theta, double t, const double *X,
                       size_t ldx, size_t n, const double *U, size_t ldu, size_t K, int unit,
                       int keep, cnf_mlp_work *w, const cnf_mlp_work *pw, double *F, size_t ldf,
                       double *JU, size_t ldju)
{
    int rc = cnf_nn_check_call(m, n, K, w, ldx);
    if (rc)
        return rc;
    if (!pw) { /* a call on w alone (not a chunk): its own weights */
        prep_weights(m, theta, w);
        pw = w;
    }
    const size_t d = m->cfg.d_in;
    if (unit && K != d)
        return cnf_fail(CNF_EDIM, "exact trace needs K = d = %zu tangents, got %zu", d, K);
    w->m = m;
    w->n = n;
    w->K = K;
    w->unit = unit;
    w->t = t;
    if (n == 0)
        return CNF_OK;

    const size_t rows = n * (1 + K);
    const double *in = w->X0;
    if (w->Xf) {
        /* Mixed precision: the input rows straight to the first layer's float input (the
         * reverse pass reads them there too). */
        float *xf = w->Xf[0];
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++)
                xf[i * d + j] = (float)X[i * ldx + j];
        if (K && !unit)
            for (size_t k = 0; k < K; k++)
                to_float(xf + (1 + k) * n * d, U + k * ldu, n * d);
        in = NULL;
    } else {
        for (size_t i = 0; i < n; i++)
            memcpy(w->X0 + i * d, X + i * ldx, d * sizeof(double));
        if (K && !unit)
            for (size_t k = 0; k < K; k++)
                memcpy(w->X0 + (1 + k) * n * d, U + k * ldu, n * d * sizeof(double));
    }

    for (size_t l = 0; l < m->L; l++) {
        const struct layer *ly = &m->layer[l];
        const size_t o = ly->out;
        const double *W = theta + ly->W, *b = theta + ly->b;
        double *Y = w->Y[l], *Z = w->Z[l], *g = w->G[l];

        const int unit0 = l == 0 && unit, hidden = l + 1 < m->L;
        /* Mixed precision: float from layer to layer (the fused passes below write h into the
         * next layer's float input); lean_f: without a reverse pass. */
        const int flt = w->Xf && !(unit0 && !hidden), lean_f = flt && !keep;
        /* Mixed precision keeps a hidden layer's sgemm output, float, in Y's buffer (the
         * first layer's unit tangents, W's columns, stay double after it). */
        float *Yf = keep && hidden ? (float *)Y : w->cf;
        if (flt) {
            layer_forward_f(m, w, pw, l, unit0 ? n : rows, NULL, Yf);
            if (hidden && unit0 && keep)
                unit_rows(ly, W, n, K, Y);
        } else if (unit0 && !keep && hidden) {
            /* Only the primal rows: the tangents' ḣ comes straight from W's columns below. */
            layer_forward(m, w, pw, l, n, in, Y);
        } else if (unit0) {
            layer_forward(m, w, pw, l, n, in, Y);
            unit_rows(ly, W, n, K, Y);
        } else {
            layer_forward(m, w, pw, l, rows, in, Y);
        }

        double *ct = w->gamma; /* (o) c t, scratch */
        for (size_t j = 0; j < o; j++) {
            g[j] = ly->wg != ABSENT ? sigmoid(theta[ly->wg + j] * t + theta[ly->bg + j]) : 1.0;
            ct[j] = ly->c != ABSENT ? theta[ly->c + j] * t : 0.0;
        }
        if (l + 1 < m->L) {
            /* One fused pass: primal z = g ⊙ (y + b) + c t, σ, σ', σ''; then the tangent rows
             * ż = g ⊙ ẏ and ḣ = σ'(z) ⊙ ż. */
            double *H = w->H[l], *ds = w->DS[l], *d2s = w->D2S[l];
            double *gw = w->gamma + m->max_width; /* scratch for unit_tangent */
            if (flt)
                layer_vectors_f(o, b, g, ct, w->vf); /* b, g, c t in float */
            const float *gf = w->Xf ? w->vf + o : NULL;
            if (keep && flt) {
                float *hf = w->Xf[l + 1], *dsf = (float *)ds, *d2f = (float *)d2s;
                cnf_nn_act_rows_f(m->cfg.act, n, o, b, g, ct, Yf, hf, dsf, d2f, w->vf);
                if (unit0)
                    tangent_keep_unit_f(n, K, o, g, dsf, Y + n * o, Z + n * o, hf + n * o);
                else
                    tangent_keep_f(n, K, o, gf, dsf, Yf + n * o, hf + n * o);
            } else if (keep) {
                cnf_nn_act_rows(m->cfg.act, n, o, b, g, ct, Y, H, ds, d2s);
                tangent_pass(n, K, o, g, ds, Y + n * o, H + n * o);
            } else if (lean_f) {
                float *hf = w->Xf[l + 1], *dsf = (float *)ds;
                cnf_nn_act_rows_f(m->cfg.act, n, o, b, g, ct, Yf, hf, dsf, NULL, w->vf);
                if (unit0) {
                    float *gwf = w->vf + 3 * o; /* ż = g ⊙ W e_k in float */
                    for (size_t k = 0; k < K; k++) {
                        to_float(gwf, unit_tangent(ly, W, g, k, gw), o);
                        tangent_lean_f(n, 1, o, gwf, dsf, NULL, hf + (1 + k) * n * o);
                    }
                } else {
                    tangent_lean_f(n, K, o, gf, dsf, Yf + n * o, hf + n * o);
                }
            } else {
                cnf_nn_act_rows(m->cfg.act, n, o, b, g, ct, Y, H, ds, NULL);
                if (unit0) {
                    for (size_t k = 0; k < K; k++)
                        tangent_lean(n, 1, o, unit_tangent(ly, W, g, k, gw), ds, NULL,
                                     H + (1 + k) * n * o);
                } else {
                    tangent_lean(n, K, o, g, ds, Y + n * o, H + n * o);
                }
            }
            in = H;
        } else {
            /* The output layer, straight into the caller's F and JU when given (else into Z,
             * where the divergences read it). */
            double *Zp = F ? F : Z, *Zt = JU ? JU : Z + n * o;
            const size_t ldp = F ? ldf : o, ldt = JU ? ldju : n * o;
            if (flt) {
                /* From sgemm's float rows; y (for the gate's gradient) only when a reverse pass
                 * follows. */
                output_pass_f(n, K, o, b, g, ct, w->cf, keep ? Y : NULL, Zp, ldp, Zt, ldt);
            } else {
                for (size_t i = 0; i < n; i++) {
                    double *y = Y + i * o, *z = Zp + i * ldp;
                    for (size_t j = 0; j < o; j++) {
                        double yj = y[j] + b[j];
                        y[j] = yj;
                        z[j] = g[j] * yj + ct[j];
                    }
                }
                for (size_t k = 0; k < K; k++)
                    for (size_t i = 0; i < n; i++) {
                        const double *y = Y + ((1 + k) * n + i) * o;
                        double *z = Zt + k * ldt + i * o;
                        for (size_t j = 0; j < o; j++)
                            z[j] = g[j] * y[j];
                    }
            }
        }
    }
    return CNF_OK;
}

static void forward_chunk(void *arg, size_t c, size_t thread)
{
    cnf_mlp_work *w = arg;
    const struct task *tk = w->task;
    const size_t d = tk->m->cfg.d_in, n = tk->n;
    size_t i0, i1;
    cnf_nn_chunk_rows(n, w->nch, c, &i0, &i1);
    cnf_mlp_work *sw = w->sub[w->kept ? c : thread];
    const size_t dout = tk->m->cfg.d_out;
    w->rcpart[c] = run_forward(tk->m, tk->theta, tk->t, tk->X + i0 * tk->ldx, tk->ldx, i1 - i0,
                               tk->U ? tk->U + i0 * d : NULL, n * d, tk->K, tk->unit, w->kept,
                               sw, w, tk->F ? tk->F + i0 * tk->ldf : NULL, tk->ldf,
                               tk->JU ? tk->JU + i0 * dout : NULL, n * dout);
}

/* forward/jvp on w, threaded or not: F, JU as cnf_mlp_jvp. keep: the chunks' buffers must
 * stay for cnf_mlp_backward or for reading results out of them (the divergences). */
static int forward_any(const cnf_mlp *m, const double *theta, double t, const double *X,
                       size_t ldx, size_t n, const double *U, size_t K, int unit, double *F,
                       size_t ldf, double *JU, int keep, cnf_mlp_work *w)
{
    if (!w || w->n_sub <= 1) {
        if (w)
            w->kept = keep;
        return run_forward(m, theta, t, X, ldx, n, U, n * m->cfg.d_in, K, unit, keep, w, NULL, F,
                           ldf, JU, n * m->cfg.d_out);
    }
    int rc = cnf_nn_check_call(m, n, K, w, ldx);
    if (rc)
        return rc;
    if (unit && K != m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "exact trace needs K = d = %zu tangents, got %zu",
                        m->cfg.d_in, K);
    prep_weights(m, theta, w); /* once, for every chunk */
    w->m = m;
    w->n = n;
    w->K = K;
    w->unit = unit;
    w->t = t;
    w->nch = cnf_nn_n_chunks(w, n);
    /* Reusing sub[thread] needs one buffer set per thread: n_sub ≥ threads. */
    w->kept = keep || w->n_sub < w->threads;
    struct task tk = {.m = m, .theta = theta, .t = t, .X = X, .ldx = ldx, .n = n, .K = K,
                      .U = U, .unit = unit, .F = F, .ldf = ldf, .JU = JU};
    w->task = &tk;
    if (w->nch == 1)
        forward_chunk(w, 0, 0);
    else
        cnf_pool_run(w->pool, forward_chunk, w, w->nch);
    w->task = NULL;
    for (size_t c = 0; c < w->nch; c++)
        if (w->rcpart[c])
            return w->rcpart[c];
    return CNF_OK;
}

/* The single-thread work holding chunk c of the last call, and the chunk's rows. */
static const cnf_mlp_work *chunk_work(const cnf_mlp_work *w, size_t c, size_t *i0, size_t *nc)
{
    if (w->n_sub <= 1) {
        *i0 = 0;
        *nc = w->n;
        return w;
    }
    size_t i1;
    cnf_nn_chunk_rows(w->n, w->nch, c, i0, &i1);
    *nc = i1 - *i0;
    return w->sub[c];
}

int cnf_mlp_forward(const cnf_mlp *m, const double *theta, double t, const double *X, size_t ldx,
                    size_t n, double *F, size_t ldf, cnf_mlp_work *w)
{
    if (F && ldf < m->cfg.d_out)
        return cnf_fail(CNF_EDIM, "output row stride %zu < output dimension %zu", ldf,
                        m->cfg.d_out);
    return forward_any(m, theta, t, X, ldx, n, NULL, 0, 0, F, ldf, NULL, w ? w->keep : 1, w);
}

static int jvp(const cnf_mlp *m, const double *theta, double t, const double *X, size_t ldx,
               size_t n, const double *U, size_t K, double *F, size_t ldf, double *JU, int keep,
               cnf_mlp_work *w)
{
    if (F && ldf < m->cfg.d_out)
        return cnf_fail(CNF_EDIM, "output row stride %zu < output dimension %zu", ldf,
                        m->cfg.d_out);
    if (JU && m->cfg.d_out != m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "Jacobian-vector products need d_out = d_in");
    return forward_any(m, theta, t, X, ldx, n, U, K, U == NULL && K > 0, F, ldf, JU, keep, w);
}

int cnf_mlp_jvp(const cnf_mlp *m, const double *theta, double t, const double *X, size_t ldx,
                size_t n, const double *U, size_t K, double *F, size_t ldf, double *JU,
                cnf_mlp_work *w)
{
    return jvp(m, theta, t, X, ldx, n, U, K, F, ldf, JU, w ? w->keep : 1, w);
}

int cnf_mlp_div_exact(const cnf_mlp *m, const double *theta, double t, const double *X,
                      size_t ldx, size_t n, double *F, size_t ldf, double *div, cnf_mlp_work *w)
{
    const size_t d = m->cfg.d_in;
    if (m->cfg.d_out != d)
        return cnf_fail(CNF_EDIM, "divergence needs d_out = d_in (%zu != %zu)", m->cfg.d_out, d);
    int rc = jvp(m, theta, t, X, ldx, n, NULL, d, F, ldf, NULL, 1, w); /* read below */
    if (rc)
        return rc;
    for (size_t c = 0; c < (w->n_sub > 1 ? w->nch : 1); c++) {
        size_t i0, nc;
        const cnf_mlp_work *cw = chunk_work(w, c, &i0, &nc);
        const double *JU = cw->Z[cw->L - 1] + nc * d; /* slab k: J e_k */
        for (size_t i = 0; i < nc; i++) {
            double s = 0.0;
            for (size_t k = 0; k < d; k++)
                s += JU[(k * nc + i) * d + k];
            div[i0 + i] = s;
        }
    }
    return CNF_OK;
}

int cnf_mlp_div_hutch(const cnf_mlp *m, const double *theta, double t, const double *X,
                      size_t ldx, size_t n, const double *E, size_t K, double *F, size_t ldf,
                      double *div, cnf_mlp_work *w)
{
    const size_t d = m->cfg.d_in;
    if (m->cfg.d_out != d)
        return cnf_fail(CNF_EDIM, "divergence needs d_out = d_in (%zu != %zu)", m->cfg.d_out, d);
    if (K == 0 || !E)
        return cnf_fail(CNF_EINVAL, "Hutchinson estimate needs at least one probe");
    int rc = jvp(m, theta, t, X, ldx, n, E, K, F, ldf, NULL, 1, w); /* read below */
    if (rc)
        return rc;
    for (size_t c = 0; c < (w->n_sub > 1 ? w->nch : 1); c++) {
        size_t i0, nc;
        const cnf_mlp_work *cw = chunk_work(w, c, &i0, &nc);
        const double *JU = cw->Z[cw->L - 1] + nc * d;
        for (size_t i = 0; i < nc; i++) {
            double s = 0.0;
            for (size_t k = 0; k < K; k++) {
                const double *e = E + (k * n + i0 + i) * d, *ju = JU + (k * nc + i) * d;
                for (size_t j = 0; j < d; j++)
                    s += e[j] * ju[j];
            }
            div[i0 + i] = s / (double)K;
        }
    }
    return CNF_OK;
}
