/* Tsitouras 5(4) pair with FSAL: Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only
 * the first column simplifying assumption", Comput. Math. Appl. 62(2):770–775, 2011, Table 1
 * (the same figures as OrdinaryDiffEq.jl's Tsit5 and torchdiffeq's tsit5). Fifth-order solution;
 * e holds the difference between the propagated and the embedded fourth-order weights. The order
 * conditions of both are checked numerically in tests/test_solvers.c. */
#include "stepper.h"

static const double a[] = {
    0, 0, 0, 0, 0, 0, 0,
    0.161, 0, 0, 0, 0, 0, 0,
    -0.008480655492356989, 0.335480655492357, 0, 0, 0, 0, 0,
    2.897153057105493, -6.359448489975075, 4.3622954328695815, 0, 0, 0, 0,
    5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525, 0, 0, 0,
    5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
    -0.028269050394068383, 0, 0,
    0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
    2.324710524099774, 0,
};
static const double b[] = {0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
                           -3.290069515436081, 2.324710524099774, 0};
static const double e[] = {0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
                           0.1447110071732629, -0.5823571654525552, 0.45808210592918697,
                           -1.0 / 66};
static const double c[] = {0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1};
static const cnf_rk_tableau tableau = {.stages = 7, .a = a, .b = b, .e = e, .c = c, .fsal = 1};
static const cnf_stepper_type type = CNF_ERK_TYPE("tsit5", 5, 4, tableau);
const cnf_stepper_type *const cnf_stepper_tsit5 = &type;
