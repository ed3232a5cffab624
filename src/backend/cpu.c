// The fast CPU backend: fused dequantize-and-dot matrix-vector kernels for
// decode (AVX2, or AVX-512 from cpu_avx512.c, when available), dequantize +
// OpenBLAS SGEMM for prefill blocks, and attention that splits the key range over threads and merges the
// partial (o, lse) states exactly like the distributed merge does.
// Selection (score reduction, max-pooling, top-K) runs one row per thread.
// Threads come from the instance (b->n_threads), never from a global; a
// kernel that cannot get scratch records the failure for synchronize.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_avx512.h"
#include "backend/cpu_select.h"
#include "backend/cpu_simd.h"
#include "backend/host_mem.h"
#include "backend/kv_format.h"
#include "model/quant.h"

void openblas_set_num_threads(int num_threads);

// The kernel paths, each needing the one before: AVX2 + FMA + F16C, then
// AVX-512 F/BW/VL. RECALL_CPU_KERNELS=portable|avx2|avx512 caps the path, so
// the tests run every path the CPU has (a path it lacks falls back to the
// best it has; backend_cpu_kernel_path says which runs). RECALL_CPU_PORTABLE=1
// is RECALL_CPU_KERNELS=portable. An unknown value makes init fail.
enum { CPU_BAD_ENV = -2, CPU_PORTABLE = 0, CPU_AVX2, CPU_AVX512 };
static const char *const kernel_names[] = {"portable", "avx2", "avx512"};

static int cpu_kernel_level(void) {
    static _Atomic int cached = -1;
    int level = cached;
    if (level != -1) return level;
    __builtin_cpu_init();
    level = CPU_PORTABLE;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        level = CPU_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            level = CPU_AVX512;
    }
    const char *portable = getenv("RECALL_CPU_PORTABLE"), *forced = getenv("RECALL_CPU_KERNELS");
    if (portable && portable[0] && strcmp(portable, "0") != 0) level = CPU_PORTABLE;
    if (forced && forced[0]) {
        int cap = CPU_BAD_ENV;
        for (int i = 0; i < 3; i++)
            if (!strcmp(forced, kernel_names[i])) cap = i;
        level = cap < level ? cap : level;
    }
    cached = level;
    return level;
}

static int cpu_has_avx2(void) { return cpu_kernel_level() >= CPU_AVX2; }

const char *backend_cpu_kernel_path(void) {
    const int level = cpu_kernel_level();
    return level < 0 ? "invalid RECALL_CPU_KERNELS" : kernel_names[level];
}

// An instance's private state: the first failure since the last synchronize.
// Ops cannot return a status (a device reports its errors later, at a sync
// point), so a kernel that cannot get scratch records it here and writes nothing.
typedef struct cpu_state {
    int failed;
    char msg[200];
} cpu_state;

static int cpu_init(backend *b, int device, rc_err *err) {
    if (cpu_kernel_level() == CPU_BAD_ENV)
        return rc_fail(err, "cpu backend: RECALL_CPU_KERNELS=%s: expected portable, avx2 or avx512",
                       getenv("RECALL_CPU_KERNELS"));
    if (!(b->impl = calloc(1, sizeof(cpu_state)))) return rc_fail(err, "cpu backend: out of memory at init");
    return 0;
}

static void cpu_shutdown(backend *b) {
    free(b->impl);
    b->impl = NULL;
}

static void cpu_fail(const backend *b, const char *op, size_t n_bytes) {
    cpu_state *st = b->impl;
    if (!st || st->failed) return;  // sticky: the first failure is the one to report
    st->failed = 1;
    snprintf(st->msg, sizeof(st->msg), "cpu backend: %s could not allocate %zu bytes of scratch", op, n_bytes);
}

static int cpu_synchronize(const backend *b, rc_err *err) {
    cpu_state *st = b->impl;
    if (!st || !st->failed) return 0;
    st->failed = 0;
    return rc_fail(err, "%s", st->msg);
}

// OpenBLAS keeps its thread count in a process global: set it to this
// instance's right before each GEMM (a store when unchanged).
static void blas_threads(const backend *b) { openblas_set_num_threads(b->n_threads); }

// ---- memory: host memory; the CPU keeps weights where the model has them

static void *cpu_alloc(const backend *b, size_t n_bytes) { return host_alloc(n_bytes); }

static void cpu_free(const backend *b, void *p) { host_free(p); }

static void cpu_memcpy(const backend *b, void *dst, const void *src, size_t n_bytes) {
    if (dst != src && n_bytes) memcpy(dst, src, n_bytes);
}

static int cpu_weight_upload(const backend *b, weight *dst, const weight *src, rc_err *err) {
    *dst = *src;
    return 0;
}

static void cpu_weight_free(const backend *b, weight *w) { *w = (weight){0}; }

static int cpu_supports(int op, uint32_t weight_type) {
    if (op != OP_MATMUL) return 1;
    const ggml_type_info *ti = ggml_type_get(weight_type);
    return ti && ti->supported;
}

static void cpu_rmsnorm(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        float ss = 0.0f;
        for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int64_t i = 0; i < n; i++) out[r * n + i] = xr[i] * inv * w[i];
    }
}

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096  // one page ahead: the L2 streamer stops at 4 KiB page boundaries
#endif

// ---- matrix-vector kernels: one row of w (n_in elements) dotted with x ----

// Sum of x over each 32-element block; Q4_0/Q4_1/Q5_1 and the K-quants' mins fold their offset into it.
static void block_sums(const float *x, int64_t n_in, float *xsum) {
    for (int64_t b = 0; b < n_in / 32; b++) {
        float s = 0.0f;
        for (int j = 0; j < 32; j++) s += x[b * 32 + j];
        xsum[b] = s;
    }
}

// sum_j q_j * x_j over one block of 32 4-bit values (low nibbles are
// elements 0..15, high nibbles 16..31), as 8 partial sums.
SIMD_TARGET static inline __m256 nibble_dot_avx2(const uint8_t *qs, const float *xb) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(raw, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(xb));
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(xb + 8), s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(xb + 16), s);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(xb + 24), s);
}

// Q4_1: x = d*q + m, so a row dot is sum_b d_b * (q . x)_b + m_b * xsum_b.
SIMD_TARGET static float dot_q4_1_avx2(const block_q4_1 *b, const float *x, const float *xsum, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float moff = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), nibble_dot_avx2(b[i].qs, x + i * 32), acc);
        moff += _cvtsh_ss(b[i].m) * xsum[i];
    }
    return hsum256(acc) + moff;
}

// Q4_0: x = d*(q - 8).
SIMD_TARGET static float dot_q4_0_avx2(const block_q4_0 *b, const float *x, const float *xsum, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float moff = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        float d = _cvtsh_ss(b[i].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), nibble_dot_avx2(b[i].qs, x + i * 32), acc);
        moff -= 8.0f * d * xsum[i];
    }
    return hsum256(acc) + moff;
}

SIMD_TARGET static float dot_q8_0_avx2(const block_q8_0 *b, const float *x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        const int8_t *q = b[i].qs;
        const float *xb = x + i * 32;
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q))),
                                 _mm256_loadu_ps(xb));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8)))),
                            _mm256_loadu_ps(xb + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 16)))),
                            _mm256_loadu_ps(xb + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 24)))),
                            _mm256_loadu_ps(xb + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, acc);
    }
    return hsum256(acc);
}

