#include "kv/recycle_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int recycle_cache_init(recycle_cache *c, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, int64_t k, int elem,
                       rc_err *err) {
    memset(c, 0, sizeof(*c));
    if (k <= 0) return rc_fail(err, "recycled cache size must be positive");
    if (kv_cache_init(&c->rows, n_layer, n_kv_heads, head_dim, k, elem, err)) return -1;
    const size_t n = (size_t)(n_layer * n_kv_heads * k);
    c->k = k;
    c->pos = malloc(n * sizeof(int64_t));
    c->score = malloc(n * sizeof(float));
    c->order = malloc(n * sizeof(int64_t));
    c->count = calloc((size_t)n_layer, sizeof(int64_t));
    c->head = calloc((size_t)n_layer, sizeof(int64_t));
    if (!c->pos || !c->score || !c->order || !c->count || !c->head) {
        recycle_cache_free(c);
        return rc_fail(err, "out of memory for the recycled cache (k = %lld)", (long long)k);
    }
    return 0;
}

void recycle_cache_free(recycle_cache *c) {
    kv_cache_free(&c->rows);
    free(c->pos);
    free(c->score);
    free(c->order);
    free(c->count);
    free(c->head);
    memset(c, 0, sizeof(*c));
}

void recycle_cache_clear(recycle_cache *c) {
    memset(c->count, 0, (size_t)c->rows.n_layer * sizeof(int64_t));
    memset(c->head, 0, (size_t)c->rows.n_layer * sizeof(int64_t));
}

kv_view recycle_cache_k(const recycle_cache *c, int64_t layer) { return kv_cache_k(&c->rows, layer); }
kv_view recycle_cache_v(const recycle_cache *c, int64_t layer) { return kv_cache_v(&c->rows, layer); }

int64_t recycle_cache_slot(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t i) {
    return c->order[(layer * c->rows.n_kv_heads + kv_head) * c->k + (c->head[layer] + i) % c->k];
}

void recycle_cache_append(recycle_cache *c, int64_t layer, int64_t pos, const float *k_row, const float *v_row) {
    const int64_t H = c->rows.n_kv_heads, n = c->count[layer];
    const kv_cache *r = &c->rows;
    for (int64_t h = 0; h < H; h++) {
        int64_t *order = c->order + (layer * H + h) * c->k, slot;
        if (n < c->k) {  // a free slot: slots [0, count) are in use
            slot = n;
            order[(c->head[layer] + n) % c->k] = slot;
        } else {  // the front entry leaves; its ring place and slot become the tail's
            slot = order[c->head[layer]];
        }
        c->pos[(layer * H + h) * c->k + slot] = pos;
        c->score[(layer * H + h) * c->k + slot] = INFINITY;
        void *kd = kv_cache_row(r, 0, layer, h, slot), *vd = kv_cache_row(r, 1, layer, h, slot);
        kv_convert_row(kd, r->elem, k_row + h * r->head_dim, r->head_dim);
        kv_convert_row(vd, r->elem, v_row + h * r->head_dim, r->head_dim);
    }
    if (n < c->k) c->count[layer] = n + 1;
    else c->head[layer] = (c->head[layer] + 1) % c->k;
}

int64_t recycle_cache_positions(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t *out) {
    const int64_t H = c->rows.n_kv_heads, n = c->count[layer];
    for (int64_t i = 0; i < n; i++) out[i] = c->pos[(layer * H + kv_head) * c->k + recycle_cache_slot(c, layer, kv_head, i)];
    return n;
}
