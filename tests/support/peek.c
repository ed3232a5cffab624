#include "peek.h"

#include <stdlib.h>
#include <string.h>

void *peek_copy(const backend *be, const void *src, size_t n_bytes) {
    void *p = malloc(n_bytes ? n_bytes : 1);
    if (p && n_bytes) be->ops->download(be, p, src, n_bytes);
    return p;
}

void peek_kv_row(const kv_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot, void *out) {
    const size_t row = kv_cache_row_bytes(c);
    const uint8_t *base = which ? c->v : c->k;
    c->be->ops->download(c->be, out, base + (size_t)kv_cache_row_index(c, layer, kv_head, slot) * row, row);
}

void peek_recycle_row(const recycle_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot, void *out) {
    const size_t row = kv_cache_row_bytes(&c->rows);
    const uint8_t *base = which ? c->rows.v : c->rows.k;
    c->rows.be->ops->download(c->rows.be, out, base + (size_t)recycle_cache_row_index(c, layer, kv_head, slot) * row,
                              row);
}

void peek_store_row(const kv_store *s, int which, int64_t layer, int64_t head, int64_t i, void *out) {
    const kv_store_head *h = kv_store_head_at(s, layer, head);
    const size_t row = kv_store_row_bytes(s);
    const uint8_t *base = which ? h->v : h->k;
    s->be->ops->download(s->be, out, base + (size_t)i * row, row);
}

float peek_store_score(const kv_store *s, int64_t layer, int64_t head, int64_t i) {
    float x = 0.0f;
    s->be->ops->download(s->be, &x, kv_store_head_at(s, layer, head)->score + i, sizeof(float));
    return x;
}

int peek_rows_equal(const backend *be, const void *a, const void *b, size_t n_bytes) {
    void *x = peek_copy(be, a, n_bytes), *y = peek_copy(be, b, n_bytes);
    const int eq = x && y && memcmp(x, y, n_bytes) == 0;
    free(x);
    free(y);
    return eq;
}
