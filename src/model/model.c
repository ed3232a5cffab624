#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/quant.h"

static int checked_weight(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out, weight *w, rc_err *err) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return rc_fail(err, "%s: missing tensor '%s'", f->path, name);
    const ggml_type_info *ti = ggml_type_get(t->type);
    if (!ti || !ti->supported)
        return rc_fail(err, "%s: tensor '%s' has unsupported tensor type %s (supported: F32, F16, BF16, Q8_0, Q5_0, Q5_1, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
                       f->path, name, ggml_type_name(t->type));
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return rc_fail(err, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", f->path, name,
                       (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    w->type = t->type;
    w->data = t->data;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = ggml_row_bytes(t->type, n_in);
    return 0;
}

// 1-D tensors (norms, biases) are small: keep owned fp32 copies whatever their type.
static int vector_copy(const gguf_file *f, const char *name, int64_t n, int optional, float **out, rc_err *err) {
    *out = NULL;
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return optional ? 0 : rc_fail(err, "%s: missing tensor '%s'", f->path, name);
    const ggml_type_info *ti = ggml_type_get(t->type);
    if (!ti || !ti->supported)
        return rc_fail(err, "%s: tensor '%s' has unsupported tensor type %s", f->path, name, ggml_type_name(t->type));
    if (t->n_elems != n)
        return rc_fail(err, "%s: tensor '%s' has %lld elements, expected %lld", f->path, name, (long long)t->n_elems,
                       (long long)n);
    *out = malloc((size_t)n * sizeof(float));
    if (!*out) return rc_fail(err, "out of memory");
    dequantize_row(t->type, t->data, *out, n);
    return 0;
}

static int read_config(model *m, rc_err *err) {
    const gguf_file *f = &m->file;
    model_config *c = &m->cfg;
    gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch, err)) return -1;
    if (gguf_str_eq(arch, "llama")) c->arch = ARCH_LLAMA;
    else if (gguf_str_eq(arch, "qwen2")) c->arch = ARCH_QWEN2;
    else
        return rc_fail(err, "%s: unsupported architecture '%.*s' (supported: llama, qwen2)", f->path,
                       (int)(arch.n_bytes > 64 ? 64 : arch.n_bytes), arch.ptr);
    snprintf(c->arch_name, sizeof(c->arch_name), "%.*s", (int)arch.n_bytes, arch.ptr);
    gguf_str name;
    if (gguf_find(f, "general.name") && gguf_get_str(f, "general.name", &name, NULL) == 0)
        snprintf(c->name, sizeof(c->name), "%.*s", (int)(name.n_bytes > 120 ? 120 : name.n_bytes), name.ptr);

    char key[128];
    uint32_t u;
