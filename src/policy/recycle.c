#include "policy/recycle.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

recycle_opts recycle_default_opts(void) {
    return (recycle_opts){.k = 1024, .schedule = RECYCLE_STRIDE, .stride = 10, .check_every = 5, .similarity = 0.9,
                          .group_agg = GROUP_AGG_MAX, .pool_kernel = 7};
}

const char *recycle_schedule_name(int schedule) { return schedule == RECYCLE_DYNAMIC ? "dynamic" : "stride"; }

const char *group_agg_name(int agg) {
    return agg == GROUP_AGG_MEAN ? "mean" : agg == GROUP_AGG_FIRST ? "first" : "max";
}

int recycle_opts_validate(const recycle_opts *o, int64_t n_ctx, rc_err *err) {
    if (o->k < 1) return rc_fail(err, "--recycle-k must be at least 1 (got %lld)", (long long)o->k);
    if (o->k > n_ctx)
        return rc_fail(err, "--recycle-k %lld exceeds the context size %lld (--ctx)", (long long)o->k, (long long)n_ctx);
    if (o->schedule != RECYCLE_STRIDE && o->schedule != RECYCLE_DYNAMIC)
        return rc_fail(err, "unknown recycle schedule %d", o->schedule);
    if (o->stride < 1) return rc_fail(err, "--recycle-stride must be at least 1 (got %lld)", (long long)o->stride);
    if (o->check_every < 1)
        return rc_fail(err, "--recycle-check-every must be at least 1 (got %lld)", (long long)o->check_every);
    if (!(o->similarity >= -1.0 && o->similarity <= 1.0))
        return rc_fail(err, "--recycle-similarity must lie in [-1, 1] (got %g)", o->similarity);
    if (o->group_agg != GROUP_AGG_MAX && o->group_agg != GROUP_AGG_MEAN && o->group_agg != GROUP_AGG_FIRST)
        return rc_fail(err, "unknown GQA aggregation %d", o->group_agg);
    if (o->pool_kernel < 1 || o->pool_kernel % 2 == 0)
        return rc_fail(err, "--recycle-pool must be an odd number >= 1 (got %lld)", (long long)o->pool_kernel);
    return 0;
}

int recycle_init(recycle_state *rs, const recycle_opts *o, int64_t n_layer, int64_t n_head, int64_t n_kv,
                 int64_t head_dim, int64_t n_ctx, int kv_elem, rc_err *err) {
    memset(rs, 0, sizeof(*rs));
    if (recycle_opts_validate(o, n_ctx, err)) return -1;
    rs->o = *o;
    rs->n_layer = n_layer;
    rs->n_head = n_head;
    rs->n_kv = n_kv;
    rs->head_dim = head_dim;
    rs->n_ctx = n_ctx;
    rs->n_threads = 1;
    if (recycle_cache_init(&rs->cache, n_layer, n_kv, head_dim, o->k, kv_elem, err)) return -1;
    rs->saved_query = calloc((size_t)(n_layer * head_dim), sizeof(float));
    rs->built = calloc((size_t)n_layer, 1);
    rs->lists = malloc((size_t)(n_kv * o->k) * sizeof(scored_pos));
    rs->merged = malloc((size_t)(n_kv * o->k) * sizeof(scored_pos));
    rs->old_slot = calloc((size_t)n_ctx, sizeof(int32_t));
    if (!rs->saved_query || !rs->built || !rs->lists || !rs->merged || !rs->old_slot) {
        recycle_free(rs);
        return rc_fail(err, "out of memory for recycled attention");
    }
    return 0;
}

void recycle_free(recycle_state *rs) {
    recycle_cache_free(&rs->cache);
    free(rs->saved_query); free(rs->built); free(rs->probs); free(rs->agg); free(rs->pooled); free(rs->cand);
    free(rs->lists); free(rs->merged); free(rs->old_slot);
    memset(rs, 0, sizeof(*rs));
}

