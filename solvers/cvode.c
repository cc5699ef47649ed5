/* SUNDIALS CVODES 6.4 behind the stepper interface (Hindmarsh et al., "SUNDIALS: Suite of
 * nonlinear and differential/algebraic equation solvers", ACM TOMS 31(3), 2005; CVODES user guide
 * v6.4.1). Two methods:
 *   cvode-adams  variable-order Adams–Moulton (orders 1–12) with SUNNonlinSol_FixedPoint
 *                (functional iteration: non-stiff problems, no Jacobian);
 *   cvode-bdf    variable-order BDF (orders 1–5) with Newton iteration and matrix-free
 *                SUNLinSol_SPGMR, J·v from the caller's opt->jvp (CVodeSetJacTimes) when given,
 *                else by CVODE's difference quotient (stiff problems).
 * Every object holds its own SUNContext; no globals. CVODE's messages go to a handler that keeps
 * the last one for cnf_errmsg, never to stderr. RHS calls are counted in the wrapper callback:
 * CVodeGetNumRhsEvals leaves out the difference-quotient J·v calls and the forward re-runs the
 * adjoint makes between checkpoints.
 *
 * Error norm. CVODE measures errors with a weighted RMS over the whole vector; the weights come
 * from our own function (CVodeWFtolerances): 1/(atol + rtol|y_i|) on controlled components, 0 on
 * the rest (cvode-bdf: 1e-6 times that, see below), times a constant so that CNF_NORM_RMS is
 * exact (the RMS over controlled components only) and CNF_NORM_MAX_BLOCK is approximated from
 * above by sqrt(Σ_b rms_b²) ≥ max_b rms_b — never looser than the max over blocks, at most
 * sqrt(#blocks) tighter. CVODE's weights use |y_i| at the start of the step rather than
 * max(|y_old|, |y_new|). CVODE's Krylov solver scales the Newton system by the same weights
 * (SUNLinSolSetScalingVectors, which requires them positive) and a zero weight breaks it: the
 * Newton iteration fails to converge and CVODE rejects the step. With the regularizer
 * integrals of a CNF uncontrolled this made cvode-bdf reject a third of its steps; a weight of
 * 1e-6 (of the weight at |y_i| ≥ 1) keeps those components out of the error test in practice
 * and the Krylov solver sound.
 *
 * Checkpointed adjoint: CVodeAdjInit(nd, CV_HERMITE) (CV_POLYNOMIAL crashed in CVodeB with few
 * steps per checkpoint, and was no more accurate where it ran), CVodeF forward, then a backward
 * problem (CVodeCreateB/InitB) with the same method and its own fixed-point or SPGMR solver
 * (without one CVODE's default Newton fails with CV_NLS_INIT_FAIL), and the parameter
 * quadrature CVodeQuadInitB under error control with the backward tolerances. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvodes/cvodes.h>
#include <nvector/nvector_serial.h>
#include <sundials/sundials_context.h>
#include <sunlinsol/sunlinsol_spgmr.h>
#include <sunnonlinsol/sunnonlinsol_fixedpoint.h>

#include "internal.h"
#include "stepper.h"

/* A state vector with the solver CVODE iterates with: fixed point (Adams) or SPGMR (BDF). */
typedef struct cv_parts {
    N_Vector y;
    SUNNonlinearSolver nls;
    SUNLinearSolver ls;
} cv_parts;

static int parts_init(cv_parts *p, int lmm, size_t n, SUNContext ctx)
{
    p->y = N_VNew_Serial((sunindextype)n, ctx);
    if (!p->y)
        return CNF_ENOMEM;
    if (lmm == CV_ADAMS)
        p->nls = SUNNonlinSol_FixedPoint(p->y, 0, ctx);
    else
        p->ls = SUNLinSol_SPGMR(p->y, SUN_PREC_NONE, 0, ctx);
    return (p->nls || p->ls) ? CNF_OK : CNF_ENOMEM;
}

static void parts_free(cv_parts *p)
{
    if (p->nls)
        SUNNonlinSolFree(p->nls);
    if (p->ls)
        SUNLinSolFree(p->ls);
    if (p->y)
        N_VDestroy(p->y);
}

