// The engine's lifetime, its attention methods and its accessors. The
// forward passes live in prefill.c and decode.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/kv_format.h"
#include "engine/engine_internal.h"

double engine_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

engine_opts engine_default_opts(void) {
    return (engine_opts){.n_ctx = 0, .n_threads = 1, .kv_elem = KV_F16, .prefill_block = 512, .device = -1,
                         .attention = ATTENTION_FULL, .recycle = recycle_default_opts(),
                         .policy = kvpolicy_default_opts()};
}

// ---- attention methods ------------------------------------------------------------

// decode.c's layer functions.
int engine_full_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);
int engine_recycled_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);
int engine_policy_layer(engine *e, int64_t layer, int64_t pos, int mine, int64_t n_keys, rc_err *err);

#define POLICY(kind, method) [kind] = {.policy = method, .keeps_full = 0, .layer = engine_policy_layer}
static const attention_method methods[ATTENTION_KIND_COUNT] = {
    [ATTENTION_FULL] = {.name = "full", .policy = -1, .keeps_full = 1, .layer = engine_full_layer},
    [ATTENTION_RECYCLED] = {.name = "recycled", .policy = -1, .keeps_full = 1, .layer = engine_recycled_layer},
    POLICY(ATTENTION_STREAMING, KV_METHOD_STREAMING),
    POLICY(ATTENTION_H2O, KV_METHOD_H2O),
    POLICY(ATTENTION_SNAPKV, KV_METHOD_SNAPKV),
    POLICY(ATTENTION_PYRAMIDKV, KV_METHOD_PYRAMIDKV),
    POLICY(ATTENTION_ADAKV, KV_METHOD_ADAKV),
    POLICY(ATTENTION_HEADKV, KV_METHOD_HEADKV),
};

const attention_method *attention_method_get(int kind) {
    if (kind < 0 || kind >= ATTENTION_KIND_COUNT) return NULL;
    return &methods[kind];
}

int attention_kind_policy(int kind) {
    const attention_method *m = attention_method_get(kind);
    return m ? m->policy : -1;
}

int attention_kind_is_policy(int kind) { return attention_kind_policy(kind) >= 0; }

const char *attention_kind_name(int kind) {
    const attention_method *m = attention_method_get(kind);
    if (!m) return "unknown";
    return m->policy >= 0 ? kv_method_name(m->policy) : m->name;  // a policy is named by its table
}

int attention_kind_from_name(const char *name) {
    for (int k = 0; k < ATTENTION_KIND_COUNT; k++)
        if (strcmp(name, attention_kind_name(k)) == 0) return k;
    return -1;
}

// ---- lifetime ---------------------------------------------------------------------

