#include "policy/kvpolicy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

extern const kv_policy_ops kvp_streaming, kvp_h2o, kvp_snapkv, kvp_pyramidkv, kvp_adakv, kvp_headkv;

// The registry: enum kv_method order.
static const kv_policy_ops *const registry[KV_METHOD_COUNT] = {
    [KV_METHOD_STREAMING] = &kvp_streaming, [KV_METHOD_H2O] = &kvp_h2o,     [KV_METHOD_SNAPKV] = &kvp_snapkv,
    [KV_METHOD_PYRAMIDKV] = &kvp_pyramidkv, [KV_METHOD_ADAKV] = &kvp_adakv, [KV_METHOD_HEADKV] = &kvp_headkv,
};

const kv_policy_ops *kv_policy_get(int method) {
    return method >= 0 && method < KV_METHOD_COUNT ? registry[method] : NULL;
}

kvpolicy_opts kvpolicy_default_opts(void) {
    return (kvpolicy_opts){.budget = 1024, .window = 8, .sinks = 4, .pool_kernel = 7, .headkv_beta = 1.5,
                           .pyramid_beta = 20.0, .ada_floor = 0.2};
}

const char *kv_method_name(int method) {
    const kv_policy_ops *ops = kv_policy_get(method);
    return ops ? ops->name : "unknown";
}

int kv_method_from_name(const char *name) {
    for (int i = 0; i < KV_METHOD_COUNT; i++)
        if (strcmp(name, registry[i]->name) == 0) return i;
    return -1;
}

int kvpolicy_opts_validate(int method, const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err) {
    const kv_policy_ops *ops = kv_policy_get(method);
    if (!ops) return rc_fail(err, "unknown KV-compression method %d", method);
    if (o->budget < 1) return rc_fail(err, "--kv-budget must be at least 1 (got %lld)", (long long)o->budget);
    if (o->window < 1 || o->window > KVPOLICY_WINDOW_MAX)
        return rc_fail(err, "--kv-window must lie in [1, %d] (got %lld)", KVPOLICY_WINDOW_MAX, (long long)o->window);
    if (o->pool_kernel < 1 || o->pool_kernel % 2 == 0)
        return rc_fail(err, "--kv-pool must be an odd number >= 1 (got %lld)", (long long)o->pool_kernel);
    if (o->sinks < 0) return rc_fail(err, "--kv-sinks must be >= 0 (got %lld)", (long long)o->sinks);
    if (ops->validate && ops->validate(o, n_layer, n_head, err)) return -1;
    if (ops->keeps_window && o->budget < o->window)
        return rc_fail(err, "%s: --kv-budget %lld is smaller than the observation window %lld (--kv-window)", ops->name,
                       (long long)o->budget, (long long)o->window);
    if (!(o->headkv_beta > 1.0) || !isfinite(o->headkv_beta))
        return rc_fail(err, "--headkv-beta must be a number > 1 (got %g)", o->headkv_beta);
    if (!(o->pyramid_beta >= 1.0) || !isfinite(o->pyramid_beta))
        return rc_fail(err, "--pyramid-beta must be a number >= 1 (got %g)", o->pyramid_beta);
    if (!(o->ada_floor >= 0.0 && o->ada_floor <= 1.0))
        return rc_fail(err, "--ada-floor must lie in [0, 1] (got %g)", o->ada_floor);
    if (ops->head_scores) {  // checked last: they come from a file
        if (!o->scores) return rc_fail(err, "%s needs head-importance scores (--head-scores FILE)", ops->name);
        if (o->scores->n_layer != n_layer || o->scores->n_head != n_head)
            return rc_fail(err, "--head-scores: the scores are for %lld layers x %lld heads, the model has %lld x %lld",
                           (long long)o->scores->n_layer, (long long)o->scores->n_head, (long long)n_layer,
                           (long long)n_head);
    }
    return 0;
}

