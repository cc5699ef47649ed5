/* The record of a forward solve's accepted steps that the CNF's gradients read back (see traj in
 * cflow_internal.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

void cflow_traj_free(traj *tr)
{
    free(tr->t);
    free(tr->h);
    free(tr->y);
    free(tr->ys);
    free(tr->ring);
    free(tr->ring_t);
    memset(tr, 0, sizeof *tr);
}

/* Stages 1..s_eff of an RK step feed its result: those past the last non-zero weight do not. */
size_t cflow_rk_stages_used(const cnf_rk_tableau *tab)
{
    size_t s_eff = 0;
    for (size_t i = 0; i < tab->stages; i++)
        if (tab->b[i] != 0.0)
            s_eff = i + 1;
    return s_eff;
}

/* Start recording a solve of dimension dim, with the stage arguments cflow_backprop_block needs for
 * tableau tab (NULL: states only). The buffers of the last recording are reused when the shape
 * is the same. */
int cflow_traj_begin(traj *tr, size_t dim, const cnf_rk_tableau *tab)
{
    const size_t used = tab ? cflow_rk_stages_used(tab) : 0, stages = used > 1 ? used - 1 : 0;
    const size_t ring_n = stages ? tab->stages - 1 : 0;
    if (tr->dim != dim || tr->stages != stages || tr->ring_n != ring_n || (ring_n && !tr->ring)) {
        free(tr->y);
        free(tr->ys);
        free(tr->ring);
        free(tr->ring_t);
        tr->y = tr->ys = tr->ring = tr->ring_t = NULL;
        tr->cap = 0;
        tr->dim = dim;
        tr->stages = stages;
        tr->ring_n = ring_n;
        if (ring_n && (!(tr->ring = cnf_calloc(ring_n, dim * sizeof(double))) ||
                       !(tr->ring_t = cnf_calloc(ring_n, sizeof(double)))))
            return cnf_fail(CNF_ENOMEM, "allocating %zu RK stages for the reverse pass", ring_n);
    }
    tr->tab = tab;
    tr->len = 0;
    tr->ring_pos = 0;
    return CNF_OK;
}

void cflow_traj_push_stage(traj *tr, double tau, const double *y)
{
    if (!tr->ring)
        return;
    memcpy(tr->ring + tr->ring_pos * tr->dim, y, tr->dim * sizeof(double));
    tr->ring_t[tr->ring_pos] = tau;
    tr->ring_pos = (tr->ring_pos + 1) % tr->ring_n;
}

int cflow_traj_record(double t, double h, const double *y_old, const double *y_new, void *ctx)
{
    traj *tr = ctx;
    (void)y_new;
    if (tr->len == tr->cap) {
        size_t cap = tr->cap ? 2 * tr->cap : 64;
        double *nt = realloc(tr->t, cap * sizeof(double));
        if (nt)
            tr->t = nt;
        double *nh = realloc(tr->h, cap * sizeof(double));
        if (nh)
            tr->h = nh;
        const size_t per_step = (1 + tr->stages) * tr->dim;
        const int too_big = cap > (size_t)-1 / sizeof(double) / per_step;
        double *ny = too_big ? NULL : realloc(tr->y, cap * tr->dim * sizeof(double));
        if (ny)
            tr->y = ny;
        double *ns = too_big || !tr->stages
                         ? NULL
                         : realloc(tr->ys, cap * tr->stages * tr->dim * sizeof(double));
        if (ns)
            tr->ys = ns;
        if (!nt || !nh || !ny || (tr->stages && !ns))
            return cnf_fail(CNF_ENOMEM, "storing %zu forward steps for the gradient", cap);
        tr->cap = cap;
    }
    tr->t[tr->len] = t;
    tr->h[tr->len] = h;
    memcpy(tr->y + tr->len * tr->dim, y_old, tr->dim * sizeof(double));
    /* The ring's oldest entry is stage 2 of this step (see traj); each entry's τ must be its
     * stage's, or the solver called the right-hand side in another pattern than assumed. */
    for (size_t i = 0; i < tr->stages; i++) {
        const size_t e = (tr->ring_pos + i) % tr->ring_n;
        if (tr->ring_t[e] != t + tr->tab->c[i + 1] * h)
            return cnf_fail(CNF_EUNSUPPORTED, "backprop: stage %zu of the step at t = %g was not "
                            "the right-hand side call expected", i + 2, t);
        memcpy(tr->ys + (tr->len * tr->stages + i) * tr->dim, tr->ring + e * tr->dim,
               tr->dim * sizeof(double));
    }
    tr->len++;
    return 0;
}
