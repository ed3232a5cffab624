#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const ggml_type_info type_table[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"F32", 1, 4, 1},
    [GGML_TYPE_F16] = {"F16", 1, 2, 1},
    [GGML_TYPE_Q4_0] = {"Q4_0", 32, 18, 1},
    [GGML_TYPE_Q4_1] = {"Q4_1", 32, 20, 1},
    [GGML_TYPE_Q5_0] = {"Q5_0", 32, 22, 1},
    [GGML_TYPE_Q5_1] = {"Q5_1", 32, 24, 1},
    [GGML_TYPE_Q8_0] = {"Q8_0", 32, 34, 1},
    [GGML_TYPE_Q8_1] = {"Q8_1", 32, 36, 0},
    [GGML_TYPE_Q2_K] = {"Q2_K", 256, 84, 0},
    [GGML_TYPE_Q3_K] = {"Q3_K", 256, 110, 0},
    [GGML_TYPE_Q4_K] = {"Q4_K", 256, 144, 1},
    [GGML_TYPE_Q5_K] = {"Q5_K", 256, 176, 1},
    [GGML_TYPE_Q6_K] = {"Q6_K", 256, 210, 1},
    [GGML_TYPE_Q8_K] = {"Q8_K", 256, 292, 0},
    [16] = {"IQ2_XXS", 256, 66, 0},
    [17] = {"IQ2_XS", 256, 74, 0},
    [18] = {"IQ3_XXS", 256, 98, 0},
    [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},
    [21] = {"IQ3_S", 256, 110, 0},
    [22] = {"IQ2_S", 256, 82, 0},
    [23] = {"IQ4_XS", 256, 136, 0},
    [24] = {"I8", 1, 1, 0},
    [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},
    [27] = {"I64", 1, 8, 0},
    [28] = {"F64", 1, 8, 0},
    [29] = {"IQ1_M", 256, 56, 0},
    [GGML_TYPE_BF16] = {"BF16", 1, 2, 1},
    [34] = {"TQ1_0", 256, 54, 0},
    [35] = {"TQ2_0", 256, 66, 0},
    [39] = {"MXFP4", 32, 17, 0},
};

const ggml_type_info *ggml_type_get(uint32_t type) {
    if (type >= GGML_TYPE_COUNT || type_table[type].name == NULL) return NULL;
    return &type_table[type];
}

const char *ggml_type_name(uint32_t type) {
    static _Thread_local char buf[32];
    const ggml_type_info *ti = ggml_type_get(type);
    if (ti) return ti->name;
    snprintf(buf, sizeof(buf), "type %u", type);
    return buf;
}