static float *alloc_f32(const engine *e, int64_t n) {
    return e->be->ops->alloc(e->be, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

static void free_dev(const engine *e, void *p) {
    if (p) e->be->ops->free(e->be, p);
}

static void engine_free_buffers(engine *e) {
    if (!e->be) return;
    kv_cache_free(&e->kv);
    float *dev[] = {e->logits, e->x, e->xn, e->proj, e->q, e->att, e->k, e->v, e->gate, e->up, e->lse, e->o_parts,
                    e->lse_parts, e->state_send, e->state_recv, e->raw_scores, e->query_mean, e->win_q, e->win_lse};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) free_dev(e, dev[i]);
    free_dev(e, e->hashes);
    engine_weights_free(&e->w, e->be);
}

engine *engine_create(const model *m, const engine_opts *opts, rc_err *err) {
    engine *e = calloc(1, sizeof(engine));
    if (!e) {
        rc_fail(err, "out of memory");
        return NULL;
    }
    const model_config *c = &m->cfg;
    if (kv_elem_check(opts->kv_elem, c->head_dim, err)) {  // before anything is allocated
        free(e);
        return NULL;
    }
    e->m = m;
    e->opts = *opts;
    e->comm = opts->comm ? opts->comm : (e->own_comm = comm_null_create());
    if (!e->comm) {
        rc_fail(err, "out of memory");
        free(e);
        return NULL;
    }
    if (e->opts.n_ctx <= 0) e->opts.n_ctx = c->n_ctx_train;
    if (e->opts.prefill_block <= 0) e->opts.prefill_block = 512;
    if (e->opts.n_threads <= 0) e->opts.n_threads = 1;
    if (backend_init(&e->bk, opts->backend ? opts->backend : &backend_cpu, e->opts.n_threads, opts->device, err)) {
        if (e->own_comm) comm_destroy(e->own_comm);
        free(e);
        return NULL;
    }
    e->be = &e->bk;
    // Several ranks on a device backend: the device data path, attached before
    // the big allocations so a rank that runs out of memory can cancel it.
    const int attached = comm_dev_attach(e->comm, e->be, err);
    e->dev_attached = attached > 0;
    if (attached < 0 || engine_weights_upload(&e->w, e->be, m, err)) {
        e->failed = 1;
        engine_destroy(e);
        return NULL;
    }
    const int64_t B = e->opts.prefill_block, R = e->comm->size;
    const int64_t q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    e->logits = alloc_f32(e, c->n_vocab);
    e->x = alloc_f32(e, B * c->d_model);
    e->xn = alloc_f32(e, B * c->d_model);
    e->proj = alloc_f32(e, B * c->d_model);
    e->q = alloc_f32(e, B * q_dim);
    e->att = alloc_f32(e, B * q_dim);
    e->k = alloc_f32(e, B * kv_dim);
    e->v = alloc_f32(e, B * kv_dim);
    e->gate = alloc_f32(e, B * c->ffn_dim);
    e->up = alloc_f32(e, B * c->ffn_dim);
    e->lse = alloc_f32(e, B * c->n_head);
    e->o_parts = alloc_f32(e, R * q_dim);
    e->lse_parts = alloc_f32(e, R * c->n_head);
    // The state also carries, at prefill end, the last query's mean (head_dim).
    const int64_t state_max = q_dim + c->n_head + c->head_dim + STATE_HASH_FLOATS;
    e->state_send = alloc_f32(e, state_max);
    e->state_recv = alloc_f32(e, R * state_max);
    e->hashes = e->be->ops->alloc(e->be, (size_t)R * sizeof(uint64_t));
    e->query_mean = alloc_f32(e, c->head_dim);
    e->win_q = alloc_f32(e, c->n_layer * KVPOLICY_WINDOW_MAX * q_dim);
    e->win_lse = alloc_f32(e, c->n_layer * KVPOLICY_WINDOW_MAX * c->n_head);
    // On a host backend the logits buffer is host memory: its "download" to
    // the same pointer does nothing, so the CPU path stays zero-copy.
    e->logits_host = e->be->ops->is_device ? calloc((size_t)c->n_vocab, sizeof(float)) : e->logits;
    e->query_mean_host = calloc((size_t)c->head_dim, sizeof(float));
    e->hashes_host = calloc((size_t)R, sizeof(uint64_t));
    e->pos = malloc((size_t)B * sizeof(int64_t));
    e->stats.layer_full = calloc((size_t)c->n_layer, sizeof(int64_t));
    e->stats.layer_recycled = calloc((size_t)c->n_layer, sizeof(int64_t));
    e->last_step.layer_full = calloc((size_t)c->n_layer, 1);
    if (opts->on_full_attention || opts->on_policy_step || opts->on_attention_scores) {
        e->hook_q = malloc((size_t)q_dim * sizeof(float));
        e->hook_k = malloc((size_t)kv_dim * sizeof(float));
        e->hook_lse = malloc((size_t)c->n_head * sizeof(float));
        if (!e->hook_q || !e->hook_k || !e->hook_lse) goto oom;
    }
    if (!e->logits || !e->x || !e->xn || !e->proj || !e->q || !e->att || !e->k || !e->v || !e->gate || !e->up ||
        !e->lse || !e->pos || !e->o_parts || !e->lse_parts || !e->state_send || !e->state_recv || !e->hashes ||
        !e->query_mean || !e->stats.layer_full || !e->stats.layer_recycled || !e->last_step.layer_full ||
        !e->win_q || !e->win_lse || !e->logits_host || !e->query_mean_host || !e->hashes_host)
        goto oom;
    if (engine_set_attention(e, opts->attention, &opts->recycle, &opts->policy, err)) {
        e->failed = 1;
        engine_destroy(e);
        return NULL;
    }
    return e;
oom:
    rc_fail(err, "out of memory allocating engine buffers");
    e->failed = 1;
    engine_destroy(e);
    return NULL;
}

static void drop_method_state(engine *e) {
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
}

void engine_destroy(engine *e) {
    if (!e) return;
    drop_method_state(e);
    if (e->logits_host == e->logits) e->logits_host = NULL;  // the same buffer, freed with the others
    engine_free_buffers(e);
    free(e->slot_pos);
    if (e->logits_host != e->logits) free(e->logits_host);
    free(e->query_mean_host); free(e->hashes_host); free(e->pos);
    free(e->stats.layer_full); free(e->stats.layer_recycled); free(e->last_step.layer_full);
    free(e->hook_q); free(e->hook_k); free(e->hook_lse); free(e->hook_scores);
    if (e->dev_attached) comm_dev_detach(e->comm, e->be, e->failed);
    if (e->be) backend_shutdown(&e->bk);
    if (e->own_comm) comm_destroy(e->own_comm);
    free(e);
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
    free_dev(e, e->raw_scores);
    e->raw_scores = NULL;
    if (!e->recycle && !e->opts.on_attention_scores) return 0;
    if (!(e->raw_scores = alloc_f32(e, e->m->cfg.n_head * cap)))
        return rc_fail(err, "out of memory for attention scores");
    return e->recycle ? recycle_reserve(e->recycle, cap, err) : 0;
}

// The full cache is gone once a policy has compressed without retaining it.
static int full_cache_released(const engine *e) { return e->n_past > 0 && !e->kv.k; }

int engine_set_attention(engine *e, int attention, const recycle_opts *ro, const kvpolicy_opts *po, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const attention_method *am = attention_method_get(attention);
    if (!am) return rc_fail(err, "unknown attention kind %d", attention);
    if (full_cache_released(e))
        return rc_fail(err, "the %s policy released the full KV cache: prefill the sequence again to switch methods",
                       attention_kind_name(e->opts.attention));
    if (am->policy >= 0 && e->n_past != e->n_prompt_end)
        return rc_fail(err, "%s compresses the prompt: switch to it right after the prefill (truncate to %lld first)",
                       attention_kind_name(attention), (long long)e->n_prompt_end);
    drop_method_state(e);
    e->opts.attention = attention;
    e->method = am;
    if (am->policy >= 0) {
        e->opts.policy = *po;
        if (!(e->policy = calloc(1, sizeof(kvpolicy_state)))) return rc_fail(err, "out of memory");
        if (kvpolicy_init(e->policy, e->be, am->policy, po, c->n_layer, c->n_head, c->n_head_kv, c->head_dim,
                          e->opts.kv_elem, e->comm->size, err)) {
            free(e->policy);
            e->policy = NULL;
            return -1;
        }
        return 0;
    }
    if (attention == ATTENTION_RECYCLED) {
        e->opts.recycle = *ro;
        if (!(e->recycle = calloc(1, sizeof(recycle_state)))) return rc_fail(err, "out of memory");
        if (recycle_init(e->recycle, e->be, ro, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, e->opts.n_ctx,
                         e->opts.kv_elem, e->comm->size, err)) {
            free(e->recycle);
            e->recycle = NULL;
            return -1;
        }
    }
    return e->kv.capacity > 0 ? size_score_buffers(e, e->kv.capacity, err) : 0;
}

int engine_truncate(engine *e, int64_t n, rc_err *err) {
    if (n < 0 || n > e->n_past)
        return rc_fail(err, "cannot truncate a sequence of %lld positions to %lld", (long long)e->n_past, (long long)n);
    if (e->comm->size > 1 && n < e->plan.n_prompt)
        return rc_fail(err, "on several ranks a sequence can only be truncated to its prompt (%lld) or later",
                       (long long)e->plan.n_prompt);
    if (e->policy && n != e->n_prompt_end)
        return rc_fail(err, "under %s a sequence can only be truncated to its prompt (%lld)", attention_kind_name(e->opts.attention),
                       (long long)e->n_prompt_end);
    if (e->policy && e->policy->built && full_cache_released(e))
        return rc_fail(err, "the %s policy released the full KV cache: prefill the sequence again", attention_kind_name(e->opts.attention));
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
        if (kv_cache_init(&e->kv, e->be, c->n_layer, c->n_head_kv, c->head_dim, cap, e->opts.kv_elem, err)) return -1;
        e->slot_pos = malloc((size_t)cap * sizeof(int64_t));
        if (!e->slot_pos) return rc_fail(err, "out of memory");
        if (size_score_buffers(e, cap, err)) return -1;
    }
    e->n_local = 0;
    if (e->recycle) recycle_reset(e->recycle);
    return 0;
}

