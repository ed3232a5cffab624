#include "kv/kv_exchange.h"

#include <stdlib.h>
#include <string.h>

void kv_exchange_free(kv_exchange *x) {
    const backend *be = x->be;
    if (be) {
        if (x->send) be->ops->free(be, x->send);
        if (x->recv) be->ops->free(be, x->recv);
        if (x->full) be->ops->free(be, x->full);
    }
    free(x->pack_dst); free(x->pack_src); free(x->unpack_dst); free(x->unpack_src); free(x->counts);
    memset(x, 0, sizeof(*x));
}

int kv_exchange_init(kv_exchange *x, const backend *be, const shard_plan *plan, int rank, const kv_cache *kv,
                     int64_t slot0, rc_err *err) {
    memset(x, 0, sizeof(*x));
    const int64_t H = kv->n_kv_heads, n = plan->n_prompt, L = shard_prompt_count(plan, rank);
    const int R = plan->n_ranks;
    x->be = be;
    x->n_total = n;
    x->n_local = L;
    x->n_kv_heads = H;
    x->head_dim = kv->head_dim;
    x->elem = kv->elem;
    x->row_bytes = kv_cache_row_bytes(kv);
    const size_t pos_bytes = 2 * (size_t)H * x->row_bytes;  // one position's K and V
    x->send = be->ops->alloc(be, (size_t)L * pos_bytes);
    x->recv = be->ops->alloc(be, (size_t)n * pos_bytes);
    x->full = be->ops->alloc(be, (size_t)n * pos_bytes);
    x->pack_dst = malloc((size_t)(L * H + 1) * sizeof(int64_t));
    x->pack_src = malloc((size_t)(L * H + 1) * sizeof(int64_t));
    x->unpack_dst = malloc((size_t)(n * H + 1) * sizeof(int64_t));
    x->unpack_src = malloc((size_t)(n * H + 1) * sizeof(int64_t));
    x->counts = malloc((size_t)R * sizeof(size_t));
    x->n_bytes = (size_t)(2 * n + L) * pos_bytes;
    if (!x->send || !x->recv || !x->full || !x->pack_dst || !x->pack_src || !x->unpack_dst || !x->unpack_src ||
        !x->counts) {
        kv_exchange_free(x);
        return rc_fail(err, "out of memory for the prefill K/V exchange (%zu MiB)",
                       (size_t)(2 * n + L) * pos_bytes >> 20);
    }
    for (int r = 0; r < R; r++) x->counts[r] = (size_t)shard_prompt_count(plan, r) * pos_bytes;
    // Pack: position i's K row of head h -> send row 2Hi + h, its V row -> 2Hi + H + h
    // (the V list adds H to dst and uses the V buffer; the source rows are the same).
    for (int64_t i = 0; i < L; i++)
        for (int64_t h = 0; h < H; h++) {
            x->pack_dst[i * H + h] = 2 * H * i + h;
            x->pack_src[i * H + h] = kv_cache_row_index(kv, 0, h, slot0 + i);  // layer 0; shifted per layer
        }
    // Unpack: recv holds rank 0's positions ascending, then rank 1's, ...;
    // position p's K row of head h goes to full row h * n + p (V: (H + h) * n + p).
    int64_t at = 0;
    for (int r = 0; r < R; r++) {
        shard_ranges rr = shard_prompt_ranges(plan, r);
        for (int s = 0; s < rr.n; s++)
            for (int64_t p = rr.start[s]; p < rr.end[s]; p++, at++)
                for (int64_t h = 0; h < H; h++) {
                    x->unpack_dst[at * H + h] = h * n + p;
                    x->unpack_src[at * H + h] = 2 * H * at + h;
                }
    }
    return 0;
}

// Shifts an index list by `delta` rows.
static void shift(int64_t *idx, int64_t n, int64_t delta) {
    for (int64_t i = 0; i < n; i++) idx[i] += delta;
}

