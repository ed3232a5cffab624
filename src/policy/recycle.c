#include "policy/recycle.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "policy/budget.h"

// A selected row that the cache does not hold yet.
typedef struct recycle_need {
    int64_t kv_head, slot, pos;
    int owner;
} recycle_need;

recycle_opts recycle_default_opts(void) {
    return (recycle_opts){.k = 1024, .schedule = RECYCLE_STRIDE, .stride = 10, .check_every = 5, .similarity = 0.9,
                          .group_agg = GROUP_AGG_MAX, .pool_kernel = 7, .budgets = RECYCLE_BUDGETS_UNIFORM,
                          .headkv_beta = 1.5, .query = RECYCLE_QUERY_LAST, .query_window = 32,
                          .query_agg = RECYCLE_QUERY_MEAN, .span = 0};
}

const char *recycle_schedule_name(int schedule) { return schedule == RECYCLE_DYNAMIC ? "dynamic" : "stride"; }

const char *group_agg_name(int agg) {
    return agg == GROUP_AGG_MEAN ? "mean" : agg == GROUP_AGG_FIRST ? "first" : "max";
}

const char *recycle_query_name(int query) { return query == RECYCLE_QUERY_WINDOW ? "window" : "last"; }

const char *recycle_query_agg_name(int agg) { return agg == RECYCLE_QUERY_MAX ? "max" : "mean"; }

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
    if (o->budgets != RECYCLE_BUDGETS_UNIFORM && o->budgets != RECYCLE_BUDGETS_HEADKV)
        return rc_fail(err, "unknown --recycle-budgets %d", o->budgets);
    if (o->budgets == RECYCLE_BUDGETS_HEADKV && !o->head_scores)
        return rc_fail(err, "--recycle-budgets headkv needs head-importance scores (--head-scores FILE)");
    if (o->query != RECYCLE_QUERY_LAST && o->query != RECYCLE_QUERY_WINDOW)
        return rc_fail(err, "unknown --recycle-query %d", o->query);
    if (o->query_window < 1 || o->query_window > RECYCLE_QUERY_WINDOW_MAX)
        return rc_fail(err, "--recycle-query-window must lie in [1, %d] (got %lld)", RECYCLE_QUERY_WINDOW_MAX,
                       (long long)o->query_window);
    if (o->query_agg != RECYCLE_QUERY_MEAN && o->query_agg != RECYCLE_QUERY_MAX)
        return rc_fail(err, "unknown --recycle-query-agg %d", o->query_agg);
    if (o->span < 0 || o->span >= n_ctx)
        return rc_fail(err, "--recycle-span must lie in [0, %lld) (the context size, --ctx; got %lld)",
                       (long long)n_ctx, (long long)o->span);
    return 0;
}

