/* Private: the flow type table each kind of flow implements (STYLE.md rule 4). A concrete flow
 * struct starts with a `cnf_flow` member and points base.type at its const table. */
#ifndef CNF_SRC_FLOW_H
#define CNF_SRC_FLOW_H

#include "cnf/flow.h"

typedef struct cnf_flow_type {
    const char *kind;
    /* See cnf_flow_encode / cnf_flow_decode; logdet is never NULL here. */
    int (*encode)(cnf_flow *f, const double *X, size_t n, double *Z, double *logdet,
                  cnf_flow_stats *st);
    int (*decode)(cnf_flow *f, const double *Z, size_t n, double *X, double *logdet,
                  cnf_flow_stats *st);
    /* grad and gx NULL: the loss only. grad and gx arrive zeroed. */
    int (*nll_grad)(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                    double *grad, double *gx, cnf_flow_stats *st);
    void (*free)(cnf_flow *f);
} cnf_flow_type;

struct cnf_flow {
    const cnf_flow_type *type;
    size_t dim, n_params;
    double *theta; /* (n_params), owned */
};

#endif
