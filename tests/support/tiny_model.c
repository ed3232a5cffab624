#include "tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/rng.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "quantize_ref.h"

void tiny_model_default(tiny_model_params *p) {
    memset(p, 0, sizeof(*p));
    p->arch = "llama";
    p->seed = 1;
    p->n_layer = 2;
    p->d_model = 64;
    p->n_head = 4;
    p->n_head_kv = 2;
    p->d_ff = 96;
    p->n_vocab = 300;
    p->n_ctx = 128;
    p->rope_base = 10000.0f;
    p->rms_eps = 1e-5f;
    p->rope_factor = 1.0f;
    p->rope_low_freq_factor = 1.0f;
    p->rope_high_freq_factor = 4.0f;
    p->rope_orig_ctx = 8192;
    p->type_embd = p->type_attn = p->type_ffn = p->type_output = GGML_TYPE_F32;
}

int tiny_model_sharding(char *path, model *m, rc_err *err) {
    strcpy(path, "/tmp/recall_tiny_sharding_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return rc_fail(err, "cannot create a temporary file");
    close(fd);
    tiny_model_params p;
    tiny_model_default(&p);
    p.n_layer = 3;
    p.n_head = 6;
    p.n_head_kv = 2;
    p.d_model = 96;
    p.head_dim = 16;
    p.n_ctx = 256;
    p.seed = 7;
    if (tiny_model_write(path, &p, err)) return -1;
    return model_load(m, path, err);
}

#define TWO_PI 6.283185307179586

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

// ---- deterministic random numbers (splitmix64 + Box-Muller) ----

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t rng_next(rng *r) { return splitmix64_next(&r->state); }

static double rng_uniform(rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * 0x1p-53; }  // (0, 1)

static float rng_normal(rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2));
}

// Each tensor's stream depends only on the seed and its name, so two models
// that differ only in weight types hold the same underlying floats (a Q8_0
// model can be compared with its F32 twin).
static rng tensor_rng(uint64_t seed, const char *name) {
    rng r = {seed ^ fnv1a(FNV1A_INIT, name, strlen(name))};
    rng_next(&r);
    return r;
}

// ---- tokenizer ----

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68
// to code points 256.. in byte order; ids follow the printable-first order.
static void byte_order(uint8_t order[256], int codepoint[256]) {
    int n = 0, extra = 0;
    int printable[256] = {0};
    for (int b = 0; b < 256; b++) printable[b] = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    for (int b = 0; b < 256; b++)
        if (printable[b]) {
            order[n++] = (uint8_t)b;
            codepoint[b] = b;
        }
    for (int b = 0; b < 256; b++)
        if (!printable[b]) {
            order[n++] = (uint8_t)b;
            codepoint[b] = 256 + extra++;
        }
}

int tiny_model_byte_token(uint8_t byte, char out[3]) {
    uint8_t order[256];
    int cp[256];
    byte_order(order, cp);
    int c = cp[byte];
    if (c < 0x80) {
        out[0] = (char)c;
        out[1] = 0;
        return 1;
    }
    out[0] = (char)(0xc0 | (c >> 6));  // all code points are < 0x800: two UTF-8 bytes
    out[1] = (char)(0x80 | (c & 0x3f));
    out[2] = 0;
    return 2;
}

#define G "\xc4\xa0"  // "Ġ", GPT-2's stand-in for the space byte
static const char *const merges[TINY_MODEL_N_MERGES][2] = {
    {G, "t"}, {"h", "e"}, {"i", "n"}, {G, "a"}, {"e", "r"}, {"o", "n"}, {G "t", "he"}, {"r", "e"},
    {"a", "t"}, {G, "s"}, {"e", "n"}, {G, "o"}, {"o", "r"}, {"in", "g"}, {G, "w"}, {G, "c"},
    {"l", "l"}, {"i", "s"}, {G, "h"}, {"e", "s"}, {"a", "n"}, {G "a", "n"}, {G "an", "d"}, {G, "i"},
};
#undef G

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3 };