int recycle_init(recycle_state *rs, const backend *be, const recycle_opts *o, int64_t n_layer, int64_t n_head,
                 int64_t n_kv, int64_t head_dim, int64_t n_ctx, int kv_elem, int n_ranks, rc_err *err) {
    memset(rs, 0, sizeof(*rs));
    if (recycle_opts_validate(o, n_ctx, err)) return -1;
    rs->o = *o;
    rs->be = be;
    rs->n_layer = n_layer;
    rs->n_head = n_head;
    rs->n_kv = n_kv;
    rs->head_dim = head_dim;
    rs->n_ctx = n_ctx;
    rs->n_ranks = n_ranks;
    int64_t *caps = NULL;
    if (o->budgets == RECYCLE_BUDGETS_HEADKV) {
        // HeadKV's allocation of the same total, n_layer x n_kv x K, per KV head.
        const head_scores *hs = o->head_scores;
        if (hs->n_layer != n_layer || hs->n_head != n_head)
            return rc_fail(err, "head scores are for %lld layers x %lld heads, the model has %lld x %lld",
                           (long long)hs->n_layer, (long long)hs->n_head, (long long)n_layer, (long long)n_head);
        double *grouped = malloc((size_t)(n_layer * n_kv) * sizeof(double));
        caps = malloc((size_t)(n_layer * n_kv) * sizeof(int64_t));
        if (!grouped || !caps) {
            free(grouped);
            free(caps);
            return rc_fail(err, "out of memory");
        }
        budget_group_scores(hs->score, n_layer, n_head, n_kv, grouped);
        int rc = budget_headkv(grouped, n_layer * n_kv, o->k, o->headkv_beta, caps, err);
        free(grouped);
        if (rc) {
            free(caps);
            return -1;
        }
    }
    int rc = recycle_cache_init(&rs->cache, be, n_layer, n_kv, head_dim, caps, o->k, kv_elem, err);
    free(caps);
    if (rc) return -1;
    if (dist_scratch_init(&rs->ds, be, n_ranks, err)) {
        recycle_free(rs);
        return -1;
    }
    const int64_t K = rs->cache.k, R = n_ranks, rows = n_kv * K;
    rs->saved_query = calloc((size_t)(n_layer * head_dim), sizeof(float));
    rs->built = calloc((size_t)n_layer, 1);
    rs->lists = calloc((size_t)rows + 1, sizeof(scored_pos));
    rs->all_lists = malloc((size_t)(R * rows + 1) * sizeof(scored_pos));
    rs->merged = malloc((size_t)(rows + 1) * sizeof(scored_pos));
    if (o->span > 0) {
        rs->spanned = malloc((size_t)(K + 1) * sizeof(scored_pos));
        rs->taken = calloc((size_t)n_ctx, 1);
    }
    rs->k_of = malloc((size_t)(R * n_kv) * sizeof(int64_t));
    rs->n_sel = malloc((size_t)n_kv * sizeof(int64_t));
    rs->list_off = malloc((size_t)(n_kv + 1) * sizeof(int64_t));
    rs->slot_of = malloc((size_t)K * sizeof(int64_t));
    rs->used = malloc((size_t)K);
    rs->old_slot = calloc((size_t)n_ctx, sizeof(int32_t));
    rs->need_bits = calloc((size_t)(n_ctx + 63) / 64, sizeof(uint64_t));
    rs->need = malloc((size_t)(rows + 1) * sizeof(*rs->need));
    rs->idx_dst = malloc((size_t)(2 * rows + 1) * sizeof(int64_t));
    rs->idx_src = malloc((size_t)(2 * rows + 1) * sizeof(int64_t));
    rs->counts = malloc((size_t)R * sizeof(size_t));
    rs->sizes = malloc((size_t)R * sizeof(int64_t));
    rs->cursor = malloc((size_t)R * sizeof(int64_t));
    if (R > 1) {  // rows in transit: at most every selected row, K and V
        const size_t bytes = (size_t)(2 * rows) * kv_cache_row_bytes(&rs->cache.rows);
        rs->send = be->ops->alloc(be, bytes);
        rs->recv = be->ops->alloc(be, bytes);
    }
    if (!rs->saved_query || !rs->built || !rs->lists || !rs->all_lists || !rs->merged || !rs->k_of || !rs->n_sel ||
        !rs->list_off || !rs->slot_of || !rs->used || !rs->old_slot || !rs->need_bits || !rs->need || !rs->idx_dst ||
        !rs->idx_src || !rs->counts || !rs->sizes || !rs->cursor || (R > 1 && (!rs->send || !rs->recv)) ||
        (o->span > 0 && (!rs->spanned || !rs->taken))) {
        recycle_free(rs);
        return rc_fail(err, "out of memory for recycled attention");
    }
    return 0;
}

void recycle_free(recycle_state *rs) {
    const backend *be = rs->be;
    recycle_cache_free(&rs->cache);
    dist_scratch_free(&rs->ds);
    if (be) {
        if (rs->agg) be->ops->free(be, rs->agg);
        if (rs->pooled) be->ops->free(be, rs->pooled);
        if (rs->send) be->ops->free(be, rs->send);
        if (rs->recv) be->ops->free(be, rs->recv);
    }
    free(rs->saved_query); free(rs->built); free(rs->lists); free(rs->all_lists); free(rs->merged); free(rs->k_of);
    free(rs->spanned); free(rs->taken);
    free(rs->n_sel); free(rs->list_off); free(rs->slot_of); free(rs->used); free(rs->old_slot); free(rs->need_bits);
    free(rs->need); free(rs->idx_dst); free(rs->idx_src); free(rs->counts); free(rs->sizes); free(rs->cursor);
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
    const backend *be = rs->be;
    if (rs->agg) be->ops->free(be, rs->agg);
    if (rs->pooled) be->ops->free(be, rs->pooled);
    rs->agg = be->ops->alloc(be, (size_t)(rs->n_kv * cap_local) * sizeof(float));
    rs->pooled = be->ops->alloc(be, (size_t)(rs->n_kv * cap_local) * sizeof(float));
    if (!rs->agg || !rs->pooled) {
        rs->cap_local = 0;
        return rc_fail(err, "out of memory for recycled-attention scores (%lld keys)", (long long)cap_local);
    }
    rs->cap_local = cap_local;
    return 0;
}

