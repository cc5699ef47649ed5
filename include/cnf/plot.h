/* PNG pictures of 2-D flows, like FFJORD's figure: square panels side by side, each a 2-D
 * histogram of points, a density given on a grid, or a scatter of points, in the viridis colour
 * map (dark purple = 0 → yellow = the panel's maximum).
 *
 * Every panel shows the same axis box [xmin, xmax] × [ymin, ymax] (x to the right, y up). The
 * PNG records it in a tEXt chunk, keyword "extent", value "xmin xmax ymin ymax" (%.17g), and the
 * panel kinds in tEXt "panels" (e.g. "histogram density scatter"), so the pixel ↔ coordinate map
 * is known to any reader: panel k occupies columns [k·(P + G), k·(P + G) + P) for panel side P
 * and gap G (white), pixel (c, r) of a panel has centre x = xmin + (c + ½)(xmax − xmin)/P,
 * y = ymax − (r + ½)(ymax − ymin)/P. Panels carry no drawn titles or tick labels (no font is
 * built in); the text chunks say what each panel is.
 *
 * Normalisation per panel: histogram counts / max count; density p / max p, with p = exp(v − max v)
 * for log-densities; scatter 1 − exp(−0.7·hits) per pixel (a point marks a 3×3 dot). Points
 * outside the box or not finite are left out. The file is written atomically (temporary file,
 * fsync, rename). Errors: CNF_EINVAL (sizes, extent, NULL data), CNF_ENONFINITE (NaN in a density
 * grid), CNF_EIO (detail names the file), CNF_ENOMEM. */
#ifndef CNF_PLOT_H
#define CNF_PLOT_H

#include "cnf/core.h"
#include "cnf/flow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_PANEL_HIST = 0,    /* 2-D histogram of points (FFJORD's data and sample panels) */
    CNF_PANEL_DENSITY = 1, /* values on a grid (FFJORD's model density panel) */
    CNF_PANEL_SCATTER = 2, /* points as dots */
} cnf_panel_kind;

typedef struct cnf_plot_panel {
    cnf_panel_kind kind;
    const double *points; /* HIST, SCATTER: (n, 2), borrowed */
    size_t n;
    size_t bins;          /* HIST: bins per axis (0 = 100, FFJORD's default) */
    const double *values; /* DENSITY: (ny, nx) row-major, borrowed; cell (i, j) is centred at
                           * x = xmin + (j + ½)(xmax − xmin)/nx, y = ymin + (i + ½)(ymax − ymin)/ny
                           * (row 0 at the bottom), as filled in by cnf_plot_grid */
    size_t nx, ny;
    int is_log;           /* DENSITY: values are log-densities (−inf allowed: zero density) */
} cnf_plot_panel;

typedef struct cnf_plot_settings {
    size_t panel_px; /* side of each panel in pixels, 16..4096 */
    size_t gap_px;   /* white columns between panels, ≤ 256 */
    double xmin, xmax, ymin, ymax;
} cnf_plot_settings;

/* 256-pixel panels, 4-pixel gaps, FFJORD's box [-4, 4]². */
CNF_API void cnf_plot_settings_default(cnf_plot_settings *s);

/* The (ny·nx, 2) cell centres of a DENSITY grid in the order of cnf_plot_panel.values, so a model
 * can be evaluated exactly where the panel expects it. CNF_EINVAL for a zero size or NULL. */
CNF_API int cnf_plot_grid(const cnf_plot_settings *s, size_t nx, size_t ny, double *X /* (ny*nx, 2) */);

/* Write the panels left to right into one RGB PNG of (n_panels·P + (n_panels − 1)·G) × P pixels. */
CNF_API int cnf_plot_write_png(const char *path, const cnf_plot_panel *panels, size_t n_panels,
                               const cnf_plot_settings *s);

/* The colour map: v in [0, 1] (clamped; NaN → 0) to 8-bit sRGB, linear interpolation between 16
 * samples of matplotlib's viridis (van der Walt & Smith 2015). */
CNF_API void cnf_plot_colormap(double v, unsigned char rgb[3]);

/* FFJORD's figure for a 2-D flow in one call: the data as a histogram, the model density
 * exp(log p) evaluated on a grid×grid lattice of the box, and a histogram of n_samples model
 * samples drawn from rng, left to right. s may be NULL (defaults). Errors of the flow (e.g. its
 * ODE solver) are returned as they are; CNF_EDIM if the flow is not 2-D. */
CNF_API int cnf_plot_flow(const char *path, cnf_flow *f, const double *data /* (n_data, 2) */,
                          size_t n_data, size_t grid, size_t n_samples, cnf_rng *rng,
                          const cnf_plot_settings *s);

/* The same figure for an unnormalized target density (reverse KL): the target exp(log q̃) on the
 * grid (logq as in cnf_flow_rkl_grad), the model density, and a histogram of model samples. */
CNF_API int cnf_plot_target(const char *path, cnf_flow *f, cnf_logq_fn logq, void *ctx,
                            size_t grid, size_t n_samples, cnf_rng *rng,
                            const cnf_plot_settings *s);

#ifdef __cplusplus
}
#endif
#endif
