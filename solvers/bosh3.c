/* Bogacki–Shampine 3(2) pair with FSAL: P. Bogacki and L. F. Shampine, "A 3(2) pair of
 * Runge–Kutta formulas", Appl. Math. Lett. 2(4):321–325, 1989 (MATLAB's ode23). The solution is
 * third order; the embedded second-order weights are b̂ = (7/24, 1/4, 1/3, 1/8), e = b − b̂. */
#include "stepper.h"

static const double a[] = {
    0.0,       0.0,       0.0,       0.0,
    1.0 / 2,   0.0,       0.0,       0.0,
    0.0,       3.0 / 4,   0.0,       0.0,
    2.0 / 9,   1.0 / 3,   4.0 / 9,   0.0,
};
static const double b[] = {2.0 / 9, 1.0 / 3, 4.0 / 9, 0.0};
static const double e[] = {2.0 / 9 - 7.0 / 24, 1.0 / 3 - 1.0 / 4, 4.0 / 9 - 1.0 / 3, -1.0 / 8};
static const double c[] = {0.0, 1.0 / 2, 3.0 / 4, 1.0};
static const cnf_rk_tableau tableau = {.stages = 4, .a = a, .b = b, .e = e, .c = c, .fsal = 1};
static const cnf_stepper_type type = CNF_ERK_TYPE("bosh3", 3, 2, tableau);
const cnf_stepper_type *const cnf_stepper_bosh3 = &type;