static int add_vocab(gguf_writer *w, int n_vocab, const char *pre, rc_err *err) {
    char **tokens = calloc((size_t)n_vocab, sizeof(char *));
    int32_t *types = calloc((size_t)n_vocab, sizeof(int32_t));
    char **merge_strs = calloc(TINY_MODEL_N_MERGES, sizeof(char *));
    int ok = tokens && types && merge_strs;
    uint8_t order[256];
    int cp[256];
    byte_order(order, cp);
    for (int id = 0; ok && id < n_vocab; id++) {
        char buf[64];
        types[id] = TOKEN_NORMAL;
        if (id < 256) {
            tiny_model_byte_token(order[id], buf);
        } else if (id < 256 + TINY_MODEL_N_MERGES) {
            snprintf(buf, sizeof(buf), "%s%s", merges[id - 256][0], merges[id - 256][1]);
        } else if (id < n_vocab - TINY_MODEL_N_SPECIAL) {
            snprintf(buf, sizeof(buf), "<|reserved_%d|>", id - 256 - TINY_MODEL_N_MERGES);
            types[id] = TOKEN_CONTROL;
        } else {
            static const char *const special[TINY_MODEL_N_SPECIAL] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
            snprintf(buf, sizeof(buf), "%s", special[id - (n_vocab - TINY_MODEL_N_SPECIAL)]);
            types[id] = TOKEN_CONTROL;
        }
        tokens[id] = dup_str(buf);
        ok = tokens[id] != NULL;
    }
    for (int i = 0; ok && i < TINY_MODEL_N_MERGES; i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s %s", merges[i][0], merges[i][1]);
        merge_strs[i] = dup_str(buf);
        ok = merge_strs[i] != NULL;
    }
    if (ok) {
        gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
        gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (uint64_t)n_vocab);
        gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VAL_INT32, types, (uint64_t)n_vocab);
        gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merge_strs, TINY_MODEL_N_MERGES);
        gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(n_vocab - 1));
        gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(n_vocab - 1));
        gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 0);  // GPT-2 style: no BOS
        gguf_writer_add_str(w, "tokenizer.chat_template", chatml_template);
    }
    if (tokens)
        for (int id = 0; id < n_vocab; id++) free(tokens[id]);
    if (merge_strs)
        for (int i = 0; i < TINY_MODEL_N_MERGES; i++) free(merge_strs[i]);
    free(tokens);
    free(types);
    free(merge_strs);
    return ok ? 0 : rc_fail(err, "tiny_model: out of memory");
}

// ---- tensors ----

typedef struct builder {
    gguf_writer *w;
    const tiny_model_params *p;
    rc_err *err;
} builder;

enum init_kind { INIT_WEIGHT, INIT_NORM, INIT_BIAS, INIT_EMBD };

// Adds one tensor of ne[0] x ne[1] floats drawn for `kind`, stored as `type`.
static int add_weight(builder *b, const char *name, int64_t ne0, int64_t ne1, uint32_t type, enum init_kind kind) {
    int64_t ne[2] = {ne0, ne1};
    uint32_t n_dims = ne1 > 1 ? 2 : 1;
    int64_t n_elems = ne0 * ne1;
    rng r = tensor_rng(b->p->seed, name);

    if (b->p->override_tensor && strcmp(name, b->p->override_tensor) == 0) {
        const ggml_type_info *ti = ggml_type_get(b->p->override_type);
        size_t n_bytes = ti ? ggml_row_bytes(b->p->override_type, ne0) * (size_t)ne1 : (size_t)n_elems;
        if (n_bytes == 0)
            return rc_fail(b->err, "tiny_model: %s: row length %lld does not fit type %s", name, (long long)ne0,
                           ggml_type_name(b->p->override_type));
        uint8_t *junk = malloc(n_bytes);
        if (!junk) return rc_fail(b->err, "tiny_model: out of memory");
        for (size_t i = 0; i < n_bytes; i++) junk[i] = (uint8_t)rng_next(&r);
        gguf_writer_add_tensor(b->w, name, n_dims, ne, b->p->override_type, junk, n_bytes);
        free(junk);
        return 0;
    }

    size_t row_bytes = ggml_row_bytes(type, ne0);
    if (row_bytes == 0)
        return rc_fail(b->err, "tiny_model: %s: row length %lld is not a whole number of %s blocks", name,
                       (long long)ne0, ggml_type_name(type));
    float *x = malloc((size_t)n_elems * sizeof(float));
    uint8_t *q = malloc(row_bytes * (size_t)ne1);
    if (!x || !q) {
        free(x);
        free(q);
        return rc_fail(b->err, "tiny_model: out of memory");
    }
    // std 1/sqrt(fan_in) keeps every projection's output O(1) for O(1) input.
    float std = kind == INIT_WEIGHT ? 1.0f / sqrtf((float)ne0) : kind == INIT_NORM ? 0.1f : kind == INIT_BIAS ? 0.5f : 1.0f;
    for (int64_t i = 0; i < n_elems; i++) x[i] = (kind == INIT_NORM ? 1.0f : 0.0f) + std * rng_normal(&r);
    int ok = qref_quantize(type, x, q, n_elems) == row_bytes * (size_t)ne1;
    if (ok) gguf_writer_add_tensor(b->w, name, n_dims, ne, type, q, row_bytes * (size_t)ne1);
    free(x);
    free(q);
    return ok ? 0 : rc_fail(b->err, "tiny_model: %s: type %s is not one tiny models can store", name, ggml_type_name(type));
}

