/* Private: the flow type table each kind of flow implements (STYLE.md rule 4). A concrete flow
 * struct starts with a `cnf_flow` member and points base.type at its const table. */
#ifndef CNF_SRC_FLOW_H
#define CNF_SRC_FLOW_H

#include "cnf/cflow.h"
#include "cnf/flow.h"
#include "cnf/safetensors.h"
#include "format/meta.h"

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
    /* See cnf_flow_rkl_grad; grad arrives zeroed (or NULL for the loss only). */
    int (*rkl_grad)(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                    double *loss, double *grad, cnf_flow_stats *st);
    /* Velocity regression (optional: NULL for flows without a velocity field). See
     * cnf_flow_velocity_loss and cnf_flow_velocity_check; velocity_loss runs after the check
     * passed, with X checked and grad zeroed (or NULL). */
    int (*velocity_loss)(cnf_flow *f, const double *X, size_t n, cnf_path_fn path, void *ctx,
                         double *loss, double *grad);
    int (*velocity_check)(const cnf_flow *f);
    void (*free)(cnf_flow *f);
    /* Model files (cnf/model.h): write the architecture and settings as metadata and the
     * parameters as named tensors. The matching loader is listed by kind in src/fit/model.c. */
    int (*describe)(const cnf_flow *f, cnf_st_writer *w);
} cnf_flow_type;

/* Loaders by kind (src/fit/model.c lists them): rebuild a flow from a model file. */
int cnf_cflow_load(const cnf_st_file *f, cnf_flow **out);
int cnf_dflow_load(const cnf_st_file *f, cnf_flow **out); /* every discrete kind */
/* A file with "pre.*" metadata: wrap the loaded inner flow *inout in its preprocessing (pre.c);
 * on failure *inout is left as it was. */
int cnf_pre_attach(const cnf_st_file *f, cnf_flow **inout);

/* The CNF's velocity regression (cflow_fm.c), given its MLP field m (NULL for a user field),
 * configuration, parameters θ (of the one block) and end time T; cflow.c's table entries call
 * these. */
int cnf_cflow_fm_check(const cnf_mlp *m, const cnf_cflow_config *cfg);
int cnf_cflow_fm_loss(const cnf_mlp *m, const double *theta, double T, size_t d, const double *X,
                      size_t n, cnf_path_fn path, void *ctx, double *loss, double *grad);

struct cnf_flow {
    const cnf_flow_type *type;
    size_t dim, n_params;
    double *theta; /* (n_params), owned */
};

#endif
