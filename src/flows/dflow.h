/* Private: the discrete-flow layer type table (STYLE.md rule 4) and helpers shared by the layer
 * files. A layer family file keeps everything static and exports one const table per layer;
 * adding a layer is one file (or table) plus one line in the list in dflow.c. */
#ifndef CNF_SRC_DFLOW_H
#define CNF_SRC_DFLOW_H

#include "cnf/dflow.h"
#include "cnf/mlp.h"

typedef struct dflow_layer_type {
    const char *name;
    /* Check l->cfg, set l->n_params and l->state. On failure free what it made. */
    int (*create)(cnf_dflow_layer *l);
    void (*init)(const cnf_dflow_layer *l, double *theta, cnf_rng *rng);
    /* See cnf_dflow_layer_forward / _inverse / _backward. logdet, GL never NULL; GX, gtheta
     * never NULL (the public wrappers supply scratch). */
    int (*forward)(cnf_dflow_layer *l, const double *theta, const double *X, size_t n, double *Y,
                   double *logdet, int train);
    int (*inverse)(cnf_dflow_layer *l, const double *theta, const double *Y, size_t n, double *X,
                   double *logdet);
    int (*backward)(cnf_dflow_layer *l, const double *theta, const double *X, size_t n,
                    const double *GY, const double *GL, double *GX, double *gtheta, int train);
    /* Optional: called by the stack's nll_grad on the layer's input batch before forward; may
     * change θ (ActNorm's data-dependent init, batch norm's running statistics). step = 1 when
     * a gradient is being taken. */
    void (*observe)(cnf_dflow_layer *l, double *theta, const double *X, size_t n, int step);
    void (*free_state)(void *state);
} dflow_layer_type;

struct cnf_dflow_layer {
    const dflow_layer_type *type;
    cnf_dflow_layer_config cfg; /* hidden points to own copy */
    size_t *hidden_copy;
    size_t dim, n_params;
    void *state;
};

/* A conditioner network (cnf_mlp, no time input) with a workspace that grows with the batch. */
typedef struct dflow_net {
    cnf_mlp *mlp;
    cnf_mlp_work *work;
    size_t cap, d_in, d_out;
} dflow_net;

int dflow_net_init(dflow_net *net, const cnf_dflow_layer_config *cfg, size_t d_in, size_t d_out);
void dflow_net_release(dflow_net *net);
/* F (n, d_out) = net(X (n, d_in)); fills the workspace for dflow_net_backward. */
int dflow_net_forward(dflow_net *net, const double *theta, const double *X, size_t n, double *F);
/* Accumulate Rᵀ∂F/∂X into GX (n, d_in) and into gtheta (either may be NULL). */
int dflow_net_backward(dflow_net *net, const double *theta, const double *R, double *GX,
                       double *gtheta);
/* cnf_mlp_init, then the output layer's weights and biases set to zero. */
void dflow_net_init_params(const dflow_net *net, double *theta, cnf_rng *rng);

/* l->state = a zeroed array of n doubles (freed by free_state = free); CNF_ENOMEM naming l. */
int dflow_state_array(cnf_dflow_layer *l, size_t n);

/* A scratch array that only grows (contents not kept). NULL on allocation failure. */
double *dflow_scratch(double **buf, size_t *cap, size_t n);

/* Coupling split: for parity p, the conditioning half A and the transformed half B as index
 * lists (A: first ⌈d/2⌉ for p = 0). */
void dflow_split(size_t d, int parity, size_t *A, size_t *na, size_t *B, size_t *nb);

/* The layer tables, one per layer (listed in dflow.c). */
extern const dflow_layer_type dflow_planar, dflow_radial, dflow_additive, dflow_scale,
    dflow_affine, dflow_spline, dflow_actnorm, dflow_lu, dflow_reverse, dflow_maf, dflow_iaf,
    dflow_batchnorm;

#endif