void recycle_begin_step(recycle_state *rs) { rs->step++; }

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

int recycle_needs_query(const recycle_state *rs, int64_t layer) {
    return rs->built[layer] && rs->o.schedule == RECYCLE_DYNAMIC && rs->step % rs->o.check_every == 0;
}

int recycle_layer_is_full(recycle_state *rs, int64_t layer, const float *query_mean_host) {
    int full;
    if (!rs->built[layer]) full = 1;
    else if (rs->o.schedule == RECYCLE_STRIDE) full = rs->step % rs->o.stride == 0;
    else
        full = recycle_needs_query(rs, layer) &&
               cosine(query_mean_host, rs->saved_query + layer * rs->head_dim, rs->head_dim) <= rs->o.similarity;
    const int64_t words[3] = {rs->step, layer, full};
    rs->decision_hash = fnv1a(rs->decision_hash ? rs->decision_hash : FNV1A_INIT, words, sizeof(words));
    return full;
}

// ---- rebuild -----------------------------------------------------------------


void recycle_span_fill(const scored_pos *sel, int64_t n, int64_t span, int64_t n_total, uint8_t *taken,
                       scored_pos *out) {
    int64_t m = 0;
    for (int64_t i = 0; i < n && m < n; i++)
        for (int64_t p = sel[i].pos; p <= sel[i].pos + span && p < n_total && m < n; p++) {
            if (taken[p]) continue;
            taken[p] = 1;
            out[m++] = (scored_pos){sel[i].score, p};
        }
    for (int64_t i = 0; i < m; i++) taken[out[i].pos] = 0;
}

// The span fill of every head's merged list (on the replicated lists: every
// rank gets the same; the followers' rows come by position in step 5).
static void apply_span(recycle_state *rs, int64_t n_total) {
    if (rs->o.span <= 0) return;
    const int64_t K = rs->cache.k;
    for (int64_t h = 0; h < rs->n_kv; h++) {
        recycle_span_fill(rs->merged + h * K, rs->n_sel[h], rs->o.span, n_total, rs->taken, rs->spanned);
        memcpy(rs->merged + h * K, rs->spanned, (size_t)rs->n_sel[h] * sizeof(scored_pos));
    }
}

static const int score_mode_of_agg[] = {[GROUP_AGG_MAX] = SCORE_MAX_LOGP, [GROUP_AGG_MEAN] = SCORE_MEAN_P,
                                        [GROUP_AGG_FIRST] = SCORE_FIRST_LOGP};