/* One CVODE problem (forward), shared by the plain solver and the adjoint. */
typedef struct cv_state {
    const cnf_stepper_type *T;
    size_t dim;
    SUNContext sunctx;
    cv_parts p;                 /* (dim) CVODE's state and its solver */
    void *mem;                  /* CVODE memory, created at the first solve */
    int adjoint;                /* mem carries CVodeAdjInit (recreated for each forward pass) */
    long nd;                    /* steps per checkpoint */
    cnf_sys sys;                /* the system and the RHS counter */
    cnf_ode_options opt;        /* resolved options of the current solve (weight function) */
    double wscale;              /* weight scale emulating the norm (see the header comment) */
    size_t njvp;                /* calls of opt.jvp */
    int nonfinite;              /* the RHS produced a non-finite value */
    int rhs_rc;                 /* last non-zero RHS return */
    int rhs_fatal;              /* last negative RHS return */
    char msg[400];              /* last message from CVODE */
} cv_state;

static void error_handler(int code, const char *module, const char *function, char *msg,
                          void *data)
{
    cv_state *s = data;
    snprintf(s->msg, sizeof s->msg, "%s: %s", function, msg);
}

/* Record a callback's return code rc and whether its output out (dim values) is finite; rc. */
static int note_call(cv_state *s, int rc, const double *out)
{
    if (rc)
        s->rhs_rc = rc;
    if (rc < 0)
        s->rhs_fatal = rc;
    if (!rc)
        for (size_t i = 0; i < s->dim; i++)
            if (!isfinite(out[i])) {
                s->nonfinite = 1;
                break;
            }
    return rc;
}

static int rhs_wrap(sunrealtype t, N_Vector y, N_Vector dy, void *data)
{
    cv_state *s = data;
    double *out = N_VGetArrayPointer(dy);
    return note_call(s, cnf_sys_eval(&s->sys, t, N_VGetArrayPointer(y), out), out);
}

/* Jv = J(t, y) v through the caller's opt.jvp (cvode-bdf's Newton–Krylov iteration). */
static int jtimes_wrap(N_Vector v, N_Vector Jv, sunrealtype t, N_Vector y, N_Vector fy,
                       void *data, N_Vector tmp)
{
    (void)fy;
    (void)tmp;
    cv_state *s = data;
    double *out = N_VGetArrayPointer(Jv);
    s->njvp++;
    return note_call(s, s->opt.jvp(t, N_VGetArrayPointer(y), N_VGetArrayPointer(v), out,
                                   s->sys.ctx), out);
}

static int weight_fn(N_Vector y, N_Vector ewt, void *data)
{
    cv_state *s = data;
    const double *yv = N_VGetArrayPointer(y);
    double *w = N_VGetArrayPointer(ewt);
    size_t B = s->opt.block, C = s->opt.block_ctrl;
    for (size_t i = 0; i < s->dim; i++) {
        if (i % B >= C) {
            /* Uncontrolled: 0, or for the Krylov solver 1e-6 of the weight (header comment),
             * taken with |y_i| ≥ 1 so that it stays finite when atol = 0 (E and N start at 0). */
            w[i] = s->p.ls ? 1e-6 * s->wscale /
                                 (s->opt.atol + s->opt.rtol * fmax(fabs(yv[i]), 1.0))
                           : 0.0;
            continue;
        }
        w[i] = s->wscale / (s->opt.atol + s->opt.rtol * fabs(yv[i]));
        if (!isfinite(w[i]))
            return -1;
    }
    return 0;
}

