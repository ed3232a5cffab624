#include "policy/kvpolicy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "policy/budget.h"

static const char *const method_names[KV_METHOD_COUNT] = {"streaming", "h2o", "snapkv", "pyramidkv", "adakv", "headkv"};

kvpolicy_opts kvpolicy_default_opts(void) {
    return (kvpolicy_opts){.budget = 1024, .window = 8, .sinks = 4, .pool_kernel = 7, .headkv_beta = 1.5,
                           .pyramid_beta = 20.0, .ada_floor = 0.2};
}

const char *kv_method_name(int method) {
    return method >= 0 && method < KV_METHOD_COUNT ? method_names[method] : "unknown";
}

int kv_method_from_name(const char *name) {
    for (int i = 0; i < KV_METHOD_COUNT; i++)
        if (strcmp(name, method_names[i]) == 0) return i;
    return -1;
}

static int snap_family(int method) {
    return method == KV_METHOD_SNAPKV || method == KV_METHOD_PYRAMIDKV || method == KV_METHOD_ADAKV ||
           method == KV_METHOD_HEADKV;
}

int kvpolicy_opts_validate(int method, const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err) {
    if (method < 0 || method >= KV_METHOD_COUNT) return rc_fail(err, "unknown KV-compression method %d", method);
    if (o->budget < 1) return rc_fail(err, "--kv-budget must be at least 1 (got %lld)", (long long)o->budget);
    if (o->window < 1 || o->window > KVPOLICY_WINDOW_MAX)
        return rc_fail(err, "--kv-window must lie in [1, %d] (got %lld)", KVPOLICY_WINDOW_MAX, (long long)o->window);
    if (o->pool_kernel < 1 || o->pool_kernel % 2 == 0)
        return rc_fail(err, "--kv-pool must be an odd number >= 1 (got %lld)", (long long)o->pool_kernel);
    if (o->sinks < 0) return rc_fail(err, "--kv-sinks must be >= 0 (got %lld)", (long long)o->sinks);
    if (method == KV_METHOD_STREAMING && o->budget <= o->sinks)
        return rc_fail(err, "streaming: --kv-budget %lld leaves no room beside the %lld sink tokens (--kv-sinks)",
                       (long long)o->budget, (long long)o->sinks);
    if (method == KV_METHOD_H2O && o->budget < 2)
        return rc_fail(err, "h2o: --kv-budget must be at least 2 (half heavy hitters, half recent)");
    if (snap_family(method) && o->budget < o->window)
        return rc_fail(err, "%s: --kv-budget %lld is smaller than the observation window %lld (--kv-window)",
                       method_names[method], (long long)o->budget, (long long)o->window);
    if (!(o->headkv_beta > 1.0) || !isfinite(o->headkv_beta))
        return rc_fail(err, "--headkv-beta must be a number > 1 (got %g)", o->headkv_beta);
    if (!(o->pyramid_beta >= 1.0) || !isfinite(o->pyramid_beta))
        return rc_fail(err, "--pyramid-beta must be a number >= 1 (got %g)", o->pyramid_beta);
    if (!(o->ada_floor >= 0.0 && o->ada_floor <= 1.0))
        return rc_fail(err, "--ada-floor must lie in [0, 1] (got %g)", o->ada_floor);
    if (method == KV_METHOD_HEADKV) {
        if (!o->scores) return rc_fail(err, "headkv needs head-importance scores (--head-scores FILE)");
        if (o->scores->n_layer != n_layer || o->scores->n_head != n_head)
            return rc_fail(err, "--head-scores: the scores are for %lld layers x %lld heads, the model has %lld x %lld",
                           (long long)o->scores->n_layer, (long long)o->scores->n_head, (long long)n_layer,
                           (long long)n_head);
    }
    return 0;
}

