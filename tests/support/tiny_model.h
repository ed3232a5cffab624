// Tiny synthetic Llama-family models as complete GGUF files: random weights
// from a seed, standard llama.cpp tensor names and metadata keys, and a
// minimal byte-level GPT-2 BPE vocabulary, so the loader, the engine and the
// CLI can run end to end without a real model.
//
// Tensor layout (GGUF dims, ne0 first = the input / row dimension):
//   token_embd.weight          (d_model, n_vocab)
//   blk.N.attn_norm.weight     (d_model)                       F32
//   blk.N.attn_q.weight        (d_model, n_head * head_dim)
//   blk.N.attn_k.weight        (d_model, n_head_kv * head_dim)
//   blk.N.attn_v.weight        (d_model, n_head_kv * head_dim)
//   blk.N.attn_{q,k,v}.bias    (out dim)                       F32, qwen2 only
//   blk.N.attn_output.weight   (n_head * head_dim, d_model)
//   blk.N.ffn_norm.weight      (d_model)                       F32
//   blk.N.ffn_gate.weight      (d_model, d_ff)
//   blk.N.ffn_up.weight        (d_model, d_ff)
//   blk.N.ffn_down.weight      (d_ff, d_model)
//   output_norm.weight         (d_model)                       F32
//   output.weight              (d_model, n_vocab)              absent when tied
//   rope_freqs.weight          (head_dim / 2)                  F32, llama3 scaling only
//
// Vocabulary (ids): 0..255 the 256 bytes in GPT-2's bytes_to_unicode order
// (id 0 is "!", not byte 0), then TINY_MODEL_N_MERGES merged tokens, then
// "<|reserved_N|>" fillers (control) up to n_vocab - 3, then <|im_start|>,
// <|im_end|> and <|endoftext|> (control; the last id, BOS and EOS).
#ifndef RECALL_TESTS_TINY_MODEL_H
#define RECALL_TESTS_TINY_MODEL_H

#include <stdint.h>

#include "core/status.h"
#include "gguf_writer.h"
#include "model/model.h"

#define TINY_MODEL_N_MERGES 24
#define TINY_MODEL_N_SPECIAL 3
#define TINY_MODEL_MIN_VOCAB (256 + TINY_MODEL_N_MERGES + TINY_MODEL_N_SPECIAL)

typedef enum tiny_rope_scaling {
    TINY_ROPE_NONE = 0,
    TINY_ROPE_LINEAR,  // {arch}.rope.scaling.type = "linear", .factor = rope_factor
    TINY_ROPE_LLAMA3,  // rope_freqs.weight as llama.cpp's converter computes it (no metadata key)
} tiny_rope_scaling;

typedef struct tiny_model_params {
    const char *arch;        // "llama" or "qwen2" (adds q/k/v biases); any other name is written as is
    const char *name;        // general.name; NULL = "tiny-<arch>"
    uint64_t seed;
    int n_layer, d_model, n_head, n_head_kv;
    int head_dim;            // 0 = d_model / n_head; otherwise also written as .attention.key_length/value_length
    int d_ff, n_vocab, n_ctx;
    float rope_base, rms_eps;
    tiny_rope_scaling rope_scaling;
    float rope_factor;                   // linear and llama3
    float rope_low_freq_factor;          // llama3 (default 1)
    float rope_high_freq_factor;         // llama3 (default 4)
    int rope_orig_ctx;                   // llama3 original context (default 8192)
    int tied_output;         // 1: no output.weight; the loader reuses token_embd
    // Weight types (enum ggml_type: F32, F16, BF16, Q8_0, Q4_0, Q4_1). Norms,
    // biases and rope_freqs are always F32. Quantized types need row lengths
    // (ne0) that are multiples of 32.
    uint32_t type_embd, type_attn, type_ffn, type_output;
    const char *tokenizer_pre;  // tokenizer.ggml.pre; NULL = "default" (llama.cpp's plain GPT-2 regex)
    uint32_t alignment;         // general.alignment; 0 = not written (32)
    // Knob for bad-input files: store the tensor with this name as
    // override_type, with random bytes (ggml_row_bytes of it, or one byte per
    // element for an id recall does not know).
    const char *override_tensor;
    uint32_t override_type;
} tiny_model_params;

// Defaults: llama, seed 1, 2 layers, d_model 64, 4 heads (2 KV heads, GQA),
// head_dim 16, d_ff 96, vocab 300, context 128, rope base 10000, eps 1e-5,
// no scaling, separate output, all weights F32.
void tiny_model_default(tiny_model_params *p);
// The sharding tests' model: 3 layers, 6 query heads over 2 KV heads (GQA 3),
// head_dim 16, 256 positions; written to a fresh temporary file (path: at
// least 32 bytes) and loaded. Returns 0 or fails with err.
int tiny_model_sharding(char *path, model *m, rc_err *err);

// Adds the whole model (metadata, vocabulary, tensors) to w, which the caller
// has initialized, so it can set knobs before writing.
int tiny_model_build(gguf_writer *w, const tiny_model_params *p, rc_err *err);
// Builds and writes the model to path.
int tiny_model_write(const char *path, const tiny_model_params *p, rc_err *err);

// The token string of a byte in GPT-2's byte-to-unicode form (UTF-8, 1 or 2
// bytes plus NUL in out[3]); returns its length.
int tiny_model_byte_token(uint8_t byte, char out[3]);

#endif
