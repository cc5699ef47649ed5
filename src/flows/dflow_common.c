/* Helpers shared by the discrete-flow layer files (see dflow.h): a layer's state array, growing
 * scratch, the coupling split, and the conditioner network. Apart from dflow.c (the registry and
 * the stack, which lists the layer files' tables), so that the layer files depend on these and
 * dflow.c on the layer files, without a cycle. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dflow.h"

int dflow_state_array(cnf_dflow_layer *l, size_t n)
{
    l->state = cnf_calloc(n, sizeof(double));
    return l->state ? CNF_OK : cnf_fail(CNF_ENOMEM, "allocating a %s layer", l->type->name);
}

double *dflow_scratch(double **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        double *p = cnf_calloc(n, sizeof(double));
        if (!p)
            return NULL;
        free(*buf);
        *buf = p;
        *cap = n;
    }
    return *buf;
}

void dflow_split(size_t d, int parity, size_t *A, size_t *na, size_t *B, size_t *nb)
{
    size_t h = (d + 1) / 2;
    *na = parity ? d - h : h;
    *nb = d - *na;
    for (size_t j = 0; j < d; j++) {
        int first = j < h;
        if (first != (parity != 0))
            *A++ = j;
        else
            *B++ = j;
    }
}

int dflow_net_init(dflow_net *net, const cnf_dflow_layer_config *cfg, size_t d_in, size_t d_out)
{
    memset(net, 0, sizeof *net);
    cnf_mlp_config mc = {.d_in = d_in, .d_out = d_out, .n_hidden = cfg->n_hidden,
                         .hidden = cfg->hidden, .act = cfg->act, .time = CNF_TIME_NONE};
    net->d_in = d_in;
    net->d_out = d_out;
    return cnf_mlp_create(&net->mlp, &mc);
}

void dflow_net_release(dflow_net *net)
{
    cnf_mlp_work_free(net->work);
    cnf_mlp_free(net->mlp);
    memset(net, 0, sizeof *net);
}

int dflow_net_forward(dflow_net *net, const double *theta, const double *X, size_t n, double *F)
{
    if (n > net->cap) {
        cnf_mlp_work_free(net->work);
        net->work = NULL;
        net->cap = 0;
        int rc = cnf_mlp_work_create(&net->work, net->mlp, n, 0);
        if (rc)
            return rc;
        net->cap = n;
    }
    return cnf_mlp_forward(net->mlp, theta, 0.0, X, net->d_in, n, F, net->d_out, net->work);
}

int dflow_net_backward(dflow_net *net, const double *theta, const double *R, double *GX,
                       double *gtheta)
{
    return cnf_mlp_backward(net->mlp, theta, R, net->d_out, NULL, GX, net->d_in, gtheta, NULL,
                            net->work);
}

void dflow_net_init_params(const dflow_net *net, double *theta, cnf_rng *rng)
{
    cnf_mlp_init(net->mlp, theta, rng);
    /* Blocks are W_l, b_l layer by layer: the output layer is the last two. */
    size_t nb = cnf_mlp_n_blocks(net->mlp), off, rows, cols;
    const char *name;
    cnf_mlp_block(net->mlp, nb - 2, &name, &off, &rows, &cols);
    memset(theta + off, 0, (cnf_mlp_n_params(net->mlp) - off) * sizeof *theta);
}