void recycle_reset(recycle_state *rs) {
    recycle_cache_clear(&rs->cache);
    memset(rs->built, 0, (size_t)rs->n_layer);
    rs->step = 0;
    rs->decision_hash = 0;
    rs->stats = (recycle_stats){0};
}

int recycle_reserve(recycle_state *rs, int64_t cap_local, rc_err *err) {
    if (cap_local <= rs->cap_local) return 0;
    free(rs->probs); free(rs->agg); free(rs->pooled); free(rs->cand);
    rs->probs = malloc((size_t)(rs->n_head * cap_local) * sizeof(float));
    rs->agg = malloc((size_t)(rs->n_kv * cap_local) * sizeof(float));
    rs->pooled = malloc((size_t)(rs->n_kv * cap_local) * sizeof(float));
    rs->cand = malloc((size_t)(rs->n_kv * cap_local) * sizeof(scored_pos));
    if (!rs->probs || !rs->agg || !rs->pooled || !rs->cand) {
        rs->cap_local = 0;
        return rc_fail(err, "out of memory for recycled-attention scores (%lld keys)", (long long)cap_local);
    }
    rs->cap_local = cap_local;
    return 0;
}

void recycle_begin_step(recycle_state *rs) { rs->step++; }

void recycle_mean_query(const recycle_state *rs, const float *q, float *out) {
    const int64_t hd = rs->head_dim;
    for (int64_t i = 0; i < hd; i++) {
        double acc = 0.0;
        for (int64_t h = 0; h < rs->n_head; h++) acc += q[h * hd + i];
        out[i] = (float)(acc / (double)rs->n_head);
    }
}

static double cosine(const float *a, const float *b, int64_t n) {
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0.0 || bb == 0.0) return 0.0;
    double c = ab / sqrt(aa * bb);
    return c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;  // rounding must not put 1.0 out of reach
}

int recycle_layer_is_full(recycle_state *rs, int64_t layer, const float *query_mean) {
    int full;
    if (!rs->built[layer]) full = 1;
    else if (rs->o.schedule == RECYCLE_STRIDE) full = rs->step % rs->o.stride == 0;
    else
        full = rs->step % rs->o.check_every == 0 &&
               cosine(query_mean, rs->saved_query + layer * rs->head_dim, rs->head_dim) <= rs->o.similarity;
    const int64_t words[3] = {rs->step, layer, full};
    rs->decision_hash = fnv1a(rs->decision_hash ? rs->decision_hash : FNV1A_INIT, words, sizeof(words));
    return full;
}

// ---- rebuild -----------------------------------------------------------------

// Index of pos in the ascending array a[0..n), or -1.
static int64_t find_pos(const int64_t *a, int64_t n, int64_t pos) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < pos) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == pos ? lo : -1;
}

typedef struct halo_entry {
    int64_t pos;
    const float *vals;  // (n_kv)
} halo_entry;

