// A model = its configuration (read from GGUF metadata, never hard-coded per
// model) plus borrowed weight views into the mapped file.
#ifndef RECALL_MODEL_MODEL_H
#define RECALL_MODEL_MODEL_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "model/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

enum model_arch { ARCH_LLAMA = 0, ARCH_QWEN2 = 1 };

// Bounds on the dimensions read from metadata, checked before any arithmetic
// on them (far above any real model; the products of two fit int64).
#define MODEL_MAX_LAYERS 4096
#define MODEL_MAX_DIM (1 << 20)     // embedding, feed-forward and head sizes
#define MODEL_MAX_HEADS 4096        // query and KV heads
#define MODEL_MAX_CTX (1 << 30)     // training context length
#define MODEL_MAX_VOCAB (1 << 24)

typedef struct model_config {
    int arch;                 // enum model_arch
    char arch_name[32];
    char name[128];           // general.name, may be empty
    int64_t n_layer;
    int64_t d_model;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim;
    int64_t ffn_dim;
    int64_t n_vocab;
    int64_t n_ctx_train;
    float rms_eps;
    float rope_base;
    int64_t rope_dim;         // rotated dimensions per head (<= head_dim)
    float rope_linear_scale;  // positions are multiplied by this (1 = off)
    int rope_has_freq_factors;
    int tied_output;          // output projection reuses token_embd
} model_config;

typedef struct layer_weights {
    float *attn_norm;         // (d_model), owned fp32 copy
    weight wq, wk, wv, wo;    // wq: (n_head*head_dim, d_model) etc.
    float *bq, *bk, *bv;      // qwen2 biases, owned, NULL when absent
    float *ffn_norm;          // (d_model)
    weight w_gate, w_up;      // (ffn_dim, d_model)
    weight w_down;            // (d_model, ffn_dim)
} layer_weights;

typedef struct model {
    gguf_file file;
    model_config cfg;
    weight tok_embd;          // (n_vocab, d_model)
    float *output_norm;       // (d_model), owned
    weight output;            // (n_vocab, d_model); == tok_embd when tied
    layer_weights *layers;    // (n_layer), owned
    float *rope_inv_freq;     // (rope_dim/2), owned, scaling folded in
    rope_table rope;
} model;

int model_load(model *m, const char *path, rc_err *err);
// The same from an in-memory GGUF image (not copied; must outlive m).
int model_load_memory(model *m, const void *data, size_t n_bytes, const char *name, rc_err *err);
void model_free(model *m);

// Bytes of weights read to decode one token (every matrix once, the
// embedding row only).
int64_t model_weight_bytes_per_token(const model *m);

#ifdef __cplusplus
}
#endif

#endif