/* A CVODE return flag as a cnf error with CVODE's own name and message in the detail. */
static int cv_error(cv_state *s, int flag, const char *call, double t)
{
    int code;
    switch (flag) {
    case CV_TOO_MUCH_WORK: code = CNF_EMAX_STEPS; break;
    case CV_ERR_FAILURE: code = CNF_ESTEP_UNDERFLOW; break;
    case CV_RHSFUNC_FAIL:
    case CV_FIRST_RHSFUNC_ERR:
    case CV_REPTD_RHSFUNC_ERR:
    case CV_UNREC_RHSFUNC_ERR: code = CNF_ERHS; break;
    case CV_ILL_INPUT:
    case CV_TOO_CLOSE: code = CNF_EINVAL; break;
    case CV_MEM_FAIL: code = CNF_ENOMEM; break;
    default: code = CNF_ESOLVER; break;
    }
    /* A NaN/Inf from the RHS makes CVODE fail its error or convergence test until it gives
     * up: report the cause, not the symptom. */
    if (s->nonfinite && code != CNF_ERHS && code != CNF_EINVAL)
        code = CNF_ENONFINITE;
    /* A fatal RHS return inside the fixed-point iteration surfaces as CV_CONV_FAILURE. */
    if (s->rhs_fatal)
        code = CNF_ERHS;
    char *name = CVodeGetReturnFlagName(flag);
    int rc = cnf_fail(code, "%s: %s returned %s near t = %g%s%s%s", s->T->name, call,
                      name ? name : "?", t, s->rhs_rc ? " (RHS returned non-zero)" : "",
                      s->msg[0] ? " — " : "", s->msg);
    free(name);
    return rc;
}

static int cv_init(cv_state *s, const cnf_stepper_type *T, size_t dim)
{
    s->T = T;
    s->dim = dim;
    if (SUNContext_Create(NULL, &s->sunctx))
        return CNF_ESOLVER;
    return parts_init(&s->p, T->lmm, dim, s->sunctx);
}

static void cv_release(cv_state *s)
{
    if (s->mem)
        CVodeFree(&s->mem);
    parts_free(&s->p);
    if (s->sunctx)
        SUNContext_Free(&s->sunctx);
}

void *cnf_cvode_alloc(const cnf_stepper_type *T, size_t dim)
{
    cv_state *s = cnf_calloc(1, sizeof *s);
    if (s && cv_init(s, T, dim)) {
        cnf_cvode_free(s);
        return NULL;
    }
    return s;
}

void cnf_cvode_free(void *state)
{
    if (!state)
        return;
    cv_release(state);
    free(state);
}

/* Make CVODE memory ready to integrate from (t0, y) with options opt: created on first use (or
 * every time for the adjoint, whose checkpoints belong to one forward pass), re-initialized
 * otherwise. */
static int cv_begin(cv_state *s, cnf_sys *sys, double t0, double t1, const double *y,
                    const cnf_ode_options *opt)
{
    int flag;
    s->sys = *sys;
    s->opt = *opt;
    s->nonfinite = 0;
    s->njvp = 0;
    s->rhs_rc = s->rhs_fatal = 0;
    s->msg[0] = 0;
    size_t nb = s->dim / opt->block, n_ctrl = nb * opt->block_ctrl;
    s->wscale = sqrt((double)s->dim / (double)(opt->norm == CNF_NORM_MAX_BLOCK
                                                   ? opt->block_ctrl : n_ctrl));
    memcpy(N_VGetArrayPointer(s->p.y), y, s->dim * sizeof *y);
    if (s->mem && s->adjoint)
        CVodeFree(&s->mem);
    if (!s->mem) {
        s->mem = CVodeCreate(s->T->lmm, s->sunctx);
        if (!s->mem)
            return cnf_fail(CNF_ENOMEM, "%s: CVodeCreate failed", s->T->name);
        if ((flag = CVodeSetErrHandlerFn(s->mem, error_handler, s)) ||
            (flag = CVodeInit(s->mem, rhs_wrap, t0, s->p.y)) ||
            (flag = CVodeSetUserData(s->mem, s)) ||
            (flag = CVodeWFtolerances(s->mem, weight_fn)))
            return cv_error(s, flag, "CVodeInit", t0);
        flag = s->p.nls ? CVodeSetNonlinearSolver(s->mem, s->p.nls)
                      : CVodeSetLinearSolver(s->mem, s->p.ls, NULL);
        if (flag)
            return cv_error(s, flag, "attaching the nonlinear/linear solver", t0);
        if (s->adjoint && (flag = CVodeAdjInit(s->mem, s->nd, CV_HERMITE)))
            return cv_error(s, flag, "CVodeAdjInit", t0);
    } else if ((flag = CVodeReInit(s->mem, t0, s->p.y))) {
        return cv_error(s, flag, "CVodeReInit", t0);
    }
    if ((flag = CVodeSetInitStep(s->mem, opt->h0 ? (t1 > t0 ? opt->h0 : -opt->h0) : 0.0)) ||
        (flag = CVodeSetMinStep(s->mem, opt->hmin)) ||
        (flag = CVodeSetMaxStep(s->mem, opt->hmax)) ||
        (flag = CVodeSetMaxNumSteps(s->mem, (long)opt->max_steps)) ||
        (flag = CVodeSetStopTime(s->mem, t1)))
        return cv_error(s, flag, "setting options", t0);
    /* The caller's J·v, or (NULL) CVODE's difference quotients again after an earlier solve. */
    if (s->p.ls && (flag = CVodeSetJacTimes(s->mem, NULL, opt->jvp ? jtimes_wrap : NULL)))
        return cv_error(s, flag, "CVodeSetJacTimes", t0);
    return CNF_OK;
}

