// Recycled Attention (Xu et al. 2024; RefreshKV 2025), design.md §2-§3:
// which layers run a full step, and the rebuild of the replicated top-K
// cache from a full step's exact global attention probabilities.
//
// Rebuild protocol, per layer, on every rank (R ranks, positions sharded):
//   1. p_hj = exp(s_hj - lse_h) for this rank's keys, with the merged lse;
//   2. combine the query heads of each KV group (max, mean or first);
//   3. max-pool over neighbouring positions (a halo of kernel/2 scores at
//      each ownership boundary is all-gathered, so the result is exactly the
//      single-process one);
//   4. local top-K by (score desc, position asc), all-gather the lists, the
//      same k-way merge on every rank;
//   5. rows already in the cache are copied locally; owners all-gather the
//      rest. Every count is derived from the shard plan, so all ranks agree
//      on message sizes without asking.
#ifndef RECALL_POLICY_RECYCLE_H
#define RECALL_POLICY_RECYCLE_H

#include <stdint.h>

#include "comm/comm.h"
#include "core/status.h"
#include "kv/kv_cache.h"
#include "kv/recycle_cache.h"
#include "kv/shard.h"
#include "policy/dist_select.h"
#include "policy/head_scores.h"
#include "policy/select.h"

#ifdef __cplusplus
extern "C" {
#endif

enum recycle_schedule { RECYCLE_STRIDE = 0, RECYCLE_DYNAMIC = 1 };
// uniform: every layer and KV head holds K rows. headkv: the HeadKV
// allocation of the same total (n_layer x n_kv x K) by head importance.
enum recycle_budgets { RECYCLE_BUDGETS_UNIFORM = 0, RECYCLE_BUDGETS_HEADKV = 1 };
// Which queries choose the first cache of a sequence. last: the last prompt
// token's (the paper's). window: the last W prompt tokens' (as SnapKV's
// observation window), each with its own exact causal softmax, combined per
// (query head, position) by mean or max before the GQA combine.
enum recycle_query { RECYCLE_QUERY_LAST = 0, RECYCLE_QUERY_WINDOW = 1 };
enum recycle_query_agg { RECYCLE_QUERY_MEAN = 0, RECYCLE_QUERY_MAX = 1 };
#define RECYCLE_QUERY_WINDOW_MAX 32  // = KVPOLICY_WINDOW_MAX: the prompt queries the engine keeps

typedef struct recycle_opts {
    int64_t k;            // recycled-cache entries per layer per KV head
    int schedule;         // enum recycle_schedule
    int64_t stride;       // stride: every layer runs full every `stride` steps
    int64_t check_every;  // dynamic: steps between similarity checks (QC)
    double similarity;    // dynamic: cosine <= this triggers a full step
    int group_agg;        // enum group_agg
    int64_t pool_kernel;  // odd; 1 = no pooling
    int budgets;          // enum recycle_budgets: K per layer and KV head
    const head_scores *head_scores;  // RECYCLE_BUDGETS_HEADKV: importance per (layer, query head)
    double headkv_beta;   // RECYCLE_BUDGETS_HEADKV: as HeadKV's beta
    int query;            // enum recycle_query: the first cache's queries
    int64_t query_window; // RECYCLE_QUERY_WINDOW: W, in [1, RECYCLE_QUERY_WINDOW_MAX]
    int query_agg;        // enum recycle_query_agg: the window's combine per position
    // Span-aware selection: each selected position brings p+1..p+span with
    // it, filled greedily in score order; K stays the total. 0 = off.
    int64_t span;
} recycle_opts;

recycle_opts recycle_default_opts(void);  // k 1024, stride 10, QC 5, s 0.9, max, pool 7, query last (W 32 mean), span 0

// Rejects settings that cannot work, naming the flag (--recycle-k ...).
int recycle_opts_validate(const recycle_opts *o, int64_t n_ctx, rc_err *err);

const char *recycle_schedule_name(int schedule);
const char *group_agg_name(int agg);
const char *recycle_query_name(int query);
const char *recycle_query_agg_name(int agg);

typedef struct recycle_stats {
    int64_t n_rebuilds;       // layer rebuilds
    int64_t rows_reused;      // selected rows already in the cache (not sent again)
    int64_t rows_fetched;     // selected rows that had to come from a shard
    int64_t bytes_sent;       // K/V row bytes this rank sent to the others
    int64_t bytes_saved;      // bytes the reused rows would have cost (rows_reused x K+V row)
} recycle_stats;

typedef struct recycle_state {
    recycle_opts o;
    const backend *be;
    recycle_cache cache;
    int64_t n_layer, n_head, n_kv, head_dim, n_ctx;
    int n_ranks;
    float *saved_query;       // (n_layer, head_dim), host: mean query at the layer's last full step
    uint8_t *built;           // (n_layer): C_p exists
    int64_t step;             // decode steps since the cache was first built by a prefill
    uint64_t decision_hash;   // every decision so far; ranks compare it at full steps
    recycle_stats stats;
    // scratch, sized once (per-key buffers for `cap_local` keys by recycle_reserve)
    int64_t cap_local;
    float *agg, *pooled;      // (n_kv, cap_local) backend: combined and pooled scores
    dist_scratch ds;
    scored_pos *lists;        // (n_kv * k) host: this rank's lists, back to back
    scored_pos *all_lists;    // (n_ranks * n_kv * k)
    scored_pos *merged;       // (n_kv, k) the merged selection per KV head
    scored_pos *spanned;      // (k) span > 0: one head's selection with the followers
    uint8_t *taken;           // (n_ctx) span > 0: positions already in spanned
    int64_t *k_of;            // (n_ranks, n_kv): list lengths every rank derives from the plan
    int64_t *n_sel, *list_off;     // (n_kv), (n_kv + 1)
    int64_t *slot_of;         // (k) per selected entry: its cache slot
    uint8_t *used;            // (k) slots taken
    int32_t *old_slot;        // (n_ctx): old cache slot + 1 of a position, 0 = absent (all 0 between uses)
    uint64_t *need_bits;      // (n_ctx / 64, rounded up): one rank's needed positions (all 0 between uses)
    struct recycle_need *need;     // (n_kv * k) rows the cache lacks
    int64_t *idx_dst, *idx_src;    // (2 * n_kv * k) copy_rows index lists
    size_t *counts;           // (n_ranks)
    int64_t *sizes, *cursor;  // (n_ranks)
    void *send, *recv;        // backend rows in transit (several ranks): (2 * n_kv * k) rows each
} recycle_state;

int recycle_init(recycle_state *rs, const backend *be, const recycle_opts *o, int64_t n_layer, int64_t n_head,
                 int64_t n_kv, int64_t head_dim, int64_t n_ctx, int kv_elem, int n_ranks, rc_err *err);
void recycle_free(recycle_state *rs);
void recycle_reset(recycle_state *rs);  // a new sequence
// Sizes the per-key scratch for cap_local keys of this rank.
int recycle_reserve(recycle_state *rs, int64_t cap_local, rc_err *err);

// Starts a decode step (step numbers count from 1 after the prefill).
void recycle_begin_step(recycle_state *rs);

// 1 when deciding `layer` this step needs the mean query on the host (the
// dynamic schedule's check steps): one head_dim vector to download.
int recycle_needs_query(const recycle_state *rs, int64_t layer);

// 1 when `layer` runs full attention this step. query_mean_host: this step's
// mean query over heads, before RoPE (required when recycle_needs_query says
// so, else may be NULL); the dynamic schedule compares it with the saved
// one. Replicated inputs only, so every rank decides the same; the decision
// enters decision_hash.
int recycle_layer_is_full(recycle_state *rs, int64_t layer, const float *query_mean_host);

// Rebuilds layer's C_p after a full step. raw: (n_head, sh->n_local) scaled
// scores of this rank's keys; lse: (n_head) the merged (global) lse;
// query_mean: (head_dim), saved for the dynamic schedule. All three are
// backend buffers. Collective on several ranks.
int recycle_rebuild(recycle_state *rs, int64_t layer, const float *raw, const float *lse, const float *query_mean,
                    const shard_ctx *sh, comm *cm, rc_err *err);

// The rebuild from scores already combined over each KV group (steps 3-5):
// agg: (n_kv, sh->n_local) backend, log-probabilities when log_space, else
// probabilities; the cache stores each selected score (exponentiated when
// log_space) times score_mul.
int recycle_rebuild_scored(recycle_state *rs, int64_t layer, const float *agg, int log_space, double score_mul,
                           const float *query_mean, const shard_ctx *sh, comm *cm, rc_err *err);

// The first cache of a sequence from the prompt's last W queries
// (RECYCLE_QUERY_WINDOW), collective on several ranks. win_q: (W, n_head,
// head_dim) the queries (after RoPE) of positions n_total-W .. n_total-1;
// win_lse: (W, n_head) each one's lse over all the keys it sees (global);
// k, v: this rank's layer of sh->kv; query_mean: (head_dim), saved for the
// dynamic schedule. All backend buffers. Every rank needs every window row.
int recycle_rebuild_window(recycle_state *rs, int64_t layer, const float *win_q, const float *win_lse, int64_t W,
                           const kv_view *k, const kv_view *v, const float *query_mean, const shard_ctx *sh,
                           comm *cm, rc_err *err);

// Span-aware selection on one head's merged list (score desc, position
// asc), in place: each entry in order adds itself and then p+1..p+span (below
// n_total) unless already taken, until `n` positions are taken. A follower
// carries the score of the entry that brought it. taken: (n_total) zeros,
// left zeroed. out: (n). Deterministic: it reads only the replicated list.
void recycle_span_fill(const scored_pos *sel, int64_t n, int64_t span, int64_t n_total, uint8_t *taken,
                       scored_pos *out);

#ifdef __cplusplus
}
#endif

#endif
