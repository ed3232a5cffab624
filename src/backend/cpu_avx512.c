#include "backend/cpu_avx512.h"

#include <immintrin.h>

#include "model/quant.h"

#define SIMD512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define INLINE512 SIMD512 static inline __attribute__((always_inline))

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096  // as cpu.c: one page ahead, where the L2 streamer stops
#endif

// ---- decode matvec: two rows at a time, so each activation load serves both ----


// The scales of up to 16 consecutive blocks (bsz bytes apart, fp16 d first,
// then fp16 m for Q4_1) with one gather: d to dd[0..15], m (or -8 d for Q4_0)
// to *m; lanes past n are 0. Converting them one block at a time cost as many
// instructions as the block's dot product.
INLINE512 __m512 block_scales(const uint8_t *b0, int64_t bsz, int64_t n, int kind, float *dd, __m512 *m) {
    const __mmask16 mask = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)bsz));
    const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, idx, b0, 1);
    const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
    _mm512_store_ps(dd, d);
    if (kind == GGML_TYPE_Q4_1) *m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
    else *m = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    return d;
}

// (q . x) over one block of 32 four-bit values (low nibbles: elements 0..15,
// high: 16..31) as 16 partial sums; the bytes widen straight from memory.
INLINE512 __m512 nibble_dot(const uint8_t *qs, __m512 x0, __m512 x1) {
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(0x0f)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
    return _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
}

// (q . x) over one Q8_0 block as 16 partial sums.
INLINE512 __m512 q8_dot(const int8_t *q, __m512 x0, __m512 x1) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 16))));
    return _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
}

// Q4_1: x = d*q + m per block, so a row dot is sum_b d_b (q . x)_b + m_b xsum_b.
// Q4_0 is the same with m_b = -8 d_b; Q8_0 (x = d*q) has no m term.
INLINE512 void rows_blocks(int kind, float *out, const uint8_t *w, size_t rb, const float *x, const float *xsum,
                           int64_t nb, int64_t o0, int64_t o1) {
    const int64_t bsz = kind == GGML_TYPE_Q4_1 ? sizeof(block_q4_1)
                        : kind == GGML_TYPE_Q4_0 ? sizeof(block_q4_0)
                                                 : sizeof(block_q8_0);
    const int64_t qoff = kind == GGML_TYPE_Q4_1 ? 4 : 2;  // qs after the scale(s)
    float dd[2][16] __attribute__((aligned(64)));
    for (int64_t o = o0; o < o1; o += 2) {
        const int two = o + 1 < o1;
        const uint8_t *r0 = w + (size_t)o * rb, *r1 = two ? r0 + rb : r0;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
        for (int64_t i0 = 0; i0 < nb; i0 += 16) {
            const int64_t n = nb - i0 < 16 ? nb - i0 : 16;
            if (kind != GGML_TYPE_Q8_0) {
                const __mmask16 mask = n == 16 ? 0xffff : (__mmask16)((1u << n) - 1);
                const __m512 xs = _mm512_maskz_loadu_ps(mask, xsum + i0);
                __m512 m0, m1;
                block_scales(r0 + i0 * bsz, bsz, n, kind, dd[0], &m0);
                block_scales(r1 + i0 * bsz, bsz, n, kind, dd[1], &m1);
                acc0 = _mm512_fmadd_ps(m0, xs, acc0);
                acc1 = _mm512_fmadd_ps(m1, xs, acc1);
            } else {
                __m512 unused;
                block_scales(r0 + i0 * bsz, bsz, n, kind, dd[0], &unused);
                block_scales(r1 + i0 * bsz, bsz, n, kind, dd[1], &unused);
            }
            for (int64_t i = 0; i < n; i++) {
                const uint8_t *b0 = r0 + (i0 + i) * bsz, *b1 = r1 + (i0 + i) * bsz;
                _mm_prefetch((const char *)b0 + PREFETCH_BYTES, _MM_HINT_T0);
                _mm_prefetch((const char *)b1 + PREFETCH_BYTES, _MM_HINT_T0);
                const __m512 x0 = _mm512_loadu_ps(x + 32 * (i0 + i)), x1 = _mm512_loadu_ps(x + 32 * (i0 + i) + 16);
                __m512 s0, s1;
                if (kind == GGML_TYPE_Q8_0) {
                    s0 = q8_dot((const int8_t *)b0 + qoff, x0, x1);
                    s1 = q8_dot((const int8_t *)b1 + qoff, x0, x1);
                } else {
                    s0 = nibble_dot(b0 + qoff, x0, x1);
                    s1 = nibble_dot(b1 + qoff, x0, x1);
                }
                acc0 = _mm512_fmadd_ps(_mm512_set1_ps(dd[0][i]), s0, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_set1_ps(dd[1][i]), s1, acc1);
            }
        }
        out[o] = _mm512_reduce_add_ps(acc0);
        if (two) out[o + 1] = _mm512_reduce_add_ps(acc1);
    }
}

