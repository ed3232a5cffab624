// The engine's state, shared by its own files (engine.c: lifetime and
// methods; prefill.c; decode.c) and by tests that inspect it. Everything
// named "backend buffer" below belongs to e->be: host code never reads it.
#ifndef RECALL_ENGINE_ENGINE_INTERNAL_H
#define RECALL_ENGINE_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include "engine/weights.h"
#include "kv/kv_cache.h"
#include "kv/shard.h"

#ifdef __cplusplus
extern "C" {
#endif

// Floats after each rank's (o, lse) in a recycled-mode decode state: the
// schedule's decision hash, so ranks that drifted apart are caught at the
// next full step without a call of their own.
#define STATE_HASH_FLOATS 2

// One attention method as the decode loop sees it.
typedef struct attention_method {
    const char *name;  // full and recycled; a policy is named by its own table
    int policy;      // enum kv_method for the KV-compression policies, -1 otherwise
    int keeps_full;  // new tokens join the sharded full cache (full, recycled)
    // One decode layer's attention of e->q over what the method keeps, into
    // e->att / e->lse (merged over ranks). Returns 1 when the layer ran full
    // attention (over every position or every kept row), 0 for a recycled layer, -1 on error.
    int (*layer)(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);
} attention_method;

const attention_method *attention_method_get(int kind);

struct engine {
    const model *m;
    backend bk;              // this engine's backend instance (its threads, its device)
    const backend *be;       // &bk
    engine_weights w;        // the weights as the backend holds them
    engine_opts opts;
    comm *comm;              // opts.comm or an owned null communicator
    struct comm *own_comm;
    int dev_attached;        // this engine holds an attachment of comm's device data path
    int failed;              // a prefill or decode failed: at destroy, cancel the device data path
    const attention_method *method;
    shard_plan plan;         // fixed by the first prefill of a sequence
    kv_cache kv;             // this rank's shard: slot i holds position slot_pos[i]
    int64_t *slot_pos;       // (kv.capacity), host
    int64_t n_local;         // slots in use
    int64_t n_past;          // positions of the sequence processed (on all ranks)
    engine_stats stats;
    engine_step last_step;
    recycle_state *recycle;  // when the method is recycled attention
    kvpolicy_state *policy;  // when the method is a KV-compression policy
    int64_t n_prompt_end;    // n_past after the last prefill
    // The last win_n prompt positions' queries (after RoPE) and lse, every
    // layer, on every rank: the vote of the SnapKV-family policies.
    int64_t win_n;
    float *win_q;            // backend (n_layer, KVPOLICY_WINDOW_MAX, n_head, head_dim)
    float *win_lse;          // backend (n_layer, KVPOLICY_WINDOW_MAX, n_head)
    float *raw_scores;       // backend (n_head, kv.capacity): a full step's scores of this rank's keys
    float *query_mean;       // backend (head_dim)
    float *query_mean_host;  // (head_dim)
    float *logits;           // backend (n_vocab): logits of the last processed position
    float *logits_host;      // (n_vocab): its host copy, downloaded once per step
    // backend scratch for one block of up to opts.prefill_block tokens (row-major per token)
    float *x, *xn, *q, *k, *v, *att, *proj, *gate, *up;
    float *lse;
    int64_t *pos;                // host (prefill_block)
    float *o_parts, *lse_parts;  // backend (n_ranks, n_head, head_dim), (n_ranks, n_head): gathered decode states
    float *state_send;           // backend (n_head * head_dim + n_head + head_dim + hash): this rank's o then lse
    float *state_recv;           // backend (n_ranks, state stride): every rank's, in rank order
    uint64_t *hashes;            // backend (n_ranks) and host (n_ranks): every rank's decision hash
    uint64_t *hashes_host;
    // host copies for the analysis hooks (allocated when a hook is set)
    float *hook_q, *hook_k, *hook_lse, *hook_scores;
    int64_t hook_scores_cap;
};

// Shared by prefill.c and decode.c.
int engine_check_tokens(const engine *e, const int32_t *tokens, int64_t n, rc_err *err);
int engine_begin_sequence(engine *e, int64_t n_prompt, rc_err *err);
int engine_compress_prompt(engine *e, rc_err *err);
// Rebuilds layer's recycled cache from a full step's scores of this rank's
// keys (raw: (n_head, n_keys)); lse: the merged lse; query_mean: the mean
// query before RoPE (all backend buffers).
int engine_rebuild_recycled(engine *e, int64_t layer, const float *raw, const float *lse, const float *query_mean,
                            int64_t n_keys, int64_t n_total, rc_err *err);
// The first recycled cache of layer from the prompt's last W queries
// (--recycle-query window): the last W of the win_n rows of e->win_q /
// e->win_lse, on every rank; keys: this rank's first n_keys slots, the
// sequence's first n_total positions. Fails naming the flag when W > win_n.
int engine_rebuild_recycled_window(engine *e, int64_t layer, int64_t win_n, const float *query_mean, int64_t n_keys,
                                   int64_t n_total, rc_err *err);
// The hooks, with host copies of their arguments.
void engine_hook_full_attention(engine *e, int64_t layer, int64_t n_total, const float *q, const float *lse);
// on_attention_scores with e->raw_scores of this rank's n_keys keys; lse: global (backend).
int engine_hook_scores(engine *e, int64_t layer, int64_t n_total, int64_t n_keys, const float *lse, rc_err *err);
double engine_now_seconds(void);

#ifdef __cplusplus
}
#endif

#endif
