/* Adam (Kingma & Ba, ICLR 2015) and SGD with heavy-ball momentum, following PyTorch's update
 * arithmetic so results are comparable with FFJORD's; decoupled weight decay after Loshchilov &
 * Hutter, "Decoupled weight decay regularization", ICLR 2019. See cnf/optim.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/optim.h"
#include "core/internal.h"

#define MAX_BUFFERS 2

struct cnf_optim {
    cnf_optim_settings s;
    size_t n;
    uint64_t t;
    size_t n_buf;
    double *buf[MAX_BUFFERS];
};

/* One method: its name, the names of its state buffers, and its update for step t with gradient
 * g + l2·p and learning rate lr. */
typedef struct {
    const char *name;
    const char *buffers[MAX_BUFFERS];
    void (*update)(cnf_optim *o, double *p, const double *g, double l2, double lr);
} method_type;

static void adam_update(cnf_optim *o, double *p, const double *g, double l2, double lr)
{
    const double b1 = o->s.beta1, b2 = o->s.beta2, eps = o->s.eps;
    const double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
    const double step = lr / bc1, sbc2 = sqrt(bc2);
    double *m = o->buf[0], *v = o->buf[1];
    for (size_t i = 0; i < o->n; i++) {
        double gi = g[i] + l2 * p[i];
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        p[i] -= step * m[i] / (sqrt(v[i]) / sbc2 + eps);
    }
}

static void sgd_update(cnf_optim *o, double *p, const double *g, double l2, double lr)
{
    if (o->n_buf == 0) {
        for (size_t i = 0; i < o->n; i++)
            p[i] -= lr * (g[i] + l2 * p[i]);
        return;
    }
    double *b = o->buf[0], mu = o->s.momentum;
    for (size_t i = 0; i < o->n; i++) {
        double gi = g[i] + l2 * p[i];
        b[i] = o->t == 1 ? gi : mu * b[i] + gi;
        p[i] -= lr * b[i];
    }
}

static const method_type methods[] = {
    [CNF_OPTIM_ADAM] = {"adam", {"exp_avg", "exp_avg_sq"}, adam_update},
    [CNF_OPTIM_SGD] = {"sgd", {"momentum_buffer", NULL}, sgd_update},
};
#define N_METHODS (sizeof methods / sizeof methods[0])

void cnf_optim_settings_default(cnf_optim_settings *s, cnf_optim_method method)
{
    memset(s, 0, sizeof *s);
    s->method = method;
    s->lr = method == CNF_OPTIM_SGD ? 1e-2 : 1e-3;
    s->beta1 = 0.9;
    s->beta2 = 0.999;
    s->eps = 1e-8;
}

const char *cnf_optim_method_name(cnf_optim_method method)
{
    return (size_t)method < N_METHODS ? methods[method].name : NULL;
}

int cnf_optim_method_from_name(const char *name, cnf_optim_method *out)
{
    if (!name || !out)
        return cnf_fail(CNF_EINVAL, "cnf_optim_method_from_name: NULL argument");
    for (size_t i = 0; i < N_METHODS; i++)
        if (strcmp(name, methods[i].name) == 0) {
            *out = (cnf_optim_method)i;
            return CNF_OK;
        }
    return cnf_fail(CNF_ENAME, "unknown optimizer '%s' (valid: adam, sgd)", name);
}

static int check_settings(const cnf_optim_settings *s, size_t n)
{
    if ((size_t)s->method >= N_METHODS)
        return cnf_fail(CNF_EINVAL, "optimizer method %d is not adam or sgd", (int)s->method);
    if (n == 0)
        return cnf_fail(CNF_EINVAL, "optimizer over 0 parameters");
    if (!(s->lr > 0) || !isfinite(s->lr))
        return cnf_fail(CNF_EINVAL, "learning rate %g is not a positive number", s->lr);
    if (!(s->weight_decay >= 0) || !isfinite(s->weight_decay))
        return cnf_fail(CNF_EINVAL, "weight decay %g is not ≥ 0", s->weight_decay);
    if (s->method == CNF_OPTIM_ADAM) {
        if (!(s->beta1 >= 0 && s->beta1 < 1) || !(s->beta2 >= 0 && s->beta2 < 1))
            return cnf_fail(CNF_EINVAL, "Adam betas (%g, %g) are not in [0, 1)", s->beta1,
                            s->beta2);
        if (!(s->eps > 0) || !isfinite(s->eps))
            return cnf_fail(CNF_EINVAL, "Adam eps %g is not positive", s->eps);
    } else if (!(s->momentum >= 0 && s->momentum < 1)) {
        return cnf_fail(CNF_EINVAL, "SGD momentum %g is not in [0, 1)", s->momentum);
    }
    return CNF_OK;
}