// sum_j q_j * x_j over 32 bytes as 8 partial sums; q unsigned (u8) or signed (i8).
SIMD_TARGET static inline __m256 u8x32_dot_avx2(__m256i q, const float *x) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), s);
}

// 16 signed bytes times 16 floats, as 8 partial sums.
SIMD_TARGET static inline __m256 i8x16_dot_avx2(__m128i q, const float *x) {
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(x));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), _mm256_loadu_ps(x + 8), s);
}

// Byte j of the result is 0xff where bit j of the 32-bit qh is set (Q5_0/Q5_1's 5th bits).
SIMD_TARGET static inline __m256i bits_to_bytes_avx2(const uint8_t *qh) {
    uint32_t x32;
    memcpy(&x32, qh, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// The 32 five-bit values of a Q5_0/Q5_1 block in element order (0..31).
SIMD_TARGET static inline __m256i q5_values_avx2(const uint8_t *qs, const uint8_t *qh) {
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
    return _mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes_avx2(qh), _mm256_set1_epi8(0x10)));
}

// Q5_0: x = d*(q - 16).
SIMD_TARGET static float dot_q5_0_avx2(const block_q5_0 *b, const float *x, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        __m256i q = _mm256_sub_epi8(q5_values_avx2(b[i].qs, b[i].qh), _mm256_set1_epi8(16));
        const float *xb = x + i * 32;
        __m256 s = _mm256_add_ps(i8x16_dot_avx2(_mm256_castsi256_si128(q), xb),
                                 i8x16_dot_avx2(_mm256_extracti128_si256(q, 1), xb + 16));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), s, acc);
    }
    return hsum256(acc);
}

// Q5_1: x = d*q + m.
SIMD_TARGET static float dot_q5_1_avx2(const block_q5_1 *b, const float *x, const float *xsum, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float moff = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), u8x32_dot_avx2(q5_values_avx2(b[i].qs, b[i].qh), x + i * 32),
                              acc);
        moff += _cvtsh_ss(b[i].m) * xsum[i];
    }
    return hsum256(acc) + moff;
}

// Q4_K: sub-block s (32 elements) is d*sc_s*q - dmin*m_s, so a row dot is
// sum_s d*sc_s*(q . x)_s - dmin*m_s*xsum_s.
SIMD_TARGET static float dot_q4_k_avx2(const block_q4_k *b, const float *x, const float *xsum, int64_t nb) {
    const __m256i mask = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    float moff = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES + 64, _MM_HINT_T0);
        const float d = _cvtsh_ss(b[i].d), dmin = _cvtsh_ss(b[i].dmin);
        const float *xb = x + i * QK_K, *xs = xsum + i * 8;
        for (int c = 0; c < 4; c++) {
            uint8_t sc0, m0, sc1, m1;
            kquant_scale_min(2 * c, b[i].scales, &sc0, &m0);
            kquant_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
            __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            __m256 s0 = u8x32_dot_avx2(_mm256_and_si256(raw, mask), xb + 64 * c);
            __m256 s1 = u8x32_dot_avx2(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), xb + 64 * c + 32);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0), s0, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1), s1, acc);
            moff += dmin * m0 * xs[2 * c] + dmin * m1 * xs[2 * c + 1];
        }
    }
    return hsum256(acc) - moff;
}

// Q5_K: Q4_K plus a 5th bit: bit s of qh[l] for element l of sub-block s.
SIMD_TARGET static float dot_q5_k_avx2(const block_q5_k *b, const float *x, const float *xsum, int64_t nb) {
    const __m256i mask = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float moff = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES + 128, _MM_HINT_T0);
        const float d = _cvtsh_ss(b[i].d), dmin = _cvtsh_ss(b[i].dmin);
        const float *xb = x + i * QK_K, *xs = xsum + i * 8;
        __m256i qh = _mm256_loadu_si256((const __m256i *)b[i].qh);
        for (int c = 0; c < 4; c++) {
            uint8_t sc0, m0, sc1, m1;
            kquant_scale_min(2 * c, b[i].scales, &sc0, &m0);
            kquant_scale_min(2 * c + 1, b[i].scales, &sc1, &m1);
            __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * c));
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, one), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4);
            qh = _mm256_srli_epi16(qh, 2);
            __m256 s0 = u8x32_dot_avx2(_mm256_or_si256(_mm256_and_si256(raw, mask), h0), xb + 64 * c);
            __m256 s1 = u8x32_dot_avx2(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), h1),
                                       xb + 64 * c + 32);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0), s0, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1), s1, acc);
            moff += dmin * m0 * xs[2 * c] + dmin * m1 * xs[2 * c + 1];
        }
    }
    return hsum256(acc) - moff;
}

// Q6_K: per 128-element half, group k (32 elements) is nibble (k >= 2 ? high : low) of
// ql[32*(k&1) ..] with bits 2k..2k+1 of qh as bits 4-5, minus 32; 16 elements per scale.
SIMD_TARGET static float dot_q6_k_avx2(const block_q6_k *b, const float *x, int64_t nb) {
    const __m256i mask = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)(b + i) + PREFETCH_BYTES + 128, _MM_HINT_T0);
        const float d = _cvtsh_ss(b[i].d);
        for (int h = 0; h < 2; h++) {
            const float *xb = x + i * QK_K + 128 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i ql = (k & 1) ? ql1 : ql0;
                __m256i lo = k >= 2 ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), mask) : _mm256_and_si256(ql, mask);
                __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, three), 4));
                qh = _mm256_srli_epi16(qh, 2);
                q = _mm256_sub_epi8(q, off);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * k]),
                                      i8x16_dot_avx2(_mm256_castsi256_si128(q), xb + 32 * k), acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc[2 * k + 1]),
                                      i8x16_dot_avx2(_mm256_extracti128_si256(q, 1), xb + 32 * k + 16), acc);
            }
        }
    }
    return hsum256(acc);
}

SIMD_TARGET static float dot_f16_avx2(const uint16_t *w, const float *x, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += fp16_to_fp32(w[i]) * x[i];
    return s;
}

SIMD_TARGET static float dot_bf16_avx2(const uint16_t *w, const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i wi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i))), 16);
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(wi), _mm256_loadu_ps(x + i), acc);
    }
    float s = hsum256(acc);
    for (; i < n; i++) s += bf16_to_fp32(w[i]) * x[i];
    return s;
}

