/* Training a flow, and evaluating it.
 *
 * The loop: for each iteration draw a batch from the caller's data callback (for objectives that
 * fit data), compute the objective and its gradient, clip the gradient norm, take an optimizer
 * step, report progress, and every val_every iterations validate (held-out NLL, or the
 * objective's own figure). Everything random (batches, Hutchinson probes, an objective's draws)
 * comes from the trainer's one generator, whose state, with the optimizer's and the iteration
 * count, is what a checkpoint saves (cnf/model.h): resuming from a checkpoint continues
 * bit-identically — except with ema_decay, whose average and iterate a checkpoint does not hold
 * (see there).
 *
 * The objective is a type (GSL style, like the ODE steppers): the trainer calls its table and
 * never asks which one it runs. Each takes settings of its own through objective_params. */
#ifndef CNF_TRAIN_H
#define CNF_TRAIN_H

#include "cnf/flow.h"
#include "cnf/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill X (n, d) with a training batch, drawing only from rng. Non-zero return stops training
 * with that code. */
typedef int (*cnf_batch_fn)(void *ctx, size_t n, double *X, cnf_rng *rng);

/* ---- Objectives -----------------------------------------------------------------------------
 * An objective says what one iteration minimises, what a batch is, and what validation reports.
 *   cnf_objective_ml    maximum likelihood: the flow's own loss on data batches (mean NLL plus
 *                       its regularizers, cnf_flow_nll_grad); validation: held-out NLL.
 *                       objective_params: NULL.
 *   cnf_objective_fm    conditional flow matching on data batches (cnf/fm.h): regresses the
 *                       velocity field of a continuous flow, no ODE solves; validation: held-out
 *                       NLL (exact, through the solver). objective_params: a cnf_fm_params, or
 *                       NULL for I-CFM with σ = 0. The flow must pass cnf_flow_velocity_check.
 *   cnf_objective_rkl   reverse KL to an unnormalized target (cnf_flow_rkl_grad): each iteration
 *                       draws `batch` base points, no data; validation: importance sampling with
 *                       val_n samples (log Z, ESS, ELBO). objective_params: a cnf_rkl_params. */
typedef struct cnf_objective_type cnf_objective_type; /* defined privately in src/fit */

CNF_API extern const cnf_objective_type *const cnf_objective_ml;
CNF_API extern const cnf_objective_type *const cnf_objective_fm;
CNF_API extern const cnf_objective_type *const cnf_objective_rkl;

/* The reverse-KL objective's settings: the target log-density and its context (borrowed). */
typedef struct cnf_rkl_params {
    cnf_logq_fn logq;
    void *ctx;
} cnf_rkl_params;

/* The objectives by name ("ml", "flow-matching", "reverse-kl"); CNF_ENAME lists the valid ones.
 * cnf_objective_count / _at enumerate them (for listings); _summary is one line of what it does. */
CNF_API int cnf_objective_from_name(const char *name, const cnf_objective_type **out);
CNF_API size_t cnf_objective_count(void);
CNF_API const cnf_objective_type *cnf_objective_at(size_t i);
CNF_API const char *cnf_objective_name(const cnf_objective_type *o);
CNF_API const char *cnf_objective_summary(const cnf_objective_type *o);

typedef struct cnf_train_progress {
    size_t iter, iters;          /* iterations done (1-based) and planned */
    double loss;                 /* objective of this batch (NLL + regularizers for ml) */
    double nll;                  /* NLL part of it (ml), the ELBO (reverse KL), the loss (fm) */
    double grad_norm;            /* gradient norm before clipping */
    double lr;                   /* learning rate used for this step */
    size_t nfe_forward, nfe_backward; /* of this iteration */
    double seconds;              /* wall time of training so far (this run) */
    int has_val;                 /* this call carries a validation result */
    double val_nll, val_nll_stderr; /* mean held-out NLL (nats) and its standard error */
    /* Reverse KL: validation by importance sampling with val_n samples (has_val set). */
    double log_z, ess_fraction, elbo;
} cnf_train_progress;

/* Called after every iteration; a non-zero return stops training (cnf_trainer_run returns it). */
typedef int (*cnf_progress_fn)(const cnf_train_progress *p, void *ctx);

/* Polled before every iteration; non-zero asks the run to end there (see cnf_train_config.stop). */
typedef int (*cnf_stop_fn)(void *ctx);

