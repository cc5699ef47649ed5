/* The MLP's workspace: its buffers for a batch of at most n_max samples with k_max tangents
 * (sized per precision: the struct in mlp_impl.h says what each holds), the shape it serves, the
 * split of a call into cache-sized chunks over a thread pool (src/core/pool.c), and per-row loops
 * on that pool for the layers above. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlp_impl.h"

enum { CNF_MLP_MAX_THREADS = CNF_POOL_MAX_THREADS };
/* Chunks smaller than this are not worth a thread's wake-up (a few µs). */
enum { MIN_CHUNK_ROWS = 16 };
/* Cache blocking: a chunk holds at most this many rows (samples × (1 + K)), so that a layer's
 * GEMM output is still in L1/L2 when the elementwise pass reads it (at 10,000 samples the
 * unblocked buffers are megabytes each and those passes ran at memory speed). 240, not 256:
 * OpenBLAS 0.3.21 (SkylakeX) multiplies without packing when M·N·K ≤ 10⁶, and for 64-wide
 * layers 240 rows stay under it: the reverse pass's GEMMs measured 65–75 GFLOP/s at 240 rows
 * against 46–56 at 256 (double, one core). */
enum { BLOCK_ROWS = 240 };


/* Every online processor unless asked: on the idle 2-core machine of the benchmarks two threads
 * took FFJORD's toy iteration from 0.0397 to 0.0204 s, 10,000-point RK4 log-density from 1.27 to
 * 0.69 s and 512-point RK4 training steps from 0.33 to 0.21 s. On a machine shared with other
 * jobs they were slower (a helper descheduled in the middle of its chunk stalls the caller):
 * CNF_NUM_THREADS=1 there. The bits depend on the chunking, which changes with the thread count
 * only for batches below one cache block per thread (chunk_count). */
size_t cnf_mlp_threads_default(void)
{
    const char *e = getenv("CNF_NUM_THREADS");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long v = e && *e ? strtol(e, NULL, 10) : cores;
    if (v < 1)
        v = 1;
    return v > CNF_MLP_MAX_THREADS ? CNF_MLP_MAX_THREADS : (size_t)v;
}

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
    cnf_pool_free(w->pool);
    for (size_t c = 0; w->sub && c < w->n_sub; c++)
        cnf_mlp_work_free(w->sub[c]);
    free(w->sub);
    free(w->gpart);
    free(w->gtpart);
    free(w->rcpart);
    free(w);
}


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

/* own_weights: the work prepares its own weights (not a chunk of a threaded work, which reads
 * its parent's). */
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
    /* Samples per cache block, and the most chunks a call can have (chunk_count). */
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
    /* A chunk never exceeds bs samples (see chunk_count). */
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
    if (rc == CNF_OK && threads > 1 && !(w->pool = cnf_pool_create(threads - 1)))
        rc = cnf_fail(CNF_ENOMEM, "starting %zu MLP worker threads", threads - 1);
    if (rc) {
        cnf_mlp_work_free(w);
        return rc;
    }
    *out = w;
    return CNF_OK;
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

int cnf_nn_check_call(const cnf_mlp *m, size_t n, size_t K, const cnf_mlp_work *w, size_t ldx)
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

/* Rows [i0, i1) of chunk c of nch over n rows. */
void cnf_nn_chunk_rows(size_t n, size_t nch, size_t c, size_t *i0, size_t *i1)
{
    *i0 = n * c / nch;
    *i1 = n * (c + 1) / nch;
}

size_t cnf_nn_n_chunks(const cnf_mlp_work *w, size_t n)
{
    return chunk_count(n, w->bs, w->threads);
}

size_t cnf_mlp_cache_chunks(size_t n, size_t K)
{
    return chunk_count(n, block_samples(K), 1);
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
    cnf_nn_chunk_rows(rt->n, rt->parts, c, &i0, &i1);
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
    cnf_pool_run(w->pool, rows_part, &rt, parts);
}
