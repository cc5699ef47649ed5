/* Data: FFJORD's eight 2-D toy distributions (Grathwohl et al. 2019, lib/toy_data.py).
 *
 * Each dataset is a const type table; look one up by name or walk the list. Every draw goes
 * through the explicit generator, so the same seed gives the same points on every machine.
 * The distributions follow FFJORD's published parameters (the sklearn-based sets reproduce
 * sklearn's distribution with the noise and rescaling FFJORD applies, not its bits):
 *   8gaussians   (4·c_k + 0.5·N(0,I)) / 1.414, c_k the 4 axis and 4 diagonal unit vectors
 *   checkerboard x1 ~ U[-2,2), x2 ~ U[0,1) − 2·B + (floor(x1) mod 2), B ~ Bernoulli(½); (x1,x2)·2:
 *                uniform on the 8 squares of side 2 with floor(x1/2) + floor(x2/2) even
 *   2spirals     s = √U·3π, (−cos(s)·s + ½U', sin(s)·s + ½U'') / 3 for the first half, its mirror
 *                image for the second, + 0.1·N(0,I)
 *   moons        sklearn make_moons(noise 0.1)·2 + (−1, −0.2): upper arc (cos a, sin a) and lower
 *                arc (1 − cos a, ½ − sin a), a evenly spaced on [0, π] (endpoints included)
 *   pinwheel     5 arms: f = (1 + 0.3·N, 0.1·N), angle θ = 2πk/5 + 0.25·exp(f1),
 *                x = 2·(f1 cos θ + f2 sin θ, −f1 sin θ + f2 cos θ)
 *   circles      sklearn make_circles(factor ½, noise 0.08)·3: radii 3 and 1.5, angles evenly
 *                spaced, noise std 0.24
 *   rings        radii 3, 2.25, 1.5, 0.75 with n/4 points each (the remainder on the smallest),
 *                angles evenly spaced, + 0.08·N(0,I)
 *   swissroll    sklearn make_swiss_roll(noise 1)[x, z] / 5: t = 1.5π(1 + 2U),
 *                (t cos t + N, t sin t + N) / 5
 * As in FFJORD, moons, circles, rings and pinwheel split a batch evenly between their parts
 * (stratified, then shuffled): a batch of n holds ⌊n/k⌋ or ⌈n/k⌉ points of each part. Every set
 * lies (up to its noise tails) inside FFJORD's plotting box [-4, 4]². */
#ifndef CNF_TOY_H
#define CNF_TOY_H

#include "cnf/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_toy_type cnf_toy_type; /* defined privately in src/data/toy.c */

/* Lookup by name ("8gaussians", "checkerboard", "2spirals", "moons", "pinwheel", "circles",
 * "rings", "swissroll"); CNF_ENAME (the valid names in cnf_errmsg) if unknown, CNF_EINVAL if
 * name or out is NULL. */
CNF_API int cnf_toy_from_name(const char *name, const cnf_toy_type **out);
/* All datasets in the order above, for listings: i < cnf_toy_count(); NULL past the end. */
CNF_API size_t cnf_toy_count(void);
CNF_API const cnf_toy_type *cnf_toy_at(size_t i);
CNF_API const char *cnf_toy_name(const cnf_toy_type *T);

/* Draw n points of dataset T into X (n, 2), row-major. n = 0 is allowed (nothing is drawn).
 * CNF_EINVAL if T is NULL, X is NULL with n > 0, or 2n values cannot be addressed. X is the
 * caller's; on failure it is untouched. */
CNF_API int cnf_toy_sample(const cnf_toy_type *T, size_t n, double *X, cnf_rng *rng);
/* The same by name: CNF_ENAME if the name is unknown. */
CNF_API int cnf_toy_sample_named(const char *name, size_t n, double *X, cnf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