SIMD_TARGET static float dot_f32_avx2(const float *w, const float *x, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

// Portable fallback: dequantize one row into scratch, then dot.
static float dot_generic(const weight *w, const void *row, const float *x, float *scratch) {
    dequantize_row(w->type, row, scratch, w->n_in);
    float s = 0.0f;
    for (int64_t i = 0; i < w->n_in; i++) s += scratch[i] * x[i];
    return s;
}

// Returns 0, or -1 (recorded) when scratch is missing.
static int matvec(const backend *b, float *out, const float *x, const weight *w) {
    const int64_t nb = w->n_in / 32;
    const int level = cpu_kernel_level();
    const int simd = level >= CPU_AVX2, wide = level >= CPU_AVX512 && cpu512_matvec_has(w->type);
    float *xsum = NULL, *scratch_all = NULL;
    if (w->type == GGML_TYPE_Q4_0 || w->type == GGML_TYPE_Q4_1 || w->type == GGML_TYPE_Q5_1 ||
        w->type == GGML_TYPE_Q4_K || w->type == GGML_TYPE_Q5_K) {
        if (!(xsum = malloc((size_t)(nb > 0 ? nb : 1) * sizeof(float)))) {
            cpu_fail(b, "matmul", (size_t)nb * sizeof(float));
            return -1;
        }
        block_sums(x, w->n_in, xsum);
    }
    if (!simd) {  // one dequantized row per thread
        const size_t n_bytes = (size_t)b->n_threads * (size_t)w->n_in * sizeof(float);
        if (!(scratch_all = malloc(n_bytes > 0 ? n_bytes : 1))) {
            free(xsum);
            cpu_fail(b, "matmul", n_bytes);
            return -1;
        }
    }
    if (wide) {  // each thread one contiguous range of whole row pairs: one stream for the prefetcher
#pragma omp parallel num_threads(b->n_threads)
        {
            const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num(), pairs = (w->n_out + 1) / 2;
            const int64_t o0 = 2 * (pairs * t / nt), o1 = 2 * (pairs * (t + 1) / nt);
            cpu512_matvec_rows(out, w, x, xsum, o0, o1 < w->n_out ? o1 : w->n_out);
        }
        free(xsum);
        return 0;
    }
#pragma omp parallel num_threads(b->n_threads)
    {
        float *scratch = simd ? NULL : scratch_all + (size_t)omp_get_thread_num() * (size_t)w->n_in;
#pragma omp for schedule(static)
        for (int64_t o = 0; o < w->n_out; o++) {
            const void *row = (const uint8_t *)w->data + (size_t)o * w->row_bytes;
            float r;
            if (!simd) {
                r = dot_generic(w, row, x, scratch);
            } else {
                switch (w->type) {
                case GGML_TYPE_Q4_1: r = dot_q4_1_avx2(row, x, xsum, nb); break;
                case GGML_TYPE_Q4_0: r = dot_q4_0_avx2(row, x, xsum, nb); break;
                case GGML_TYPE_Q8_0: r = dot_q8_0_avx2(row, x, nb); break;
                case GGML_TYPE_Q5_0: r = dot_q5_0_avx2(row, x, nb); break;
                case GGML_TYPE_Q5_1: r = dot_q5_1_avx2(row, x, xsum, nb); break;
                case GGML_TYPE_Q4_K: r = dot_q4_k_avx2(row, x, xsum, w->n_in / QK_K); break;
                case GGML_TYPE_Q5_K: r = dot_q5_k_avx2(row, x, xsum, w->n_in / QK_K); break;
                case GGML_TYPE_Q6_K: r = dot_q6_k_avx2(row, x, w->n_in / QK_K); break;
                case GGML_TYPE_F16: r = dot_f16_avx2(row, x, w->n_in); break;
                case GGML_TYPE_BF16: r = dot_bf16_avx2(row, x, w->n_in); break;
                default: r = dot_f32_avx2(row, x, w->n_in); break;
                }
            }
            out[o] = r;
        }
    }
    free(scratch_all);
    free(xsum);
    return 0;
}

// Prefill blocks: dequantize row chunks of w to fp32 once, then SGEMM over all tokens.
#define GEMM_MIN_TOKENS 4
#define GEMM_CHUNK_ELEMS ((int64_t)8 << 20)

static void cpu_matmul(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok) {
    if (n_tok <= 0) return;
    if (n_tok < GEMM_MIN_TOKENS) {
        if (n_tok == 1) {
            matvec(b, out, x, w);
            return;
        }
        float *tmp = malloc((size_t)w->n_out * sizeof(float));
        if (!tmp) {
            cpu_fail(b, "matmul", (size_t)w->n_out * sizeof(float));
            return;
        }
        for (int64_t t = 0; t < n_tok; t++) {
            if (matvec(b, tmp, x + t * w->n_in, w)) break;
            memcpy(out + t * w->n_out, tmp, (size_t)w->n_out * sizeof(float));
        }
        free(tmp);
        return;
    }
    int64_t chunk_rows = GEMM_CHUNK_ELEMS / w->n_in;
    if (chunk_rows < 1) chunk_rows = 1;
    if (chunk_rows > w->n_out) chunk_rows = w->n_out;
    float *wf = malloc((size_t)chunk_rows * (size_t)w->n_in * sizeof(float));
    if (!wf) {
        cpu_fail(b, "matmul", (size_t)chunk_rows * (size_t)w->n_in * sizeof(float));
        return;
    }
    for (int64_t r0 = 0; r0 < w->n_out; r0 += chunk_rows) {
        int64_t rows = w->n_out - r0 < chunk_rows ? w->n_out - r0 : chunk_rows;
#pragma omp parallel for num_threads(b->n_threads) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            dequantize_row(w->type, (const uint8_t *)w->data + (size_t)(r0 + r) * w->row_bytes,
                           wf + (size_t)r * w->n_in, w->n_in);
        // out[t, r0 + r] = sum_i x[t, i] * wf[r, i]
        blas_threads(b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_tok, (int)rows, (int)w->n_in, 1.0f, x,
                    (int)w->n_in, wf, (int)w->n_in, 0.0f, out + r0, (int)w->n_out);
    }
    free(wf);
}

static void cpu_rope(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                     const int64_t *pos, const rope_table *rt) {
    int64_t half = rt->rot_dim / 2;
    float *cs = malloc((size_t)(half > 0 ? half : 1) * 2 * sizeof(float));
    if (!cs) {
        cpu_fail(b, "rope", (size_t)half * 2 * sizeof(float));
        return;
    }
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t i = 0; i < half; i++) {
            double theta = (double)pos[t] * rt->inv_freq[i];
            cs[2 * i] = (float)cos(theta);
            cs[2 * i + 1] = (float)sin(theta);
        }
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                int64_t i0 = rt->neox ? i : 2 * i;
                int64_t i1 = rt->neox ? i + half : 2 * i + 1;
                float c = cs[2 * i], s = cs[2 * i + 1];
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * c - x1 * s;
                v[i1] = x0 * s + x1 * c;
            }
        }
    }
    free(cs);
}

