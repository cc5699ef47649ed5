/* The MLP object (DESIGN.md §2): the names of its settings, construction (the layers and the
 * named parameter blocks of the flat θ), and initialization. The passes over it are in forward.c
 * (forward and tangents) and backward.c (the reverse kernel), on a workspace (work.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp_impl.h"

/* ---- names ---------------------------------------------------------------------------------- */

static const char *const act_names[] = {"tanh", "softplus", "elu", "swish"};
static const char *const time_names[] = {"none", "concat", "concatsquash"};

static int lookup(const char *what, const char *const *names, size_t n, const char *name, int *out)
{
    for (size_t i = 0; name && i < n; i++)
        if (!strcmp(name, names[i])) {
            *out = (int)i;
            return CNF_OK;
        }
    char list[128] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return cnf_fail(CNF_ENAME, "unknown %s '%s' (valid: %s)", what, name ? name : "(null)", list);
}


static const char *const precision_names[] = {"double", "mixed"};

/* Name ↔ value for each enum. */
int cnf_act_from_name(const char *name, cnf_act *out)
{
    int v = 0, rc = lookup("activation", act_names, 4, name, &v);
    if (rc == CNF_OK)
        *out = (cnf_act)v;
    return rc;
}

const char *cnf_act_name(cnf_act v) { return (unsigned)v < 4 ? act_names[v] : "invalid"; }

int cnf_time_mode_from_name(const char *name, cnf_time_mode *out)
{
    int v = 0, rc = lookup("time conditioning", time_names, 3, name, &v);
    if (rc == CNF_OK)
        *out = (cnf_time_mode)v;
    return rc;
}

const char *cnf_time_mode_name(cnf_time_mode v)
{
    return (unsigned)v < 3 ? time_names[v] : "invalid";
}

int cnf_precision_from_name(const char *name, cnf_precision *out)
{
    int v = 0, rc = lookup("precision", precision_names, 2, name, &v);
    if (rc == CNF_OK)
        *out = (cnf_precision)v;
    return rc;
}

const char *cnf_precision_name(cnf_precision v)
{
    return (unsigned)v < 2 ? precision_names[v] : "invalid";
}

/* ---- construction --------------------------------------------------------------------------- */

static void add_block(cnf_mlp *m, size_t l, const char *what, size_t off, size_t rows, size_t cols)
{
    struct block *b = &m->blocks[m->n_blocks++];
    snprintf(b->name, sizeof b->name, "%zu.%s", l + 1, what);
    b->offset = off;
    b->rows = rows;
    b->cols = cols;
}

