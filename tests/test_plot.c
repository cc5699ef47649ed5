/* PNG pictures: read back with libpng (size, extent chunk), mass where the points are, the colour
 * map's ends, density normalisation, errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf/toy.h"
#include "cnf/plot.h"

typedef struct {
    png_uint_32 w, h;
    unsigned char *rgb; /* (h, w, 3) */
    char extent[128], panels[256];
} image;

/* Read an 8-bit RGB PNG back with libpng's simplified reader plus its text chunks. */
static image read_png(const char *path)
{
    image im = {0};
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "no file %s", path);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    cr_assert(!setjmp(png_jmpbuf(png)), "libpng could not read %s", path);
    png_init_io(png, fp);
    png_read_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    im.w = png_get_image_width(png, info);
    im.h = png_get_image_height(png, info);
    cr_assert_eq(png_get_color_type(png, info), PNG_COLOR_TYPE_RGB);
    cr_assert_eq(png_get_bit_depth(png, info), 8);
    png_bytepp rows = png_get_rows(png, info);
    im.rgb = malloc((size_t)im.w * im.h * 3);
    for (png_uint_32 r = 0; r < im.h; r++)
        memcpy(im.rgb + (size_t)r * im.w * 3, rows[r], (size_t)im.w * 3);
    png_textp text;
    int nt = 0;
    png_get_text(png, info, &text, &nt);
    for (int i = 0; i < nt; i++) {
        if (strcmp(text[i].key, "extent") == 0)
            snprintf(im.extent, sizeof im.extent, "%s", text[i].text);
        if (strcmp(text[i].key, "panels") == 0)
            snprintf(im.panels, sizeof im.panels, "%s", text[i].text);
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return im;
}

/* Position of a pixel colour along the colour map: the v whose colour is nearest. */
static double level(const unsigned char *px)
{
    double best = INFINITY, vbest = 0;
    for (int k = 0; k <= 1000; k++) {
        unsigned char c[3];
        cnf_plot_colormap(k / 1000.0, c);
        double d = 0;
        for (int j = 0; j < 3; j++)
            d += (c[j] - px[j]) * (double)(c[j] - px[j]);
        if (d < best)
            best = d, vbest = k / 1000.0;
    }
    return vbest;
}

static char path[64];

static void setup(void)
{
    snprintf(path, sizeof path, "/tmp/cnf_plot_%d.png", (int)getpid());
}

static void teardown(void) { unlink(path); }

TestSuite(plot, .init = setup, .fini = teardown);

Test(plot, colormap_ends_and_monotone_lightness)
{
    unsigned char a[3], b[3];
    cnf_plot_colormap(0.0, a);
    cr_assert(a[0] == 0x44 && a[1] == 0x01 && a[2] == 0x54, "viridis starts dark purple");
    cnf_plot_colormap(1.0, b);
    cr_assert(b[0] == 0xfd && b[1] == 0xe7 && b[2] == 0x25, "viridis ends yellow");
    cnf_plot_colormap(NAN, b);
    cr_assert(memcmp(a, b, 3) == 0);
    double prev = -1;
    for (int k = 0; k <= 100; k++) {
        cnf_plot_colormap(k / 100.0, a);
        double luma = 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2];
        cr_assert(luma >= prev - 0.5, "lightness drops at %d", k);
        prev = luma;
    }
}

Test(plot, three_panels_size_extent_and_quadrant_mass)
{
    /* Points in the upper-right quadrant only. */
    enum { n = 3000 };
    static double X[2 * n];
    cnf_rng rng;
    cnf_rng_seed(&rng, 3);
    for (size_t i = 0; i < n; i++) {
        X[2 * i] = 0.5 + 3.0 * cnf_rng_uniform(&rng);
        X[2 * i + 1] = 0.5 + 3.0 * cnf_rng_uniform(&rng);
    }
    /* A density N((−2, −2), 0.5²I), lower-left: Φ(4)² ≈ 0.9999 of its mass in that quadrant. */
    cnf_plot_settings s;
    cnf_plot_settings_default(&s);
    s.panel_px = 64;
    s.gap_px = 2;
    const size_t g = 40;
    double *G = malloc(g * g * 2 * sizeof *G), *logp = malloc(g * g * sizeof *logp);
    cr_assert_eq(cnf_plot_grid(&s, g, g, G), CNF_OK);
    for (size_t i = 0; i < g * g; i++)
        logp[i] = -2.0 * (pow(G[2 * i] + 2, 2) + pow(G[2 * i + 1] + 2, 2)) - 1000.0;
    cnf_plot_panel p[3] = {
        {.kind = CNF_PANEL_HIST, .points = X, .n = n, .bins = 32},
        {.kind = CNF_PANEL_DENSITY, .values = logp, .nx = g, .ny = g, .is_log = 1},
        {.kind = CNF_PANEL_SCATTER, .points = X, .n = n},
    };
    cr_assert_eq(cnf_plot_write_png(path, p, 3, &s), CNF_OK, "%s", cnf_errmsg());
    image im = read_png(path);
    cr_assert_eq(im.w, 3 * 64 + 2 * 2);
    cr_assert_eq(im.h, 64);
    double e[4];
    cr_assert_eq(sscanf(im.extent, "%lf %lf %lf %lf", &e[0], &e[1], &e[2], &e[3]), 4, "extent '%s'",
                 im.extent);
    cr_assert(e[0] == -4 && e[1] == 4 && e[2] == -4 && e[3] == 4);
    cr_assert_str_eq(im.panels, "histogram density scatter");
    /* Mass per quadrant of each panel (top-right of the image = x > 0, y > 0). */
    for (int k = 0; k < 3; k++) {
        double q[2][2] = {{0}};
        for (size_t r = 0; r < 64; r++)
            for (size_t c = 0; c < 64; c++)
                q[r < 32][c >= 32] += level(im.rgb + 3 * (r * im.w + k * 66 + c));
        double total = q[0][0] + q[0][1] + q[1][0] + q[1][1];
        double frac = k == 1 ? q[0][0] / total : q[1][1] / total; /* density: bottom-left */
        cr_assert(frac > 0.97, "panel %d: %.3f of the mass in the expected quadrant", k, frac);
    }
    /* The density's brightest pixel reaches the top of the colour map (normalised by max). */
    double top = 0;
    for (size_t r = 0; r < 64; r++)
        for (size_t c = 0; c < 64; c++)
            top = fmax(top, level(im.rgb + 3 * (r * im.w + 66 + c)));
    cr_assert(top > 0.97, "density maximum shows as %.3f", top);
    /* The gap is white. */
    cr_assert(im.rgb[3 * 64] == 255 && im.rgb[3 * 65 + 1] == 255);
    free(im.rgb);
    free(G);
    free(logp);
}

