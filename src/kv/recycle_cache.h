// The recycled cache C_p of Recycled Attention (design.md §3): per layer and
// KV head, at most K rows of K/V with their absolute positions, kept in
// ascending score order (front = lowest). Every rank holds an identical copy,
// so a recycled step attends over it with no communication.
//
// Attention reads slots [0, count) in slot order (softmax does not care, and
// every rank uses the same order). The logical order front..tail is a ring
// `order` of slot numbers starting at `head`, so appending to a full cache
// moves no rows, and a rebuild can leave rows it keeps where they are.
#ifndef RECALL_KV_RECYCLE_CACHE_H
#define RECALL_KV_RECYCLE_CACHE_H

#include <stdint.h>

#include "core/status.h"
#include "kv/kv_cache.h"

typedef struct recycle_cache {
    kv_cache rows;        // capacity = k
    int64_t k;
    int64_t *pos;         // (n_layer, n_kv_heads, k): absolute position held by each slot
    float *score;         // (n_layer, n_kv_heads, k): selection score (+inf for appended tokens)
    int64_t *order;       // (n_layer, n_kv_heads, k): ring of slots in logical order
    int64_t *count;       // (n_layer): rows in use, the same for every KV head of a layer
    int64_t *head;        // (n_layer): slot of the front entry
} recycle_cache;

int recycle_cache_init(recycle_cache *c, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, int64_t k, int elem,
                       rc_err *err);
void recycle_cache_free(recycle_cache *c);
void recycle_cache_clear(recycle_cache *c);

kv_view recycle_cache_k(const recycle_cache *c, int64_t layer);
kv_view recycle_cache_v(const recycle_cache *c, int64_t layer);

// Slot of logical entry i of a layer and KV head (0 = front, the lowest score).
int64_t recycle_cache_slot(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t i);

// Appends the token at `pos` at the tail of every KV head of a layer,
// dropping the front entry once the cache holds k rows.
// k_row, v_row: (n_kv_heads, head_dim) fp32, converted to the cache type.
void recycle_cache_append(recycle_cache *c, int64_t layer, int64_t pos, const float *k_row, const float *v_row);

// Positions of one layer and KV head in logical order (front first); returns the count.
int64_t recycle_cache_positions(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t *out);

#endif