static void cv_stats(cv_state *s, cnf_ode_stats *st)
{
    long nst = 0, netf = 0, ncf = 0;
    double h = 0;
    CVodeGetNumSteps(s->mem, &nst);
    CVodeGetNumErrTestFails(s->mem, &netf);
    CVodeGetNumNonlinSolvConvFails(s->mem, &ncf);
    CVodeGetLastStep(s->mem, &h);
    st->accepted = (size_t)nst;
    st->rejected = (size_t)(netf + ncf);
    st->h_last = h;
}

int cnf_cvode_integrate(void *state, const cnf_stepper_type *T, cnf_sys *sys, double t0,
                        double t1, double *y, const cnf_ode_options *opt,
                        cnf_ode_observer observer, void *observer_ctx, cnf_ode_stats *st)
{
    cv_state *s = state;
    int rc = cv_begin(s, sys, t0, t1, y, opt);
    double t = t0;
    const double *ynew = N_VGetArrayPointer(s->p.y);
    /* One internal step per CVode call, so the observer sees every step and y always holds
     * the last accepted state. */
    while (!rc) {
        if (st->accepted + st->rejected >= opt->max_steps) {
            rc = cnf_fail(CNF_EMAX_STEPS, "%s: %zu steps (%zu accepted, %zu rejected) did not "
                          "reach t = %g from t = %g", T->name, opt->max_steps, st->accepted,
                          st->rejected, t1, t);
            break;
        }
        double tret = t;
        int flag = CVode(s->mem, t1, s->p.y, &tret, CV_ONE_STEP);
        if (flag < 0) {
            cv_stats(s, st);
            rc = cv_error(s, flag, "CVode", t);
            break;
        }
        size_t acc_before = st->accepted;
        cv_stats(s, st);
        st->accepted = acc_before; /* counted below, once per step handed to the observer */
        for (size_t i = 0; i < s->dim; i++)
            if (!isfinite(ynew[i])) {
                rc = cnf_fail(CNF_ENONFINITE, "%s: state became non-finite at t = %g",
                              T->name, tret);
                break;
            }
        if (rc)
            break;
        int orc = observer ? observer(t, tret - t, y, ynew, observer_ctx) : 0;
        memcpy(y, ynew, s->dim * sizeof *y);
        st->accepted++;
        st->t_reached = tret;
        t = tret;
        if (orc)
            rc = orc;
        else if (flag == CV_TSTOP_RETURN || tret == t1)
            break;
    }
    sys->nfe = s->sys.nfe;
    st->njvp = s->njvp;
    return rc;
}

