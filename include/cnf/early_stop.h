/* Early stopping for any flow (FFJORD's tabular schedule): stop when the validation NLL has not
 * improved for `patience` evaluations, and keep the best parameters. */
#ifndef CNF_EARLY_STOP_H
#define CNF_EARLY_STOP_H

#include "cnf/flow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_early_stop {
    cnf_flow *flow;   /* borrowed */
    double *best;     /* (n_params) the best parameters seen */
    double best_nll;  /* their validation NLL (+inf before the first update) */
    size_t best_iter; /* the iteration they are from */
    size_t patience;  /* 0: never stop, only keep the best */
    size_t since;     /* evaluations since the last improvement */
} cnf_early_stop;

/* Start tracking f (copies its current parameters as the best so far). CNF_ENOMEM. */
CNF_API int cnf_early_stop_init(cnf_early_stop *es, cnf_flow *f, size_t patience);
/* Record a validation NLL at iteration iter: a new best (strictly lower, finite) is copied. Returns
 * 1 when patience evaluations in a row have not improved (time to stop), else 0. */
CNF_API int cnf_early_stop_update(cnf_early_stop *es, size_t iter, double val_nll);
/* Copy the best parameters back into the flow. */
CNF_API void cnf_early_stop_restore(cnf_early_stop *es);
CNF_API void cnf_early_stop_free(cnf_early_stop *es); /* frees the copy; NULL is fine */

#ifdef __cplusplus
}
#endif
#endif