SIMD512 static void rows_q4_1(float *out, const uint8_t *w, size_t rb, const float *x, const float *xsum, int64_t nb,
                              int64_t o0, int64_t o1) {
    rows_blocks(GGML_TYPE_Q4_1, out, w, rb, x, xsum, nb, o0, o1);
}

SIMD512 static void rows_q4_0(float *out, const uint8_t *w, size_t rb, const float *x, const float *xsum, int64_t nb,
                              int64_t o0, int64_t o1) {
    rows_blocks(GGML_TYPE_Q4_0, out, w, rb, x, xsum, nb, o0, o1);
}

SIMD512 static void rows_q8_0(float *out, const uint8_t *w, size_t rb, const float *x, int64_t nb, int64_t o0,
                              int64_t o1) {
    rows_blocks(GGML_TYPE_Q8_0, out, w, rb, x, NULL, nb, o0, o1);
}

// 16 elements of a float-type row from element i; m masks a row's tail.
INLINE512 __m512 float_load16(uint32_t type, const void *row, int64_t i, __mmask16 m) {
    switch (type) {
    case GGML_TYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    case GGML_TYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i)), 16));
    default: return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    }
}

INLINE512 void rows_float(uint32_t type, float *out, const uint8_t *w, size_t rb, const float *x, int64_t n,
                          int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; o += 2) {
        const int two = o + 1 < o1;
        const uint8_t *r0 = w + (size_t)o * rb, *r1 = two ? r0 + rb : r0;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) {
            const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            a0 = _mm512_fmadd_ps(float_load16(type, r0, i, 0xffff), x0, a0);
            c0 = _mm512_fmadd_ps(float_load16(type, r0, i + 16, 0xffff), x1, c0);
            a1 = _mm512_fmadd_ps(float_load16(type, r1, i, 0xffff), x0, a1);
            c1 = _mm512_fmadd_ps(float_load16(type, r1, i + 16, 0xffff), x1, c1);
        }
        for (; i < n; i += 16) {  // masked tail: no read past the row
            const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
            a0 = _mm512_fmadd_ps(float_load16(type, r0, i, m), xv, a0);
            a1 = _mm512_fmadd_ps(float_load16(type, r1, i, m), xv, a1);
        }
        out[o] = _mm512_reduce_add_ps(_mm512_add_ps(a0, c0));
        if (two) out[o + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, c1));
    }
}

SIMD512 static void rows_f16(float *out, const uint8_t *w, size_t rb, const float *x, int64_t n, int64_t o0, int64_t o1) {
    rows_float(GGML_TYPE_F16, out, w, rb, x, n, o0, o1);
}
SIMD512 static void rows_bf16(float *out, const uint8_t *w, size_t rb, const float *x, int64_t n, int64_t o0, int64_t o1) {
    rows_float(GGML_TYPE_BF16, out, w, rb, x, n, o0, o1);
}
SIMD512 static void rows_f32(float *out, const uint8_t *w, size_t rb, const float *x, int64_t n, int64_t o0, int64_t o1) {
    rows_float(GGML_TYPE_F32, out, w, rb, x, n, o0, o1);
}

