/* The speed benchmarks of issue 9 (see cnf/bench.h for the cases). Each case builds its flow or
 * field from a fixed seed, runs once or more to warm up (caches, page faults, OpenBLAS buffers),
 * then times `repeats` runs and reports the median. Peak memory: Linux resets VmHWM to the
 * current resident set when "5" is written to /proc/self/clear_refs (proc(5)). */
#define _GNU_SOURCE /* dladdr, RTLD_DEFAULT */
#include <cblas.h>
#include <dlfcn.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cnf/bench.h"
#include "cnf/cflow.h"
#include "cnf/toy.h"
#include "cnf/flow.h"
#include "cnf/mlp.h"
#include "cnf/train.h"
#include "core/internal.h"
#include "nn/internal.h"

/* CPU seconds of the process (all threads) and of the calling thread. */
static double cpu_now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void reset_peak(void)
{
#ifdef __GLIBC__
    malloc_trim(0); /* what earlier cases freed must not count as this one's */
#endif
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static double peak_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kb / 1024.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarize(cnf_bench_result *r, double *t, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += t[i];
    qsort(t, n, sizeof *t, cmp_double);
    r->repeats = n;
    r->median_s = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    r->mean_s = sum / (double)n;
    r->points_per_s = r->median_s > 0 ? (double)r->batch / r->median_s : 0.0;
}

static void set_name(char *dst, size_t len, const char *s)
{
    snprintf(dst, len, "%s", s);
}

void cnf_bench_machine_info(cnf_bench_machine *m)
{
    memset(m, 0, sizeof *m);
    set_name(m->cpu, sizeof m->cpu, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            const char *p = strchr(line, ':');
            if (p) {
                p += 1 + (p[1] == ' ');
                set_name(m->cpu, sizeof m->cpu, p);
                m->cpu[strcspn(m->cpu, "\n")] = 0;
            }
            break;
        }
    }
    if (f)
        fclose(f);
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    m->cores = nc > 0 ? (int)nc : 1;
    set_name(m->blas_core, sizeof m->blas_core, openblas_get_corename());
    set_name(m->blas_config, sizeof m->blas_config, openblas_get_config());
    cnf_blas_single_thread(); /* what every case's first workspace does: report it */
    m->blas_threads = openblas_get_num_threads();
    /* The dynamic loader's answer for the name libcnf's calls resolve to. */
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, "cblas_dgemm");
    set_name(m->gemm_library, sizeof m->gemm_library,
             sym && dladdr(sym, &info) && info.dli_fname ? info.dli_fname : "");
    m->cnf_threads = (int)cnf_mlp_threads_default();
}

/* ---- the cases ------------------------------------------------------------------------------ */

typedef struct bench_ctx {
    const cnf_bench_options *opt;
    size_t repeats;
    cnf_precision prec; /* of the cases being run */
    cnf_bench_result *res;
    size_t n, cap;
} bench_ctx;

static int emit(bench_ctx *b, const cnf_bench_result *r)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 32;
        cnf_bench_result *p = realloc(b->res, cap * sizeof *p);
        if (!p)
            return cnf_fail(CNF_ENOMEM, "storing benchmark results");
        b->res = p;
        b->cap = cap;
    }
    b->res[b->n++] = *r;
    if (b->opt->on_result)
        b->opt->on_result(r, b->opt->ctx);
    return CNF_OK;
}

/* rk4 > 0: RK4 with that many steps; 0: Dopri5 at 1e-5. */
static void use_solver(cnf_solve_config *sc, int rk4)
{
    cnf_ode_options_default(&sc->opt);
    if (rk4) {
        sc->stepper = cnf_stepper_rk4;
        sc->opt.steps = (size_t)rk4;
    } else {
        sc->stepper = cnf_stepper_dopri5;
        sc->opt.rtol = sc->opt.atol = 1e-5;
    }
}

/* Points for dimension d: 8gaussians for d = 2, standard normal otherwise. */
static double *bench_points(size_t n, size_t d, cnf_rng *rng)
{
    double *X = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    if (!X)
        return NULL;
    if (d == 2)
        cnf_toy_sample_named("8gaussians", n, X, rng);
    else
        for (size_t i = 0; i < n * d; i++)
            X[i] = cnf_rng_normal(rng);
    return X;
}