SIMD_TARGET static void swiglu_avx2(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void cpu_swiglu(const backend *b, float *out, const float *gate, const float *up, int64_t n) {
    if (cpu_has_avx2()) {
        swiglu_avx2(out, gate, up, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// ---- attention ----

static void merge_states(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                         int64_t n_heads, int64_t head_dim) {
    // Double accumulation: the merge is tiny (n_parts x n_heads x head_dim) and
    // its rounding would otherwise be the main difference between sharded and
    // single-process attention.
    double acc[512];
    for (int64_t h = 0; h < n_heads; h++) {
        float m = -INFINITY;
        for (int64_t r = 0; r < n_parts; r++)
            if (lse_parts[r * n_heads + h] > m) m = lse_parts[r * n_heads + h];
        float *oh = o + h * head_dim;
        if (m == -INFINITY) {
            memset(oh, 0, (size_t)head_dim * sizeof(float));
            lse[h] = -INFINITY;
            continue;
        }
        double wsum = 0.0;
        for (int64_t i0 = 0; i0 < head_dim; i0 += 512) {
            int64_t ni = head_dim - i0 < 512 ? head_dim - i0 : 512;
            for (int64_t i = 0; i < ni; i++) acc[i] = 0.0;
            double ws = 0.0;
            for (int64_t r = 0; r < n_parts; r++) {
                double wr = exp((double)lse_parts[r * n_heads + h] - (double)m);  // exp(-inf) = 0: empty parts drop out
                if (wr == 0.0) continue;
                ws += wr;
                const float *op = o_parts + (r * n_heads + h) * head_dim + i0;
                for (int64_t i = 0; i < ni; i++) acc[i] += wr * op[i];
            }
            for (int64_t i = 0; i < ni; i++) oh[i0 + i] = (float)(acc[i] / ws);
            wsum = ws;
        }
        lse[h] = (float)((double)m + log(wsum));
    }
}

// Elements c..c+7 of a cache row (c a multiple of 8) as fp32, dequantized in
// registers: q8_0 d * q, q4_0 d * (q - 8) with the low nibbles of a block's 16
// bytes holding its elements 0..15 and the high nibbles 16..31. Callers pass a
// constant elem to always-inline code, so the switch folds away.
SIMD_TARGET static inline __attribute__((always_inline)) __m256 kv_row_load8(int elem, const uint8_t *row, int64_t c) {
    switch (elem) {
    case KV_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + c)));
    case KV_Q8_0: {
        const block_q8_0 *b = (const block_q8_0 *)row + c / QK8_0;
        const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + c % QK8_0)));
        return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b->d)), _mm256_cvtepi32_ps(q));
    }
    case KV_Q4_0: {
        const block_q4_0 *b = (const block_q4_0 *)row + c / QK4_0;
        const int64_t j = c % QK4_0;
        __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + (j & 15))));
        q = j < 16 ? _mm256_and_si256(q, _mm256_set1_epi32(15)) : _mm256_srli_epi32(q, 4);
        q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
        return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b->d)), _mm256_cvtepi32_ps(q));
    }
    default: return _mm256_loadu_ps((const float *)row + c);
    }
}

// Element i of (head, pos)'s row, as fp32.
static inline float kv_get(const kv_view *kv, int64_t head, int64_t pos, int64_t head_dim, int64_t i) {
    return kv_decode_at(kv->elem, kv_row_at(kv, head, pos, head_dim), i);
}

// Keys per work item: big enough to amortize the merge, small enough that
// scores stay in L2 and both threads get work at short contexts.
#define ATTN_KEY_CHUNK 256
#define ATTN_MIN_ITEMS 12

// Scores of absent heads in a 4-head P.V tile: multiplying by zero keeps the
// tile's loop fixed at 4 heads, so its 8 accumulators stay in registers.
static const float zero_scores[ATTN_KEY_CHUNK];

// o (up to 4 heads, head_dim) = sum_j p_h[j] * V[j], V rows of row_bytes
// starting at v. Columns go 16 at a time: 4 heads x 2 vectors = 8
// accumulators + 2 V vectors, no spills.
SIMD_TARGET static inline __attribute__((always_inline)) void pv_tile(int elem, float *o, const float *const sp[4],
                                                                      int64_t gn, const uint8_t *v, size_t row_bytes,
                                                                      int64_t n, int64_t head_dim) {
    for (int64_t c = 0; c < head_dim; c += 16) {
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *row = v + (size_t)j * row_bytes;
            __m256 v0 = kv_row_load8(elem, row, c), v1 = kv_row_load8(elem, row, c + 8);
            __m256 p0 = _mm256_broadcast_ss(sp[0] + j), p1 = _mm256_broadcast_ss(sp[1] + j);
            __m256 p2 = _mm256_broadcast_ss(sp[2] + j), p3 = _mm256_broadcast_ss(sp[3] + j);
            a00 = _mm256_fmadd_ps(p0, v0, a00); a01 = _mm256_fmadd_ps(p0, v1, a01);
            a10 = _mm256_fmadd_ps(p1, v0, a10); a11 = _mm256_fmadd_ps(p1, v1, a11);
            a20 = _mm256_fmadd_ps(p2, v0, a20); a21 = _mm256_fmadd_ps(p2, v1, a21);
            a30 = _mm256_fmadd_ps(p3, v0, a30); a31 = _mm256_fmadd_ps(p3, v1, a31);
        }
        __m256 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
        for (int64_t g = 0; g < gn; g++) {
            _mm256_storeu_ps(o + g * head_dim + c, acc[g][0]);
            _mm256_storeu_ps(o + g * head_dim + c + 8, acc[g][1]);
        }
    }
}

// One function per format, so each inlines its own loads.
#define DEFINE_PV_TILE(NAME, ELEM)                                                                              \
    SIMD_TARGET static void NAME(float *o, const float *const sp[4], int64_t gn, const uint8_t *v, size_t rb,     \
                                 int64_t n, int64_t head_dim) {                                                 \
        pv_tile(ELEM, o, sp, gn, v, rb, n, head_dim);                                                           \
    }
DEFINE_PV_TILE(pv_tile_f16, KV_F16)
DEFINE_PV_TILE(pv_tile_f32, KV_F32)
DEFINE_PV_TILE(pv_tile_q8_0, KV_Q8_0)
DEFINE_PV_TILE(pv_tile_q4_0, KV_Q4_0)

// Pass 1 of attend_group_avx2 for head_dim % 8 == 0, <= 256: s_out[g * s_ld + j]
// = scale * q_g . K[k0 + j]. Each key row is dequantized once into registers and
// reused by every query head of the group (GQA): K bytes are read once per KV
// head, not per query head.
SIMD_TARGET static inline __attribute__((always_inline)) void scores_pass(int elem, float *s_out, int64_t s_ld,
                                                                          const float *q, const kv_view *k,
                                                                          int64_t kvh, int64_t k0, int64_t n,
                                                                          int64_t group, int64_t head_dim, float scale) {
    const int64_t nv = head_dim / 8;
    const size_t rb = kv_row_bytes(elem, head_dim);
    const uint8_t *row0 = kv_row_at(k, kvh, k0, head_dim);
    __m256 kr[32];
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = row0 + (size_t)j * rb;
        if (j + 8 < n)  // stay inside the cache: forming a pointer past it is undefined
            _mm_prefetch((const char *)row + 8 * rb, _MM_HINT_T0);
        for (int64_t c = 0; c < nv; c++) kr[c] = kv_row_load8(elem, row, c * 8);
        for (int64_t g = 0; g < group; g++) {
            const float *qg = q + g * head_dim;
            __m256 acc = _mm256_mul_ps(kr[0], _mm256_loadu_ps(qg));
            for (int64_t c = 1; c < nv; c++) acc = _mm256_fmadd_ps(kr[c], _mm256_loadu_ps(qg + c * 8), acc);
            s_out[g * s_ld + j] = hsum256(acc) * scale;
        }
    }
}

#define DEFINE_SCORES_PASS(NAME, ELEM)                                                                          \
    SIMD_TARGET static void NAME(float *s_out, int64_t s_ld, const float *q, const kv_view *k, int64_t kvh,       \
                                 int64_t k0, int64_t n, int64_t group, int64_t head_dim, float scale) {         \
        scores_pass(ELEM, s_out, s_ld, q, k, kvh, k0, n, group, head_dim, scale);                               \
    }
