// KV-compression policies on the sharded cache (design.md §4): StreamingLLM,
// H2O, SnapKV, PyramidKV, Ada-KV and HeadKV.
//
// One interface: at the end of the prompt a policy chooses, per layer and per
// store head, which positions stay; at each decode step the new token joins
// its owner's store and the policy may evict. Each rank keeps only the rows it
// owns (kv_store), and evicting frees them. Every choice is made from exact
// global probabilities exp(s - lse) (lse merged over ranks, or computed by the
// query's owner in prefill) with the total order (score desc, position asc),
// so the kept sets do not depend on the number of ranks.
//
// Budgets count rows per store head: per KV head by default (that is what
// memory holds), or per query head with per_query_head (the HeadKV paper's
// accounting: every query head keeps its own copy of the rows it selects).
#ifndef RECALL_POLICY_KVPOLICY_H
#define RECALL_POLICY_KVPOLICY_H

#include <stdint.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/status.h"
#include "kv/kv_store.h"
#include "kv/shard.h"
#include "policy/dist_select.h"
#include "policy/head_scores.h"

#ifdef __cplusplus
extern "C" {
#endif

enum kv_method {
    KV_METHOD_STREAMING = 0,
    KV_METHOD_H2O,
    KV_METHOD_SNAPKV,
    KV_METHOD_PYRAMIDKV,
    KV_METHOD_ADAKV,
    KV_METHOD_HEADKV,
    KV_METHOD_COUNT
};

#define KVPOLICY_WINDOW_MAX 32  // prompt positions whose queries the engine keeps for the vote
// H2O's eviction takes each rank's lowest two rows per head, so that the
// gap between the evicted row and the next one is known (kvpolicy_note_cut).
#define KVPOLICY_EVICT_CANDIDATES 2

typedef struct kvpolicy_opts {
    int64_t budget;        // --kv-budget: rows per store head on average, window and sinks included
    int per_query_head;    // --budget-per-query-head
    int64_t window;        // SnapKV family and H2O: last prompt positions that vote (8); SnapKV keeps them
    int64_t sinks;         // StreamingLLM: first positions always kept (4)
    int64_t pool_kernel;   // SnapKV family: max-pool over positions (7; 1 = off)
    double headkv_beta;    // HeadKV: every head gets b - floor(b/beta) before the pool is shared out
    double pyramid_beta;   // PyramidKV: the last layer gets b/beta, the first 2b - b/beta
    double ada_floor;      // Ada-KV: every head keeps at least floor * b
    const head_scores *scores;  // HeadKV: per (layer, query head) importance
} kvpolicy_opts;

kvpolicy_opts kvpolicy_default_opts(void);  // budget 1024, window 8, sinks 4, pool 7, beta 1.5, pyramid 20, floor 0.2
const char *kv_method_name(int method);
int kv_method_from_name(const char *name);  // -1 when unknown
// Rejects settings that cannot work, naming the flag.
int kvpolicy_opts_validate(int method, const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err);

typedef struct kvpolicy_stats {
    int64_t rows_kept_prompt;  // rows kept at compression, all layers and heads, all ranks
    int64_t rows_evicted;      // rows this rank evicted while decoding
} kvpolicy_stats;

typedef struct kvpolicy_state kvpolicy_state;

// What one layer keeps of the prompt, per store head: positions < sinks,
// positions >= n - tail, and the selected ones (host lists, best first).
typedef struct prompt_keep {
    int64_t sinks, tail;
    int64_t k_max;        // stride of sel
    scored_pos *sel;      // (S, k_max)
    int64_t *n_sel;       // (S)
} prompt_keep;

// One KV-compression method. Adding one is a file with its table plus a line
// in the registry (kvpolicy.c) and in the attention methods (engine).
typedef struct kv_policy_ops {
    const char *name;
    int votes;           // the prompt's last window positions vote: per-position sums of exp(s - lse)
    int decode_scores;   // decode attention keeps each step's raw scores for after_step
    int keeps_window;    // the voting window is always kept, beside the budget's selection
    int head_scores;     // needs head-importance scores (--head-scores)
    // The method's own checks, after the common ones and before the betas and
    // the head scores (NULL: none), naming the flag.
    int (*validate)(const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err);
    // Called once per compression before the layers (may be NULL): per-head budgets etc.
    int (*begin_prompt)(kvpolicy_state *ps, int64_t n_prompt, int64_t n_window, rc_err *err);
    // One layer's choice of prompt rows (the budget is below the prompt).
    // votes: (n_store, sh->n_local) backend sums over the voters, or NULL.
    int (*select_prompt)(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh,
                         comm *cm, prompt_keep *keep, rc_err *err);
    // After a decode step's merge (lse: (n_head) global, backend): scores and
    // eviction; n_total counts the new token. NULL: nothing to do.
    int (*after_step)(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm, rc_err *err);
} kv_policy_ops;

const kv_policy_ops *kv_policy_get(int method);  // NULL when unknown

struct kvpolicy_state {
    int method;
    const kv_policy_ops *ops;
    const backend *be;
    kvpolicy_opts o;
    int64_t n_layer, n_head, n_kv, head_dim;
    int64_t n_store;       // store heads per layer: n_kv, or n_head per query head
    int64_t q_per_store;   // query heads that read one store head
    kv_store store;
    int built;
    int64_t n_prompt;      // positions the compression saw
    int64_t *budget;       // (n_layer, n_store): rows each head keeps from the prompt
    int64_t *held;         // (n_layer, n_store): rows each head holds over all ranks (replicated count)
    int64_t *base;         // (n_layer, n_store): a method's per-head prompt budgets (window excluded)
    float *raw;            // backend, decode scratch: one layer's raw scores, head after head
    int64_t raw_cap;
    dist_scratch ds;
    scored_pos *cand;      // host scratch for eviction candidates
    int64_t *k_tmp;        // (n_store) host scratch
    kvpolicy_stats stats;
    // (n_layer): XOR of hash_set_elem(layer, store head, position) over the
    // rows this rank holds, kept up to date as rows come and go. XOR over the
    // ranks gives the layer's kept set, the same on any rank count exactly
    // when the selections are (generate --trace prints it).
    uint64_t *sel_hash;
    // (n_layer): the narrowest ranked cut made on each layer since
    // kvpolicy_cuts_clear (a head's top-k at compression, Ada-KV's shared
    // pool, an H2O eviction): cut_gap = |score of the row kept at the cut -
    // score of the one left out|, cut_score / cut_pos = the row kept;
    // INFINITY / NAN / -1 where no ranked cut was made. Identical on every
    // rank; generate --trace prints them, so a kept set that differs between
    // rank counts can be told apart as a near-tie (gap within the rounding
    // between the runs) or a selection bug.
    float *cut_gap, *cut_score;
    int64_t *cut_pos;
    int64_t steps_since_compress;  // decode steps begun since the last compression
};

int kvpolicy_init(kvpolicy_state *ps, const backend *be, int method, const kvpolicy_opts *o, int64_t n_layer,
                  int64_t n_head, int64_t n_kv, int64_t head_dim, int kv_elem, int n_ranks, rc_err *err);
void kvpolicy_free(kvpolicy_state *ps);
void kvpolicy_reset(kvpolicy_state *ps);  // drops the store; the next decode step compresses again

// Forgets the cuts noted so far (every layer: no cut).
void kvpolicy_cuts_clear(kvpolicy_state *ps);
// A decode step begins: its cuts replace the last step's, except that the
// first step after a compression also reports the compression's (the prefill
// compresses, and a trace line is written per decode step).
void kvpolicy_begin_step(kvpolicy_state *ps);
// Notes a ranked cut on `layer`: `kept` stayed, `out` (next in the ranking) did not.
void kvpolicy_note_cut(kvpolicy_state *ps, int64_t layer, scored_pos kept, scored_pos out);
// A top-k of per-head lists (S, k_max) that were asked for one entry more
// than each head keeps (k[s] + 1, where there was room): notes the cut
// between entry k[s] - 1 and entry k[s] and trims n_sel[s] to k[s].
void kvpolicy_trim_cuts(kvpolicy_state *ps, int64_t layer, const scored_pos *sel, int64_t k_max, int64_t *n_sel,
                        const int64_t *k);

// The KV head a store head reads.
int64_t kvpolicy_kv_head(const kvpolicy_state *ps, int64_t store_head);

// The prompt's vote: the last n positions' queries (after RoPE) and lse, backend buffers.
typedef struct prompt_window {
    int64_t n;            // positions, the last n of the prompt
    const float *q;       // (n_layer, stride, n_head, head_dim): rows [0, n) of each layer are used
    const float *lse;     // (n_layer, stride, n_head)
    int64_t stride;       // rows per layer
} prompt_window;

// Builds the store from this rank's full shard at the end of the prompt
// (sh->n_total = prompt length). Collective on several ranks.
int kvpolicy_compress(kvpolicy_state *ps, const prompt_window *win, const shard_ctx *sh, comm *cm, rc_err *err);

// Decode, per layer: the owner appends the new token's rows (k, v: (n_kv,
// head_dim) fp32 backend buffers); then every store head's partial attention
// state over this rank's rows goes to o: (n_head, head_dim) and lse: (n_head).
int kvpolicy_attend(kvpolicy_state *ps, int64_t layer, const float *q, const float *k, const float *v, int64_t pos,
                    int owner, float *o, float *lse, int64_t *rows_read, rc_err *err);
// Removes row i of a store head (an eviction): the row, its hash, its count.
int kvpolicy_evict(kvpolicy_state *ps, int64_t layer, int64_t head, int64_t i, rc_err *err);

// After the merge (lse: (n_head), global): H2O adds this step's attention to
// its scores and evicts; StreamingLLM evicts the oldest non-sink row. n_total
// counts the new token. Collective for H2O on several ranks.
int kvpolicy_after_step(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
