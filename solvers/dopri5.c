/* Dormand–Prince 5(4) pair with FSAL: J. R. Dormand and P. J. Prince, "A family of embedded
 * Runge–Kutta formulae", J. Comput. Appl. Math. 6(1):19–26, 1980; coefficients as in Hairer,
 * Nørsett & Wanner, "Solving ODEs I", §II.5, Table 5.2 (DOPRI5). Fifth-order solution, e = b − b̂
 * with the fourth-order b̂ = (5179/57600, 0, 7571/16695, 393/640, −92097/339200, 187/2100, 1/40). */
#include "stepper.h"

static const double a[] = {
    0, 0, 0, 0, 0, 0, 0,
    1.0 / 5, 0, 0, 0, 0, 0, 0,
    3.0 / 40, 9.0 / 40, 0, 0, 0, 0, 0,
    44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0, 0,
    19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0, 0,
    9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0, 0,
    35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0,
};
static const double b[] = {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0};
static const double e[] = {
    35.0 / 384 - 5179.0 / 57600, 0, 500.0 / 1113 - 7571.0 / 16695, 125.0 / 192 - 393.0 / 640,
    -2187.0 / 6784 + 92097.0 / 339200, 11.0 / 84 - 187.0 / 2100, -1.0 / 40,
};
static const double c[] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1};
static const cnf_rk_tableau tableau = {.stages = 7, .a = a, .b = b, .e = e, .c = c, .fsal = 1};
static const cnf_stepper_type type = CNF_ERK_TYPE("dopri5", 5, 4, tableau);
const cnf_stepper_type *const cnf_stepper_dopri5 = &type;
