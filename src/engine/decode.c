// One decode step (design.md §2): every rank runs the same layers on the
// same token; each layer's attention is the method's (engine.c's table):
// full attention over the sharded cache merged across ranks, recycled
// attention over the replicated top-K cache, or a policy's kept rows.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"

int engine_full_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);
int engine_recycled_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);
int engine_policy_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);

// Several ranks: every rank's partial state (in e->state_send: o, lse, and in
// recycled mode the schedule's decision hash) is all-gathered and merged in
// rank order into e->att, e->lse. Every rank merges the same bytes the same
// way, so all end bitwise equal.
static int merge_states(engine *e, int64_t layer, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int R = e->comm->size;
    const int64_t H = c->n_head, q_dim = H * c->head_dim;
    const int64_t extra = e->recycle ? STATE_HASH_FLOATS : 0, stride = q_dim + H + extra;
    const size_t pitch = (size_t)stride * sizeof(float);
    if (e->recycle) be->ops->upload(be, e->state_send + q_dim + H, &e->recycle->decision_hash, sizeof(uint64_t));
    if (comm_allgather_buf(e->comm, be, e->state_send, pitch, e->state_recv, err)) return -1;
    be->ops->copy_2d(be, e->o_parts, (size_t)q_dim * sizeof(float), e->state_recv, pitch,
                     (size_t)q_dim * sizeof(float), R);
    be->ops->copy_2d(be, e->lse_parts, (size_t)H * sizeof(float), e->state_recv + q_dim, pitch, (size_t)H * sizeof(float),
                     R);
    if (e->recycle) {  // ranks that drifted apart are caught here, at the next full step
        be->ops->copy_2d(be, e->hashes, sizeof(uint64_t), e->state_recv + q_dim + H, pitch, sizeof(uint64_t), R);
        be->ops->download(be, e->hashes_host, e->hashes, (size_t)R * sizeof(uint64_t));
        for (int r = 0; r < R; r++)
            if (e->hashes_host[r] != e->recycle->decision_hash)
                return rc_fail(err, "ranks %d and %d disagree on the recycled-attention schedule (layer %lld, step %lld)",
                               e->comm->rank, r, (long long)layer, (long long)e->recycle->step);
    }
    be->ops->merge(be, e->att, e->lse, e->o_parts, e->lse_parts, R, H, c->head_dim);
    return 0;
}

// The hook that sees a full layer's raw scores (host copies); lse: the
// global lse (backend buffer).
int engine_hook_scores(engine *e, int64_t layer, int64_t n_total, int64_t n_keys, const float *lse, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int64_t need = c->n_head * n_keys;
    if (need > e->hook_scores_cap) {
        float *p = realloc(e->hook_scores, (size_t)(need > 0 ? need : 1) * sizeof(float));
        if (!p) return rc_fail(err, "out of memory copying attention scores");
        e->hook_scores = p;
        e->hook_scores_cap = need;
    }
    e->be->ops->download(e->be, e->hook_scores, e->raw_scores, (size_t)need * sizeof(float));
    e->be->ops->download(e->be, e->hook_lse, lse, (size_t)c->n_head * sizeof(float));
    e->opts.on_attention_scores(e->opts.hook_user, layer, n_total, e->hook_scores, e->slot_pos, n_keys, e->hook_lse);
    return 0;
}

// Full attention for one layer: this rank's shard, merged across ranks. In
// recycled mode the scores of the shard's keys rebuild the layer's recycled cache.
int engine_full_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int R = e->comm->size;
    const int64_t hd = c->head_dim, q_dim = c->n_head * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    // One rank: the final state. Several: this rank's partial state, sent out by the merge.
    float *o_mine = R == 1 ? e->att : e->state_send, *lse_mine = R == 1 ? e->lse : e->state_send + q_dim;
    if (e->raw_scores)
        be->ops->attn_decode_scores(be, o_mine, lse_mine, e->raw_scores, e->q, &kk, &vv, n_keys, c->n_head,
                                    c->n_head_kv, hd, scale);
    else be->ops->attn_decode(be, o_mine, lse_mine, e->q, &kk, &vv, n_keys, c->n_head, c->n_head_kv, hd, scale);
    if (R > 1 && merge_states(e, layer, err)) return -1;
    e->last_step.kv_bytes_read += n_keys * (int64_t)kv_cache_bytes_per_pos(&e->kv) / c->n_layer;
    engine_hook_full_attention(e, layer, e->n_past + 1, e->q, e->lse);
    if (e->opts.on_attention_scores && engine_hook_scores(e, layer, e->n_past + 1, n_keys, e->lse, err)) return -1;
    if (e->recycle &&
        engine_rebuild_recycled(e, layer, e->raw_scores, e->lse, e->query_mean, n_keys, e->n_past + 1, err))
        return -1;
    return 1;
}