DEFINE_SCORES_PASS(scores_f16, KV_F16)
DEFINE_SCORES_PASS(scores_f32, KV_F32)
DEFINE_SCORES_PASS(scores_q8_0, KV_Q8_0)
DEFINE_SCORES_PASS(scores_q4_0, KV_Q4_0)

// Attention of the `group` query heads sharing one KV head over keys [k0, k1).
// max(init, x[0..n)): the softmax's shift.
SIMD_TARGET static float max_from_avx2(const float *x, int64_t n, float init) {
    __m256 mv = _mm256_set1_ps(init);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + j), mv);
    float m = hmax256(mv);
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

// dst[j] = exp(src[j] - m) (dst may be src), returning their sum.
SIMD_TARGET static float exp_shifted_sum_avx2(float *dst, const float *src, int64_t n, float m) {
    const __m256 mb = _mm256_set1_ps(m);
    __m256 sv = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(src + j), mb));
        _mm256_storeu_ps(dst + j, e);
        sv = _mm256_add_ps(sv, e);
    }
    float sum = hsum256(sv);
    for (; j < n; j++) {
        dst[j] = expf(src[j] - m);
        sum += dst[j];
    }
    return sum;
}

// Writes normalized o (group, head_dim) and lse (group). scores: (group, k1-k0) scratch.
SIMD_TARGET static void attend_group_avx2(float *o, float *lse, const float *q, const kv_view *k, const kv_view *v,
                                          int64_t kvh, int64_t k0, int64_t k1, int64_t group, int64_t head_dim,
                                          float scale, float *scores, float *raw, int64_t raw_ld) {
    const int64_t n = k1 - k0;
    if (n <= 0) {
        memset(o, 0, (size_t)(group * head_dim) * sizeof(float));
        for (int64_t g = 0; g < group; g++) lse[g] = -INFINITY;
        return;
    }
    // Pass 1: scores, straight into raw when the caller keeps them. Each key row
    // is converted once and reused by every query head of the group (GQA): K
    // bytes are read once per KV head, not per query head.
    float *s_out = raw ? raw : scores;
    const int64_t s_ld = raw ? raw_ld : n;
    const int wide = cpu_kernel_level() >= CPU_AVX512 && cpu512_attn_has(head_dim);
    if (wide) {
        cpu512_scores(k->elem, s_out, s_ld, q, kv_row_at(k, kvh, k0, head_dim), kv_row_bytes(k->elem, head_dim),
                      kv_row_at(v, kvh, k0, head_dim), kv_row_bytes(v->elem, head_dim), n, group, head_dim, scale);
    } else if (head_dim % 8 == 0 && head_dim <= 256) {
        switch (k->elem) {
        case KV_F16: scores_f16(s_out, s_ld, q, k, kvh, k0, n, group, head_dim, scale); break;
        case KV_Q8_0: scores_q8_0(s_out, s_ld, q, k, kvh, k0, n, group, head_dim, scale); break;
        case KV_Q4_0: scores_q4_0(s_out, s_ld, q, k, kvh, k0, n, group, head_dim, scale); break;
        default: scores_f32(s_out, s_ld, q, k, kvh, k0, n, group, head_dim, scale); break;
        }
    } else {
        for (int64_t j = 0; j < n; j++)
            for (int64_t g = 0; g < group; g++) {
                const float *qg = q + g * head_dim;
                float s = 0.0f;
                for (int64_t i = 0; i < head_dim; i++) s += kv_get(k, kvh, k0 + j, head_dim, i) * qg[i];
                s_out[g * s_ld + j] = s * scale;
            }
    }
    // Pass 2: softmax numerators per head.
    for (int64_t g = 0; g < group; g++) {
        float *sg = scores + g * n;
        const float *src = s_out + g * s_ld;
        const float m = max_from_avx2(src, n, -INFINITY);
        const float l = exp_shifted_sum_avx2(sg, src, n, m);
        lse[g] = m + logf(l);
        // Normalize now so pass 3 accumulates o directly.
        float inv = 1.0f / l;
        for (int64_t j = 0; j < n; j++) sg[j] *= inv;
    }
    // Pass 3: o = P V, each V row loaded once for the group.
    memset(o, 0, (size_t)(group * head_dim) * sizeof(float));
    if (wide) {
        cpu512_pv(v->elem, o, scores, group, kv_row_at(v, kvh, k0, head_dim), kv_row_bytes(v->elem, head_dim), n,
                  head_dim);
    } else if (head_dim % 16 == 0 && n <= ATTN_KEY_CHUNK) {
        for (int64_t g0 = 0; g0 < group; g0 += 4) {
            int64_t gn = group - g0 < 4 ? group - g0 : 4;
            const float *sp[4];
            for (int64_t g = 0; g < 4; g++) sp[g] = g < gn ? scores + (g0 + g) * n : zero_scores;
            const uint8_t *v0 = kv_row_at(v, kvh, k0, head_dim);
            const size_t rb = kv_row_bytes(v->elem, head_dim);
            switch (v->elem) {
            case KV_F16: pv_tile_f16(o + g0 * head_dim, sp, gn, v0, rb, n, head_dim); break;
            case KV_Q8_0: pv_tile_q8_0(o + g0 * head_dim, sp, gn, v0, rb, n, head_dim); break;
            case KV_Q4_0: pv_tile_q4_0(o + g0 * head_dim, sp, gn, v0, rb, n, head_dim); break;
            default: pv_tile_f32(o + g0 * head_dim, sp, gn, v0, rb, n, head_dim); break;
            }
        }
    } else {
        for (int64_t j = 0; j < n; j++)
            for (int64_t g = 0; g < group; g++) {
                float p = scores[g * n + j];
                for (int64_t i = 0; i < head_dim; i++) o[g * head_dim + i] += p * kv_get(v, kvh, k0 + j, head_dim, i);
            }
    }
}

static void attend_group_scalar(float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t kvh,
                                int64_t k0, int64_t k1, int64_t group, int64_t head_dim, float scale, float *scores,
                                float *raw, int64_t raw_ld) {
    const int64_t n = k1 - k0;
    memset(o, 0, (size_t)(group * head_dim) * sizeof(float));
    for (int64_t g = 0; g < group; g++) {
        if (n <= 0) {
            lse[g] = -INFINITY;
            continue;
        }
        float *sg = scores + g * n;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            float s = 0.0f;
            for (int64_t i = 0; i < head_dim; i++)
                s += q[g * head_dim + i] * kv_get(k, kvh, k0 + j, head_dim, i);
            sg[j] = s * scale;
            if (raw) raw[g * raw_ld + j] = sg[j];
            m = sg[j] > m ? sg[j] : m;
        }
        float l = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            sg[j] = expf(sg[j] - m);
            l += sg[j];
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < head_dim; i++)
                o[g * head_dim + i] += sg[j] / l * kv_get(v, kvh, k0 + j, head_dim, i);
        lse[g] = m + logf(l);
    }
}

