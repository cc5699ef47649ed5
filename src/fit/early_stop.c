/* Early stopping (see cnf/early_stop.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/early_stop.h"
#include "core/internal.h"

int cnf_early_stop_init(cnf_early_stop *es, cnf_flow *f, size_t patience)
{
    memset(es, 0, sizeof *es);
    size_t np = cnf_flow_n_params(f);
    es->best = cnf_calloc(np ? np : 1, sizeof(double));
    if (!es->best)
        return cnf_fail(CNF_ENOMEM, "a copy of %zu parameters", np);
    memcpy(es->best, cnf_flow_params(f), np * sizeof(double));
    es->flow = f;
    es->best_nll = INFINITY;
    es->patience = patience;
    return CNF_OK;
}

int cnf_early_stop_update(cnf_early_stop *es, size_t iter, double val_nll)
{
    if (isfinite(val_nll) && val_nll < es->best_nll) {
        es->best_nll = val_nll;
        es->best_iter = iter;
        es->since = 0;
        memcpy(es->best, cnf_flow_params(es->flow), cnf_flow_n_params(es->flow) * sizeof(double));
        return 0;
    }
    es->since++;
    return es->patience && es->since >= es->patience;
}

void cnf_early_stop_restore(cnf_early_stop *es)
{
    memcpy(cnf_flow_params(es->flow), es->best, cnf_flow_n_params(es->flow) * sizeof(double));
}

void cnf_early_stop_free(cnf_early_stop *es)
{
    if (!es)
        return;
    free(es->best);
    es->best = NULL;
}
