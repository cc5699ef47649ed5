/* The MLP velocity field with forward-mode tangents and one reverse kernel (DESIGN.md §2).
 *
 * Rows of every buffer are samples; a buffer with tangents holds (1 + K)·n rows: the n primal rows
 * first, then slab k (n rows) for tangent k. Each layer is then one GEMM over all rows, and the
 * bias and time terms are added to the primal rows only (tangents are linear in the input).
 *
 * Reverse pass, for seeds r (on z_L) and s_k (on ż_L), layer l = L..1 (DESIGN.md §2):
 *   ȳ = g ⊙ r,  ẏ̄_k = g ⊙ s_k;   ∇W += ȳ h_{l−1}ᵀ + Σ_k ẏ̄_k ḣ_{l−1,k}ᵀ;  ∇b += ȳ;  ∇c += t r
 *   γ = r ⊙ y + Σ_k s_k ⊙ ẏ_k;   ∇w^g += t g(1−g) γ;  ∇b^g += g(1−g) γ
 *   p = Wᵀ ȳ, q_k = Wᵀ ẏ̄_k;  r ← σ'(z) ⊙ p + σ''(z) ⊙ Σ_k ż_k ⊙ q_k,  s_k ← σ'(z) ⊙ q_k
 * The time derivative: ∂z/∂t = c + g(1−g) w^g ⊙ y and ∂ż_k/∂t = g(1−g) w^g ⊙ ẏ_k, so
 * ∂φ/∂t = Σ_l [ Σ_i r_i·c + (g(1−g) w^g)·γ ]. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf/mlp.h"
#include "internal.h"
#include "core/vmath.h"

enum { CNF_MLP_MAX_THREADS = 16 };
/* Chunks smaller than this are not worth a thread's wake-up (a few µs). */
enum { MIN_CHUNK_ROWS = 16 };
/* Cache blocking: a chunk holds at most this many rows (samples × (1 + K)), so that a layer's
 * GEMM output is still in L1/L2 when the elementwise pass reads it (at 10,000 samples the
 * unblocked buffers are megabytes each and those passes ran at memory speed). 240, not 256:
 * OpenBLAS 0.3.21 (SkylakeX) multiplies without packing when M·N·K ≤ 10⁶, and for 64-wide
 * layers 240 rows stay under it: the reverse pass's GEMMs measured 65–75 GFLOP/s at 240 rows
 * against 46–56 at 256 (double, one core). */
enum { BLOCK_ROWS = 240 };

struct layer {
    size_t in, out;
    size_t W, b, c, wg, bg; /* offsets into θ; c, wg, bg are (size_t)-1 when absent */
};

struct block {
    char name[24];
    size_t offset, rows, cols;
};

struct cnf_mlp {
    cnf_mlp_config cfg;
    size_t *hidden;
    size_t L;            /* number of affine layers = n_hidden + 1 */
    struct layer *layer; /* (L) */
    size_t n_params, max_width;
    struct block *blocks;
    size_t n_blocks;
};

struct cnf_mlp_work {
    size_t n_max, k_max, L;
    double *X0;    /* (n_max (1+k_max), d_in): input rows and tangent directions (double only) */
    /* Per layer, as the forward left them (double precision; in mixed precision hidden layers
     * keep sgemm's float rows in Y's buffer, σ', σ'' as float in DS, D2S, and have no H): */
    double **Y;    /* per layer (rows, out): y without b (hidden) / with b (output), ẏ */
    double **Z;    /* output layer: z, ż (= f, J u); first hidden layer in mixed precision: the
                    * unit tangents' ż; NULL otherwise */
    double **H;    /* per hidden layer: h = σ(z), ḣ = σ'(z) ż */
    double **DS;   /* per hidden layer (n_max, out): σ'(z) */
    double **D2S;  /* per hidden layer (n_max, out): σ''(z) */
    double **G;    /* per layer (out): gate g (1 without squash) */
    double *buf_a, *buf_b, *buf_c; /* reverse-pass scratch, (rows, max_width) each (buf_c:
                                    * p, q in double precision; cf holds them in mixed) */
    double *gamma;                 /* (4, max_width): γ, Σ r, Σ ȳ, scratch; c t in the forward */
    /* Mixed precision only (NULL otherwise): float copies of each layer's input rows and
     * weights, and float GEMM operands/results. */
    float **Xf;    /* per layer (rows, in) */
    /* The weights as the GEMMs take them, made once per call by the calling thread and read by
     * every chunk (prep_weights; the chunks use their parent's): Wt (in, out) = W_lᵀ for the
     * forward products, which row-major NN runs through OpenBLAS's unpacked small-matrix
     * kernels (NT against W itself did not: 48-55 against 62-70 GFLOP/s in double, 93-102
     * against 165-171 in float, 150-240 rows × 64 × 64); in mixed precision Wtf, its float copy,
     * and Wf (out, in), W in float for the reverse pass's p = ȳ W. */
    double **Wt;   /* per layer (in, out) */
    float **Wtf;   /* per layer (in, out), mixed only */
    float **Wf;    /* per layer (out, in), mixed only */
    const double *prepped; /* the θ they were made from */
    int hold;              /* θ's values do not change while set (cnf_mlp_work_hold_weights) */
    float *af, *cf; /* (rows, max_width) each */
    float *vf;      /* (4, max_width): b, g, c t of a layer in float, and a tangent's ż */
    float *gwf;    /* (max_width, max_width) */
    /* The shape it was made for (fits): precision, parameter count, (in, out) per layer. */
    int prec;
    size_t n_params;
    size_t *io; /* (2 L) */
    /* What the last forward call computed. */
    const cnf_mlp *m;
    size_t n, K;
    int unit; /* tangents are the unit vectors (exact trace) */
    double t;
    /* Threads over batch chunks (n_sub > 1): this work then holds no buffers of its own; chunk c
     * of a call runs on sub[c] (on sub[thread] without keep), whichever thread claims it, and
     * parameter gradients of chunk c ≥ 1 go to gpart[c] and are added in chunk order, so results
     * are bit-identical from run to run for a given chunking (n_chunks). */
    size_t n_sub, nch; /* chunks available, chunks of the last call */
    size_t threads, bs; /* threads, samples per cache block */
    cnf_mlp_work **sub;
    /* keep (default 1): forward calls keep every chunk's buffers for cnf_mlp_backward. With
     * keep = 0 (cnf_mlp_work_set_keep) chunks reuse their thread's buffers, sub[thread], so a
     * large batch streams through cache rather than memory; kept records which the last call
     * did. */
    int keep, kept;
    struct pool *pool; /* NULL with one thread */
    double *gpart;  /* (n_sub, n_params) */
    double *gtpart; /* (n_sub) */
    int *rcpart;    /* (n_sub) */
    const struct task *task;
};

static const size_t ABSENT = (size_t)-1;

/* A call split over chunks (see struct cnf_mlp_work). */
struct task {
    const cnf_mlp *m;
    const double *theta;
    double t;
    const double *X;
    size_t ldx, n, K;
    const double *U; /* (K, n, d) or NULL */
    int unit;
    double *F;
    size_t ldf;
    double *JU;
    const double *R;
    size_t ldr;
    const double *S;
    double *GX;
    size_t ldgx;
    double *gtheta;
    int want_gt;
};

