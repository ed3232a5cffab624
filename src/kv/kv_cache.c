#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "backend/kv_format.h"

int kv_cache_init(kv_cache *c, const backend *be, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim,
                  int64_t capacity, int elem, rc_err *err) {
    memset(c, 0, sizeof(*c));
    if (capacity <= 0) return rc_fail(err, "KV cache capacity must be positive");
    if (kv_elem_check(elem, head_dim, err)) return -1;
    c->be = be;
    c->elem = elem;
    c->n_layer = n_layer;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->capacity = capacity;
    const size_t bytes = (size_t)n_layer * (size_t)n_kv_heads * (size_t)capacity * kv_row_bytes(elem, head_dim);
    // CPU: calloc, so untouched pages cost nothing until the sequence grows into them.
    c->k = be->ops->alloc(be, bytes);
    c->v = be->ops->alloc(be, bytes);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return rc_fail(err, "cannot allocate the KV cache (%zu MiB for %lld positions)", 2 * bytes >> 20,
                       (long long)capacity);
    }
    c->n_bytes = 2 * bytes;
    return 0;
}

void kv_cache_free(kv_cache *c) {
    if (c->be) {
        if (c->k) c->be->ops->free(c->be, c->k);
        if (c->v) c->be->ops->free(c->be, c->v);
    }
    free(c->slots);
    memset(c, 0, sizeof(*c));
}

static size_t layer_offset(const kv_cache *c, int64_t layer) {
    return (size_t)layer * (size_t)c->n_kv_heads * (size_t)c->capacity * kv_cache_row_bytes(c);
}

kv_view kv_cache_k(const kv_cache *c, int64_t layer) {
    return (kv_view){.data = (const uint8_t *)c->k + layer_offset(c, layer), .elem = c->elem,
                     .head_stride = c->capacity * c->head_dim};
}

kv_view kv_cache_v(const kv_cache *c, int64_t layer) {
    return (kv_view){.data = (const uint8_t *)c->v + layer_offset(c, layer), .elem = c->elem,
                     .head_stride = c->capacity * c->head_dim};
}

int kv_cache_store(kv_cache *c, int64_t layer, int64_t slot0, int64_t n_tok, const float *k, const float *v,
                   rc_err *err) {
    const int64_t H = c->n_kv_heads, n = n_tok * H;
    if (n > c->n_slots) {  // grows only with the longest prefill block
        int64_t *s = realloc(c->slots, (size_t)n * sizeof(int64_t));
        if (!s) return rc_fail(err, "out of memory storing %lld KV rows", (long long)n_tok);
        c->slots = s;
        c->n_slots = n;
    }
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < H; h++) c->slots[t * H + h] = slot0 + t;
    kv_view kk = kv_cache_k(c, layer), vv = kv_cache_v(c, layer);
    c->be->ops->kv_write(c->be, &kk, &vv, c->slots, k, v, n_tok, H, c->head_dim);
    return 0;
}

size_t kv_cache_bytes_per_pos(const kv_cache *c) {
    return 2 * (size_t)c->n_layer * (size_t)c->n_kv_heads * kv_cache_row_bytes(c);
}

size_t kv_cache_row_bytes(const kv_cache *c) { return kv_row_bytes(c->elem, c->head_dim); }