static int cmp_halo(const void *a, const void *b) {
    const halo_entry *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

// pooled = max-pool of agg over global positions, exactly as one process
// would compute it: the scores of other ranks' positions within kernel/2 of
// an ownership boundary arrive by one all-gather whose sizes every rank
// derives from the shard plan.
static int pool_with_halo(recycle_state *rs, const shard_ctx *sh, comm *cm, rc_err *err) {
    const int64_t n = sh->n_local, KV = rs->n_kv, half = rs->o.pool_kernel / 2;
    const int R = cm->size, me = cm->rank;
    int rc = -1;
    shard_run *runs = malloc((size_t)shard_max_runs(sh->plan, sh->n_total) * sizeof(shard_run));
    int64_t *edge_n = calloc((size_t)R, sizeof(int64_t)), *edge_off = calloc((size_t)R + 1, sizeof(int64_t));
    size_t *counts = malloc((size_t)R * sizeof(size_t));
    int64_t *edge_pos = NULL, *cursor = NULL;
    float *send = NULL, *recv = NULL, *ext_val = NULL;
    halo_entry *halo = NULL;
    float *pool_row = NULL;
    int64_t *ext_of_local = NULL;
    if (!runs || !edge_n || !edge_off || !counts) goto oom;
    const int64_t n_runs = shard_runs(sh->plan, sh->n_total, runs);
    // Edge positions of each run: within `half` of a neighbouring run.
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < n_runs; i++) {
            const int64_t s = runs[i].start, e = runs[i].end;
            const int64_t lo_end = i > 0 ? (s + half < e ? s + half : e) : s;
            const int64_t hi_start = i + 1 < n_runs ? (e - half > s ? e - half : s) : e;
            // [s, lo_end) and [max(hi_start, lo_end), e): ascending, no repeats.
            for (int64_t p = s; p < e; p++) {
                if (p == lo_end && hi_start > p) p = hi_start;
                if (p >= e) break;
                if (pass == 0) edge_n[runs[i].owner]++;
                else edge_pos[cursor[runs[i].owner]++] = p;
            }
        }
        if (pass == 0) {
            for (int r = 0; r < R; r++) edge_off[r + 1] = edge_off[r] + edge_n[r];
            edge_pos = malloc((size_t)(edge_off[R] + 1) * sizeof(int64_t));
            cursor = malloc((size_t)R * sizeof(int64_t));
            if (!edge_pos || !cursor) goto oom;
            for (int r = 0; r < R; r++) cursor[r] = edge_off[r];
        }
    }
    const int64_t E = edge_off[R];
    send = malloc((size_t)(edge_n[me] * KV + 1) * sizeof(float));
    recv = malloc((size_t)(E * KV + 1) * sizeof(float));
    halo = malloc((size_t)(E + 1) * sizeof(halo_entry));
    pool_row = malloc((size_t)(n + E + 1) * sizeof(float));
    ext_val = malloc((size_t)((n + E) * KV + 1) * sizeof(float));
    ext_of_local = malloc((size_t)(n + 1) * sizeof(int64_t));
    if (!send || !recv || !halo || !pool_row || !ext_val || !ext_of_local) goto oom;
    for (int64_t i = 0; i < edge_n[me]; i++) {
        int64_t j = find_pos(sh->slot_pos, n, edge_pos[edge_off[me] + i]);
        for (int64_t h = 0; h < KV; h++) send[i * KV + h] = j >= 0 ? rs->agg[h * n + j] : NAN;
    }
    if (R > 1) {
        for (int r = 0; r < R; r++) counts[r] = (size_t)(edge_n[r] * KV) * sizeof(float);
        if (comm_allgatherv(cm, send, counts, recv, err)) goto done;
    }
    // Other ranks' edges, sorted, merged with this rank's positions into one
    // ascending row per KV head. Every position within kernel/2 of one of ours
    // is in that row, so a window of `kernel` entries around ours covers
    // exactly the positions it would in the whole sequence (cut at its ends).
    int64_t n_halo = 0;
    for (int r = 0; r < R; r++)
        if (r != me)
            for (int64_t i = edge_off[r]; i < edge_off[r + 1]; i++)
                halo[n_halo++] = (halo_entry){edge_pos[i], recv + i * KV};
    if (n_halo == 0) {  // one rank, or nothing of ours near a boundary
#pragma omp parallel for schedule(static, 1) num_threads(rs->n_threads)
        for (int64_t h = 0; h < KV; h++) maxpool1d(rs->agg + h * n, n, rs->o.pool_kernel, rs->pooled + h * n);
    } else {
        qsort(halo, (size_t)n_halo, sizeof(halo_entry), cmp_halo);
        const int64_t n_ext = n + n_halo;
        int64_t a = 0, b = 0, x = 0;
        while (a < n || b < n_halo) {
            if (b >= n_halo || (a < n && sh->slot_pos[a] < halo[b].pos)) {
                for (int64_t h = 0; h < KV; h++) ext_val[h * n_ext + x] = rs->agg[h * n + a];
                ext_of_local[a++] = x++;
            } else {
                for (int64_t h = 0; h < KV; h++) ext_val[h * n_ext + x] = halo[b].vals[h];
                b++, x++;
            }
        }
        for (int64_t h = 0; h < KV; h++) {
            maxpool1d(ext_val + h * n_ext, n_ext, rs->o.pool_kernel, pool_row);
            for (int64_t j = 0; j < n; j++) rs->pooled[h * n + j] = pool_row[ext_of_local[j]];
        }
    }
    rc = 0;
    goto done;
