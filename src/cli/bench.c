/* cnf bench: the speed benchmarks of issue 9 (cnf_bench_run), printed as a table with the
 * machine and settings, and with --json as one object {"meta": …, "results": […]} on the last
 * line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "cnf/bench.h"
#include "opts.h"

static int quick, json;
static const char *cases, *precision;
static size_t repeats, toy_iters;
static const cli_opt table[] = {
    {"--quick", OPT_FLAG, &quick, NULL, "small sizes, 2 repeats, 10 toy iterations (smoke run)", 0},
    {"--cases", OPT_STR, &cases, "LIST", "subset of rhs,eval,train,toy (default all)", 0},
    {"--repeats", OPT_SIZE, &repeats, "N", "timed repeats per case (0: 5, or 2 with --quick)", 0},
    {"--toy-iters", OPT_SIZE, &toy_iters, "N", "toy training iterations (0: 300, or 10 with --quick)", 0},
    {"--precision", OPT_STR, &precision, "P", "double, mixed (float32 layer products) or both", 0},
    {"--json", OPT_FLAG, &json, NULL, "one JSON object {meta, results} as the last line", 0},
};
static const size_t n_table = sizeof table / sizeof table[0];

static void help(FILE *out)
{
    fprintf(out,
            "usage: cnf bench [options]\n\n"
            "Speed benchmarks (medians over repeats after a warm-up run; untrained fields from a\n"
            "fixed seed; RK4 is 20 steps, Dopri5 rtol = atol = 1e-5):\n"
            "  rhs    the MLP right-hand side of a forward solve (forward + tangents) in\n"
            "         GFLOP/s vs its GEMMs alone: one per layer over the batch, and in the\n"
            "         RHS's cache blocks (at most 240 rows)\n"
            "  eval   log-density of 10,000 points, d = 2, 64-64-64 tanh, exact trace\n"
            "  train  one loss + gradient on 512 points: d = 2 exact, d = 16, 64 Hutchinson;\n"
            "         RK4 and Dopri5; backprop and adjoint\n"
            "  toy    FFJORD's toy configuration (8gaussians, batch 100): s per iteration,\n"
            "         with cnf's checkpointed adjoint and with backsolve (FFJORD's gradient)\n"
            "Peak memory is VmHWM during each case (it includes the process's baseline).\n"
            "Threads: OpenBLAS runs single-threaded unless OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS\n"
            "or OMP_NUM_THREADS is set; the MLP kernels split batches over CNF_NUM_THREADS\n"
            "threads (default: every online processor, at most 16; 1 is faster on a machine\n"
            "busy with other jobs).\n\n"
            "options:\n");
    cli_opts_help(out, table, n_table);
}

static int json_out;

static void print_row(const cnf_bench_result *r, void *ctx)
{
    (void)ctx;
    FILE *out = json_out ? stderr : stdout;
    char solver[16];
    snprintf(solver, sizeof solver, r->steps ? "%s-%zu" : "%s", r->solver, r->steps);
    fprintf(out, "%-5s d=%-3zu w=%-3zu %-5s %-8s %-8s batch=%-6zu %-6s median %9.5f s  %10.0f pts/s",
            r->bench, r->d, r->width, r->trace, solver, r->grad, r->batch, r->precision,
            r->median_s, r->points_per_s);
    if (r->nfe_fwd > 0 || r->nfe_bwd > 0)
        fprintf(out, "  nfe %.1f/%.1f", r->nfe_fwd, r->nfe_bwd);
    if (r->gflops > 0)
        fprintf(out, "  %.1f GFLOP/s (GEMMs alone %.1f, %.0f%%; in cache blocks %.1f, %.0f%%; "
                "by CPU time %.1f vs %.1f, %.0f%%, blocks %.1f, %.0f%%)",
                r->gflops, r->gemm_gflops, 100.0 * r->gflops / r->gemm_gflops,
                r->gemm_blocked_gflops, 100.0 * r->gflops / r->gemm_blocked_gflops,
                r->gflops_cpu, r->gemm_gflops_cpu, 100.0 * r->gflops_cpu / r->gemm_gflops_cpu,
                r->gemm_blocked_gflops_cpu, 100.0 * r->gflops_cpu / r->gemm_blocked_gflops_cpu);
    fprintf(out, "  cpu %.5f s", r->cpu_s);
    fprintf(out, "  peak %.1f MB\n", r->peak_rss_mb);
    fflush(out);
}

static void json_str(const char *key, const char *v, int comma)
{
    printf("\"%s\":", key);
    cli_json_string(stdout, v);
    if (comma)
        putchar(',');
}

static void json_num(const char *key, double v, int comma)
{
    printf("\"%s\":", key);
    cli_json_number(stdout, v);
    if (comma)
        putchar(',');
}

int cmd_bench(int argc, char **argv)
{
    quick = json = 0;
    cases = NULL;
    precision = "double";
    repeats = toy_iters = 0;
    int u = cli_opts_parse("bench", table, n_table, argc, argv, help);
    if (u)
        return u == 1 ? 0 : 2;
    unsigned precisions = !strcmp(precision, "double") ? 1u
                          : !strcmp(precision, "mixed") ? 2u
                          : !strcmp(precision, "both")  ? 3u
                                                        : 0u;
    if (!precisions) {
        fprintf(stderr, "cnf bench: --precision must be double, mixed or both, not '%s'\n",
                precision);
        return 2;
    }
    json_out = json;
    cnf_bench_machine mi;
    cnf_bench_machine_info(&mi);
    FILE *out = json ? stderr : stdout;
    fprintf(out, "cnf %s bench: %s, %d cores; OpenBLAS %s (core %s), %d BLAS thread(s); "
                 "cblas_dgemm from %s; %d cnf thread(s); precision %s%s\n",
            cnf_version(), mi.cpu, mi.cores, mi.blas_config, mi.blas_core, mi.blas_threads,
            mi.gemm_library[0] ? mi.gemm_library : "(unknown)", mi.cnf_threads, precision,
            quick ? "; quick" : "");
    fflush(out);
    cnf_bench_options opt = {.quick = quick, .cases = cases, .repeats = repeats,
                             .toy_iters = toy_iters, .precisions = precisions,
                             .on_result = print_row};
    cnf_bench_result *res = NULL;
    size_t n = 0;
    int rc = cnf_bench_run(&opt, &res, &n);
    if (rc) {
        cli_error("bench", rc, "benchmark failed");
        return rc == CNF_ENAME ? 2 : 1;
    }
    if (json) {
        printf("{\"meta\":{");
        json_str("version", cnf_version(), 1);
        json_str("cpu", mi.cpu, 1);
        json_num("cores", mi.cores, 1);
        json_str("blas", mi.blas_config, 1);
        json_str("blas_core", mi.blas_core, 1);
        json_num("blas_threads", mi.blas_threads, 1);
        json_str("gemm_library", mi.gemm_library, 1);
        json_num("cnf_threads", mi.cnf_threads, 1);
        json_str("precision", precision, 1);
        printf("\"quick\":%s},\"results\":[", quick ? "true" : "false");
        for (size_t i = 0; i < n; i++) {
            const cnf_bench_result *r = &res[i];
            printf("%s{", i ? "," : "");
            json_str("bench", r->bench, 1);
            json_num("d", (double)r->d, 1);
            json_str("trace", r->trace, 1);
            json_str("solver", r->solver, 1);
            json_str("grad", r->grad, 1);
            json_num("batch", (double)r->batch, 1);
            json_num("steps", (double)r->steps, 1);
            json_num("width", (double)r->width, 1);
            json_str("precision", r->precision, 1);
            json_num("repeats", (double)r->repeats, 1);
            json_num("median_s", r->median_s, 1);
            json_num("mean_s", r->mean_s, 1);
            json_num("points_per_s", r->points_per_s, 1);
            json_num("nfe_fwd", r->nfe_fwd, 1);
            json_num("nfe_bwd", r->nfe_bwd, 1);
            if (!strcmp(r->bench, "rhs")) {
                json_num("gflops", r->gflops, 1);
                json_num("gemm_gflops", r->gemm_gflops, 1);
                json_num("gemm_blocked_gflops", r->gemm_blocked_gflops, 1);
            }
            json_num("cpu_s", r->cpu_s, 1);
            if (!strcmp(r->bench, "rhs")) {
                json_num("gflops_cpu", r->gflops_cpu, 1);
                json_num("gemm_gflops_cpu", r->gemm_gflops_cpu, 1);
                json_num("gemm_blocked_gflops_cpu", r->gemm_blocked_gflops_cpu, 1);
            }
            json_num("peak_rss_mb", r->peak_rss_mb, 0);
            putchar('}');
        }
        printf("]}\n");
    }
    free(res);
    return 0;
}
