#include "engine/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/quant.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

engine_opts engine_default_opts(void) {
    return (engine_opts){.n_ctx = 0, .n_threads = 1, .kv_elem = KV_F16, .prefill_block = 512,
                         .attention = ATTENTION_FULL, .recycle = recycle_default_opts(),
                         .policy = kvpolicy_default_opts()};
}

const char *attention_kind_name(int kind) {
    if (attention_kind_is_policy(kind)) return kv_method_name(kind - ATTENTION_STREAMING);
    return kind == ATTENTION_RECYCLED ? "recycled" : kind == ATTENTION_FULL ? "full" : "unknown";
}

int attention_kind_from_name(const char *name) {
    if (strcmp(name, "full") == 0) return ATTENTION_FULL;
    if (strcmp(name, "recycled") == 0) return ATTENTION_RECYCLED;
    int m = kv_method_from_name(name);
    return m < 0 ? -1 : ATTENTION_STREAMING + m;
}

// Floats after each rank's (o, lse) in a recycled-mode decode state: the
// schedule's decision hash, so ranks that drifted apart are caught at the
// next full step without a call of their own.
#define STATE_HASH_FLOATS 2

static float *alloc_f32(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static size_t kv_elem_bytes(int elem) { return elem == KV_F16 ? 2 : 4; }

int engine_init(engine *e, const model *m, const engine_opts *opts, rc_err *err) {
    memset(e, 0, sizeof(*e));
    const model_config *c = &m->cfg;
    e->m = m;
    e->opts = *opts;
    e->be = opts->backend ? opts->backend : &backend_cpu;
    e->comm = opts->comm ? opts->comm : (e->own_comm = comm_null_create());
    if (!e->comm) return rc_fail(err, "out of memory");
    if (e->opts.n_ctx <= 0) e->opts.n_ctx = c->n_ctx_train;
    if (e->opts.prefill_block <= 0) e->opts.prefill_block = 512;
    if (e->opts.n_threads <= 0) e->opts.n_threads = 1;
    backend_cpu_set_threads(e->opts.n_threads);
    const int64_t B = e->opts.prefill_block, R = e->comm->size;
    const int64_t q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    e->logits = alloc_f32(c->n_vocab);
    e->x = alloc_f32(B * c->d_model);
    e->xn = alloc_f32(B * c->d_model);
    e->proj = alloc_f32(B * c->d_model);
    e->q = alloc_f32(B * q_dim);
    e->att = alloc_f32(B * q_dim);
    e->k = alloc_f32(B * kv_dim);
    e->v = alloc_f32(B * kv_dim);
    e->gate = alloc_f32(B * c->ffn_dim);
    e->up = alloc_f32(B * c->ffn_dim);
    e->lse = alloc_f32(B * c->n_head);
    e->pos = malloc((size_t)B * sizeof(int64_t));
    e->o_parts = alloc_f32(R * q_dim);
    e->lse_parts = alloc_f32(R * c->n_head);
    // The state also carries, at prefill end, the last query's mean (head_dim).
    const int64_t state_max = q_dim + c->n_head + c->head_dim + STATE_HASH_FLOATS;
    e->state_send = alloc_f32(state_max);
    e->state_recv = alloc_f32(R * state_max);
    e->query_mean = alloc_f32(c->head_dim);
    e->win_q = alloc_f32(c->n_layer * KVPOLICY_WINDOW_MAX * q_dim);
    e->win_lse = alloc_f32(c->n_layer * KVPOLICY_WINDOW_MAX * c->n_head);
    e->stats.layer_full = calloc((size_t)c->n_layer, sizeof(int64_t));
    e->stats.layer_recycled = calloc((size_t)c->n_layer, sizeof(int64_t));
    e->last_step.layer_full = calloc((size_t)c->n_layer, 1);
    if (!e->logits || !e->x || !e->xn || !e->proj || !e->q || !e->att || !e->k || !e->v || !e->gate || !e->up ||
        !e->lse || !e->pos || !e->o_parts || !e->lse_parts || !e->state_send ||
        !e->state_recv || !e->query_mean || !e->stats.layer_full || !e->stats.layer_recycled ||
        !e->last_step.layer_full || !e->win_q || !e->win_lse) {
        engine_free(e);
        return rc_fail(err, "out of memory allocating engine buffers");
    }
    if (engine_set_attention(e, opts->attention, &opts->recycle, &opts->policy, err)) {
        engine_free(e);
        return -1;
    }
    return 0;
}

void engine_free(engine *e) {
    kv_cache_free(&e->kv);
    free(e->slot_pos);
    free(e->logits); free(e->x); free(e->xn); free(e->proj); free(e->q); free(e->att);
    free(e->k); free(e->v); free(e->gate); free(e->up); free(e->lse); free(e->pos);
    free(e->o_parts); free(e->lse_parts); free(e->state_send); free(e->state_recv);
    free(e->raw_scores); free(e->query_mean); free(e->win_q); free(e->win_lse);
    free(e->stats.layer_full); free(e->stats.layer_recycled); free(e->last_step.layer_full);
    if (e->recycle) {
        recycle_free(e->recycle);
        free(e->recycle);
    }
    if (e->policy) {
        kvpolicy_free(e->policy);
        free(e->policy);
    }
    if (e->own_comm) comm_destroy(e->own_comm);
    memset(e, 0, sizeof(*e));
}

void engine_reset(engine *e) {
    e->n_past = 0;
    e->n_local = 0;
    e->n_prompt_end = 0;
    e->win_n = 0;
    if (e->recycle) recycle_reset(e->recycle);
    if (e->policy) kvpolicy_reset(e->policy);
}

// Recycled mode keeps a full step's scores of every local key: buffers for a
// shard of `cap` positions (none in full-attention mode).
static int size_score_buffers(engine *e, int64_t cap, rc_err *err) {
    free(e->raw_scores);
    e->raw_scores = NULL;
    if (!e->recycle) return 0;
    if (!(e->raw_scores = alloc_f32(e->m->cfg.n_head * cap))) return rc_fail(err, "out of memory for attention scores");
    return recycle_reserve(e->recycle, cap, err);
}

// The full cache is gone once a policy has compressed without retaining it.
static int full_cache_released(const engine *e) { return e->n_past > 0 && !e->kv.k; }

int engine_set_attention(engine *e, int attention, const recycle_opts *ro, const kvpolicy_opts *po, rc_err *err) {
    const model_config *c = &e->m->cfg;
    if (attention < 0 || attention >= ATTENTION_KIND_COUNT) return rc_fail(err, "unknown attention kind %d", attention);
    if (full_cache_released(e))
        return rc_fail(err, "the %s policy released the full KV cache: prefill the sequence again to switch methods",
                       attention_kind_name(e->opts.attention));
    if (attention_kind_is_policy(attention) && e->n_past != e->n_prompt_end)
        return rc_fail(err, "%s compresses the prompt: switch to it right after the prefill (truncate to %lld first)",
                       attention_kind_name(attention), (long long)e->n_prompt_end);
    if (e->recycle) {
        recycle_free(e->recycle);
        free(e->recycle);
        e->recycle = NULL;
    }
    if (e->policy) {
        kvpolicy_free(e->policy);
        free(e->policy);
        e->policy = NULL;
    }
    e->opts.attention = attention;
    if (attention == ATTENTION_FULL) return 0;
    if (attention_kind_is_policy(attention)) {
        e->opts.policy = *po;
        if (!(e->policy = calloc(1, sizeof(kvpolicy_state)))) return rc_fail(err, "out of memory");
        if (kvpolicy_init(e->policy, attention - ATTENTION_STREAMING, po, c->n_layer, c->n_head, c->n_head_kv,
                          c->head_dim, e->opts.kv_elem, err)) {
            free(e->policy);
            e->policy = NULL;
            return -1;
        }
        e->policy->n_threads = e->opts.n_threads;
        return 0;
    }
    e->opts.recycle = *ro;
    if (!(e->recycle = calloc(1, sizeof(recycle_state)))) return rc_fail(err, "out of memory");
    if (recycle_init(e->recycle, ro, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, e->opts.n_ctx, e->opts.kv_elem,
                     err)) {
        free(e->recycle);
        e->recycle = NULL;
        return -1;
    }
    e->recycle->n_threads = e->opts.n_threads;
    return e->kv.capacity > 0 ? size_score_buffers(e, e->kv.capacity, err) : 0;
}

int engine_truncate(engine *e, int64_t n, rc_err *err) {
    if (n < 0 || n > e->n_past)
        return rc_fail(err, "cannot truncate a sequence of %lld positions to %lld", (long long)e->n_past, (long long)n);
    if (e->comm->size > 1 && n < e->plan.n_prompt)
        return rc_fail(err, "on several ranks a sequence can only be truncated to its prompt (%lld) or later",
                       (long long)e->plan.n_prompt);
    if (e->policy && n != e->n_prompt_end)
        return rc_fail(err, "under %s a sequence can only be truncated to its prompt (%lld)",
                       attention_kind_name(e->opts.attention), (long long)e->n_prompt_end);
    if (e->policy && e->policy->built && full_cache_released(e))
        return rc_fail(err, "the %s policy released the full KV cache: prefill the sequence again",
                       attention_kind_name(e->opts.attention));
    while (e->n_local > 0 && e->slot_pos[e->n_local - 1] >= n) e->n_local--;  // positions ascend per rank
    e->n_past = n;
    if (e->recycle) recycle_reset(e->recycle);
    if (e->policy) kvpolicy_reset(e->policy);
    return 0;
}

size_t engine_kv_bytes_used(const engine *e) {
    if (e->policy && e->policy->built) return kv_store_bytes_held(&e->policy->store);
    return e->kv.capacity ? kv_cache_bytes_per_pos(&e->kv) * (size_t)e->n_local : 0;
}

// Fixes ownership for a new sequence whose prompt has n_prompt tokens and
// sizes this rank's shard for the most positions it can come to own.
int engine_begin_sequence(engine *e, int64_t n_prompt, rc_err *err) {
    const model_config *c = &e->m->cfg;
    e->plan = (shard_plan){.n_ranks = e->comm->size, .zigzag = e->opts.zigzag, .n_prompt = n_prompt};
    int64_t cap = shard_max_local(&e->plan, e->opts.n_ctx);
    if (cap < 1) cap = 1;
    if (e->kv.capacity != cap || e->kv.elem != e->opts.kv_elem || !e->kv.k) {
        kv_cache_free(&e->kv);
        free(e->slot_pos);
        e->slot_pos = NULL;
        if (kv_cache_init(&e->kv, c->n_layer, c->n_head_kv, c->head_dim, cap, e->opts.kv_elem, err)) return -1;
        e->slot_pos = malloc((size_t)cap * sizeof(int64_t));
        if (!e->slot_pos) return rc_fail(err, "out of memory");
        if (size_score_buffers(e, cap, err)) return -1;
    }
    e->n_local = 0;
    if (e->recycle) recycle_reset(e->recycle);
    return 0;
}

static void add_bias(float *x, const float *b, int64_t n_tok, int64_t n) {
    if (!b) return;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < n; i++) x[t * n + i] += b[i];
}