/* One warm-up and b->repeats timed runs of log p (grad = 0; out: (batch) log p) or of the loss
 * and its gradient (grad = 1; out: (n_params)); fills r's figures and emits it. t: (repeats). */
static int time_flow(bench_ctx *b, cnf_bench_result *r, cnf_flow *f, const double *X,
                     double *out, int grad, double *t)
{
    int rc = CNF_OK;
    double c0 = 0.0;
    reset_peak();
    for (size_t i = 0; rc == CNF_OK && i < b->repeats + 1; i++) {
        cnf_flow_stats st = {0};
        if (i == 1)
            c0 = cpu_now(CLOCK_PROCESS_CPUTIME_ID);
        cnf_rng probes;
        cnf_rng_seed(&probes, 3); /* the same probes every run: the same work */
        double loss, t0 = cnf_wall_seconds();
        rc = grad ? cnf_flow_nll_grad(f, X, r->batch, &probes, &loss, out, &st)
                  : cnf_flow_log_prob(f, X, r->batch, out, &st);
        if (i > 0)
            t[i - 1] = cnf_wall_seconds() - t0;
        r->nfe_fwd = (double)st.nfe_forward;
        r->nfe_bwd = (double)st.nfe_backward;
    }
    r->cpu_s = (cpu_now(CLOCK_PROCESS_CPUTIME_ID) - c0) / (double)b->repeats;
    r->peak_rss_mb = peak_mb();
    if (rc)
        return rc;
    summarize(r, t, b->repeats);
    return emit(b, r);
}

static int case_eval(bench_ctx *b, int rk4)
{
    const size_t d = 2, n = b->opt->quick ? 1000 : 10000;
    cnf_bench_result r = {.d = d, .batch = n, .steps = rk4 ? 20 : 0, .width = 64};
    set_name(r.bench, sizeof r.bench, "eval");
    set_name(r.trace, sizeof r.trace, "exact");
    set_name(r.solver, sizeof r.solver, rk4 ? "rk4" : "dopri5");
    set_name(r.grad, sizeof r.grad, "none");
    set_name(r.precision, sizeof r.precision, cnf_precision_name(b->prec));
    cnf_rng rng;
    cnf_rng_seed(&rng, 1);
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, d);
    use_solver(&cfg.eval, rk4 ? 20 : 0);
    cfg.precision = b->prec;
    cnf_flow *f = NULL;
    double *X = bench_points(n, d, &rng), *lp = cnf_calloc(n, sizeof(double));
    double *t = cnf_calloc(b->repeats, sizeof(double));
    int rc = X && lp && t ? cnf_cflow_create(&f, &cfg, &rng)
                          : cnf_fail(CNF_ENOMEM, "benchmark buffers");
    if (rc == CNF_OK)
        rc = time_flow(b, &r, f, X, lp, 0, t);
    cnf_flow_free(f);
    free(X);
    free(lp);
    free(t);
    return rc;
}

static int case_train(bench_ctx *b, size_t d, int rk4, int adjoint)
{
    const size_t n = b->opt->quick ? 128 : 512;
    cnf_bench_result r = {.d = d, .batch = n, .steps = (size_t)rk4, .width = 64};
    set_name(r.bench, sizeof r.bench, "train");
    set_name(r.trace, sizeof r.trace, d == 2 ? "exact" : "hutch");
    set_name(r.solver, sizeof r.solver, rk4 ? "rk4" : "dopri5");
    set_name(r.grad, sizeof r.grad, adjoint ? "adjoint" : "backprop");
    set_name(r.precision, sizeof r.precision, cnf_precision_name(b->prec));
    cnf_rng rng;
    cnf_rng_seed(&rng, 2);
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, d);
    cfg.trace = d == 2 ? CNF_TRACE_EXACT : CNF_TRACE_HUTCH_RADEMACHER;
    cfg.grad = adjoint ? CNF_GRAD_ADJOINT : CNF_GRAD_BACKPROP;
    use_solver(&cfg.train, rk4);
    cfg.precision = b->prec;
    cnf_flow *f = NULL;
    double *X = bench_points(n, d, &rng), *t = cnf_calloc(b->repeats, sizeof(double));
    int rc = X && t ? cnf_cflow_create(&f, &cfg, &rng) : cnf_fail(CNF_ENOMEM, "benchmark buffers");
    double *g = rc ? NULL : cnf_calloc(cnf_flow_n_params(f), sizeof(double));
    if (rc == CNF_OK && !g)
        rc = cnf_fail(CNF_ENOMEM, "benchmark gradient");
    if (rc == CNF_OK)
        rc = time_flow(b, &r, f, X, g, 1, t);
    cnf_flow_free(f);
    free(X);
    free(g);
    free(t);
    return rc;
}