int cnf_mlp_create(cnf_mlp **out, const cnf_mlp_config *cfg)
{
    *out = NULL;
    if (!cfg)
        return cnf_fail(CNF_EINVAL, "MLP configuration is NULL");
    if (cfg->d_in == 0 || cfg->d_out == 0)
        return cnf_fail(CNF_EINVAL, "MLP dimensions must be positive (d_in = %zu, d_out = %zu)",
                        cfg->d_in, cfg->d_out);
    if (cfg->n_hidden > 0 && !cfg->hidden)
        return cnf_fail(CNF_EINVAL, "MLP has %zu hidden layers but no widths", cfg->n_hidden);
    for (size_t i = 0; i < cfg->n_hidden; i++)
        if (cfg->hidden[i] == 0)
            return cnf_fail(CNF_EINVAL, "MLP hidden layer %zu has width 0", i + 1);
    if ((unsigned)cfg->act > CNF_ACT_SWISH)
        return cnf_fail(CNF_EINVAL, "invalid activation value %d", (int)cfg->act);
    if ((unsigned)cfg->time > CNF_TIME_CONCATSQUASH)
        return cnf_fail(CNF_EINVAL, "invalid time-conditioning value %d", (int)cfg->time);
    if ((unsigned)cfg->precision > CNF_PRECISION_MIXED)
        return cnf_fail(CNF_EINVAL, "invalid precision value %d", (int)cfg->precision);
    /* The parameter count, saturated: a layer has out·in weights and at most 4 vectors of out
     * (b, c, wg, bg). Checked before anything is sized by it, so no width or offset can wrap. */
    size_t count = cfg->n_hidden + 1 > cfg->n_hidden ? 0 : SIZE_MAX, prev = cfg->d_in;
    for (size_t l = 0; l <= cfg->n_hidden && count != SIZE_MAX; l++) {
        size_t o = l < cfg->n_hidden ? cfg->hidden[l] : cfg->d_out;
        size_t per = cnf_size_mul(o, prev < SIZE_MAX - 4 ? prev + 4 : SIZE_MAX);
        count = per < SIZE_MAX - count ? count + per : SIZE_MAX;
        prev = o;
    }
    if (!cnf_size_ok(count))
        return cnf_fail(CNF_EINVAL, "MLP widths (input %zu, %zu hidden layers, output %zu) give "
                        "more parameters than can be addressed", cfg->d_in, cfg->n_hidden,
                        cfg->d_out);

    cnf_mlp *m = calloc(1, sizeof *m);
    if (!m)
        return cnf_fail(CNF_ENOMEM, "allocating the MLP");
    m->cfg = *cfg;
    m->L = cfg->n_hidden + 1;
    m->hidden = cnf_calloc(cfg->n_hidden, sizeof *m->hidden);
    m->layer = cnf_calloc(m->L, sizeof *m->layer);
    m->blocks = cnf_calloc(cnf_size_mul(5, m->L), sizeof *m->blocks);
    if (!m->hidden || !m->layer || !m->blocks) {
        cnf_mlp_free(m);
        return cnf_fail(CNF_ENOMEM, "allocating the MLP");
    }
    if (cfg->n_hidden)
        memcpy(m->hidden, cfg->hidden, cfg->n_hidden * sizeof *m->hidden);
    m->cfg.hidden = m->hidden;

    size_t off = 0, in = cfg->d_in;
    m->max_width = cfg->d_in;
    for (size_t l = 0; l < m->L; l++) {
        struct layer *ly = &m->layer[l];
        ly->in = in;
        ly->out = l + 1 < m->L ? cfg->hidden[l] : cfg->d_out;
        ly->c = ly->wg = ly->bg = ABSENT;
        ly->W = off;
        add_block(m, l, "W", off, ly->out, ly->in);
        off += ly->out * ly->in;
        ly->b = off;
        add_block(m, l, "b", off, ly->out, 1);
        off += ly->out;
        if (cfg->time != CNF_TIME_NONE) {
            ly->c = off;
            add_block(m, l, "c", off, ly->out, 1);
            off += ly->out;
        }
        if (cfg->time == CNF_TIME_CONCATSQUASH) {
            ly->wg = off;
            add_block(m, l, "wg", off, ly->out, 1);
            off += ly->out;
            ly->bg = off;
            add_block(m, l, "bg", off, ly->out, 1);
            off += ly->out;
        }
        if (ly->out > m->max_width)
            m->max_width = ly->out;
        in = ly->out;
    }
    m->n_params = off;
    *out = m;
    return CNF_OK;
}

void cnf_mlp_free(cnf_mlp *m)
{
    if (!m)
        return;
    free(m->hidden);
    free(m->layer);
    free(m->blocks);
    free(m);
}

size_t cnf_mlp_n_params(const cnf_mlp *m) { return m->n_params; }

const cnf_mlp_config *cnf_mlp_get_config(const cnf_mlp *m) { return &m->cfg; }

size_t cnf_mlp_n_blocks(const cnf_mlp *m) { return m->n_blocks; }

int cnf_mlp_block(const cnf_mlp *m, size_t i, const char **name, size_t *offset, size_t *rows,
                  size_t *cols)
{
    if (i >= m->n_blocks)
        return cnf_fail(CNF_EINVAL, "MLP parameter block %zu out of range (%zu blocks)", i,
                        m->n_blocks);
    const struct block *b = &m->blocks[i];
    if (name)
        *name = b->name;
    if (offset)
        *offset = b->offset;
    if (rows)
        *rows = b->rows;
    if (cols)
        *cols = b->cols;
    return CNF_OK;
}

static void uniform_fill(double *x, size_t n, double limit, cnf_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = limit * (2.0 * cnf_rng_uniform(rng) - 1.0);
}

void cnf_mlp_init(const cnf_mlp *m, double *theta, cnf_rng *rng)
{
    /* PyTorch's nn.Linear default (Kaiming-uniform with a = √5: bound 1/√fan_in for weights
     * and biases), which FFJORD's ConcatLinear / ConcatSquashLinear layers start from. */
    for (size_t l = 0; l < m->L; l++) {
        const struct layer *ly = &m->layer[l];
        const size_t fan_in = ly->in + (m->cfg.time == CNF_TIME_CONCAT ? 1 : 0);
        const double bound = 1.0 / sqrt((double)fan_in);
        uniform_fill(theta + ly->W, ly->out * ly->in, bound, rng);
        uniform_fill(theta + ly->b, ly->out, bound, rng);
        /* concat: c is the time column of the same Linear(in + 1, out); concatsquash: the
         * gate and the time bias are Linear(1, out) layers, fan_in 1. */
        const double tb = m->cfg.time == CNF_TIME_CONCAT ? bound : 1.0;
        if (ly->c != ABSENT)
            uniform_fill(theta + ly->c, ly->out, tb, rng);
        if (ly->wg != ABSENT) {
            uniform_fill(theta + ly->wg, ly->out, 1.0, rng);
            uniform_fill(theta + ly->bg, ly->out, 1.0, rng);
        }
    }
}