oom:
    rc_fail(err, "out of memory pooling recycled-attention scores");
done:
    free(runs); free(edge_n); free(edge_off); free(counts); free(edge_pos); free(cursor);
    free(send); free(recv); free(halo); free(pool_row); free(ext_val); free(ext_of_local);
    return rc;
}

// A selected row that the cache does not hold yet.
typedef struct row_need {
    int64_t kv_head, slot, pos;
    int owner;
} row_need;

int recycle_rebuild(recycle_state *rs, int64_t layer, const float *raw, const float *lse, const float *query_mean,
                    const shard_ctx *sh, comm *cm, rc_err *err) {
    const int64_t n = sh->n_local, H = rs->n_head, KV = rs->n_kv, group = H / KV, K = rs->o.k;
    const int R = cm->size, me = cm->rank;
    if (recycle_reserve(rs, n > 0 ? n : 1, err)) return -1;

    // 1-2: exact global probabilities, combined over each KV group. Max and
    // first commute with exp (monotone), and so do max-pooling and ranking:
    // those work on log-probabilities s - lse and exponentiate only the K
    // survivors. The mean needs the probabilities themselves.
    const int log_space = rs->o.group_agg != GROUP_AGG_MEAN;
    if (log_space) {
#pragma omp parallel for schedule(static, 1) num_threads(rs->n_threads)
        for (int64_t kh = 0; kh < KV; kh++) {
            float *out = rs->agg + kh * n;
            const int64_t g_end = rs->o.group_agg == GROUP_AGG_FIRST ? 1 : group;
            for (int64_t g = 0; g < g_end; g++) {
                const int64_t h = kh * group + g;
                const float l = lse[h] == -INFINITY ? INFINITY : lse[h];  // no keys anywhere: every p is 0
                const float *r = raw + h * n;
                if (g == 0)
                    for (int64_t j = 0; j < n; j++) out[j] = r[j] - l;
                else
                    for (int64_t j = 0; j < n; j++) out[j] = r[j] - l > out[j] ? r[j] - l : out[j];
            }
        }
    } else {
        for (int64_t h = 0; h < H; h++) {
            const float l = lse[h];
            for (int64_t j = 0; j < n; j++) rs->probs[h * n + j] = l == -INFINITY ? 0.0f : expf(raw[h * n + j] - l);
        }
        for (int64_t kh = 0; kh < KV; kh++)
            aggregate_group(rs->probs + kh * group * n, group, n, rs->o.group_agg, rs->agg + kh * n);
    }
    // 3: max-pool over neighbouring positions.
    const float *scores = rs->agg;
    if (rs->o.pool_kernel > 1) {
        if (pool_with_halo(rs, sh, cm, err)) return -1;
        scores = rs->pooled;
    }

    // 4: local top-K per KV head, all-gathered, merged the same way everywhere.
    int rc = -1;
    const int64_t k_me = n < K ? n : K;
    int64_t *k_of = calloc((size_t)R, sizeof(int64_t));
    size_t *counts = malloc((size_t)R * sizeof(size_t));
    scored_pos *all = NULL, *tmp = malloc((size_t)(R * K + 1) * sizeof(scored_pos));
    row_need *need = NULL;
    uint8_t *send = NULL, *recv = NULL;
    int64_t *sizes = malloc((size_t)R * sizeof(int64_t)), *cursor = malloc((size_t)R * sizeof(int64_t));
    uint8_t *used = calloc((size_t)K, 1);
    if (!k_of || !counts || !tmp || !sizes || !cursor || !used) goto oom;
    int64_t total = 0;
    for (int r = 0; r < R; r++) {
        int64_t nl = R == 1 ? n : shard_local_count(sh->plan, r, sh->n_total);
        k_of[r] = nl < K ? nl : K;
        counts[r] = (size_t)(KV * k_of[r]) * sizeof(scored_pos);
        total += KV * k_of[r];
    }
    if (k_of[me] != k_me) {
        rc_fail(err, "recycled attention: rank %d holds %lld positions, the shard plan says %lld", me, (long long)n,
                (long long)(R == 1 ? n : shard_local_count(sh->plan, me, sh->n_total)));
        goto done;
    }
    memset(rs->lists, 0, (size_t)(KV * k_me) * sizeof(scored_pos));  // no uninitialized padding on the wire
#pragma omp parallel for schedule(static, 1) num_threads(rs->n_threads)
    for (int64_t h = 0; h < KV; h++) {
        scored_pos *cand = rs->cand + h * n;
        for (int64_t j = 0; j < n; j++) cand[j] = (scored_pos){.score = scores[h * n + j], .pos = sh->slot_pos[j]};
        select_topk(cand, n, K, rs->lists + h * k_me);
    }
    all = rs->lists;
    if (R > 1) {
        if (!(all = malloc((size_t)(total + 1) * sizeof(scored_pos)))) goto oom;
        if (comm_allgatherv(cm, rs->lists, counts, all, err)) goto done;
    }
    int64_t n_sel = -1;
    for (int64_t h = 0; h < KV; h++) {
        if (R == 1) {  // one list: it is the merge
            n_sel = k_me;
            memcpy(rs->merged + h * K, rs->lists + h * k_me, (size_t)k_me * sizeof(scored_pos));
            continue;
        }
        int64_t off = 0, t = 0;
        for (int r = 0; r < R; r++) {  // rank r's list for head h, then the next rank's
            memcpy(tmp + t, all + off + h * k_of[r], (size_t)k_of[r] * sizeof(scored_pos));
            t += k_of[r];
            off += KV * k_of[r];
            sizes[r] = k_of[r];
        }
        int64_t m = merge_topk(tmp, sizes, R, K, rs->merged + h * K);
        if (n_sel >= 0 && m != n_sel) {
            rc_fail(err, "recycled attention: heads selected different counts");
            goto done;
        }
        n_sel = m;
    }

    // 5: rows. Kept rows stay in their slots; new rows take the freed slots.
    recycle_cache *c = &rs->cache;
    const int64_t old_count = c->count[layer];
    if (n_sel < old_count) {
        rc_fail(err, "recycled attention: a rebuild selected %lld rows, fewer than the %lld held", (long long)n_sel,
                (long long)old_count);
        goto done;
    }
    if (!(need = malloc((size_t)(KV * n_sel + 1) * sizeof(row_need)))) goto oom;
    int64_t n_need = 0, n_reused = 0;
    for (int64_t h = 0; h < KV; h++) {
        int64_t *pos_h = c->pos + (layer * KV + h) * K;
        float *score_h = c->score + (layer * KV + h) * K;
        int64_t *order_h = c->order + (layer * KV + h) * K;
        const scored_pos *sel = rs->merged + h * K;
        for (int64_t s = 0; s < old_count; s++) rs->old_slot[pos_h[s]] = (int32_t)(s + 1);
        memset(used, 0, (size_t)K);
        int64_t *slot_of = malloc((size_t)(n_sel + 1) * sizeof(int64_t));
        if (!slot_of) goto oom;
        for (int64_t i = 0; i < n_sel; i++) {
            int32_t s = rs->old_slot[sel[i].pos];
            slot_of[i] = s ? s - 1 : -1;
            if (s) used[s - 1] = 1;
        }
        for (int64_t s = 0; s < old_count; s++) rs->old_slot[pos_h[s]] = 0;
        int64_t next_free = 0;
        for (int64_t i = 0; i < n_sel; i++) {
            if (slot_of[i] >= 0) {
                n_reused++;
                continue;
            }
            while (used[next_free]) next_free++;
            used[next_free] = 1;
            slot_of[i] = next_free;
            need[n_need++] = (row_need){h, next_free, sel[i].pos, R == 1 ? 0 : shard_owner(sh->plan, sel[i].pos)};
        }
        // Ascending score: logical entry i is the (n_sel-1-i)-th best.
        for (int64_t i = 0; i < n_sel; i++) {
            const scored_pos *e = &sel[n_sel - 1 - i];
            int64_t s = slot_of[n_sel - 1 - i];
            order_h[i] = s;
            pos_h[s] = e->pos;
            score_h[s] = log_space ? expf(e->score) : e->score;
        }
        free(slot_of);
    }
    c->count[layer] = n_sel;
    c->head[layer] = 0;

    const size_t row = kv_cache_row_bytes(&c->rows);
    for (int r = 0; r < R; r++) sizes[r] = 0;
    for (int64_t i = 0; i < n_need; i++) sizes[need[i].owner]++;
    if (R > 1) {
        send = malloc((size_t)sizes[me] * 2 * row + 1);
        int64_t tot = 0;
        for (int r = 0; r < R; r++) tot += sizes[r];
        recv = malloc((size_t)tot * 2 * row + 1);
        if (!send || !recv) goto oom;
    }
    // Own rows go straight into the cache (and, on several ranks, out to the others).
    int64_t n_sent = 0;
    for (int64_t i = 0; i < n_need; i++) {
        if (need[i].owner != me) continue;
        int64_t j = find_pos(sh->slot_pos, n, need[i].pos);
        if (j < 0) {
            rc_fail(err, "recycled attention: rank %d does not hold position %lld it owns", me, (long long)need[i].pos);
            goto done;
        }
        const void *ks = kv_cache_row(sh->kv, 0, layer, need[i].kv_head, j);
        const void *vs = kv_cache_row(sh->kv, 1, layer, need[i].kv_head, j);
        memcpy(kv_cache_row(&c->rows, 0, layer, need[i].kv_head, need[i].slot), ks, row);
        memcpy(kv_cache_row(&c->rows, 1, layer, need[i].kv_head, need[i].slot), vs, row);
        if (R > 1) {
            memcpy(send + (size_t)n_sent * 2 * row, ks, row);
            memcpy(send + (size_t)n_sent * 2 * row + row, vs, row);
        }
        n_sent++;
    }
    if (R > 1) {
        int64_t off = 0;
        for (int r = 0; r < R; r++) {
            counts[r] = (size_t)sizes[r] * 2 * row;
            cursor[r] = off;
            off += sizes[r];
        }
        if (comm_allgatherv(cm, send, counts, recv, err)) goto done;
        for (int64_t i = 0; i < n_need; i++) {
            const uint8_t *src = recv + (size_t)cursor[need[i].owner]++ * 2 * row;
            if (need[i].owner == me) continue;
            memcpy(kv_cache_row(&c->rows, 0, layer, need[i].kv_head, need[i].slot), src, row);
            memcpy(kv_cache_row(&c->rows, 1, layer, need[i].kv_head, need[i].slot), src + row, row);
        }
        rs->stats.bytes_sent += n_sent * 2 * (int64_t)row;
    }
    rs->stats.n_rebuilds++;
    rs->stats.rows_reused += n_reused;
    rs->stats.rows_fetched += n_need;
    rs->stats.bytes_saved += n_reused * 2 * (int64_t)row;
    rs->built[layer] = 1;
    memcpy(rs->saved_query + layer * rs->head_dim, query_mean, (size_t)rs->head_dim * sizeof(float));
    rc = 0;
    goto done;
oom:
    rc_fail(err, "out of memory rebuilding the recycled cache");
done:
    free(k_of); free(counts); free(tmp); free(need); free(send); free(recv); free(sizes); free(cursor); free(used);
    if (all != rs->lists) free(all);
    return rc;
}
