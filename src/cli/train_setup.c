/* `cnf train --data FILE`: the data file loaded and split, the preprocessing fitted. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

/* --data FILE: load and split it; fit the preprocessing on the training rows and build the
 * flow inside it (unless resuming, when the model file brings its own). 0, 1 or 2. */
int train_file_setup(train_ctx *c, cnf_rng *init)
{
    int u = data_load(CMD, c->to.data, c->dop.columns, &c->dop, c->to.seed, 1, &c->R.split);
    if (u)
        return u;
    size_t d = c->R.split.all.d, ntr = c->R.split.n_train;
    double levels = c->dop.levels;
    cnf_rng r;
    cnf_rng_seed(&r, c->to.seed ^ 0xde9a27ULL); /* the dequantisation noise of fit/val/test */
    if (c->R.flow) {
        const cnf_pre *p = cnf_pre_flow_pre(c->R.flow);
        if (cnf_flow_dim(c->R.flow) != d) {
            fprintf(stderr, "cnf %s: the model has dimension %zu, %s has %zu columns\n", CMD,
                    cnf_flow_dim(c->R.flow), c->to.data, d);
            return 1;
        }
        levels = p ? cnf_pre_levels(p) : 0;
    } else {
        cnf_pre_config pc;
        cnf_pre_config_default(&pc);
        pc.drop_constant = c->dop.drop_constant;
        pc.standardize = c->dop.standardize;
        pc.levels = c->dop.levels;
        pc.alpha = c->dop.alpha;
        pc.pca = c->dop.pca;
        double *fit = malloc(ntr * d * sizeof(double));
        if (!fit) {
            fprintf(stderr, "cnf %s: out of memory\n", CMD);
            return 1;
        }
        memcpy(fit, c->R.split.train, ntr * d * sizeof(double));
        /* Integer data are fitted at the middle of their dequantisation cells, so columns that
         * are constant (e.g. border pixels) stay constant and are dropped: their dequantised
         * density is uniform on one cell, log 1 = 0, so dropping them changes no NLL. */
        for (size_t i = 0; levels > 0 && i < ntr * d; i++)
            fit[i] += 0.5;
        cnf_pre *pre;
        int rc = cnf_pre_fit(&pre, &pc, fit, ntr, d);
        free(fit);
        if (rc) {
            cli_error(CMD, rc, "fitting the preprocessing on the training rows");
            return 1;
        }
        cnf_flow *inner;
        if ((u = flow_opts_build(CMD, &c->fo, cnf_pre_dim(pre), init, &inner))) {
            cnf_pre_free(pre);
            return u;
        }
        if ((rc = cnf_pre_flow_create(&c->R.flow, pre, inner))) {
            cli_error(CMD, rc, "preprocessing");
            return 1;
        }
    }
    if (levels > 0) /* one fixed noise draw for the held-out rows, fresh noise per batch */
        cnf_data_dequantize(c->R.split.val, c->R.split.n_val + c->R.split.n_test, d, &r);
    c->R.db = (data_batch){c->R.split.train, ntr, d, levels};
    printf("%s: %zu rows x %zu columns (train %zu, validation %zu, test %zu), modelled in %zu "
           "dimensions%s\n", c->to.data, c->R.split.all.n, d, ntr, c->R.split.n_val, c->R.split.n_test,
           cnf_pre_dim(cnf_pre_flow_pre(c->R.flow)),
           cnf_pre_is_projection(cnf_pre_flow_pre(c->R.flow)) ? " (PCA: NLL in PCA space)" : "");
    return 0;
}
