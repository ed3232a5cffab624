// The prefill of a prompt (design.md §2): every rank computes q, k, v for the
// positions it owns, the layer's K/V rows are all-gathered so each rank
// attends causally over the whole prompt, and each keeps only its own rows.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "kv/kv_exchange.h"

#define LOGITS_CHUNK 64  // rows of logits computed (and downloaded) at once for logits_all

// This rank's rows of one prefill: positions and tokens (host), per-layer
// activations of every local row (backend).
typedef struct prefill_rows {
    int64_t n;            // local rows
    int64_t *pos;         // (n) ascending absolute positions
    int32_t *tok;         // (n)
    float *x, *q, *k, *v, *att;
    size_t n_bytes;
} prefill_rows;

static void free_rows(const engine *e, prefill_rows *b) {
    free(b->pos);
    free(b->tok);
    float *dev[] = {b->x, b->q, b->k, b->v, b->att};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) e->be->ops->free(e->be, dev[i]);
    memset(b, 0, sizeof(*b));
}

static int alloc_rows(engine *e, const shard_ranges *mine, const int32_t *tokens, prefill_rows *b, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int64_t d = c->d_model, q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    for (int s = 0; s < mine->n; s++) b->n += mine->end[s] - mine->start[s];
    const int64_t L = b->n > 0 ? b->n : 1;
    b->pos = malloc((size_t)L * sizeof(int64_t));
    b->tok = malloc((size_t)L * sizeof(int32_t));
    b->x = be->ops->alloc(be, (size_t)(L * d) * sizeof(float));
    b->q = be->ops->alloc(be, (size_t)(L * q_dim) * sizeof(float));
    b->k = be->ops->alloc(be, (size_t)(L * kv_dim) * sizeof(float));
    b->v = be->ops->alloc(be, (size_t)(L * kv_dim) * sizeof(float));
    b->att = be->ops->alloc(be, (size_t)(L * q_dim) * sizeof(float));
    b->n_bytes = (size_t)L * (size_t)(d + 2 * q_dim + 2 * kv_dim) * sizeof(float);
    if (!b->pos || !b->tok || !b->x || !b->q || !b->k || !b->v || !b->att)
        return rc_fail(err, "out of memory for prefill buffers (%zu MiB)", b->n_bytes >> 20);
    int64_t i = 0;
    for (int s = 0; s < mine->n; s++)
        for (int64_t p = mine->start[s]; p < mine->end[s]; p++, i++) {
            b->pos[i] = p;
            b->tok[i] = tokens[p - e->n_past];
        }
    return 0;
}

// rmsnorm -> q, k, v projections (+ biases) -> RoPE, block by block. The
// recycled cache's first selection also needs the last query's mean over
// heads before RoPE (the dynamic schedule compares content, not position).
static void project_qkv(engine *e, int64_t layer, prefill_rows *b, int64_t i_last, float *last_qmean) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const engine_layer_weights *W = &e->w.layers[layer];
    const int64_t d = c->d_model, hd = c->head_dim, B = e->opts.prefill_block;
    const int64_t q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    for (int64_t r0 = 0; r0 < b->n; r0 += B) {
        const int64_t nb = b->n - r0 < B ? b->n - r0 : B;
        float *q = b->q + r0 * q_dim, *k = b->k + r0 * kv_dim, *v = b->v + r0 * kv_dim;
        be->ops->rmsnorm(be, e->xn, b->x + r0 * d, weight_f32(&W->attn_norm), nb, d, c->rms_eps);
        be->ops->matmul(be, q, e->xn, &W->wq, nb);
        be->ops->matmul(be, k, e->xn, &W->wk, nb);
        be->ops->matmul(be, v, e->xn, &W->wv, nb);
        if (W->bq.data) be->ops->add_bias(be, q, weight_f32(&W->bq), nb, q_dim);
        if (W->bk.data) be->ops->add_bias(be, k, weight_f32(&W->bk), nb, kv_dim);
        if (W->bv.data) be->ops->add_bias(be, v, weight_f32(&W->bv), nb, kv_dim);
        if (i_last >= r0 && i_last < r0 + nb) be->ops->mean_heads(be, last_qmean, b->q + i_last * q_dim, c->n_head, hd);
        be->ops->rope(be, q, nb, c->n_head, hd, b->pos + r0, &e->w.rope);
        be->ops->rope(be, k, nb, c->n_head_kv, hd, b->pos + r0, &e->w.rope);
    }
}

