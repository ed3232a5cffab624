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
#include "policy/kvpolicy.h"
#include "policy/recycle.h"

// full and recycled keep every position (sharded); the rest are KV-compression
// policies (policy/kvpolicy.h), in the order of enum kv_method.
enum attention_kind {
    ATTENTION_FULL = 0,
    ATTENTION_RECYCLED,
    ATTENTION_STREAMING,
    ATTENTION_H2O,
    ATTENTION_SNAPKV,
    ATTENTION_PYRAMIDKV,
    ATTENTION_ADAKV,
    ATTENTION_HEADKV,
    ATTENTION_KIND_COUNT
};
static inline int attention_kind_is_policy(int kind) { return kind >= ATTENTION_STREAMING && kind < ATTENTION_KIND_COUNT; }

typedef struct engine_opts {
    int64_t n_ctx;           // positions the cache holds (prompt + generated)
    int n_threads;
    int kv_elem;             // KV_F16 (default) or KV_F32
    int64_t prefill_block;   // tokens per prefill block
    const backend_ops *backend;  // NULL: the fast CPU backend
    comm *comm;              // NULL: a single process (null communicator)
    int zigzag;              // prompt ownership: zigzag chunks instead of contiguous ranges
    int attention;           // enum attention_kind
    recycle_opts recycle;    // used when attention == ATTENTION_RECYCLED
    kvpolicy_opts policy;    // used by the KV-compression kinds
    // Keep the prompt's full cache after a policy compresses it, so that other
    // methods can be run from the same prefill (eval, bench). Off: the full
    // cache is freed and only the policy's rows stay in memory.
    int retain_prompt_cache;
    // Test and analysis hook (may be NULL): called on every rank for each layer
    // whose attention state over all n_total positions is known (a full decode
    // step after the merge; in recycled mode also the last prompt position at
    // prefill end). q: (n_head, head_dim) after RoPE; lse: (n_head), global.
    void (*on_full_attention)(void *user, int64_t layer, int64_t n_total, const float *q, const float *lse);
    // The same for a KV-compression policy's decode layer, after the merge and
    // before the policy updates its scores and evicts: the token at `pos`; q:
    // (n_head, head_dim) and k: (n_kv_heads, head_dim) after RoPE; lse:
    // (n_head) over the rows the policy keeps (all ranks).
    void (*on_policy_step)(void *user, int64_t layer, int64_t pos, const float *q, const float *k, const float *lse);
    void *hook_user;
} engine_opts;

engine_opts engine_default_opts(void);

typedef struct engine_stats {
    double prefill_seconds;
    double decode_seconds;
    int64_t n_prefill_tokens;
    int64_t n_decode_tokens;
    size_t prefill_transient_bytes;  // peak scratch of the last prefill (gathered K/V, per-layer activations)
    int64_t n_full_steps;            // decode steps in which at least one layer ran full attention
    double full_step_seconds;        // time of those steps (the rest were all-recycled)
    int64_t kv_bytes_read;           // K/V bytes this rank's decode attention read
    int64_t *layer_full;             // (n_layer): full-attention decode steps per layer
    int64_t *layer_recycled;         // (n_layer): recycled decode steps per layer
} engine_stats;

// The last decode step, for traces.
typedef struct engine_step {
    int64_t pos;
    double seconds;
    int64_t n_full_layers;
    uint8_t *layer_full;      // (n_layer): 1 = full attention this step
    int64_t kv_bytes_read;    // this rank's attention reads (shard or recycled cache)
    int64_t comm_calls;       // this rank's collective calls in the step
    int64_t comm_bytes;       // bytes this rank sent + received in the step
    int64_t rows_reused;      // recycled-cache rebuilds: selected rows already held
    int64_t rows_fetched;     // ... and rows copied in from a shard
} engine_step;

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
    engine_step last_step;
    recycle_state *recycle;  // when opts.attention == ATTENTION_RECYCLED
    kvpolicy_state *policy;  // when opts.attention is a KV-compression kind
    int64_t n_prompt_end;    // n_past after the last prefill
    // The last win_n prompt positions' queries (after RoPE) and lse, every
    // layer, on every rank: the vote of the SnapKV-family policies.
    int64_t win_n;
    float *win_q;            // (n_layer, KVPOLICY_WINDOW_MAX, n_head, head_dim)
    float *win_lse;          // (n_layer, KVPOLICY_WINDOW_MAX, n_head)
    float *raw_scores;       // (n_head, kv.capacity): a full step's scores of this rank's keys
    float *query_mean;       // (head_dim)
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
const char *attention_kind_name(int kind);
int attention_kind_from_name(const char *name);  // -1 when unknown
void engine_free(engine *e);
void engine_reset(engine *e);  // forget the sequence, keep the buffers

// Switches the attention method between decode steps. A recycled cache is
// built by the next decode step, which runs full attention in every layer. A
// KV-compression policy compresses the prompt at the next decode step, which
// must follow the prompt directly (truncate to it first); that needs the full
// cache, so after a policy has freed it the sequence must be prefilled again.
// ro, po: the options of the recycled kind and the policy kinds (may be NULL
// for the others).
int engine_set_attention(engine *e, int attention, const recycle_opts *ro, const kvpolicy_opts *po, rc_err *err);

// Forgets positions n and later (0 <= n <= n_past), on every rank alike; the
// recycled cache, if any, is rebuilt by the next step. Under a policy only the
// prompt end is a valid n, and only while the full cache is retained.
int engine_truncate(engine *e, int64_t n, rc_err *err);

// Bytes of K/V this rank holds for the current sequence (under a policy that
// has compressed: the rows it keeps, not a retained copy of the prompt).
size_t engine_kv_bytes_used(const engine *e);

// Processes n tokens at positions n_past..n_past+n-1. Every rank passes the
// same tokens; each computes and keeps only the positions it owns, exchanging
// K/V per layer. In recycled mode the last position's scores build each
// layer's recycled cache. logits_all, if non-NULL, receives (n, n_vocab) logits for
// every position (one rank only); e->logits always ends holding the last
// position's logits, identical on every rank. progress (may be NULL) is called
// after each layer. On several ranks a sequence has one prefill, at n_past 0.
int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err);
// One token: appends it at position n_past (to its owner's shard) and fills
// e->logits. Every rank passes the same token. A full-attention layer
// all-gathers (o, lse) and merges the ranks' partial attention (and, in
// recycled mode, rebuilds that layer's recycled cache); a recycled layer
// attends over the replicated recycled cache with no communication.
int engine_decode(engine *e, int32_t token, rc_err *err);
// Instead of a prefill: holds n_positions synthetic K/V rows (engine_fill.c).
int engine_fill_synthetic(engine *e, int64_t n_positions, uint64_t seed, rc_err *err);

#endif
