/* cnf: continuous normalizing flows and neural ODEs. Includes every public header. */
#ifndef CNF_H
#define CNF_H
#include "cnf/core.h"
#include "cnf/mlp.h"
#include "cnf/solver.h"
#include "cnf/data.h"
#include "cnf/dataset.h"
#include "cnf/pre.h"
#include "cnf/optim.h"
#include "cnf/safetensors.h"
#include "cnf/plot.h"
#include "cnf/flow.h"
#include "cnf/cflow.h"
#include "cnf/train.h"
#include "cnf/model.h"
#include "cnf/io.h"
#include "cnf/target.h"
#include "cnf/fm.h"
#include "cnf/dflow.h"
#include "cnf/bench.h"
#endif