size_t ggml_row_bytes(uint32_t type, int64_t n_elems) {
    const ggml_type_info *ti = ggml_type_get(type);
    if (!ti || n_elems < 0 || n_elems % ti->block_elems != 0) return 0;
    return (size_t)(n_elems / ti->block_elems) * ti->block_bytes;
}

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            mant &= 0x3ff;
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | mant << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t abs = x & 0x7fffffff;
    if (abs >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to inf
    if (abs < 0x38800000u) {                                     // fp16 subnormal or zero
        if (abs < 0x33000000u) return (uint16_t)sign;
        uint32_t e = abs >> 23;
        uint32_t m = (abs & 0x7fffff) | 0x800000;
        // value = m * 2^(e-150) and the fp16 subnormal unit is 2^-24, so q = m >> (126 - e)
        uint32_t rshift = 126 - e;
        uint32_t q = m >> rshift;
        uint32_t rem = m & ((1u << rshift) - 1);
        uint32_t half = 1u << (rshift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
    uint32_t q = r >> 13;
    uint32_t rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

float bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

// Sub-blocks 2k and 2k+1 of a Q4_K/Q5_K super-block share 32 bytes of qs:
// low nibbles are sub-block 2k, high nibbles 2k+1; Q5_K's 5th bit of element l
// of sub-block s is bit s of qh[l].
static void dequant_q4_k(const block_q4_k *b, float *y) {
    float d = fp16_to_fp32(b->d), dmin = fp16_to_fp32(b->dmin);
    for (int s = 0; s < 8; s++) {
        uint8_t sc, m;
        kquant_scale_min(s, b->scales, &sc, &m);
        float ds = d * sc, dm = dmin * m;
        const uint8_t *q = b->qs + 32 * (s / 2);
        for (int l = 0; l < 32; l++) y[32 * s + l] = ds * (float)((s & 1) ? q[l] >> 4 : q[l] & 0x0f) - dm;
    }
}

static void dequant_q5_k(const block_q5_k *b, float *y) {
    float d = fp16_to_fp32(b->d), dmin = fp16_to_fp32(b->dmin);
    for (int s = 0; s < 8; s++) {
        uint8_t sc, m;
        kquant_scale_min(s, b->scales, &sc, &m);
        float ds = d * sc, dm = dmin * m;
        const uint8_t *q = b->qs + 32 * (s / 2);
        for (int l = 0; l < 32; l++) {
            int v = ((s & 1) ? q[l] >> 4 : q[l] & 0x0f) + ((b->qh[l] >> s) & 1) * 16;
            y[32 * s + l] = ds * (float)v - dm;
        }
    }
}

// Each 128-element half holds 64 ql bytes and 32 qh bytes: element l + 32k
// (k = 0..3) takes the low (k < 2) or high (k >= 2) nibble of ql[l + 32*(k&1)]
// and bits 2k..2k+1 of qh[l]; its scale is scales[8*half + 2k + l/16].
static void dequant_q6_k(const block_q6_k *b, float *y) {
    float d = fp16_to_fp32(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int lo = k >= 2 ? ql[l + 32 * (k & 1)] >> 4 : ql[l + 32 * (k & 1)] & 0x0f;
                int q = (lo | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
                y[128 * h + 32 * k + l] = d * (float)sc[2 * k + l / 16] * (float)q;
            }
    }
}

void dequantize_row(uint32_t type, const void *src, float *dst, int64_t n_elems) {
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, src, (size_t)n_elems * sizeof(float));
        break;
    case GGML_TYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n_elems; i++) dst[i] = fp16_to_fp32(s[i]);
        break;
    }
    case GGML_TYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n_elems; i++) dst[i] = bf16_to_fp32(s[i]);
        break;
    }
    case GGML_TYPE_Q4_0: {  // x = d * (q - 8); low nibbles are elements 0..15
        const block_q4_0 *b = src;
        for (int64_t i = 0; i < n_elems / QK4_0; i++) {
            float d = fp16_to_fp32(b[i].d);
            for (int j = 0; j < QK4_0 / 2; j++) {
                dst[i * QK4_0 + j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
                dst[i * QK4_0 + j + QK4_0 / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case GGML_TYPE_Q4_1: {  // x = d * q + m
        const block_q4_1 *b = src;
        for (int64_t i = 0; i < n_elems / QK4_1; i++) {
            float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
            for (int j = 0; j < QK4_1 / 2; j++) {
                dst[i * QK4_1 + j] = d * (float)(b[i].qs[j] & 0x0f) + m;
                dst[i * QK4_1 + j + QK4_1 / 2] = d * (float)(b[i].qs[j] >> 4) + m;
            }
        }
        break;
    }
    case GGML_TYPE_Q8_0: {  // x = d * q
        const block_q8_0 *b = src;
        for (int64_t i = 0; i < n_elems / QK8_0; i++) {
            float d = fp16_to_fp32(b[i].d);
            for (int j = 0; j < QK8_0; j++) dst[i * QK8_0 + j] = d * (float)b[i].qs[j];
        }
        break;
    }
    case GGML_TYPE_Q5_0: {  // x = d * (q - 16)
        const block_q5_0 *b = src;
        for (int64_t i = 0; i < n_elems / QK5_0; i++) {
            float d = fp16_to_fp32(b[i].d);
            uint32_t qh = (uint32_t)b[i].qh[0] | (uint32_t)b[i].qh[1] << 8 | (uint32_t)b[i].qh[2] << 16 |
                          (uint32_t)b[i].qh[3] << 24;
            for (int j = 0; j < QK5_0 / 2; j++) {
                int lo = (b[i].qs[j] & 0x0f) | ((qh >> j) & 1) << 4;
                int hi = (b[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
                dst[i * QK5_0 + j] = d * (float)(lo - 16);
                dst[i * QK5_0 + j + QK5_0 / 2] = d * (float)(hi - 16);
            }
        }
        break;
    }
    case GGML_TYPE_Q5_1: {  // x = d * q + m
        const block_q5_1 *b = src;
        for (int64_t i = 0; i < n_elems / QK5_1; i++) {
            float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
            uint32_t qh = (uint32_t)b[i].qh[0] | (uint32_t)b[i].qh[1] << 8 | (uint32_t)b[i].qh[2] << 16 |
                          (uint32_t)b[i].qh[3] << 24;
            for (int j = 0; j < QK5_1 / 2; j++) {
                int lo = (b[i].qs[j] & 0x0f) | ((qh >> j) & 1) << 4;
                int hi = (b[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
                dst[i * QK5_1 + j] = d * (float)lo + m;
                dst[i * QK5_1 + j + QK5_1 / 2] = d * (float)hi + m;
            }
        }
        break;
    }
    case GGML_TYPE_Q4_K:
        for (int64_t i = 0; i < n_elems / QK_K; i++) dequant_q4_k((const block_q4_k *)src + i, dst + i * QK_K);
        break;
    case GGML_TYPE_Q5_K:
        for (int64_t i = 0; i < n_elems / QK_K; i++) dequant_q5_k((const block_q5_k *)src + i, dst + i * QK_K);
        break;
    case GGML_TYPE_Q6_K:
        for (int64_t i = 0; i < n_elems / QK_K; i++) dequant_q6_k((const block_q6_k *)src + i, dst + i * QK_K);
        break;
    default:
        memset(dst, 0, (size_t)n_elems * sizeof(float));  // callers check ->supported first
        break;
    }
}

void quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n_elems) {
    for (int64_t i = 0; i < n_elems / QK8_0; i++) {
        const float *xb = x + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;  // GGML scales by the fp32 d, not the stored fp16 one
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

void quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n_elems) {
    for (int64_t i = 0; i < n_elems / QK4_0; i++) {
        const float *xb = x + i * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        const float d = max / -8.0f;  // the extreme maps to q = 0 exactly; its opposite clips at 15
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            // (int8_t) truncates toward zero; + 8.5 makes it round half up, as GGML does
            int q0 = (int8_t)(xb[j] * id + 8.5f), q1 = (int8_t)(xb[j + QK4_0 / 2] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}