Test(plot, picture_of_8gaussians_has_eight_modes)
{
    enum { n = 20000 };
    static double X[2 * n];
    cnf_rng rng;
    cnf_rng_seed(&rng, 8);
    cr_assert_eq(cnf_toy_sample_named("8gaussians", n, X, &rng), CNF_OK);
    cnf_plot_settings s;
    cnf_plot_settings_default(&s);
    s.panel_px = 100;
    cnf_plot_panel p = {.kind = CNF_PANEL_HIST, .points = X, .n = n, .bins = 100};
    cr_assert_eq(cnf_plot_write_png(path, &p, 1, &s), CNF_OK, "%s", cnf_errmsg());
    image im = read_png(path);
    /* Bright at each centre 4·c_k/1.414, dark at the origin. */
    for (int k = 0; k < 8; k++) {
        double a = 2 * M_PI * k / 8, x = 4 * cos(a) / 1.414, y = 4 * sin(a) / 1.414;
        size_t c = (size_t)((x + 4) / 8 * 100), r = (size_t)((4 - y) / 8 * 100);
        cr_assert(level(im.rgb + 3 * (r * im.w + c)) > 0.3, "mode %d is dark", k);
    }
    cr_assert(level(im.rgb + 3 * (50 * im.w + 50)) < 0.05, "the centre is not empty");
    free(im.rgb);
}

Test(plot, errors)
{
    cnf_plot_settings s;
    cnf_plot_settings_default(&s);
    double X[2] = {0, 0}, v[4] = {0, 1, NAN, 0};
    cnf_plot_panel ok = {.kind = CNF_PANEL_SCATTER, .points = X, .n = 1};
    cr_assert_eq(cnf_plot_write_png("/nonexistent-dir/x.png", &ok, 1, &s), CNF_EIO);
    cr_assert(strstr(cnf_errmsg(), "/nonexistent-dir/x.png"), "%s", cnf_errmsg());
    s.panel_px = 8;
    cr_assert_eq(cnf_plot_write_png(path, &ok, 1, &s), CNF_EINVAL);
    cnf_plot_settings_default(&s);
    s.xmax = s.xmin;
    cr_assert_eq(cnf_plot_write_png(path, &ok, 1, &s), CNF_EINVAL);
    cnf_plot_settings_default(&s);
    cr_assert_eq(cnf_plot_write_png(path, &ok, 0, &s), CNF_EINVAL);
    cnf_plot_panel nopts = {.kind = CNF_PANEL_HIST, .points = NULL, .n = 3};
    cr_assert_eq(cnf_plot_write_png(path, &nopts, 1, &s), CNF_EINVAL);
    cnf_plot_panel nan = {.kind = CNF_PANEL_DENSITY, .values = v, .nx = 2, .ny = 2};
    cr_assert_eq(cnf_plot_write_png(path, &nan, 1, &s), CNF_ENONFINITE);
    cnf_plot_panel empty = {.kind = CNF_PANEL_DENSITY, .values = v, .nx = 0, .ny = 2};
    cr_assert_eq(cnf_plot_write_png(path, &empty, 1, &s), CNF_EINVAL);
    cnf_plot_panel bad = {.kind = (cnf_panel_kind)7};
    cr_assert_eq(cnf_plot_write_png(path, &bad, 1, &s), CNF_EINVAL);
    cr_assert(access(path, F_OK) != 0, "a failed call left a file");
    cr_assert_eq(cnf_plot_grid(&s, 0, 3, X), CNF_EINVAL);
}
