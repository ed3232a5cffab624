// Which rank owns which position of the sequence (design.md §2). The prompt
// is split into contiguous ranges, one per rank (or "zigzag": 2N chunks, rank
// r takes chunks r and 2N-1-r, which balances causal attention work);
// generated positions go round-robin in blocks of SHARD_GEN_BLOCK.
#ifndef RECALL_KV_SHARD_H
#define RECALL_KV_SHARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHARD_GEN_BLOCK 32

typedef struct shard_plan {
    int n_ranks;
    int zigzag;
    int64_t n_prompt;
} shard_plan;

// A rank's prompt positions as up to two half-open ranges [start, end).
typedef struct shard_ranges {
    int n;
    int64_t start[2];
    int64_t end[2];
} shard_ranges;

shard_ranges shard_prompt_ranges(const shard_plan *p, int rank);
int64_t shard_prompt_count(const shard_plan *p, int rank);
int shard_owner(const shard_plan *p, int64_t pos);
// A maximal run of consecutive positions with one owner.
typedef struct shard_run {
    int64_t start, end;  // [start, end)
    int owner;
} shard_run;

// The ownership of positions [0, n_total) as runs in position order; adjacent
// chunks of one rank are merged. Returns the number of runs written to `out`
// (at most shard_max_runs(p, n_total)).
int64_t shard_runs(const shard_plan *p, int64_t n_total, shard_run *out);
int64_t shard_max_runs(const shard_plan *p, int64_t n_total);

// Positions among [0, n_total) that `rank` owns.
int64_t shard_local_count(const shard_plan *p, int rank, int64_t n_total);

// Most positions any rank can own in a sequence of n_ctx positions.
int64_t shard_max_local(const shard_plan *p, int64_t n_ctx);

#ifdef __cplusplus
}
#endif

#endif