int engine_check_tokens(const engine *e, const int32_t *tokens, int64_t n, rc_err *err) {
    if (e->n_past + n > e->opts.n_ctx)
        return rc_fail(err, "sequence of %lld tokens exceeds the context size %lld (raise --ctx)",
                       (long long)(e->n_past + n), (long long)e->opts.n_ctx);
    for (int64_t t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= e->m->cfg.n_vocab)
            return rc_fail(err, "token id %d at index %lld is outside the vocabulary (0..%lld)", tokens[t],
                           (long long)t, (long long)e->m->cfg.n_vocab - 1);
    return 0;
}

// The policy keeps its rows of the prompt; unless asked to retain it, the
// full cache is freed.
int engine_compress_prompt(engine *e, rc_err *err) {
    if (e->n_past != e->n_prompt_end)
        return rc_fail(err, "%s compresses a prompt: it must follow a prefill directly", attention_kind_name(e->opts.attention));
    if (e->win_n < 1)
        return rc_fail(err, "%s: the prompt's last queries were not kept (choose the method before the prefill, or "
                       "set retain_prompt_cache)", attention_kind_name(e->opts.attention));
    const prompt_window win = {.n = e->win_n, .q = e->win_q, .lse = e->win_lse, .stride = KVPOLICY_WINDOW_MAX};
    const shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = e->n_local, .plan = &e->plan,
                          .n_total = e->n_past};
    const int prev_phase = e->comm->phase;
    e->comm->phase = COMM_PHASE_PREFILL;
    int rc = kvpolicy_compress(e->policy, &win, &sh, e->comm, err);
    e->comm->phase = prev_phase;
    if (rc) return rc;
    if (!e->opts.retain_prompt_cache) {
        kv_cache_free(&e->kv);
        free(e->slot_pos);
        e->slot_pos = NULL;
        e->n_local = 0;
    }
    return 0;
}

