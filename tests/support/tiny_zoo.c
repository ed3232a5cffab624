#include "tiny_zoo.h"

#include "model/quant.h"

//   name                 arch   heads q/kv x dim  d_model ffn vocab layers  weights                        output  rope
//   llama_f32_odd        llama  3/3 x 12 (MHA)    36      52  301   2       all F32                        tied    plain
//   llama_q4_1           llama  4/2 x 16 (GQA)    64      96  300   2       Q4_1 attn/ffn, Q8_0 embd       tied    plain
//   qwen2_f16_bf16       qwen2  6/2 x 12 (GQA)    40      70  311   3       F16 attn/out, BF16 ffn/embd    output  NeoX, base 1e6, biases
//   llama_linear_q4_0    llama  4/2 x 16 (GQA)    64      128 304   2       Q4_0 everywhere                tied    linear x4
//   llama3_q8_0_mqa      llama  4/1 x 16 (MQA)    64      96  320   2       Q8_0 everywhere                output  llama3 rope_freqs
//   qwen2_q8_0_tied      qwen2  2/1 x 32 (MQA)    64      64  300   1       Q8_0 attn/embd, Q4_1 ffn       tied    NeoX, linear x2
//
// Odd shapes on purpose: head_dim 12 (not a multiple of the 8-wide SIMD
// kernels), d_model 36/40 and ffn 52/70 (row tails), head_dim given
// explicitly where n_head * head_dim != d_model (qwen2_f16_bf16,
// qwen2_q8_0_tied). The llama3 model's rope_orig_ctx is 256 so that, with
// head_dim 16 and base 10000, its factors cover all three regimes (1,
// smoothed, factor) and change the logits within the test sequences; its
// context is 2048 for the long sequence that crosses the fast backend's
// attention tiles. make_tiny_golden.py's LLAMA3_PARAMS repeats its settings.

static void llama_f32_odd(tiny_model_params *p) {
    p->seed = 101;
    p->d_model = 36;
    p->n_head = 3;
    p->n_head_kv = 3;
    p->d_ff = 52;
    p->n_vocab = 301;
    p->tied_output = 1;
}

static void llama_q4_1(tiny_model_params *p) {
    p->seed = 102;
    p->type_attn = p->type_ffn = GGML_TYPE_Q4_1;
    p->type_embd = GGML_TYPE_Q8_0;
    p->tied_output = 1;
}

static void qwen2_f16_bf16(tiny_model_params *p) {
    p->arch = "qwen2";
    p->seed = 103;
    p->n_layer = 3;
    p->d_model = 40;
    p->n_head = 6;
    p->n_head_kv = 2;
    p->head_dim = 12;
    p->d_ff = 70;
    p->n_vocab = 311;
    p->rope_base = 1000000.0f;
    p->rms_eps = 1e-6f;
    p->type_attn = p->type_output = GGML_TYPE_F16;
    p->type_ffn = p->type_embd = GGML_TYPE_BF16;
}

static void llama_linear_q4_0(tiny_model_params *p) {
    p->seed = 104;
    p->d_ff = 128;
    p->n_vocab = 304;
    p->rope_scaling = TINY_ROPE_LINEAR;
    p->rope_factor = 4.0f;
    p->type_embd = p->type_attn = p->type_ffn = GGML_TYPE_Q4_0;
    p->tied_output = 1;
}

static void llama3_q8_0_mqa(tiny_model_params *p) {
    p->seed = 105;
    p->n_head_kv = 1;
    p->n_vocab = 320;
    p->n_ctx = 2048;
    p->rope_scaling = TINY_ROPE_LLAMA3;
    p->rope_factor = 8.0f;
    p->rope_low_freq_factor = 1.0f;
    p->rope_high_freq_factor = 4.0f;
    p->rope_orig_ctx = 256;
    p->type_embd = p->type_attn = p->type_ffn = p->type_output = GGML_TYPE_Q8_0;
}

static void qwen2_q8_0_tied(tiny_model_params *p) {
    p->arch = "qwen2";
    p->seed = 106;
    p->n_layer = 1;
    p->n_head = 2;
    p->n_head_kv = 1;
    p->head_dim = 32;
    p->d_ff = 64;
    p->rope_scaling = TINY_ROPE_LINEAR;
    p->rope_factor = 2.0f;
    p->type_attn = p->type_embd = GGML_TYPE_Q8_0;
    p->type_ffn = GGML_TYPE_Q4_1;
    p->tied_output = 1;
}

static const struct {
    const char *name;
    void (*set)(tiny_model_params *p);
} zoo[] = {
    {"llama_f32_odd", llama_f32_odd},         {"llama_q4_1", llama_q4_1},
    {"qwen2_f16_bf16", qwen2_f16_bf16},       {"llama_linear_q4_0", llama_linear_q4_0},
    {"llama3_q8_0_mqa", llama3_q8_0_mqa},     {"qwen2_q8_0_tied", qwen2_q8_0_tied},
};

int tiny_zoo_count(void) { return (int)(sizeof(zoo) / sizeof(zoo[0])); }

const char *tiny_zoo_name(int i) { return i >= 0 && i < tiny_zoo_count() ? zoo[i].name : NULL; }

void tiny_zoo_params(int i, tiny_model_params *p) {
    tiny_model_default(p);
    if (i >= 0 && i < tiny_zoo_count()) zoo[i].set(p);
}
