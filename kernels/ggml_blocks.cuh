// Device-side decoding of GGML weight rows and fp16 bit conversions, shared by
// the dequant, matvec and kv_write kernels. Included by .cu files only (it
// holds __device__ code, no launcher). The conversions are integer bit
// manipulations identical to src/model/quant.c, so the device decodes every
// stored weight to exactly the float the CPU reference decodes.
#ifndef RECALL_KERNELS_GGML_BLOCKS_CUH
#define RECALL_KERNELS_GGML_BLOCKS_CUH

#include <stdint.h>

#include "model/quant.h"

__device__ __forceinline__ float rk_fp16_to_fp32(uint32_t h) {
    uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    return __uint_as_float(bits);
}

// Round to nearest even, like fp32_to_fp16 in src/model/quant.c.
__device__ __forceinline__ uint16_t rk_fp32_to_fp16(float f) {
    uint32_t x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) {
        if (abs < 0x33000000u) return (uint16_t)sign;
        uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u, rshift = 126 - e;
        uint32_t q = m >> rshift, rem = m & ((1u << rshift) - 1), half = 1u << (rshift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = abs - 0x38000000u, q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

__device__ __forceinline__ uint32_t rk_load_u16(const uint8_t *p) {  // 2-byte aligned in every layout
    return *(const uint16_t *)p;
}

// Element i of a stored row of `type` (one of the types rk_weight_type_ok accepts).
__device__ __forceinline__ float rk_weight_elem(const uint8_t *row, uint32_t type, int64_t i) {
    const int64_t b = i / 32;
    const int j = (int)(i % 32);
    switch (type) {
    case GGML_TYPE_F32: return ((const float *)row)[i];
    case GGML_TYPE_F16: return rk_fp16_to_fp32(rk_load_u16(row + 2 * i));
    case GGML_TYPE_BF16: return __uint_as_float(rk_load_u16(row + 2 * i) << 16);
    case GGML_TYPE_Q8_0: {
        const uint8_t *blk = row + b * 34;
        return rk_fp16_to_fp32(rk_load_u16(blk)) * (float)(int8_t)blk[2 + j];
    }
    case GGML_TYPE_Q4_0: {
        const uint8_t *blk = row + b * 18;
        const int q = j < 16 ? blk[2 + j] & 0x0f : blk[2 + j - 16] >> 4;
        return rk_fp16_to_fp32(rk_load_u16(blk)) * (float)(q - 8);
    }
    case GGML_TYPE_Q4_1: {
        const uint8_t *blk = row + b * 20;
        const int q = j < 16 ? blk[4 + j] & 0x0f : blk[4 + j - 16] >> 4;
        return rk_fp16_to_fp32(rk_load_u16(blk)) * (float)q + rk_fp16_to_fp32(rk_load_u16(blk + 2));
    }
    default: return 0.0f;
    }
}

#endif
