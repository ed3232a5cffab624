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
    return (engine_opts){.n_ctx = 0, .n_threads = 1, .kv_elem = KV_F16, .prefill_block = 512, .backend = NULL};
}

static float *alloc_f32(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

int engine_init(engine *e, const model *m, const engine_opts *opts, rc_err *err) {
    memset(e, 0, sizeof(*e));
    const model_config *c = &m->cfg;
    e->m = m;
    e->opts = *opts;
    e->be = opts->backend ? opts->backend : &backend_cpu;
    if (e->opts.n_ctx <= 0) e->opts.n_ctx = c->n_ctx_train;
    if (e->opts.prefill_block <= 0) e->opts.prefill_block = 512;
    if (e->opts.n_threads <= 0) e->opts.n_threads = 1;
    backend_cpu_set_threads(e->opts.n_threads);
    if (kv_cache_init(&e->kv, c->n_layer, c->n_head_kv, c->head_dim, e->opts.n_ctx, e->opts.kv_elem, err)) return -1;
    const int64_t B = e->opts.prefill_block;
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
    if (!e->logits || !e->x || !e->xn || !e->proj || !e->q || !e->att || !e->k || !e->v || !e->gate || !e->up ||
        !e->lse || !e->pos) {
        engine_free(e);
        return rc_fail(err, "out of memory allocating engine buffers");
    }
    return 0;
}

void engine_free(engine *e) {
    kv_cache_free(&e->kv);
    free(e->logits); free(e->x); free(e->xn); free(e->proj); free(e->q); free(e->att);
    free(e->k); free(e->v); free(e->gate); free(e->up); free(e->lse); free(e->pos);
    memset(e, 0, sizeof(*e));
}

void engine_reset(engine *e) { e->n_past = 0; }

static void add_bias(float *x, const float *b, int64_t n_tok, int64_t n) {
    if (!b) return;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < n; i++) x[t * n + i] += b[i];
}

static void add_into(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

// Runs all layers for n tokens (n <= prefill_block) at positions n_past.. and
// leaves the final-normed hidden states in e->xn.
static void forward_block(engine *e, const int32_t *tokens, int64_t n) {
    const model *m = e->m;
    const model_config *c = &m->cfg;
    const backend_ops *be = e->be;
    const int64_t d = c->d_model, hd = c->head_dim;
    const int64_t q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t pos0 = e->n_past;

    for (int64_t t = 0; t < n; t++) {
        dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * m->tok_embd.row_bytes,
                       e->x + t * d, d);
        e->pos[t] = pos0 + t;
    }
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer_weights *L = &m->layers[l];
        be->rmsnorm(e->xn, e->x, L->attn_norm, n, d, c->rms_eps);
        be->matmul(e->q, e->xn, &L->wq, n);
        be->matmul(e->k, e->xn, &L->wk, n);
        be->matmul(e->v, e->xn, &L->wv, n);
        add_bias(e->q, L->bq, n, q_dim);
        add_bias(e->k, L->bk, n, kv_dim);
        add_bias(e->v, L->bv, n, kv_dim);
        be->rope(e->q, n, c->n_head, hd, e->pos, &m->rope);
        be->rope(e->k, n, c->n_head_kv, hd, e->pos, &m->rope);
        kv_cache_store(&e->kv, l, pos0, n, e->k, e->v);
        kv_view kv_k = kv_cache_k(&e->kv, l), kv_v = kv_cache_v(&e->kv, l);
        if (n == 1)
            be->attn_decode(e->att, e->lse, e->q, &kv_k, &kv_v, pos0 + 1, c->n_head, c->n_head_kv, hd, scale);
        else
            be->attn_prefill(e->att, NULL, e->q, n, pos0, &kv_k, &kv_v, c->n_head, c->n_head_kv, hd, scale);
        be->matmul(e->proj, e->att, &L->wo, n);
        add_into(e->x, e->proj, n * d);

        be->rmsnorm(e->xn, e->x, L->ffn_norm, n, d, c->rms_eps);
        be->matmul(e->gate, e->xn, &L->w_gate, n);
        be->matmul(e->up, e->xn, &L->w_up, n);
        be->swiglu(e->gate, e->gate, e->up, n * c->ffn_dim);
        be->matmul(e->proj, e->gate, &L->w_down, n);
        add_into(e->x, e->proj, n * d);
    }
    be->rmsnorm(e->xn, e->x, m->output_norm, n, d, c->rms_eps);
    e->n_past += n;
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

int engine_prefill(engine *e, const int32_t *tokens, int64_t n, float *logits_all, engine_progress_fn progress,
                   void *user, rc_err *err) {
    if (n <= 0) return rc_fail(err, "empty prompt: nothing to process");
    if (check_tokens(e, tokens, n, err)) return -1;
    const int64_t V = e->m->cfg.n_vocab, d = e->m->cfg.d_model;
    double t0 = now_seconds();
    for (int64_t b0 = 0; b0 < n; b0 += e->opts.prefill_block) {
        int64_t nb = n - b0 < e->opts.prefill_block ? n - b0 : e->opts.prefill_block;
        forward_block(e, tokens + b0, nb);
        if (logits_all)
            e->be->matmul(logits_all + b0 * V, e->xn, &e->m->output, nb);
        if (b0 + nb == n) {
            if (logits_all)
                memcpy(e->logits, logits_all + (n - 1) * V, (size_t)V * sizeof(float));
            else
                e->be->matmul(e->logits, e->xn + (nb - 1) * d, &e->m->output, 1);
        }
        if (progress) progress(user, b0 + nb, n);
    }
    e->stats.prefill_seconds += now_seconds() - t0;
    e->stats.n_prefill_tokens += n;
    return 0;
}

int engine_decode(engine *e, int32_t token, rc_err *err) {
    if (check_tokens(e, &token, 1, err)) return -1;
    double t0 = now_seconds();
    forward_block(e, &token, 1);
    e->be->matmul(e->logits, e->xn, &e->m->output, 1);
    e->stats.decode_seconds += now_seconds() - t0;
    e->stats.n_decode_tokens += 1;
    return 0;
}