// llama.cpp's converter bakes Llama 3.1 rope scaling into per-pair frequency
// divisors: 1 for short wavelengths, `factor` for long ones, smooth between.
static int add_rope_freqs(builder *b, int head_dim) {
    const tiny_model_params *p = b->p;
    int n = head_dim / 2;
    float *f = malloc((size_t)n * sizeof(float));
    if (!f) return rc_fail(b->err, "tiny_model: out of memory");
    double low_wavelen = p->rope_orig_ctx / p->rope_low_freq_factor;
    double high_wavelen = p->rope_orig_ctx / p->rope_high_freq_factor;
    for (int i = 0; i < n; i++) {
        double freq = 1.0 / pow(p->rope_base, 2.0 * i / head_dim);
        double wavelen = TWO_PI / freq;
        if (wavelen < high_wavelen) {
            f[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            f[i] = p->rope_factor;
        } else {
            double smooth = (p->rope_orig_ctx / wavelen - p->rope_low_freq_factor) /
                            (p->rope_high_freq_factor - p->rope_low_freq_factor);
            f[i] = (float)(1.0 / ((1.0 - smooth) / p->rope_factor + smooth));
        }
    }
    int64_t ne[1] = {n};
    gguf_writer_add_tensor(b->w, "rope_freqs.weight", 1, ne, GGML_TYPE_F32, f, (size_t)n * sizeof(float));
    free(f);
    return 0;
}

static void add_key_u32(gguf_writer *w, const char *arch, const char *suffix, uint32_t v) {
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    gguf_writer_add_u32(w, key, v);
}

static void add_key_f32(gguf_writer *w, const char *arch, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    gguf_writer_add_f32(w, key, v);
}

static int check_params(const tiny_model_params *p, int head_dim, rc_err *err) {
    if (p->n_layer < 1 || p->d_model < 1 || p->n_head < 1 || p->n_head_kv < 1 || p->d_ff < 1 || p->n_ctx < 1)
        return rc_fail(err, "tiny_model: sizes must be positive");
    if (p->n_head % p->n_head_kv != 0)
        return rc_fail(err, "tiny_model: n_head %d is not a multiple of n_head_kv %d", p->n_head, p->n_head_kv);
    if (p->head_dim == 0 && p->d_model % p->n_head != 0)
        return rc_fail(err, "tiny_model: d_model %d is not a multiple of n_head %d", p->d_model, p->n_head);
    if (head_dim < 2 || head_dim % 2 != 0) return rc_fail(err, "tiny_model: head_dim %d must be even", head_dim);
    if (p->n_vocab < TINY_MODEL_MIN_VOCAB)
        return rc_fail(err, "tiny_model: n_vocab %d is below the minimum %d", p->n_vocab, TINY_MODEL_MIN_VOCAB);
    if (!p->arch || strlen(p->arch) > 64) return rc_fail(err, "tiny_model: bad architecture name");
    return 0;
}

int tiny_model_build(gguf_writer *w, const tiny_model_params *p, rc_err *err) {
    int head_dim = p->head_dim ? p->head_dim : (p->n_head ? p->d_model / p->n_head : 0);
    if (check_params(p, head_dim, err)) return -1;
    const char *arch = p->arch;
    int is_qwen2 = strcmp(arch, "qwen2") == 0;
    int64_t q_dim = (int64_t)p->n_head * head_dim, kv_dim = (int64_t)p->n_head_kv * head_dim;

    char name[128];
    if (p->name) snprintf(name, sizeof(name), "%s", p->name);
    else snprintf(name, sizeof(name), "tiny-%s", arch);
    gguf_writer_add_str(w, "general.architecture", arch);
    gguf_writer_add_str(w, "general.name", name);
    if (p->alignment) gguf_writer_add_u32(w, "general.alignment", p->alignment);
    add_key_u32(w, arch, "block_count", (uint32_t)p->n_layer);
    add_key_u32(w, arch, "context_length", (uint32_t)p->n_ctx);
    add_key_u32(w, arch, "embedding_length", (uint32_t)p->d_model);
    add_key_u32(w, arch, "feed_forward_length", (uint32_t)p->d_ff);
    add_key_u32(w, arch, "attention.head_count", (uint32_t)p->n_head);
    add_key_u32(w, arch, "attention.head_count_kv", (uint32_t)p->n_head_kv);
    if (p->head_dim) {
        add_key_u32(w, arch, "attention.key_length", (uint32_t)head_dim);
        add_key_u32(w, arch, "attention.value_length", (uint32_t)head_dim);
    }
    add_key_u32(w, arch, "rope.dimension_count", (uint32_t)head_dim);
    add_key_f32(w, arch, "rope.freq_base", p->rope_base);
    add_key_f32(w, arch, "attention.layer_norm_rms_epsilon", p->rms_eps);
    add_key_u32(w, arch, "vocab_size", (uint32_t)p->n_vocab);
    if (p->rope_scaling == TINY_ROPE_LINEAR) {
        char key[128];
        snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
        gguf_writer_add_str(w, key, "linear");
        add_key_f32(w, arch, "rope.scaling.factor", p->rope_factor);
    }
    if (add_vocab(w, p->n_vocab, p->tokenizer_pre ? p->tokenizer_pre : "default", err)) return -1;

    builder b = {.w = w, .p = p, .err = err};
    if (add_weight(&b, "token_embd.weight", p->d_model, p->n_vocab, p->type_embd, INIT_EMBD)) return -1;
    if (p->rope_scaling == TINY_ROPE_LLAMA3 && add_rope_freqs(&b, head_dim)) return -1;
    for (int l = 0; l < p->n_layer; l++) {
        char t[96];
#define T(suffix) (snprintf(t, sizeof(t), "blk.%d.%s", l, suffix), t)
        if (add_weight(&b, T("attn_norm.weight"), p->d_model, 1, GGML_TYPE_F32, INIT_NORM)) return -1;
        if (add_weight(&b, T("attn_q.weight"), p->d_model, q_dim, p->type_attn, INIT_WEIGHT)) return -1;
        if (is_qwen2 && add_weight(&b, T("attn_q.bias"), q_dim, 1, GGML_TYPE_F32, INIT_BIAS)) return -1;
        if (add_weight(&b, T("attn_k.weight"), p->d_model, kv_dim, p->type_attn, INIT_WEIGHT)) return -1;
        if (is_qwen2 && add_weight(&b, T("attn_k.bias"), kv_dim, 1, GGML_TYPE_F32, INIT_BIAS)) return -1;
        if (add_weight(&b, T("attn_v.weight"), p->d_model, kv_dim, p->type_attn, INIT_WEIGHT)) return -1;
        if (is_qwen2 && add_weight(&b, T("attn_v.bias"), kv_dim, 1, GGML_TYPE_F32, INIT_BIAS)) return -1;
        if (add_weight(&b, T("attn_output.weight"), q_dim, p->d_model, p->type_attn, INIT_WEIGHT)) return -1;
        if (add_weight(&b, T("ffn_norm.weight"), p->d_model, 1, GGML_TYPE_F32, INIT_NORM)) return -1;
        if (add_weight(&b, T("ffn_gate.weight"), p->d_model, p->d_ff, p->type_ffn, INIT_WEIGHT)) return -1;
        if (add_weight(&b, T("ffn_up.weight"), p->d_model, p->d_ff, p->type_ffn, INIT_WEIGHT)) return -1;
        if (add_weight(&b, T("ffn_down.weight"), p->d_ff, p->d_model, p->type_ffn, INIT_WEIGHT)) return -1;
#undef T
    }
    if (add_weight(&b, "output_norm.weight", p->d_model, 1, GGML_TYPE_F32, INIT_NORM)) return -1;
    if (!p->tied_output && add_weight(&b, "output.weight", p->d_model, p->n_vocab, p->type_output, INIT_WEIGHT))
        return -1;
    return w->oom ? rc_fail(err, "tiny_model: out of memory") : 0;
}

int tiny_model_write(const char *path, const tiny_model_params *p, rc_err *err) {
    gguf_writer w;
    gguf_writer_init(&w);
    int rc = tiny_model_build(&w, p, err);
    if (rc == 0) rc = gguf_writer_write_file(&w, path, NULL, err);
    gguf_writer_free(&w);
    return rc;
}
