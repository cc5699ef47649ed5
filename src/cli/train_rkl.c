/* `cnf train --objective reverse-kl`: fit the flow to an unnormalized target; no data. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "cli.h"
#include "cnf.h"
#include "train_cmd.h"

/* --objective reverse-kl: fit the flow to --target; no data. */
int train_reverse_kl(train_ctx *c, cnf_st_file *file)
{
    int rc = c->to.target_csv ? cnf_target_logreg_file(&c->R.target, c->to.target_csv, c->to.prior_sd)
                           : cnf_target_create(c->to.target, &c->R.target);
    if (rc) {
        fprintf(stderr, "cnf %s: %s: %s\n", CMD, c->to.target_csv ? "--target-csv" : "--target",
                cnf_errmsg());
        return c->to.target_csv && rc != CNF_ENAME ? 1 : 2;
    }
    const char *tname = c->to.target_csv ? c->to.target_csv : c->to.target;
    const size_t d = cnf_target_dim(c->R.target);
    cnf_rng init;
    cnf_rng_seed(&init, c->to.seed);
    int u;
    if (!c->R.flow && (u = flow_opts_build(CMD, &c->fo, d, &init, &c->R.flow)))
        return u;
    if (cnf_flow_dim(c->R.flow) != d) {
        fprintf(stderr, "cnf %s: the model has dimension %zu, target %s has %zu\n", CMD,
                cnf_flow_dim(c->R.flow), tname, d);
        return 1;
    }
    if (c->to.plot && d != 2) {
        fprintf(stderr, "cnf %s: --plot draws 2-D targets only (%s has %zu dimensions)\n", CMD,
                tname, d);
        return 2;
    }
    c->R.rkl = (cnf_rkl_params){.logq = cnf_target_logq, .ctx = c->R.target};
    cnf_train_config tc = {.iters = c->to.iters, .batch = c->to.batch, .clip_norm = c->to.clip,
                           .val_every = c->to.val_every ? c->to.val_every : c->to.iters,
                           .val_n = c->to.test_n, .objective = cnf_objective_rkl,
                           .objective_params = &c->R.rkl, .progress = train_progress, .progress_ctx = c,
                           .after_rows = c->to.test_n, /* the final log Z estimate */
                           .stop = train_stop_requested};
    if (c->to.max_seconds > 0) /* the budget counts from the command's start */
        tc.max_seconds = fmax(c->to.max_seconds - (cli_now() - c->R.t0), 1e-9);
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = c->to.lr;
    tc.optim.weight_decay = c->to.weight_decay;
    tc.ema_decay = c->to.ema;
    if ((rc = train_lr_schedule(c, &tc)))
        return rc;
    if ((rc = cnf_trainer_create(&c->R.trainer, c->R.flow, &tc, c->to.seed))) {
        cli_error(CMD, rc, "setting up training");
        return 2;
    }
    if (file && (rc = cnf_model_restore_trainer(file, c->R.trainer))) {
        cli_error(CMD, rc, "restoring the training state of --resume");
        return 1;
    }
    c->R.first_iter = cnf_trainer_iter(c->R.trainer);
    c->R.tty = isatty(2);
    printf("cnf train: reverse KL to %s (d = %zu), %s flow with %zu parameters, batch %zu, "
           "seed %llu\n", tname, d, cnf_flow_kind(c->R.flow), cnf_flow_n_params(c->R.flow),
           c->to.batch, (unsigned long long)c->to.seed);
    fflush(stdout);
    c->R.start = cli_now();
    rc = cnf_trainer_run(c->R.trainer);
    double seconds = cli_now() - c->R.start, log_z = NAN, ess = NAN, elbo = NAN;
    outcome o;
    train_outcome_of_run(c, &o, rc);
    cnf_rng r;
    cnf_rng_seed(&r, c->to.seed ^ 0x15a3b1eULL);
    if (train_outcome_good(&o) &&
        (rc = cnf_flow_importance(c->R.flow, c->to.test_n, &r, cnf_target_logq, c->R.target, &log_z,
                                  &ess, &elbo)))
        train_outcome_fail(&o, rc, "estimating log Z at the end");
    double truth = cnf_target_log_z(c->R.target);
    train_outcome_save(c, &o);
    seconds = cli_now() - c->R.t0; /* the whole command, as --max-seconds counts it */
    if (c->to.plot && train_outcome_good(&o)) {
        train_write_begin();
        rc = cnf_plot_target(c->to.plot, c->R.flow, cnf_target_logq, c->R.target, 100, 20000, &r, NULL);
        train_write_end();
        if (rc)
            train_outcome_fail(&o, rc, "writing --plot");
        else
            printf("wrote %s\n", c->to.plot);
    }
    char true_z[48] = "unknown";
    if (!isnan(truth))
        snprintf(true_z, sizeof true_z, "%.4f", truth);
    if (train_outcome_good(&o))
        printf("done: %zu iterations in %.1f s; over %zu samples: ELBO %.4f, log Z by "
               "importance sampling %.4f (true %s), ESS %.1f%%\n",
               cnf_trainer_iter(c->R.trainer), seconds, c->to.test_n, elbo, log_z, true_z, 100 * ess);
    else
        printf("stopped (%s) at iteration %zu after %.1f s\n", cnf_train_status_name(o.st),
               cnf_trainer_iter(c->R.trainer), seconds);
    if (c->to.json) {
        size_t n = c->R.n_logged ? c->R.n_logged : 1;
        train_json_status(&o);
        printf(",\"objective\":\"reverse-kl\",\"target\":");
        cli_json_string(stdout, tname);
        printf(",\"iters\":%zu,\"seconds\":", cnf_trainer_iter(c->R.trainer));
        cli_json_number(stdout, seconds);
        printf(",\"max_seconds\":");
        cli_json_number(stdout, c->to.max_seconds > 0 ? c->to.max_seconds : NAN);
        printf(",\"elbo\":");
        cli_json_number(stdout, elbo);
        printf(",\"log_z_estimate\":");
        cli_json_number(stdout, log_z);
        printf(",\"ess_fraction\":");
        cli_json_number(stdout, ess);
        if (!isnan(truth)) {
            printf(",\"log_z_true\":");
            cli_json_number(stdout, truth);
        }
        printf(",\"nfe_forward\":");
        cli_json_number(stdout, c->R.nfe_f / n);
        printf(",\"nfe_backward\":");
        cli_json_number(stdout, c->R.nfe_b / n);
        printf(",\"seed\":%llu}\n", (unsigned long long)c->to.seed);
    }
    return train_outcome_exit(&o);
}
