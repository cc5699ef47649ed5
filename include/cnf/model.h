/* Model files: a flow, and optionally the training state to resume it, in one safetensors file
 * (DESIGN.md §4): an 8-byte little-endian header length, a JSON header, raw little-endian F64
 * tensors. Parameters are stored as named tensors (for a CNF: "block0.1.W" …, matching
 * cnf_mlp_block, and "sqrt_end_time" when T is trained), so Python's `safetensors` package or
 * PyTorch can read them; the architecture and solver settings needed to rebuild the model are in
 * `__metadata__` ("kind", "dim", "hidden", …). A checkpoint adds the optimizer's buffers
 * ("optim.exp_avg" …), and metadata "train.iter", "train.rng", "optim.*".
 *
 * Writing is atomic (temporary file, fsync, rename): an interrupted or failed save leaves the
 * previous file intact. Reading validates every size, type and value, and rejects truncated,
 * corrupted or mismatched files with CNF_EFORMAT / CNF_EDIM / CNF_EIO naming the problem. */
#ifndef CNF_MODEL_H
#define CNF_MODEL_H

#include "cnf/flow.h"
#include "cnf/safetensors.h"
#include "cnf/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Save f to path; with a trainer t also its iteration, generator and optimizer state, how its
 * last run ended ("train.status": ok, diverged, …, and "train.stop_reason" when it stopped
 * early), and, for a run with ema_decay, the average θ̄ as the parameters. extra is
 * NULL or a NULL-terminated list of key, value, key, value, … strings stored as metadata under
 * "user.<key>" (the CLI records its data set and options there). */
CNF_API int cnf_model_save(const char *path, const cnf_flow *f, cnf_trainer *t,
                           const char *const *extra);

/* Load the flow in path into *out (caller frees with cnf_flow_free). If file is not NULL it
 * receives the opened file (caller frees with cnf_st_free) for metadata and
 * cnf_model_restore_trainer. On failure *out (and *file) are NULL. */
CNF_API int cnf_model_load(const char *path, cnf_flow **out, cnf_st_file **file);

/* Restore iteration, generator and optimizer buffers of t (created for the loaded flow with the
 * same optimizer method) from a checkpoint. CNF_EFORMAT if the file holds no training state. */
CNF_API int cnf_model_restore_trainer(const cnf_st_file *file, cnf_trainer *t);

#ifdef __cplusplus
}
#endif
#endif
