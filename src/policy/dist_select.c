#include "policy/dist_select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int dist_scratch_init(dist_scratch *s, const backend *be, int n_ranks, rc_err *err) {
    memset(s, 0, sizeof(*s));
    s->be = be;
    s->n_ranks = n_ranks;
    const size_t R = (size_t)n_ranks;
    s->edge_n = calloc(R, sizeof(int64_t));
    s->edge_off = calloc(R + 1, sizeof(int64_t));
    s->cursor = calloc(R, sizeof(int64_t));
    s->sizes = calloc(R, sizeof(int64_t));
    s->counts = calloc(R, sizeof(size_t));
    if (!s->edge_n || !s->edge_off || !s->cursor || !s->sizes || !s->counts) {
        dist_scratch_free(s);
        return rc_fail(err, "out of memory for selection buffers");
    }
    return 0;
}

void dist_scratch_free(dist_scratch *s) {
    free(s->edge_n); free(s->edge_off); free(s->cursor); free(s->sizes); free(s->counts);
    free(s->runs); free(s->edge_pos); free(s->idx_dst); free(s->idx_src); free(s->ext_of_local); free(s->halo);
    free(s->my_counts); free(s->all_counts); free(s->mine); free(s->all); free(s->tmp);
    const backend *be = s->be;
    if (be) {
        if (s->send) be->ops->free(be, s->send);
        if (s->recv) be->ops->free(be, s->recv);
        if (s->ext) be->ops->free(be, s->ext);
        if (s->ext_pooled) be->ops->free(be, s->ext_pooled);
    }
    memset(s, 0, sizeof(*s));
}

// Grows a host array to at least n elements, geometrically, so a decode loop
// whose sizes creep up by one position a step stops reallocating.
static int grow_host(void **p, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap) return 0;
    size_t c = *cap + *cap / 2;
    if (c < n) c = n;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int grow_dev(const backend *be, float **p, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    size_t c = *cap + *cap / 2;
    if (c < n) c = n;
    if (*p) be->ops->free(be, *p);
    *p = be->ops->alloc(be, c * sizeof(float));
    *cap = *p ? c : 0;
    return *p ? 0 : -1;
}

#define GROW(s, field, n) grow_host((void **)&(s)->field, &(s)->cap_##field, (size_t)(n) + 1, sizeof(*(s)->field))
#define GROW_DEV(s, field, n) grow_dev((s)->be, &(s)->field, &(s)->cap_##field, (size_t)(n) + 1)

int64_t dist_find_pos(const int64_t *a, int64_t n, int64_t pos) {
    // One rank's positions are its slots (a[j] = j): no search. Ascending and
    // unique, so a hit here is the only one.
    if (pos >= 0 && pos < n && a[pos] == pos) return pos;
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < pos) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == pos ? lo : -1;
}

