#include "backend/kv_format.h"

#include <string.h>

#include "model/quant.h"

static const char *const names[] = {[KV_F16] = "f16", [KV_F32] = "f32", [KV_Q8_0] = "q8_0", [KV_Q4_0] = "q4_0"};

const char *kv_elem_name(int elem) { return elem >= 0 && elem <= KV_Q4_0 ? names[elem] : "?"; }

int kv_elem_parse(const char *s) {
    for (int e = 0; e <= KV_Q4_0; e++)
        if (!strcmp(s, names[e])) return e;
    return -1;
}

int kv_elem_check(int elem, int64_t head_dim, rc_err *err) {
    if (elem < 0 || elem > KV_Q4_0) return rc_fail(err, "unknown KV cache type %d", elem);
    const int64_t blk = kv_elem_block(elem);
    if (head_dim <= 0 || head_dim % blk)
        return rc_fail(err, "KV cache type %s needs a head dimension that is a multiple of %lld; this model's is %lld",
                       kv_elem_name(elem), (long long)blk, (long long)head_dim);
    return 0;
}

void kv_encode_row(int elem, void *dst, const float *src, int64_t n_elems) {
    switch (elem) {
    case KV_F16:
        for (int64_t i = 0; i < n_elems; i++) ((uint16_t *)dst)[i] = fp32_to_fp16(src[i]);
        break;
    case KV_Q8_0: quantize_row_q8_0(src, dst, n_elems); break;
    case KV_Q4_0: quantize_row_q4_0(src, dst, n_elems); break;
    default: memcpy(dst, src, (size_t)n_elems * sizeof(float)); break;
    }
}

static const uint32_t ggml_of[] = {[KV_F16] = GGML_TYPE_F16, [KV_F32] = GGML_TYPE_F32, [KV_Q8_0] = GGML_TYPE_Q8_0,
                                   [KV_Q4_0] = GGML_TYPE_Q4_0};

void kv_decode_row(int elem, const void *src, float *dst, int64_t n_elems) {
    dequantize_row(ggml_of[elem], src, dst, n_elems);
}

float kv_decode_at(int elem, const void *row, int64_t i) {
    switch (elem) {
    case KV_F16: return fp16_to_fp32(((const uint16_t *)row)[i]);
    case KV_Q8_0: {
        const block_q8_0 *b = (const block_q8_0 *)row + i / QK8_0;
        return fp16_to_fp32(b->d) * (float)b->qs[i % QK8_0];
    }
    case KV_Q4_0: {  // low nibbles are elements 0..15 of the block, high nibbles 16..31
        const block_q4_0 *b = (const block_q4_0 *)row + i / QK4_0;
        const int j = (int)(i % QK4_0);
        const int q = j < QK4_0 / 2 ? b->qs[j] & 0x0f : b->qs[j - QK4_0 / 2] >> 4;
        return fp16_to_fp32(b->d) * (float)(q - 8);
    }
    default: return ((const float *)row)[i];
    }
}