/* C (M, N) = A (M, K) · B (K, N) in float: a layer product as the MLP issues it (the weights
 * transposed once per call, src/nn/forward.c prep_weights). */
static void sgemm_nn(size_t M, size_t N, size_t K, const float *A, const float *B, float *C)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A,
                (int)K, B, (int)N, 0.0f, C, (int)N);
}

/* The layer products of the right-hand side alone, shapes (rows' × in) · (in × out) as
 * run_forward issues them, over the n samples split into nch equal chunks as src/nn/work.c splits
 * them (nch = 1: one GEMM per layer over the whole batch). */
static void rhs_gemms(int mixed, size_t n, size_t nch, size_t K, int unit, size_t d,
                      size_t width, const double *theta, double *A, double *C, const float *Wf,
                      float *Af, float *Cf)
{
    for (size_t ch = 0; ch < nch; ch++) {
        size_t i0 = n * ch / nch, nb = n * (ch + 1) / nch - i0, rows = nb * (1 + K),
               r0 = i0 * (1 + K);
        if (mixed) {
            sgemm_nn(unit ? nb : rows, width, d, Af + r0 * width, Wf, Cf + r0 * width);
            sgemm_nn(rows, width, width, Af + r0 * width, Wf, Cf + r0 * width);
            sgemm_nn(rows, width, width, Cf + r0 * width, Wf, Af + r0 * width);
            sgemm_nn(rows, d, width, Af + r0 * width, Wf, Cf + r0 * width);
        } else {
            double *a = A + r0 * width, *c = C + r0 * width;
            cnf_gemm(0, 0, unit ? nb : rows, width, d, 1.0, a, d, theta, width, 0.0, c, width);
            cnf_gemm(0, 0, rows, width, width, 1.0, a, width, theta, width, 0.0, c, width);
            cnf_gemm(0, 0, rows, width, width, 1.0, c, width, theta, width, 0.0, a, width);
            cnf_gemm(0, 0, rows, d, width, 1.0, a, width, theta, d, 0.0, c, d);
        }
    }
}

/* The MLP right-hand side (forward + K tangents) against its own GEMMs timed alone: over the
 * whole batch (the shape of the problem) and in the RHS's cache blocks of at most 240 rows (the
 * shapes it actually issues, and the faster reference once the batch outgrows the cache). */
