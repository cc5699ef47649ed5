/* PNG panels with libpng (see cnf/plot.h). Each panel is first rendered as an intensity in
 * [0, 1] per pixel, then coloured with viridis. libpng's errors longjmp back here; its warnings
 * are dropped (the library never prints). */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/atomic.h"
#include "cnf/plot.h"
#include "core/internal.h"

/* viridis sampled at 16 equally spaced points (matplotlib's published map). */
static const unsigned char viridis[16][3] = {
    {0x44, 0x01, 0x54}, {0x48, 0x1a, 0x6c}, {0x47, 0x2f, 0x7d}, {0x41, 0x44, 0x87},
    {0x39, 0x56, 0x8c}, {0x31, 0x68, 0x8e}, {0x2a, 0x78, 0x8e}, {0x23, 0x88, 0x8e},
    {0x1f, 0x98, 0x8b}, {0x22, 0xa8, 0x84}, {0x35, 0xb7, 0x79}, {0x54, 0xc5, 0x68},
    {0x7a, 0xd1, 0x51}, {0xa5, 0xdb, 0x36}, {0xd2, 0xe2, 0x1b}, {0xfd, 0xe7, 0x25},
};

void cnf_plot_colormap(double v, unsigned char rgb[3])
{
    if (!(v > 0))
        v = 0;
    if (v > 1)
        v = 1;
    double u = v * 15.0;
    size_t k = u >= 15.0 ? 14 : (size_t)u;
    double w = u - (double)k;
    for (int c = 0; c < 3; c++)
        rgb[c] = (unsigned char)lround((1 - w) * viridis[k][c] + w * viridis[k + 1][c]);
}

void cnf_plot_settings_default(cnf_plot_settings *s)
{
    s->panel_px = 256;
    s->gap_px = 4;
    s->xmin = s->ymin = -4.0;
    s->xmax = s->ymax = 4.0;
}

static int check_settings(const cnf_plot_settings *s)
{
    if (!s)
        return cnf_fail(CNF_EINVAL, "plot settings are NULL");
    if (s->panel_px < 16 || s->panel_px > 4096)
        return cnf_fail(CNF_EINVAL, "panel size %zu px is outside 16..4096", s->panel_px);
    if (s->gap_px > 256)
        return cnf_fail(CNF_EINVAL, "panel gap %zu px is over 256", s->gap_px);
    if (!(isfinite(s->xmin) && isfinite(s->xmax) && s->xmin < s->xmax && isfinite(s->ymin) &&
          isfinite(s->ymax) && s->ymin < s->ymax))
        return cnf_fail(CNF_EINVAL, "plot extent [%g, %g] x [%g, %g] is empty or not finite",
                        s->xmin, s->xmax, s->ymin, s->ymax);
    return CNF_OK;
}

int cnf_plot_grid(const cnf_plot_settings *s, size_t nx, size_t ny, double *X)
{
    int rc = check_settings(s);
    if (rc)
        return rc;
    if (!nx || !ny || !X)
        return cnf_fail(CNF_EINVAL, "plot grid %zu x %zu", nx, ny);
    double dx = (s->xmax - s->xmin) / (double)nx, dy = (s->ymax - s->ymin) / (double)ny;
    for (size_t i = 0; i < ny; i++)
        for (size_t j = 0; j < nx; j++) {
            X[2 * (i * nx + j)] = s->xmin + ((double)j + 0.5) * dx;
            X[2 * (i * nx + j) + 1] = s->ymin + ((double)i + 0.5) * dy;
        }
    return CNF_OK;
}

/* Fraction (x − lo)/(hi − lo) as an index in [0, m), or −1 outside (NaN included). */
static long cell(double x, double lo, double hi, size_t m)
{
    double u = (x - lo) / (hi - lo) * (double)m;
    if (!(u >= 0 && u < (double)m))
        return -1;
    return (long)u;
}

