/* Explicit midpoint rule, order 2, fixed step: k1 = f(t, y), k2 = f(t + h/2, y + h/2 k1),
 * y_{n+1} = y_n + h k2 (Runge 1895; Hairer, Nørsett & Wanner, "Solving ODEs I", §II.1). */
#include "stepper.h"

static const double a[] = {
    0.0, 0.0,
    0.5, 0.0,
};
static const double b[] = {0.0, 1.0};
static const double c[] = {0.0, 0.5};
static const cnf_rk_tableau tableau = {.stages = 2, .a = a, .b = b, .e = NULL, .c = c, .fsal = 0};
static const cnf_stepper_type type = CNF_ERK_TYPE("midpoint", 2, 0, tableau);
const cnf_stepper_type *const cnf_stepper_midpoint = &type;