// Halo entries sort by position; halo[2i] = position, halo[2i+1] = its row in recv.
static int cmp_halo(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

// pooled = max-pool of agg over global positions, exactly as one process
// would compute it: the scores of other ranks' positions within kernel/2 of
// an ownership boundary arrive by one all-gather whose sizes every rank
// derives from the shard plan; each rank then pools one row per head that
// holds its own positions and that halo, in position order.
int dist_maxpool(dist_scratch *s, const float *agg, float *pooled, int64_t n_rows, int64_t kernel,
                 const shard_ctx *sh, comm *cm, rc_err *err) {
    const backend *be = s->be;
    const int64_t n = sh->n_local, KV = n_rows, half = kernel / 2;
    const int R = cm->size, me = cm->rank;
    if (R == 1) {
        be->ops->maxpool_rows(be, pooled, agg, KV, n, kernel);
        return 0;
    }
    if (GROW(s, runs, shard_max_runs(sh->plan, sh->n_total))) goto oom;
    const int64_t n_runs = shard_runs(sh->plan, sh->n_total, s->runs);
    // Edge positions of each run: within `half` of a neighbouring run.
    for (int pass = 0; pass < 2; pass++) {
        for (int r = 0; pass == 0 && r < R; r++) s->edge_n[r] = 0;
        for (int64_t i = 0; i < n_runs; i++) {
            const int64_t st = s->runs[i].start, e = s->runs[i].end;
            const int64_t lo_end = i > 0 ? (st + half < e ? st + half : e) : st;
            const int64_t hi_start = i + 1 < n_runs ? (e - half > st ? e - half : st) : e;
            // [st, lo_end) and [max(hi_start, lo_end), e): ascending, no repeats.
            for (int64_t p = st; p < e; p++) {
                if (p == lo_end && hi_start > p) p = hi_start;
                if (p >= e) break;
                if (pass == 0) s->edge_n[s->runs[i].owner]++;
                else s->edge_pos[s->cursor[s->runs[i].owner]++] = p;
            }
        }
        if (pass == 0) {
            s->edge_off[0] = 0;
            for (int r = 0; r < R; r++) s->edge_off[r + 1] = s->edge_off[r] + s->edge_n[r];
            if (GROW(s, edge_pos, s->edge_off[R])) goto oom;
            for (int r = 0; r < R; r++) s->cursor[r] = s->edge_off[r];
        }
    }
    const int64_t E = s->edge_off[R], n_mine = s->edge_n[me], n_halo = E - n_mine, n_ext = n + n_halo;
    if (GROW_DEV(s, send, n_mine * KV) || GROW_DEV(s, recv, E * KV) || GROW_DEV(s, ext, n_ext * KV) ||
        GROW_DEV(s, ext_pooled, n_ext * KV) || GROW(s, halo, 2 * n_halo) || GROW(s, ext_of_local, n) ||
        GROW(s, idx_dst, n_ext * KV) || GROW(s, idx_src, n_ext * KV))
        goto oom;
    // This rank's edge scores: send[i, h] = agg[h, j(i)].
    for (int64_t i = 0; i < n_mine; i++) {
        const int64_t p = s->edge_pos[s->edge_off[me] + i], j = dist_find_pos(sh->slot_pos, n, p);
        if (j < 0) return rc_fail(err, "max-pool: rank %d does not hold position %lld it owns", me, (long long)p);
        for (int64_t h = 0; h < KV; h++) {
            s->idx_dst[i * KV + h] = i * KV + h;
            s->idx_src[i * KV + h] = h * n + j;
        }
    }
    be->ops->copy_rows(be, s->send, s->idx_dst, agg, s->idx_src, n_mine * KV, sizeof(float));
    for (int r = 0; r < R; r++) s->counts[r] = (size_t)(s->edge_n[r] * KV) * sizeof(float);
    if (comm_allgatherv_buf(cm, be, s->send, s->counts, s->recv, err)) return -1;
    if (n_halo == 0) {  // nothing of ours near a boundary
        be->ops->maxpool_rows(be, pooled, agg, KV, n, kernel);
        return 0;
    }
    int64_t t = 0;
    for (int r = 0; r < R; r++)
        if (r != me)
            for (int64_t i = s->edge_off[r]; i < s->edge_off[r + 1]; i++, t++) {
                s->halo[2 * t] = s->edge_pos[i];
                s->halo[2 * t + 1] = i;
            }
    qsort(s->halo, (size_t)n_halo, 2 * sizeof(int64_t), cmp_halo);
    // Extended rows (KV, n_ext): our positions and the halo merged by position.
    int64_t a = 0, b = 0, x = 0, n_from_agg = 0;
    int64_t *dst_h = s->idx_dst + n * KV, *src_h = s->idx_src + n * KV;  // halo part of the lists
    while (a < n || b < n_halo) {
        if (b >= n_halo || (a < n && sh->slot_pos[a] < s->halo[2 * b])) {
            for (int64_t h = 0; h < KV; h++) {
                s->idx_dst[n_from_agg] = h * n_ext + x;
                s->idx_src[n_from_agg++] = h * n + a;
            }
            s->ext_of_local[a++] = x++;
        } else {
            for (int64_t h = 0; h < KV; h++) {
                dst_h[b * KV + h] = h * n_ext + x;
                src_h[b * KV + h] = s->halo[2 * b + 1] * KV + h;
            }
            b++, x++;
        }
    }
    be->ops->copy_rows(be, s->ext, s->idx_dst, agg, s->idx_src, n * KV, sizeof(float));
    be->ops->copy_rows(be, s->ext, dst_h, s->recv, src_h, n_halo * KV, sizeof(float));
    be->ops->maxpool_rows(be, s->ext_pooled, s->ext, KV, n_ext, kernel);
    for (int64_t j = 0; j < n; j++)
        for (int64_t h = 0; h < KV; h++) {
            s->idx_dst[j * KV + h] = h * n + j;
            s->idx_src[j * KV + h] = h * n_ext + s->ext_of_local[j];
        }
    be->ops->copy_rows(be, pooled, s->idx_dst, s->ext_pooled, s->idx_src, n * KV, sizeof(float));
    return 0;
oom:
    return rc_fail(err, "out of memory pooling attention scores");
}

int dist_merge_lists(dist_scratch *s, const scored_pos *all, const int64_t *all_counts, int R, int64_t n_heads,
                     const int64_t *k, int64_t k_max, scored_pos *out, int64_t *n_out, rc_err *err) {
    int64_t total = 0;
    for (int64_t i = 0; i < R * n_heads; i++) total += all_counts[i];
    if (GROW(s, tmp, total)) return rc_fail(err, "out of memory merging selections");
    for (int64_t h = 0; h < n_heads; h++) {
        int64_t t = 0, off = 0;
        for (int r = 0; r < R; r++) {  // rank r's list for head h sits after its lists for heads < h
            int64_t before = 0, block = 0;
            for (int64_t g = 0; g < n_heads; g++) {
                if (g < h) before += all_counts[r * n_heads + g];
                block += all_counts[r * n_heads + g];
            }
            s->sizes[r] = all_counts[r * n_heads + h];
            memcpy(s->tmp + t, all + off + before, (size_t)s->sizes[r] * sizeof(scored_pos));
            t += s->sizes[r];
            off += block;
        }
        n_out[h] = merge_topk(s->tmp, s->sizes, R, k[h], out + h * k_max);
    }
    return 0;
}

int dist_topk(dist_scratch *s, const float *scores, int64_t ld, int64_t n_heads, const int64_t *k, int64_t k_max,
              int64_t pos_limit, const shard_ctx *sh, comm *cm, scored_pos *out, int64_t *n_out, rc_err *err) {
    const backend *be = s->be;
    const int R = cm->size;
    const int64_t n = sh->n_local;
    int64_t n_cand = 0;  // slot_pos ascends: candidates are a prefix
    while (n_cand < n && sh->slot_pos[n_cand] < pos_limit) n_cand++;
    if (GROW(s, my_counts, n_heads) || GROW(s, all_counts, R * n_heads)) goto oom;
    int64_t my_total = 0;
    for (int64_t h = 0; h < n_heads; h++) {
        if (k[h] > k_max)
            return rc_fail(err, "selection: head %lld asks for %lld entries, more than %lld", (long long)h,
                           (long long)k[h], (long long)k_max);
        s->my_counts[h] = n_cand < k[h] ? n_cand : k[h];
        my_total += s->my_counts[h];
    }
    if (R == 1) {
        be->ops->topk_rows(be, out, n_out, scores, sh->slot_pos, n_heads, n_cand, ld, s->my_counts, k_max, 0);
        return 0;
    }
    if (GROW(s, tmp, n_heads * k_max) || GROW(s, mine, my_total)) goto oom;
    be->ops->topk_rows(be, s->tmp, s->all_counts, scores, sh->slot_pos, n_heads, n_cand, ld, s->my_counts, k_max, 0);
    memset(s->mine, 0, (size_t)(my_total + 1) * sizeof(scored_pos));  // no stray padding on the wire
    for (int64_t h = 0, off = 0; h < n_heads; h++) {
        for (int64_t i = 0; i < s->my_counts[h]; i++) s->mine[off + i] = s->tmp[h * k_max + i];
        off += s->my_counts[h];
    }
    if (comm_allgather(cm, s->my_counts, (size_t)n_heads * sizeof(int64_t), s->all_counts, err)) return -1;
    int64_t total = 0;
    for (int r = 0; r < R; r++) {
        int64_t t = 0;
        for (int64_t h = 0; h < n_heads; h++) t += s->all_counts[r * n_heads + h];
        s->counts[r] = (size_t)t * sizeof(scored_pos);
        total += t;
    }
    if (GROW(s, all, total)) goto oom;
    if (comm_allgatherv(cm, s->mine, s->counts, s->all, err)) return -1;
    return dist_merge_lists(s, s->all, s->all_counts, R, n_heads, k, k_max, out, n_out, err);
oom:
    return rc_fail(err, "out of memory selecting positions");
}