static int check_panel(const cnf_plot_panel *p, size_t k)
{
    switch (p->kind) {
    case CNF_PANEL_HIST:
    case CNF_PANEL_SCATTER:
        if (p->n && !p->points)
            return cnf_fail(CNF_EINVAL, "panel %zu: %zu points but no array", k, p->n);
        if (p->kind == CNF_PANEL_HIST && p->bins > 4096)
            return cnf_fail(CNF_EINVAL, "panel %zu: %zu bins per axis (max 4096)", k, p->bins);
        return CNF_OK;
    case CNF_PANEL_DENSITY:
        if (!p->nx || !p->ny || !p->values || p->nx > 100000 || p->ny > 100000)
            return cnf_fail(CNF_EINVAL, "panel %zu: density grid %zu x %zu", k, p->nx, p->ny);
        for (size_t i = 0; i < p->nx * p->ny; i++) {
            double v = p->values[i];
            if (isnan(v) || (p->is_log ? v == INFINITY : (!isfinite(v) || v < 0)))
                return cnf_fail(isnan(v) || isinf(v) ? CNF_ENONFINITE : CNF_EINVAL,
                                "panel %zu: density value %zu is %g", k, i, v);
        }
        return CNF_OK;
    }
    return cnf_fail(CNF_EINVAL, "panel %zu: unknown kind %d", k, (int)p->kind);
}

/* Intensity in [0, 1] per pixel (P × P, row 0 at the top). */
static int render(const cnf_plot_panel *p, const cnf_plot_settings *s, double *I)
{
    const size_t P = s->panel_px;
    double top = 0.0;
    if (p->kind == CNF_PANEL_HIST) {
        size_t B = p->bins ? p->bins : 100;
        double *h = cnf_calloc(cnf_size_mul(B, B), sizeof *h);
        if (!h)
            return cnf_fail(CNF_ENOMEM, "histogram of %zu x %zu bins", B, B);
        for (size_t i = 0; i < p->n; i++) {
            long bx = cell(p->points[2 * i], s->xmin, s->xmax, B);
            long by = cell(p->points[2 * i + 1], s->ymin, s->ymax, B);
            if (bx >= 0 && by >= 0)
                top = fmax(top, ++h[(size_t)by * B + (size_t)bx]);
        }
        for (size_t r = 0; r < P; r++)
            for (size_t c = 0; c < P; c++) {
                size_t bx = (c * B + B / 2) / P, by = ((P - 1 - r) * B + B / 2) / P;
                bx = bx < B ? bx : B - 1;
                by = by < B ? by : B - 1;
                I[r * P + c] = top > 0 ? h[by * B + bx] / top : 0.0;
            }
        free(h);
    } else if (p->kind == CNF_PANEL_DENSITY) {
        const size_t nx = p->nx, ny = p->ny;
        double vmax = -INFINITY;
        for (size_t i = 0; i < nx * ny; i++)
            vmax = fmax(vmax, p->values[i]);
        for (size_t r = 0; r < P; r++)
            for (size_t c = 0; c < P; c++) {
                /* Nearest cell to the pixel centre. */
                size_t j = (size_t)(((double)c + 0.5) / (double)P * (double)nx);
                size_t i = (size_t)(((double)(P - 1 - r) + 0.5) / (double)P * (double)ny);
                double v = p->values[(i < ny ? i : ny - 1) * nx + (j < nx ? j : nx - 1)];
                double d = p->is_log ? (vmax > -INFINITY ? exp(v - vmax) : 0.0)
                                     : (vmax > 0 ? v / vmax : 0.0);
                I[r * P + c] = d;
            }
    } else {
        memset(I, 0, P * P * sizeof *I);
        for (size_t i = 0; i < p->n; i++) {
            long cx = cell(p->points[2 * i], s->xmin, s->xmax, P);
            long cy = cell(p->points[2 * i + 1], s->ymin, s->ymax, P);
            if (cx < 0 || cy < 0)
                continue;
            long r0 = (long)P - 1 - cy;
            for (long dr = -1; dr <= 1; dr++)
                for (long dc = -1; dc <= 1; dc++) {
                    long r = r0 + dr, c = cx + dc;
                    if (r >= 0 && c >= 0 && r < (long)P && c < (long)P)
                        I[(size_t)r * P + (size_t)c] += 1.0;
                }
        }
        for (size_t i = 0; i < P * P; i++)
            I[i] = 1.0 - exp(-0.7 * I[i]);
    }
    return CNF_OK;
}

