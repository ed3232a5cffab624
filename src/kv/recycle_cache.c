#include "kv/recycle_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int recycle_cache_init(recycle_cache *c, const backend *be, int64_t n_layer, int64_t n_kv_heads, int64_t head_dim, const int64_t *caps,
                       int64_t k, int elem, rc_err *err) {
    memset(c, 0, sizeof(*c));
    const int64_t n_heads = n_layer * n_kv_heads;
    c->n_layer = n_layer;
    c->n_kv_heads = n_kv_heads;
    c->cap = malloc((size_t)n_heads * sizeof(int64_t));
    c->off = malloc((size_t)n_heads * sizeof(int64_t));
    c->count = calloc((size_t)n_heads, sizeof(int64_t));
    c->head = calloc((size_t)n_heads, sizeof(int64_t));
    c->append_slot = malloc((size_t)n_kv_heads * sizeof(int64_t));
    if (!c->cap || !c->off || !c->count || !c->head || !c->append_slot) {
        recycle_cache_free(c);
        return rc_fail(err, "out of memory for the recycled cache");
    }
    int64_t total = 0;
    c->k = 0;
    c->uniform = 1;
    for (int64_t i = 0; i < n_heads; i++) {
        c->cap[i] = caps ? caps[i] : k;
        if (c->cap[i] <= 0) {
            recycle_cache_free(c);
            return rc_fail(err, "recycled cache size must be positive");
        }
        c->off[i] = total;
        total += c->cap[i];
        c->k = c->cap[i] > c->k ? c->cap[i] : c->k;
        c->uniform &= c->cap[i] == c->cap[0];
    }
    if (kv_cache_init(&c->rows, be, 1, 1, head_dim, total, elem, err)) {
        recycle_cache_free(c);
        return -1;
    }
    c->pos = malloc((size_t)total * sizeof(int64_t));
    c->score = malloc((size_t)total * sizeof(float));
    c->order = malloc((size_t)total * sizeof(int64_t));
    if (!c->pos || !c->score || !c->order) {
        recycle_cache_free(c);
        return rc_fail(err, "out of memory for the recycled cache (%lld rows)", (long long)total);
    }
    return 0;
}

void recycle_cache_free(recycle_cache *c) {
    kv_cache_free(&c->rows);
    free(c->cap);
    free(c->off);
    free(c->pos);
    free(c->score);
    free(c->order);
    free(c->count);
    free(c->head);
    free(c->append_slot);
    memset(c, 0, sizeof(*c));
}

void recycle_cache_clear(recycle_cache *c) {
    memset(c->count, 0, (size_t)(c->n_layer * c->n_kv_heads) * sizeof(int64_t));
    memset(c->head, 0, (size_t)(c->n_layer * c->n_kv_heads) * sizeof(int64_t));
}

int64_t recycle_cache_count(const recycle_cache *c, int64_t layer, int64_t kv_head) {
    return c->count[layer * c->n_kv_heads + kv_head];
}

int64_t recycle_cache_cap(const recycle_cache *c, int64_t layer, int64_t kv_head) {
    return c->cap[layer * c->n_kv_heads + kv_head];
}

int64_t recycle_cache_total_rows(const recycle_cache *c) { return c->rows.capacity; }

static kv_view head_view(const recycle_cache *c, int which, int64_t layer, int64_t kv_head, int64_t stride) {
    const size_t off = (size_t)recycle_cache_row_index(c, layer, kv_head, 0) * kv_cache_row_bytes(&c->rows);
    return (kv_view){.data = (const uint8_t *)(which ? c->rows.v : c->rows.k) + off, .elem = c->rows.elem,
                     .head_stride = stride};
}

kv_view recycle_cache_k(const recycle_cache *c, int64_t layer) { return head_view(c, 0, layer, 0, c->k * c->rows.head_dim); }
kv_view recycle_cache_v(const recycle_cache *c, int64_t layer) { return head_view(c, 1, layer, 0, c->k * c->rows.head_dim); }
kv_view recycle_cache_head_k(const recycle_cache *c, int64_t layer, int64_t kv_head) { return head_view(c, 0, layer, kv_head, 0); }
kv_view recycle_cache_head_v(const recycle_cache *c, int64_t layer, int64_t kv_head) { return head_view(c, 1, layer, kv_head, 0); }

int64_t recycle_cache_slot(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t i) {
    const int64_t lh = layer * c->n_kv_heads + kv_head;
    return c->order[c->off[lh] + (c->head[lh] + i) % c->cap[lh]];
}

void recycle_cache_append(recycle_cache *c, int64_t layer, int64_t pos, const float *k_row, const float *v_row) {
    const int64_t H = c->n_kv_heads, hd = c->rows.head_dim;
    for (int64_t h = 0; h < H; h++) {
        const int64_t lh = layer * H + h, n = c->count[lh], cap = c->cap[lh];
        int64_t *order = c->order + c->off[lh], slot;
        if (n < cap) {  // a free slot: slots [0, count) are in use
            slot = n;
            order[(c->head[lh] + n) % cap] = slot;
            c->count[lh] = n + 1;
        } else {  // the front entry leaves; its ring place and slot become the tail's
            slot = order[c->head[lh]];
            c->head[lh] = (c->head[lh] + 1) % cap;
        }
        c->pos[c->off[lh] + slot] = pos;
        c->score[c->off[lh] + slot] = INFINITY;
        c->append_slot[h] = c->off[lh] + slot;
    }
    // All rows as one flat head: row (0, h) of k_row goes to row append_slot[h].
    kv_view kk = kv_cache_k(&c->rows, 0), vv = kv_cache_v(&c->rows, 0);
    kk.head_stride = vv.head_stride = 0;
    c->rows.be->ops->kv_write(c->rows.be, &kk, &vv, c->append_slot, k_row, v_row, 1, H, hd);
}

int64_t recycle_cache_positions(const recycle_cache *c, int64_t layer, int64_t kv_head, int64_t *out) {
    const int64_t lh = layer * c->n_kv_heads + kv_head, n = c->count[lh];
    for (int64_t i = 0; i < n; i++) out[i] = c->pos[c->off[lh] + recycle_cache_slot(c, layer, kv_head, i)];
    return n;
}
