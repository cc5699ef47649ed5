/* cnf: continuous normalizing flows and neural ODEs. Includes every public header, in layer
 * order (each layer uses only those before it). */
#ifndef CNF_H
#define CNF_H
#include "cnf/core.h"
#include "cnf/solver.h"
#include "cnf/mlp.h"
#include "cnf/safetensors.h"
#include "cnf/io.h"
#include "cnf/toy.h"
#include "cnf/loaders.h"
#include "cnf/target.h"
#include "cnf/flow.h"
#include "cnf/cflow.h"
#include "cnf/dflow.h"
#include "cnf/pre.h"
#include "cnf/optim.h"
#include "cnf/fm.h"
#include "cnf/train.h"
#include "cnf/early_stop.h"
#include "cnf/model.h"
#include "cnf/plot.h"
#include "cnf/bench.h"
#endif