typedef struct {
    jmp_buf jmp;
    char msg[200];
} png_err;

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_err *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    longjmp(e->jmp, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static const char *kind_name(cnf_panel_kind k)
{
    return k == CNF_PANEL_HIST ? "histogram" : k == CNF_PANEL_DENSITY ? "density" : "scatter";
}

/* Encode the RGB rows into fp. 0 or −1 with e->msg set. */
static int encode(FILE *fp, png_bytep *rows, size_t W, size_t H, const cnf_plot_panel *panels,
                  size_t n_panels, const cnf_plot_settings *s, png_err *e)
{
    char extent[128], kinds[16 * 64] = "";
    snprintf(extent, sizeof extent, "%.17g %.17g %.17g %.17g", s->xmin, s->xmax, s->ymin, s->ymax);
    for (size_t k = 0; k < n_panels; k++) {
        if (k)
            strcat(kinds, " ");
        strcat(kinds, kind_name(panels[k].kind));
    }
    png_text text[3] = {
        {.compression = PNG_TEXT_COMPRESSION_NONE, .key = "extent", .text = extent},
        {.compression = PNG_TEXT_COMPRESSION_NONE, .key = "panels", .text = kinds},
        {.compression = PNG_TEXT_COMPRESSION_NONE, .key = "Software", .text = "cnf " CNF_VERSION_STRING},
    };
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, on_png_error,
                                              on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(e->msg, sizeof e->msg, "libpng initialisation failed");
        return -1;
    }
    if (setjmp(e->jmp)) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_text(png, info, text, 3);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int cnf_plot_write_png(const char *path, const cnf_plot_panel *panels, size_t n_panels,
                       const cnf_plot_settings *s)
{
    int rc = check_settings(s);
    if (rc)
        return rc;
    if (!path || !panels || n_panels == 0 || n_panels > 64)
        return cnf_fail(CNF_EINVAL, "plot: %zu panels (1..64) and a path are needed", n_panels);
    for (size_t k = 0; k < n_panels; k++)
        if ((rc = check_panel(&panels[k], k)))
            return rc;
    const size_t P = s->panel_px, G = s->gap_px, W = n_panels * P + (n_panels - 1) * G, H = P;
    unsigned char *img = malloc(W * H * 3);
    png_bytep *rows = cnf_calloc(H, sizeof *rows);
    double *I = cnf_calloc(cnf_size_mul(P, P), sizeof *I);
    if (!img || !rows || !I) {
        rc = cnf_fail(CNF_ENOMEM, "%s: %zu x %zu image", path, W, H);
        goto done;
    }
    memset(img, 255, W * H * 3);
    for (size_t k = 0; k < n_panels; k++) {
        if ((rc = render(&panels[k], s, I)))
            goto done;
        for (size_t r = 0; r < P; r++)
            for (size_t c = 0; c < P; c++)
                cnf_plot_colormap(I[r * P + c], img + 3 * (r * W + k * (P + G) + c));
    }
    for (size_t r = 0; r < H; r++)
        rows[r] = img + 3 * r * W;
    cnf_atomic_file af;
    if ((rc = cnf_atomic_open(&af, path)))
        goto done;
    png_err e = {.msg = ""};
    if (encode(af.fp, rows, W, H, panels, n_panels, s, &e) != 0) {
        rc = cnf_fail(CNF_EIO, "%s: PNG encoding failed: %s (previous file left unchanged)", path,
                      e.msg);
        cnf_atomic_abort(&af);
        goto done;
    }
    rc = cnf_atomic_commit(&af);
done:
    free(img);
    free(rows);
    free(I);
    return rc;
}
