// The KV cache of one sequence on one process: for every layer and KV head,
// `capacity` rows of head_dim elements (fp16 by default, fp32 optional).
#ifndef RECALL_KV_KV_CACHE_H
#define RECALL_KV_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"

typedef struct kv_cache {
    int elem;              // enum kv_elem
    int64_t n_layer;
    int64_t n_kv_heads;
    int64_t head_dim;
    int64_t capacity;      // positions
    void *k;               // (n_layer, n_kv_heads, capacity, head_dim)
    void *v;
    size_t n_bytes;        // K and V together
} kv_cache;

int kv_cache_init(kv_cache *c, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int elem,
                  rc_err *err);
void kv_cache_free(kv_cache *c);

kv_view kv_cache_k(const kv_cache *c, int64_t layer);
kv_view kv_cache_v(const kv_cache *c, int64_t layer);

// Stores n_tok rows at positions pos0.. for one layer.
// k, v: (n_tok, n_kv_heads, head_dim) fp32, converted to the cache type.
void kv_cache_store(kv_cache *c, int64_t layer, int64_t pos0, int64_t n_tok, const float *k, const float *v);

// Converts n fp32 values to the cache type at dst.
void kv_convert_row(void *dst, int elem, const float *src, int64_t n);

// The head_dim elements of K (which = 0) or V (which = 1) at one slot.
void *kv_cache_row(const kv_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot);
size_t kv_cache_row_bytes(const kv_cache *c);  // head_dim elements

// Bytes of K and V per cached position across all layers.
size_t kv_cache_bytes_per_pos(const kv_cache *c);

#endif