static void add_into(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

static void embed_rows(const model *m, const int32_t *tokens, int64_t n, float *x) {
    const int64_t d = m->cfg.d_model;
    for (int64_t t = 0; t < n; t++)
        dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       x + t * d, d);
}

static int check_tokens(const engine *e, const int32_t *tokens, int64_t n, rc_err *err) {
    if (e->n_past + n > e->opts.n_ctx)
        return rc_fail(err, "sequence of %lld tokens exceeds the context size %lld (raise --ctx)",
                       (long long)(e->n_past + n), (long long)e->opts.n_ctx);
    for (int64_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= e->m->cfg.n_vocab)
            return rc_fail(err, "token id %d at index %lld is outside the vocabulary (0..%lld)", tokens[t],
                           (long long)t, (long long)e->m->cfg.n_vocab - 1);
    return 0;
}

// ---- prefill -----------------------------------------------------------------

// Per-prefill buffers: every local row's activations for one layer at a time,
// plus (on several ranks) the whole prompt's K/V of the current layer.
typedef struct prefill_bufs {
    int64_t n_loc;
    int64_t *pos;         // (n_loc) absolute positions of the local rows, ascending
    int32_t *tok;         // (n_loc)
    float *x, *q, *k, *v, *att;
    void *kv_full;        // (2, n_kv_heads, n_total, head_dim) cache elements, ranks > 1
    void *send, *recv;    // packed K/V rows for the all-gather
    size_t *counts;       // (n_ranks) bytes per rank
    size_t n_bytes;
} prefill_bufs;