int cpu512_matvec_has(uint32_t type) {
    switch (type) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q8_0:
    case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_F32: return 1;
    default: return 0;
    }
}

void cpu512_matvec_rows(float *out, const weight *w, const float *x, const float *xsum, int64_t o0, int64_t o1) {
    const uint8_t *d = w->data;
    const int64_t nb = w->n_in / 32;
    switch (w->type) {
    case GGML_TYPE_Q4_1: rows_q4_1(out, d, w->row_bytes, x, xsum, nb, o0, o1); break;
    case GGML_TYPE_Q4_0: rows_q4_0(out, d, w->row_bytes, x, xsum, nb, o0, o1); break;
    case GGML_TYPE_Q8_0: rows_q8_0(out, d, w->row_bytes, x, nb, o0, o1); break;
    case GGML_TYPE_F16: rows_f16(out, d, w->row_bytes, x, w->n_in, o0, o1); break;
    case GGML_TYPE_BF16: rows_bf16(out, d, w->row_bytes, x, w->n_in, o0, o1); break;
    default: rows_f32(out, d, w->row_bytes, x, w->n_in, o0, o1); break;
    }
}

// ---- decode attention ----

int cpu512_attn_has(int64_t head_dim) { return head_dim > 0 && head_dim % 16 == 0 && head_dim <= 256; }

// Elements c..c+15 of a cache row (c a multiple of 16) as fp32, dequantized in
// registers (q8_0: d*q; q4_0: d*(q - 8), low nibbles of a block's 16 bytes are
// its elements 0..15, high nibbles 16..31). Callers pass a constant elem.
INLINE512 __m512 kv_load16(int elem, const uint8_t *row, int64_t c) {
    switch (elem) {
    case KV_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c)));
    case KV_Q8_0: {
        const block_q8_0 *b = (const block_q8_0 *)row + c / QK8_0;
        const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + c % QK8_0))));
        return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), q);
    }
    case KV_Q4_0: {
        const block_q4_0 *b = (const block_q4_0 *)row + c / QK4_0;
        __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
        if (c % QK4_0) raw = _mm_srli_epi16(raw, 4);
        const __m512i q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(raw, _mm_set1_epi8(0x0f))),
                                           _mm512_set1_epi32(8));
        return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), _mm512_cvtepi32_ps(q));
    }
    default: return _mm512_loadu_ps((const float *)row + c);
    }
}