static const cnf_stepper_type adams_type = {
    .name = "cvode-adams", .order = 12, .err_order = 12, .adaptive = 1, .tableau = NULL,
    .lmm = CV_ADAMS, .alloc = cnf_cvode_alloc, .free = cnf_cvode_free,
    .integrate = cnf_cvode_integrate,
};
static const cnf_stepper_type bdf_type = {
    .name = "cvode-bdf", .order = 5, .err_order = 5, .adaptive = 1, .tableau = NULL,
    .lmm = CV_BDF, .alloc = cnf_cvode_alloc, .free = cnf_cvode_free,
    .integrate = cnf_cvode_integrate,
};
const cnf_stepper_type *const cnf_stepper_cvode_adams = &adams_type;
const cnf_stepper_type *const cnf_stepper_cvode_bdf = &bdf_type;

/* ---- Checkpointed adjoint ------------------------------------------------------------------ */

struct cnf_cvodes_adj {
    cv_state fwd;
    size_t dim_b, dim_q;
    cv_parts b;                 /* (dim_b) λ and the backward solver */
    N_Vector qB;                /* (dim_q) */
    int which, have_forward, have_b;
    double t0, t1;
    cnf_ode_rhs_b g, gq;
    cnf_ode_jvp_b gj;
    void *ctx_b;
    size_t nfe_b, njvp_b;
    int rc_b, nonfinite_b;
};

int cnf_cvodes_adj_create(cnf_cvodes_adj **out, const cnf_stepper_type *T, size_t dim,
                          size_t dim_b, size_t dim_q, size_t steps_per_checkpoint)
{
    *out = NULL;
    if (!T || !T->integrate)
        return cnf_fail(CNF_EINVAL, "the CVODES adjoint needs cvode-adams or cvode-bdf, not %s",
                        T ? T->name : "(null)");
    if (!dim || !dim_b || !steps_per_checkpoint)
        return cnf_fail(CNF_EINVAL, "adjoint: dim = %zu, dim_b = %zu and steps_per_checkpoint ="
                        " %zu must be >= 1", dim, dim_b, steps_per_checkpoint);
    /* N_Vector lengths are sunindextype and SUNDIALS multiplies them by 8 unchecked. */
    if (!cnf_size_ok(dim) || !cnf_size_ok(dim_b) || !cnf_size_ok(dim_q) ||
        steps_per_checkpoint > LONG_MAX)
        return cnf_fail(CNF_ENOMEM, "adjoint: dim %zu, dim_b %zu, dim_q %zu or "
                        "steps_per_checkpoint %zu too large", dim, dim_b, dim_q,
                        steps_per_checkpoint);
    cnf_cvodes_adj *a = cnf_calloc(1, sizeof *a);
    if (!a)
        return cnf_fail(CNF_ENOMEM, "adjoint object");
    int rc = cv_init(&a->fwd, T, dim);
    a->fwd.adjoint = 1;
    a->fwd.nd = (long)steps_per_checkpoint;
    a->dim_b = dim_b;
    a->dim_q = dim_q;
    if (!rc) {
        rc = parts_init(&a->b, T->lmm, dim_b, a->fwd.sunctx);
        a->qB = dim_q ? N_VNew_Serial((sunindextype)dim_q, a->fwd.sunctx) : NULL;
        if (dim_q && !a->qB)
            rc = CNF_ENOMEM;
    }
    if (rc) {
        cnf_cvodes_adj_free(a);
        return cnf_fail(rc, "cannot set up the CVODES adjoint (dim %zu, dim_b %zu, dim_q %zu)",
                        dim, dim_b, dim_q);
    }
    *out = a;
    return CNF_OK;
}

void cnf_cvodes_adj_free(cnf_cvodes_adj *a)
{
    if (!a)
        return;
    if (a->fwd.mem)
        CVodeFree(&a->fwd.mem); /* frees the backward problems too, before their solvers */
    parts_free(&a->b);
    if (a->qB)
        N_VDestroy(a->qB);
    cv_release(&a->fwd);
    free(a);
}