int cnf_optim_create(const cnf_optim_settings *s, size_t n_params, cnf_optim **out)
{
    if (!out)
        return cnf_fail(CNF_EINVAL, "cnf_optim_create: out is NULL");
    *out = NULL;
    if (!s)
        return cnf_fail(CNF_EINVAL, "cnf_optim_create: settings are NULL");
    int rc = check_settings(s, n_params);
    if (rc)
        return rc;
    cnf_optim *o = cnf_calloc(1, sizeof *o);
    if (!o)
        return cnf_fail(CNF_ENOMEM, "optimizer allocation failed");
    o->s = *s;
    o->n = n_params;
    o->n_buf = s->method == CNF_OPTIM_ADAM ? 2 : (s->momentum > 0 ? 1 : 0);
    for (size_t i = 0; i < o->n_buf; i++)
        if (!(o->buf[i] = cnf_calloc(n_params, sizeof(double)))) {
            cnf_optim_free(o);
            return cnf_fail(CNF_ENOMEM, "optimizer state for %zu parameters", n_params);
        }
    *out = o;
    return CNF_OK;
}

void cnf_optim_free(cnf_optim *opt)
{
    if (!opt)
        return;
    for (size_t i = 0; i < MAX_BUFFERS; i++)
        free(opt->buf[i]);
    free(opt);
}

/* Learning rate of step t (1-based). */
static double lr_at(const cnf_optim *o, uint64_t t)
{
    if (o->s.warmup == 0 || t >= o->s.warmup)
        return o->s.lr;
    return o->s.lr * (double)t / (double)o->s.warmup;
}

double cnf_optim_lr(const cnf_optim *opt) { return lr_at(opt, opt->t + 1); }

int cnf_optim_set_lr(cnf_optim *opt, double lr)
{
    if (!(lr >= 0) || !isfinite(lr))
        return cnf_fail(CNF_EINVAL, "learning rate %g is not a number >= 0", lr);
    opt->s.lr = lr;
    return CNF_OK;
}

size_t cnf_optim_n_params(const cnf_optim *opt) { return opt->n; }

int cnf_optim_step(cnf_optim *opt, double *params, const double *grad)
{
    if (!opt || !params || !grad)
        return cnf_fail(CNF_EINVAL, "cnf_optim_step: NULL argument");
    for (size_t i = 0; i < opt->n; i++)
        if (!isfinite(grad[i]))
            return cnf_fail(CNF_ENONFINITE, "gradient component %zu is %g at step %llu", i,
                            grad[i], (unsigned long long)opt->t + 1);
    const double wd = opt->s.weight_decay, lr = lr_at(opt, opt->t + 1);
    if (wd > 0 && opt->s.decoupled)
        for (size_t i = 0; i < opt->n; i++)
            params[i] *= 1.0 - lr * wd;
    opt->t++;
    methods[opt->s.method].update(opt, params, grad, opt->s.decoupled ? 0.0 : wd, lr);
    return CNF_OK;
}

uint64_t cnf_optim_steps(const cnf_optim *opt) { return opt->t; }

void cnf_optim_set_steps(cnf_optim *opt, uint64_t t) { opt->t = t; }

size_t cnf_optim_n_buffers(const cnf_optim *opt) { return opt->n_buf; }

double *cnf_optim_buffer(cnf_optim *opt, size_t i, const char **name)
{
    if (i >= opt->n_buf)
        return NULL;
    if (name)
        *name = methods[opt->s.method].buffers[i];
    return opt->buf[i];
}

int cnf_optim_clip_norm(double *grad, size_t n, double max_norm, double *norm)
{
    if (!(max_norm > 0))
        return cnf_fail(CNF_EINVAL, "clipping norm %g is not positive", max_norm);
    if (n > 0 && !grad)
        return cnf_fail(CNF_EINVAL, "cnf_optim_clip_norm: grad is NULL");
    /* Scale by the largest magnitude first so the sum of squares cannot overflow. */
    double amax = 0.0, ss = 0.0, bad = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(grad[i]))
            bad = isnan(grad[i]) || isnan(bad) ? NAN : INFINITY;
        else
            amax = fmax(amax, fabs(grad[i]));
    }
    if (amax > 0 && bad == 0.0)
        for (size_t i = 0; i < n; i++)
            ss += (grad[i] / amax) * (grad[i] / amax);
    double r = bad != 0.0 ? bad : amax * sqrt(ss); /* NaN != 0 too */
    if (norm)
        *norm = r;
    if (!isfinite(r))
        return cnf_fail(CNF_ENONFINITE, "gradient norm is %g", r);
    double coef = max_norm / (r + 1e-6);
    if (coef < 1.0)
        for (size_t i = 0; i < n; i++)
            grad[i] *= coef;
    return CNF_OK;
}
