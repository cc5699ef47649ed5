/* The classical fourth-order Runge–Kutta method, fixed step (Kutta 1901; Hairer, Nørsett &
 * Wanner, "Solving ODEs I", §II.1, Table 1.2 left). */
#include "stepper.h"

static const double a[] = {
    0.0, 0.0, 0.0, 0.0,
    0.5, 0.0, 0.0, 0.0,
    0.0, 0.5, 0.0, 0.0,
    0.0, 0.0, 1.0, 0.0,
};
static const double b[] = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
static const double c[] = {0.0, 0.5, 0.5, 1.0};
static const cnf_rk_tableau tableau = {.stages = 4, .a = a, .b = b, .e = NULL, .c = c, .fsal = 0};
static const cnf_stepper_type type = CNF_ERK_TYPE("rk4", 4, 0, tableau);
const cnf_stepper_type *const cnf_stepper_rk4 = &type;