static void free_prefill_bufs(prefill_bufs *b) {
    free(b->pos); free(b->tok); free(b->x); free(b->q); free(b->k); free(b->v); free(b->att);
    free(b->kv_full); free(b->send); free(b->recv); free(b->counts);
    memset(b, 0, sizeof(*b));
}

// Packs this rank's K/V rows of one layer (from its cache shard) into
// b->send: row i = [K (n_kv_heads*head_dim)] [V (n_kv_heads*head_dim)].
static void pack_local_kv(const engine *e, int64_t layer, int64_t slot0, const prefill_bufs *b) {
    const int64_t H = e->m->cfg.n_head_kv, hd = e->m->cfg.head_dim;
    const size_t eb = kv_elem_bytes(e->kv.elem), row = (size_t)(H * hd) * eb;
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    for (int64_t i = 0; i < b->n_loc; i++)
        for (int64_t h = 0; h < H; h++) {
            size_t src = ((size_t)(h * kk.head_stride) + (size_t)((slot0 + i) * hd)) * eb;
            uint8_t *dst = (uint8_t *)b->send + (size_t)i * 2 * row + (size_t)(h * hd) * eb;
            memcpy(dst, (const uint8_t *)kk.data + src, (size_t)hd * eb);
            memcpy(dst + row, (const uint8_t *)vv.data + src, (size_t)hd * eb);
        }
}

// Scatters the gathered rows of every rank into b->kv_full by position.
static void unpack_full_kv(const engine *e, int64_t n_total, const prefill_bufs *b) {
    const int64_t H = e->m->cfg.n_head_kv, hd = e->m->cfg.head_dim;
    const size_t eb = kv_elem_bytes(e->kv.elem), row = (size_t)(H * hd) * eb;
    uint8_t *kf = b->kv_full, *vf = kf + (size_t)(H * n_total * hd) * eb;
    const uint8_t *src = b->recv;
    for (int r = 0; r < e->comm->size; r++) {
        shard_ranges rr = shard_prompt_ranges(&e->plan, r);
        for (int s = 0; s < rr.n; s++)
            for (int64_t p = rr.start[s]; p < rr.end[s]; p++) {
                for (int64_t h = 0; h < H; h++) {
                    size_t dst = ((size_t)(h * n_total + p) * (size_t)hd) * eb;
                    memcpy(kf + dst, src + (size_t)(h * hd) * eb, (size_t)hd * eb);
                    memcpy(vf + dst, src + row + (size_t)(h * hd) * eb, (size_t)hd * eb);
                }
                src += 2 * row;
            }
    }
}

// The owner of the last position broadcasts its query, lse and mean query
// (in e->state_send); every rank scores its own keys against that query and
// the layer's recycled cache is rebuilt from the exact global probabilities.
static int rebuild_after_prefill(engine *e, int64_t layer, int64_t n_keys_local, int64_t n_total, int owner_last,
                                 rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int64_t q_dim = c->n_head * c->head_dim;
    float *pay = e->state_send;
    if (e->comm->size > 1 &&
        comm_bcast(e->comm, pay, (size_t)(q_dim + c->n_head + c->head_dim) * sizeof(float), owner_last, err))
        return -1;
    if (e->opts.on_full_attention) e->opts.on_full_attention(e->opts.hook_user, layer, n_total, pay, pay + q_dim);
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    e->be->attn_decode_scores(e->att, e->lse, e->raw_scores, pay, &kk, &vv, n_keys_local, c->n_head, c->n_head_kv,
                              c->head_dim, 1.0f / sqrtf((float)c->head_dim));
    shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = n_keys_local, .plan = &e->plan,
                    .n_total = n_total};
    return recycle_rebuild(e->recycle, layer, e->raw_scores, pay + q_dim, pay + q_dim + c->n_head, &sh, e->comm, err);
}

