/* Discrete normalizing flows behind the flow interface (cnf/flow.h): stacks of invertible layers
 * with a tractable log-determinant, the baselines the CNF is compared against.
 *
 * Direction. Every layer is written in the ENCODE direction, data → base: its forward map is
 * y = f(x) with logdet = log|det ∂y/∂x|, and a stack composes the forwards, so
 *     z = f_L ∘ … ∘ f_1 (x),   log p(x) = log N(z; 0, I) + Σ_l log|det ∂f_l/∂x|.
 * Decoding runs the layers' inverses in reverse order. Where a paper writes a layer in the
 * generating direction (planar, radial, IAF) the table below says which way it is used here.
 *
 * Layers (cnf_dflow_layer_config.type; θ layout in brackets, cnf/mlp.h layout for networks):
 *   "planar"   y = x + û tanh(wᵀx + b),  logdet = log(1 + tanh'(wᵀx+b) wᵀû)   [u, w, b]
 *              û = u + (m(wᵀu) − wᵀu) w/||w||², m(a) = −1 + log(1 + eᵃ), so wᵀû > −1 and the map
 *              is invertible (Rezende & Mohamed 2015, app. A). Inverse: Brent root solve of the
 *              scalar a + wᵀû tanh(a) = wᵀy + b (GSL), then x = y − û tanh(a).
 *   "radial"   y = x + β (x − x0)/(α + r), r = ||x − x0||,  α = softplus(α̃), β = −α + softplus(β̃)
 *              [x0, α̃, β̃]; logdet = (d−1) log(1 + β/(α+r)) + log(1 + αβ/(α+r)²). Inverse: Brent
 *              root solve of r + βr/(α+r) = ||y − x0||.
 *   "additive" NICE coupling (Dinh et al. 2015): y_B = x_B + t(x_A), logdet = 0   [MLP A→B]
 *   "scale"    NICE's diagonal scaling y = x ⊙ exp(s), logdet = Σ s                  [s]
 *   "affine"   RealNVP coupling (Dinh et al. 2017): [s̃, t] = MLP(x_A), s = c·tanh(s̃/c),
 *              y_B = x_B ⊙ exp(s) + t, logdet = Σ s (c = scale_bound)      [MLP A→(s̃_B, t_B)]
 *   "spline"   rational-quadratic spline coupling (Durkan et al. 2019, eq. 4–6): per transformed
 *              dimension K bins on [−B, B] with widths, heights = softmax (floored at 1e-3 of a
 *              bin), inner derivatives 1e-3 + softplus, derivative 1 at ±B and the identity
 *              outside (linear tails); analytic inverse by the quadratic of their eq. 29
 *              [MLP A→(3K−1 per transformed dim: K widths, K heights, K−1 derivatives)]
 *   "actnorm"  Glow ActNorm y = exp(s) ⊙ x + b, logdet = Σ s                          [b, s]
 *              Data-dependent initialisation: see cnf_dflow_create below.
 *   "lu"       invertible linear y = W x, W = P L (U + diag(exp(s))), L unit lower, U strictly
 *              upper, P the reversal permutation; logdet = Σ s        [L strict lower row-major,
 *              U strict upper row-major, s]   (Kingma & Dhariwal 2018 §3.2, signs fixed to +1)
 *   "reverse"  y_i = x_{d−1−i}, logdet = 0, no parameters
 *   "maf"      MADE-masked autoregressive affine (Papamakarios et al. 2017): [μ, α̃] = MADE(x),
 *              α = c·tanh(α̃/c), y_i = (x_i − μ_i(x_<i)) exp(−α_i(x_<i)), logdet = −Σ α_i:
 *              density in one pass, inverse in d passes        [MLP d→2d, masked: (μ, α̃)]
 *   "iaf"      the inverse of "maf" (Kingma et al. 2016): encode y = maf⁻¹(x) in d passes,
 *              decode in one pass (fast sampling); logdet = +Σ α_i(y). Its gradient is by
 *              implicit differentiation: λ = J⁻ᵀ a solved by d sweeps of the MADE's reverse pass.
 *   "batchnorm" batch-norm flow (Dinh et al. 2017 §3.7): y = exp(γ) ⊙ (x − μ)/√(v + ε) + β,
 *              logdet = Σ (γ − ½ log(v + ε))            [γ, β, running mean, running variance]
 *              In training (nll_grad) μ, v are the batch's mean and biased variance and the
 *              gradient goes through them; encode/decode use the running statistics, which are
 *              parameters (saved in model files) with zero gradient, updated as
 *              r ← (1 − momentum) r + momentum · batch on every cnf_flow_nll_grad call that asks
 *              for a gradient. (Weight decay would shrink them: train batch-norm stacks without.)
 * Couplings split the d dimensions into halves, A = the first ⌈d/2⌉ and B = the rest for parity
 * 0, swapped for parity 1; they need d ≥ 2. Their networks' last layers start at zero, so a
 * fresh coupling is the identity. MADE degrees: inputs 1..d in index order, hidden unit k of
 * every layer degree 1 + k mod (d − 1); output i sees inputs j < i only.
 *
 * Structure (masks, permutations, signs) depends on the configuration alone, never on rng: a
 * flow re-created from the same configuration and given saved parameters is the same flow. rng
 * only initialises θ.
 *
 * Threads: a flow or layer keeps scratch buffers, so one thread per object. */
