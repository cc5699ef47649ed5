/* Private: the objective type table (STYLE.md rule 4). Each objective is one file in src/fit
 * (objective_*.c) that keeps everything static and exports one const pointer; objectives.c lists
 * them. Adding an objective: one file, one line in that list, one line in meson.build. */
#ifndef CNF_SRC_FIT_OBJECTIVE_H
#define CNF_SRC_FIT_OBJECTIVE_H

#include "cnf/train.h"

struct cnf_objective_type {
    const char *name;    /* for cnf_objective_from_name and listings */
    const char *summary; /* one line: what it minimises, on what */
    int uses_data;       /* each iteration draws a batch from next_batch first */
    const char *figure;  /* what validate computes, in words ("NLL", "log Z estimate") */
    /* At cnf_trainer_create (c->objective is set): CNF_EINVAL / CNF_EUNSUPPORTED naming what
     * the flow or the configuration (its objective_params included) lacks for this objective. */
    int (*check)(const cnf_flow *f, const cnf_train_config *c);
    /* One iteration's objective on the batch X (n, d) (NULL when uses_data is 0; then n is the
     * number of samples to draw) into *loss, its gradient into grad (n_params, overwritten), the
     * solver work and the progress's NLL field into st (every field set). Draws only from rng. */
    int (*loss_grad)(cnf_flow *f, const cnf_train_config *c, const double *X, size_t n,
                     cnf_rng *rng, double *loss, double *grad, cnf_flow_stats *st);
    /* Validation: fill p's figures (has_val is the trainer's) and return the one the health
     * guard watches in *figure. rng is validation's own stream. */
    int (*validate)(cnf_flow *f, const cnf_train_config *c, cnf_rng *rng, cnf_train_progress *p,
                    double *figure);
};

/* Shared by the objectives that fit data (objective_ml.c): the data-callback and validation-data
 * checks, and validation by the held-out NLL of val_X. */
int cnf_objective_check_data(const cnf_train_config *c);
int cnf_objective_validate_nll(cnf_flow *f, const cnf_train_config *c, cnf_rng *rng,
                               cnf_train_progress *p, double *figure);

#endif