// Every rank gets the window rows (query and lse of every layer) that their
// owners computed; sizes follow from the shard plan.
static int share_window(engine *e, int64_t win_start, int64_t win_n, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int64_t q_dim = c->n_head * c->head_dim, per_pos = c->n_layer * (q_dim + c->n_head);
    const int R = e->comm->size;
    size_t *counts = calloc((size_t)R, sizeof(size_t));
    float *send = alloc_f32(win_n * per_pos), *recv = alloc_f32(win_n * per_pos);
    int rc = -1;
    if (!counts || !send || !recv) {
        rc_fail(err, "out of memory sharing the prompt window");
        goto done;
    }
    int64_t n_mine = 0;
    for (int64_t w = 0; w < win_n; w++) {
        const int owner = shard_owner(&e->plan, win_start + w);
        counts[owner] += (size_t)per_pos * sizeof(float);
        if (owner != e->comm->rank) continue;
        float *dst = send + n_mine++ * per_pos;
        for (int64_t l = 0; l < c->n_layer; l++, dst += q_dim + c->n_head) {
            memcpy(dst, e->win_q + (l * KVPOLICY_WINDOW_MAX + w) * q_dim, (size_t)q_dim * sizeof(float));
            memcpy(dst + q_dim, e->win_lse + (l * KVPOLICY_WINDOW_MAX + w) * c->n_head, (size_t)c->n_head * sizeof(float));
        }
    }
    if (comm_allgatherv(e->comm, send, counts, recv, err)) goto done;
    // recv: rank 0's positions ascending, then rank 1's, ...
    const float *src = recv;
    for (int r = 0; r < R; r++)
        for (int64_t w = 0; w < win_n; w++) {
            if (shard_owner(&e->plan, win_start + w) != r) continue;
            for (int64_t l = 0; l < c->n_layer; l++, src += q_dim + c->n_head) {
                memcpy(e->win_q + (l * KVPOLICY_WINDOW_MAX + w) * q_dim, src, (size_t)q_dim * sizeof(float));
                memcpy(e->win_lse + (l * KVPOLICY_WINDOW_MAX + w) * c->n_head, src + q_dim,
                       (size_t)c->n_head * sizeof(float));
            }
        }
    rc = 0;
done:
    free(counts);
    free(send);
    free(recv);
    return rc;
}

// The policy keeps its rows of the prompt; unless asked to retain it, the
// full cache is freed.
static int compress_prompt(engine *e, rc_err *err) {
    if (e->n_past != e->n_prompt_end)
        return rc_fail(err, "%s compresses a prompt: it must follow a prefill directly",
                       attention_kind_name(e->opts.attention));
    if (e->win_n < 1)
        return rc_fail(err, "%s: the prompt's last queries were not kept (choose the method before the prefill, or "
                       "set retain_prompt_cache)", attention_kind_name(e->opts.attention));
    const model_config *c = &e->m->cfg;
    // Rows of each layer at stride KVPOLICY_WINDOW_MAX; the policy reads n of them.
    float *q = alloc_f32(c->n_layer * e->win_n * c->n_head * c->head_dim), *lse = alloc_f32(c->n_layer * e->win_n * c->n_head);
    if (!q || !lse) {
        free(q);
        free(lse);
        return rc_fail(err, "out of memory");
    }
    const int64_t q_dim = c->n_head * c->head_dim;
    for (int64_t l = 0; l < c->n_layer; l++) {
        memcpy(q + l * e->win_n * q_dim, e->win_q + l * KVPOLICY_WINDOW_MAX * q_dim, (size_t)(e->win_n * q_dim) * sizeof(float));
        memcpy(lse + l * e->win_n * c->n_head, e->win_lse + l * KVPOLICY_WINDOW_MAX * c->n_head,
               (size_t)(e->win_n * c->n_head) * sizeof(float));
    }
    prompt_window win = {.n = e->win_n, .q = q, .lse = lse};
    shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = e->n_local, .plan = &e->plan, .n_total = e->n_past};
    const int prev_phase = e->comm->phase;
    e->comm->phase = COMM_PHASE_PREFILL;
    int rc = kvpolicy_compress(e->policy, e->be, &win, &sh, e->comm, err);
    e->comm->phase = prev_phase;
    free(q);
    free(lse);
    if (rc) return rc;
    if (!e->opts.retain_prompt_cache) {
        kv_cache_free(&e->kv);
        free(e->slot_pos);
        e->slot_pos = NULL;
        e->n_local = 0;
    }
    return 0;
}

