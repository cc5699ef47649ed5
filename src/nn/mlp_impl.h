/* What the files of the MLP layer (src/nn) share among themselves: the MLP object, its
 * workspace, a call split over chunks, and the functions one file provides for another. Not for
 * the layers above (they use cnf/mlp.h and internal.h). */
#ifndef CNF_NN_MLP_IMPL_H
#define CNF_NN_MLP_IMPL_H

#include "cnf/mlp.h"
#include "core/pool.h"
#include "internal.h"

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
     * are bit-identical from run to run for a given chunking (cnf_nn_n_chunks). */
    size_t n_sub, nch; /* chunks available, chunks of the last call */
    size_t threads, bs; /* threads, samples per cache block */
    cnf_mlp_work **sub;
    /* keep (default 1): forward calls keep every chunk's buffers for cnf_mlp_backward. With
     * keep = 0 (cnf_mlp_work_set_keep) chunks reuse their thread's buffers, sub[thread], so a
     * large batch streams through cache rather than memory; kept records which the last call
     * did. */
    int keep, kept;
    cnf_pool *pool; /* NULL with one thread */
    double *gpart;  /* (n_sub, n_params) */
    double *gtpart; /* (n_sub) */
    int *rcpart;    /* (n_sub) */
    const struct task *task;
};

/* An absent parameter vector's offset (struct layer). */
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

/* ---- the workspace (work.c) ------------------------------------------------------------------ */

/* CNF_OK when w serves a call on m over n rows with K tangents and input row stride ldx, else
 * the error, named. */
int cnf_nn_check_call(const cnf_mlp *m, size_t n, size_t K, const cnf_mlp_work *w, size_t ldx);

/* Rows [i0, i1) of chunk c of nch over n rows. */
void cnf_nn_chunk_rows(size_t n, size_t nch, size_t c, size_t *i0, size_t *i1);

/* The chunks a call on n samples is split into on the threaded work w. */
size_t cnf_nn_n_chunks(const cnf_mlp_work *w, size_t n);

/* ---- the fused activation passes (act.c) ------------------------------------------------------
 * One hidden layer over n primal rows (o units): z = g ⊙ (y + b) + ct; h, σ', σ'' = σ(z), σ'(z),
 * σ''(z) from y (Y, the layer's GEMM rows without b). d2s = NULL: no reverse pass follows, only h
 * and σ' are stored. */
void cnf_nn_act_rows(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                     const double *ct, const double *Y, double *H, double *ds, double *d2s);

/* The same on float rows (mixed precision): Y from sgemm, h into the next layer's float input,
 * σ', σ'' in float; vf holds b, g, c t in float for tanh's all-float pass. */
void cnf_nn_act_rows_f(cnf_act act, size_t n, size_t o, const double *b, const double *g,
                       const double *ct, const float *Y, float *H, float *ds, float *d2s,
                       const float *vf);

#endif
