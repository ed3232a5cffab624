#include "defect_inputs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "tiny_model.h"

static const char *const k_names[DEFECT_GGUF_COUNT] = {
    "defect_rope_base_zero", "defect_rms_eps_negative", "defect_alignment_one", "defect_token_type_huge",
    "defect_head_count_huge", "defect_block_count_huge", "defect_nan_weight",
};

const char *defect_gguf_name(int i) { return i >= 0 && i < DEFECT_GGUF_COUNT ? k_names[i] : NULL; }

// Small (about 20 KB), so the files also serve as fuzzing inputs.
static void base_params(tiny_model_params *p) {
    tiny_model_default(p);
    p->n_layer = 1;
    p->d_model = 32;
    p->n_head = 2;
    p->n_head_kv = 1;
    p->d_ff = 32;
    p->n_vocab = TINY_MODEL_MIN_VOCAB;
    p->n_ctx = 64;
    p->type_embd = GGML_TYPE_Q8_0;
    p->type_attn = GGML_TYPE_Q8_0;  // F16 scales: what a misaligned file breaks
    p->type_ffn = GGML_TYPE_Q8_0;
    p->type_output = GGML_TYPE_Q8_0;
}

static int set_u32(gguf_writer *w, const char *key, uint32_t v, rc_err *err) {
    uint32_t type;
    uint8_t *p = gguf_writer_find_value(w, key, &type);
    if (!p || type != GGUF_VAL_UINT32) return rc_fail(err, "defect_inputs: no uint32 '%s'", key);
    memcpy(p, &v, 4);
    return 0;
}

int defect_gguf_build(int i, uint8_t **img, size_t *n_bytes, rc_err *err) {
    *img = NULL;
    *n_bytes = 0;
    if (i < 0 || i >= DEFECT_GGUF_COUNT) return rc_fail(err, "defect_inputs: no defect %d", i);
    tiny_model_params p;
    base_params(&p);
    if (i == DEFECT_ROPE_BASE_ZERO) p.rope_base = 0.0f;
    if (i == DEFECT_RMS_EPS_NEGATIVE) p.rms_eps = -1.0f;
    if (i == DEFECT_ALIGNMENT_ONE) p.alignment = 1;
    if (i == DEFECT_HEAD_COUNT_HUGE) p.head_dim = 16;  // writes key_length/value_length to patch
    // With alignment 1 the data section starts right after the header: pad the
    // name until that is an odd offset.
    char name[64] = "tiny-defect";
    for (int attempt = 0; attempt < 2; attempt++) {
        p.name = name;
        gguf_writer w;
        gguf_writer_init(&w);
        int rc = tiny_model_build(&w, &p, err);
        if (rc == 0 && i == DEFECT_TOKEN_TYPE_HUGE) {
            uint32_t type;
            uint8_t *v = gguf_writer_find_value(&w, "tokenizer.ggml.token_type", &type);
            if (!v || type != GGUF_VAL_ARRAY) {
                rc = rc_fail(err, "defect_inputs: no token_type array");
            } else {
                const uint32_t et = GGUF_VAL_UINT32, huge = 0xFFFFFFFFu;
                memcpy(v, &et, 4);          // int32 -> uint32: same size
                memcpy(v + 12 + 4 * 5, &huge, 4);  // token 5's type
            }
        }
        if (rc == 0 && i == DEFECT_HEAD_COUNT_HUGE)
            rc = set_u32(&w, "llama.attention.head_count", 0xFFFFFFFFu, err) ||
                 set_u32(&w, "llama.attention.head_count_kv", 0xFFFFFFFFu, err) ||
                 set_u32(&w, "llama.attention.key_length", 0xFFFFFFFEu, err) ||
                 set_u32(&w, "llama.attention.value_length", 0xFFFFFFFEu, err) ||
                 set_u32(&w, "llama.rope.dimension_count", 2, err) ? -1 : 0;
        if (rc == 0 && i == DEFECT_BLOCK_COUNT_HUGE) rc = set_u32(&w, "llama.block_count", 0xFFFFFFFFu, err);
        if (rc == 0 && i == DEFECT_NAN_WEIGHT) {
            int64_t t = gguf_writer_find_tensor(&w, "blk.0.ffn_norm.weight");
            if (t < 0) rc = rc_fail(err, "defect_inputs: no blk.0.ffn_norm.weight");
            else {
                const float nan = NAN;
                memcpy(w.tensors[t].data, &nan, sizeof(nan));
            }
        }
        gguf_writer_layout lay = {0};
        if (rc == 0) rc = gguf_writer_write_memory(&w, img, n_bytes, &lay, err);
        const int even = rc == 0 && i == DEFECT_ALIGNMENT_ONE && lay.data_offset % 2 == 0;
        gguf_writer_layout_free(&lay);
        gguf_writer_free(&w);
        if (rc) return -1;
        if (!even) return 0;
        free(*img);
        *img = NULL;
        strcat(name, "x");  // one more header byte
    }
    return rc_fail(err, "defect_inputs: could not place the tensor data at an odd offset");
}

const char *defect_head_scores_json(void) {
    return "{\"format\":\"recall-head-scores-1\",\"model\":\"m\",\"probe\":\"r\",\"n_layer\":65536,"
           "\"n_head\":65536,\"n_examples\":1,\"scores\":[[1]]}";
}