static int case_rhs(bench_ctx *b, size_t d, size_t width)
{
    const size_t n = b->opt->quick ? 1000 : 10000, K = d == 2 ? d : 1;
    const int unit = d == 2;
    cnf_bench_result r = {.d = d, .batch = n, .width = width};
    set_name(r.bench, sizeof r.bench, "rhs");
    set_name(r.trace, sizeof r.trace, unit ? "exact" : "hutch");
    set_name(r.solver, sizeof r.solver, "");
    set_name(r.grad, sizeof r.grad, "none");
    set_name(r.precision, sizeof r.precision, cnf_precision_name(b->prec));
    size_t hidden[3] = {width, width, width};
    cnf_mlp_config mc = {.d_in = d, .d_out = d, .n_hidden = 3, .hidden = hidden,
                         .act = CNF_ACT_TANH, .time = CNF_TIME_CONCATSQUASH,
                         .precision = b->prec};
    cnf_mlp *m = NULL;
    cnf_mlp_work *w = NULL;
    cnf_rng rng;
    cnf_rng_seed(&rng, 4);
    const size_t rows = n * (1 + K), reps = cnf_size_mul(b->repeats, b->opt->quick ? 4 : 2);
    int rc = cnf_mlp_create(&m, &mc);
    if (rc == CNF_OK)
        rc = cnf_mlp_work_create_threads(&w, m, n, K, 1); /* one core, as the GEMMs below */
    /* As in a forward solve: no reverse pass follows, so the chunks share one set of buffers. */
    if (rc == CNF_OK)
        cnf_mlp_work_set_keep(w, 0);
    double *theta = rc ? NULL : cnf_calloc(cnf_mlp_n_params(m), sizeof(double));
    const size_t nd = cnf_size_mul(n, d), knd = cnf_size_mul(K, nd), rw = cnf_size_mul(rows, width);
    double *X = bench_points(n, d, &rng), *U = cnf_calloc(knd, sizeof(double));
    double *F = cnf_calloc(nd, sizeof(double)), *JU = cnf_calloc(knd, sizeof(double));
    double *A = cnf_calloc(rw, sizeof(double)), *C = cnf_calloc(rw, sizeof(double));
    const int mixed = b->prec == CNF_PRECISION_MIXED;
    float *Af = cnf_calloc(rw, sizeof(float));
    float *Cf = cnf_calloc(rw, sizeof(float));
    float *Wf = rc ? NULL : cnf_calloc(cnf_mlp_n_params(m), sizeof(float));
    if (rc == CNF_OK &&
        (!theta || !X || !U || !F || !JU || !A || !C || !Af || !Cf || !Wf))
        rc = cnf_fail(CNF_ENOMEM, "benchmark buffers");
    if (rc == CNF_OK) {
        cnf_mlp_init(m, theta, &rng);
        for (size_t i = 0; i < K * n * d; i++)
            U[i] = cnf_rng_rademacher(&rng);
        for (size_t i = 0; i < rows * width; i++)
            Af[i] = (float)(A[i] = cnf_rng_uniform(&rng) - 0.5);
        for (size_t i = 0; i < cnf_mlp_n_params(m); i++)
            Wf[i] = (float)theta[i];
    }
    /* Useful work: the layer products (tangents of the first layer are free for unit vectors). */
    double flops = 2.0 * (double)(unit ? n : rows) * (double)(d * width) +
                   2.0 * 2.0 * (double)rows * (double)(width * width) +
                   2.0 * (double)rows * (double)(width * d);
    reset_peak();
    /* Timed: [0] the RHS, [1] its GEMMs over the whole batch, [2] the same in cache blocks;
     * wall clock in tw[k], the thread's CPU time in tcpu[k]. */
    double *tbuf = cnf_calloc(cnf_size_mul(6, reps), sizeof(double)), *tw[3], *tcpu[3];
    const size_t nch = cnf_mlp_cache_chunks(n, K); /* the cache blocks of src/nn/work.c */
    if (rc == CNF_OK && !tbuf)
        rc = cnf_fail(CNF_ENOMEM, "benchmark buffers");
    for (int k = 0; tbuf && k < 3; k++) {
        tw[k] = tbuf + 2 * k * reps;
        tcpu[k] = tw[k] + reps;
    }
    for (size_t i = 0; rc == CNF_OK && i < reps + 1; i++)
        for (int k = 0; rc == CNF_OK && k < 3; k++) {
            double c0 = cpu_now(CLOCK_THREAD_CPUTIME_ID), t0 = cnf_wall_seconds();
            if (k == 0)
                rc = cnf_mlp_jvp(m, theta, 0.5, X, d, n, unit ? NULL : U, K, F, d, JU, w);
            else
                rhs_gemms(mixed, n, k == 1 ? 1 : nch, K, unit, d, width, theta, A, C, Wf, Af,
                          Cf);
            if (i > 0) {
                tw[k][i - 1] = cnf_wall_seconds() - t0;
                tcpu[k][i - 1] = cpu_now(CLOCK_THREAD_CPUTIME_ID) - c0;
            }
        }
    r.peak_rss_mb = peak_mb();
    if (rc == CNF_OK) {
        summarize(&r, tcpu[1], reps);
        r.gemm_gflops_cpu = flops / r.median_s * 1e-9;
        summarize(&r, tcpu[2], reps);
        r.gemm_blocked_gflops_cpu = flops / r.median_s * 1e-9;
        summarize(&r, tw[2], reps);
        r.gemm_blocked_gflops = flops / r.median_s * 1e-9;
        summarize(&r, tcpu[0], reps);
        r.gflops_cpu = flops / r.median_s * 1e-9;
        r.cpu_s = r.median_s;
        summarize(&r, tw[1], reps);
        r.gemm_gflops = flops / r.median_s * 1e-9;
        summarize(&r, tw[0], reps);
        r.gflops = flops / r.median_s * 1e-9;
        r.nfe_fwd = 1.0;
        rc = emit(b, &r);
    }
    cnf_mlp_work_free(w);
    cnf_mlp_free(m);
    free(theta);
    free(X);
    free(U);
    free(F);
    free(JU);
    free(A);
    free(C);
    free(Af);
    free(Cf);
    free(Wf);
    free(tbuf);
    return rc;
}