// Recycled attention for one layer, unless the schedule asks for a full
// step: the new token joins the replicated recycled cache, which the query
// attends over, locally.
int engine_recycled_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    recycle_state *rs = e->recycle;
    const float *qm = NULL;
    // Recycled attention set on a prefilled prompt (eval, bench): with
    // --recycle-query window the prompt's window builds the first cache, as
    // at the end of a recycled prefill; else this step runs full and its query does.
    if (!rs->built[layer] && rs->o.query == RECYCLE_QUERY_WINDOW && e->win_n > 0 && e->n_past == e->n_prompt_end &&
        engine_rebuild_recycled_window(e, layer, e->win_n, e->query_mean, e->n_local, e->n_past, err))
        return -1;
    if (recycle_needs_query(rs, layer)) {
        be->ops->download(be, e->query_mean_host, e->query_mean, (size_t)c->head_dim * sizeof(float));
        qm = e->query_mean_host;
    }
    if (recycle_layer_is_full(rs, layer, qm)) return engine_full_layer(e, layer, pos, mine, n_keys, err);
    recycle_cache *rc = &rs->cache;
    const int64_t hd = c->head_dim, group = c->n_head / c->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    recycle_cache_append(rc, layer, pos, e->k, e->v);
    int64_t rows = 0;
    if (rc->uniform) {  // every head holds the same count: one call for the layer
        kv_view kk = recycle_cache_k(rc, layer), vv = recycle_cache_v(rc, layer);
        rows = recycle_cache_count(rc, layer, 0);
        be->ops->attn_decode(be, e->att, e->lse, e->q, &kk, &vv, rows, c->n_head, c->n_head_kv, hd, scale);
        rows *= c->n_head_kv;
    } else {  // HeadKV budgets: each KV head with its own rows
        for (int64_t h = 0; h < c->n_head_kv; h++) {
            kv_view kk = recycle_cache_head_k(rc, layer, h), vv = recycle_cache_head_v(rc, layer, h);
            const int64_t n = recycle_cache_count(rc, layer, h);
            be->ops->attn_decode(be, e->att + h * group * hd, e->lse + h * group, e->q + h * group * hd, &kk, &vv, n,
                                 group, 1, hd, scale);
            rows += n;
        }
    }
    e->last_step.kv_bytes_read += rows * 2 * (int64_t)kv_cache_row_bytes(&rc->rows);
    return 0;
}

// A KV-compression policy's layer: this rank's kept rows, merged across
// ranks; then the policy updates its scores and evicts.
int engine_policy_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int R = e->comm->size;
    const int64_t q_dim = c->n_head * c->head_dim;
    float *o_mine = R == 1 ? e->att : e->state_send, *lse_mine = R == 1 ? e->lse : e->state_send + q_dim;
    int64_t rows = 0;
    if (kvpolicy_attend(e->policy, layer, e->q, e->k, e->v, pos, mine, o_mine, lse_mine, &rows, err)) return -1;
    if (R > 1 && merge_states(e, layer, err)) return -1;
    e->last_step.kv_bytes_read += rows * 2 * (int64_t)kv_store_row_bytes(&e->policy->store);
    if (e->opts.on_policy_step) {
        const backend *be = e->be;
        be->ops->download(be, e->hook_q, e->q, (size_t)q_dim * sizeof(float));
        be->ops->download(be, e->hook_k, e->k, (size_t)(c->n_head_kv * c->head_dim) * sizeof(float));
        be->ops->download(be, e->hook_lse, e->lse, (size_t)c->n_head * sizeof(float));
        e->opts.on_policy_step(e->opts.hook_user, layer, pos, e->hook_q, e->hook_k, e->hook_lse);
    }
    if (kvpolicy_after_step(e->policy, layer, e->lse, pos + 1, e->comm, err)) return -1;
    return 1;
}

// rmsnorm -> q, k, v (+ biases) -> RoPE for the one token at e->pos[0]; the
// recycled schedule's mean query is taken before RoPE (the rotation changes
// with position by construction, the content does not).
static void project_token(engine *e, int64_t layer) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const engine_layer_weights *W = &e->w.layers[layer];
    const int64_t hd = c->head_dim;
    be->ops->rmsnorm(be, e->xn, e->x, weight_f32(&W->attn_norm), 1, c->d_model, c->rms_eps);
    be->ops->matmul(be, e->q, e->xn, &W->wq, 1);
    be->ops->matmul(be, e->k, e->xn, &W->wk, 1);
    be->ops->matmul(be, e->v, e->xn, &W->wv, 1);
    if (W->bq.data) be->ops->add_bias(be, e->q, weight_f32(&W->bq), 1, c->n_head * hd);
    if (W->bk.data) be->ops->add_bias(be, e->k, weight_f32(&W->bk), 1, c->n_head_kv * hd);
    if (W->bv.data) be->ops->add_bias(be, e->v, weight_f32(&W->bv), 1, c->n_head_kv * hd);
    if (e->recycle) be->ops->mean_heads(be, e->query_mean, e->q, c->n_head, hd);
    be->ops->rope(be, e->q, 1, c->n_head, hd, e->pos, &e->w.rope);
    be->ops->rope(be, e->k, 1, c->n_head_kv, hd, e->pos, &e->w.rope);
}

