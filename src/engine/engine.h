// The forward pass of one sequence: prefill in blocks (GEMM + tiled causal
// attention), then decode one token at a time against the KV cache.
#ifndef RECALL_ENGINE_ENGINE_H
#define RECALL_ENGINE_ENGINE_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "comm/comm.h"
#include "kv/kv_cache.h"
#include "kv/shard.h"
#include "model/model.h"

typedef struct engine_opts {
    int64_t n_ctx;           // positions the cache holds (prompt + generated)
    int n_threads;
    int kv_elem;             // KV_F16 (default) or KV_F32
    int64_t prefill_block;   // tokens per prefill block
    const backend_ops *backend;  // NULL: the fast CPU backend
    comm *comm;              // NULL: a single process (null communicator)
    int zigzag;              // prompt ownership: zigzag chunks instead of contiguous ranges
} engine_opts;

engine_opts engine_default_opts(void);

typedef struct engine_stats {
    double prefill_seconds;
    double decode_seconds;
    int64_t n_prefill_tokens;
    int64_t n_decode_tokens;
    size_t prefill_transient_bytes;  // peak scratch of the last prefill (gathered K/V, per-layer activations)
} engine_stats;

typedef void (*engine_progress_fn)(void *user, int64_t done, int64_t total);

typedef struct engine {
    const model *m;
    const backend_ops *be;
    engine_opts opts;
    comm *comm;              // opts.comm or an owned null communicator
    comm *own_comm;
    shard_plan plan;         // fixed by the first prefill of a sequence
    kv_cache kv;             // this rank's shard: slot i holds position slot_pos[i]
    int64_t *slot_pos;       // (kv.capacity)
    int64_t n_local;         // slots in use
    int64_t n_past;          // positions of the sequence processed (on all ranks)
    engine_stats stats;
    float *logits;           // (n_vocab): logits of the last processed position
    // scratch for one block of up to opts.prefill_block tokens (row-major per token)
    float *x, *xn, *q, *k, *v, *att, *proj, *gate, *up;
    float *lse;
    int64_t *pos;
    float *o_parts, *lse_parts;  // (n_ranks, n_head, head_dim), (n_ranks, n_head): gathered decode states
    float *state_send;           // (n_head * head_dim + n_head): this rank's o then lse
    float *state_recv;           // (n_ranks, n_head * head_dim + n_head): every rank's, in rank order
} engine;

int engine_init(engine *e, const model *m, const engine_opts *opts, rc_err *err);
void engine_free(engine *e);
void engine_reset(engine *e);  // forget the sequence, keep the buffers

// Bytes of K/V this rank holds for the current sequence.
size_t engine_kv_bytes_used(const engine *e);

// Processes n tokens at positions n_past..n_past+n-1. Every rank passes the
// same tokens; each computes and keeps only the positions it owns, exchanging
// K/V per layer. logits_all, if non-NULL, receives (n, n_vocab) logits for
// every position (one rank only); e->logits always ends holding the last
// position's logits, identical on every rank. progress (may be NULL) is called
// after each layer. On several ranks a sequence has one prefill, at n_past 0.
int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err);
// One token: appends it at position n_past (to its owner's shard) and fills
// e->logits. Every rank passes the same token; one all-gather of (o, lse) per
// layer merges the ranks' partial attention.
int engine_decode(engine *e, int32_t token, rc_err *err);

#endif