// Causal attention of every local row over keys k/v (the whole prompt so
// far), block by block. Rows in the prompt's last window keep their query
// and lse (the policies' vote); in recycled mode the last row's query and
// lse go to state_send for the first cache.
static void attend_causal(engine *e, int64_t layer, prefill_rows *b, const kv_view *kk, const kv_view *vv,
                          int64_t win_start, int64_t i_last) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int64_t hd = c->head_dim, H = c->n_head, q_dim = H * hd, B = e->opts.prefill_block;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int64_t r0 = 0; r0 < b->n;) {
        // Blocks never straddle a gap in this rank's positions (zigzag): pos0 must hold for the whole block.
        int64_t nb = 1;
        while (nb < B && r0 + nb < b->n && b->pos[r0 + nb] == b->pos[r0] + nb) nb++;
        be->ops->attn_prefill(be, b->att + r0 * q_dim, e->lse, b->q + r0 * q_dim, nb, b->pos[r0], kk, vv, H,
                              c->n_head_kv, hd, scale);
        for (int64_t i = 0; i < nb; i++) {
            const int64_t w = b->pos[r0 + i] - win_start;
            if (w >= 0) {
                const int64_t row = layer * KVPOLICY_WINDOW_MAX + w;
                be->ops->copy(be, e->win_q + row * q_dim, b->q + (r0 + i) * q_dim, (size_t)q_dim * sizeof(float));
                be->ops->copy(be, e->win_lse + row * H, e->lse + i * H, (size_t)H * sizeof(float));
            }
            if (r0 + i == i_last) {
                be->ops->copy(be, e->state_send, b->q + i_last * q_dim, (size_t)q_dim * sizeof(float));
                be->ops->copy(be, e->state_send + q_dim, e->lse + i * H, (size_t)H * sizeof(float));
            }
        }
        r0 += nb;
    }
}

// The owner of the last position broadcasts its query, lse and mean query
// (state_send); every rank scores its own keys against that query and the
// layer's recycled cache is built from the exact global probabilities. With
// --recycle-query window the prompt's last W queries choose instead: their
// owners share this layer's rows first (the vote's rows, kv_share_window).
static int first_recycled_cache(engine *e, int64_t layer, int64_t n_keys, int64_t n_total, int owner_last,
                                int64_t win_n, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int64_t q_dim = c->n_head * c->head_dim;
    float *pay = e->state_send;
    if (e->comm->size > 1 &&
        comm_bcast_buf(e->comm, be, pay, (size_t)(q_dim + c->n_head + c->head_dim) * sizeof(float), owner_last, err))
        return -1;
    engine_hook_full_attention(e, layer, n_total, pay, pay + q_dim);
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    const int window = e->recycle->o.query == RECYCLE_QUERY_WINDOW;
    if (!window || e->opts.on_attention_scores)
        be->ops->attn_decode_scores(be, e->att, e->lse, e->raw_scores, pay, &kk, &vv, n_keys, c->n_head,
                                    c->n_head_kv, c->head_dim, 1.0f / sqrtf((float)c->head_dim));
    if (e->opts.on_attention_scores && engine_hook_scores(e, layer, n_total, n_keys, pay + q_dim, err)) return -1;
    if (!window)
        return engine_rebuild_recycled(e, layer, e->raw_scores, pay + q_dim, pay + q_dim + c->n_head, n_keys,
                                       n_total, err);
    const int64_t W = e->recycle->o.query_window, row0 = layer * KVPOLICY_WINDOW_MAX + win_n - W;
    if (W <= win_n && e->comm->size > 1 &&
        kv_share_window(be, e->comm, &e->plan, n_total - W, W, e->win_q + row0 * q_dim, e->win_lse + row0 * c->n_head,
                        1, KVPOLICY_WINDOW_MAX, q_dim, c->n_head, err))
        return -1;
    return engine_rebuild_recycled_window(e, layer, win_n, pay + q_dim + c->n_head, n_keys, n_total, err);
}

