// The forward pass of one sequence: prefill in blocks (GEMM + tiled causal
// attention), then decode one token at a time against the KV cache.
#ifndef RECALL_ENGINE_ENGINE_H
#define RECALL_ENGINE_ENGINE_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "kv/kv_cache.h"
#include "model/model.h"

typedef struct engine_opts {
    int64_t n_ctx;           // positions the cache holds (prompt + generated)
    int n_threads;
    int kv_elem;             // KV_F16 (default) or KV_F32
    int64_t prefill_block;   // tokens per prefill block
    const backend_ops *backend;  // NULL: the fast CPU backend
} engine_opts;

engine_opts engine_default_opts(void);

typedef struct engine_stats {
    double prefill_seconds;
    double decode_seconds;
    int64_t n_prefill_tokens;
    int64_t n_decode_tokens;
} engine_stats;

typedef void (*engine_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct engine {
    const model *m;
    const backend_ops *be;
    engine_opts opts;
    kv_cache kv;
    int64_t n_past;          // positions already in the cache
    engine_stats stats;
    float *logits;           // (n_vocab): logits of the last processed position
    // scratch for one block of up to opts.prefill_block tokens (row-major per token)
    float *x, *xn, *q, *k, *v, *att, *proj, *gate, *up;
    float *lse;
    int64_t *pos;
} engine;

int engine_init(engine *e, const model *m, const engine_opts *opts, rc_err *err);
void engine_free(engine *e);
void engine_reset(engine *e);  // forget the sequence, keep the buffers

// Processes n tokens at positions n_past..n_past+n-1. logits_all, if non-NULL,
// receives (n, n_vocab) logits for every position; e->logits always ends
// holding the last position's logits. progress (may be NULL) is called after
// each block.
int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err);
// One token: appends it at position n_past and fills e->logits.
int engine_decode(engine *e, int32_t token, rc_err *err);

#endif
