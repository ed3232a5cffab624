// Tensor element types (ggml numbering, as stored in GGUF) and their exact
// dequantization. Block layouts follow the GGUF spec / ggml-common.h.
#ifndef RECALL_MODEL_QUANT_H
#define RECALL_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum ggml_type {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14, GGML_TYPE_Q8_K = 15, GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40
};

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK5_0 32
#define QK5_1 32
#define QK_K 256          // K-quant super-block
#define K_SCALE_SIZE 12   // Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins

// Block structs (packed by construction: uint16 halves followed by bytes).
typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;            // 18 bytes
typedef struct { uint16_t d; uint16_t m; uint8_t qs[QK4_1 / 2]; } block_q4_1; // 20 bytes
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;                 // 34 bytes
// Q5_0/Q5_1: bit j of qh is the 5th bit of element j.
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;             // 22 bytes
typedef struct { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1; // 24 bytes
// K-quants: super-blocks of 256. Q4_K/Q5_K: 8 sub-blocks of 32, x = d*sc*q - dmin*m.
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_k;  // 144 bytes
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_k;  // 176 bytes
// Q6_K: 16 sub-blocks of 16, x = d*sc*(q - 32), q 6 bits split into ql (4) and qh (2).
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_k;  // 210 bytes

typedef struct ggml_type_info {
    const char *name;
    int64_t block_elems;   // elements per block (1 for plain float types)
    size_t block_bytes;    // bytes per block
    int supported;         // recall can dequantize / multiply it
} ggml_type_info;

// Name and layout of any known type id; NULL for ids ggml never defined.
const ggml_type_info *ggml_type_get(uint32_t type);
const char *ggml_type_name(uint32_t type);  // "type 99" style for unknown ids

// Bytes needed for n_elems of a type; returns 0 when n_elems is not a whole
// number of blocks or the type is unknown.
size_t ggml_row_bytes(uint32_t type, int64_t n_elems);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);      // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);      // round to nearest even

// Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed
// bytes (ggml's get_scale_min_k4). Inline: the fused kernels call it per sub-block.
static inline void kquant_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {  // low 6 bits of bytes 0..3 (scales) and 4..7 (mins)
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {      // nibbles of bytes 8..11, top 2 bits from bytes 0..7
        *sc = (uint8_t)((q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4);
        *m = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
    }
}

// Dequantizes n_elems (a multiple of the block size) starting at src.
void dequantize_row(uint32_t type, const void *src, float *dst, int64_t n_elems);

// GGML's reference quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref):
// n_elems a multiple of 32. Q8_0: d = amax / 127, q = round(x / d);
// Q4_0: d = (the value of largest magnitude) / -8, q = min(15, round-half-up(x / d) + 8).
void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n_elems);
void quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n_elems);

#ifdef __cplusplus
}
#endif

#endif