static int toy_batch(void *ctx, size_t n, double *X, cnf_rng *rng)
{
    (void)ctx;
    return cnf_toy_sample_named("8gaussians", n, X, rng);
}

typedef struct toy_timer {
    double last, *t;
    size_t n, cap;
    double nfe_f, nfe_b;
} toy_timer;

static int toy_progress(const cnf_train_progress *p, void *ctx)
{
    toy_timer *tt = ctx;
    double s = cnf_wall_seconds();
    if (tt->n < tt->cap)
        tt->t[tt->n++] = s - tt->last;
    tt->nfe_f += (double)p->nfe_forward;
    tt->nfe_b += (double)p->nfe_backward;
    tt->last = cnf_wall_seconds();
    return 0;
}

/* FFJORD's train_toy.py settings (8gaussians, cnf train's defaults), with our checkpointed
 * adjoint or with backsolve, the gradient torchdiffeq's odeint_adjoint (FFJORD's) computes. */
static int case_toy(bench_ctx *b, cnf_grad_mode grad)
{
    size_t iters = b->opt->toy_iters ? b->opt->toy_iters : (b->opt->quick ? 10 : 300);
    cnf_bench_result r = {.d = 2, .batch = 100, .width = 64};
    set_name(r.bench, sizeof r.bench, "toy");
    set_name(r.trace, sizeof r.trace, "exact");
    set_name(r.solver, sizeof r.solver, "dopri5");
    set_name(r.grad, sizeof r.grad, cnf_grad_mode_name(grad));
    set_name(r.precision, sizeof r.precision, cnf_precision_name(b->prec));
    cnf_rng rng;
    cnf_rng_seed(&rng, 0);
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.T = 0.5;
    cfg.train_T = 1;
    cfg.precision = b->prec;
    cfg.grad = grad;
    cnf_flow *f = NULL;
    cnf_trainer *tr = NULL;
    toy_timer tt = {.cap = iters};
    tt.t = cnf_calloc(iters, sizeof(double));
    int rc = tt.t ? cnf_cflow_create(&f, &cfg, &rng)
                  : cnf_fail(CNF_ENOMEM, "toy timings of %zu iterations", iters);
    cnf_train_config tc = {.iters = iters, .batch = 100, .next_batch = toy_batch,
                           .progress = toy_progress, .progress_ctx = &tt};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = 1e-3;
    tc.optim.weight_decay = 1e-5;
    if (rc == CNF_OK)
        rc = cnf_trainer_create(&tr, f, &tc, 0);
    reset_peak();
    double c0 = cpu_now(CLOCK_PROCESS_CPUTIME_ID);
    if (rc == CNF_OK) {
        tt.last = cnf_wall_seconds();
        rc = cnf_trainer_run(tr);
    }
    r.cpu_s = (cpu_now(CLOCK_PROCESS_CPUTIME_ID) - c0) / (double)(tt.n ? tt.n : 1);
    r.peak_rss_mb = peak_mb();
    if (rc == CNF_OK && tt.n > 0) {
        r.nfe_fwd = tt.nfe_f / (double)tt.n;
        r.nfe_bwd = tt.nfe_b / (double)tt.n;
        summarize(&r, tt.t, tt.n);
        rc = emit(b, &r);
    }
    cnf_trainer_free(tr);
    cnf_flow_free(f);
    free(tt.t);
    return rc;
}

