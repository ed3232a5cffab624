// The model's weights as one backend holds them: uploaded once when an
// engine is created (the CPU backend keeps the mmap'd views: zero copies).
#ifndef RECALL_ENGINE_WEIGHTS_H
#define RECALL_ENGINE_WEIGHTS_H

#include "backend/backend.h"
#include "core/status.h"
#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct engine_layer_weights {
    weight attn_norm, ffn_norm;  // (d_model) F32 vectors
    weight wq, wk, wv, wo, w_gate, w_up, w_down;
    weight bq, bk, bv;           // F32 vectors; data NULL when absent
} engine_layer_weights;

typedef struct engine_weights {
    weight tok_embd, output, output_norm, rope_inv_freq;
    int tied;                    // output is tok_embd (not uploaded twice)
    engine_layer_weights *layers;
    int64_t n_layer;
    rope_table rope;
} engine_weights;

int engine_weights_upload(engine_weights *w, const backend *be, const model *m, rc_err *err);
void engine_weights_free(engine_weights *w, const backend *be);

// A weight's data as fp32 values (the F32 vectors: norms, biases).
static inline const float *weight_f32(const weight *w) { return (const float *)w->data; }

#ifdef __cplusplus
}
#endif

#endif