// raw (may be NULL): where query head g's scores of keys k0.. go, rows raw_ld apart.
static void attend_group(float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t kvh,
                         int64_t k0, int64_t k1, int64_t group, int64_t head_dim, float scale, float *scores, float *raw,
                         int64_t raw_ld) {
    if (cpu_has_avx2())
        attend_group_avx2(o, lse, q, k, v, kvh, k0, k1, group, head_dim, scale, scores, raw, raw_ld);
    else
        attend_group_scalar(o, lse, q, k, v, kvh, k0, k1, group, head_dim, scale, scores, raw, raw_ld);
}

// raw (may be NULL): (n_q_heads, n_keys) scaled scores, copied out of pass 1.
static void attn_decode_impl(const backend *b, float *o, float *lse, float *raw, const float *q, const kv_view *k,
                             const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale) {
    const int64_t group = n_q_heads / n_kv_heads;
    // Enough (chunk, KV head) items to keep threads evenly busy at short
    // contexts (a recycled cache of 1K keys over 3 KV heads would otherwise
    // be 3 items), from the shape alone so results never depend on threads.
    const int64_t min_chunks = (ATTN_MIN_ITEMS + n_kv_heads - 1) / n_kv_heads;
    int64_t chunk = (n_keys + min_chunks - 1) / min_chunks;
    chunk = (chunk + 63) / 64 * 64;
    chunk = chunk < 64 ? 64 : chunk > ATTN_KEY_CHUNK ? ATTN_KEY_CHUNK : chunk;
    int64_t n_chunks = (n_keys + chunk - 1) / chunk;
    if (n_chunks < 1) n_chunks = 1;
    // Partial states (chunk, q head) merged afterwards in chunk order.
    const size_t parts_bytes = (size_t)(n_chunks * n_q_heads) * (size_t)(head_dim + 1) * sizeof(float);
    const size_t scores_bytes = (size_t)b->n_threads * (size_t)(group * ATTN_KEY_CHUNK) * sizeof(float);
    float *o_parts = malloc(parts_bytes);
    float *scores_all = malloc(scores_bytes);
    if (!o_parts || !scores_all) {
        free(o_parts);
        free(scores_all);
        cpu_fail(b, "attention", parts_bytes + scores_bytes);
        return;
    }
    float *lse_parts = o_parts + n_chunks * n_q_heads * head_dim;
    const int64_t n_items = n_chunks * n_kv_heads;
#pragma omp parallel num_threads(b->n_threads)
    {
        float *scores = scores_all + (size_t)omp_get_thread_num() * (size_t)(group * ATTN_KEY_CHUNK);
        // Items go to whichever thread is free: each writes only its own part and
        // the merge runs in chunk order, so results never depend on who took what,
        // and on a shared machine a descheduled thread no longer holds half the work.
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_items; it++) {
            int64_t c = it / n_kv_heads, kvh = it % n_kv_heads;
            int64_t k0 = c * chunk, k1 = k0 + chunk < n_keys ? k0 + chunk : n_keys;
            int64_t h0 = kvh * group;
            // parts laid out as (chunk, q head, dim) so merge_states sees (n_parts, n_heads, dim)
            attend_group(o_parts + (c * n_q_heads + h0) * head_dim, lse_parts + c * n_q_heads + h0, q + h0 * head_dim,
                         k, v, kvh, k0, k1, group, head_dim, scale, scores, raw ? raw + h0 * n_keys + k0 : NULL, n_keys);
        }
    }
    if (n_chunks == 1) {
        memcpy(o, o_parts, (size_t)(n_q_heads * head_dim) * sizeof(float));
        memcpy(lse, lse_parts, (size_t)n_q_heads * sizeof(float));
    } else {
        merge_states(b, o, lse, o_parts, lse_parts, n_chunks, n_q_heads, head_dim);
    }
    free(o_parts);
    free(scores_all);
}

static void cpu_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t n_keys,
                            int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    attn_decode_impl(b, o, lse, NULL, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim, scale);
}

static void cpu_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                                   const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                                   int64_t head_dim, float scale) {
    attn_decode_impl(b, o, lse, scores, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim, scale);
}

// Causal prefill attention, one KV head at a time: the group's queries for all
// tokens form a (n_tok*group, head_dim) matrix; keys stream through in tiles
// converted to fp32, with an online softmax and SGEMM for both products.
#define PREFILL_KEY_TILE 256

// One query row's online-softmax update over a key tile: sr[0, nvis) become
// exp(s - m_new), sr[nvis, nk) (masked) 0; the running max *m and sum *l
// move on and the row's output so far is rescaled by exp(m_old - m_new).
// Vector exp where the scalar loop called expf per score (a third of a
// 4K-token prefill).
SIMD_TARGET static void prefill_softmax_row_avx2(float *sr, int64_t nvis, int64_t nk, float *m, float *l, float *orow,
                                                 int64_t head_dim) {
    const float mt = max_from_avx2(sr, nvis, *m);
    const float alpha = *m == -INFINITY ? 0.0f : expf(*m - mt);
    const float sum = exp_shifted_sum_avx2(sr, sr, nvis, mt);
    if (nk > nvis) memset(sr + nvis, 0, (size_t)(nk - nvis) * sizeof(float));
    *l = *l * alpha + sum;
    *m = mt;
    if (alpha == 1.0f) return;  // the max did not move: nothing to rescale
    const __m256 av = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= head_dim; i += 8) _mm256_storeu_ps(orow + i, _mm256_mul_ps(_mm256_loadu_ps(orow + i), av));
    for (; i < head_dim; i++) orow[i] *= alpha;
}

static void cpu_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0, const kv_view *k,
                             const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    if (n_tok <= 0) return;
    const int simd = cpu_has_avx2();
    const int64_t group = n_q_heads / n_kv_heads;
    const int64_t n_rows = n_tok * group;  // row r = token r / group, head g = r % group
    const int64_t n_keys = pos0 + n_tok;
    float *qg = malloc((size_t)(n_rows * head_dim) * sizeof(float));
    float *og = malloc((size_t)(n_rows * head_dim) * sizeof(float));
    float *s = malloc((size_t)(n_rows * PREFILL_KEY_TILE) * sizeof(float));
    float *kt = malloc((size_t)(PREFILL_KEY_TILE * head_dim) * sizeof(float));
    float *vt = malloc((size_t)(PREFILL_KEY_TILE * head_dim) * sizeof(float));
    float *m = malloc((size_t)n_rows * sizeof(float));
    float *l = malloc((size_t)n_rows * sizeof(float));
    if (!qg || !og || !s || !kt || !vt || !m || !l) {
        cpu_fail(b, "prefill attention",
                 ((size_t)(n_rows * head_dim) * 2 + (size_t)(n_rows * PREFILL_KEY_TILE) +
                  (size_t)(PREFILL_KEY_TILE * head_dim) * 2 + (size_t)n_rows * 2) * sizeof(float));
        goto done;
    }
    for (int64_t kvh = 0; kvh < n_kv_heads; kvh++) {
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t g = 0; g < group; g++)
                memcpy(qg + (t * group + g) * head_dim, q + (t * n_q_heads + kvh * group + g) * head_dim,
                       (size_t)head_dim * sizeof(float));
        memset(og, 0, (size_t)(n_rows * head_dim) * sizeof(float));
        for (int64_t r = 0; r < n_rows; r++) {
            m[r] = -INFINITY;
            l[r] = 0.0f;
        }
        for (int64_t j0 = 0; j0 < n_keys; j0 += PREFILL_KEY_TILE) {
            int64_t nk = n_keys - j0 < PREFILL_KEY_TILE ? n_keys - j0 : PREFILL_KEY_TILE;
            // First token that can see key j0: rows before it have nothing in this tile.
            int64_t t_first = j0 - pos0 > 0 ? j0 - pos0 : 0;
            int64_t r_first = t_first * group;
            int64_t rows = n_rows - r_first;
#pragma omp parallel for num_threads(b->n_threads) schedule(static)
            for (int64_t j = 0; j < nk; j++) {
                kv_decode_row(k->elem, kv_row_at(k, kvh, j0 + j, head_dim), kt + j * head_dim, head_dim);
                kv_decode_row(v->elem, kv_row_at(v, kvh, j0 + j, head_dim), vt + j * head_dim, head_dim);
            }
            blas_threads(b);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)nk, (int)head_dim, scale,
                        qg + r_first * head_dim, (int)head_dim, kt, (int)head_dim, 0.0f, s, (int)nk);