// Steps 3-4 of the protocol (recycle.h): this layer's selection per KV head
// from the combined scores agg (n_kv, n_local), identical on every rank, into
// rs->merged with rs->n_sel entries each; then the span fill.
static int select_rows(recycle_state *rs, int64_t layer, const float *agg, const shard_ctx *sh, comm *cm,
                       rc_err *err) {
    const backend *be = rs->be;
    const int64_t n = sh->n_local, KV = rs->n_kv, K = rs->cache.k, *cap = rs->cache.cap + layer * KV;
    const int R = cm->size, me = cm->rank;
    // 3: max-pool over neighbouring positions.
    const float *scores = agg;
    if (rs->o.pool_kernel > 1) {
        if (dist_maxpool(&rs->ds, agg, rs->pooled, KV, rs->o.pool_kernel, sh, cm, err)) return -1;
        scores = rs->pooled;
    }
    // 4: local top-K per KV head, all-gathered, merged the same way everywhere.
    // Heads may hold different K (HeadKV budgets); rank r sends min(its
    // positions, K_h) entries for head h, a count every rank derives itself.
    for (int r = 0; r < R; r++) {
        const int64_t nl = R == 1 ? n : shard_local_count(sh->plan, r, sh->n_total);
        if (r == me && nl != n)
            return rc_fail(err, "recycled attention: rank %d holds %lld positions, the shard plan says %lld", me,
                           (long long)n, (long long)nl);
        for (int64_t h = 0; h < KV; h++) rs->k_of[r * KV + h] = nl < cap[h] ? nl : cap[h];
    }
    if (R == 1) {  // one list: it is the merge
        be->ops->topk_rows(be, rs->merged, rs->n_sel, scores, sh->slot_pos, KV, n, n, rs->k_of, K, 0);
        apply_span(rs, sh->n_total);
        return 0;
    }
    // The local lists land in merged (stride K), then pack back to back for the wire.
    be->ops->topk_rows(be, rs->merged, rs->n_sel, scores, sh->slot_pos, KV, n, n, rs->k_of + me * KV, K, 0);
    rs->list_off[0] = 0;
    for (int64_t h = 0; h < KV; h++) rs->list_off[h + 1] = rs->list_off[h] + rs->k_of[me * KV + h];
    memset(rs->lists, 0, (size_t)rs->list_off[KV] * sizeof(scored_pos));  // no uninitialized padding on the wire
    for (int64_t h = 0; h < KV; h++)
        for (int64_t i = 0; i < rs->k_of[me * KV + h]; i++) {
            rs->lists[rs->list_off[h] + i].score = rs->merged[h * K + i].score;
            rs->lists[rs->list_off[h] + i].pos = rs->merged[h * K + i].pos;
        }
    for (int r = 0; r < R; r++) {
        int64_t t = 0;
        for (int64_t h = 0; h < KV; h++) t += rs->k_of[r * KV + h];
        rs->counts[r] = (size_t)t * sizeof(scored_pos);
    }
    if (comm_allgatherv(cm, rs->lists, rs->counts, rs->all_lists, err)) return -1;
    if (dist_merge_lists(&rs->ds, rs->all_lists, rs->k_of, R, KV, cap, K, rs->merged, rs->n_sel, err)) return -1;
    apply_span(rs, sh->n_total);
    return 0;
}

// Step 5's bookkeeping for one KV head: rows the cache keeps stay in their
// slots, new rows take the freed ones (appended to rs->need); the ring is
// rewritten in ascending score order. Returns the rows reused, or -1.
static int64_t assign_slots(recycle_state *rs, int64_t layer, int64_t h, const shard_ctx *sh, int R, int64_t *n_need,
                            int log_space, double score_mul, rc_err *err) {
    recycle_cache *c = &rs->cache;
    const int64_t K = c->k, lh = layer * rs->n_kv + h, old_count = c->count[lh], ns = rs->n_sel[h],
                  cap = c->cap[lh];
    if (ns < old_count)
        return rc_fail(err, "recycled attention: a rebuild selected %lld rows, fewer than the %lld held", (long long)ns,
                       (long long)old_count);
    int64_t *pos_h = c->pos + c->off[lh], *order_h = c->order + c->off[lh];
    float *score_h = c->score + c->off[lh];
    const scored_pos *sel = rs->merged + h * K;
    for (int64_t s = 0; s < old_count; s++) rs->old_slot[pos_h[s]] = (int32_t)(s + 1);
    memset(rs->used, 0, (size_t)cap);
    for (int64_t i = 0; i < ns; i++) {
        int32_t s = rs->old_slot[sel[i].pos];
        rs->slot_of[i] = s ? s - 1 : -1;
        if (s) rs->used[s - 1] = 1;
    }
    for (int64_t s = 0; s < old_count; s++) rs->old_slot[pos_h[s]] = 0;
    int64_t next_free = 0, n_reused = 0;
    for (int64_t i = 0; i < ns; i++) {
        if (rs->slot_of[i] >= 0) {
            n_reused++;
            continue;
        }
        while (rs->used[next_free]) next_free++;
        rs->used[next_free] = 1;
        rs->slot_of[i] = next_free;
        rs->need[(*n_need)++] =
            (recycle_need){h, next_free, sel[i].pos, R == 1 ? 0 : shard_owner(sh->plan, sel[i].pos)};
    }
    // Ascending score: logical entry i is the (ns-1-i)-th best.
    for (int64_t i = 0; i < ns; i++) {
        const scored_pos *e = &sel[ns - 1 - i];
        const int64_t s = rs->slot_of[ns - 1 - i];
        order_h[i] = s;
        pos_h[s] = e->pos;
        const float v = log_space ? expf(e->score) : e->score;
        score_h[s] = score_mul == 1.0 ? v : (float)(v * score_mul);
    }
    c->count[lh] = ns;
    c->head[lh] = 0;
    return n_reused;
}

