// The KV cache of one sequence on one process: for every layer and KV head,
// `capacity` rows of head_dim elements (fp16 by default, fp32 optional), in
// buffers of the backend that computes with them. Only the backend touches
// the rows; this struct is their shape.
#ifndef RECALL_KV_KV_CACHE_H
#define RECALL_KV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kv_cache {
    const backend *be;
    int elem;              // enum kv_elem
    int64_t n_layer;
    int64_t n_kv_heads;
    int64_t head_dim;
    int64_t capacity;      // positions
    void *k;               // (n_layer, n_kv_heads, capacity, head_dim), a backend buffer
    void *v;
    size_t n_bytes;        // K and V together
    int64_t *slots;        // host scratch for kv_write's slot list
    int64_t n_slots;
} kv_cache;

int kv_cache_init(kv_cache *c, const backend *be, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim,
                  int64_t capacity, int elem, rc_err *err);
void kv_cache_free(kv_cache *c);

kv_view kv_cache_k(const kv_cache *c, int64_t layer);
kv_view kv_cache_v(const kv_cache *c, int64_t layer);

// Stores n_tok rows at slots slot0.. of one layer.
// k, v: (n_tok, n_kv_heads, head_dim) fp32 backend buffers, converted to the cache type.
int kv_cache_store(kv_cache *c, int64_t layer, int64_t slot0, int64_t n_tok, const float *k, const float *v,
                   rc_err *err);

// Index of the row (layer, kv_head, slot) in c->k (or c->v) viewed as rows
// of kv_cache_row_bytes, for copy_rows.
static inline int64_t kv_cache_row_index(const kv_cache *c, int64_t layer, int64_t kv_head, int64_t slot) {
    return (layer * c->n_kv_heads + kv_head) * c->capacity + slot;
}
size_t kv_cache_row_bytes(const kv_cache *c);  // head_dim elements

// Bytes of K and V per cached position across all layers.
size_t kv_cache_bytes_per_pos(const kv_cache *c);

#ifdef __cplusplus
}
#endif

#endif