#pragma omp parallel for num_threads(b->n_threads) schedule(static)
            for (int64_t rr = 0; rr < rows; rr++) {
                int64_t r = r_first + rr;
                int64_t last_key = pos0 + r / group;  // causal: keys <= own position
                int64_t nvis = last_key - j0 + 1 < nk ? last_key - j0 + 1 : nk;
                float *sr = s + rr * nk;
                if (simd) {
                    prefill_softmax_row_avx2(sr, nvis, nk, m + r, l + r, og + r * head_dim, head_dim);
                    continue;
                }
                float mt = m[r];
                for (int64_t j = 0; j < nvis; j++) mt = sr[j] > mt ? sr[j] : mt;
                float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - mt);
                float sum = 0.0f;
                for (int64_t j = 0; j < nvis; j++) {
                    sr[j] = expf(sr[j] - mt);
                    sum += sr[j];
                }
                for (int64_t j = nvis; j < nk; j++) sr[j] = 0.0f;
                l[r] = l[r] * alpha + sum;
                m[r] = mt;
                float *orow = og + r * head_dim;
                for (int64_t i = 0; i < head_dim; i++) orow[i] *= alpha;
            }
            blas_threads(b);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)head_dim, (int)nk, 1.0f, s, (int)nk,
                        vt, (int)head_dim, 1.0f, og + r_first * head_dim, (int)head_dim);
        }
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t g = 0; g < group; g++) {
                int64_t r = t * group + g;
                float inv = 1.0f / l[r];
                float *dst = o + (t * n_q_heads + kvh * group + g) * head_dim;
                for (int64_t i = 0; i < head_dim; i++) dst[i] = og[r * head_dim + i] * inv;
                if (lse) lse[t * n_q_heads + kvh * group + g] = m[r] + logf(l[r]);
            }
    }
done:
    free(qg); free(og); free(s); free(kt); free(vt); free(m); free(l);
}

