/* adjoint_memory: peak memory of one CNF gradient for N and 10·N solver steps, by gradient mode.
 *
 *   build/examples/adjoint_memory [N [SAMPLES]]          (defaults: 100 steps, 2000 samples)
 *
 * Backprop through the solver and the built-in checkpointed adjoint store every accepted state
 * (and backprop the RK stages), so their memory grows linearly with the number of steps. The
 * CVODES adjoint keeps only its checkpoints (one every 50 steps: at most q_max + 2 = 14 state
 * vectors each for Adams) plus interpolation data for one checkpoint interval, so its growth is
 * bounded by the checkpoint storage. The steps are forced with hmax = T/N at a loose tolerance.
 * Each gradient runs in a fresh child process whose peak resident set is read from
 * /proc/self/status (VmHWM) after resetting it (/proc/self/clear_refs), so runs do not see each
 * other's heap. Exit status 0 when the CVODES growth stays within the checkpoint bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cnf.h>

static long status_kb(const char *key)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t len = strlen(key);
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, key, len))
            v = strtol(line + len, NULL, 10);
    if (fp)
        fclose(fp);
    return v;
}

typedef struct result {
    long peak_kb; /* peak growth over the resident set before the gradient */
    size_t steps;
    int rc;
} result;

/* One gradient in this process: returns its peak memory growth and the steps taken. */
static result gradient(cnf_grad_mode mode, const cnf_stepper_type *st, size_t n_steps, size_t n)
{
    static const size_t hidden[] = {32, 32};
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.hidden = hidden;
    cfg.n_hidden = 2;
    cfg.T = 1.0;
    cfg.grad = mode;
    cfg.train.stepper = st;
    cfg.train.opt.rtol = cfg.train.opt.atol = 1e-3;
    cfg.train.opt.hmax = 1.0 / (double)n_steps;
    cfg.train.opt.max_steps = 100 * n_steps;
    cnf_rng rng;
    cnf_rng_seed(&rng, 1);
    cnf_flow *f = NULL;
    result r = {0};
    double *X = malloc(n * 2 * sizeof(double)), *g = NULL, loss;
    r.rc = cnf_cflow_create(&f, &cfg, &rng);
    if (!r.rc) {
        g = malloc(cnf_flow_n_params(f) * sizeof(double));
        r.rc = cnf_toy_sample_named("8gaussians", n, X, &rng);
    }
    /* Reset the high-water mark to the current resident set, then measure. */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    long base = status_kb("VmRSS:");
    cnf_flow_stats stats;
    if (!r.rc)
        r.rc = cnf_flow_nll_grad(f, X, n, NULL, &loss, g, &stats);
    r.peak_kb = status_kb("VmHWM:") - base;
    r.steps = r.rc ? 0 : stats.steps;
    free(X);
    free(g);
    cnf_flow_free(f);
    return r;
}

/* The same in a child process, so each measurement starts from the same heap. */
static result measured(cnf_grad_mode mode, const cnf_stepper_type *st, size_t n_steps, size_t n)
{
    int fd[2];
    result r = {.rc = CNF_EIO};
    if (pipe(fd))
        return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        r = gradient(mode, st, n_steps, n);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    if (pid < 0 || read(fd[0], &r, sizeof r) != (ssize_t)sizeof r)
        r.rc = CNF_EIO;
    close(fd[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return r;
}

int main(int argc, char **argv)
{
    size_t N = argc > 1 ? strtoul(argv[1], NULL, 10) : 100;
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
    const size_t state_kb = n * (2 + 3) * sizeof(double) / 1024; /* (x, l, E, N) per sample */
    printf("CNF d=2 32-32 tanh, %zu samples: one state vector is %zu KiB\n", n, state_kb);
    printf("%-22s %8s %12s %8s %12s %12s\n", "gradient", "steps", "peak MiB", "steps",
           "peak MiB", "growth MiB");
    const struct {
        const char *label;
        cnf_grad_mode mode;
        const cnf_stepper_type *const *st;
    } modes[] = {{"backprop (dopri5)", CNF_GRAD_BACKPROP, &cnf_stepper_dopri5},
                 {"adjoint (dopri5)", CNF_GRAD_ADJOINT, &cnf_stepper_dopri5},
                 {"adjoint (cvode-adams)", CNF_GRAD_ADJOINT, &cnf_stepper_cvode_adams}};
    int ok = 1;
    for (size_t m = 0; m < 3; m++) {
        result a = measured(modes[m].mode, *modes[m].st, N, n);
        result b = measured(modes[m].mode, *modes[m].st, 10 * N, n);
        if (a.rc || b.rc) {
            printf("%-22s failed: %s\n", modes[m].label, cnf_strerror(a.rc ? a.rc : b.rc));
            ok = 0;
            continue;
        }
        double growth = (double)(b.peak_kb - a.peak_kb) / 1024.0;
        printf("%-22s %8zu %12.1f %8zu %12.1f %12.1f\n", modes[m].label, a.steps,
               a.peak_kb / 1024.0, b.steps, b.peak_kb / 1024.0, growth);
        if (modes[m].st == &cnf_stepper_cvode_adams) {
            /* Checkpoints added: one per 50 steps, at most 14 state vectors each. */
            double bound = (double)((b.steps - a.steps) / 50 + 1) * 14.0 * (double)state_kb /
                           1024.0;
            printf("  CVODES checkpoint storage for the extra steps: at most %.1f MiB -> %s\n",
                   bound, growth <= bound + 1.0 ? "within it" : "EXCEEDED");
            ok = ok && growth <= bound + 1.0;
        } else {
            double stored = (double)(b.steps - a.steps) * (double)state_kb / 1024.0;
            printf("  one stored state per extra step: %.1f MiB\n", stored);
        }
    }
    return ok ? 0 : 1;
}
