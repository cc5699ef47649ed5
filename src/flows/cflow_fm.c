/* The CNF's velocity regression (cnf_flow_velocity_loss, cnf/flow.h): the caller's path in the
 * CNF's own coordinates (y = x), then for each run of rows sharing one path time τ an MLP
 * forward at t = Tτ, the squared error against the path velocity U/T, and the MLP's reverse
 * kernel seeded with its derivative — conditional flow matching's regression (Lipman et al.
 * 2023, eq. 9) on the field the ODE solves integrate. */
#include <stdlib.h>

#include "flow.h"
#include "core/internal.h"

int cnf_cflow_fm_check(const cnf_mlp *m, const cnf_cflow_config *cfg)
{
    if (!m)
        return cnf_fail(CNF_EUNSUPPORTED, "velocity regression (flow matching) needs the CNF's "
                        "MLP field, not a user field");
    if (cfg->blocks != 1)
        return cnf_fail(CNF_EINVAL, "flow matching needs a CNF with one block, not %zu",
                        cfg->blocks);
    if (cfg->train_T)
        return cnf_fail(CNF_EINVAL, "flow matching needs a fixed T, but this CNF trains its end "
                        "time (create it with train_T = 0; T = 1 is the usual choice)");
    return CNF_OK;
}

/* The end of the run of rows from i0 on with the path time tau[i0]. */
static size_t run_end(const double *tau, size_t i0, size_t n)
{
    size_t i1 = i0 + 1;
    while (i1 < n && tau[i1] == tau[i0])
        i1++;
    return i1;
}

int cnf_cflow_fm_loss(const cnf_mlp *m, const double *theta, double T, size_t d, const double *X,
                      size_t n, cnf_path_fn path, void *ctx, double *loss, double *grad)
{
    const size_t nd = cnf_size_mul(n, d);
    double *tau = cnf_calloc(n, sizeof(double)), *Yt = cnf_calloc(nd, sizeof(double));
    double *U = cnf_calloc(nd, sizeof(double)), *V = cnf_calloc(nd, sizeof(double));
    cnf_mlp_work *w = NULL;
    int rc = (!tau || !Yt || !U || !V)
                 ? cnf_fail(CNF_ENOMEM, "allocating a velocity-regression batch of %zu", n)
                 : path(ctx, X, n, d, tau, Yt, U);
    if (rc > 0)
        rc = cnf_fail(CNF_EINVAL, "path callback stopped with %d", rc);
    size_t longest = 0;
    for (size_t i0 = 0, i1; !rc && i0 < n; i0 = i1) {
        i1 = run_end(tau, i0, n);
        longest = i1 - i0 > longest ? i1 - i0 : longest;
    }
    if (!rc)
        rc = cnf_mlp_work_create(&w, m, longest, 0);
    double L = 0.0;
    for (size_t i0 = 0, i1; !rc && i0 < n; i0 = i1) {
        i1 = run_end(tau, i0, n);
        rc = cnf_mlp_forward(m, theta, T * tau[i0], Yt + i0 * d, d, i1 - i0, V + i0 * d, d, w);
        for (size_t i = i0 * d; !rc && i < i1 * d; i++) {
            double e = V[i] - U[i] / T;
            L += e * e;
            V[i] = 2.0 * e / (double)n; /* the seed ∂loss/∂v */
        }
        if (!rc && grad)
            rc = cnf_mlp_backward(m, theta, V + i0 * d, d, NULL, NULL, 0, grad, NULL, w);
    }
    if (!rc)
        *loss = L / (double)n;
    cnf_mlp_work_free(w);
    free(tau);
    free(Yt);
    free(U);
    free(V);
    return rc;
}