int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err) {
    const model *m = e->m;
    const model_config *c = &m->cfg;
    const backend_ops *be = e->be;
    comm *cm = e->comm;
    const int R = cm->size;
    if (n <= 0) return rc_fail(err, "empty prompt: nothing to process");
    if (check_tokens(e, tokens, n, err)) return -1;
    if (R > 1 && e->n_past > 0)
        return rc_fail(err, "on several ranks a sequence has a single prefill (at position 0)");
    if (R > 1 && logits_all) return rc_fail(err, "logits for every position are only available on one rank");
    if (e->policy && e->n_past > 0)
        return rc_fail(err, "under %s a sequence has a single prefill", attention_kind_name(e->opts.attention));
    if (e->n_past == 0 && engine_begin_sequence(e, n, err)) return -1;

    const int64_t V = c->n_vocab, d = c->d_model, hd = c->head_dim, B = e->opts.prefill_block;
    const int64_t q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t n_total = e->n_past + n;
    const int prev_phase = cm->phase;
    cm->phase = COMM_PHASE_PREFILL;
    double t0 = now_seconds();

    // This rank's rows: all new positions on one rank, its prompt ranges otherwise.
    prefill_bufs b = {0};
    shard_ranges mine = {.n = 1, .start = {e->n_past}, .end = {n_total}};
    if (R > 1) mine = shard_prompt_ranges(&e->plan, cm->rank);
    for (int s = 0; s < mine.n; s++) b.n_loc += mine.end[s] - mine.start[s];
    if (e->n_local + b.n_loc > e->kv.capacity) {
        cm->phase = prev_phase;
        return rc_fail(err, "KV shard full: %lld + %lld positions exceed its capacity %lld", (long long)e->n_local,
                       (long long)b.n_loc, (long long)e->kv.capacity);
    }
    const int64_t L = b.n_loc;
    b.pos = malloc((size_t)(L ? L : 1) * sizeof(int64_t));
    b.tok = malloc((size_t)(L ? L : 1) * sizeof(int32_t));
    b.x = alloc_f32(L * d);
    b.q = alloc_f32(L * q_dim);
    b.k = alloc_f32(L * kv_dim);
    b.v = alloc_f32(L * kv_dim);
    b.att = alloc_f32(L * q_dim);
    b.n_bytes = (size_t)L * (size_t)(d + 2 * q_dim + 2 * kv_dim) * sizeof(float);
    const size_t eb = kv_elem_bytes(e->opts.kv_elem), row_bytes = 2 * (size_t)kv_dim * eb;
    if (R > 1) {
        b.kv_full = malloc((size_t)n_total * row_bytes);
        b.send = malloc((size_t)(L ? L : 1) * row_bytes);
        b.recv = malloc((size_t)n_total * row_bytes);
        b.counts = malloc((size_t)R * sizeof(size_t));
        for (int r = 0; r < R; r++) b.counts[r] = (size_t)shard_prompt_count(&e->plan, r) * row_bytes;
        b.n_bytes += (size_t)(2 * n_total + L) * row_bytes;
    }
    if (!b.pos || !b.tok || !b.x || !b.q || !b.k || !b.v || !b.att ||
        (R > 1 && (!b.kv_full || !b.send || !b.recv || !b.counts))) {
        free_prefill_bufs(&b);
        cm->phase = prev_phase;
        return rc_fail(err, "out of memory for prefill buffers (%zu MiB)", b.n_bytes >> 20);
    }
    e->stats.prefill_transient_bytes = b.n_bytes;
    {
        int64_t i = 0;
        for (int s = 0; s < mine.n; s++)
            for (int64_t p = mine.start[s]; p < mine.end[s]; p++, i++) {
                b.pos[i] = p;
                b.tok[i] = tokens[p - e->n_past];
            }
    }
    embed_rows(m, b.tok, L, b.x);
    const int64_t slot0 = e->n_local;
    // Recycled mode: the last position's query builds every layer's recycled
    // cache. Its owner holds it as its last row (positions ascend per rank).
    const int owner_last = R == 1 ? 0 : shard_owner(&e->plan, n_total - 1);
    const int64_t i_last = owner_last == cm->rank ? L - 1 : -1;
    float *last_q = e->state_send, *last_lse = last_q + q_dim, *last_qmean = last_lse + c->n_head;
    for (int64_t i = 0; i < L; i++) e->slot_pos[slot0 + i] = b.pos[i];
    const int64_t win_n = n < KVPOLICY_WINDOW_MAX ? n : KVPOLICY_WINDOW_MAX, win_start = n_total - win_n;

    int rc = 0;
    for (int64_t l = 0; l < c->n_layer && rc == 0; l++) {
        const layer_weights *W = &m->layers[l];
        for (int64_t r0 = 0; r0 < L; r0 += B) {
            int64_t nb = L - r0 < B ? L - r0 : B;
            be->rmsnorm(e->xn, b.x + r0 * d, W->attn_norm, nb, d, c->rms_eps);
            be->matmul(b.q + r0 * q_dim, e->xn, &W->wq, nb);
            be->matmul(b.k + r0 * kv_dim, e->xn, &W->wk, nb);
            be->matmul(b.v + r0 * kv_dim, e->xn, &W->wv, nb);
            add_bias(b.q + r0 * q_dim, W->bq, nb, q_dim);
            add_bias(b.k + r0 * kv_dim, W->bk, nb, kv_dim);
            add_bias(b.v + r0 * kv_dim, W->bv, nb, kv_dim);
            if (e->recycle && i_last >= r0 && i_last < r0 + nb)  // before RoPE: see engine_decode
                recycle_mean_query(e->recycle, b.q + i_last * q_dim, last_qmean);
            be->rope(b.q + r0 * q_dim, nb, c->n_head, hd, b.pos + r0, &m->rope);
            be->rope(b.k + r0 * kv_dim, nb, c->n_head_kv, hd, b.pos + r0, &m->rope);
        }
        kv_cache_store(&e->kv, l, slot0, L, b.k, b.v);

        // Keys for causal attention: one rank reads its own cache (slot == position);
        // several ranks all-gather every rank's rows of this layer, in cache precision,
        // so each rank attends over exactly the values a single process would.
        kv_view kk, vv;
        if (R == 1) {
            kk = kv_cache_k(&e->kv, l);
            vv = kv_cache_v(&e->kv, l);
        } else {
            pack_local_kv(e, l, slot0, &b);
            if (comm_allgatherv(cm, b.send, b.counts, b.recv, err)) {
                rc = -1;
                break;
            }
            unpack_full_kv(e, n_total, &b);
            kk = (kv_view){.data = b.kv_full, .elem = e->kv.elem, .head_stride = n_total * hd};
            vv = (kv_view){.data = (uint8_t *)b.kv_full + (size_t)(c->n_head_kv * n_total * hd) * eb,
                           .elem = e->kv.elem, .head_stride = n_total * hd};
        }
        for (int s = 0, row = 0; s < mine.n; s++) {
            for (int64_t p0 = mine.start[s]; p0 < mine.end[s]; p0 += B) {
                int64_t nb = mine.end[s] - p0 < B ? mine.end[s] - p0 : B;
                be->attn_prefill(b.att + (int64_t)row * q_dim, e->lse, b.q + (int64_t)row * q_dim, nb, p0, &kk, &vv,
                                 c->n_head, c->n_head_kv, hd, scale);
                for (int64_t i = 0; i < nb; i++) {  // the policies' vote: the prompt's last positions
                    const int64_t w = b.pos[row + i] - win_start;
                    if (w < 0) continue;
                    memcpy(e->win_q + (l * KVPOLICY_WINDOW_MAX + w) * q_dim, b.q + (row + i) * q_dim,
                           (size_t)q_dim * sizeof(float));
                    memcpy(e->win_lse + (l * KVPOLICY_WINDOW_MAX + w) * c->n_head, e->lse + i * c->n_head,
                           (size_t)c->n_head * sizeof(float));
                }
                if (e->recycle && i_last >= row && i_last < row + nb) {
                    memcpy(last_q, b.q + i_last * q_dim, (size_t)q_dim * sizeof(float));
                    memcpy(last_lse, e->lse + (i_last - row) * c->n_head, (size_t)c->n_head * sizeof(float));
                }
                row += (int)nb;
            }
        }
        if (e->recycle && rebuild_after_prefill(e, l, slot0 + L, n_total, owner_last, err)) {
            rc = -1;
            break;
        }
        for (int64_t r0 = 0; r0 < L; r0 += B) {
            int64_t nb = L - r0 < B ? L - r0 : B;
            float *xr = b.x + r0 * d;
            be->matmul(e->proj, b.att + r0 * q_dim, &W->wo, nb);
            add_into(xr, e->proj, nb * d);
            be->rmsnorm(e->xn, xr, W->ffn_norm, nb, d, c->rms_eps);
            be->matmul(e->gate, e->xn, &W->w_gate, nb);
            be->matmul(e->up, e->xn, &W->w_up, nb);
            be->swiglu(e->gate, e->gate, e->up, nb * c->ffn_dim);
            be->matmul(e->proj, e->gate, &W->w_down, nb);
            add_into(xr, e->proj, nb * d);
        }
        if (progress) progress(user, (l + 1) * n / c->n_layer, n);
    }

    if (rc == 0) {
        if (logits_all) {  // one rank: every row is local, in position order
            for (int64_t r0 = 0; r0 < L; r0 += B) {
                int64_t nb = L - r0 < B ? L - r0 : B;
                be->rmsnorm(e->xn, b.x + r0 * d, m->output_norm, nb, d, c->rms_eps);
                be->matmul(logits_all + r0 * V, e->xn, &m->output, nb);
            }
            memcpy(e->logits, logits_all + (n - 1) * V, (size_t)V * sizeof(float));
        } else {
            // The owner of the last position sends its final hidden state; every
            // rank then computes the same logits from the same bits.
            const int64_t last = n_total - 1;
            const int owner = R == 1 ? 0 : shard_owner(&e->plan, last);
            if (owner == cm->rank) {
                int64_t i = 0;
                while (b.pos[i] != last) i++;
                be->rmsnorm(e->xn, b.x + i * d, m->output_norm, 1, d, c->rms_eps);
            }
            if (R > 1 && comm_bcast(cm, e->xn, (size_t)d * sizeof(float), owner, err)) rc = -1;
            if (rc == 0) be->matmul(e->logits, e->xn, &m->output, 1);
        }
    }
    free_prefill_bufs(&b);
    // Several ranks: the window's rows are shared only when a policy may use
    // them (a policy is set, or the prompt is kept for switching methods).
    const int share = R == 1 || e->policy || e->opts.retain_prompt_cache;
    if (rc == 0 && R > 1 && share) rc = share_window(e, win_start, win_n, err);
    cm->phase = prev_phase;
    if (rc) return rc;
    e->n_local += L;
    e->n_past = n_total;
    e->n_prompt_end = n_total;
    e->win_n = share ? win_n : 0;
    if (e->recycle) e->recycle->step = 0;
    if (e->policy && compress_prompt(e, err)) return -1;
    e->stats.prefill_seconds += now_seconds() - t0;
    e->stats.n_prefill_tokens += n;
    return 0;
}

