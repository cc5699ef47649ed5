/* The CNF's objectives (maximum likelihood, reverse KL) and the gradient pass that runs them: the
 * forward solves through every block, the terminal, and the backward pass of the chosen mode. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cflow_internal.h"

/* ---- the objectives and their gradients ------------------------------------------------------ */

/* An objective is a function of the states at the two ends of the solve. terminal() receives the
 * start states y0 and the end states y1 (n, S), returns the loss and fills lam (n, S) with
 * ∂loss/∂y1; the solve runs through the blocks from τ = 0 to 1 (dir > 0, data to base) or from 1
 * to 0 (dir < 0, base to data). */
typedef struct objective {
    int dir;
    int (*terminal)(struct objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                    double *lam, double *loss, cnf_flow_stats *st);
    cnf_logq_fn logq; /* reverse KL: the target */
    void *logq_ctx;
} objective;

/* Maximum likelihood: loss = mean_i [ −log N(z_i) + ℓ_i + λ_K E_i + λ_J N_i ]. */
static int nll_terminal(objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                        double *lam, double *loss, cnf_flow_stats *st)
{
    (void)o;
    (void)y0;
    const size_t d = c->cfg.dim, S = d + 3;
    double nll = 0.0, ek = 0.0, ej = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double *s = y1 + i * S;
        nll += -cnf_std_normal_logpdf(s, d) + s[d];
        ek += s[d + 1];
        ej += s[d + 2];
        for (size_t j = 0; j < d; j++)
            lam[i * S + j] = s[j] / (double)n;
        lam[i * S + d] = 1.0 / (double)n;
        lam[i * S + d + 1] = c->cfg.reg_kinetic / (double)n;
        lam[i * S + d + 2] = c->cfg.reg_jacobian / (double)n;
    }
    nll /= (double)n;
    ek /= (double)n;
    ej /= (double)n;
    *loss = nll + c->cfg.reg_kinetic * ek + c->cfg.reg_jacobian * ej;
    if (st) {
        st->nll = nll;
        st->reg_kinetic = ek;
        st->reg_jacobian = ej;
    }
    return CNF_OK;
}

/* Reverse KL: z_i = y0's x, x_i = y1's x, log p(x_i) = log N(z_i) + ℓ_i(0) (the solve runs from
 * τ = 1 down to 0 with ℓ(1) = 0), loss = mean_i [ log p(x_i) − log q̃(x_i) ] plus the regularizers
 * (E, N integrated backwards are −∫, hence the signs). */
static int rkl_terminal(objective *o, cflow *c, const double *y0, const double *y1, size_t n,
                        double *lam, double *loss, cnf_flow_stats *st)
{
    const size_t d = c->cfg.dim, S = d + 3;
    double *X = cnf_calloc(cnf_size_mul(n, d), sizeof(double)), *lq = cnf_calloc(n, sizeof(double));
    double *gq = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    int rc = (!X || !lq || !gq) ? cnf_fail(CNF_ENOMEM, "allocating the target's values") : 0;
    for (size_t i = 0; !rc && i < n; i++)
        memcpy(X + i * d, y1 + i * S, d * sizeof(double));
    if (!rc && (rc = o->logq(o->logq_ctx, X, n, lq, gq)) != 0)
        rc = rc < 0 ? rc : cnf_fail(CNF_ERHS, "target log-density callback returned %d", rc);
    double kl = 0.0, ek = 0.0, ej = 0.0;
    for (size_t i = 0; !rc && i < n; i++) {
        const double *s = y1 + i * S;
        double logp = cnf_std_normal_logpdf(y0 + i * S, d) + s[d];
        if (!isfinite(lq[i]) || !isfinite(logp)) {
            rc = cnf_fail(CNF_ENONFINITE, "sample %zu: log p = %g, log q = %g", i, logp, lq[i]);
            break;
        }
        kl += logp - lq[i];
        ek -= s[d + 1];
        ej -= s[d + 2];
        for (size_t j = 0; j < d; j++)
            lam[i * S + j] = -gq[i * d + j] / (double)n;
        lam[i * S + d] = 1.0 / (double)n;
        lam[i * S + d + 1] = -c->cfg.reg_kinetic / (double)n;
        lam[i * S + d + 2] = -c->cfg.reg_jacobian / (double)n;
    }
    if (!rc) {
        kl /= (double)n;
        ek /= (double)n;
        ej /= (double)n;
        *loss = kl + c->cfg.reg_kinetic * ek + c->cfg.reg_jacobian * ej;
        if (st) {
            st->nll = -kl; /* the ELBO of log Z */
            st->reg_kinetic = ek;
            st->reg_jacobian = ej;
        }
    }
    free(X);
    free(lq);
    free(gq);
    return rc;
}

/* Solve from the start states Y0 (n rows of d) through every block, evaluate the objective and,
 * if grad or gx is not NULL, its gradient w.r.t. θ (and s = √T) and the start states. */