/* ---- driver --------------------------------------------------------------------------------- */

static int selected(const char *cases, const char *name)
{
    if (!cases)
        return 1;
    size_t len = strlen(name);
    for (const char *p = cases; *p;) {
        size_t l = strcspn(p, ",");
        if (l == len && !strncmp(p, name, len))
            return 1;
        p += l + (p[l] == ',');
    }
    return 0;
}

static int run_cases(bench_ctx *b)
{
    const cnf_bench_options *opt = b->opt;
    int rc = CNF_OK;
    if (selected(opt->cases, "rhs")) {
        rc = case_rhs(b, 2, 64);
        if (!rc) rc = case_rhs(b, 16, 64);
        if (!rc && !opt->quick) rc = case_rhs(b, 2, 256);
    }
    if (!rc && selected(opt->cases, "eval")) {
        rc = case_eval(b, 1);
        if (!rc) rc = case_eval(b, 0);
    }
    if (!rc && selected(opt->cases, "train")) {
        static const size_t dims[] = {2, 16, 64};
        for (size_t i = 0; !rc && i < 3; i++)
            for (int rk4 = 20; !rc && rk4 >= 0; rk4 -= 20)
                for (int adj = 0; !rc && adj <= 1; adj++)
                    rc = case_train(b, dims[i], rk4, adj);
        /* Peak memory against the number of steps (issue 9, acceptance 4): RK4 with 4x more. */
        for (int adj = 0; !rc && adj <= 1; adj++)
            rc = case_train(b, 2, 80, adj);
    }
    if (!rc && selected(opt->cases, "toy")) {
        rc = case_toy(b, CNF_GRAD_ADJOINT);
        if (!rc)
            rc = case_toy(b, CNF_GRAD_BACKSOLVE);
    }
    return rc;
}

static int check_cases(const char *cases)
{
    static const char *const names[] = {"eval", "train", "rhs", "toy"};
    for (const char *p = cases; p && *p;) {
        size_t l = strcspn(p, ","), ok = 0;
        for (size_t i = 0; i < 4; i++)
            ok |= strlen(names[i]) == l && !strncmp(p, names[i], l);
        if (!ok)
            return cnf_fail(CNF_ENAME, "unknown benchmark case '%.*s' (valid: eval, train, rhs, "
                            "toy)", (int)l, p);
        p += l + (p[l] == ',');
    }
    return CNF_OK;
}

int cnf_bench_run(const cnf_bench_options *opt, cnf_bench_result **results, size_t *n)
{
    *results = NULL;
    *n = 0;
    cnf_bench_options dflt = {0};
    if (!opt)
        opt = &dflt;
    int rc = check_cases(opt->cases);
    if (rc)
        return rc;
    bench_ctx b = {.opt = opt, .repeats = opt->repeats ? opt->repeats : (opt->quick ? 2 : 5)};
    /* A timing is kept per repeat (the GEMM case: 4 per repeat) and per toy iteration. */
    if (!cnf_size_ok(cnf_size_mul(b.repeats, 4)) || !cnf_size_ok(opt->toy_iters))
        return cnf_fail(CNF_ENOMEM, "bench: timings of %zu repeats and %zu toy iterations cannot "
                        "be stored", b.repeats, opt->toy_iters);
    const unsigned precisions = opt->precisions ? opt->precisions : 1u;
    for (unsigned p = 0; !rc && p < 2; p++)
        if (precisions & (1u << p)) {
            b.prec = p ? CNF_PRECISION_MIXED : CNF_PRECISION_DOUBLE;
            rc = run_cases(&b);
        }
    if (rc) {
        free(b.res);
        return rc;
    }
    *results = b.res;
    *n = b.n;
    return CNF_OK;
}
