#include "kv/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "model/quant.h"

static size_t elem_bytes(int elem) { return elem == KV_F16 ? 2 : 4; }

int kv_cache_init(kv_cache *c, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int elem,
                  rc_err *err) {
    memset(c, 0, sizeof(*c));
    if (capacity <= 0) return rc_fail(err, "KV cache capacity must be positive");
    c->elem = elem;
    c->n_layer = n_layer;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->capacity = capacity;
    size_t n_elems = (size_t)n_layer * (size_t)n_kv_heads * (size_t)capacity * (size_t)head_dim;
    size_t bytes = n_elems * elem_bytes(elem);
    // calloc: untouched pages cost nothing until the sequence grows into them.
    c->k = calloc(1, bytes);
    c->v = calloc(1, bytes);
    if (!c->k || !c->v) {
        kv_cache_free(c);
        return rc_fail(err, "cannot allocate the KV cache (%zu MiB for %lld positions)", 2 * bytes >> 20,
                       (long long)capacity);
    }
    c->n_bytes = 2 * bytes;
    return 0;
}

void kv_cache_free(kv_cache *c) {
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

static size_t layer_offset(const kv_cache *c, int64_t layer) {
    return (size_t)layer * (size_t)c->n_kv_heads * (size_t)c->capacity * (size_t)c->head_dim * elem_bytes(c->elem);
}

kv_view kv_cache_k(const kv_cache *c, int64_t layer) {
    return (kv_view){.data = (const uint8_t *)c->k + layer_offset(c, layer), .elem = c->elem,
                     .head_stride = c->capacity * c->head_dim};
}

kv_view kv_cache_v(const kv_cache *c, int64_t layer) {
    return (kv_view){.data = (const uint8_t *)c->v + layer_offset(c, layer), .elem = c->elem,
                     .head_stride = c->capacity * c->head_dim};
}

void kv_convert_row(void *base, int elem, const float *src, int64_t n) {
    if (elem == KV_F32) {
        memcpy(base, src, (size_t)n * sizeof(float));
        return;
    }
    uint16_t *dst = base;
    for (int64_t i = 0; i < n; i++) dst[i] = fp32_to_fp16(src[i]);
}

void kv_cache_store(kv_cache *c, int64_t layer, int64_t pos0, int64_t n_tok, const float *k, const float *v) {
    const size_t eb = elem_bytes(c->elem);
    uint8_t *kl = (uint8_t *)c->k + layer_offset(c, layer);
    uint8_t *vl = (uint8_t *)c->v + layer_offset(c, layer);
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < c->n_kv_heads; h++) {
            size_t dst = ((size_t)h * (size_t)c->capacity + (size_t)(pos0 + t)) * (size_t)c->head_dim * eb;
            size_t src = (size_t)(t * c->n_kv_heads + h) * (size_t)c->head_dim;
            kv_convert_row(kl + dst, c->elem, k + src, c->head_dim);
            kv_convert_row(vl + dst, c->elem, v + src, c->head_dim);
        }
}

size_t kv_cache_bytes_per_pos(const kv_cache *c) {
    return 2 * (size_t)c->n_layer * (size_t)c->n_kv_heads * (size_t)c->head_dim * elem_bytes(c->elem);
}

void *kv_cache_row(const kv_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot) {
    size_t off = layer_offset(c, layer) +
                 ((size_t)kv_head * (size_t)c->capacity + (size_t)slot) * (size_t)c->head_dim * elem_bytes(c->elem);
    return (uint8_t *)(which ? c->v : c->k) + off;
}

size_t kv_cache_row_bytes(const kv_cache *c) { return (size_t)c->head_dim * elem_bytes(c->elem); }