/* ---- names ---------------------------------------------------------------------------------- */

static const char *const act_names[] = {"tanh", "softplus", "elu", "swish"};
static const char *const time_names[] = {"none", "concat", "concatsquash"};

static int lookup(const char *what, const char *const *names, size_t n, const char *name, int *out)
{
    for (size_t i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) {
            *out = (int)i;
            return CNF_OK;
        }
    char list[128] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return cnf_fail(CNF_ENAME, "unknown %s '%s' (valid: %s)", what, name ? name : "(null)", list);
}

/* Name ↔ value for each enum: NAME_PAIR(type, from_name, name, names, count, "what"). */
#define NAME_PAIR(T, FROM, TO, NAMES, COUNT, WHAT)                                               \
    int FROM(const char *name, T *out)                                                           \
    {                                                                                            \
        int v = 0, rc = lookup(WHAT, NAMES, COUNT, name, &v);                                    \
        if (rc == CNF_OK)                                                                        \
            *out = (T)v;                                                                         \
        return rc;                                                                               \
    }                                                                                            \
    const char *TO(T v) { return (unsigned)v < COUNT ? NAMES[v] : "invalid"; }

static const char *const precision_names[] = {"double", "mixed"};

NAME_PAIR(cnf_act, cnf_act_from_name, cnf_act_name, act_names, 4, "activation")
NAME_PAIR(cnf_time_mode, cnf_time_mode_from_name, cnf_time_mode_name, time_names, 3,
          "time conditioning")
NAME_PAIR(cnf_precision, cnf_precision_from_name, cnf_precision_name, precision_names, 2,
          "precision")
#undef NAME_PAIR

/* ---- the layer products ---------------------------------------------------------------------
 * Double: cnf_gemm. Mixed: the operands are rounded to float, multiplied by cblas_sgemm, and the
 * product is widened back to double (for ∇W it is added to the double accumulator). */

