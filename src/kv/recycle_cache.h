// The recycled cache C_p of Recycled Attention (design.md §3): per layer and
// KV head, at most K rows of K/V (K may differ per head: HeadKV budgets) with
// their absolute positions, kept in
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

#ifdef __cplusplus
extern "C" {
#endif

typedef struct recycle_cache {
    kv_cache rows;        // one block of all rows (backend buffers): (layer, KV head) at row offset off[], slot after slot
    int64_t n_layer, n_kv_heads;
    int64_t k;            // the largest capacity of any (layer, KV head)
    int uniform;          // every capacity is k: a layer's heads sit at a fixed stride (one attention call)
    int64_t *cap;         // (n_layer, n_kv_heads): rows each can hold
    int64_t *off;         // (n_layer, n_kv_heads): its first row
    int64_t *pos;         // (total rows): absolute position held by each slot
    float *score;         // (total rows): selection score (+inf for appended tokens)
    int64_t *order;       // (total rows): per (layer, KV head), a ring of slots in logical order
    int64_t *count;       // (n_layer, n_kv_heads): rows in use
    int64_t *head;        // (n_layer, n_kv_heads): ring index of the front entry
    int64_t *append_slot; // (n_kv_heads): scratch, the rows an append writes
} recycle_cache;

// caps: (n_layer, n_kv_heads) capacities, or NULL for k everywhere.
int recycle_cache_init(recycle_cache *c, const backend *be, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, const int64_t *caps,
                       int64_t k, int elem, rc_err *err);
void recycle_cache_free(recycle_cache *c);
void recycle_cache_clear(recycle_cache *c);

// A layer's rows for one attention call over all its KV heads (uniform caches only).
kv_view recycle_cache_k(const recycle_cache *c, int64_t layer);
kv_view recycle_cache_v(const recycle_cache *c, int64_t layer);
// One (layer, KV head)'s rows as a single-head view.
kv_view recycle_cache_head_k(const recycle_cache *c, int64_t layer, int64_t kv_head);
kv_view recycle_cache_head_v(const recycle_cache *c, int64_t layer, int64_t kv_head);

int64_t recycle_cache_count(const recycle_cache *c, int64_t layer, int64_t kv_head);
int64_t recycle_cache_cap(const recycle_cache *c, int64_t layer, int64_t kv_head);
int64_t recycle_cache_total_rows(const recycle_cache *c);  // capacity over all layers and heads

// Slot of logical entry i of a layer and KV head (0 = front, the lowest score).
int64_t recycle_cache_slot(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t i);
// Row index (into pos/score, and the rows of c->rows.k / .v for copy_rows) of a slot.
static inline int64_t recycle_cache_row_index(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t slot) {
    return c->off[layer * c->n_kv_heads + kv_head] + slot;
}

// Appends the token at `pos` at the tail of every KV head of a layer,
// dropping the front entry of a head that is full.
// k_row, v_row: (n_kv_heads, head_dim) fp32 backend buffers, converted to the cache type.
void recycle_cache_append(recycle_cache *c, int64_t layer, int64_t pos, const float *k_row, const float *v_row);

// Positions of one layer and KV head in logical order (front first); returns the count.
int64_t recycle_cache_positions(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t *out);

#ifdef __cplusplus
}
#endif

#endif