int kvpolicy_init(kvpolicy_state *ps, int method, const kvpolicy_opts *o, int64_t n_layer, int64_t n_head,
                  int64_t n_kv, int64_t head_dim, int kv_elem, rc_err *err) {
    memset(ps, 0, sizeof(*ps));
    if (kvpolicy_opts_validate(method, o, n_layer, n_head, err)) return -1;
    ps->method = method;
    ps->o = *o;
    ps->n_layer = n_layer;
    ps->n_head = n_head;
    ps->n_kv = n_kv;
    ps->head_dim = head_dim;
    ps->n_store = o->per_query_head ? n_head : n_kv;
    ps->q_per_store = n_head / ps->n_store;
    ps->n_threads = 1;
    if (kv_store_init(&ps->store, n_layer, ps->n_store, head_dim, kv_elem, err)) return -1;
    ps->budget = calloc((size_t)(n_layer * ps->n_store), sizeof(int64_t));
    ps->held = calloc((size_t)(n_layer * ps->n_store), sizeof(int64_t));
    ps->row_buf = malloc(2 * kv_store_row_bytes(&ps->store));
    ps->sel_hash = calloc((size_t)n_layer, sizeof(uint64_t));
    if (!ps->budget || !ps->held || !ps->row_buf || !ps->sel_hash) {
        kvpolicy_free(ps);
        return rc_fail(err, "out of memory for the KV policy");
    }
    return 0;
}

void kvpolicy_free(kvpolicy_state *ps) {
    kv_store_free(&ps->store);
    free(ps->budget);
    free(ps->held);
    free(ps->raw);
    free(ps->row_buf);
    free(ps->sel_hash);
    memset(ps, 0, sizeof(*ps));
}

void kvpolicy_reset(kvpolicy_state *ps) {
    kv_store_clear(&ps->store);
    if (ps->sel_hash) memset(ps->sel_hash, 0, (size_t)ps->n_layer * sizeof(uint64_t));
    ps->built = 0;
    ps->n_prompt = 0;
}

int64_t kvpolicy_kv_head(const kvpolicy_state *ps, int64_t store_head) {
    return store_head * ps->q_per_store / (ps->n_head / ps->n_kv);
}

// ---- compression at the end of the prompt --------------------------------------

// Per-head prompt budgets (window excluded) for the methods that fix them up
// front: (n_layer, n_store).
static int static_budgets(const kvpolicy_state *ps, int64_t b, int64_t *out, rc_err *err) {
    const int64_t L = ps->n_layer, S = ps->n_store;
    if (ps->method == KV_METHOD_PYRAMIDKV) {
        int64_t *per_layer = malloc((size_t)L * sizeof(int64_t));
        if (!per_layer) return rc_fail(err, "out of memory");
        int rc = budget_pyramid(L, b, ps->o.pyramid_beta, per_layer, err);
        for (int64_t l = 0; rc == 0 && l < L; l++)
            for (int64_t s = 0; s < S; s++) out[l * S + s] = per_layer[l];
        free(per_layer);
        return rc;
    }
    if (ps->method == KV_METHOD_HEADKV) {
        double *sc = malloc((size_t)(L * S) * sizeof(double));
        if (!sc) return rc_fail(err, "out of memory");
        if (S == ps->n_head) memcpy(sc, ps->o.scores->score, (size_t)(L * S) * sizeof(double));
        else budget_group_scores(ps->o.scores->score, L, ps->n_head, S, sc);
        int rc = budget_headkv(sc, L * S, b, ps->o.headkv_beta, out, err);
        free(sc);
        return rc;
    }
    for (int64_t i = 0; i < L * S; i++) out[i] = b;
    return 0;
}

typedef struct ada_entry {
    float score;
    int64_t head, pos;
} ada_entry;

static int cmp_ada(const void *a, const void *b) {
    const ada_entry *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->head != y->head) return x->head < y->head ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

// Ada-KV: every head keeps its best `floor` entries; the rest of the layer's
// S * b go to the best remaining entries of any head. lists: (S, k_max) best
// first; returns each head's count in k.
static int ada_allocate(int64_t S, int64_t b, double floor_frac, const scored_pos *lists, int64_t k_max,
                        const int64_t *n_list, int64_t *k, rc_err *err) {
    const int64_t fl = (int64_t)floor(floor_frac * (double)b);
    int64_t pool = S * b, n_rest = 0;
    for (int64_t s = 0; s < S; s++) {
        k[s] = n_list[s] < fl ? n_list[s] : fl;
        pool -= k[s];
        n_rest += n_list[s] - k[s];
    }
    ada_entry *rest = malloc((size_t)(n_rest + 1) * sizeof(ada_entry));
    if (!rest) return rc_fail(err, "out of memory");
    int64_t t = 0;
    for (int64_t s = 0; s < S; s++)
        for (int64_t i = k[s]; i < n_list[s]; i++)
            rest[t++] = (ada_entry){lists[s * k_max + i].score, s, lists[s * k_max + i].pos};
    qsort(rest, (size_t)n_rest, sizeof(ada_entry), cmp_ada);
    // Each head's list is best first, so taking the best entries overall takes
    // a prefix of every list.
    for (int64_t i = 0; i < n_rest && i < pool; i++) k[rest[i].head]++;
    free(rest);
    return 0;
}