/* How the last cnf_trainer_run ended (cnf_trainer_status). */
typedef enum cnf_train_status {
    CNF_TRAIN_OK = 0,        /* "ok": every iteration done (or no run yet) */
    CNF_TRAIN_DIVERGED,      /* "diverged": the health guard stopped it (CNF_EDIVERGED, or a
                                solver failure on parameters that had run away) */
    CNF_TRAIN_SOLVER_FAILED, /* "solver_failed": the ODE solver failed (its CNF_E* code) */
    CNF_TRAIN_INTERRUPTED,   /* "interrupted": the stop callback asked (return CNF_OK) */
    CNF_TRAIN_TIME_LIMIT,    /* "time_limit": max_seconds reached (return CNF_OK) */
    CNF_TRAIN_STOPPED,       /* "stopped": the progress callback returned non-zero */
    CNF_TRAIN_ERROR,         /* "error": another failure (data callback, memory, ...) */
} cnf_train_status;

CNF_API const char *cnf_train_status_name(cnf_train_status s);

/* The learning-rate schedule of a run (cnf_train_config.lr_schedule). */
typedef enum cnf_lr_schedule {
    CNF_LR_CONSTANT = 0, /* "constant": optim.lr throughout */
    CNF_LR_COSINE,       /* "cosine": optim.lr → lr_final along a half cosine of the elapsed
                            fraction of the run (see lr_final) */
} cnf_lr_schedule;

/* The schedules by name ("constant", "cosine"); CNF_ENAME lists the valid ones. */
CNF_API int cnf_lr_schedule_from_name(const char *name, cnf_lr_schedule *out);
CNF_API const char *cnf_lr_schedule_name(cnf_lr_schedule s);

typedef struct cnf_train_config {
    size_t iters;            /* total iterations to reach */
    size_t batch;            /* batch size ≥ 1 */
    cnf_optim_settings optim;
    /* Learning-rate schedule (0 = CNF_LR_CONSTANT: optim.lr). With CNF_LR_COSINE the step of
     * iteration i uses the base rate
     *     lr(f) = lr_final + (optim.lr − lr_final)·½(1 + cos π f),
     * f the elapsed fraction of the run: with max_seconds, the wall time since the start of this
     * cnf_trainer_run over max_seconds (capped at 1); otherwise (i − 1 − i0)/(iters − 1 − i0)
     * (0 when iters = i0 + 1), i0 = lr_iter0, so the step of iteration i0 + 1 uses optim.lr and
     * the last lr_final. The optimizer's linear warm-up (optim.warmup) multiplies the scheduled
     * rate as it does the constant one. lr_final ≥ 0 and at most optim.lr. lr_iter0 (< iters)
     * is where the schedule starts, e.g. the iteration a second phase of training begins at
     * (0: the first iteration; a resumed run continues the same schedule). */
    cnf_lr_schedule lr_schedule;
    double lr_final;
    size_t lr_iter0;
    double clip_norm;        /* clip the gradient to this norm (0 = no clipping) */
    size_t val_every;        /* validate every this many iterations (0 = never) */
    const double *val_X;     /* (val_n, d) held-out data, borrowed (objectives that fit data) */
    size_t val_n;
    size_t val_batch;        /* evaluation batch size (0 = all at once) */
    /* What to minimise (NULL: cnf_objective_ml) and its settings (see the objectives above;
     * borrowed: they must outlive the trainer). */
    const cnf_objective_type *objective;
    const void *objective_params;
    cnf_batch_fn next_batch; /* objectives that fit data (ml, flow matching): required */
    void *batch_ctx;
    /* Wall-time budget of the run (0 = no limit), from the start of cnf_trainer_run. The run
     * ends (status CNF_TRAIN_TIME_LIMIT) after the last iteration that leaves room for one more
     * validation and for after_rows, i.e. once
     *     elapsed + t_iter + r·(val_n + after_rows) (+ r·val_n if this iteration validates anyway)
     * would pass it, so that the final validation (and the caller's evaluation of after_rows
     * more rows, e.g. a test set) fit inside. t_iter is the last iteration's time; r the time
     * per validated row (per sample for reverse KL) of the last validation — before the first,
     * of a probe evaluation of one training batch at the first iteration — times 1.1, scaled by
     * the growth of the training solves' NFE since it was measured. */
    double max_seconds;
    size_t after_rows;       /* with max_seconds: rows the caller evaluates after the run */
    /* Stop request (optional), polled before every iteration: when it returns non-zero the run
     * ends after the iteration in progress with CNF_OK and status CNF_TRAIN_INTERRUPTED, without
     * a further validation. Meant for a flag an application's signal handler sets: the library
     * installs no signal handlers. */
    cnf_stop_fn stop;
    void *stop_ctx;
    /* Numerical-health guard. Each threshold: 0 = the default given, negative = check off.
     * Training stops with CNF_EDIVERGED when the loss or the gradient is not finite, when
     *     |loss| > guard_loss (1e10)   or   ‖g‖ > guard_grad (1e10, before clipping),
     * or when one optimizer step moves the parameters by more than their own scale,
     *     RMS(θ_new − θ_old) > guard_step · max(RMS(θ_old), 1)   (guard_step 1),
     * which no healthy step does (Adam's first step has RMS ≤ lr) and which a runaway learning
     * rate does at once, before the next ODE solve stalls on the blown-up field. A solver failure
     * (CNF_EMAX_STEPS, CNF_ESTEP_UNDERFLOW, CNF_ESOLVER, CNF_ERHS, CNF_ENONFINITE) counts as
     * divergence (CNF_EDIVERGED, status CNF_TRAIN_DIVERGED) when the state went non-finite or
     * the parameters have moved by more than that scale since the last good ones; otherwise the
     * run ends with the solver's code and status CNF_TRAIN_SOLVER_FAILED. Either way the trainer goes back to the last good state: the
     * parameters (with optimizer buffers, generator, iteration count and average) of the last
     * validation that gave a finite figure in this run, or, before any, of the last iteration
     * whose loss and gradient were healthy — so a checkpoint saved then resumes from there.
     * cnf_trainer_stop_reason says what happened, at which iteration, and what to try. */
    double guard_loss, guard_grad, guard_step;
    /* Parameter averaging (0 = off; else a decay β in (0, 1), e.g. 0.999): after every step
     *     θ̄ ← β_k θ̄ + (1 − β_k) θ,   β_k = min(β, (1 + k)/(10 + k)),  k = steps of this trainer
     * before this one, an exponential moving average of the iterates (Polyak & Juditsky 1992 for
     * the average; the warm-up β_k is TensorFlow's ExponentialMovingAverage with num_updates),
     * starting from the parameters the flow holds at this trainer's first step. Minibatch noise keeps the last iterate
     * jittering around the optimum at the scale of the learning rate; the average removes most
     * of that (standard for flow matching and diffusion models). Validation, and the progress
     * callback of a validating iteration, see θ̄ in the flow; when the run ends (all iterations,
     * max_seconds, or a stop from the progress callback) θ̄ is written into the flow, so the
     * saved model is the average. A further cnf_trainer_run continues from θ̄. The average is not
     * part of a checkpoint: a resumed run starts a new one from the saved parameters. */
    double ema_decay;
    cnf_progress_fn progress; /* optional */
    void *progress_ctx;
} cnf_train_config;