// The lane sums of a[0..7], in order: a transpose-and-add tree, 3 operations
// per score instead of a full horizontal sum each.
INLINE512 __m256 hsum8x16(const __m512 a[8]) {
    __m512 t[4], u[2];
    for (int i = 0; i < 4; i++)  // per 128-bit lane: [a2i, a2i+1, a2i, a2i+1]
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++) {  // per 128-bit lane: [a4i, a4i+1, a4i+2, a4i+3]
        const __m512d x = _mm512_castps_pd(t[2 * i]), y = _mm512_castps_pd(t[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    // lanes (u0 c0+c2, u0 c1+c3, u1 c0+c2, u1 c1+c3), then the two halves of each
    const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_castps512_ps256(w);
}

#ifndef KEY_PREFETCH
#define KEY_PREFETCH 32
#endif

// Keys go 8 at a time: each row is dequantized once into an L1 tile that
// every query head of the group then reads.
INLINE512 void scores512(int elem, float *s_out, int64_t s_ld, const float *q, const uint8_t *k_rows, size_t rb,
                         const uint8_t *v_rows, size_t v_rb, int64_t n, int64_t group, int64_t head_dim, float scale) {
    const int64_t nv = head_dim / 16;
    float kt[8 * 256] __attribute__((aligned(64)));
    const __m256 sc = _mm256_set1_ps(scale);
    int64_t j0 = 0;
    for (; j0 + 8 <= n; j0 += 8) {
        for (int r = 0; r < 8; r++) {
            const uint8_t *row = k_rows + (size_t)(j0 + r) * rb;
            if (j0 + r + KEY_PREFETCH < n)  // stay inside the cache: forming a pointer past it is undefined
                _mm_prefetch((const char *)row + KEY_PREFETCH * rb, _MM_HINT_T0);
            // V's rows for the P.V pass, fetched while the scores are computed
            for (size_t b = 0; b < v_rb; b += 64)
                _mm_prefetch((const char *)v_rows + (size_t)(j0 + r) * v_rb + b, _MM_HINT_T1);
            for (int64_t c = 0; c < nv; c++) _mm512_store_ps(kt + r * head_dim + 16 * c, kv_load16(elem, row, 16 * c));
        }
        for (int64_t g = 0; g < group; g++) {
            const float *qg = q + g * head_dim;
            __m512 a[8];
            const __m512 q0 = _mm512_loadu_ps(qg);
            for (int r = 0; r < 8; r++) a[r] = _mm512_mul_ps(_mm512_load_ps(kt + r * head_dim), q0);
            for (int64_t c = 1; c < nv; c++) {
                const __m512 qc = _mm512_loadu_ps(qg + 16 * c);
                for (int r = 0; r < 8; r++) a[r] = _mm512_fmadd_ps(_mm512_load_ps(kt + r * head_dim + 16 * c), qc, a[r]);
            }
            _mm256_storeu_ps(s_out + g * s_ld + j0, _mm256_mul_ps(hsum8x16(a), sc));
        }
    }
    for (; j0 < n; j0++) {
        const uint8_t *row = k_rows + (size_t)j0 * rb;
        for (int64_t c = 0; c < nv; c++) _mm512_store_ps(kt + 16 * c, kv_load16(elem, row, 16 * c));
        for (int64_t g = 0; g < group; g++) {
            const float *qg = q + g * head_dim;
            __m512 acc = _mm512_mul_ps(_mm512_load_ps(kt), _mm512_loadu_ps(qg));
            for (int64_t c = 1; c < nv; c++)
                acc = _mm512_fmadd_ps(_mm512_load_ps(kt + 16 * c), _mm512_loadu_ps(qg + 16 * c), acc);
            s_out[g * s_ld + j0] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
}

#define DEFINE_SCORES512(NAME, ELEM)                                                                            \
    SIMD512 static void NAME(float *s_out, int64_t s_ld, const float *q, const uint8_t *k, size_t rb,            \
                             const uint8_t *v, size_t v_rb, int64_t n, int64_t group, int64_t head_dim, float scale) { \
        scores512(ELEM, s_out, s_ld, q, k, rb, v, v_rb, n, group, head_dim, scale);                                   \
    }
DEFINE_SCORES512(scores512_f16, KV_F16)
DEFINE_SCORES512(scores512_f32, KV_F32)
DEFINE_SCORES512(scores512_q8_0, KV_Q8_0)
DEFINE_SCORES512(scores512_q4_0, KV_Q4_0)

void cpu512_scores(int elem, float *s_out, int64_t s_ld, const float *q, const uint8_t *k_rows, size_t rb,
                   const uint8_t *v_rows, size_t v_rb, int64_t n, int64_t group, int64_t head_dim, float scale) {
    switch (elem) {
    case KV_F16: scores512_f16(s_out, s_ld, q, k_rows, rb, v_rows, v_rb, n, group, head_dim, scale); break;
    case KV_Q8_0: scores512_q8_0(s_out, s_ld, q, k_rows, rb, v_rows, v_rb, n, group, head_dim, scale); break;
    case KV_Q4_0: scores512_q4_0(s_out, s_ld, q, k_rows, rb, v_rows, v_rb, n, group, head_dim, scale); break;
    default: scores512_f32(s_out, s_ld, q, k_rows, rb, v_rows, v_rb, n, group, head_dim, scale); break;
    }
}

// o (GN heads) += P V over NC vectors (16 columns each) at a time: GN x NC
// accumulators stay in registers while each V row is loaded once for all heads.
INLINE512 void pv512(int elem, int GN, int NC, float *o, const float *p, const uint8_t *v, size_t rb, int64_t n,
                     int64_t head_dim) {
    for (int64_t c0 = 0; c0 < head_dim; c0 += 16 * NC) {
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int g = 0; g < GN; g++)
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) acc[g][c] = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *row = v + (size_t)j * rb;
            __m512 vv[4];
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) vv[c] = kv_load16(elem, row, c0 + 16 * c);
#pragma GCC unroll 4
            for (int g = 0; g < GN; g++) {
                const __m512 pg = _mm512_set1_ps(p[g * n + j]);
#pragma GCC unroll 4
                for (int c = 0; c < NC; c++) acc[g][c] = _mm512_fmadd_ps(pg, vv[c], acc[g][c]);
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < GN; g++)
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) _mm512_storeu_ps(o + g * head_dim + c0 + 16 * c, acc[g][c]);
    }
}