int kvpolicy_compress(kvpolicy_state *ps, const backend_ops *be, const prompt_window *win, const shard_ctx *sh,
                      comm *cm, rc_err *err) {
    const int64_t L = ps->n_layer, S = ps->n_store, H = ps->n_head, hd = ps->head_dim, qps = ps->q_per_store;
    const int64_t n = sh->n_total, nl = sh->n_local, B = ps->o.budget;
    const int64_t Wv = win->n < ps->o.window ? win->n : ps->o.window;  // voting positions
    const int64_t w_off = win->n - Wv;
    const float scale = 1.0f / sqrtf((float)hd);
    const int snap = snap_family(ps->method);
    const int keep_all = B >= n;  // a budget that covers the prompt compresses nothing (as SnapKV's reference code)
    const int needs_scores = ps->method == KV_METHOD_H2O || (!keep_all && snap);
    kv_store_clear(&ps->store);
    memset(ps->sel_hash, 0, (size_t)L * sizeof(uint64_t));
    ps->built = 0;

    int rc = -1;
    const int64_t b_prompt = snap ? B - Wv : B;  // SnapKV family: the window is kept on top of the selection
    const int64_t recent = ps->method == KV_METHOD_H2O ? B / 2 : 0;
    int64_t *base = malloc((size_t)(L * S) * sizeof(int64_t));
    int64_t *k = malloc((size_t)S * sizeof(int64_t)), *n_sel = malloc((size_t)S * sizeof(int64_t));
    float *raw = malloc((size_t)(H * nl + 1) * sizeof(float));
    float *agg = malloc((size_t)(S * nl + 1) * sizeof(float)), *pooled = malloc((size_t)(S * nl + 1) * sizeof(float));
    float *o_tmp = malloc((size_t)(H * hd) * sizeof(float)), *lse_tmp = malloc((size_t)H * sizeof(float));
    uint8_t *keep = malloc((size_t)(nl + 1));
    scored_pos *sel = NULL;
    if (!base || !k || !n_sel || !raw || !agg || !pooled || !o_tmp || !lse_tmp || !keep) goto oom;
    if (snap && !keep_all && static_budgets(ps, b_prompt, base, err)) goto done;
    int64_t k_max = 1;
    if (ps->method == KV_METHOD_ADAKV) k_max = S * b_prompt;
    else if (snap)
        for (int64_t i = 0; i < L * S; i++) k_max = base[i] > k_max ? base[i] : k_max;
    else k_max = B;
    if (k_max > n) k_max = n;
    if (k_max < 1) k_max = 1;
    if (!(sel = malloc((size_t)(S * k_max) * sizeof(scored_pos)))) goto oom;

    for (int64_t l = 0; l < L; l++) {
        for (int64_t s = 0; s < S; s++) n_sel[s] = 0;
        if (needs_scores) {
            // Sum over the voting queries (and the query heads a store head
            // serves) of exp(s - lse): each query's exact probabilities.
            kv_view kk = kv_cache_k(sh->kv, l), vv = kv_cache_v(sh->kv, l);
            memset(agg, 0, (size_t)(S * nl) * sizeof(float));
            for (int64_t w = 0; w < Wv; w++) {
                const int64_t pw = n - Wv + w;
                const float *qw = win->q + ((l * win->n) + w_off + w) * H * hd;
                const float *lw = win->lse + ((l * win->n) + w_off + w) * H;
                be->attn_decode_scores(o_tmp, lse_tmp, raw, qw, &kk, &vv, nl, H, ps->n_kv, hd, scale);
                for (int64_t h = 0; h < H; h++) {
                    float *a = agg + (h / qps) * nl;
                    const float *r = raw + h * nl;
                    for (int64_t j = 0; j < nl && sh->slot_pos[j] <= pw; j++) a[j] += expf(r[j] - lw[h]);
                }
            }
            if (qps > 1)
                for (int64_t i = 0; i < S * nl; i++) agg[i] /= (float)qps;
        }
        if (!keep_all && ps->method == KV_METHOD_H2O) {
            for (int64_t s = 0; s < S; s++) k[s] = B - recent;
            if (dist_topk(agg, S, k, k_max, n - recent, sh, cm, sel, n_sel, err)) goto done;
        } else if (!keep_all && snap) {
            const float *scores = agg;
            for (int64_t s = 0; s < S; s++)  // the window is kept anyway: it takes no part in the ranking
                for (int64_t j = 0; j < nl; j++)
                    if (sh->slot_pos[j] >= n - Wv) agg[s * nl + j] = -INFINITY;
            if (ps->o.pool_kernel > 1) {
                if (dist_maxpool(agg, pooled, S, ps->o.pool_kernel, sh, cm, ps->n_threads, err)) goto done;
                scores = pooled;
            }
            for (int64_t s = 0; s < S; s++)  // a head whose budget exceeds the candidates keeps them all
                k[s] = ps->method == KV_METHOD_ADAKV || base[l * S + s] > k_max ? k_max : base[l * S + s];
            if (dist_topk(scores, S, k, k_max, n - Wv, sh, cm, sel, n_sel, err)) goto done;
            if (ps->method == KV_METHOD_ADAKV) {
                if (ada_allocate(S, b_prompt, ps->o.ada_floor, sel, k_max, n_sel, k, err)) goto done;
                for (int64_t s = 0; s < S; s++) n_sel[s] = k[s];
            }
        }
        // This rank's kept rows, in position order.
        for (int64_t s = 0; s < S; s++) {
            memset(keep, 0, (size_t)nl);
            int64_t kept_global = 0;
            if (keep_all) {
                memset(keep, 1, (size_t)nl);
                kept_global = n;
            } else if (ps->method == KV_METHOD_STREAMING) {
                for (int64_t j = 0; j < nl; j++)
                    keep[j] = sh->slot_pos[j] < ps->o.sinks || sh->slot_pos[j] >= n - (B - ps->o.sinks);
                kept_global = B;
            } else {
                const int64_t tail = snap ? Wv : recent;  // always kept: the window, or H2O's recent half
                for (int64_t j = 0; j < nl; j++) keep[j] = sh->slot_pos[j] >= n - tail;
                for (int64_t i = 0; i < n_sel[s]; i++) {
                    int64_t j = dist_find_pos(sh->slot_pos, nl, sel[s * k_max + i].pos);
                    if (j >= 0) keep[j] = 1;
                }
                kept_global = n_sel[s] + tail;
            }
            const int64_t kvh = kvpolicy_kv_head(ps, s);
            for (int64_t j = 0; j < nl; j++) {
                if (!keep[j]) continue;
                const double score = needs_scores ? agg[s * nl + j] : 0.0;
                if (kv_store_append(&ps->store, l, s, sh->slot_pos[j], kv_cache_row(sh->kv, 0, l, kvh, j),
                                    kv_cache_row(sh->kv, 1, l, kvh, j), score, err))
                    goto done;
                ps->sel_hash[l] ^= hash_set_elem((uint64_t)l, (uint64_t)s, (uint64_t)sh->slot_pos[j]);
            }
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
    free(base); free(k); free(n_sel); free(raw); free(agg); free(pooled); free(o_tmp); free(lse_tmp); free(keep);
    free(sel);
    return rc;
}

// ---- decode -----------------------------------------------------------------------

int kvpolicy_attend(kvpolicy_state *ps, const backend_ops *be, int64_t layer, const float *q, const float *k,
                    const float *v, int64_t pos, int owner, float *o, float *lse, int64_t *rows_read, rc_err *err) {
    const int64_t S = ps->n_store, hd = ps->head_dim, qps = ps->q_per_store;
    const size_t row = kv_store_row_bytes(&ps->store);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t s = 0; s < S; s++) {
        ps->held[layer * S + s]++;
        if (!owner) continue;
        const int64_t kvh = kvpolicy_kv_head(ps, s);
        kv_convert_row(ps->row_buf, ps->store.elem, k + kvh * hd, hd);
        kv_convert_row(ps->row_buf + row, ps->store.elem, v + kvh * hd, hd);
        if (kv_store_append(&ps->store, layer, s, pos, ps->row_buf, ps->row_buf + row, 0.0, err)) return -1;
        ps->sel_hash[layer] ^= hash_set_elem((uint64_t)layer, (uint64_t)s, (uint64_t)pos);
    }
    const int h2o = ps->method == KV_METHOD_H2O;
    if (h2o) {
        int64_t need = 0;
        for (int64_t s = 0; s < S; s++) need += qps * kv_store_head_at(&ps->store, layer, s)->count;
        if (need > ps->raw_cap) {
            float *r = realloc(ps->raw, (size_t)need * sizeof(float));
            if (!r) return rc_fail(err, "out of memory for attention scores");
            ps->raw = r;
            ps->raw_cap = need;
        }
    }
    int64_t off = 0;
    for (int64_t s = 0; s < S; s++) {
        const int64_t cnt = kv_store_head_at(&ps->store, layer, s)->count;
        kv_view kk = kv_store_k(&ps->store, layer, s), vv = kv_store_v(&ps->store, layer, s);
        const float *qs = q + s * qps * hd;
        if (h2o) be->attn_decode_scores(o + s * qps * hd, lse + s * qps, ps->raw + off, qs, &kk, &vv, cnt, qps, 1, hd, scale);
        else be->attn_decode(o + s * qps * hd, lse + s * qps, qs, &kk, &vv, cnt, qps, 1, hd, scale);
        off += qps * cnt;
        *rows_read += cnt;
    }
    return 0;
}

typedef struct evict_cand {
    double score;
    int64_t pos;
} evict_cand;

int kvpolicy_after_step(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm, rc_err *err) {
    const int64_t S = ps->n_store, qps = ps->q_per_store, B = ps->o.budget;
    if (ps->method == KV_METHOD_STREAMING) {
        for (int64_t s = 0; s < S; s++) {
            if (ps->held[layer * S + s] <= B) continue;
            const int64_t gone = n_total - 1 - (B - ps->o.sinks);  // the oldest row outside the sinks
            kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
            int64_t i = dist_find_pos(h->pos, h->count, gone);
            if (i >= 0) {
                ps->sel_hash[layer] ^= hash_set_elem((uint64_t)layer, (uint64_t)s, (uint64_t)gone);
                kv_store_remove(&ps->store, layer, s, i);
                ps->stats.rows_evicted++;
            }
            ps->held[layer * S + s]--;
        }
        return 0;
    }
    if (ps->method != KV_METHOD_H2O) return 0;
    // Accumulate this step's attention, then evict the lowest-scoring row
    // outside the recent half wherever a head holds more than its budget.
    const int64_t limit = n_total - B / 2;
    int over = 0;
    evict_cand *mine = calloc((size_t)S, sizeof(evict_cand));
    evict_cand *all = calloc((size_t)(S * cm->size), sizeof(evict_cand));
    if (!mine || !all) {
        free(mine);
        free(all);
        return rc_fail(err, "out of memory");
    }
    int64_t off = 0;
    for (int64_t s = 0; s < S; s++) {
        kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
        const float *r = ps->raw + off;
        for (int64_t j = 0; j < h->count; j++) {
            double p = 0.0;
            for (int64_t g = 0; g < qps; g++) p += expf(r[g * h->count + j] - lse[s * qps + g]);
            h->score[j] += p / (double)qps;
        }
        off += qps * h->count;
        mine[s] = (evict_cand){INFINITY, INT64_MAX};
        for (int64_t j = 0; j < h->count && h->pos[j] < limit; j++)
            if (h->score[j] < mine[s].score || (h->score[j] == mine[s].score && h->pos[j] < mine[s].pos))
                mine[s] = (evict_cand){h->score[j], h->pos[j]};
        over |= ps->held[layer * S + s] > B;
    }
    // held is replicated, so every rank agrees on whether to talk.
    int rc = 0;
    if (over) {
        if (cm->size > 1) rc = comm_allgather(cm, mine, (size_t)S * sizeof(evict_cand), all, err);
        else memcpy(all, mine, (size_t)S * sizeof(evict_cand));
        for (int64_t s = 0; rc == 0 && s < S; s++) {
            if (ps->held[layer * S + s] <= B) continue;
            evict_cand best = {INFINITY, INT64_MAX};
            for (int r = 0; r < cm->size; r++) {
                const evict_cand *c = &all[r * S + s];
                if (c->score < best.score || (c->score == best.score && c->pos < best.pos)) best = *c;
            }
            if (best.pos == INT64_MAX) continue;  // nothing outside the recent half
            kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
            int64_t i = dist_find_pos(h->pos, h->count, best.pos);
            if (i >= 0) {
                ps->sel_hash[layer] ^= hash_set_elem((uint64_t)layer, (uint64_t)s, (uint64_t)best.pos);
                kv_store_remove(&ps->store, layer, s, i);
                ps->stats.rows_evicted++;
            }
            ps->held[layer * S + s]--;
        }
    }
    free(mine);
    free(all);
    return rc;
}