#ifndef CNF_DFLOW_H
#define CNF_DFLOW_H

#include "cnf/flow.h"
#include "cnf/mlp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- stacks ---------------------------------------------------------------------------------
 * Kinds and the layers of step l = 0..layers−1 (encode order):
 *   "planar"  planar                 "radial" radial
 *   "nice"    additive (parity l%2), then one final scale layer
 *   "realnvp" affine (parity l%2) [+ batchnorm between steps when batchnorm is set]
 *   "glow"    actnorm, lu, affine (parity l%2)
 *   "maf"     maf [+ batchnorm], reverse between steps      "iaf" iaf, reverse between steps
 *   "nsf"     lu, spline (parity l%2)                                                        */
typedef struct cnf_dflow_config {
    const char *kind;     /* one of the names above; not copied, only read by create */
    size_t dim;           /* d ≥ 1 (≥ 2 for the coupling kinds) */
    size_t layers;        /* flow steps ≥ 1 */
    size_t n_hidden;      /* hidden layers of every conditioner network (MADE: ≥ 1) */
    const size_t *hidden; /* (n_hidden) widths ≥ 1; copied */
    cnf_act act;          /* conditioner activation */
    size_t bins;          /* NSF bins K ≥ 2 */
    double bound;         /* NSF interval [−B, B], B > 0 */
    double scale_bound;   /* c > 0: affine and MAF log-scales lie in (−c, c) */
    int batchnorm;        /* 1: batch-norm layers between steps (realnvp, maf) */
    double bn_momentum;   /* in (0, 1] */
    double bn_eps;        /* > 0 */
} cnf_dflow_config;

/* Defaults for kind and d: 4 steps (planar, radial: 16), one hidden layer of 64 tanh units,
 * K = 8 bins on [−4, 4], scale bound 3, no batch norm (momentum 0.1, ε = 1e-5 when enabled).
 * hidden points to a static array. kind is stored as given (not checked here). */
CNF_API void cnf_dflow_config_default(cnf_dflow_config *cfg, const char *kind, size_t dim);

/* The kind names, for listings: i < cnf_dflow_kind_count(); NULL past the end. */
CNF_API size_t cnf_dflow_kind_count(void);
CNF_API const char *cnf_dflow_kind_at(size_t i);

/* Build a stack. θ is initialised from rng (networks: cnf_mlp_init with the last layer zero;
 * planar/radial/lu: small normals; actnorm, scale, batchnorm: identity). cnf_flow_kind() returns
 * cfg->kind's canonical name. Errors: CNF_ENAME (valid kinds listed in cnf_errmsg) for an
 * unknown kind, CNF_EINVAL naming the bad field, CNF_ENOMEM; *out is NULL on failure. The caller
 * frees the result with cnf_flow_free.
 *
 * ActNorm's data-dependent initialisation (Glow): on the first cnf_flow_nll_grad / _loss call
 * of the flow, each ActNorm whose parameters are still exactly zero (the identity it is created
 * with) sets b and s so that its output on that batch has zero mean and unit variance per
 * dimension, before the loss is computed; the loss and gradient are then those of the
 * initialised θ. A flow whose parameters were loaded from a file (non-zero) is left alone, and
 * encode/decode never initialise. */