typedef void (*pv_fn)(float *o, const float *p, const uint8_t *v, size_t rb, int64_t n, int64_t head_dim);

#define DEFINE_PV512(ELEM, SUFFIX, GN, NC)                                                                        \
    SIMD512 static void pv512_##SUFFIX##_##GN##_##NC(float *o, const float *p, const uint8_t *v, size_t rb, int64_t n, \
                                                     int64_t head_dim) {                                          \
        pv512(ELEM, GN, NC, o, p, v, rb, n, head_dim);                                                            \
    }
#define DEFINE_PV512_ELEM(ELEM, SUFFIX)                                                                           \
    DEFINE_PV512(ELEM, SUFFIX, 1, 1) DEFINE_PV512(ELEM, SUFFIX, 2, 1) DEFINE_PV512(ELEM, SUFFIX, 3, 1)            \
    DEFINE_PV512(ELEM, SUFFIX, 4, 1) DEFINE_PV512(ELEM, SUFFIX, 1, 4) DEFINE_PV512(ELEM, SUFFIX, 2, 4)            \
    DEFINE_PV512(ELEM, SUFFIX, 3, 4) DEFINE_PV512(ELEM, SUFFIX, 4, 4)
DEFINE_PV512_ELEM(KV_F16, f16)
DEFINE_PV512_ELEM(KV_F32, f32)
DEFINE_PV512_ELEM(KV_Q8_0, q8_0)
DEFINE_PV512_ELEM(KV_Q4_0, q4_0)

#define PV512_ROW(SUFFIX)                                                                                          \
    {{pv512_##SUFFIX##_1_1, pv512_##SUFFIX##_2_1, pv512_##SUFFIX##_3_1, pv512_##SUFFIX##_4_1},                    \
     {pv512_##SUFFIX##_1_4, pv512_##SUFFIX##_2_4, pv512_##SUFFIX##_3_4, pv512_##SUFFIX##_4_4}}
// [elem][head_dim % 64 == 0][heads in the tile - 1]; elem in enum kv_elem order.
static const pv_fn pv512_fns[4][2][4] = {PV512_ROW(f16), PV512_ROW(f32), PV512_ROW(q8_0), PV512_ROW(q4_0)};

void cpu512_pv(int elem, float *o, const float *p, int64_t group, const uint8_t *v_rows, size_t rb, int64_t n,
               int64_t head_dim) {
    const int wide = head_dim % 64 == 0;
    for (int64_t g0 = 0; g0 < group; g0 += 4) {
        const int64_t gn = group - g0 < 4 ? group - g0 : 4;
        pv512_fns[elem][wide][gn - 1](o + g0 * head_dim, p + g0 * n, v_rows, rb, n, head_dim);
    }
}