int kvpolicy_init(kvpolicy_state *ps, const backend *be, int method, const kvpolicy_opts *o, int64_t n_layer,
                  int64_t n_head, int64_t n_kv, int64_t head_dim, int kv_elem, int n_ranks, rc_err *err) {
    memset(ps, 0, sizeof(*ps));
    if (kvpolicy_opts_validate(method, o, n_layer, n_head, err)) return -1;
    ps->method = method;
    ps->ops = kv_policy_get(method);
    ps->be = be;
    ps->o = *o;
    ps->n_layer = n_layer;
    ps->n_head = n_head;
    ps->n_kv = n_kv;
    ps->head_dim = head_dim;
    ps->n_store = o->per_query_head ? n_head : n_kv;
    ps->q_per_store = n_head / ps->n_store;
    if (kv_store_init(&ps->store, be, n_layer, ps->n_store, head_dim, kv_elem, err)) return -1;
    if (dist_scratch_init(&ps->ds, be, n_ranks, err)) {
        kvpolicy_free(ps);
        return -1;
    }
    ps->budget = calloc((size_t)(n_layer * ps->n_store), sizeof(int64_t));
    ps->held = calloc((size_t)(n_layer * ps->n_store), sizeof(int64_t));
    ps->base = calloc((size_t)(n_layer * ps->n_store), sizeof(int64_t));
    ps->cand = calloc((size_t)(KVPOLICY_EVICT_CANDIDATES * ps->n_store * (n_ranks + 1)), sizeof(scored_pos));
    ps->k_tmp = calloc((size_t)ps->n_store, sizeof(int64_t));
    ps->sel_hash = calloc((size_t)n_layer, sizeof(uint64_t));
    ps->cut_gap = malloc((size_t)n_layer * sizeof(float));
    ps->cut_score = malloc((size_t)n_layer * sizeof(float));
    ps->cut_pos = malloc((size_t)n_layer * sizeof(int64_t));
    if (!ps->budget || !ps->held || !ps->base || !ps->cand || !ps->k_tmp || !ps->sel_hash || !ps->cut_gap ||
        !ps->cut_score || !ps->cut_pos) {
        kvpolicy_free(ps);
        return rc_fail(err, "out of memory for the KV policy");
    }
    kvpolicy_cuts_clear(ps);
    return 0;
}

void kvpolicy_free(kvpolicy_state *ps) {
    kv_store_free(&ps->store);
    dist_scratch_free(&ps->ds);
    if (ps->raw) ps->be->ops->free(ps->be, ps->raw);
    free(ps->budget);
    free(ps->held);
    free(ps->base);
    free(ps->cand);
    free(ps->k_tmp);
    free(ps->sel_hash);
    free(ps->cut_gap);
    free(ps->cut_score);
    free(ps->cut_pos);
    memset(ps, 0, sizeof(*ps));
}

void kvpolicy_reset(kvpolicy_state *ps) {
    kv_store_clear(&ps->store);
    if (ps->sel_hash) memset(ps->sel_hash, 0, (size_t)ps->n_layer * sizeof(uint64_t));
    ps->built = 0;
    ps->n_prompt = 0;
    kvpolicy_cuts_clear(ps);
}

void kvpolicy_cuts_clear(kvpolicy_state *ps) {
    if (!ps->cut_gap) return;
    for (int64_t l = 0; l < ps->n_layer; l++) {
        ps->cut_gap[l] = INFINITY;
        ps->cut_score[l] = NAN;
        ps->cut_pos[l] = -1;
    }
}

void kvpolicy_begin_step(kvpolicy_state *ps) {
    if (ps->steps_since_compress++ > 0) kvpolicy_cuts_clear(ps);
}

void kvpolicy_trim_cuts(kvpolicy_state *ps, int64_t layer, const scored_pos *sel, int64_t k_max, int64_t *n_sel,
                        const int64_t *k) {
    for (int64_t s = 0; s < ps->n_store; s++) {
        if (n_sel[s] <= k[s]) continue;
        if (k[s] > 0) kvpolicy_note_cut(ps, layer, sel[s * k_max + k[s] - 1], sel[s * k_max + k[s]]);
        n_sel[s] = k[s];
    }
}

void kvpolicy_note_cut(kvpolicy_state *ps, int64_t layer, scored_pos kept, scored_pos out) {
    const float gap = fabsf(kept.score - out.score);
    if (!(gap < ps->cut_gap[layer])) return;  // NaN scores make no cut
    ps->cut_gap[layer] = gap;
    ps->cut_score[layer] = kept.score;
    ps->cut_pos[layer] = kept.pos;
}

int64_t kvpolicy_kv_head(const kvpolicy_state *ps, int64_t store_head) {
    return store_head * ps->q_per_store / (ps->n_head / ps->n_kv);
}

// ---- compression at the end of the prompt --------------------------------------

// Per-layer buffers of a compression (not the decode path).
typedef struct compress_bufs {
    float *votes, *raw, *o, *lse;   // backend
    scored_pos *sel;                // (S, k_max) host
    int64_t *n_sel, *slots, *pos, *cols;
} compress_bufs;

static void free_compress_bufs(const backend *be, compress_bufs *b) {
    if (b->votes) be->ops->free(be, b->votes);
    if (b->raw) be->ops->free(be, b->raw);
    if (b->o) be->ops->free(be, b->o);
    if (b->lse) be->ops->free(be, b->lse);
    free(b->sel); free(b->n_sel); free(b->slots); free(b->pos); free(b->cols);
}