static int grad_core(cflow *c, objective *ob, const double *Y0, size_t n, cnf_rng *rng,
                     double *loss, double *grad, double *gx, cnf_flow_stats *st)
{
    const cnf_cflow_config *cfg = &c->cfg;
    const size_t d = cfg->dim, S = d + 3, dim = n * S, B = cfg->blocks;
    const size_t K = cflow_n_tangents(c, cfg->trace);
    const int want_grad = grad || gx, dir = ob->dir;
    const double tau0 = dir > 0 ? 0.0 : 1.0, tau1 = dir > 0 ? 1.0 : 0.0;
    const int use_cvodes = cnf_stepper_is_cvodes(cfg->train.stepper);
    const cnf_rk_tableau *tab = cnf_stepper_tableau(cfg->train.stepper);
    if (cfg->trace != CNF_TRACE_EXACT && !rng)
        return cnf_fail(CNF_EINVAL, "a Hutchinson trace needs a random generator for its probes");
    if (want_grad && cfg->grad == CNF_GRAD_BACKPROP && !tab)
        return cnf_fail(CNF_EUNSUPPORTED, "backprop through the solver needs an explicit RK "
                        "method, not %s (use --grad adjoint)", cnf_stepper_name(cfg->train.stepper));
    if (want_grad && cfg->grad == CNF_GRAD_BACKSOLVE && use_cvodes)
        return cnf_fail(CNF_EUNSUPPORTED, "backsolve is offered with the built-in methods only");
    /* Every buffer below holds at most B·n·S·(K + 1) values (states per block, probes). */
    if (!cnf_size_ok(cnf_size_mul(cnf_size_mul(n, S), cnf_size_mul(B, K + 1))))
        return cnf_fail(CNF_ENOMEM, "%zu samples of dimension %zu are too many to address", n, d);

    int rc = cflow_ensure_slot(c, n, K);
    if (rc)
        return rc;
    if (c->n_trs < B) {
        cnf_rk_tape *nt = realloc(c->trs, B * sizeof *nt);
        if (!nt)
            return cnf_fail(CNF_ENOMEM, "allocating the CNF state for %zu samples", n);
        memset(nt + c->n_trs, 0, (B - c->n_trs) * sizeof *nt);
        c->trs = nt;
        c->n_trs = B;
    }
    cflow_hold_weights(c, 1);
    /* Everything this call allocates, freed at `done`. */
    double *U = NULL, *y = NULL, *y0 = NULL, *y_end = NULL, *lam = NULL, *gth_scratch = NULL;
    cnf_rk_tape *tr = c->trs;
    /* One context per block for the whole call: CVODES re-runs the forward RHS during the
     * backward pass with the context given to the forward solve. */
    aug *ag = cnf_calloc(B, sizeof *ag);
    cnf_cvodes_adj **adj = cnf_calloc(B, sizeof *adj);
    y = cnf_calloc(dim, sizeof(double));
    y0 = cnf_calloc(dim, sizeof(double));
    y_end = cnf_calloc(cnf_size_mul(B, dim), sizeof(double));
    lam = cnf_calloc(dim, sizeof(double));
    if (!ag || !adj || !y || !y0 || !y_end || !lam) {
        rc = cnf_fail(CNF_ENOMEM, "allocating the CNF state for %zu samples", n);
        goto done;
    }
    if (cfg->trace != CNF_TRACE_EXACT) {
        U = cnf_calloc(cnf_size_mul(cnf_size_mul(cnf_size_mul(B, K), n), d), sizeof(double));
        if (!U) {
            rc = cnf_fail(CNF_ENOMEM, "allocating %zu probes", B * K * n * d);
            goto done;
        }
        cflow_draw_probes(cfg->trace, U, B * K * n * d, rng);
    }
    for (size_t i = 0; i < n; i++)
        memcpy(y + i * S, Y0 + i * d, d * sizeof(double));
    memcpy(y0, y, dim * sizeof(double));

    /* Forward, block by block (in reverse order for dir < 0), keeping what the gradient needs;
     * y_end + k·dim holds the state after the k-th solve. */
    const double T = cflow_end_time(c);
    cnf_ode_options opt = cflow_state_options(c, &cfg->train);
    const int record = want_grad && !use_cvodes && cfg->grad != CNF_GRAD_BACKSOLVE;
    const int cv_adjoint = want_grad && use_cvodes && cfg->grad == CNF_GRAD_ADJOINT;
    cnf_ode_options cv_opt = opt;
    cv_opt.rtol *= CFLOW_CVODES_ADJ_TOL_SCALE;
    cv_opt.atol *= CFLOW_CVODES_ADJ_TOL_SCALE;
    for (size_t k = 0; k < B; k++) {
        size_t b = dir > 0 ? k : B - 1 - k;
        ag[k] = (aug){.c = c, .b = b, .n = n, .trace = cfg->trace, .K = K,
                      .U = U ? U + b * K * n * d : NULL, .T = T};
        aug *a = &ag[k];
        cnf_ode_stats os = {0};
        if (cv_adjoint) {
            rc = cnf_cvodes_adj_create(&adj[k], cfg->train.stepper, dim, dim,
                                       c->P + (cfg->train_T ? 1 : 0),
                                       cfg->checkpoint_steps ? cfg->checkpoint_steps : 50);
            if (rc == CNF_OK)
                rc = cnf_cvodes_adj_forward(adj[k], cflow_aug_rhs, a, tau0, tau1, y, &cv_opt, &os);
        } else {
            /* The solver's tape of the accepted steps: with their RK stages for backprop. */
            cnf_ode_solver *s = NULL;
            if (record && (rc = cflow_solver(c, 0, cfg->train.stepper, dim, &s)) == CNF_OK)
                rc = cnf_rk_tape_begin(&tr[k], s, dim, cfg->grad == CNF_GRAD_BACKPROP);
            if (rc == CNF_OK)
                rc = cflow_solve(&cfg->train, a, dim, tau0, tau1, y, &opt,
                                 record ? cnf_rk_tape_record : NULL, &tr[k], &os);
        }
        cflow_add_stats(st, &os);
        if (rc)
            goto done;
        memcpy(y_end + k * dim, y, dim * sizeof(double));
    }

    /* The terminal may run user code (reverse KL's log q): the weights are not held meanwhile,
     * and are prepared afresh for the backward pass. */
    cflow_hold_weights(c, 0);
    rc = ob->terminal(ob, c, y0, y, n, lam, loss, st);
    cflow_hold_weights(c, 1);
    if (rc || !want_grad)
        goto done;

    /* Backward, solve by solve in reverse; λ carries ∂L/∂(state) at each block boundary. */
    double gT = 0.0;
    if (!grad && !(gth_scratch = cnf_calloc(c->base.n_params, sizeof(double)))) {
        rc = cnf_fail(CNF_ENOMEM, "allocating the parameter gradient");
        goto done;
    }
    double *g = grad ? grad : gth_scratch;
    for (size_t k = B; k-- > 0 && rc == CNF_OK;) {
        aug *a = &ag[k];
        double *gb = g + a->b * c->P;
        size_t nfe = 0;
        a->nfe = 0;
        if (cfg->grad == CNF_GRAD_BACKPROP) {
            rc = cflow_backprop_block(a, &tr[k], lam, gb, &gT);
            nfe = a->nfe;
        } else if (use_cvodes) {
            rc = cflow_cvodes_backward(a, adj[k], &cv_opt, lam, gb, &gT, &nfe);
        } else {
            rc = cflow_adjoint_block(a, &tr[k], y_end + k * dim, tau1, tau0, &cfg->train,
                                     cfg->grad == CNF_GRAD_BACKSOLVE, lam, gb, &gT, &nfe);
        }
        if (st)
            st->nfe_backward += nfe;
    }
    if (rc == CNF_OK && cfg->train_T) {
        double s = c->base.theta[c->base.n_params - 1];
        g[c->base.n_params - 1] += 2.0 * s * gT; /* T = s² */
    }
    if (rc == CNF_OK && gx)
        for (size_t i = 0; i < n; i++)
            memcpy(gx + i * d, lam + i * S, d * sizeof(double));

done:
    cflow_hold_weights(c, 0);
    for (size_t k = 0; adj && k < B; k++)
        cnf_cvodes_adj_free(adj[k]);
    free(ag);
    free(adj);
    free(U);
    free(y);
    free(y0);
    free(y_end);
    free(lam);
    free(gth_scratch);
    return rc;
}

int cflow_nll_grad(cnf_flow *f, const double *X, size_t n, cnf_rng *rng, double *loss,
                   double *grad, double *gx, cnf_flow_stats *st)
{
    objective ob = {.dir = +1, .terminal = nll_terminal};
    return grad_core((cflow *)f, &ob, X, n, rng, loss, grad, gx, st);
}

/* Reverse KL: base points from rng, then the same machinery run from τ = 1 to 0. */
int cflow_rkl_grad(cnf_flow *f, size_t n, cnf_rng *rng, cnf_logq_fn logq, void *ctx,
                   double *loss, double *grad, cnf_flow_stats *st)
{
    const size_t d = f->dim;
    double *Z = cnf_calloc(cnf_size_mul(n, d), sizeof(double));
    if (!Z)
        return cnf_fail(CNF_ENOMEM, "allocating %zu base points", n);
    for (size_t i = 0; i < n * d; i++)
        Z[i] = cnf_rng_normal(rng);
    objective ob = {.dir = -1, .terminal = rkl_terminal, .logq = logq, .logq_ctx = ctx};
    int rc = grad_core((cflow *)f, &ob, Z, n, rng, loss, grad, NULL, st);
    free(Z);
    return rc;
}