// Step 5's data: own rows go straight from the shard into the cache and, on
// several ranks, out to the others in one all-gather; the rest arrive.
static int fetch_rows(recycle_state *rs, int64_t layer, int64_t n_need, const shard_ctx *sh, comm *cm,
                      rc_err *err) {
    const backend *be = rs->be;
    recycle_cache *c = &rs->cache;
    const int R = cm->size, me = cm->rank;
    const size_t row = kv_cache_row_bytes(&c->rows);
    int64_t n_own = 0;
    if (R == 1) {  // one rank: gather each head's new rows in slot order, so the reads stream
        for (int64_t i0 = 0, i1; i0 < n_need; i0 = i1) {  // the needs come head by head
            const int64_t h = rs->need[i0].kv_head;
            int in_place = 1;  // slot p holds position p for every need (a cache filled in order)
            for (i1 = i0; i1 < n_need && rs->need[i1].kv_head == h; i1++) {
                const int64_t p = rs->need[i1].pos;
                rs->old_slot[p] = (int32_t)(i1 - i0 + 1);
                in_place &= p < sh->n_local && sh->slot_pos[p] == p;
            }
            if (in_place) {  // position order from a bitmap: n / 64 words, not n slots
                uint64_t *bits = rs->need_bits;
                for (int64_t i = i0; i < i1; i++) bits[rs->need[i].pos >> 6] |= 1ull << (rs->need[i].pos & 63);
                for (int64_t w = 0; w <= (sh->n_local - 1) >> 6; w++)
                    for (; bits[w]; bits[w] &= bits[w] - 1) {
                        const int64_t p = w * 64 + __builtin_ctzll(bits[w]);
                        const int32_t t = rs->old_slot[p];
                        rs->old_slot[p] = 0;
                        rs->idx_dst[n_own] = recycle_cache_row_index(c, layer, h, rs->need[i0 + t - 1].slot);
                        rs->idx_src[n_own++] = kv_cache_row_index(sh->kv, layer, h, p);
                    }
                continue;
            }
            for (int64_t j = 0; j < sh->n_local && n_own < i1; j++) {
                const int32_t t = rs->old_slot[sh->slot_pos[j]];
                if (!t) continue;
                rs->old_slot[sh->slot_pos[j]] = 0;
                rs->idx_dst[n_own] = recycle_cache_row_index(c, layer, h, rs->need[i0 + t - 1].slot);
                rs->idx_src[n_own++] = kv_cache_row_index(sh->kv, layer, h, j);
            }
            if (n_own != i1) {
                for (int64_t i = i0; i < i1; i++) rs->old_slot[rs->need[i].pos] = 0;
                return rc_fail(err, "recycled attention: the shard does not hold %lld selected positions",
                               (long long)(i1 - n_own));
            }
        }
        be->ops->copy_rows(be, c->rows.k, rs->idx_dst, sh->kv->k, rs->idx_src, n_own, row);
        be->ops->copy_rows(be, c->rows.v, rs->idx_dst, sh->kv->v, rs->idx_src, n_own, row);
        return 0;
    }
    for (int r = 0; r < R; r++) rs->sizes[r] = 0;
    for (int64_t i = 0; i < n_need; i++) {
        const recycle_need *nd = &rs->need[i];
        rs->sizes[nd->owner]++;
        if (nd->owner != me) continue;
        const int64_t j = dist_find_pos(sh->slot_pos, sh->n_local, nd->pos);
        if (j < 0)
            return rc_fail(err, "recycled attention: rank %d does not hold position %lld it owns", me,
                           (long long)nd->pos);
        rs->idx_dst[n_own] = recycle_cache_row_index(c, layer, nd->kv_head, nd->slot);
        rs->idx_src[n_own++] = kv_cache_row_index(sh->kv, layer, nd->kv_head, j);
    }
    be->ops->copy_rows(be, c->rows.k, rs->idx_dst, sh->kv->k, rs->idx_src, n_own, row);
    be->ops->copy_rows(be, c->rows.v, rs->idx_dst, sh->kv->v, rs->idx_src, n_own, row);
    // Outgoing rows, K then V per row, in need order: rows 2i and 2i+1 of send.
    for (int64_t i = 0; i < n_own; i++) rs->idx_dst[i] = 2 * i;
    be->ops->copy_rows(be, rs->send, rs->idx_dst, sh->kv->k, rs->idx_src, n_own, row);
    for (int64_t i = 0; i < n_own; i++) rs->idx_dst[i] = 2 * i + 1;
    be->ops->copy_rows(be, rs->send, rs->idx_dst, sh->kv->v, rs->idx_src, n_own, row);
    int64_t off = 0;
    for (int r = 0; r < R; r++) {
        rs->counts[r] = (size_t)rs->sizes[r] * 2 * row;
        rs->cursor[r] = off;
        off += rs->sizes[r];
    }
    if (comm_allgatherv_buf(cm, be, rs->send, rs->counts, rs->recv, err)) return -1;
    int64_t n_in = 0;
    for (int64_t i = 0; i < n_need; i++) {
        const recycle_need *nd = &rs->need[i];
        const int64_t at = rs->cursor[nd->owner]++;
        if (nd->owner == me) continue;
        rs->idx_dst[n_in] = recycle_cache_row_index(c, layer, nd->kv_head, nd->slot);
        rs->idx_src[n_in++] = 2 * at;
    }
    be->ops->copy_rows(be, c->rows.k, rs->idx_dst, rs->recv, rs->idx_src, n_in, row);
    for (int64_t i = 0; i < n_in; i++) rs->idx_src[i]++;
    be->ops->copy_rows(be, c->rows.v, rs->idx_dst, rs->recv, rs->idx_src, n_in, row);
    rs->stats.bytes_sent += n_own * 2 * (int64_t)row;
    return 0;
}

