// Building blocks of every KV-selection policy (recycled attention's top-K
// cache, H2O, SnapKV, HeadKV): scored positions in one deterministic order,
// top-K selection, merging per-rank top-K lists, GQA aggregation of
// per-query-head scores and max-pooling over neighbouring positions.
//
// The order is score descending, then position ascending. Every rank uses
// it, so merging the ranks' local top-K lists selects exactly the positions a
// single process would (design.md §2).
#ifndef RECALL_POLICY_SELECT_H
#define RECALL_POLICY_SELECT_H

#include <stdint.h>

#include "backend/backend.h"  // scored_pos

// 1 when a comes before b in the selection order.
int scored_pos_before(const scored_pos *a, const scored_pos *b);

// The min(k, n) best of n candidates, best first, into out. NaN scores rank
// below every number. Returns the count written. O(n log k).
int64_t select_topk(const scored_pos *cand, int64_t n, int64_t k, scored_pos *out);

// Merges n_lists lists, each best first (as select_topk writes them), stored
// back to back in `lists` with counts[i] entries each, into the min(k, total)
// best overall, best first. Returns the count written.
int64_t merge_topk(const scored_pos *lists, const int64_t *counts, int n_lists, int64_t k, scored_pos *out);

enum group_agg { GROUP_AGG_MAX = 0, GROUP_AGG_MEAN = 1, GROUP_AGG_FIRST = 2 };

// Scores of the query heads sharing one KV head, combined per position.
// probs: (group, n); out: (n).
void aggregate_group(const float *probs, int64_t group, int64_t n, int agg, float *out);

// out[i] = max of in[j] for |j - i| <= kernel / 2, over consecutive
// positions; the window is cut at the ends (like max_pool1d with -inf
// padding). kernel must be odd; 1 copies. in and out must not overlap.
void maxpool1d(const float *in, int64_t n, int64_t kernel, float *out);

#endif