#define ARCH_KEY(suffix) (snprintf(key, sizeof(key), "%s.%s", c->arch_name, suffix), key)
    if (gguf_get_u32(f, ARCH_KEY("block_count"), &u, err)) return -1;
    c->n_layer = u;
    if (gguf_get_u32(f, ARCH_KEY("embedding_length"), &u, err)) return -1;
    c->d_model = u;
    if (gguf_get_u32(f, ARCH_KEY("feed_forward_length"), &u, err)) return -1;
    c->ffn_dim = u;
    if (gguf_get_u32(f, ARCH_KEY("attention.head_count"), &u, err)) return -1;
    c->n_head = u;
    u = (uint32_t)c->n_head;
    if (gguf_opt_u32(f, ARCH_KEY("attention.head_count_kv"), &u, err)) return -1;
    c->n_head_kv = u;
    if (gguf_get_u32(f, ARCH_KEY("context_length"), &u, err)) return -1;
    c->n_ctx_train = u;
    if (c->n_layer <= 0 || c->d_model <= 0 || c->ffn_dim <= 0 || c->n_head <= 0 || c->n_head_kv <= 0 ||
        c->n_ctx_train <= 0)
        return rc_fail(err, "%s: invalid model dimensions (layers %lld, d_model %lld, ffn %lld, heads %lld/%lld)",
                       f->path, (long long)c->n_layer, (long long)c->d_model, (long long)c->ffn_dim,
                       (long long)c->n_head, (long long)c->n_head_kv);
    // Bounds before any arithmetic: products of two capped values fit int64.
    if (c->n_layer > MODEL_MAX_LAYERS || c->d_model > MODEL_MAX_DIM || c->ffn_dim > MODEL_MAX_DIM ||
        c->n_head > MODEL_MAX_HEADS || c->n_head_kv > MODEL_MAX_HEADS || c->n_ctx_train > MODEL_MAX_CTX)
        return rc_fail(err, "%s: model dimensions beyond the supported bounds (layers %lld of at most %d, d_model %lld "
                       "and ffn %lld of at most %d, heads %lld/%lld of at most %d, context %lld of at most %d)",
                       f->path, (long long)c->n_layer, MODEL_MAX_LAYERS, (long long)c->d_model, (long long)c->ffn_dim,
                       MODEL_MAX_DIM, (long long)c->n_head, (long long)c->n_head_kv, MODEL_MAX_HEADS,
                       (long long)c->n_ctx_train, MODEL_MAX_CTX);
    if (c->n_head % c->n_head_kv != 0)
        return rc_fail(err, "%s: head count %lld is not a multiple of the KV head count %lld", f->path,
                       (long long)c->n_head, (long long)c->n_head_kv);
    u = (uint32_t)(c->d_model / c->n_head);
    if (gguf_opt_u32(f, ARCH_KEY("attention.key_length"), &u, err)) return -1;
    c->head_dim = u;
    uint32_t vlen = u;
    if (gguf_opt_u32(f, ARCH_KEY("attention.value_length"), &vlen, err)) return -1;
    if (vlen != u || c->head_dim <= 0 || c->head_dim % 2 != 0 || c->head_dim > MODEL_MAX_DIM)
        return rc_fail(err, "%s: unsupported head sizes (key %u, value %u; even, at most %d)", f->path, u, vlen,
                       MODEL_MAX_DIM);
    // Zero or negative values load but make every logit NaN: refuse them here.
    c->rms_eps = 1e-5f;
    if (gguf_opt_f32(f, ARCH_KEY("attention.layer_norm_rms_epsilon"), &c->rms_eps, err)) return -1;
    if (!(c->rms_eps > 0.0f))
        return rc_fail(err, "%s: %s = %g must be positive", f->path, key, c->rms_eps);
    c->rope_base = 10000.0f;
    if (gguf_opt_f32(f, ARCH_KEY("rope.freq_base"), &c->rope_base, err)) return -1;
    if (!(c->rope_base > 0.0f)) return rc_fail(err, "%s: %s = %g must be positive", f->path, key, c->rope_base);
    u = (uint32_t)c->head_dim;
    if (gguf_opt_u32(f, ARCH_KEY("rope.dimension_count"), &u, err)) return -1;
    c->rope_dim = u;
    if (c->rope_dim <= 0 || c->rope_dim > c->head_dim || c->rope_dim % 2 != 0)
        return rc_fail(err, "%s: invalid rope dimension count %lld", f->path, (long long)c->rope_dim);

    c->rope_linear_scale = 1.0f;
    const gguf_kv *st = gguf_find(f, ARCH_KEY("rope.scaling.type"));
    if (st) {
        gguf_str s;
        if (gguf_get_str(f, key, &s, err)) return -1;
        if (gguf_str_eq(s, "linear")) {
            float factor = 1.0f;
            if (gguf_get_f32(f, ARCH_KEY("rope.scaling.factor"), &factor, err)) return -1;
            if (!(factor > 0.0f)) return rc_fail(err, "%s: rope scaling factor %g must be positive", f->path, factor);
            c->rope_linear_scale = 1.0f / factor;
        } else if (!gguf_str_eq(s, "none") && !gguf_str_eq(s, "llama3")) {
            // llama3 scaling arrives as the rope_freqs tensor, handled below.
            return rc_fail(err, "%s: unsupported rope scaling type '%.*s' (supported: none, linear, llama3)", f->path,
                           (int)s.n_bytes, s.ptr);
        }
    } else {
        float factor = 0.0f;  // older files: scale_linear alone
        if (gguf_opt_f32(f, ARCH_KEY("rope.scale_linear"), &factor, err)) return -1;
        if (factor > 0.0f) c->rope_linear_scale = 1.0f / factor;
    }
#undef ARCH_KEY
    return 0;
}

// Reads the configuration and weight views of the already opened m->file.
static int model_init(model *m, rc_err *err) {
    const char *path = m->file.path;
    if (read_config(m, err)) goto fail;
    model_config *c = &m->cfg;
    const gguf_file *f = &m->file;

    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb) {
        rc_fail(err, "%s: missing tensor 'token_embd.weight'", path);
        goto fail;
    }
    c->n_vocab = emb->ne[1];
    if (c->n_vocab > MODEL_MAX_VOCAB) {
        rc_fail(err, "%s: vocabulary of %lld tokens (at most %d supported)", path, (long long)c->n_vocab,
                MODEL_MAX_VOCAB);
        goto fail;
    }
    if (checked_weight(f, "token_embd.weight", c->d_model, c->n_vocab, &m->tok_embd, err)) goto fail;
    if (vector_copy(f, "output_norm.weight", c->d_model, 0, &m->output_norm, err)) goto fail;
    if (gguf_find_tensor(f, "output.weight")) {
        if (checked_weight(f, "output.weight", c->d_model, c->n_vocab, &m->output, err)) goto fail;
    } else {
        m->output = m->tok_embd;
        c->tied_output = 1;
    }

    const int64_t q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    // Every layer has at least 9 tensors: a block count the file cannot hold
    // fails here, before the per-layer table is allocated.
    if ((uint64_t)c->n_layer > f->n_tensors / 9) {
        rc_fail(err, "%s: block_count %lld, but the file holds %llu tensors (each layer needs 9)", path,
                (long long)c->n_layer, (unsigned long long)f->n_tensors);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof(layer_weights));
    if (!m->layers) {
        rc_fail(err, "out of memory");
        goto fail;
    }
    char name[96];