// ---- decode ------------------------------------------------------------------

static int merge_states(engine *e, int64_t layer, rc_err *err);

// Full attention for one layer: this rank's shard, merged across ranks. In
// recycled mode the scores of the shard's keys are kept and the layer's
// recycled cache is rebuilt from them.
static int full_attention_layer(engine *e, int64_t layer, int64_t n_keys, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend_ops *be = e->be;
    comm *cm = e->comm;
    const int R = cm->size;
    const int64_t hd = c->head_dim, q_dim = c->n_head * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    float *raw = e->recycle ? e->raw_scores : NULL;
    // One rank: the final state. Several: this rank's partial state, sent out below.
    float *o_mine = R == 1 ? e->att : e->state_send, *lse_mine = R == 1 ? e->lse : e->state_send + q_dim;
    if (raw) be->attn_decode_scores(o_mine, lse_mine, raw, e->q, &kk, &vv, n_keys, c->n_head, c->n_head_kv, hd, scale);
    else be->attn_decode(o_mine, lse_mine, e->q, &kk, &vv, n_keys, c->n_head, c->n_head_kv, hd, scale);
    if (R > 1 && merge_states(e, layer, err)) return -1;
    e->last_step.kv_bytes_read += n_keys * (int64_t)kv_cache_bytes_per_pos(&e->kv) / c->n_layer;
    if (e->opts.on_full_attention) e->opts.on_full_attention(e->opts.hook_user, layer, e->n_past + 1, e->q, e->lse);
    if (!e->recycle) return 0;
    shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = n_keys, .plan = &e->plan,
                    .n_total = e->n_past + 1};
    return recycle_rebuild(e->recycle, layer, raw, e->lse, e->query_mean, &sh, cm, err);
}

