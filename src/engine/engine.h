// The forward pass of one sequence: prefill in blocks (GEMM + tiled causal
// attention), then decode one token at a time against the KV cache.
#ifndef RECALL_ENGINE_ENGINE_H
#define RECALL_ENGINE_ENGINE_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "comm/comm.h"
#include "model/model.h"
#include "policy/kvpolicy.h"
#include "policy/recycle.h"

#ifdef __cplusplus
extern "C" {
#endif

// The attention methods: full and recycled keep every position (sharded);
// the rest are KV-compression policies (policy/kvpolicy.h). Each id maps to
// its policy through the engine's method table, never by position.
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
int attention_kind_is_policy(int kind);
// The KV-compression method (enum kv_method) of a policy kind; -1 for full and recycled.
int attention_kind_policy(int kind);

typedef struct engine_opts {
    int64_t n_ctx;           // positions the cache holds (prompt + generated)
    int n_threads;           // CPU backends: threads of this engine's kernels
    int kv_elem;             // enum kv_elem: KV_F16 (default), KV_F32, KV_Q8_0, KV_Q4_0
    int64_t prefill_block;   // tokens per prefill block
    const backend_ops *backend;  // NULL: the fast CPU backend
    int device;              // device index for device backends (-1: the backend's default)
    comm *comm;              // NULL: a single process (null communicator)
    int zigzag;              // prompt ownership: zigzag chunks instead of contiguous ranges
    int attention;           // enum attention_kind
    recycle_opts recycle;    // used when attention == ATTENTION_RECYCLED
    kvpolicy_opts policy;    // used by the KV-compression kinds
    // Keep the prompt's full cache after a policy compresses it, so that other
    // methods can be run from the same prefill (eval, bench). Off: the full
    // cache is freed and only the policy's rows stay in memory.
    int retain_prompt_cache;
    // Test and analysis hooks (may be NULL). They receive host copies, made
    // only when a hook is set. on_full_attention: called on every rank for
    // each layer whose attention state over all n_total positions is known (a
    // full decode step after the merge; in recycled mode also the last prompt
    // position at prefill end). q: (n_head, head_dim) after RoPE; lse: (n_head), global.
    void (*on_full_attention)(void *user, int64_t layer, int64_t n_total, const float *q, const float *lse);
    // The same for a KV-compression policy's decode layer, after the merge and
    // before the policy updates its scores and evicts: the token at `pos`; q:
    // (n_head, head_dim) and k: (n_kv_heads, head_dim) after RoPE; lse:
    // (n_head) over the rows the policy keeps (all ranks).
    void (*on_policy_step)(void *user, int64_t layer, int64_t pos, const float *q, const float *k, const float *lse);
    // At a full-attention decode layer (full or recycled mode), and in
    // recycled mode at the end of a prefill (the last prompt position's
    // scores, which build the first recycled cache): this rank's
    // raw scaled scores s_hj = q_h . k_j / sqrt(head_dim), scores: (n_head,
    // n_keys), of the keys at key_pos: (n_keys); lse: (n_head) global. The
    // attention probabilities are exp(s_hj - lse_h).
    void (*on_attention_scores)(void *user, int64_t layer, int64_t n_total, const float *scores,
                                const int64_t *key_pos, int64_t n_keys, const float *lse);
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

// The engine is opaque: its state lives in backend buffers the caller must
// not touch; what callers need comes through the accessors below.
typedef struct engine engine;

// Sets up the backend (its weights, the engine's buffers) for one sequence at a time.
engine *engine_create(const model *m, const engine_opts *opts, rc_err *err);
void engine_destroy(engine *e);  // NULL is fine
const char *attention_kind_name(int kind);
int attention_kind_from_name(const char *name);  // -1 when unknown
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
// layer's recycled cache. logits_all, if non-NULL, receives (n, n_vocab)
// logits for every position (host memory; one rank only); engine_logits then
// holds the last position's logits, identical on every rank. progress (may be
// NULL) is called after each layer. On several ranks a sequence has one
// prefill, at n_past 0.
int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err);
// One token: appends it at position n_past (to its owner's shard) and fills
// the logits. Every rank passes the same token. A full-attention layer
// all-gathers (o, lse) and merges the ranks' partial attention (and, in
// recycled mode, rebuilds that layer's recycled cache); a recycled layer
// attends over the replicated recycled cache with no communication.
int engine_decode(engine *e, int32_t token, rc_err *err);
// Instead of a prefill: holds n_positions synthetic K/V rows and a synthetic
// prompt window for the KV-compression policies' vote (engine_fill.c); a
// policy set before the fill compresses right after it, as after a prefill.
int engine_fill_synthetic(engine *e, int64_t n_positions, uint64_t seed, rc_err *err);

// ---- accessors
const float *engine_logits(const engine *e);  // (n_vocab) the last position's logits, host memory
int64_t engine_n_past(const engine *e);
int64_t engine_n_prompt(const engine *e);      // n_past after the last prefill
int engine_attention(const engine *e);         // enum attention_kind in use
const engine_opts *engine_get_opts(const engine *e);
const model *engine_model(const engine *e);
comm *engine_comm(const engine *e);
const backend *engine_backend(const engine *e);
const engine_stats *engine_get_stats(const engine *e);
const engine_step *engine_last_step(const engine *e);
int64_t engine_rows_held(const engine *e);     // positions this rank holds (under a policy: rows kept)
const recycle_state *engine_recycle(const engine *e);   // NULL unless recycled attention is set
const kvpolicy_state *engine_policy(const engine *e);   // NULL unless a KV-compression policy is set

#ifdef __cplusplus
}
#endif

#endif