#define TN(fmt) (snprintf(name, sizeof(name), fmt, (int)l), name)
    for (int64_t l = 0; l < c->n_layer; l++) {
        layer_weights *L = &m->layers[l];
        if (vector_copy(f, TN("blk.%d.attn_norm.weight"), c->d_model, 0, &L->attn_norm, err) ||
            checked_weight(f, TN("blk.%d.attn_q.weight"), c->d_model, q_dim, &L->wq, err) ||
            checked_weight(f, TN("blk.%d.attn_k.weight"), c->d_model, kv_dim, &L->wk, err) ||
            checked_weight(f, TN("blk.%d.attn_v.weight"), c->d_model, kv_dim, &L->wv, err) ||
            checked_weight(f, TN("blk.%d.attn_output.weight"), q_dim, c->d_model, &L->wo, err) ||
            vector_copy(f, TN("blk.%d.ffn_norm.weight"), c->d_model, 0, &L->ffn_norm, err) ||
            checked_weight(f, TN("blk.%d.ffn_gate.weight"), c->d_model, c->ffn_dim, &L->w_gate, err) ||
            checked_weight(f, TN("blk.%d.ffn_up.weight"), c->d_model, c->ffn_dim, &L->w_up, err) ||
            checked_weight(f, TN("blk.%d.ffn_down.weight"), c->ffn_dim, c->d_model, &L->w_down, err))
            goto fail;
        int need_bias = c->arch == ARCH_QWEN2;
        if (vector_copy(f, TN("blk.%d.attn_q.bias"), q_dim, !need_bias, &L->bq, err) ||
            vector_copy(f, TN("blk.%d.attn_k.bias"), kv_dim, !need_bias, &L->bk, err) ||
            vector_copy(f, TN("blk.%d.attn_v.bias"), kv_dim, !need_bias, &L->bv, err))
            goto fail;
    }
#undef TN

    // RoPE: inv_freq[i] = scale * base^(-2i/rope_dim) / freq_factor[i].
    const int64_t half = c->rope_dim / 2;
    m->rope_inv_freq = malloc((size_t)half * sizeof(float));
    if (!m->rope_inv_freq) {
        rc_fail(err, "out of memory");
        goto fail;
    }
    float *factors = NULL;
    if (vector_copy(f, "rope_freqs.weight", half, 1, &factors, err)) goto fail;
    c->rope_has_freq_factors = factors != NULL;
    for (int64_t i = 0; i < half; i++) {
        double inv = pow((double)c->rope_base, -2.0 * (double)i / (double)c->rope_dim) * c->rope_linear_scale;
        if (factors) {
            if (!(factors[i] > 0.0f)) {
                rc_fail(err, "%s: rope_freqs.weight[%lld] = %g is not positive", path, (long long)i, factors[i]);
                free(factors);
                goto fail;
            }
            inv /= factors[i];
        }
        if (!isfinite((float)inv)) {  // e.g. a tiny base with a tiny scaling factor
            rc_fail(err, "%s: RoPE frequency %lld is not a finite float32 (base %g, linear scale %g)", path,
                    (long long)i, c->rope_base, c->rope_linear_scale);
            free(factors);
            goto fail;
        }
        m->rope_inv_freq[i] = (float)inv;
    }
    free(factors);
    m->rope = (rope_table){.inv_freq = m->rope_inv_freq, .rot_dim = c->rope_dim, .neox = c->arch == ARCH_QWEN2};
    return 0;
fail:
    model_free(m);
    return -1;
}

int model_load(model *m, const char *path, rc_err *err) {
    memset(m, 0, sizeof(*m));
    if (gguf_open(&m->file, path, err)) return -1;
    return model_init(m, err);
}

int model_load_memory(model *m, const void *data, size_t n_bytes, const char *name, rc_err *err) {
    memset(m, 0, sizeof(*m));
    if (gguf_open_memory(&m->file, data, n_bytes, name, err)) return -1;
    return model_init(m, err);
}

void model_free(model *m) {
    if (m->layers) {
        for (int64_t l = 0; l < m->cfg.n_layer; l++) {
            layer_weights *L = &m->layers[l];
            free(L->attn_norm); free(L->ffn_norm); free(L->bq); free(L->bk); free(L->bv);
        }
    }
    free(m->layers);
    free(m->output_norm);
    free(m->rope_inv_freq);
    gguf_close(&m->file);
    memset(m, 0, sizeof(*m));
}

int64_t model_weight_bytes_per_token(const model *m) {
    int64_t total = (int64_t)m->tok_embd.row_bytes + (int64_t)(m->output.row_bytes * (size_t)m->output.n_out);
    for (int64_t l = 0; l < m->cfg.n_layer; l++) {
        const layer_weights *L = &m->layers[l];
        const weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) total += (int64_t)(ws[i]->row_bytes * (size_t)ws[i]->n_out);
    }
    return total;
}