// Several ranks: every rank's partial state (in e->state_send) is
// all-gathered and merged in rank order into e->att, e->lse. Every rank
// merges the same bytes the same way, so all end bitwise equal.
static int merge_states(engine *e, int64_t layer, rc_err *err) {
    const model_config *c = &e->m->cfg;
    comm *cm = e->comm;
    const int R = cm->size;
    const int64_t hd = c->head_dim, q_dim = c->n_head * hd;
    {
        const int64_t extra = e->recycle ? STATE_HASH_FLOATS : 0, stride = q_dim + c->n_head + extra;
        if (e->recycle) memcpy(e->state_send + q_dim + c->n_head, &e->recycle->decision_hash, sizeof(uint64_t));
        if (comm_allgather(cm, e->state_send, (size_t)stride * sizeof(float), e->state_recv, err)) return -1;
        for (int r = 0; r < R; r++) {
            const float *st = e->state_recv + (int64_t)r * stride;
            memcpy(e->o_parts + (int64_t)r * q_dim, st, (size_t)q_dim * sizeof(float));
            memcpy(e->lse_parts + (int64_t)r * c->n_head, st + q_dim, (size_t)c->n_head * sizeof(float));
            if (e->recycle && memcmp(st + q_dim + c->n_head, &e->recycle->decision_hash, sizeof(uint64_t)) != 0)
                return rc_fail(err, "ranks %d and %d disagree on the recycled-attention schedule (layer %lld, step %lld)",
                               cm->rank, r, (long long)layer, (long long)e->recycle->step);
        }
        e->be->merge(e->att, e->lse, e->o_parts, e->lse_parts, R, c->n_head, hd);
    }
    return 0;
}

// A KV-compression policy's layer: this rank's kept rows, merged across
// ranks; then the policy updates its scores and evicts.
static int policy_attention_layer(engine *e, int64_t layer, int64_t pos, int mine, rc_err *err) {
    const int R = e->comm->size;
    const int64_t q_dim = e->m->cfg.n_head * e->m->cfg.head_dim;
    float *o_mine = R == 1 ? e->att : e->state_send, *lse_mine = R == 1 ? e->lse : e->state_send + q_dim;
    int64_t rows = 0;
    if (kvpolicy_attend(e->policy, e->be, layer, e->q, e->k, e->v, pos, mine, o_mine, lse_mine, &rows, err)) return -1;
    if (R > 1 && merge_states(e, layer, err)) return -1;
    e->last_step.kv_bytes_read += rows * 2 * (int64_t)kv_store_row_bytes(&e->policy->store);
    if (e->opts.on_policy_step) e->opts.on_policy_step(e->opts.hook_user, layer, pos, e->q, e->k, e->lse);
    return kvpolicy_after_step(e->policy, layer, e->lse, pos + 1, e->comm, err);
}

// Recycled attention for one layer: the new token joins the replicated
// recycled cache, which the query attends over, locally.
static void recycled_attention_layer(engine *e, int64_t layer, int64_t pos) {
    const model_config *c = &e->m->cfg;
    recycle_cache *rc = &e->recycle->cache;
    const int64_t hd = c->head_dim, group = c->n_head / c->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    recycle_cache_append(rc, layer, pos, e->k, e->v);
    int64_t rows = 0;
    if (rc->uniform) {  // every head holds the same count: one call for the layer
        kv_view kk = recycle_cache_k(rc, layer), vv = recycle_cache_v(rc, layer);
        rows = recycle_cache_count(rc, layer, 0);
        e->be->attn_decode(e->att, e->lse, e->q, &kk, &vv, rows, c->n_head, c->n_head_kv, hd, scale);
        rows *= c->n_head_kv;
    } else {  // HeadKV budgets: each KV head with its own rows
        for (int64_t h = 0; h < c->n_head_kv; h++) {
            kv_view kk = recycle_cache_head_k(rc, layer, h), vv = recycle_cache_head_v(rc, layer, h);
            const int64_t n = recycle_cache_count(rc, layer, h);
            e->be->attn_decode(e->att + h * group * hd, e->lse + h * group, e->q + h * group * hd, &kk, &vv, n, group,
                               1, hd, scale);
            rows += n;
        }
    }
    e->last_step.kv_bytes_read += rows * 2 * (int64_t)kv_cache_row_bytes(&rc->rows);
}

