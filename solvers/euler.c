/* Explicit Euler, order 1, fixed step: y_{n+1} = y_n + h f(t_n, y_n)
 * (Hairer, Nørsett & Wanner, "Solving ODEs I", §I.7). */
#include "stepper.h"

static const double a[] = {0.0};
static const double b[] = {1.0};
static const double c[] = {0.0};
static const cnf_rk_tableau tableau = {.stages = 1, .a = a, .b = b, .e = NULL, .c = c, .fsal = 0};
static const cnf_stepper_type type = CNF_ERK_TYPE("euler", 1, 0, tableau);
const cnf_stepper_type *const cnf_stepper_euler = &type;
