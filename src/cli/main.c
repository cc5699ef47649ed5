/* cnf — the command-line front end. Dispatches to one function per subcommand (see cli.h). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"demo", cmd_demo, "evaluate a small random MLP velocity field and its divergence"},
    {"solvers", cmd_solvers, "compare ODE solvers on problems with known answers"},
    {"train", cmd_train, "train a flow: toy sets or data files, flow matching, reverse KL"},
    {"eval", cmd_eval, "mean negative log-likelihood of a saved model"},
    {"sample", cmd_sample, "draw samples from a saved model (CSV or .npy)"},
    {"plot", cmd_plot, "FFJORD's picture of a saved 2-D model"},
    {"gradcheck", cmd_gradcheck, "compare backprop, adjoint, CVODES and backsolve gradients with FD"},
    {"bench", cmd_bench, "speed benchmarks: RHS GFLOP/s, log-density, training steps, FFJORD's toy"},
};
static const size_t n_commands = sizeof commands / sizeof commands[0];

void cli_error(const char *cmd, int code, const char *what)
{
    const char *detail = cnf_errmsg();
    fprintf(stderr, "cnf %s: %s: %s%s%s\n", cmd, what, cnf_strerror(code), *detail ? ": " : "",
            detail);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: cnf <command> [options]   (cnf <command> --help for its options)\n\n"
                 "Continuous normalizing flows and neural ODEs.\n\ncommands:\n");
    for (size_t i = 0; i < n_commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n  --version  print the version\n  --help     print this help\n\n"
                 "OpenBLAS runs single-threaded unless OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or\n"
                 "OMP_NUM_THREADS is set; the network's batches are split over CNF_NUM_THREADS\n"
                 "threads (default: every online processor, at most 16; set 1 on a machine busy\n"
                 "with other jobs).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("cnf %s\n", cnf_version());
        return 0;
    }
    /* OpenBLAS runs on one thread unless the environment says otherwise: the library sets it
     * when the first MLP workspace is made (cnf/mlp.h); the PCA of `--pca` runs before that and
     * may use OpenBLAS's threads. */
    for (size_t i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cnf: unknown command '%s' (cnf --help lists them)\n", argv[1]);
    return 2;
}