// votes[s, j] = sum over the voting positions w (the last Wv of the prompt)
// of the mean over the query heads of store head s of exp(s_hj - lse_h), for
// every key j at or before w: each voter's exact probabilities.
static void vote(kvpolicy_state *ps, int64_t layer, const prompt_window *win, int64_t Wv, const shard_ctx *sh,
                 compress_bufs *b) {
    const backend *be = ps->be;
    const int64_t H = ps->n_head, hd = ps->head_dim, n = sh->n_total, nl = sh->n_local;
    const float scale = 1.0f / sqrtf((float)hd);
    kv_view kk = kv_cache_k(sh->kv, layer), vv = kv_cache_v(sh->kv, layer);
    for (int64_t w = 0; w < Wv; w++) {
        const int64_t pw = n - Wv + w, row = layer * win->stride + win->n - Wv + w;
        int64_t n_seen = 0;  // keys at or before the voter: a prefix, positions ascend
        while (n_seen < nl && sh->slot_pos[n_seen] <= pw) n_seen++;
        be->ops->attn_decode_scores(be, b->o, b->lse, b->raw, win->q + row * H * hd, &kk, &vv, nl, H, ps->n_kv, hd,
                                    scale);
        be->ops->score_reduce(be, b->votes, b->raw, win->lse + row * H, H, ps->n_store, nl, nl, n_seen,
                              SCORE_ACC_MEAN_P);
    }
}

int kvpolicy_compress(kvpolicy_state *ps, const prompt_window *win, const shard_ctx *sh, comm *cm, rc_err *err) {
    const backend *be = ps->be;
    const int64_t L = ps->n_layer, S = ps->n_store, H = ps->n_head, hd = ps->head_dim;
    const int64_t n = sh->n_total, nl = sh->n_local, B = ps->o.budget;
    const int64_t Wv = win->n < ps->o.window ? win->n : ps->o.window;  // voting positions
    const int keep_all = B >= n;  // a budget that covers the prompt compresses nothing (as SnapKV's reference code)
    const int votes = ps->ops->votes && (!keep_all || ps->ops->decode_scores);  // H2O keeps the votes as scores
    kv_store_clear(&ps->store);
    ps->built = 0;
    kvpolicy_cuts_clear(ps);
    ps->steps_since_compress = 0;
    int rc = -1;
    int64_t k_max = n > 0 ? n : 1;
    compress_bufs b = {0};
    b.raw = votes ? be->ops->alloc(be, (size_t)(H * nl) * sizeof(float)) : NULL;
    b.o = votes ? be->ops->alloc(be, (size_t)(H * hd) * sizeof(float)) : NULL;
    b.lse = votes ? be->ops->alloc(be, (size_t)H * sizeof(float)) : NULL;
    b.sel = malloc((size_t)(S * k_max) * sizeof(scored_pos));
    b.n_sel = calloc((size_t)S, sizeof(int64_t));
    b.slots = malloc((size_t)(nl + 1) * sizeof(int64_t));
    b.pos = malloc((size_t)(nl + 1) * sizeof(int64_t));
    b.cols = malloc((size_t)(nl + 1) * sizeof(int64_t));
    uint8_t *keep = malloc((size_t)(nl + 1));
    if ((votes && (!b.raw || !b.o || !b.lse)) || !b.sel || !b.n_sel || !b.slots || !b.pos || !b.cols || !keep)
        goto oom;
    if (!keep_all && ps->ops->begin_prompt && ps->ops->begin_prompt(ps, n, Wv, err)) goto done;

    for (int64_t l = 0; l < L; l++) {
        prompt_keep pk = {.sinks = 0, .tail = n, .k_max = k_max, .sel = b.sel, .n_sel = b.n_sel};
        for (int64_t s = 0; s < S; s++) b.n_sel[s] = 0;
        if (votes) {  // fresh zeros for each layer's sums
            if (b.votes) be->ops->free(be, b.votes);
            if (!(b.votes = be->ops->alloc(be, (size_t)(S * nl) * sizeof(float)))) goto oom;
            vote(ps, l, win, Wv, sh, &b);
        }
        if (!keep_all && ps->ops->select_prompt(ps, l, b.votes, Wv, sh, cm, &pk, err)) goto done;
        // This rank's kept rows, in position order.
        for (int64_t s = 0; s < S; s++) {
            memset(keep, 0, (size_t)nl);
            for (int64_t j = 0; j < nl; j++) keep[j] = sh->slot_pos[j] < pk.sinks || sh->slot_pos[j] >= n - pk.tail;
            for (int64_t i = 0; i < b.n_sel[s]; i++) {
                const int64_t j = dist_find_pos(sh->slot_pos, nl, b.sel[s * k_max + i].pos);
                if (j >= 0) keep[j] = 1;
            }
            int64_t m = 0;
            for (int64_t j = 0; j < nl; j++) {
                if (!keep[j]) continue;
                b.slots[m] = j;
                b.pos[m] = sh->slot_pos[j];
                b.cols[m++] = s * nl + j;
                ps->sel_hash[l] ^= hash_set_elem((uint64_t)l, (uint64_t)s, (uint64_t)sh->slot_pos[j]);
            }
            const int64_t kvh = kvpolicy_kv_head(ps, s);
            if (kv_store_append_from(&ps->store, l, s, m, b.pos, sh->kv, l, kvh, b.slots, votes ? b.votes : NULL,
                                     b.cols, err))
                goto done;
            const int64_t tail = pk.tail < n ? pk.tail : n, sinks = pk.sinks < n - tail ? pk.sinks : n - tail;
            const int64_t kept_global = sinks + tail + b.n_sel[s];
            ps->budget[l * S + s] = kept_global;
            ps->held[l * S + s] = kept_global;
            ps->stats.rows_kept_prompt += kept_global;
        }
    }
    ps->n_prompt = n;
    ps->built = 1;
    rc = 0;
    goto done;
oom:
    rc_fail(err, "out of memory compressing the KV cache");
done:
    free_compress_bufs(be, &b);
    free(keep);
    return rc;
}