int engine_rebuild_recycled(engine *e, int64_t layer, const float *raw, const float *lse, const float *query_mean,
                            int64_t n_keys, int64_t n_total, rc_err *err) {
    const shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = n_keys, .plan = &e->plan,
                          .n_total = n_total};
    return recycle_rebuild(e->recycle, layer, raw, lse, query_mean, &sh, e->comm, err);
}

_Static_assert(RECYCLE_QUERY_WINDOW_MAX == KVPOLICY_WINDOW_MAX, "the recycled window reads the vote's rows");

int engine_rebuild_recycled_window(engine *e, int64_t layer, int64_t win_n, const float *query_mean, int64_t n_keys,
                                   int64_t n_total, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const int64_t W = e->recycle->o.query_window, q_dim = c->n_head * c->head_dim;
    if (W > win_n)
        return rc_fail(err, "--recycle-query-window %lld exceeds the prompt's %lld tokens", (long long)W,
                       (long long)win_n);
    const int64_t row0 = layer * KVPOLICY_WINDOW_MAX + win_n - W;
    const shard_ctx sh = {.kv = &e->kv, .slot_pos = e->slot_pos, .n_local = n_keys, .plan = &e->plan,
                          .n_total = n_total};
    kv_view kk = kv_cache_k(&e->kv, layer), vv = kv_cache_v(&e->kv, layer);
    return recycle_rebuild_window(e->recycle, layer, e->win_q + row0 * q_dim, e->win_lse + row0 * c->n_head, W, &kk,
                                  &vv, query_mean, &sh, e->comm, err);
}

void engine_hook_full_attention(engine *e, int64_t layer, int64_t n_total, const float *q, const float *lse) {
    if (!e->opts.on_full_attention) return;
    const model_config *c = &e->m->cfg;
    e->be->ops->download(e->be, e->hook_q, q, (size_t)(c->n_head * c->head_dim) * sizeof(float));
    e->be->ops->download(e->be, e->hook_lse, lse, (size_t)c->n_head * sizeof(float));
    e->opts.on_full_attention(e->opts.hook_user, layer, n_total, e->hook_q, e->hook_lse);
}

// ---- accessors --------------------------------------------------------------------

const float *engine_logits(const engine *e) { return e->logits_host; }
int64_t engine_n_past(const engine *e) { return e->n_past; }
int64_t engine_n_prompt(const engine *e) { return e->n_prompt_end; }
int engine_attention(const engine *e) { return e->opts.attention; }
const engine_opts *engine_get_opts(const engine *e) { return &e->opts; }
const model *engine_model(const engine *e) { return e->m; }
comm *engine_comm(const engine *e) { return e->comm; }
const backend *engine_backend(const engine *e) { return e->be; }
const engine_stats *engine_get_stats(const engine *e) { return &e->stats; }
const engine_step *engine_last_step(const engine *e) { return &e->last_step; }
const recycle_state *engine_recycle(const engine *e) { return e->recycle; }
const kvpolicy_state *engine_policy(const engine *e) { return e->policy; }

int64_t engine_rows_held(const engine *e) {
    if (e->policy && e->policy->built) return kv_store_rows(&e->policy->store);
    return e->n_local;
}
