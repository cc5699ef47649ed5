/* The list of objectives (cnf/train.h): one line per objective_*.c file. */
#include <stdio.h>
#include <string.h>

#include "objective.h"
#include "core/internal.h"

static const cnf_objective_type *const *const all_objectives[] = {
    &cnf_objective_ml,
    &cnf_objective_fm,
    &cnf_objective_rkl,
};
#define N_OBJECTIVES (sizeof all_objectives / sizeof all_objectives[0])

size_t cnf_objective_count(void) { return N_OBJECTIVES; }

const cnf_objective_type *cnf_objective_at(size_t i)
{
    return i < N_OBJECTIVES ? *all_objectives[i] : NULL;
}

int cnf_objective_from_name(const char *name, const cnf_objective_type **out)
{
    char valid[256] = "";
    size_t len = 0;
    *out = NULL;
    for (size_t i = 0; i < N_OBJECTIVES; i++) {
        if (name && !strcmp(name, (*all_objectives[i])->name)) {
            *out = *all_objectives[i];
            return CNF_OK;
        }
        len += (size_t)snprintf(valid + len, sizeof valid - len, "%s%s", i ? ", " : "",
                                (*all_objectives[i])->name);
    }
    return cnf_fail(CNF_ENAME, "unknown objective '%s' (valid: %s)", name ? name : "(null)",
                    valid);
}

const char *cnf_objective_name(const cnf_objective_type *o) { return o->name; }
const char *cnf_objective_summary(const cnf_objective_type *o) { return o->summary; }
