#include "kv/kv_store.h"

#include <stdlib.h>
#include <string.h>

#include "backend/kv_format.h"

int kv_store_init(kv_store *s, const backend *be, int64_t n_layer, int64_t n_heads, int64_t head_dim, int elem,
                  rc_err *err) {
    memset(s, 0, sizeof(*s));
    if (kv_elem_check(elem, head_dim, err)) return -1;
    s->be = be;
    s->elem = elem;
    s->n_layer = n_layer;
    s->n_heads = n_heads;
    s->head_dim = head_dim;
    s->heads = calloc((size_t)(n_layer * n_heads), sizeof(kv_store_head));
    if (!s->heads) return rc_fail(err, "out of memory for the compressed KV store");
    return 0;
}

static void free_head(const kv_store *s, kv_store_head *h) {
    const backend *be = s->be;
    free(h->pos);
    if (h->score) be->ops->free(be, h->score);
    if (h->k) be->ops->free(be, h->k);
    if (h->v) be->ops->free(be, h->v);
    memset(h, 0, sizeof(*h));
}

void kv_store_clear(kv_store *s) {
    if (!s->heads) return;
    for (int64_t i = 0; i < s->n_layer * s->n_heads; i++) free_head(s, &s->heads[i]);
}

void kv_store_free(kv_store *s) {
    kv_store_clear(s);
    free(s->heads);
    if (s->scratch) s->be->ops->free(s->be, s->scratch);
    free(s->index);
    memset(s, 0, sizeof(*s));
}

kv_store_head *kv_store_head_at(const kv_store *s, int64_t layer, int64_t head) {
    return &s->heads[layer * s->n_heads + head];
}

size_t kv_store_row_bytes(const kv_store *s) { return kv_row_bytes(s->elem, s->head_dim); }

// New buffers of `cap` rows holding the first `count` rows of the old ones.
static int resize(kv_store *s, kv_store_head *h, int64_t cap) {
    const backend *be = s->be;
    const size_t row = kv_store_row_bytes(s);
    int64_t *pos = malloc((size_t)cap * sizeof(int64_t));
    float *score = be->ops->alloc(be, (size_t)cap * sizeof(float));
    void *k = be->ops->alloc(be, (size_t)cap * row), *v = be->ops->alloc(be, (size_t)cap * row);
    if (!pos || !score || !k || !v) {  // a failed resize keeps the old buffers
        free(pos);
        if (score) be->ops->free(be, score);
        if (k) be->ops->free(be, k);
        if (v) be->ops->free(be, v);
        return -1;
    }
    if (h->count > 0) {
        memcpy(pos, h->pos, (size_t)h->count * sizeof(int64_t));
        be->ops->copy(be, score, h->score, (size_t)h->count * sizeof(float));
        be->ops->copy(be, k, h->k, (size_t)h->count * row);
        be->ops->copy(be, v, h->v, (size_t)h->count * row);
    }
    const int64_t count = h->count;
    free_head(s, h);
    *h = (kv_store_head){.count = count, .cap = cap, .pos = pos, .score = score, .k = k, .v = v};
    return 0;
}

static int reserve(kv_store *s, kv_store_head *h, int64_t n_more, rc_err *err) {
    const int64_t need = h->count + n_more;
    if (need <= h->cap) return 0;
    int64_t cap = h->cap < 16 ? 16 : h->cap + h->cap / 2;
    if (cap < need) cap = need;
    if (resize(s, h, cap)) return rc_fail(err, "out of memory growing the compressed KV store");
    return 0;
}

static int check_order(const kv_store_head *h, int64_t pos, int64_t layer, int64_t head, rc_err *err) {
    if (h->count > 0 && pos <= h->pos[h->count - 1])
        return rc_fail(err, "KV store: position %lld appended after %lld (layer %lld, head %lld)", (long long)pos,
                       (long long)h->pos[h->count - 1], (long long)layer, (long long)head);
    return 0;
}

int kv_store_append(kv_store *s, int64_t layer, int64_t head, int64_t pos, const float *k, const float *v,
                    rc_err *err) {
    kv_store_head *h = kv_store_head_at(s, layer, head);
    if (check_order(h, pos, layer, head, err) || reserve(s, h, 1, err)) return -1;
    const backend *be = s->be;
    const kv_view kk = {.data = h->k, .elem = s->elem}, vv = {.data = h->v, .elem = s->elem};
    const int64_t slot = h->count;
    be->ops->kv_write(be, &kk, &vv, &slot, k, v, 1, 1, s->head_dim);
    const float zero = 0.0f;
    be->ops->upload(be, h->score + slot, &zero, sizeof(float));
    h->pos[h->count++] = pos;
    return 0;
}

