/* First-order optimizers over one flat parameter array (STYLE rule 5): Adam and SGD, gradient-norm
 * clipping, linear learning-rate warm-up.
 *
 * Step t = 1, 2, ... with gradient g and learning rate lr_t = lr·min(1, t / warmup) (warmup = 0:
 * lr_t = lr). Weight decay wd, by default as L2 added to the gradient (PyTorch's Adam and SGD,
 * which FFJORD uses: g ← g + wd·θ); with `decoupled` set it is applied to the parameters instead
 * (AdamW, Loshchilov & Hutter 2019: θ ← θ − lr_t·wd·θ before the update).
 *   Adam (Kingma & Ba 2015, in PyTorch's arithmetic):
 *     m ← β1 m + (1 − β1) g ;  v ← β2 v + (1 − β2) g² ;
 *     θ ← θ − (lr_t / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 *   SGD with heavy-ball momentum μ (PyTorch, no dampening):
 *     μ = 0: θ ← θ − lr_t g ;  μ > 0: b ← g at t = 1, else b ← μ b + g ;  θ ← θ − lr_t b
 *
 * State for checkpoints: the step count t and the method's buffers (Adam: "exp_avg" m and
 * "exp_avg_sq" v; SGD with momentum: "momentum_buffer" b; plain SGD none), each a flat array of
 * n_params doubles owned by the optimizer. Saving t and the buffers and writing them back into a
 * fresh optimizer created with the same settings continues bit-identically. */
#ifndef CNF_OPTIM_H
#define CNF_OPTIM_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_OPTIM_ADAM = 0,
    CNF_OPTIM_SGD = 1,
} cnf_optim_method;

typedef struct cnf_optim_settings {
    cnf_optim_method method;
    double lr;           /* base learning rate, > 0 */
    double beta1, beta2; /* Adam moment decay rates in [0, 1) */
    double eps;          /* Adam denominator offset, > 0 */
    double momentum;     /* SGD momentum μ in [0, 1) */
    double weight_decay; /* ≥ 0 */
    int decoupled;       /* 0: L2 added to the gradient (default); 1: decoupled (AdamW) */
    size_t warmup;       /* steps of linear warm-up (0 = none) */
} cnf_optim_settings;

typedef struct cnf_optim cnf_optim;

/* Defaults: Adam lr 1e-3, β = (0.9, 0.999), ε = 1e-8; SGD lr 1e-2, μ = 0; no decay or warm-up. */
CNF_API void cnf_optim_settings_default(cnf_optim_settings *s, cnf_optim_method method);
/* "adam" / "sgd" ↔ method. from_name: CNF_ENAME (valid names in cnf_errmsg) if unknown. */
CNF_API const char *cnf_optim_method_name(cnf_optim_method method);
CNF_API int cnf_optim_method_from_name(const char *name, cnf_optim_method *out);

/* A new optimizer for n_params parameters with zero state (t = 0). The settings are copied.
 * CNF_EINVAL for an out-of-range setting or n_params = 0, CNF_ENOMEM; *out is NULL on failure. */
CNF_API int cnf_optim_create(const cnf_optim_settings *s, size_t n_params, cnf_optim **out);
CNF_API void cnf_optim_free(cnf_optim *opt); /* NULL is fine */

/* One update of params (n_params) with grad (n_params). CNF_ENONFINITE if grad holds NaN or Inf
 * (params, state and t are then unchanged); CNF_EINVAL for NULL arrays. */
CNF_API int cnf_optim_step(cnf_optim *opt, double *params, const double *grad);

/* The learning rate the next step will use (warm-up included). */
CNF_API double cnf_optim_lr(const cnf_optim *opt);
/* Change the base learning rate (for schedules; 0 allowed: a step then leaves the parameters
 * alone); CNF_EINVAL unless lr >= 0. */
CNF_API int cnf_optim_set_lr(cnf_optim *opt, double lr);
CNF_API size_t cnf_optim_n_params(const cnf_optim *opt);

/* Checkpoint state: the number of steps taken, and the state buffers i < cnf_optim_n_buffers();
 * cnf_optim_buffer returns a writable view of n_params doubles owned by opt (NULL if i is out of
 * range) and its name in *name if name is not NULL. */
CNF_API uint64_t cnf_optim_steps(const cnf_optim *opt);
CNF_API void cnf_optim_set_steps(cnf_optim *opt, uint64_t t);
CNF_API size_t cnf_optim_n_buffers(const cnf_optim *opt);
CNF_API double *cnf_optim_buffer(cnf_optim *opt, size_t i, const char **name);

/* Gradient-norm clipping (as PyTorch's clip_grad_norm_): with r = ||grad||₂, if r > max_norm
 * scale grad by max_norm / (r + 1e-6). *norm (if not NULL) receives r, computed without overflow.
 * CNF_EINVAL unless max_norm > 0 (INFINITY only measures); CNF_ENONFINITE if r is not finite
 * (grad is then unchanged). */
CNF_API int cnf_optim_clip_norm(double *grad, size_t n, double max_norm, double *norm);

#ifdef __cplusplus
}
#endif
#endif