// Index of the largest value; NaN never wins unless all are NaN (then 0).
static int64_t cpu_argmax(const backend *b, const float *x, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

// ---- element-wise and data movement ----

static void cpu_add(const backend *b, float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

static void cpu_add_bias(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n) {
    for (int64_t r = 0; r < n_rows; r++) {
        float *xr = x + r * n;
        for (int64_t i = 0; i < n; i++) xr[i] += bias[i];
    }
}

static void cpu_embed(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        dequantize_row(tok_embd->type, (const uint8_t *)tok_embd->data + (size_t)tokens_host[t] * tok_embd->row_bytes,
                       x + t * tok_embd->n_in, tok_embd->n_in);
}

// fp32 -> fp16, round to nearest even (what fp32_to_fp16 does; NaN payloads may differ).
SIMD_TARGET static void to_f16_f16c(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = fp32_to_fp16(src[i]);
}

static void kv_put_row(const kv_view *kv, int64_t head, int64_t slot, const float *src, int64_t n, int f16c) {
    void *dst = (void *)kv_row_at(kv, head, slot, n);
    if (kv->elem == KV_F16 && f16c) to_f16_f16c(dst, src, n);
    else kv_encode_row(kv->elem, dst, src, n);
}

static void cpu_kv_write(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                         const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim) {
    const int f16c = cpu_has_avx2();
    for (int64_t row = 0; row < n_tok * n_kv_heads; row++) {
        const int64_t h = row % n_kv_heads, slot = slot_host[row];
        kv_put_row(k_dst, h, slot, k + row * head_dim, head_dim, f16c);
        kv_put_row(v_dst, h, slot, v + row * head_dim, head_dim, f16c);
    }
}

// Rows a recycled rebuild gathers lie all over the cache: each is a cache miss,
// so the rows ROW_PREFETCH ahead are requested early and large gathers use
// every thread (destinations are distinct, so the order does not matter).
#define ROW_PREFETCH 24
#define COPY_ROWS_PARALLEL_BYTES ((size_t)1 << 16)

static void cpu_copy_rows(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                          const int64_t *src_row_host, int64_t n_rows, size_t row_bytes) {
    const size_t pf_bytes = row_bytes < 256 ? row_bytes : 256;  // the first lines; the streamer takes the rest
    const int par = n_rows > 2 * ROW_PREFETCH && (size_t)n_rows * row_bytes >= COPY_ROWS_PARALLEL_BYTES;
#pragma omp parallel for schedule(static) num_threads(b->n_threads) if (par)
    for (int64_t i = 0; i < n_rows; i++) {
        if (i + ROW_PREFETCH < n_rows) {
            const int64_t ip = i + ROW_PREFETCH;
            const uint8_t *sp = (const uint8_t *)src + (size_t)(src_row_host ? src_row_host[ip] : ip) * row_bytes;
            const uint8_t *dp = (const uint8_t *)dst + (size_t)(dst_row_host ? dst_row_host[ip] : ip) * row_bytes;
            for (size_t o = 0; o < pf_bytes; o += 64) {
                __builtin_prefetch(sp + o, 0);
                __builtin_prefetch(dp + o, 1);
            }
        }
        const int64_t d = dst_row_host ? dst_row_host[i] : i, s = src_row_host ? src_row_host[i] : i;
        uint8_t *dp = (uint8_t *)dst + (size_t)d * row_bytes;
        const uint8_t *sp = (const uint8_t *)src + (size_t)s * row_bytes;
        switch (row_bytes) {  // constant sizes inline; a call per 128-byte row cost as much as the copy
        case 64: memcpy(dp, sp, 64); break;
        case 128: memcpy(dp, sp, 128); break;
        case 256: memcpy(dp, sp, 256); break;
        default: memcpy(dp, sp, row_bytes); break;
        }
    }
}

static void cpu_copy_2d(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                        size_t width_bytes, int64_t n_rows) {
    if (dst_pitch == width_bytes && src_pitch == width_bytes) {  // one block
        if (n_rows > 0 && width_bytes) memcpy(dst, src, (size_t)n_rows * width_bytes);
        return;
    }
    for (int64_t r = 0; r < n_rows; r++)
        memcpy((uint8_t *)dst + (size_t)r * dst_pitch, (const uint8_t *)src + (size_t)r * src_pitch, width_bytes);
}

// Double accumulation like the reference: head_dim values, nothing to gain from less.
static void cpu_mean_heads(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim) {
    for (int64_t i = 0; i < head_dim; i++) {
        double acc = 0.0;
        for (int64_t h = 0; h < n_heads; h++) acc += q[h * head_dim + i];
        out[i] = (float)(acc / (double)n_heads);
    }
}

// ---- selection: score reduction, max-pooling and top-K, parallel over rows ----

// Columns per work item: a KV group's rows are few (3 for SmolLM2), so items
// split them by columns too and every thread gets a share; each column's
// result depends on that column alone, so the split never changes a bit.
#define SCORE_REDUCE_COLS 4096

static void cpu_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                             int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode) {
    if (n_out_rows <= 0) return;
    const int64_t G = n_q_heads / n_out_rows;
    const int64_t n_cols = mode == SCORE_ACC_MEAN_P ? (n_acc < n ? n_acc : n) : n;
    if (n_cols <= 0) return;
    const int64_t n_blocks = (n_cols + SCORE_REDUCE_COLS - 1) / SCORE_REDUCE_COLS;
#pragma omp parallel for schedule(static, 1) num_threads(b->n_threads)
    for (int64_t it = 0; it < n_out_rows * n_blocks; it++) {
        const int64_t g = it / n_blocks, j0 = it % n_blocks * SCORE_REDUCE_COLS;
        const int64_t j1 = j0 + SCORE_REDUCE_COLS < n_cols ? j0 + SCORE_REDUCE_COLS : n_cols;
        float *o = out + g * n;
        const int64_t h0 = g * G;
        if (mode == SCORE_MAX_LOGP || mode == SCORE_FIRST_LOGP) {
            // Log-probabilities s - lse; an lse of -inf (no keys) makes every one -inf.
            const int64_t h_end = mode == SCORE_FIRST_LOGP ? h0 + 1 : h0 + G;
            for (int64_t h = h0; h < h_end; h++) {
                const float l = lse[h];
                const float *r = raw + h * ld;
                if (h == h0 && l == -INFINITY)
                    for (int64_t j = j0; j < j1; j++) o[j] = -INFINITY;
                else if (h == h0)
                    for (int64_t j = j0; j < j1; j++) o[j] = r[j] - l;
                else if (l != -INFINITY)  // a -inf would never replace the running max
                    for (int64_t j = j0; j < j1; j++) o[j] = r[j] - l > o[j] ? r[j] - l : o[j];
            }
        } else {
            for (int64_t j = j0; j < j1; j++) {
                double acc = 0.0;
                for (int64_t h = h0; h < h0 + G; h++)
                    if (lse[h] != -INFINITY) acc += expf(raw[h * ld + j] - lse[h]);
                const float mean = (float)(acc / (double)G);
                o[j] = mode == SCORE_ACC_MEAN_P ? o[j] + mean : mean;
            }
        }
    }
}

// The window max of position i where the window is cut by an end of the row.
static float window_max(const float *in, int64_t n, int64_t i, int64_t half) {
    float m = -INFINITY;
    for (int64_t j = i - half < 0 ? 0 : i - half; j <= i + half && j < n; j++) m = in[j] > m ? in[j] : m;
    return m;
}

// Recycled attention's kernels are short (7): a max over `kernel` shifted
// loads per 8 outputs beats van Herk's three dependent scalar passes.
#define MAXPOOL_DIRECT_MAX 15

SIMD_TARGET static void maxpool_row_direct_avx2(float *out, const float *in, int64_t n, int64_t kernel) {
    const int64_t half = kernel / 2;
    int64_t i = 0;
    for (; i < half && i < n; i++) out[i] = window_max(in, n, i, half);
    for (; i + 8 + half <= n; i += 8) {
        const float *w = in + i - half;
        __m256 m = _mm256_loadu_ps(w);
        for (int64_t d = 1; d < kernel; d++) m = _mm256_max_ps(_mm256_loadu_ps(w + d), m);
        _mm256_storeu_ps(out + i, m);
    }
    for (; i < n; i++) out[i] = window_max(in, n, i, half);
}

static void cpu_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel) {
    if (n_rows <= 0 || n <= 0) return;
    if (kernel <= 1) {
        memcpy(out, in, (size_t)(n_rows * n) * sizeof(float));
        return;
    }
    if (kernel <= MAXPOOL_DIRECT_MAX && cpu_has_avx2()) {
#pragma omp parallel for schedule(static, 1) num_threads(b->n_threads) if (n_rows * n >= 8192)
        for (int64_t r = 0; r < n_rows; r++) maxpool_row_direct_avx2(out + r * n, in + r * n, n, kernel);
        return;
    }
    const int64_t np = n + 2 * (kernel / 2);
    const size_t n_bytes = (size_t)b->n_threads * (size_t)np * 2 * sizeof(float);
    float *scratch = malloc(n_bytes);  // pre and suf rows per thread
    if (!scratch) {
        cpu_fail(b, "maxpool_rows", n_bytes);
        return;
    }
#pragma omp parallel for schedule(static, 1) num_threads(b->n_threads)
    for (int64_t r = 0; r < n_rows; r++) {
        float *pre = scratch + (size_t)omp_get_thread_num() * (size_t)np * 2;
        sel_maxpool_row(in + r * n, n, kernel, out + r * n, pre, pre + np);
    }
    free(scratch);
}

static void cpu_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                          const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                          int64_t k_stride, int ascending) {
    if (n_rows <= 0) return;
    const int64_t per_thread = 2 * (n > 0 ? n : 1);  // keys and the radix sort's buffer
    const size_t n_bytes = (size_t)b->n_threads * (size_t)per_thread * sizeof(uint64_t);
    uint64_t *scratch = malloc(n_bytes);
    if (!scratch) {
        for (int64_t r = 0; r < n_rows; r++) n_out_host[r] = 0;
        cpu_fail(b, "topk_rows", n_bytes);
        return;
    }
#pragma omp parallel for schedule(static, 1) num_threads(b->n_threads)
    for (int64_t r = 0; r < n_rows; r++) {
        uint64_t *keys = scratch + (size_t)omp_get_thread_num() * (size_t)per_thread;
        n_out_host[r] = sel_topk_row(scores + r * ld, pos_host, n, k_host[r], ascending, keys, keys + n,
                                     out_host + r * k_stride);
    }
    free(scratch);
}

const backend_ops backend_cpu = {
    .name = "cpu",
    .supports = cpu_supports,
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .synchronize = cpu_synchronize,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .weight_upload = cpu_weight_upload,
    .weight_free = cpu_weight_free,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .attn_decode = cpu_attn_decode,
    .attn_decode_scores = cpu_attn_decode_scores,
    .attn_prefill = cpu_attn_prefill,
    .merge = merge_states,
    .argmax = cpu_argmax,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .embed = cpu_embed,
    .kv_write = cpu_kv_write,
    .copy_rows = cpu_copy_rows,
    .copy_2d = cpu_copy_2d,
    .mean_heads = cpu_mean_heads,
    .score_reduce = cpu_score_reduce,
    .maxpool_rows = cpu_maxpool_rows,
    .topk_rows = cpu_topk_rows,
};
