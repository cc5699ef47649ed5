/* FFJORD's three-panel picture of a 2-D flow (see cnf_plot_flow in cnf/plot.h). */
#include <stdlib.h>

#include "cnf/plot.h"
#include "core/internal.h"

/* Panel 0 is either a histogram of data or a target density on the grid. */
static int three_panels(const char *path, cnf_flow *f, const double *data, size_t n_data,
                        cnf_logq_fn logq, void *ctx, size_t grid, size_t n_samples,
                        cnf_rng *rng, const cnf_plot_settings *s)
{
    if (cnf_flow_dim(f) != 2)
        return cnf_fail(CNF_EDIM, "pictures are of 2-D flows; this one has dimension %zu",
                        cnf_flow_dim(f));
    if (grid == 0 || n_samples == 0)
        return cnf_fail(CNF_EINVAL, "picture needs a grid and samples");
    cnf_plot_settings def;
    if (!s) {
        cnf_plot_settings_default(&def);
        s = &def;
    }
    double *G = cnf_calloc(cnf_size_mul(cnf_size_mul(grid, grid), 2), sizeof(double));
    double *lp = cnf_calloc(cnf_size_mul(grid, grid), sizeof(double));
    double *lq = logq ? cnf_calloc(cnf_size_mul(grid, grid), sizeof(double)) : NULL;
    double *S = cnf_calloc(cnf_size_mul(n_samples, 2), sizeof(double));
    int rc = (!G || !lp || !S || (logq && !lq))
                 ? cnf_fail(CNF_ENOMEM, "allocating the picture's points") : CNF_OK;
    if (!rc) rc = cnf_plot_grid(s, grid, grid, G);
    if (!rc && logq && (rc = logq(ctx, G, grid * grid, lq, NULL)) > 0)
        rc = cnf_fail(CNF_ERHS, "target log-density callback returned %d", rc);
    if (!rc) rc = cnf_flow_log_prob(f, G, grid * grid, lp, NULL);
    if (!rc) rc = cnf_flow_sample(f, n_samples, rng, S, NULL, NULL);
    if (!rc) {
        cnf_plot_panel p[3] = {
            {.kind = CNF_PANEL_HIST, .points = data, .n = n_data},
            {.kind = CNF_PANEL_DENSITY, .values = lp, .nx = grid, .ny = grid, .is_log = 1},
            {.kind = CNF_PANEL_HIST, .points = S, .n = n_samples},
        };
        if (logq)
            p[0] = (cnf_plot_panel){.kind = CNF_PANEL_DENSITY, .values = lq, .nx = grid,
                                    .ny = grid, .is_log = 1};
        rc = cnf_plot_write_png(path, p, 3, s);
    }
    free(G);
    free(lp);
    free(lq);
    free(S);
    return rc;
}

int cnf_plot_flow(const char *path, cnf_flow *f, const double *data, size_t n_data, size_t grid,
                  size_t n_samples, cnf_rng *rng, const cnf_plot_settings *s)
{
    return three_panels(path, f, data, n_data, NULL, NULL, grid, n_samples, rng, s);
}

int cnf_plot_target(const char *path, cnf_flow *f, cnf_logq_fn logq, void *ctx, size_t grid,
                    size_t n_samples, cnf_rng *rng, const cnf_plot_settings *s)
{
    if (!logq)
        return cnf_fail(CNF_EINVAL, "no target density to draw");
    return three_panels(path, f, NULL, 0, logq, ctx, grid, n_samples, rng, s);
}
