// What the distributed prefill moves between ranks (design.md §2), next to
// the shard plan that fixes every size: per layer, the K/V rows each rank
// computed are all-gathered so every rank attends over the whole prompt in
// cache precision; at the end, the last prompt positions' queries and lse
// (the policies' vote) reach every rank. All row data are backend buffers;
// only the index lists built from the plan live on the host.
#ifndef RECALL_KV_KV_EXCHANGE_H
#define RECALL_KV_KV_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/status.h"
#include "kv/kv_cache.h"
#include "kv/shard.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kv_exchange {
    const backend *be;
    int64_t n_total, n_local, n_kv_heads, head_dim;
    int elem;
    size_t row_bytes;          // one head's row in the cache type
    void *send, *recv;         // (n_local | n_total, 2, n_kv_heads) rows
    void *full;                // (2, n_kv_heads, n_total) rows: the whole prompt of one layer
    int64_t *pack_dst, *pack_src;      // (n_local * n_kv_heads)
    int64_t *unpack_dst, *unpack_src;  // (n_total * n_kv_heads)
    size_t *counts;            // (n_ranks) bytes per rank
    size_t n_bytes;            // transient bytes held
} kv_exchange;

// Sizes the exchange of a prompt of plan->n_prompt positions (this rank's
// rows sit at cache slots slot0 .. slot0 + n_local - 1). Several ranks only.
int kv_exchange_init(kv_exchange *x, const backend *be, const shard_plan *plan, int rank, const kv_cache *kv,
                     int64_t slot0, rc_err *err);
void kv_exchange_free(kv_exchange *x);

// All-gathers one layer's rows; returns the views of the whole prompt's K and V.
int kv_exchange_layer(kv_exchange *x, const kv_cache *kv, int64_t layer, comm *cm, kv_view *k, kv_view *v,
                      rc_err *err);

// Every rank gets the rows [win_start, win_start + win_n) of the window
// buffers from their owners: q: (n_layer, stride, q_dim) and lse: (n_layer,
// stride, n_head) floats, row w of each layer for position win_start + w.
int kv_share_window(const backend *be, comm *cm, const shard_plan *plan, int64_t win_start, int64_t win_n, float *q,
                    float *lse, int64_t n_layer, int64_t stride, int64_t q_dim, int64_t n_head, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