CNF_VECTOR_CLONES static void to_float(float *restrict dst, const double *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

CNF_VECTOR_CLONES static void to_double(double *restrict dst, const float *restrict src,
                                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (double)src[i];
}

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

static void sgemm(int ta, int tb, size_t M, size_t N, size_t K, const float *A, size_t lda,
                  const float *B, size_t ldb, float *C, size_t ldc)
{
    if (M == 0 || N == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
}

/* ---- activations ---------------------------------------------------------------------------- */

/* The gate's sigmoid: libm, one call per unit and evaluation (not on the hot path). */
static double sigmoid(double z)
{
    if (z >= 0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* σ, σ', σ'' of one activation, straight-line code over the vectorizable exp/tanh of vmath.h so
 * that a loop of it vectorizes (act_apply) and single values (cnf_act_eval) give the same bits.
 * Softplus keeps libm's log1p (not vectorized). */
static inline void act_tanh(double z, double *h, double *ds, double *d2s)
{
    double v = cnf_tanh_fast(z), d = 1.0 - v * v;
    *h = v;
    *ds = d;
    *d2s = -2.0 * v * d;
}

static inline void act_softplus(double z, double *h, double *ds, double *d2s)
{
    double sg = cnf_sigmoid_fast(z);
    double a = fabs(z), e = cnf_exp_fast(a > 700.0 ? -700.0 : -a);
    *h = (z > 0 ? z : 0.0) + log1p(e);
    *ds = sg;
    *d2s = sg * (1.0 - sg);
}

static inline void act_elu(double z, double *h, double *ds, double *d2s)
{
    double zn = z > 0 ? 0.0 : z;
    double em = cnf_expm1_fast(zn), e = em + 1.0;
    *h = z > 0 ? z : em;
    *ds = z > 0 ? 1.0 : e;
    *d2s = z > 0 ? 0.0 : e;
}

static inline void act_swish(double z, double *h, double *ds, double *d2s)
{
    double sg = cnf_sigmoid_fast(z), q = sg * (1.0 - sg);
    *h = z * sg;
    *ds = sg + z * q;
    *d2s = q * (2.0 + z * (1.0 - 2.0 * sg));
}

void cnf_act_eval(cnf_act act, double z, double *s, double *ds, double *d2s)
{
    double h, d1, d2;
    switch (act) {
    case CNF_ACT_TANH:
        act_tanh(z, &h, &d1, &d2);
        break;
    case CNF_ACT_SOFTPLUS:
        act_softplus(z, &h, &d1, &d2);
        break;
    case CNF_ACT_ELU:
        act_elu(z, &h, &d1, &d2);
        break;
    default: /* CNF_ACT_SWISH */
        act_swish(z, &h, &d1, &d2);
        break;
    }
    *s = h;
    if (ds)
        *ds = d1;
    if (d2s)
        *d2s = d2;
}

/* The fused elementwise pass of one hidden layer over n primal rows (o units):
 *     z = g ⊙ (y + b) + ct;  h, σ', σ'' = σ(z), σ'(z), σ''(z)
 * one function per activation so that each loop vectorizes; D2 = NULL when no reverse pass
 * follows (cnf_mlp_work_set_keep(w, 0)): then only h and σ' (for the tangents) are stored.
 * Neither y + b nor z is stored: the reverse pass forms y + b (for the gate's gradient) from the
 * GEMM's y, left in place. T: float in mixed precision, where y is sgemm's row, h goes straight
 * into the next layer's float input and σ', σ'' are kept in float (tanh there has its own
 * all-float pass, tanh_rows_f). */
#define ACT_ROWS(NAME, ACT, T)                                                                   \
    CNF_VECTOR_CLONES static void NAME(size_t n, size_t o, const double *restrict b,            \
                                       const double *restrict g, const double *restrict ct,      \
                                       const T *restrict Y, T *restrict H, T *restrict D1,       \
                                       T *restrict D2)                                           \
    {                                                                                            \
        for (size_t i = 0; i < n; i++) {                                                         \
            const T *y = Y + i * o;                                                              \
            T *h = H + i * o, *d1 = D1 + i * o, *d2 = D2 ? D2 + i * o : NULL;                    \
            if (d2) {                                                                            \
                for (size_t j = 0; j < o; j++) {                                                 \
                    double zj = g[j] * ((double)y[j] + b[j]) + ct[j], hj, aj, bj;                \
                    ACT(zj, &hj, &aj, &bj);                                                      \
                    h[j] = (T)hj;                                                                \
                    d1[j] = (T)aj;                                                               \
                    d2[j] = (T)bj;                                                               \
                }                                                                                \
            } else {                                                                             \
                for (size_t j = 0; j < o; j++) {                                                 \
                    double zj = g[j] * ((double)y[j] + b[j]) + ct[j], hj, aj, bj;                \
                    ACT(zj, &hj, &aj, &bj);                                                      \
                    h[j] = (T)hj;                                                                \
                    d1[j] = (T)aj;                                                               \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }
ACT_ROWS(rows_tanh, act_tanh, double)
ACT_ROWS(rows_softplus, act_softplus, double)
ACT_ROWS(rows_elu, act_elu, double)
ACT_ROWS(rows_swish, act_swish, double)
ACT_ROWS(rowsf_softplus, act_softplus, float)
ACT_ROWS(rowsf_elu, act_elu, float)
ACT_ROWS(rowsf_swish, act_swish, float)
#undef ACT_ROWS

/* tanh layers in mixed precision, all in float so that every vector op has 16 lanes:
 * z = g ⊙ (y + b) + c t with b, g, c t rounded to float (vf), h = tanh z, σ' = 1 − h² and, when
 * d2s is not NULL (a reverse pass follows), σ'' = −2hσ'. */
CNF_VECTOR_CLONES static void tanh_rows_f(size_t n, size_t o, const float *restrict vf,
                                          const float *restrict Y, float *restrict H,
                                          float *restrict ds, float *restrict d2s)
{
    const float *bf = vf, *gf = vf + o, *cf = vf + 2 * o;
    for (size_t i = 0; i < n; i++) {
        const float *y = Y + i * o;
        float *h = H + i * o, *d1 = ds + i * o;
        if (d2s) {
            float *d2 = d2s + i * o;
            for (size_t j = 0; j < o; j++) {
                float v = cnf_tanh_fastf(gf[j] * (y[j] + bf[j]) + cf[j]), a = 1.0f - v * v;
                h[j] = v;
                d1[j] = a;
                d2[j] = -2.0f * v * a;
            }
        } else {
            for (size_t j = 0; j < o; j++) {
                float v = cnf_tanh_fastf(gf[j] * (y[j] + bf[j]) + cf[j]);
                h[j] = v;
                d1[j] = 1.0f - v * v;
            }
        }
    }
}

static void layer_vectors_f(size_t o, const double *b, const double *g, const double *ct,
                            float *vf)
{
    to_float(vf, b, o);
    to_float(vf + o, g, o);
    to_float(vf + 2 * o, ct, o);
}

/* The pass on float rows (mixed precision): Y from sgemm, kept for the reverse pass when d2s is
 * not NULL; vf holds b, g, c t in float (run_forward) for tanh's all-float pass. */
static void act_rows_f(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                       const double *ct, const float *Y, float *H, float *ds, float *d2s,
                       const float *vf)
{
    if (act == CNF_ACT_TANH)
        tanh_rows_f(n, o, vf, Y, H, ds, d2s);
    else
        (act == CNF_ACT_SOFTPLUS ? rowsf_softplus
         : act == CNF_ACT_ELU    ? rowsf_elu
                                 : rowsf_swish)(n, o, b, g, ct, Y, H, ds, d2s);
}

/* The pass on double rows; d2s = NULL: the lean pass (h and σ' only). */
static void act_primal(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                       const double *ct, const double *Y, double *H, double *ds, double *d2s)
{
    (act == CNF_ACT_TANH       ? rows_tanh
     : act == CNF_ACT_SOFTPLUS ? rows_softplus
     : act == CNF_ACT_ELU      ? rows_elu
                               : rows_swish)(n, o, b, g, ct, Y, H, ds, d2s);
}

/* ---- construction --------------------------------------------------------------------------- */

static void add_block(cnf_mlp *m, size_t l, const char *what, size_t off, size_t rows, size_t cols)
{
    struct block *b = &m->blocks[m->n_blocks++];
    snprintf(b->name, sizeof b->name, "%zu.%s", l + 1, what);
    b->offset = off;
    b->rows = rows;
    b->cols = cols;
}

int cnf_mlp_create(cnf_mlp **out, const cnf_mlp_config *cfg)
{
    *out = NULL;
    if (!cfg)
        return cnf_fail(CNF_EINVAL, "MLP configuration is NULL");
    if (cfg->d_in == 0 || cfg->d_out == 0)
        return cnf_fail(CNF_EINVAL, "MLP dimensions must be positive (d_in = %zu, d_out = %zu)",
                        cfg->d_in, cfg->d_out);
    if (cfg->n_hidden > 0 && !cfg->hidden)
        return cnf_fail(CNF_EINVAL, "MLP has %zu hidden layers but no widths", cfg->n_hidden);
    for (size_t i = 0; i < cfg->n_hidden; i++)
        if (cfg->hidden[i] == 0)
            return cnf_fail(CNF_EINVAL, "MLP hidden layer %zu has width 0", i + 1);
    if ((unsigned)cfg->act > CNF_ACT_SWISH)
        return cnf_fail(CNF_EINVAL, "invalid activation value %d", (int)cfg->act);
    if ((unsigned)cfg->time > CNF_TIME_CONCATSQUASH)
        return cnf_fail(CNF_EINVAL, "invalid time-conditioning value %d", (int)cfg->time);
    if ((unsigned)cfg->precision > CNF_PRECISION_MIXED)
        return cnf_fail(CNF_EINVAL, "invalid precision value %d", (int)cfg->precision);
    /* The parameter count, saturated: a layer has out·in weights and at most 4 vectors of out
     * (b, c, wg, bg). Checked before anything is sized by it, so no width or offset can wrap. */
    size_t count = cfg->n_hidden + 1 > cfg->n_hidden ? 0 : SIZE_MAX, prev = cfg->d_in;
    for (size_t l = 0; l <= cfg->n_hidden && count != SIZE_MAX; l++) {
        size_t o = l < cfg->n_hidden ? cfg->hidden[l] : cfg->d_out;
        size_t per = cnf_size_mul(o, prev < SIZE_MAX - 4 ? prev + 4 : SIZE_MAX);
        count = per < SIZE_MAX - count ? count + per : SIZE_MAX;
        prev = o;
    }
    if (!cnf_size_ok(count))
        return cnf_fail(CNF_EINVAL, "MLP widths (input %zu, %zu hidden layers, output %zu) give "
                        "more parameters than can be addressed", cfg->d_in, cfg->n_hidden,
                        cfg->d_out);

    cnf_mlp *m = calloc(1, sizeof *m);
    if (!m)
        return cnf_fail(CNF_ENOMEM, "allocating the MLP");
    m->cfg = *cfg;
    m->L = cfg->n_hidden + 1;
    m->hidden = cnf_calloc(cfg->n_hidden, sizeof *m->hidden);
    m->layer = cnf_calloc(m->L, sizeof *m->layer);
    m->blocks = cnf_calloc(cnf_size_mul(5, m->L), sizeof *m->blocks);
    if (!m->hidden || !m->layer || !m->blocks) {
        cnf_mlp_free(m);
        return cnf_fail(CNF_ENOMEM, "allocating the MLP");
    }
    if (cfg->n_hidden)
        memcpy(m->hidden, cfg->hidden, cfg->n_hidden * sizeof *m->hidden);
    m->cfg.hidden = m->hidden;

    size_t off = 0, in = cfg->d_in;
    m->max_width = cfg->d_in;
    for (size_t l = 0; l < m->L; l++) {
        struct layer *ly = &m->layer[l];
        ly->in = in;
        ly->out = l + 1 < m->L ? cfg->hidden[l] : cfg->d_out;
        ly->c = ly->wg = ly->bg = ABSENT;
        ly->W = off;
        add_block(m, l, "W", off, ly->out, ly->in);
        off += ly->out * ly->in;
        ly->b = off;
        add_block(m, l, "b", off, ly->out, 1);
        off += ly->out;
        if (cfg->time != CNF_TIME_NONE) {
            ly->c = off;
            add_block(m, l, "c", off, ly->out, 1);
            off += ly->out;
        }
        if (cfg->time == CNF_TIME_CONCATSQUASH) {
            ly->wg = off;
            add_block(m, l, "wg", off, ly->out, 1);
            off += ly->out;
            ly->bg = off;
            add_block(m, l, "bg", off, ly->out, 1);
            off += ly->out;
        }
        if (ly->out > m->max_width)
            m->max_width = ly->out;
        in = ly->out;
    }
    m->n_params = off;
    *out = m;
    return CNF_OK;
}

void cnf_mlp_free(cnf_mlp *m)
{
    if (!m)
        return;
    free(m->hidden);
    free(m->layer);
    free(m->blocks);
    free(m);
}

size_t cnf_mlp_n_params(const cnf_mlp *m) { return m->n_params; }

const cnf_mlp_config *cnf_mlp_get_config(const cnf_mlp *m) { return &m->cfg; }

size_t cnf_mlp_n_blocks(const cnf_mlp *m) { return m->n_blocks; }

int cnf_mlp_block(const cnf_mlp *m, size_t i, const char **name, size_t *offset, size_t *rows,
                  size_t *cols)
{
    if (i >= m->n_blocks)
        return cnf_fail(CNF_EINVAL, "MLP parameter block %zu out of range (%zu blocks)", i,
                        m->n_blocks);
    const struct block *b = &m->blocks[i];
    if (name)
        *name = b->name;
    if (offset)
        *offset = b->offset;
    if (rows)
        *rows = b->rows;
    if (cols)
        *cols = b->cols;
    return CNF_OK;
}

static void uniform_fill(double *x, size_t n, double limit, cnf_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = limit * (2.0 * cnf_rng_uniform(rng) - 1.0);
}

void cnf_mlp_init(const cnf_mlp *m, double *theta, cnf_rng *rng)
{
    /* PyTorch's nn.Linear default (Kaiming-uniform with a = √5: bound 1/√fan_in for weights
     * and biases), which FFJORD's ConcatLinear / ConcatSquashLinear layers start from. */
    for (size_t l = 0; l < m->L; l++) {
        const struct layer *ly = &m->layer[l];
        const size_t fan_in = ly->in + (m->cfg.time == CNF_TIME_CONCAT ? 1 : 0);
        const double bound = 1.0 / sqrt((double)fan_in);
        uniform_fill(theta + ly->W, ly->out * ly->in, bound, rng);
        uniform_fill(theta + ly->b, ly->out, bound, rng);
        /* concat: c is the time column of the same Linear(in + 1, out); concatsquash: the
         * gate and the time bias are Linear(1, out) layers, fan_in 1. */
        const double tb = m->cfg.time == CNF_TIME_CONCAT ? bound : 1.0;
        if (ly->c != ABSENT)
            uniform_fill(theta + ly->c, ly->out, tb, rng);
        if (ly->wg != ABSENT) {
            uniform_fill(theta + ly->wg, ly->out, 1.0, rng);
            uniform_fill(theta + ly->bg, ly->out, 1.0, rng);
        }
    }
}

/* ---- threads over batch chunks ---------------------------------------------------------------
 * A pool of helper threads per threaded workspace. A call publishes its task (nch chunks) and
 * bumps a generation counter. Participant t (0: the caller, 1 + i: helper i) owns the chunks
 * c ≡ t (mod participants) and claims them in order from its own atomic counter; when they are
 * gone it claims what is left of the others', so a helper that is not scheduled in time (a busy
 * machine) costs nothing: the caller runs its chunks too. Owning the same chunks from call to
 * call keeps a chunk's activations in the cache of the core that made them for the reverse
 * pass that follows (a d = 64 training step 3-5% faster than one shared counter). Which thread
 * runs a chunk does not matter for the result, since chunk c uses work sub[c] (or, when nothing
 * is kept for a reverse pass, the buffers of the thread running it) and its own gradient slot.
 * Idle helpers spin on the generation for a while (a CNF evaluates the field thousands of times
 * per second, and a futex wake-up costs as much as a small chunk), then sleep on a condition
 * variable. */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif
enum { SPIN_LIMIT = 20000 };

struct pool;
typedef struct helper {
    struct pool *p;
    pthread_t th;
} helper;

typedef struct pool {
    size_t n_help;
    helper help[CNF_MLP_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;
    atomic_int sleepers, quit;
    /* Claims, one counter per participant: generation in the high 32 bits, the participant's
     * next chunk (k: chunk t + k·participants) in the low 32; a claim succeeds only for the
     * current generation, so a late helper cannot take a chunk of a finished task. */
    _Atomic uint64_t next[CNF_MLP_MAX_THREADS];
    atomic_size_t done;
    /* The current task, written before `next` is published and read after it is acquired. */
    void (*fn)(void *arg, size_t chunk, size_t thread);
    void *arg;
    atomic_size_t nch;
} pool;

/* The next chunk of participant q's share in generation g, if one is left. */
static int pool_claim(pool *p, unsigned g, size_t q, size_t *chunk)
{
    const size_t parts = p->n_help + 1;
    uint64_t v = atomic_load(&p->next[q]);
    for (;;) {
        const size_t c = q + (size_t)(v & 0xffffffffu) * parts;
        if ((unsigned)(v >> 32) != g || c >= atomic_load(&p->nch))
            return 0;
        if (atomic_compare_exchange_weak(&p->next[q], &v, v + 1)) {
            *chunk = c;
            return 1;
        }
    }
}

/* Run chunks of generation g until none is left, participant `thread`'s own first. */
static void pool_work(pool *p, unsigned g, size_t thread)
{
    const size_t parts = p->n_help + 1;
    for (size_t i = 0; i < parts; i++) {
        size_t c;
        while (pool_claim(p, g, (thread + i) % parts, &c)) {
            p->fn(p->arg, c, thread);
            atomic_fetch_add(&p->done, 1);
        }
    }
}

static void *helper_main(void *v)
{
    helper *h = v;
    pool *p = h->p;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load(&p->gen);
        for (int spin = 0; g == seen && !atomic_load(&p->quit) && spin < SPIN_LIMIT; spin++) {
            CPU_RELAX();
            g = atomic_load(&p->gen);
        }
        if (g == seen && !atomic_load(&p->quit)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            return NULL;
        seen = g;
        pool_work(p, g, (size_t)(h - p->help) + 1);
    }
}

static void pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n_help; i++)
        pthread_join(p->help[i].th, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

static pool *pool_create(size_t n_help)
{
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->quit, 0);
    for (size_t q = 0; q < CNF_MLP_MAX_THREADS; q++)
        atomic_init(&p->next[q], 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->nch, 0);
    for (size_t i = 0; i < n_help; i++) {
        p->help[i].p = p;
        if (pthread_create(&p->help[i].th, NULL, helper_main, &p->help[i])) {
            pool_free(p);
            return NULL;
        }
        p->n_help = i + 1;
    }
    return p;
}

/* Run fn(arg, c) for c = 0..nch−1 over the caller and the helpers (all on the caller without
 * a pool); returns when all are done. */
static void pool_run(pool *p, void (*fn)(void *, size_t, size_t), void *arg, size_t nch)
{
    if (!p) {
        for (size_t c = 0; c < nch; c++)
            fn(arg, c, 0);
        return;
    }
    unsigned g = atomic_load(&p->gen) + 1;
    const size_t parts = p->n_help + 1;
    /* First close the previous generation: a helper still finishing its last chunk may be about
     * to claim with an old value of a counter; these stores make that claim fail before fn, arg
     * and nch change under it. */
    for (size_t q = 0; q < parts; q++)
        atomic_store(&p->next[q], ((uint64_t)g << 32) | 0xffffffffu);
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->nch, nch);
    atomic_store(&p->done, 0);
    for (size_t q = 0; q < parts; q++)
        atomic_store(&p->next[q], (uint64_t)g << 32); /* publishes the task to claimers */
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, g, 0);
    /* Chunks still running were claimed by helpers that are running them. */
    for (int spin = 0; atomic_load(&p->done) < nch; spin++) {
        if (spin < SPIN_LIMIT)
            CPU_RELAX();
        else
            sched_yield();
    }
}

/* Every online processor unless asked: on the idle 2-core machine of the benchmarks two threads
 * took FFJORD's toy iteration from 0.0397 to 0.0204 s, 10,000-point RK4 log-density from 1.27 to
 * 0.69 s and 512-point RK4 training steps from 0.33 to 0.21 s. On a machine shared with other
 * jobs they were slower (a helper descheduled in the middle of its chunk stalls the caller):
 * CNF_NUM_THREADS=1 there. The bits depend on the chunking, which changes with the thread count
 * only for batches below one cache block per thread (n_chunks). */
size_t cnf_mlp_threads_default(void)
{
    const char *e = getenv("CNF_NUM_THREADS");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long v = e && *e ? strtol(e, NULL, 10) : cores;
    if (v < 1)
        v = 1;
    return v > CNF_MLP_MAX_THREADS ? CNF_MLP_MAX_THREADS : (size_t)v;
}

/* ---- workspace ------------------------------------------------------------------------------ */

void cnf_mlp_work_free(cnf_mlp_work *w)
{
    if (!w)
        return;
    for (size_t l = 0; l < w->L; l++) {
        if (w->Y) free(w->Y[l]);
        if (w->Z) free(w->Z[l]);
        if (w->H) free(w->H[l]);
        if (w->DS) free(w->DS[l]);
        if (w->D2S) free(w->D2S[l]);
        if (w->G) free(w->G[l]);
    }
    free(w->Y);
    free(w->Z);
    free(w->H);
    free(w->DS);
    free(w->D2S);
    free(w->G);
    free(w->X0);
    free(w->buf_a);
    free(w->buf_b);
    free(w->buf_c);
    free(w->gamma);
    for (size_t l = 0; l < w->L; l++) {
        if (w->Xf) free(w->Xf[l]);
        if (w->Wf) free(w->Wf[l]);
        if (w->Wt) free(w->Wt[l]);
        if (w->Wtf) free(w->Wtf[l]);
    }
    free(w->Xf);
    free(w->Wf);
    free(w->Wt);
    free(w->Wtf);
    free(w->io);
    free(w->af);
    free(w->vf);
    free(w->cf);
    free(w->gwf);
    pool_free(w->pool);
    for (size_t c = 0; w->sub && c < w->n_sub; c++)
        cnf_mlp_work_free(w->sub[c]);
    free(w->sub);
    free(w->gpart);
    free(w->gtpart);
    free(w->rcpart);
    free(w);
}

static int record_shape(cnf_mlp_work *w, const cnf_mlp *m);

/* own_weights: the work prepares its own weights (not a chunk of a threaded work, which reads
 * its parent's). */
static int work_create1(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max, size_t k_max,
                        int own_weights);

/* w's prepared weights (Wt; Wtf and Wf in mixed precision); 0 on allocation failure. */
static int weights_alloc(cnf_mlp_work *w, const cnf_mlp *m)
{
    const int mixed = m->cfg.precision == CNF_PRECISION_MIXED;
    w->Wt = cnf_calloc(m->L, sizeof *w->Wt);
    w->Wtf = mixed ? cnf_calloc(m->L, sizeof *w->Wtf) : NULL;
    w->Wf = mixed ? cnf_calloc(m->L, sizeof *w->Wf) : NULL;
    if (!w->Wt || (mixed && (!w->Wtf || !w->Wf)))
        return 0;
    for (size_t l = 0; l < m->L; l++) {
        const size_t sz = m->layer[l].out * m->layer[l].in;
        if (!(w->Wt[l] = cnf_calloc(sz, sizeof(double))))
            return 0;
        if (mixed && (!(w->Wtf[l] = cnf_calloc(sz, sizeof(float))) ||
                      !(w->Wf[l] = cnf_calloc(sz, sizeof(float)))))
            return 0;
    }
    return 1;
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

/* Samples per cache block with k_max tangents per sample. */
static size_t block_samples(size_t k_max)
{
    const size_t bs = BLOCK_ROWS / (1 + k_max);
    return bs < MIN_CHUNK_ROWS ? MIN_CHUNK_ROWS : bs;
}

/* Chunks of a call on n samples: cache blocks of at most bs samples, and at least one per
 * thread when each gets MIN_CHUNK_ROWS; an even number (when more than one), so that two threads
 * get equal shares (5 chunks on 2 threads ran 20% slower than 6). Depends on n, the block size
 * (from the work's k_max) and the thread count only, and so do the bits. */
static size_t chunk_count(size_t n, size_t bs, size_t threads)
{
    size_t c = (n + bs - 1) / bs;
    if (threads > 1 && c < threads && n >= threads * MIN_CHUNK_ROWS)
        c = threads;
    if (c > 1 && c % 2)
        c++;
    return c ? c : 1;
}

int cnf_mlp_work_create(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max, size_t k_max)
{
    return cnf_mlp_work_create_threads(out, m, n_max, k_max, 0);
}

int cnf_mlp_work_create_threads(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max,
                                size_t k_max, size_t threads)
{
    *out = NULL;
    cnf_blas_single_thread();
    if (threads == 0)
        threads = cnf_mlp_threads_default();
    if (threads > CNF_MLP_MAX_THREADS)
        threads = CNF_MLP_MAX_THREADS;
    if (n_max == 0 || k_max > (size_t)-1 / 2 / n_max)
        return work_create1(out, m, n_max, k_max, 1); /* which names the error */
    /* Samples per cache block, and the most chunks a call can have (n_chunks). */
    const size_t bs = block_samples(k_max), n_sub = chunk_count(n_max, bs, threads);
    if (n_sub <= 1)
        return work_create1(out, m, n_max, k_max, 1);
    cnf_mlp_work *w = calloc(1, sizeof *w);
    if (!w)
        return cnf_fail(CNF_ENOMEM, "allocating the MLP workspace");
    w->n_max = n_max;
    w->k_max = k_max;
    w->L = m->L;
    w->n_sub = n_sub;
    w->threads = threads;
    w->bs = bs;
    w->keep = w->kept = 1;
    /* A chunk never exceeds bs samples (see n_chunks). */
    size_t cap = bs < n_max ? bs : n_max;
    w->sub = cnf_calloc(n_sub, sizeof *w->sub);
    w->gpart = cnf_calloc(n_sub, m->n_params * sizeof(double));
    w->gtpart = cnf_calloc(n_sub, sizeof(double));
    w->rcpart = cnf_calloc(n_sub, sizeof(int));
    int rc = w->sub && w->gpart && w->gtpart && w->rcpart
                 ? CNF_OK
                 : cnf_fail(CNF_ENOMEM, "allocating the MLP workspace");
    if (rc == CNF_OK && (!weights_alloc(w, m) || !record_shape(w, m)))
        rc = cnf_fail(CNF_ENOMEM, "allocating the MLP workspace");
    for (size_t c = 0; rc == CNF_OK && c < n_sub; c++)
        rc = work_create1(&w->sub[c], m, cap, k_max, 0);
    if (rc == CNF_OK && threads > 1 && !(w->pool = pool_create(threads - 1)))
        rc = cnf_fail(CNF_ENOMEM, "starting %zu MLP worker threads", threads - 1);
    if (rc) {
        cnf_mlp_work_free(w);
        return rc;
    }
    *out = w;
    return CNF_OK;
}

static int work_create1(cnf_mlp_work **out, const cnf_mlp *m, size_t n_max, size_t k_max,
                        int own_weights)
{
    *out = NULL;
    if (n_max == 0)
        return cnf_fail(CNF_EINVAL, "MLP workspace for 0 rows");
    if (k_max > (size_t)-1 / 2 / n_max)
        return cnf_fail(CNF_EINVAL, "MLP workspace too large (%zu rows, %zu tangents)", n_max,
                        k_max);
    cnf_mlp_work *w = calloc(1, sizeof *w);
    if (!w)
        return cnf_fail(CNF_ENOMEM, "allocating the MLP workspace");
    size_t L = m->L, rows = n_max * (1 + k_max);
    w->keep = w->kept = 1;
    w->n_max = n_max;
    w->k_max = k_max;
    w->L = L;
    w->Y = cnf_calloc(L, sizeof *w->Y);
    w->Z = cnf_calloc(L, sizeof *w->Z);
    w->H = cnf_calloc(L, sizeof *w->H);
    w->DS = cnf_calloc(L, sizeof *w->DS);
    w->D2S = cnf_calloc(L, sizeof *w->D2S);
    w->G = cnf_calloc(L, sizeof *w->G);
    int ok = w->Y && w->Z && w->H && w->DS && w->D2S && w->G;
    /* Only what the passes read (see the struct): in double precision no hidden layer keeps z;
     * in mixed precision the first layer keeps its unit tangents' ż, and h, the input copy X0
     * and p, q (buf_c) live in float buffers instead. */
    const int mixed = m->cfg.precision == CNF_PRECISION_MIXED;
    for (size_t l = 0; ok && l < L; l++) {
        const size_t o = m->layer[l].out;
        const int hidden = l + 1 < L, keep_z = !hidden || (mixed && l == 0);
        w->Y[l] = cnf_calloc(rows, o * sizeof(double));
        w->Z[l] = keep_z ? cnf_calloc(rows, o * sizeof(double)) : NULL;
        w->G[l] = cnf_calloc(o, sizeof(double));
        ok = w->Y[l] && (w->Z[l] || !keep_z) && w->G[l];
        if (ok && hidden) {
            w->H[l] = mixed ? NULL : cnf_calloc(rows, o * sizeof(double));
            w->DS[l] = cnf_calloc(n_max, o * sizeof(double));
            w->D2S[l] = cnf_calloc(n_max, o * sizeof(double));
            ok = (w->H[l] || mixed) && w->DS[l] && w->D2S[l];
        }
    }
    if (ok) {
        w->X0 = mixed ? NULL : cnf_calloc(rows, m->cfg.d_in * sizeof(double));
        w->buf_a = cnf_calloc(rows, m->max_width * sizeof(double));
        w->buf_b = cnf_calloc(rows, m->max_width * sizeof(double));
        w->buf_c = mixed ? NULL : cnf_calloc(rows, m->max_width * sizeof(double));
        w->gamma = cnf_calloc(cnf_size_mul(4, m->max_width), sizeof(double));
        ok = (mixed || (w->X0 && w->buf_c)) && w->buf_a && w->buf_b && w->gamma;
    }
    if (ok && m->cfg.precision == CNF_PRECISION_MIXED) {
        w->Xf = cnf_calloc(L, sizeof *w->Xf);
        ok = w->Xf != NULL;
        for (size_t l = 0; ok && l < L; l++)
            ok = (w->Xf[l] = cnf_calloc(rows, m->layer[l].in * sizeof(float))) != NULL;
        if (ok) {
            w->af = cnf_calloc(rows, m->max_width * sizeof(float));
            w->cf = cnf_calloc(rows, m->max_width * sizeof(float));
            w->gwf = cnf_calloc(m->max_width, m->max_width * sizeof(float));
            w->vf = cnf_calloc(cnf_size_mul(4, m->max_width), sizeof(float));
            ok = w->af && w->cf && w->gwf && w->vf;
        }
    }
    ok = ok && record_shape(w, m) && (!own_weights || weights_alloc(w, m));
    if (!ok) {
        cnf_mlp_work_free(w);
        return cnf_fail(CNF_ENOMEM, "allocating the MLP workspace (%zu rows)", rows);
    }
    *out = w;
    return CNF_OK;
}

/* ---- forward with tangents ------------------------------------------------------------------ */

/* Record m's shape in w (0 on allocation failure). */
static int record_shape(cnf_mlp_work *w, const cnf_mlp *m)
{
    w->prec = m->cfg.precision;
    w->n_params = m->n_params;
    if (!(w->io = cnf_calloc(cnf_size_mul(2, m->L), sizeof(size_t))))
        return 0;
    for (size_t l = 0; l < m->L; l++) {
        w->io[2 * l] = m->layer[l].in;
        w->io[2 * l + 1] = m->layer[l].out;
    }
    return 1;
}

/* w serves m: the shape it was made for (its buffers, and the per-chunk gradient slots of
 * n_params, fit). Compared by value: m may be another MLP of the same shape. */
static int fits(const cnf_mlp_work *w, const cnf_mlp *m)
{
    if (!w->io || w->L != m->L || w->prec != (int)m->cfg.precision || w->n_params != m->n_params)
        return 0;
    for (size_t l = 0; l < m->L; l++)
        if (w->io[2 * l] != m->layer[l].in || w->io[2 * l + 1] != m->layer[l].out)
            return 0;
    return 1;
}

static int check_call(const cnf_mlp *m, size_t n, size_t K, const cnf_mlp_work *w, size_t ldx)
{
    if (!w || !fits(w, m))
        return cnf_fail(CNF_EINVAL, "MLP workspace missing or made for an MLP of another shape "
                        "or precision");
    if (n > w->n_max || K > w->k_max)
        return cnf_fail(CNF_EDIM, "batch of %zu rows with %zu tangents exceeds the workspace "
                        "(%zu rows, %zu tangents)", n, K, w->n_max, w->k_max);
    if (ldx < m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "row stride %zu is smaller than the input dimension %zu", ldx,
                        m->cfg.d_in);
    return CNF_OK;
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

/* The same without ż (no reverse pass follows). Yt = NULL: g already holds ż, the same for
 * every row (the first layer's unit tangents). T: float in mixed precision (g rounded to float
 * too: every operation has 16 lanes). */
#define TANGENT_LEAN(NAME, T)                                                                    \
    CNF_VECTOR_CLONES static void NAME(size_t n, size_t K, size_t o, const T *restrict g,        \
                                       const T *restrict ds, const T *restrict Yt,               \
                                       T *restrict Ht)                                           \
    {                                                                                            \
        for (size_t k = 0; k < K; k++)                                                           \
            for (size_t i = 0; i < n; i++) {                                                     \
                const T *dsi = ds + i * o;                                                       \
                T *hk = Ht + (k * n + i) * o;                                                    \
                if (!Yt) {                                                                       \
                    for (size_t j = 0; j < o; j++)                                               \
                        hk[j] = dsi[j] * g[j];                                                   \
                    continue;                                                                    \
                }                                                                                \
                const T *yk = Yt + (k * n + i) * o;                                              \
                for (size_t j = 0; j < o; j++)                                                   \
                    hk[j] = dsi[j] * (g[j] * yk[j]);                                             \
            }                                                                                    \
    }
TANGENT_LEAN(tangent_lean, double)
TANGENT_LEAN(tangent_lean_f, float)
#undef TANGENT_LEAN

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
    int rc = check_call(m, n, K, w, ldx);
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
                act_rows_f(m->cfg.act, n, o, b, g, ct, Yf, hf, dsf, d2f, w->vf);
                if (unit0)
                    tangent_keep_unit_f(n, K, o, g, dsf, Y + n * o, Z + n * o, hf + n * o);
                else
                    tangent_keep_f(n, K, o, gf, dsf, Yf + n * o, hf + n * o);
            } else if (keep) {
                act_primal(m->cfg.act, n, o, b, g, ct, Y, H, ds, d2s);
                tangent_pass(n, K, o, g, ds, Y + n * o, H + n * o);
            } else if (lean_f) {
                float *hf = w->Xf[l + 1], *dsf = (float *)ds;
                act_rows_f(m->cfg.act, n, o, b, g, ct, Yf, hf, dsf, NULL, w->vf);
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
                act_primal(m->cfg.act, n, o, b, g, ct, Y, H, ds, NULL);
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

/* Rows [i0, i1) of chunk c of nch over n rows. */
static void chunk_rows(size_t n, size_t nch, size_t c, size_t *i0, size_t *i1)
{
    *i0 = n * c / nch;
    *i1 = n * (c + 1) / nch;
}

struct rows_task {
    void (*fn)(void *ctx, size_t i0, size_t i1);
    void *ctx;
    size_t n, parts;
};

static void rows_part(void *arg, size_t c, size_t thread)
{
    (void)thread;
    const struct rows_task *rt = arg;
    size_t i0, i1;
    chunk_rows(rt->n, rt->parts, c, &i0, &i1);
    rt->fn(rt->ctx, i0, i1);
}

void cnf_mlp_work_rows(cnf_mlp_work *w, size_t n, void (*fn)(void *ctx, size_t i0, size_t i1),
                       void *ctx)
{
    const size_t parts = w && w->pool ? w->threads : 1;
    if (parts <= 1 || n < parts) {
        fn(ctx, 0, n);
        return;
    }
    struct rows_task rt = {.fn = fn, .ctx = ctx, .n = n, .parts = parts};
    pool_run(w->pool, rows_part, &rt, parts);
}

static size_t n_chunks(const cnf_mlp_work *w, size_t n)
{
    return chunk_count(n, w->bs, w->threads);
}

size_t cnf_mlp_cache_chunks(size_t n, size_t K)
{
    return chunk_count(n, block_samples(K), 1);
}

static void forward_chunk(void *arg, size_t c, size_t thread)
{
    cnf_mlp_work *w = arg;
    const struct task *tk = w->task;
    const size_t d = tk->m->cfg.d_in, n = tk->n;
    size_t i0, i1;
    chunk_rows(n, w->nch, c, &i0, &i1);
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
    int rc = check_call(m, n, K, w, ldx);
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
    w->nch = n_chunks(w, n);
    /* Reusing sub[thread] needs one buffer set per thread: n_sub ≥ threads. */
    w->kept = keep || w->n_sub < w->threads;
    struct task tk = {.m = m, .theta = theta, .t = t, .X = X, .ldx = ldx, .n = n, .K = K,
                      .U = U, .unit = unit, .F = F, .ldf = ldf, .JU = JU};
    w->task = &tk;
    if (w->nch == 1)
        forward_chunk(w, 0, 0);
    else
        pool_run(w->pool, forward_chunk, w, w->nch);
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
    chunk_rows(w->n, w->nch, c, i0, &i1);
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

void cnf_mlp_work_hold_weights(cnf_mlp_work *w, int hold)
{
    if (!w)
        return;
    w->hold = hold != 0;
    w->prepped = NULL; /* what was prepared before the hold may have changed since */
}

void cnf_mlp_work_set_keep(cnf_mlp_work *w, int keep)
{
    if (w)
        w->keep = keep != 0;
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

/* ---- the reverse kernel --------------------------------------------------------------------- */

static int backward1(const cnf_mlp *m, const double *theta, const double *R, size_t ldr,
                     const double *S, size_t lds, double *GX, size_t ldgx, double *gtheta,
                     int fresh, double *gt, cnf_mlp_work *w, const cnf_mlp_work *pw);

static void backward_chunk(void *arg, size_t c, size_t thread)
{
    (void)thread; /* chunk c's state is in sub[c], whoever runs it */
    cnf_mlp_work *w = arg;
    const struct task *tk = w->task;
    const cnf_mlp *m = tk->m;
    const size_t d = m->cfg.d_out, n = w->n;
    size_t i0, i1;
    chunk_rows(n, w->nch, c, &i0, &i1);
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
    if (w->m != m)
        return cnf_fail(CNF_EINVAL, "cnf_mlp_backward needs a workspace filled by a forward "
                        "call on the same MLP");
    if (R && ldr < m->cfg.d_out)
        return cnf_fail(CNF_EDIM, "seed row stride %zu < output dimension %zu", ldr,
                        m->cfg.d_out);
    if (GX && ldgx < m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "gradient row stride %zu < input dimension %zu", ldgx,
                        m->cfg.d_in);
    if (w->n == 0)
        return CNF_OK;
    struct task tk = {.m = m, .theta = theta, .R = R, .ldr = ldr, .S = S, .GX = GX,
                      .ldgx = ldgx, .gtheta = gtheta, .want_gt = gt != NULL};
    w->task = &tk;
    if (w->nch == 1)
        backward_chunk(w, 0, 0);
    else
        pool_run(w->pool, backward_chunk, w, w->nch);
    w->task = NULL;
    for (size_t c = 0; c < w->nch; c++)
        if (w->rcpart[c])
            return w->rcpart[c];
    /* Fixed-order reduction (chunk 0 accumulated into gtheta itself), split over the threads by
     * parameter slices when there is enough of it: each entry adds its chunks in chunk order. */
    if (gtheta && w->nch > 1) {
        w->task = &tk;
        if (w->pool && (w->nch - 1) * m->n_params >= 32768)
            pool_run(w->pool, reduce_slice, w, w->threads);
        else
            reduce_slice_of(w, 0, 1);
        w->task = NULL;
    }
    for (size_t c = 0; gt && c < w->nch; c++)
        *gt += w->gtpart[c];
    return CNF_OK;
}

/* The reverse kernel's elementwise passes, compiled for each vector width (CNF_VECTOR_CLONES);
 * TO (TI): float where mixed precision hands ȳ to sgemm (takes p, q from it).
 * ybar_pass, for the top layer: over the rows of seeds rs (n primal rows first), ȳ = g ⊙ r,
 * γ = Σ_rows r ⊙ y, and over the primal rows Σ r and Σ ȳ (all three (o) outputs zeroed here). */
#define YBAR_PASS(NAME, TO)                                                                      \
    CNF_VECTOR_CLONES static void NAME(size_t n, size_t rows, size_t o,                         \
                                       const double *restrict g, const double *restrict rs,      \
                                       const double *restrict Y, TO *restrict yb,                \
                                       double *restrict gam, double *restrict rsum,              \
                                       double *restrict ybsum)                                   \
    {                                                                                            \
        for (size_t j = 0; j < o; j++)                                                           \
            gam[j] = rsum[j] = ybsum[j] = 0.0;                                                   \
        for (size_t r = 0; r < n; r++) {                                                         \
            const double *rr = rs + r * o, *yr = Y + r * o;                                      \
            TO *ybr = yb + r * o;                                                                \
            for (size_t j = 0; j < o; j++) {                                                     \
                double v = rr[j], u = g[j] * v;                                                  \
                ybr[j] = (TO)u;                                                                  \
                gam[j] += v * yr[j];                                                             \
                rsum[j] += v;                                                                    \
                ybsum[j] += u;                                                                   \
            }                                                                                    \
        }                                                                                        \
        for (size_t r = n; r < rows; r++) {                                                      \
            const double *rr = rs + r * o, *yr = Y + r * o;                                      \
            TO *ybr = yb + r * o;                                                                \
            for (size_t j = 0; j < o; j++) {                                                     \
                double v = rr[j];                                                                \
                ybr[j] = (TO)(g[j] * v);                                                         \
                gam[j] += v * yr[j];                                                             \
            }                                                                                    \
        }                                                                                        \
    }
YBAR_PASS(ybar_pass, double)
YBAR_PASS(ybar_pass_f, float)
#undef YBAR_PASS

/* The same for a hidden layer, its seeds made on the fly from the layer above's p, q_k (PQ:
 * primal rows, then slab k): r = σ' ⊙ p + σ'' ⊙ Σ_k ż_k ⊙ q_k, s_k = σ' ⊙ q_k, never stored;
 * y + b and ż = g ⊙ ẏ are formed again from the GEMM's rows Yf as the forward left them.
 * Types: TS for σ', σ'' and the rows (float in mixed precision), TQ for p, q (float when sgemm
 * made them), TO for ȳ. UNIT (mixed precision only): the first layer's unit tangents, whose ẏ
 * (W's columns) and ż are double rows Ytd, Ztd. acc: (o) scratch. The same operations in the
 * same order as forming the seeds first and running ybar_pass on them. */
#define SEED_YBAR_PASS(NAME, TS, TQ, UNIT, TO)                                                   \
    CNF_VECTOR_CLONES static void NAME(                                                          \
        size_t n, size_t K, size_t o, const double *restrict g, const double *restrict b,       \
        const TS *restrict ds, const TS *restrict d2s, const TS *restrict Yf,                    \
        const double *restrict Ytd, const double *restrict Ztd, const TQ *restrict pq,           \
        TO *restrict yb, double *restrict gam, double *restrict rsum, double *restrict ybsum,    \
        double *restrict acc)                                                                    \
    {                                                                                            \
        for (size_t j = 0; j < o; j++)                                                           \
            gam[j] = rsum[j] = ybsum[j] = 0.0;                                                   \
        for (size_t i = 0; i < n; i++) {                                                         \
            const size_t r0 = i * o;                                                             \
            for (size_t k = 0; k < K; k++) {                                                     \
                const TQ *qk = pq + (1 + k) * n * o + r0;                                        \
                const TS *yk = Yf + (1 + k) * n * o + r0;                                        \
                const double *zk = UNIT ? Ztd + k * n * o + r0 : NULL;                           \
                for (size_t j = 0; j < o; j++) {                                                 \
                    double z = UNIT ? zk[j] : g[j] * (double)yk[j];                              \
                    acc[j] = k == 0 ? z * (double)qk[j] : acc[j] + z * (double)qk[j];            \
                }                                                                                \
            }                                                                                    \
            if (!K)                                                                              \
                for (size_t j = 0; j < o; j++)                                                   \
                    acc[j] = 0.0;                                                                \
            const TS *dsi = ds + r0, *d2i = d2s + r0, *yr = Yf + r0;                             \
            const TQ *p = pq + r0;                                                               \
            TO *ybr = yb + r0;                                                                   \
            for (size_t j = 0; j < o; j++) {                                                     \
                double v = (double)dsi[j] * (double)p[j] + (double)d2i[j] * acc[j],              \
                       u = g[j] * v;                                                             \
                ybr[j] = (TO)u;                                                                  \
                gam[j] += v * ((double)yr[j] + b[j]);                                            \
                rsum[j] += v;                                                                    \
                ybsum[j] += u;                                                                   \
            }                                                                                    \
        }                                                                                        \
        for (size_t k = 0; k < K; k++)                                                           \
            for (size_t i = 0; i < n; i++) {                                                     \
                const size_t r = ((1 + k) * n + i) * o;                                          \
                const TS *dsi = ds + i * o, *yk = Yf + r;                                        \
                const TQ *qk = pq + r;                                                           \
                const double *ytk = UNIT ? Ytd + (k * n + i) * o : NULL;                         \
                TO *ybr = yb + r;                                                                \
                for (size_t j = 0; j < o; j++) {                                                 \
                    double v = (double)dsi[j] * (double)qk[j];                                   \
                    ybr[j] = (TO)(g[j] * v);                                                     \
                    gam[j] += v * (UNIT ? ytk[j] : (double)yk[j]);                               \
                }                                                                                \
            }                                                                                    \
    }
SEED_YBAR_PASS(seed_ybar_pass, double, double, 0, double)
SEED_YBAR_PASS(seed_ybar_pass_f, float, float, 0, float)
SEED_YBAR_PASS(seed_ybar_pass_fu, float, float, 1, float)
SEED_YBAR_PASS(seed_ybar_pass_fud, float, float, 1, double)
#undef SEED_YBAR_PASS

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
    if (!w || w->m != m)
        return cnf_fail(CNF_EINVAL, "cnf_mlp_backward needs a workspace filled by a forward "
                        "call on the same MLP");
    if (R && ldr < m->cfg.d_out)
        return cnf_fail(CNF_EDIM, "seed row stride %zu < output dimension %zu", ldr,
                        m->cfg.d_out);
    if (GX && ldgx < m->cfg.d_in)
        return cnf_fail(CNF_EDIM, "gradient row stride %zu < input dimension %zu", ldgx,
                        m->cfg.d_in);
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