int kv_exchange_layer(kv_exchange *x, const kv_cache *kv, int64_t layer, comm *cm, kv_view *k, kv_view *v,
                      rc_err *err) {
    const backend *be = x->be;
    const int64_t H = x->n_kv_heads, L = x->n_local, n = x->n_total;
    const int64_t layer_rows = kv_cache_row_index(kv, layer, 0, 0);
    // Pack K, then V (dst rows + H), from this layer.
    shift(x->pack_src, L * H, layer_rows);
    be->ops->copy_rows(be, x->send, x->pack_dst, kv->k, x->pack_src, L * H, x->row_bytes);
    shift(x->pack_dst, L * H, H);
    be->ops->copy_rows(be, x->send, x->pack_dst, kv->v, x->pack_src, L * H, x->row_bytes);
    shift(x->pack_dst, L * H, -H);
    shift(x->pack_src, L * H, -layer_rows);
    if (comm_allgatherv_buf(cm, be, x->send, x->counts, x->recv, err)) return -1;
    be->ops->copy_rows(be, x->full, x->unpack_dst, x->recv, x->unpack_src, n * H, x->row_bytes);
    shift(x->unpack_dst, n * H, H * n);
    shift(x->unpack_src, n * H, H);
    be->ops->copy_rows(be, x->full, x->unpack_dst, x->recv, x->unpack_src, n * H, x->row_bytes);
    shift(x->unpack_dst, n * H, -H * n);
    shift(x->unpack_src, n * H, -H);
    const size_t v_off = (size_t)(H * n) * x->row_bytes;
    *k = (kv_view){.data = x->full, .elem = x->elem, .head_stride = n * x->head_dim};
    *v = (kv_view){.data = (const uint8_t *)x->full + v_off, .elem = x->elem, .head_stride = n * x->head_dim};
    return 0;
}

int kv_share_window(const backend *be, comm *cm, const shard_plan *plan, int64_t win_start, int64_t win_n, float *q,
                    float *lse, int64_t n_layer, int64_t stride, int64_t q_dim, int64_t n_head, rc_err *err) {
    const int R = cm->size;
    // One position's block: its q rows of every layer, then its lse rows.
    const int64_t per_pos = n_layer * (q_dim + n_head);
    const size_t q_pitch = (size_t)(stride * q_dim) * sizeof(float), l_pitch = (size_t)(stride * n_head) * sizeof(float);
    size_t *counts = calloc((size_t)R, sizeof(size_t));
    float *send = be->ops->alloc(be, (size_t)(win_n * per_pos) * sizeof(float));
    float *recv = be->ops->alloc(be, (size_t)(win_n * per_pos) * sizeof(float));
    int rc = -1;
    if (!counts || !send || !recv) {
        rc_fail(err, "out of memory sharing the prompt window");
        goto done;
    }
    int64_t n_mine = 0;
    for (int64_t w = 0; w < win_n; w++) {
        const int owner = shard_owner(plan, win_start + w);
        counts[owner] += (size_t)per_pos * sizeof(float);
        if (owner != cm->rank) continue;
        float *dst = send + n_mine++ * per_pos;
        be->ops->copy_2d(be, dst, (size_t)q_dim * sizeof(float), q + w * q_dim, q_pitch, (size_t)q_dim * sizeof(float),
                         n_layer);
        be->ops->copy_2d(be, dst + n_layer * q_dim, (size_t)n_head * sizeof(float), lse + w * n_head, l_pitch,
                         (size_t)n_head * sizeof(float), n_layer);
    }
    if (comm_allgatherv_buf(cm, be, send, counts, recv, err)) goto done;
    // recv: rank 0's positions ascending, then rank 1's, ...
    const float *src = recv;
    for (int r = 0; r < R; r++)
        for (int64_t w = 0; w < win_n; w++) {
            if (shard_owner(plan, win_start + w) != r) continue;
            be->ops->copy_2d(be, q + w * q_dim, q_pitch, src, (size_t)q_dim * sizeof(float),
                             (size_t)q_dim * sizeof(float), n_layer);
            be->ops->copy_2d(be, lse + w * n_head, l_pitch, src + n_layer * q_dim, (size_t)n_head * sizeof(float),
                             (size_t)n_head * sizeof(float), n_layer);
            src += per_pos;
        }
    rc = 0;
done:
    free(counts);
    if (send) be->ops->free(be, send);
    if (recv) be->ops->free(be, recv);
    return rc;
}