// Output projection, residual, rmsnorm, SwiGLU MLP, residual.
static void finish_token(engine *e, int64_t layer) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const engine_layer_weights *W = &e->w.layers[layer];
    const int64_t d = c->d_model;
    be->ops->matmul(be, e->proj, e->att, &W->wo, 1);
    be->ops->add(be, e->x, e->proj, d);
    be->ops->rmsnorm(be, e->xn, e->x, weight_f32(&W->ffn_norm), 1, d, c->rms_eps);
    be->ops->matmul(be, e->gate, e->xn, &W->w_gate, 1);
    be->ops->matmul(be, e->up, e->xn, &W->w_up, 1);
    be->ops->swiglu(be, e->gate, e->gate, e->up, c->ffn_dim);
    be->ops->matmul(be, e->proj, e->gate, &W->w_down, 1);
    be->ops->add(be, e->x, e->proj, d);
}

static void record_step(engine *e, const comm_counters *before, const recycle_stats *rs_before, double dt) {
    engine_step *st = &e->last_step;
    const comm_counters *after = &e->comm->counters[COMM_PHASE_DECODE];
    st->seconds = dt;
    st->comm_calls = after->n_calls - before->n_calls;
    st->comm_bytes = (after->bytes_sent - before->bytes_sent) + (after->bytes_recv - before->bytes_recv);
    st->rows_reused = e->recycle ? e->recycle->stats.rows_reused - rs_before->rows_reused : 0;
    st->rows_fetched = e->recycle ? e->recycle->stats.rows_fetched - rs_before->rows_fetched : 0;
    e->stats.decode_seconds += dt;
    e->stats.n_decode_tokens += 1;
    e->stats.kv_bytes_read += st->kv_bytes_read;
    if (st->n_full_layers > 0) {
        e->stats.n_full_steps++;
        e->stats.full_step_seconds += dt;
    }
}

static int decode_step(engine *e, int32_t token, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    comm *cm = e->comm;
    if (engine_check_tokens(e, &token, 1, err)) return -1;
    if (e->n_past == 0 && engine_begin_sequence(e, 0, err)) return -1;  // a sequence that starts without a prompt
    const int64_t pos = e->n_past;
    const int mine = shard_owner(&e->plan, pos) == cm->rank;
    if (e->policy && !e->policy->built && engine_compress_prompt(e, err)) return -1;
    if (e->policy) kvpolicy_begin_step(e->policy);  // the cuts a trace reports are this step's
    const int keep_full = e->method->keeps_full;  // a policy holds its own rows; the full cache takes no new ones
    if (keep_full && mine && e->n_local >= e->kv.capacity)
        return rc_fail(err, "KV shard full at position %lld (capacity %lld)", (long long)pos, (long long)e->kv.capacity);
    const int prev_phase = cm->phase;
    cm->phase = COMM_PHASE_DECODE;
    const comm_counters before = cm->counters[COMM_PHASE_DECODE];
    const recycle_stats rs_before = e->recycle ? e->recycle->stats : (recycle_stats){0};
    const double t0 = engine_now_seconds();
    engine_step *st = &e->last_step;
    st->pos = pos;
    st->n_full_layers = 0;
    st->kv_bytes_read = 0;
    if (e->recycle) recycle_begin_step(e->recycle);

    be->ops->embed(be, e->x, &e->w.tok_embd, &token, 1);
    e->pos[0] = pos;
    if (keep_full && mine) e->slot_pos[e->n_local] = pos;
    const int64_t n_keys = e->n_local + (keep_full && mine);
    int rc = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        project_token(e, l);
        if (keep_full && mine && kv_cache_store(&e->kv, l, e->n_local, 1, e->k, e->v, err)) {  // every token
            rc = -1;
            break;
        }
        const int full = e->method->layer(e, l, pos, mine, n_keys, err);
        if (full < 0) {
            rc = -1;
            break;
        }
        st->layer_full[l] = (uint8_t)full;
        st->n_full_layers += full;
        if (full) e->stats.layer_full[l]++;
        else e->stats.layer_recycled[l]++;
        finish_token(e, l);
    }
    cm->phase = prev_phase;
    if (rc) return rc;
    be->ops->rmsnorm(be, e->xn, e->x, weight_f32(&e->w.output_norm), 1, c->d_model, c->rms_eps);
    be->ops->matmul(be, e->logits, e->xn, &e->w.output, 1);
    be->ops->download(be, e->logits_host, e->logits, (size_t)c->n_vocab * sizeof(float));
    if (be->ops->synchronize && be->ops->synchronize(be, err)) return -1;
    if (keep_full && mine) e->n_local++;
    e->n_past++;
    record_step(e, &before, &rs_before, engine_now_seconds() - t0);
    return 0;
}

int engine_decode(engine *e, int32_t token, rc_err *err) {
    const int rc = decode_step(e, token, err);
    e->failed |= rc != 0;
    return rc;
}
