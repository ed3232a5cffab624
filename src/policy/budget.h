// Per-head and per-layer KV budgets at a fixed total (design.md §4): HeadKV
// moves budget between heads by importance score, PyramidKV lets it fall
// linearly over the layers. Every split is exact in integers: the budgets
// always sum to (count x mean budget), so policies compare at equal memory.
#ifndef RECALL_POLICY_BUDGET_H
#define RECALL_POLICY_BUDGET_H

#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// HeadKV (Fu et al. 2024): n heads, mean budget b (b >= 0), beta > 1.
// Every head gets base = b - floor(b/beta) (b/beta in double, as the
// reference Python computes it); the pool floor(b/beta) * n is split by
// normalized score: share_i = floor(pool * s_i / sum s), plus one unit for
// each of the heads with the largest remainders (ties: lower index first)
// until the pool is used up. sum(out) == n * b exactly.
//
// The split is done in exact integer arithmetic on the scores as 62-bit
// fixed point relative to the largest score (a score below 2^-62 of the
// largest counts as zero), so equal scores give exactly b each, a zero score
// gets exactly base and never a remainder unit, and all-zero scores give b
// each. beta = +inf is allowed (no pool: b each).
// scores: (n); out: (n). Rejects NaN, negative or infinite scores, n < 1,
// beta <= 1 (or NaN), b < 0 and n * b beyond int64.
int budget_headkv(const double *scores, int64_t n, int64_t b, double beta, int64_t *out, rc_err *err);

// PyramidKV (Cai et al. 2024; KVCache-Factory's rule): budgets fall linearly
// from layer 0 to the last layer, min = b / beta_p (beta_p = 20 in
// PyramidKV), max = 2b - min, mean exactly b. The real-valued line is
// rounded by largest remainder (ties: lower layer first), so sum(out) ==
// n_layer * b exactly, out is non-increasing, and each out[l] is within 1 of
// the line. n_layer == 1 gives b. beta_p >= 1 (1: uniform).
// out: (n_layer).
int budget_pyramid(int64_t n_layer, int64_t b, double beta_p, int64_t *out, rc_err *err);

#define BUDGET_PYRAMID_BETA 20.0

// Sums per-query-head scores over each GQA group (query head h belongs to
// KV head h / (n_head / n_kv)); n_head must be a multiple of n_kv.
// head_scores: (n_layer, n_head); out: (n_layer, n_kv).
void budget_group_scores(const double *head_scores, int64_t n_layer, int64_t n_head, int64_t n_kv, double *out);

#ifdef __cplusplus
}
#endif

#endif