int cnf_cvodes_adj_forward(cnf_cvodes_adj *a, cnf_ode_rhs f, void *ctx, double t0, double t1,
                           double *y, const cnf_ode_options *opt, cnf_ode_stats *stats)
{
    cnf_ode_stats local;
    cnf_ode_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    st->t_reached = t0;
    a->have_forward = a->have_b = 0;
    cnf_ode_options o;
    int rc = cnf_ode_options_resolve(&o, opt, a->fwd.T, a->fwd.dim, t0, t1);
    if (rc)
        return rc;
    if (t0 == t1)
        return cnf_fail(CNF_EINVAL, "adjoint: empty interval t0 = t1 = %g", t0);
    cnf_sys sys = {.f = f, .ctx = ctx, .dim = a->fwd.dim, .nfe = 0};
    if ((rc = cv_begin(&a->fwd, &sys, t0, t1, y, &o)))
        return rc;
    double tret = t0;
    int ncheck = 0;
    int flag = CVodeF(a->fwd.mem, t1, a->fwd.p.y, &tret, CV_NORMAL, &ncheck);
    cv_stats(&a->fwd, st);
    st->nfe = a->fwd.sys.nfe;
    st->njvp = a->fwd.njvp;
    if (flag < 0)
        return cv_error(&a->fwd, flag, "CVodeF", tret);
    memcpy(y, N_VGetArrayPointer(a->fwd.p.y), a->fwd.dim * sizeof *y);
    st->t_reached = tret;
    a->t0 = t0;
    a->t1 = t1;
    a->have_forward = 1;
    return CNF_OK;
}

static int rhs_b_wrap(sunrealtype t, N_Vector y, N_Vector yB, N_Vector yBdot, void *data)
{
    cnf_cvodes_adj *a = data;
    double *out = N_VGetArrayPointer(yBdot);
    a->nfe_b++;
    int rc = a->g(t, N_VGetArrayPointer(y), N_VGetArrayPointer(yB), out, a->ctx_b);
    if (rc)
        a->rc_b = rc;
    for (size_t i = 0; !rc && i < a->dim_b; i++)
        if (!isfinite(out[i]))
            a->nonfinite_b = 1;
    return rc;
}

static int quad_b_wrap(sunrealtype t, N_Vector y, N_Vector yB, N_Vector qBdot, void *data)
{
    cnf_cvodes_adj *a = data;
    a->nfe_b++;
    int rc = a->gq(t, N_VGetArrayPointer(y), N_VGetArrayPointer(yB), N_VGetArrayPointer(qBdot),
                   a->ctx_b);
    if (rc)
        a->rc_b = rc;
    return rc;
}

/* JvB = (∂g/∂λ)(t, y, λ) vB through the caller's gj (cvode-bdf's backward Krylov solver). */
static int jtimes_b_wrap(N_Vector vB, N_Vector JvB, sunrealtype t, N_Vector y, N_Vector yB,
                         N_Vector fyB, void *data, N_Vector tmpB)
{
    (void)fyB;
    (void)tmpB;
    cnf_cvodes_adj *a = data;
    double *out = N_VGetArrayPointer(JvB);
    a->njvp_b++;
    int rc = a->gj(t, N_VGetArrayPointer(y), N_VGetArrayPointer(yB), N_VGetArrayPointer(vB), out,
                   a->ctx_b);
    if (rc)
        a->rc_b = rc;
    for (size_t i = 0; !rc && i < a->dim_b; i++)
        if (!isfinite(out[i]))
            a->nonfinite_b = 1;
    return rc;
}

