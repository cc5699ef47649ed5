/* toy_density: learn a 2-D density from samples with a continuous normalizing flow and draw
 * FFJORD's picture of it — the smallest complete use of the cnf library.
 *
 *   build/examples/toy_density [DATA [ITERS [PICTURE.png]]]     (defaults: 8gaussians 1000 toy.png)
 *
 * The model is FFJORD's toy CNF: v(t, x) an MLP 64-64-64 with tanh and concatsquash time gating;
 * log p(x) = log N(z; 0, I) − ∫ tr ∂v/∂x dt with z = x(T), integrated by Dopri5 at 1e-5; trained
 * by Adam on the mean negative log-likelihood with gradients from the checkpointed adjoint.
 * Exit status 0 when the held-out NLL has improved on the untrained model's. */
#include <stdio.h>
#include <stdlib.h>

#include <cnf.h>

static int draw(void *data_name, size_t n, double *X, cnf_rng *rng)
{
    return cnf_toy_sample_named(data_name, n, X, rng);
}

static int report(const cnf_train_progress *p, void *ctx)
{
    (void)ctx;
    if (p->has_val)
        printf("iteration %4zu  loss %.3f  test NLL %.3f ± %.3f nats  (%.1f s)\n", p->iter,
               p->loss, p->val_nll, p->val_nll_stderr, p->seconds);
    return 0;
}

static int check(int rc, const char *what)
{
    if (rc != CNF_OK)
        fprintf(stderr, "toy_density: %s: %s (%s)\n", what, cnf_strerror(rc), cnf_errmsg());
    return rc != CNF_OK;
}

int main(int argc, char **argv)
{
    const char *data = argc > 1 ? argv[1] : "8gaussians";
    size_t iters = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    const char *picture = argc > 3 ? argv[3] : "toy.png";

    cnf_rng rng;
    cnf_rng_seed(&rng, 0);
    enum { N_TEST = 2000 };
    static double test[N_TEST * 2];
    if (check(cnf_toy_sample_named(data, N_TEST, test, &rng), "held-out data"))
        return 1;

    /* The flow: FFJORD's toy defaults, with T = 0.5 trained as FFJORD's train_toy.py does. */
    cnf_cflow_config cfg;
    cnf_cflow_config_default(&cfg, 2);
    cfg.T = 0.5;
    cfg.train_T = 1;
    cnf_flow *flow;
    if (check(cnf_cflow_create(&flow, &cfg, &rng), "creating the flow"))
        return 1;

    double before, after, se;
    if (check(cnf_flow_eval_nll(flow, test, N_TEST, 1000, &before, &se, NULL), "evaluating"))
        return 1;
    printf("untrained: test NLL %.3f nats\n", before);

    cnf_train_config tc = {.iters = iters, .batch = 100, .next_batch = draw,
                           .batch_ctx = (void *)data, .val_every = iters > 4 ? iters / 4 : 1,
                           .val_X = test, .val_n = N_TEST, .val_batch = 1000,
                           .progress = report};
    cnf_optim_settings_default(&tc.optim, CNF_OPTIM_ADAM);
    tc.optim.lr = 1e-3;
    tc.optim.weight_decay = 1e-5;
    cnf_trainer *trainer;
    int failed = check(cnf_trainer_create(&trainer, flow, &tc, 1), "trainer") ||
                 check(cnf_trainer_run(trainer), "training") ||
                 check(cnf_flow_eval_nll(flow, test, N_TEST, 1000, &after, &se, NULL),
                       "evaluating") ||
                 check(cnf_plot_flow(picture, flow, test, N_TEST, 100, 20000, &rng, NULL),
                       "writing the picture");
    if (!failed)
        printf("trained %zu iterations: test NLL %.3f ± %.3f nats (was %.3f); wrote %s\n", iters,
               after, se, before, picture);
    cnf_trainer_free(trainer);
    cnf_flow_free(flow);
    return failed || !(after < before);
}