// Output projection, residual, rmsnorm, SwiGLU MLP, residual, block by block.
static void finish_layer(engine *e, int64_t layer, prefill_rows *b) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const engine_layer_weights *W = &e->w.layers[layer];
    const int64_t d = c->d_model, q_dim = c->n_head * c->head_dim, B = e->opts.prefill_block;
    for (int64_t r0 = 0; r0 < b->n; r0 += B) {
        const int64_t nb = b->n - r0 < B ? b->n - r0 : B;
        float *xr = b->x + r0 * d;
        be->ops->matmul(be, e->proj, b->att + r0 * q_dim, &W->wo, nb);
        be->ops->add(be, xr, e->proj, nb * d);
        be->ops->rmsnorm(be, e->xn, xr, weight_f32(&W->ffn_norm), nb, d, c->rms_eps);
        be->ops->matmul(be, e->gate, e->xn, &W->w_gate, nb);
        be->ops->matmul(be, e->up, e->xn, &W->w_up, nb);
        be->ops->swiglu(be, e->gate, e->gate, e->up, nb * c->ffn_dim);
        be->ops->matmul(be, e->proj, e->gate, &W->w_down, nb);
        be->ops->add(be, xr, e->proj, nb * d);
    }
}

// The last position's logits on every rank: its owner sends its final
// hidden state; every rank then computes the same logits from the same bits.
// With logits_all (one rank) every row's logits reach the host.
static int final_logits(engine *e, prefill_rows *b, int64_t n_total, float *logits_all, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int64_t d = c->d_model, V = c->n_vocab;
    if (logits_all) {  // one rank: every row is local, in position order
        int64_t chunk = b->n < LOGITS_CHUNK ? b->n : LOGITS_CHUNK;
        if (chunk > e->opts.prefill_block) chunk = e->opts.prefill_block;  // e->xn holds one block
        float *out = be->ops->alloc(be, (size_t)(chunk * V) * sizeof(float));
        if (!out) return rc_fail(err, "out of memory for prefill logits");
        for (int64_t r0 = 0; r0 < b->n; r0 += chunk) {
            const int64_t nb = b->n - r0 < chunk ? b->n - r0 : chunk;
            be->ops->rmsnorm(be, e->xn, b->x + r0 * d, weight_f32(&e->w.output_norm), nb, d, c->rms_eps);
            be->ops->matmul(be, out, e->xn, &e->w.output, nb);
            be->ops->download(be, logits_all + r0 * V, out, (size_t)(nb * V) * sizeof(float));
        }
        be->ops->free(be, out);
        be->ops->upload(be, e->logits, logits_all + (b->n - 1) * V, (size_t)V * sizeof(float));
        be->ops->download(be, e->logits_host, e->logits, (size_t)V * sizeof(float));
        return 0;
    }
    const int64_t last = n_total - 1;
    const int R = e->comm->size, owner = R == 1 ? 0 : shard_owner(&e->plan, last);
    if (owner == e->comm->rank) {
        int64_t i = 0;
        while (b->pos[i] != last) i++;
        be->ops->rmsnorm(be, e->xn, b->x + i * d, weight_f32(&e->w.output_norm), 1, d, c->rms_eps);
    }
    if (R > 1 && comm_bcast_buf(e->comm, be, e->xn, (size_t)d * sizeof(float), owner, err)) return -1;
    be->ops->matmul(be, e->logits, e->xn, &e->w.output, 1);
    be->ops->download(be, e->logits_host, e->logits, (size_t)V * sizeof(float));
    return 0;
}

static int prefill_layers(engine *e, prefill_rows *b, kv_exchange *x, int64_t n, int64_t n_total, int64_t win_start,
                          engine_progress_fn progress, void *user, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int R = e->comm->size;
    const int64_t slot0 = e->n_local;
    // Recycled mode: the last position's query builds every layer's recycled
    // cache. Its owner holds it as its last row (positions ascend per rank).
    const int owner_last = R == 1 ? 0 : shard_owner(&e->plan, n_total - 1);
    const int64_t i_last = e->recycle && owner_last == e->comm->rank ? b->n - 1 : -1;
    float *last_qmean = e->state_send + c->n_head * c->head_dim + c->n_head;
    for (int64_t l = 0; l < c->n_layer; l++) {
        project_qkv(e, l, b, i_last, last_qmean);
        if (kv_cache_store(&e->kv, l, slot0, b->n, b->k, b->v, err)) return -1;
        // Keys for causal attention: one rank reads its own cache (slot ==
        // position); several all-gather every rank's rows of this layer, in
        // cache precision, so each attends over exactly what one process would.
        kv_view kk = kv_cache_k(&e->kv, l), vv = kv_cache_v(&e->kv, l);
        if (R > 1 && kv_exchange_layer(x, &e->kv, l, e->comm, &kk, &vv, err)) return -1;
        attend_causal(e, l, b, &kk, &vv, win_start, i_last);
        if (e->recycle && first_recycled_cache(e, l, slot0 + b->n, n_total, owner_last, n_total - win_start, err))
            return -1;
        finish_layer(e, l, b);
        if (progress) progress(user, (l + 1) * n / c->n_layer, n);
    }
    return 0;
}