static int index_scratch(kv_store *s, int64_t n, rc_err *err) {
    if (n <= s->n_index) return 0;
    int64_t *p = realloc(s->index, (size_t)n * sizeof(int64_t));
    if (!p) return rc_fail(err, "out of memory");
    s->index = p;
    s->n_index = n;
    return 0;
}

int kv_store_append_from(kv_store *s, int64_t layer, int64_t head, int64_t n, const int64_t *pos_host,
                         const kv_cache *src, int64_t src_layer, int64_t src_kv_head, const int64_t *src_slot_host,
                         const float *scores, const int64_t *score_col_host, rc_err *err) {
    if (n <= 0) return 0;
    kv_store_head *h = kv_store_head_at(s, layer, head);
    if (check_order(h, pos_host[0], layer, head, err) || reserve(s, h, n, err) || index_scratch(s, 2 * n, err))
        return -1;
    const backend *be = s->be;
    int64_t *dst = s->index, *from = s->index + n;
    for (int64_t i = 0; i < n; i++) {
        dst[i] = h->count + i;
        from[i] = kv_cache_row_index(src, src_layer, src_kv_head, src_slot_host[i]);
    }
    const size_t row = kv_store_row_bytes(s);
    be->ops->copy_rows(be, h->k, dst, src->k, from, n, row);
    be->ops->copy_rows(be, h->v, dst, src->v, from, n, row);
    if (scores) be->ops->copy_rows(be, h->score, dst, scores, score_col_host, n, sizeof(float));
    else {
        float *zeros = calloc((size_t)n, sizeof(float));
        if (!zeros) return rc_fail(err, "out of memory");
        be->ops->upload(be, h->score + h->count, zeros, (size_t)n * sizeof(float));
        free(zeros);
    }
    memcpy(h->pos + h->count, pos_host, (size_t)n * sizeof(int64_t));
    h->count += n;
    return 0;
}

int kv_store_remove(kv_store *s, int64_t layer, int64_t head, int64_t i, rc_err *err) {
    kv_store_head *h = kv_store_head_at(s, layer, head);
    const backend *be = s->be;
    const size_t row = kv_store_row_bytes(s);
    const int64_t tail = h->count - i - 1;
    if (tail > 0) {  // rows i+1.. move down one: through scratch, as copies may not overlap
        if (tail > s->scratch_rows) {
            if (s->scratch) be->ops->free(be, s->scratch);
            int64_t rows = tail < 64 ? 64 : tail + tail / 2;
            if (!(s->scratch = be->ops->alloc(be, (size_t)rows * row))) {
                s->scratch_rows = 0;
                return rc_fail(err, "out of memory evicting a KV row");
            }
            s->scratch_rows = rows;
        }
        uint8_t *k = h->k, *v = h->v;
        be->ops->copy(be, s->scratch, k + (size_t)(i + 1) * row, (size_t)tail * row);
        be->ops->copy(be, k + (size_t)i * row, s->scratch, (size_t)tail * row);
        be->ops->copy(be, s->scratch, v + (size_t)(i + 1) * row, (size_t)tail * row);
        be->ops->copy(be, v + (size_t)i * row, s->scratch, (size_t)tail * row);
        be->ops->copy(be, s->scratch, h->score + i + 1, (size_t)tail * sizeof(float));
        be->ops->copy(be, h->score + i, s->scratch, (size_t)tail * sizeof(float));
        memmove(h->pos + i, h->pos + i + 1, (size_t)tail * sizeof(int64_t));
    }
    h->count--;
    if (h->count == 0) free_head(s, h);
    else if (h->cap >= 64 && h->count < h->cap / 4) resize(s, h, h->cap / 2);  // a failed shrink keeps the rows
    return 0;
}

kv_view kv_store_k(const kv_store *s, int64_t layer, int64_t head) {
    return (kv_view){.data = kv_store_head_at(s, layer, head)->k, .elem = s->elem, .head_stride = 0};
}

kv_view kv_store_v(const kv_store *s, int64_t layer, int64_t head) {
    return (kv_view){.data = kv_store_head_at(s, layer, head)->v, .elem = s->elem, .head_stride = 0};
}

int64_t kv_store_rows(const kv_store *s) {
    int64_t n = 0;
    for (int64_t i = 0; s->heads && i < s->n_layer * s->n_heads; i++) n += s->heads[i].count;
    return n;
}

size_t kv_store_bytes_held(const kv_store *s) { return (size_t)kv_store_rows(s) * 2 * kv_store_row_bytes(s); }

size_t kv_store_bytes_allocated(const kv_store *s) {
    size_t b = 0;
    for (int64_t i = 0; s->heads && i < s->n_layer * s->n_heads; i++)
        b += (size_t)s->heads[i].cap * (2 * kv_store_row_bytes(s) + sizeof(int64_t) + sizeof(float));
    return b;
}
