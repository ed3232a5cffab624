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

#include "backend/backend.h"      // scored_pos
#include "backend/cpu_select.h"   // select_topk, maxpool1d (host selection on the CPU kernels)

#ifdef __cplusplus
extern "C" {
#endif

// 1 when a comes before b in the selection order.
int scored_pos_before(const scored_pos *a, const scored_pos *b);

// Merges n_lists lists, each best first (as select_topk writes them), stored
// back to back in `lists` with counts[i] entries each, into the min(k, total)
// best overall, best first. Returns the count written.
int64_t merge_topk(const scored_pos *lists, const int64_t *counts, int n_lists, int64_t k, scored_pos *out);

// How recycled attention combines the query heads of one KV group (backend
// score_reduce modes SCORE_MAX_LOGP, SCORE_MEAN_P, SCORE_FIRST_LOGP).
enum group_agg { GROUP_AGG_MAX = 0, GROUP_AGG_MEAN = 1, GROUP_AGG_FIRST = 2 };

#ifdef __cplusplus
}
#endif

#endif