int cnf_cvodes_adj_backward(cnf_cvodes_adj *a, cnf_ode_rhs_b g, cnf_ode_rhs_b gq,
                            cnf_ode_jvp_b gj, void *ctx, double *lam, double *q,
                            const cnf_ode_options *opt, cnf_ode_stats *stats)
{
    cnf_ode_stats local;
    cnf_ode_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    st->t_reached = a->t1;
    if (!a->have_forward)
        return cnf_fail(CNF_EINVAL, "adjoint: backward pass without a successful forward pass");
    if (!g || !lam || (a->dim_q && (!gq || !q)))
        return cnf_fail(CNF_EINVAL, "adjoint: g, lam (and gq, q when dim_q > 0) are required");
    cnf_ode_options o;
    int rc = cnf_ode_options_resolve(&o, opt, a->fwd.T, a->dim_b, a->t1, a->t0);
    if (rc)
        return rc;
    void *mem = a->fwd.mem;
    a->g = g;
    a->gq = gq;
    a->gj = gj;
    a->ctx_b = ctx;
    a->nfe_b = a->njvp_b = 0;
    a->rc_b = a->nonfinite_b = 0;
    a->fwd.sys.nfe = 0; /* now counts the forward re-runs between checkpoints */
    a->fwd.njvp = 0;
    a->fwd.msg[0] = 0;
    memcpy(N_VGetArrayPointer(a->b.y), lam, a->dim_b * sizeof *lam);
    if (a->qB)
        N_VConst(0.0, a->qB);
    int flag;
    const char *call = "CVodeInitB";
    if (!a->have_b) {
        if ((flag = CVodeCreateB(mem, a->fwd.T->lmm, &a->which)))
            return cv_error(&a->fwd, flag, "CVodeCreateB", a->t1);
        CVodeSetErrHandlerFn(CVodeGetAdjCVodeBmem(mem, a->which), error_handler, &a->fwd);
        if (!(flag = CVodeInitB(mem, a->which, rhs_b_wrap, a->t1, a->b.y)) &&
            !(flag = CVodeSetUserDataB(mem, a->which, a)))
            flag = a->b.nls ? CVodeSetNonlinearSolverB(mem, a->which, a->b.nls)
                           : CVodeSetLinearSolverB(mem, a->which, a->b.ls, NULL);
        if (!flag && a->qB) {
            call = "CVodeQuadInitB";
            if (!(flag = CVodeQuadInitB(mem, a->which, quad_b_wrap, a->qB)))
                flag = CVodeSetQuadErrConB(mem, a->which, SUNTRUE);
        }
        a->have_b = !flag;
    } else {
        call = "CVodeReInitB";
        if (!(flag = CVodeReInitB(mem, a->which, a->t1, a->b.y)) && a->qB)
            flag = CVodeQuadReInitB(mem, a->which, a->qB);
    }
    if (flag)
        return cv_error(&a->fwd, flag, call, a->t1);
    if ((flag = CVodeSStolerancesB(mem, a->which, o.rtol, o.atol)) ||
        (flag = CVodeSetMaxNumStepsB(mem, a->which, (long)o.max_steps)) ||
        (flag = CVodeSetMaxStepB(mem, a->which, o.hmax)) ||
        (flag = CVodeSetMinStepB(mem, a->which, o.hmin)) ||
        (a->qB && (flag = CVodeQuadSStolerancesB(mem, a->which, o.rtol, o.atol))) ||
        (a->b.ls && (flag = CVodeSetJacTimesB(mem, a->which, NULL, gj ? jtimes_b_wrap : NULL))))
        return cv_error(&a->fwd, flag, "setting backward options", a->t1);

    flag = CVodeB(mem, a->t0, CV_NORMAL);
    cv_stats(&(cv_state){.mem = CVodeGetAdjCVodeBmem(mem, a->which)}, st);
    st->nfe = a->nfe_b + a->fwd.sys.nfe;
    st->njvp = a->njvp_b + a->fwd.njvp;
    if (flag < 0) {
        a->fwd.nonfinite |= a->nonfinite_b;
        a->fwd.rhs_rc = a->rc_b;
        a->fwd.rhs_fatal = a->rc_b < 0 ? a->rc_b : a->fwd.rhs_fatal;
        return cv_error(&a->fwd, flag, "CVodeB", a->t1);
    }
    double tret = a->t0;
    if ((flag = CVodeGetB(mem, a->which, &tret, a->b.y)))
        return cv_error(&a->fwd, flag, "CVodeGetB", a->t0);
    if (a->qB && (flag = CVodeGetQuadB(mem, a->which, &tret, a->qB)))
        return cv_error(&a->fwd, flag, "CVodeGetQuadB", a->t0);
    memcpy(lam, N_VGetArrayPointer(a->b.y), a->dim_b * sizeof *lam);
    if (a->qB)
        memcpy(q, N_VGetArrayPointer(a->qB), a->dim_q * sizeof *q);
    st->t_reached = tret;
    return CNF_OK;
}
