#include "engine/weights.h"

#include <stdlib.h>
#include <string.h>

#include "model/quant.h"

static weight f32_vector(const float *v, int64_t n) {
    return (weight){.type = GGML_TYPE_F32, .data = v, .n_in = n, .n_out = v ? 1 : 0, .row_bytes = (size_t)n * sizeof(float)};
}

static int upload(const backend *be, weight *dst, const weight src, const char *what, int64_t layer, rc_err *err) {
    memset(dst, 0, sizeof(*dst));
    if (!src.data) return 0;  // an absent bias
    if (be->ops->weight_upload(be, dst, &src, err)) {
        if (layer >= 0) return rc_wrap(err, "layer %lld %s", (long long)layer, what);
        return rc_wrap(err, "%s", what);
    }
    return 0;
}

int engine_weights_upload(engine_weights *w, const backend *be, const model *m, rc_err *err) {
    memset(w, 0, sizeof(*w));
    const model_config *c = &m->cfg;
    if (!be->ops->supports(OP_EMBED, m->tok_embd.type) || !be->ops->supports(OP_MATMUL, m->output.type))
        return rc_fail(err, "the %s backend does not support %s token embeddings or output weights", be->ops->name,
                       ggml_type_name(m->tok_embd.type));
    w->n_layer = c->n_layer;
    w->layers = calloc((size_t)c->n_layer, sizeof(engine_layer_weights));
    if (!w->layers) return rc_fail(err, "out of memory");
    w->tied = m->output.data == m->tok_embd.data;
    if (upload(be, &w->tok_embd, m->tok_embd, "token_embd", -1, err)) goto fail;
    if (w->tied) w->output = w->tok_embd;
    else if (upload(be, &w->output, m->output, "output", -1, err)) goto fail;
    if (upload(be, &w->output_norm, f32_vector(m->output_norm, c->d_model), "output_norm", -1, err) ||
        upload(be, &w->rope_inv_freq, f32_vector(m->rope_inv_freq, m->rope.rot_dim / 2), "rope frequencies", -1, err))
        goto fail;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer_weights *L = &m->layers[l];
        engine_layer_weights *D = &w->layers[l];
        const int64_t q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
        const weight *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        static const char *const names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            if (!be->ops->supports(OP_MATMUL, mats[i]->type)) {
                rc_fail(err, "layer %lld %s: the %s backend does not support %s weights", (long long)l, names[i],
                        be->ops->name, ggml_type_name(mats[i]->type));
                goto fail;
            }
        if (upload(be, &D->attn_norm, f32_vector(L->attn_norm, c->d_model), "attn_norm", l, err) ||
            upload(be, &D->ffn_norm, f32_vector(L->ffn_norm, c->d_model), "ffn_norm", l, err) ||
            upload(be, &D->wq, L->wq, "attn_q", l, err) || upload(be, &D->wk, L->wk, "attn_k", l, err) ||
            upload(be, &D->wv, L->wv, "attn_v", l, err) || upload(be, &D->wo, L->wo, "attn_output", l, err) ||
            upload(be, &D->w_gate, L->w_gate, "ffn_gate", l, err) || upload(be, &D->w_up, L->w_up, "ffn_up", l, err) ||
            upload(be, &D->w_down, L->w_down, "ffn_down", l, err) ||
            upload(be, &D->bq, f32_vector(L->bq, q_dim), "attn_q.bias", l, err) ||
            upload(be, &D->bk, f32_vector(L->bk, kv_dim), "attn_k.bias", l, err) ||
            upload(be, &D->bv, f32_vector(L->bv, kv_dim), "attn_v.bias", l, err))
            goto fail;
    }
    w->rope = (rope_table){.inv_freq = weight_f32(&w->rope_inv_freq), .rot_dim = m->rope.rot_dim, .neox = m->rope.neox};
    return 0;
fail:
    engine_weights_free(w, be);
    return -1;
}

static void release(const backend *be, weight *x) {
    if (x->data) be->ops->weight_free(be, x);
    memset(x, 0, sizeof(*x));
}

void engine_weights_free(engine_weights *w, const backend *be) {
    for (int64_t l = 0; w->layers && l < w->n_layer; l++) {
        engine_layer_weights *D = &w->layers[l];
        weight *all[] = {&D->attn_norm, &D->ffn_norm, &D->wq, &D->wk, &D->wv, &D->wo, &D->w_gate,
                         &D->w_up, &D->w_down, &D->bq, &D->bk, &D->bv};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) release(be, all[i]);
    }
    if (!w->tied) release(be, &w->output);
    release(be, &w->tok_embd);
    release(be, &w->output_norm);
    release(be, &w->rope_inv_freq);
    free(w->layers);
    memset(w, 0, sizeof(*w));
}
