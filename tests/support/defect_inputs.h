// Inputs that once made recall misbehave (exit 0 with garbage, a crash,
// undefined behaviour, a huge allocation), written by the test suite's own
// GGUF writer. The CLI tests (tests/make_bad_inputs.c) and the fuzzing
// regression corpus (tests/fuzz/make_fuzz_corpus.c) both use them, so a
// fixed defect stays fixed in both.
#ifndef RECALL_TESTS_DEFECT_INPUTS_H
#define RECALL_TESTS_DEFECT_INPUTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

enum defect_gguf {
    DEFECT_ROPE_BASE_ZERO,     // llama.rope.freq_base = 0: every logit NaN, exit 0
    DEFECT_RMS_EPS_NEGATIVE,   // llama.attention.layer_norm_rms_epsilon = -1: the same
    DEFECT_ALIGNMENT_ONE,      // general.alignment = 1, tensor data at an odd offset: misaligned reads
    DEFECT_TOKEN_TYPE_HUGE,    // tokenizer.ggml.token_type as uint32 with 0xFFFFFFFF: float->int overflow
    DEFECT_HEAD_COUNT_HUGE,    // head counts and key length near 2^32: int64 overflow in n_head * head_dim
    DEFECT_BLOCK_COUNT_HUGE,   // block_count = 0xFFFFFFFF: a 1.37 TB allocation before any check
    DEFECT_NAN_WEIGHT,         // a NaN in blk.0.ffn_norm.weight: loads, every logit NaN
    DEFECT_GGUF_COUNT
};

// File name (without .gguf) of defect i, e.g. "defect_rope_base_zero".
const char *defect_gguf_name(int i);
// The GGUF image of defect i (malloc'd; caller frees).
int defect_gguf_build(int i, uint8_t **img, size_t *n_bytes, rc_err *err);

// A 118-byte head-scores file declaring 65536 x 65536 scores with one row.
const char *defect_head_scores_json(void);

#endif
