/* Conditional flow matching (Lipman et al. 2023; Tong et al. 2024): simulation-free training of a
 * CNF's velocity field, which then gives exact log-likelihoods through the ODE solver like any
 * other CNF (the trained model is an ordinary cnf flow).
 *
 * With cnf's convention (data x₀ at τ = 0, base x₁ ~ N(0, I) at τ = 1, field time t = Tτ):
 *     τ ~ U(0, 1),  x_τ = (1 − τ) x₀ + τ x₁ + σ ε,  u = (x₁ − x₀)/T,
 *     loss = mean_i ‖v_θ(T τ_i, x_τ,i) − u_i‖².
 * Times are stratified: the batch is cut into G = min(n, 32) groups, group k sharing
 * τ = (k + u_k)/G with u_k ~ U(0, 1), so each τ is uniform, the estimate has lower variance, and
 * each group is one batched evaluation of the field.
 * I-CFM pairs x₀ and x₁ independently; OT-CFM pairs them within the minibatch by an exact
 * optimal assignment for the squared distance (Hungarian algorithm, O(n³)). The flow must have
 * one block and a fixed end time (train_T = 0, CNF_EINVAL otherwise): the path is defined on
 * τ ∈ [0, 1], so T only rescales time and the loss gives it no gradient — a trained T would
 * drift under weight decay alone and blow u = (x₁ − x₀)/T up. T = 1 is the usual choice.
 *
 * It works through the flow interface (cnf_flow_velocity_loss, cnf/flow.h), so it trains every
 * flow with such a field: a CNF, or the preprocessing wrapper around one (cnf/pre.h). Then x₀ is
 * the *preprocessed* data point, the space the CNF lives in: the pairing, the paths and the
 * regression are all there, and the model's log-likelihood in data space adds the
 * preprocessing's log-determinant as for maximum likelihood. Discrete flows have no velocity
 * field: CNF_EUNSUPPORTED, naming the kind.
 *
 * In the trainer (cnf/train.h) this is the objective cnf_objective_fm with a cnf_fm_params. */
#ifndef CNF_FM_H
#define CNF_FM_H

#include "cnf/flow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_FM_ICFM = 0,  /* "icfm": independent coupling */
    CNF_FM_OTCFM = 1, /* "otcfm": minibatch optimal-transport coupling */
} cnf_fm_variant;

CNF_API int cnf_fm_variant_from_name(const char *name, cnf_fm_variant *out);
CNF_API const char *cnf_fm_variant_name(cnf_fm_variant v);

/* cnf_objective_fm's settings: the coupling and the path noise σ ≥ 0. */
typedef struct cnf_fm_params {
    cnf_fm_variant variant;
    double sigma;
} cnf_fm_params;

/* The flow-matching loss on a batch X (n, d) of data and its gradient (n_params, overwritten;
 * NULL for the loss only). Base points, times and noise are drawn from rng. f must pass
 * cnf_flow_velocity_check (a CNF with one block and a fixed T, or a preprocessing wrapper around
 * one): CNF_EINVAL or CNF_EUNSUPPORTED otherwise. */
CNF_API int cnf_fm_loss_grad(cnf_flow *f, const double *X, size_t n, cnf_fm_variant variant,
                             double sigma, cnf_rng *rng, double *loss, double *grad);

/* An optimal assignment for the n×n cost matrix C (row-major): perm[i] is the column assigned
 * to row i, minimising Σ C[i, perm[i]] (shortest augmenting paths with potentials). */
CNF_API int cnf_assignment(const double *C, size_t n, size_t *perm);

#ifdef __cplusplus
}
#endif
#endif
