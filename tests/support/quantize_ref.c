#include "quantize_ref.h"

#include <float.h>
#include <math.h>
#include <string.h>

// The float conversions work on the value, not the bit pattern: a float is
// exact in a double, scaling by powers of two is exact, and nearbyint() in the
// default rounding mode rounds half to even, which is IEEE's rule.

uint16_t qref_fp32_to_fp16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (isnan(f)) return sign | 0x7e00;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;  // 65520 is halfway from 65504 (odd) to 2^16: ties go to inf
    if (a < 0x1p-14) {                       // subnormal: units of 2^-24; 1024 units is the smallest normal
        return sign | (uint16_t)nearbyint(a * 0x1p24);
    }
    int e;
    frexp(a, &e);                         // a in [2^(e-1), 2^e)
    double q = nearbyint(ldexp(a, 11 - e));  // 11 significant bits: q in [1024, 2048]
    // q == 2048 carries into the exponent field, which is what the sum does.
    return sign | (uint16_t)(((e - 1 + 15) << 10) + ((int)q - 1024));
}

float qref_fp16_to_fp32(uint16_t h) {
    int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0x1f) v = mant ? NAN : INFINITY;
    else if (exp == 0) v = ldexp(mant, -24);
    else v = ldexp(1024 + mant, exp - 25);
    return (float)((h & 0x8000) ? -v : v);
}

uint16_t qref_fp32_to_bf16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (isnan(f)) return sign | 0x7fc0;
    double a = fabs((double)f);
    // Largest bf16 is (2 - 2^-7) * 2^127; halfway to 2^128 rounds to even (inf).
    if (a >= 0x1.ffp127) return sign | 0x7f80;
    if (a < 0x1p-126) return sign | (uint16_t)nearbyint(a * 0x1p133);  // subnormal units of 2^-133
    int e;
    frexp(a, &e);
    double q = nearbyint(ldexp(a, 8 - e));  // 8 significant bits: q in [128, 256]
    return sign | (uint16_t)(((e - 1 + 127) << 7) + ((int)q - 128));
}

float qref_bf16_to_fp32(uint16_t h) {
    int exp = (h >> 7) & 0xff, mant = h & 0x7f;
    double v;
    if (exp == 0xff) v = mant ? NAN : INFINITY;
    else if (exp == 0) v = ldexp(mant, -133);
    else v = ldexp(128 + mant, exp - 134);
    return (float)((h & 0x8000) ? -v : v);
}

static int min_int(int a, int b) { return a < b ? a : b; }

// Q4_0: d = (the value of largest magnitude) / -8, q = round(x/d) + 8 clamped
// to 15, so the extreme maps to q = 0 exactly and its opposite clips at 15.
void qref_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n_elems) {
    for (int64_t i = 0; i < n_elems / QK4_0; i++) {
        const float *xb = x + i * QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;  // ggml scales by the fp32 d, not the stored fp16 one
        y[i].d = qref_fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            // (int8_t) truncates toward zero; +8.5 turns that into round-half-up.
            const int q0 = min_int(15, (int8_t)(xb[j] * id + 8.5f));
            const int q1 = min_int(15, (int8_t)(xb[j + QK4_0 / 2] * id + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

// Q4_1: d = (max - min) / 15, m = min, q = round((x - min) / d).
void qref_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t n_elems) {
    for (int64_t i = 0; i < n_elems / QK4_1; i++) {
        const float *xb = x + i * QK4_1;
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (xb[j] < min) min = xb[j];
            if (xb[j] > max) max = xb[j];
        }
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qref_fp32_to_fp16(d);
        y[i].m = qref_fp32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int q0 = min_int(15, (int8_t)((xb[j] - min) * id + 0.5f));
            const int q1 = min_int(15, (int8_t)((xb[j + QK4_1 / 2] - min) * id + 0.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

// Q8_0: d = amax / 127, q = roundf(x / d) (half away from zero).
void qref_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n_elems) {
    for (int64_t i = 0; i < n_elems / QK8_0; i++) {
        const float *xb = x + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = qref_fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(xb[j] * id);
    }
}

size_t qref_quantize(uint32_t type, const float *x, void *dst, int64_t n_elems) {
    size_t n_bytes = ggml_row_bytes(type, n_elems);
    if (n_bytes == 0) return 0;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(dst, x, n_bytes);
        return n_bytes;
    case GGML_TYPE_F16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n_elems; i++) h[i] = qref_fp32_to_fp16(x[i]);
        return n_bytes;
    }
    case GGML_TYPE_BF16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n_elems; i++) h[i] = qref_fp32_to_bf16(x[i]);
        return n_bytes;
    }
    case GGML_TYPE_Q4_0: qref_quantize_row_q4_0(x, dst, n_elems); return n_bytes;
    case GGML_TYPE_Q4_1: qref_quantize_row_q4_1(x, dst, n_elems); return n_bytes;
    case GGML_TYPE_Q8_0: qref_quantize_row_q8_0(x, dst, n_elems); return n_bytes;
    default: return 0;
    }
}
