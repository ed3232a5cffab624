// Selection over the sharded cache (design.md §2): every rank scores only the
// positions it owns, yet the result must equal the single-process one and be
// identical on every rank. Two building blocks serve every policy: max-pooling
// across ownership boundaries, and a per-head top-k of all ranks' candidates.
// Scores are backend buffers; positions, counts and the winners are host data.
#ifndef RECALL_POLICY_DIST_SELECT_H
#define RECALL_POLICY_DIST_SELECT_H

#include <stdint.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/status.h"
#include "kv/kv_cache.h"
#include "kv/shard.h"
#include "policy/select.h"

#ifdef __cplusplus
extern "C" {
#endif

// This rank's shard of the full cache, as a selection sees it.
typedef struct shard_ctx {
    const kv_cache *kv;
    const int64_t *slot_pos;  // (n_local) ascending absolute positions, host
    int64_t n_local;
    const shard_plan *plan;
    int64_t n_total;          // positions of the sequence so far (all ranks)
} shard_ctx;

// Reusable buffers of the distributed selection (host index lists and
// backend rows); they grow geometrically, so a decode loop stops allocating.
typedef struct dist_scratch {
    const backend *be;
    int n_ranks;
    // host, one entry per rank
    int64_t *edge_n, *edge_off, *cursor, *sizes;  // edge_off: n_ranks + 1
    size_t *counts;
    // host, grown on demand
    shard_run *runs;
    int64_t *edge_pos, *idx_dst, *idx_src, *ext_of_local, *halo, *my_counts, *all_counts;
    scored_pos *mine, *all, *tmp;
    size_t cap_runs, cap_edge_pos, cap_idx_dst, cap_idx_src, cap_ext_of_local, cap_halo, cap_my_counts,
        cap_all_counts, cap_mine, cap_all, cap_tmp;
    // backend, grown on demand
    float *send, *recv, *ext, *ext_pooled;
    size_t cap_send, cap_recv, cap_ext, cap_ext_pooled;
} dist_scratch;

int dist_scratch_init(dist_scratch *s, const backend *be, int n_ranks, rc_err *err);
void dist_scratch_free(dist_scratch *s);

// Index of pos in the ascending array a[0..n), or -1.
int64_t dist_find_pos(const int64_t *a, int64_t n, int64_t pos);

// pooled = max-pool (odd kernel) of agg: (n_rows, sh->n_local) along global
// positions [0, sh->n_total), exactly as one process would compute it.
// Collective on several ranks (one all-gather of the scores within kernel/2
// of each boundary). agg and pooled are backend buffers.
int dist_maxpool(dist_scratch *s, const float *agg, float *pooled, int64_t n_rows, int64_t kernel,
                 const shard_ctx *sh, comm *cm, rc_err *err);

// For each head h < n_heads: the best k[h] of all ranks' candidates, best
// first, identical on every rank. scores: (n_heads, ld) backend rows for this
// rank's positions; only positions < pos_limit are candidates. out: (n_heads,
// k_max) host, with n_out[h] entries for head h (fewer than k[h] when there are
// fewer candidates). Collective on several ranks (two all-gathers).
int dist_topk(dist_scratch *s, const float *scores, int64_t ld, int64_t n_heads, const int64_t *k, int64_t k_max,
              int64_t pos_limit, const shard_ctx *sh, comm *cm, scored_pos *out, int64_t *n_out, rc_err *err);

// Merges the per-head lists of every rank, all-gathered back to back (rank
// 0's lists for heads 0..n_heads-1, then rank 1's, ...), with counts
// all_counts: (R, n_heads), into out: (n_heads, k_max) with the best k[h] of
// head h and n_out[h] entries.
int dist_merge_lists(dist_scratch *s, const scored_pos *all, const int64_t *all_counts, int R, int64_t n_heads,
                     const int64_t *k, int64_t k_max, scored_pos *out, int64_t *n_out, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