static int prefill_seq(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err) {
    comm *cm = e->comm;
    const int R = cm->size;
    if (n <= 0) return rc_fail(err, "empty prompt: nothing to process");
    if (engine_check_tokens(e, tokens, n, err)) return -1;
    if (R > 1 && e->n_past > 0) return rc_fail(err, "on several ranks a sequence has a single prefill (at position 0)");
    if (R > 1 && logits_all) return rc_fail(err, "logits for every position are only available on one rank");
    if (e->policy && e->n_past > 0)
        return rc_fail(err, "under %s a sequence has a single prefill", attention_kind_name(e->opts.attention));
    if (e->n_past == 0 && engine_begin_sequence(e, n, err)) return -1;
    const int64_t n_total = e->n_past + n;
    const int prev_phase = cm->phase;
    cm->phase = COMM_PHASE_PREFILL;
    const double t0 = engine_now_seconds();

    // This rank's rows: all new positions on one rank, its prompt ranges otherwise.
    shard_ranges mine = {.n = 1, .start = {e->n_past}, .end = {n_total}};
    if (R > 1) mine = shard_prompt_ranges(&e->plan, cm->rank);
    prefill_rows b = {0};
    kv_exchange x = {0};
    int rc = alloc_rows(e, &mine, tokens, &b, err);
    if (rc == 0 && e->n_local + b.n > e->kv.capacity)
        rc = rc_fail(err, "KV shard full: %lld + %lld positions exceed its capacity %lld", (long long)e->n_local,
                     (long long)b.n, (long long)e->kv.capacity);
    if (rc == 0 && R > 1) rc = kv_exchange_init(&x, e->be, &e->plan, cm->rank, &e->kv, e->n_local, err);
    const int64_t win_n = n < KVPOLICY_WINDOW_MAX ? n : KVPOLICY_WINDOW_MAX, win_start = n_total - win_n;
    if (rc == 0) {
        e->stats.prefill_transient_bytes = b.n_bytes + x.n_bytes;
        for (int64_t i = 0; i < b.n; i++) e->slot_pos[e->n_local + i] = b.pos[i];
        e->be->ops->embed(e->be, b.x, &e->w.tok_embd, b.tok, b.n);
        rc = prefill_layers(e, &b, &x, n, n_total, win_start, progress, user, err);
    }
    if (rc == 0) rc = final_logits(e, &b, n_total, logits_all, err);
    // Several ranks: the window's rows are shared only when a policy may use
    // them (a policy is set, or the prompt is kept for switching methods).
    const int share = R == 1 || e->policy || e->opts.retain_prompt_cache;
    if (rc == 0 && R > 1 && share)
        rc = kv_share_window(e->be, cm, &e->plan, win_start, win_n, e->win_q, e->win_lse, e->m->cfg.n_layer,
                             KVPOLICY_WINDOW_MAX, e->m->cfg.n_head * e->m->cfg.head_dim, e->m->cfg.n_head, err);
    if (rc == 0 && e->be->ops->synchronize) rc = e->be->ops->synchronize(e->be, err);
    const int64_t n_rows = b.n;
    free_rows(e, &b);
    kv_exchange_free(&x);
    cm->phase = prev_phase;
    if (rc) return rc;
    e->n_local += n_rows;
    e->n_past = n_total;
    e->n_prompt_end = n_total;
    e->win_n = share ? win_n : 0;
    if (e->recycle) e->recycle->step = 0;
    if (e->policy && engine_compress_prompt(e, err)) return -1;
    e->stats.prefill_seconds += engine_now_seconds() - t0;
    e->stats.n_prefill_tokens += n;
    return 0;
}

int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err) {
    const int rc = prefill_seq(e, tokens, n, logits_all, progress, user, err);
    e->failed |= rc != 0;
    return rc;
}