int engine_decode(engine *e, int32_t token, rc_err *err) {
    const model *m = e->m;
    const model_config *c = &m->cfg;
    const backend_ops *be = e->be;
    comm *cm = e->comm;
    if (check_tokens(e, &token, 1, err)) return -1;
    if (e->n_past == 0 && engine_begin_sequence(e, 0, err)) return -1;  // a sequence that starts without a prompt
    const int64_t d = c->d_model, hd = c->head_dim;
    const int64_t q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    const int64_t pos = e->n_past;
    const int owner = shard_owner(&e->plan, pos);
    const int mine = owner == cm->rank;
    if (e->policy && !e->policy->built && compress_prompt(e, err)) return -1;
    const int keep_full = !e->policy;  // a policy holds its own rows; the full cache takes no new ones
    if (keep_full && mine && e->n_local >= e->kv.capacity)
        return rc_fail(err, "KV shard full at position %lld (capacity %lld)", (long long)pos,
                       (long long)e->kv.capacity);
    const int prev_phase = cm->phase;
    cm->phase = COMM_PHASE_DECODE;
    const comm_counters before = cm->counters[COMM_PHASE_DECODE];
    const recycle_stats rs_before = e->recycle ? e->recycle->stats : (recycle_stats){0};
    double t0 = now_seconds();
    engine_step *st = &e->last_step;
    st->pos = pos;
    st->n_full_layers = 0;
    st->kv_bytes_read = 0;
    if (e->recycle) recycle_begin_step(e->recycle);

    embed_rows(m, &token, 1, e->x);
    e->pos[0] = pos;
    if (keep_full && mine) e->slot_pos[e->n_local] = pos;
    const int64_t n_keys = e->n_local + mine;
    int rc = 0;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer_weights *W = &m->layers[l];
        be->rmsnorm(e->xn, e->x, W->attn_norm, 1, d, c->rms_eps);
        be->matmul(e->q, e->xn, &W->wq, 1);
        be->matmul(e->k, e->xn, &W->wk, 1);
        be->matmul(e->v, e->xn, &W->wv, 1);
        add_bias(e->q, W->bq, 1, q_dim);
        add_bias(e->k, W->bk, 1, kv_dim);
        add_bias(e->v, W->bv, 1, kv_dim);
        // The dynamic schedule compares queries before RoPE: the rotation
        // changes with position by construction, the content does not.
        if (e->recycle) recycle_mean_query(e->recycle, e->q, e->query_mean);
        be->rope(e->q, 1, c->n_head, hd, e->pos, &m->rope);
        be->rope(e->k, 1, c->n_head_kv, hd, e->pos, &m->rope);
        if (keep_full && mine) kv_cache_store(&e->kv, l, e->n_local, 1, e->k, e->v);  // the full cache holds every token
        const int full = !e->recycle || recycle_layer_is_full(e->recycle, l, e->query_mean);
        st->layer_full[l] = (uint8_t)full;
        if (e->policy) {  // every layer attends to all it keeps, merged over ranks like a full step
            st->n_full_layers++;
            e->stats.layer_full[l]++;
            if (policy_attention_layer(e, l, pos, mine, err)) {
                rc = -1;
                break;
            }
        } else if (full) {
            st->n_full_layers++;
            e->stats.layer_full[l]++;
            if (full_attention_layer(e, l, n_keys, err)) {
                rc = -1;
                break;
            }
        } else {
            e->stats.layer_recycled[l]++;
            recycled_attention_layer(e, l, pos);
        }
        be->matmul(e->proj, e->att, &W->wo, 1);
        add_into(e->x, e->proj, d);
        be->rmsnorm(e->xn, e->x, W->ffn_norm, 1, d, c->rms_eps);
        be->matmul(e->gate, e->xn, &W->w_gate, 1);
        be->matmul(e->up, e->xn, &W->w_up, 1);
        be->swiglu(e->gate, e->gate, e->up, c->ffn_dim);
        be->matmul(e->proj, e->gate, &W->w_down, 1);
        add_into(e->x, e->proj, d);
    }
    cm->phase = prev_phase;
    if (rc) return rc;
    be->rmsnorm(e->xn, e->x, m->output_norm, 1, d, c->rms_eps);
    be->matmul(e->logits, e->xn, &m->output, 1);
    if (keep_full && mine) e->n_local++;
    e->n_past++;
    const double dt = now_seconds() - t0;
    const comm_counters *after = &cm->counters[COMM_PHASE_DECODE];
    st->seconds = dt;
    st->comm_calls = after->n_calls - before.n_calls;
    st->comm_bytes = (after->bytes_sent - before.bytes_sent) + (after->bytes_recv - before.bytes_recv);
    st->rows_reused = e->recycle ? e->recycle->stats.rows_reused - rs_before.rows_reused : 0;
    st->rows_fetched = e->recycle ? e->recycle->stats.rows_fetched - rs_before.rows_fetched : 0;
    e->stats.decode_seconds += dt;
    e->stats.n_decode_tokens += 1;
    e->stats.kv_bytes_read += st->kv_bytes_read;
    if (st->n_full_layers > 0) {
        e->stats.n_full_steps++;
        e->stats.full_step_seconds += dt;
    }
    return 0;
}