int recycle_rebuild_scored(recycle_state *rs, int64_t layer, const float *agg, int log_space, double score_mul,
                           const float *query_mean, const shard_ctx *sh, comm *cm, rc_err *err) {
    if (recycle_reserve(rs, sh->n_local > 0 ? sh->n_local : 1, err)) return -1;
    if (select_rows(rs, layer, agg, sh, cm, err)) return -1;
    int64_t n_need = 0, n_reused = 0;
    for (int64_t h = 0; h < rs->n_kv; h++) {
        const int64_t r = assign_slots(rs, layer, h, sh, cm->size, &n_need, log_space, score_mul, err);
        if (r < 0) return -1;
        n_reused += r;
    }
    if (fetch_rows(rs, layer, n_need, sh, cm, err)) return -1;
    const int64_t row2 = 2 * (int64_t)kv_cache_row_bytes(&rs->cache.rows);
    rs->stats.n_rebuilds++;
    rs->stats.rows_reused += n_reused;
    rs->stats.rows_fetched += n_need;
    rs->stats.bytes_saved += n_reused * row2;
    rs->built[layer] = 1;
    rs->be->ops->download(rs->be, rs->saved_query + layer * rs->head_dim, query_mean,
                          (size_t)rs->head_dim * sizeof(float));
    return 0;
}

// Steps 1-2: exact global probabilities, combined over each KV group. Max and
// first commute with exp (monotone), and so do max-pooling and ranking: those
// work on log-probabilities s - lse and exponentiate only the K survivors. The
// mean needs the probabilities themselves.
int recycle_rebuild(recycle_state *rs, int64_t layer, const float *raw, const float *lse, const float *query_mean,
                    const shard_ctx *sh, comm *cm, rc_err *err) {
    if (recycle_reserve(rs, sh->n_local > 0 ? sh->n_local : 1, err)) return -1;
    const int64_t n = sh->n_local;
    rs->be->ops->score_reduce(rs->be, rs->agg, raw, lse, rs->n_head, rs->n_kv, n, n, n,
                              score_mode_of_agg[rs->o.group_agg]);
    return recycle_rebuild_scored(rs, layer, rs->agg, rs->o.group_agg != GROUP_AGG_MEAN, 1.0, query_mean, sh, cm,
                                  err);
}