typedef struct cnf_trainer cnf_trainer;

/* A trainer for flow f (borrowed; it must outlive the trainer), its optimizer created from
 * cfg->optim and its generator seeded with seed. CNF_EINVAL names a bad setting. */
CNF_API int cnf_trainer_create(cnf_trainer **out, cnf_flow *f, const cnf_train_config *cfg,
                               uint64_t seed);
CNF_API void cnf_trainer_free(cnf_trainer *t);

/* Train until cfg->iters iterations are done (from wherever the trainer stands), or until the
 * max_seconds budget is used (the last iteration then reports has_val with a validation, if
 * val_every is set), or the stop callback asks. cnf_trainer_status says which. On a divergence or solver
 * failure the trainer is back at its last good state (see the guard above; with ema_decay the
 * flow holds that state's average). On another error the parameters hold the last successful
 * step (not the average of ema_decay), and the iteration count says where. */
CNF_API int cnf_trainer_run(cnf_trainer *t);

/* How the last run ended, and in words why it stopped early ("" after CNF_TRAIN_OK): what
 * happened at which iteration, which parameters were kept, what to try. Valid until the next
 * cnf_trainer_run. */
CNF_API cnf_train_status cnf_trainer_status(const cnf_trainer *t);
CNF_API const char *cnf_trainer_stop_reason(const cnf_trainer *t);

/* The parameter average θ̄ of ema_decay (n_params), or NULL when there is none (no ema_decay, or
 * no step taken yet). A checkpoint (cnf_model_save) stores it in place of the iterate. */
CNF_API const double *cnf_trainer_average(const cnf_trainer *t);

/* The state a checkpoint saves and restores. */
CNF_API size_t cnf_trainer_iter(const cnf_trainer *t);
CNF_API void cnf_trainer_set_iter(cnf_trainer *t, size_t iter);
CNF_API cnf_rng *cnf_trainer_rng(cnf_trainer *t);
CNF_API cnf_optim *cnf_trainer_optim(cnf_trainer *t);
CNF_API cnf_flow *cnf_trainer_flow(cnf_trainer *t);
CNF_API const cnf_train_config *cnf_trainer_config(const cnf_trainer *t);

/* Mean negative log-likelihood of X (n, d) under f, in batches of `batch` rows (0 = all), with
 * its standard error over the points. stats (may be NULL) sums the solver work. */
CNF_API int cnf_flow_eval_nll(cnf_flow *f, const double *X, size_t n, size_t batch, double *mean,
                              double *stderr_out, cnf_flow_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