CNF_API int cnf_dflow_create(cnf_flow **out, const cnf_dflow_config *cfg, cnf_rng *rng);

/* The configuration a stack was created with (kind = the canonical name, hidden = a copy owned
 * by f), or NULL if f is not a discrete flow. For model files: since the structure depends on
 * the configuration alone, cnf_dflow_create with this configuration (any rng) followed by
 * copying the saved parameters into cnf_flow_params() rebuilds the same flow. */
CNF_API const cnf_dflow_config *cnf_dflow_get_config(const cnf_flow *f);

/* Number of layers in a stack (0 if f is not a discrete flow) and layer i (NULL out of range);
 * the layer is owned by the flow, and its parameters start at cnf_flow_params(f) + *offset. */
CNF_API size_t cnf_dflow_n_layers(const cnf_flow *f);
typedef struct cnf_dflow_layer cnf_dflow_layer;
CNF_API cnf_dflow_layer *cnf_dflow_layer_at(cnf_flow *f, size_t i, size_t *offset);

/* ---- single layers --------------------------------------------------------------------------
 * A layer does not own its parameters: every call takes θ (n_params), as cnf_mlp does. */
typedef struct cnf_dflow_layer_config {
    const char *type;     /* a layer name from the table above */
    size_t dim;           /* d ≥ 1 */
    int parity;           /* couplings: 0 or 1 (which half conditions) */
    size_t n_hidden;      /* conditioner networks */
    const size_t *hidden; /* copied */
    cnf_act act;
    size_t bins;          /* spline */
    double bound;         /* spline */
    double scale_bound;   /* affine, maf, iaf */
    double bn_momentum, bn_eps; /* batchnorm */
} cnf_dflow_layer_config;

/* The layer type names, for listings: i < cnf_dflow_layer_type_count(); NULL past the end. */
CNF_API size_t cnf_dflow_layer_type_count(void);
CNF_API const char *cnf_dflow_layer_type_at(size_t i);

/* Create a layer: CNF_ENAME for an unknown type, CNF_EINVAL for a bad field, CNF_ENOMEM; *out is
 * NULL on failure. Free with cnf_dflow_layer_free (NULL allowed). */
CNF_API int cnf_dflow_layer_create(cnf_dflow_layer **out, const cnf_dflow_layer_config *cfg);
CNF_API void cnf_dflow_layer_free(cnf_dflow_layer *l);
CNF_API const char *cnf_dflow_layer_type(const cnf_dflow_layer *l);
CNF_API size_t cnf_dflow_layer_n_params(const cnf_dflow_layer *l);
/* Initialise θ (n_params) as cnf_dflow_create does. Draws only from rng. */
CNF_API void cnf_dflow_layer_init(const cnf_dflow_layer *l, double *theta, cnf_rng *rng);

/* Y (n, d) = f(X) and logdet[i] += log|det ∂f/∂x|(x_i) (ACCUMULATES; logdet may be NULL).
 * train = 1 selects batch statistics (batchnorm; other layers ignore it). */
CNF_API int cnf_dflow_layer_forward(cnf_dflow_layer *l, const double *theta, const double *X,
                                    size_t n, double *Y, double *logdet, int train);
/* X (n, d) = f⁻¹(Y) with running statistics, and logdet[i] += log|det ∂f/∂x| at the computed
 * x_i (accumulates; may be NULL). CNF_ESOLVER if a root solve fails (planar, radial). */
CNF_API int cnf_dflow_layer_inverse(cnf_dflow_layer *l, const double *theta, const double *Y,
                                    size_t n, double *X, double *logdet);
/* The reverse pass of forward at X: for seeds GY (n, d) on Y and GL (n) on logdet (NULL = 0),
 * φ = Σ_i GY_i · y_i + GL_i logdet_i; ACCUMULATES ∂φ/∂X into GX (n, d) and ∂φ/∂θ into gtheta
 * (n_params); either may be NULL. train as in forward (with train = 1 the rows are coupled
 * through the batch statistics and the gradient includes that). */
CNF_API int cnf_dflow_layer_backward(cnf_dflow_layer *l, const double *theta, const double *X,
                                     size_t n, const double *GY, const double *GL, double *GX,
                                     double *gtheta, int train);

#ifdef __cplusplus
}
#endif
#endif