// ---- decode -----------------------------------------------------------------------

int kvpolicy_attend(kvpolicy_state *ps, int64_t layer, const float *q, const float *k, const float *v, int64_t pos,
                    int owner, float *o, float *lse, int64_t *rows_read, rc_err *err) {
    const backend *be = ps->be;
    const int64_t S = ps->n_store, hd = ps->head_dim, qps = ps->q_per_store;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t s = 0; s < S; s++) {
        ps->held[layer * S + s]++;
        if (!owner) continue;
        const int64_t kvh = kvpolicy_kv_head(ps, s);
        if (kv_store_append(&ps->store, layer, s, pos, k + kvh * hd, v + kvh * hd, err)) return -1;
        ps->sel_hash[layer] ^= hash_set_elem((uint64_t)layer, (uint64_t)s, (uint64_t)pos);
    }
    const int scores = ps->ops->decode_scores;
    if (scores) {
        int64_t need = 0;
        for (int64_t s = 0; s < S; s++) need += qps * kv_store_head_at(&ps->store, layer, s)->count;
        if (need > ps->raw_cap) {
            const int64_t cap = need + need / 2;
            if (ps->raw) be->ops->free(be, ps->raw);
            if (!(ps->raw = be->ops->alloc(be, (size_t)cap * sizeof(float)))) {
                ps->raw_cap = 0;
                return rc_fail(err, "out of memory for attention scores");
            }
            ps->raw_cap = cap;
        }
    }
    int64_t off = 0;
    for (int64_t s = 0; s < S; s++) {
        const int64_t cnt = kv_store_head_at(&ps->store, layer, s)->count;
        kv_view kk = kv_store_k(&ps->store, layer, s), vv = kv_store_v(&ps->store, layer, s);
        const float *qs = q + s * qps * hd;
        if (scores)
            be->ops->attn_decode_scores(be, o + s * qps * hd, lse + s * qps, ps->raw + off, qs, &kk, &vv, cnt, qps, 1,
                                        hd, scale);
        else be->ops->attn_decode(be, o + s * qps * hd, lse + s * qps, qs, &kk, &vv, cnt, qps, 1, hd, scale);
        off += qps * cnt;
        *rows_read += cnt;
    }
    return 0;
}

int kvpolicy_evict(kvpolicy_state *ps, int64_t layer, int64_t head, int64_t i, rc_err *err) {
    const int64_t pos = kv_store_head_at(&ps->store, layer, head)->pos[i];
    if (kv_store_remove(&ps->store, layer, head, i, err)) return -1;
    ps->sel_hash[layer] ^= hash_set_elem((uint64_t)layer, (uint64_t)head, (uint64_t)pos);
    ps->stats.rows_evicted++;
    return 0;
}

int kvpolicy_after_step(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm, rc_err *err) {
    return ps->ops->after_step ? ps->ops->after_step(ps, layer, lse, n_total, cm, err) : 0;
}
