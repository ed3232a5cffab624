// The shared op-level test harness (see opcheck.h).
#include "opcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/quant.h"
#include "quantize_ref.h"

const tol TOL_SPEC = {1e-12, 1e-6, 1e-6};
const tol TOL_FP32 = {1e-7, 1e-6, 2e-5};
const tol TOL_ATTN = {5e-4, 2e-5, 1e-4};
const tol TOL_LSE = {5e-4, 2e-5, 2e-6};

// ---- random numbers (fixed seed) ----

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
void rand_seed(uint64_t seed) { g_rng = seed ? seed : 0x9e3779b97f4a7c15ull; }
uint32_t rand_u32(void) {  // xorshift64*
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545f4914f6cdd1dull) >> 32);
}
double rand_unit(void) { return (rand_u32() + 0.5) / 4294967296.0; }  // (0, 1)
float rand_uniform(float lo, float hi) { return lo + (hi - lo) * (float)rand_unit(); }
float rand_normal(void) {
    return (float)(sqrt(-2.0 * log(rand_unit())) * cos(6.283185307179586 * rand_unit()));
}
int64_t rand_below(int64_t n) { return (int64_t)(rand_unit() * (double)n); }

float *floats_new(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
float *normal_new(int64_t n, float sigma) {
    float *p = floats_new(n);
    for (int64_t i = 0; i < n; i++) p[i] = sigma * rand_normal();
    return p;
}

uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
int same_bits(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

// ---- guarded output buffers ----

static const uint32_t GUARD_BITS = 0x7fbadbadu;  // a NaN payload no kernel computes

// n floats pre-filled with NaN, then GUARD_ELEMS guard words.
float *out_new(int64_t n) {
    float *p = malloc((size_t)(n + GUARD_ELEMS) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    for (int i = 0; i < GUARD_ELEMS; i++) memcpy(p + n + i, &GUARD_BITS, 4);
    return p;
}
int guard_intact(const float *p, int64_t n) {
    for (int i = 0; i < GUARD_ELEMS; i++) {
        uint32_t u;
        memcpy(&u, p + n + i, 4);  // bytes, not a float load: the guard is a signaling NaN
        if (u != GUARD_BITS) return 0;
    }
    return 1;
}
int all_finite(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}


// got vs ref under t; atol_vec (optional) replaces t.atol per element.
cmp_result compare_quiet(const float *got, const float *ref, int64_t n, tol t, const double *atol_vec) {
    cmp_result r = {1, 0.0, 0.0, -1};
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double a = got[i], b = ref[i];
        if (isnan(a) || isnan(b) || ((isinf(a) || isinf(b)) && a != b)) {
            if (r.ok) r.worst_i = i;
            r.ok = 0;
            r.ratio = INFINITY;
            continue;
        }
        if (isinf(b)) continue;  // equal infinities (the lse of an empty state)
        double d = a - b;
        num += d * d;
        den += b * b;
        double ratio = fabs(d) / ((atol_vec ? atol_vec[i] : t.atol) + t.rtol * fabs(b));
        if (ratio > r.ratio) {
            r.ratio = ratio;
            r.worst_i = i;
        }
    }
    r.nmse = den > 0 ? num / den : num;  // all-zero reference: absolute squared error
    if (r.nmse > t.nmse || r.ratio > 1.0) r.ok = 0;
    return r;
}

// Copies n doubles into a float array (for comparing naive results).
float *to_floats(const double *x, int64_t n) {
    float *p = floats_new(n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)x[i];
    return p;
}

// ---- KV caches ----


static int g_kv_serial = 0;

int is_block_kv(int elem) { return elem == KV_Q8_0 || elem == KV_Q4_0; }

// Element i of a q8_0 / q4_0 row, decoded here from GGML's block layouts.

test_kv kv_new(int elem, int64_t n_kv_heads, int64_t n_valid, int64_t head_dim, float lo, float hi) {
    test_kv kv = {NULL, elem, n_kv_heads, n_valid, head_dim, 0, NULL};
    // Odd extra so heads do not start at a multiple of 8 elements either, and
    // different for consecutive caches so a kernel that steps V with K's
    // stride (or the reverse) reads NaN. The block formats: an odd number of
    // extra blocks.
    const int64_t extra = is_block_kv(elem) ? 32 * (1 + 2 * (g_kv_serial++ % 3)) : 5 + 2 * (g_kv_serial++ % 3);
    kv.head_stride = (n_valid + 3) * head_dim + extra;
    int64_t n = n_kv_heads * kv.head_stride;
    kv.data = malloc(kv_bytes(elem, n) + 1);
    kv.vals = malloc((size_t)(n_kv_heads * n_valid * head_dim + 1) * sizeof(double));
    if (is_block_kv(elem)) {  // every block's d is an fp16 NaN, so any element read outside the rows is NaN
        const size_t bb = kv_bytes(elem, 32);
        memset(kv.data, 0, kv_bytes(elem, n));
        for (size_t b = 0; b < (size_t)(n / 32); b++) memcpy((uint8_t *)kv.data + b * bb, &(uint16_t){0x7e00}, 2);
        float *row = floats_new(head_dim);
        for (int64_t h = 0; h < n_kv_heads; h++)
            for (int64_t p = 0; p < n_valid; p++) {
                for (int64_t i = 0; i < head_dim; i++) row[i] = rand_uniform(lo, hi);
                uint8_t *dst = (uint8_t *)kv.data + kv_bytes(elem, h * kv.head_stride + p * head_dim);
                qref_quantize(elem == KV_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0, row, dst, head_dim);
                for (int64_t i = 0; i < head_dim; i++)
                    kv.vals[(h * n_valid + p) * head_dim + i] = naive_kv_block(elem, dst, i);
            }
        free(row);
        return kv;
    }
    for (int64_t i = 0; i < n; i++) {
        if (elem == KV_F16) ((uint16_t *)kv.data)[i] = 0x7e00;  // fp16 NaN
        else ((float *)kv.data)[i] = NAN;
    }
    for (int64_t h = 0; h < n_kv_heads; h++)
        for (int64_t p = 0; p < n_valid; p++)
            for (int64_t i = 0; i < head_dim; i++) {
                int64_t idx = h * kv.head_stride + p * head_dim + i;
                float x = rand_uniform(lo, hi);
                double stored;
                if (elem == KV_F16) {
                    uint16_t b = qref_fp32_to_fp16(x);
                    ((uint16_t *)kv.data)[idx] = b;
                    stored = qref_fp16_to_fp32(b);
                } else {
                    ((float *)kv.data)[idx] = x;
                    stored = x;
                }
                kv.vals[(h * n_valid + p) * head_dim + i] = stored;
            }
    return kv;
}

// Overwrites one stored element (keeps vals in step).
void kv_set(test_kv *kv, int64_t h, int64_t p, int64_t i, float x) {
    if (is_block_kv(kv->elem)) abort();  // one element of a block cannot change alone
    int64_t idx = h * kv->head_stride + p * kv->head_dim + i;
    double stored;
    if (kv->elem == KV_F16) {
        uint16_t b = qref_fp32_to_fp16(x);
        ((uint16_t *)kv->data)[idx] = b;
        stored = qref_fp16_to_fp32(b);
    } else {
        ((float *)kv->data)[idx] = x;
        stored = x;
    }
    kv->vals[(h * kv->n_valid + p) * kv->head_dim + i] = stored;
}

double kv_val(const test_kv *kv, int64_t h, int64_t p, int64_t i) {
    return kv->vals[(h * kv->n_valid + p) * kv->head_dim + i];
}

// View of rows [first, ...) of the cache: position p of the view is row first + p.
kv_view kv_view_at(const test_kv *kv, int64_t first) {
    kv_view v = {(const uint8_t *)kv->data + kv_bytes(kv->elem, first * kv->head_dim), kv->elem, kv->head_stride};
    return v;
}

void kv_free(test_kv *kv) {
    free(kv->data);
    free(kv->vals);
    kv->data = NULL;
    kv->vals = NULL;
}

const char *kv_name(int elem) {
    static const char *const names[] = {"f16", "f32", "q8_0", "q4_0"};
    return elem >= 0 && elem < 4 ? names[elem] : "?";
}

// ---- naive math (double) ----

// Explicit softmax of one query over keys [0, n) of KV head h:
// lse = ln sum_j exp(s_j), o = sum_j exp(s_j - lse) v_j.
void naive_attention(double *o, double *lse, const float *q, const test_kv *k, const test_kv *v, int64_t h,
                            int64_t n, double scale) {
    int64_t hd = k->head_dim;
    for (int64_t i = 0; i < hd; i++) o[i] = 0.0;
    if (n == 0) {
        *lse = -INFINITY;
        return;
    }
    double *s = malloc((size_t)n * sizeof(double));
    double smax = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double dot = 0.0;
        for (int64_t i = 0; i < hd; i++) dot += (double)q[i] * kv_val(k, h, j, i);
        s[j] = scale * dot;
        smax = s[j] > smax ? s[j] : smax;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) sum += exp(s[j] - smax);  // shifted only so exp cannot overflow
    *lse = smax + log(sum);
    for (int64_t j = 0; j < n; j++) {
        double p = exp(s[j] - *lse);
        for (int64_t i = 0; i < hd; i++) o[i] += p * kv_val(v, h, j, i);
    }
    free(s);
}

void rope_freqs(float *inv_freq, int64_t rot_dim, double theta) {
    for (int64_t i = 0; i < rot_dim / 2; i++) inv_freq[i] = (float)pow(theta, -2.0 * (double)i / (double)rot_dim);
}

// ---- test weights ----


// Types the test quantizers do not write: random bytes, then scales set to
// moderate fp16 values (Q6_K's int8 scales and all quants stay random).
static int is_random_block_type(uint32_t t) {
    return t == GGML_TYPE_Q5_0 || t == GGML_TYPE_Q5_1 || t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K ||
           t == GGML_TYPE_Q6_K;
}

static void put_f16(uint8_t *p, float f) {
    uint16_t h = qref_fp32_to_fp16(f);
    memcpy(p, &h, 2);
}

static void random_blocks(uint32_t type, uint8_t *dst, int64_t n_in) {
    const ggml_type_info *ti = ggml_type_get(type);
    int64_t nb = n_in / ti->block_elems;
    for (size_t i = 0; i < (size_t)nb * ti->block_bytes; i++) dst[i] = (uint8_t)rand_u32();
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = dst + (size_t)b * ti->block_bytes;
        switch (type) {
        case GGML_TYPE_Q5_1: put_f16(blk + 2, rand_uniform(-1.0f, 1.0f)); /* fall through */
        case GGML_TYPE_Q5_0: put_f16(blk, rand_uniform(0.02f, 0.1f)); break;
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
            put_f16(blk, rand_uniform(0.001f, 0.005f));
            put_f16(blk + 2, rand_uniform(0.001f, 0.005f));
            break;
        case GGML_TYPE_Q6_K: put_f16(blk + 208, rand_uniform(0.0002f, 0.001f)); break;
        }
    }
}

// n_out rows of n_in values ~ N(0, s_row^2) with a per-row scale, stored as
// `type` by the reference quantizers; row o = 1 is all zeros and row 2 constant
// (Q4_1 then has d = 0). row_pad extra bytes per row (filled with 0xff, NaN
// for float types) test that kernels step rows by row_bytes.
test_weight weight_new(uint32_t type, int64_t n_in, int64_t n_out, size_t row_pad) {
    test_weight tw;
    size_t packed = ggml_row_bytes(type, n_in);
    tw.w.type = type;
    tw.w.n_in = n_in;
    tw.w.n_out = n_out;
    tw.w.row_bytes = packed + row_pad;
    tw.buf = malloc((size_t)n_out * tw.w.row_bytes);
    memset(tw.buf, 0xff, (size_t)n_out * tw.w.row_bytes);
    tw.w.data = tw.buf;
    float *row = floats_new(n_in);
    for (int64_t o = 0; o < n_out; o++) {
        float s_row = rand_uniform(0.25f, 2.0f);
        for (int64_t i = 0; i < n_in; i++) row[i] = o == 1 ? 0.0f : o == 2 ? 0.75f : s_row * rand_normal();
        uint8_t *dst = (uint8_t *)tw.buf + (size_t)o * tw.w.row_bytes;
        if (is_random_block_type(type)) {
            random_blocks(type, dst, n_in);
            if (o == 1) memset(dst, 0, packed);  // scale 0: a zero row
            continue;
        }
        size_t n = qref_quantize(type, row, dst, n_in);
        if (n != packed) abort();  // the reference quantizer and ggml_row_bytes disagree
    }
    free(row);
    return tw;
}

void weight_free(test_weight *tw) {
    free(tw->buf);
    tw->buf = NULL;
}

uint16_t load_u16(const uint8_t *p) {
    uint16_t u;
    memcpy(&u, p, 2);
    return u;
}

// Element i of a stored row, decoded from the GGUF block layouts directly.
double naive_weight(uint32_t type, const uint8_t *row, int64_t i) {
    int64_t b = i / 32, j = i % 32;
    switch (type) {
    case GGML_TYPE_F32: {
        float f;
        memcpy(&f, row + 4 * i, 4);
        return f;
    }
    case GGML_TYPE_F16: return qref_fp16_to_fp32(load_u16(row + 2 * i));
    case GGML_TYPE_BF16: return qref_bf16_to_fp32(load_u16(row + 2 * i));
    case GGML_TYPE_Q8_0: {  // {fp16 d, int8 q[32]}: x = d q
        const uint8_t *blk = row + b * 34;
        return (double)qref_fp16_to_fp32(load_u16(blk)) * (int8_t)blk[2 + j];
    }
    case GGML_TYPE_Q4_0: {  // {fp16 d, u8 qs[16]}: element j < 16 in the low nibble of qs[j], j >= 16 in the high of qs[j-16]
        const uint8_t *blk = row + b * 18;
        int q = j < 16 ? blk[2 + j] & 0x0f : blk[2 + j - 16] >> 4;
        return (double)qref_fp16_to_fp32(load_u16(blk)) * (q - 8);
    }
    case GGML_TYPE_Q4_1: {  // {fp16 d, fp16 m, u8 qs[16]}: x = d q + m
        const uint8_t *blk = row + b * 20;
        int q = j < 16 ? blk[4 + j] & 0x0f : blk[4 + j - 16] >> 4;
        return (double)qref_fp16_to_fp32(load_u16(blk)) * q + qref_fp16_to_fp32(load_u16(blk + 2));
    }
    case GGML_TYPE_Q5_0:    // {fp16 d, u8 qh[4], u8 qs[16]}: 5th bit of element j is bit j of qh; x = d (q - 16)
    case GGML_TYPE_Q5_1: {  // {fp16 d, fp16 m, u8 qh[4], u8 qs[16]}: x = d q + m
        int q1 = type == GGML_TYPE_Q5_1;
        const uint8_t *blk = row + b * (q1 ? 24 : 22), *qh = blk + (q1 ? 4 : 2), *qs = qh + 4;
        int q = (j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4) | ((qh[j / 8] >> (j % 8)) & 1) << 4;
        double d = qref_fp16_to_fp32(load_u16(blk));
        return q1 ? d * q + qref_fp16_to_fp32(load_u16(blk + 2)) : d * (q - 16);
    }
    case GGML_TYPE_Q4_K:    // {fp16 d, dmin, u8 scales[12], (Q5_K: u8 qh[32]), u8 qs[128]}
    case GGML_TYPE_Q5_K: {  // sub-block s = e/32: x = d sc_s q - dmin m_s
        int q5 = type == GGML_TYPE_Q5_K;
        const uint8_t *blk = row + (i / 256) * (q5 ? 176 : 144), *sc = blk + 4, *qs = blk + (q5 ? 48 : 16);
        int e = (int)(i % 256), s = e / 32, l = e % 32;
        int scale = s < 4 ? sc[s] & 63 : (sc[s + 4] & 0x0f) | (sc[s - 4] >> 6) << 4;
        int min = s < 4 ? sc[s + 4] & 63 : (sc[s + 4] >> 4) | (sc[s] >> 6) << 4;
        int q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0x0f;
        if (q5) q += ((blk[16 + l] >> s) & 1) * 16;
        return (double)qref_fp16_to_fp32(load_u16(blk)) * scale * q - (double)qref_fp16_to_fp32(load_u16(blk + 2)) * min;
    }
    case GGML_TYPE_Q6_K: {  // {u8 ql[128], u8 qh[64], i8 scales[16], fp16 d}: x = d scales[e/16] (q - 32)
        const uint8_t *blk = row + (i / 256) * 210;
        int e = (int)(i % 256), h = e / 128, k = e % 128 / 32, l = e % 32;
        int lo = (blk[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0f;
        int hi = (blk[128 + 32 * h + l] >> (2 * k)) & 3;
        return (double)qref_fp16_to_fp32(load_u16(blk + 208)) * (int8_t)blk[192 + e / 16] * ((lo | hi << 4) - 32);
    }
    default: return NAN;
    }
}

double naive_kv_block(int elem, const uint8_t *row, int64_t i) {
    return naive_weight(elem == KV_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0, row, i);
}

// out: (n_tok, n_out) in double; abs: sum_k |w_ok x_tk| for error bounds.
void naive_matmul(double *out, double *abs_sum, const float *x, const weight *w, int64_t n_tok) {
    for (int64_t o = 0; o < w->n_out; o++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)o * w->row_bytes;
        for (int64_t t = 0; t < n_tok; t++) {
            double acc = 0.0, a = 0.0;
            for (int64_t i = 0; i < w->n_in; i++) {
                double p = naive_weight(w->type, row, i) * x[t * w->n_in + i];
                acc += p;
                a += fabs(p);
            }
            out[t * w->n_out + o] = acc;
            abs_sum[t * w->n_out + o] = a;
        }
    }
}

const uint32_t WEIGHT_TYPES[N_WEIGHT_TYPES] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16,
                                        GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1};

int is_float_type(uint32_t t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

int compare_report(op_stats *s, const char *what, const float *got, const float *ref, int64_t n, tol t,
                   const double *atol_vec) {
    cmp_result r = compare_quiet(got, ref, n, t, atol_vec);
    if (s) {
        s->cases++;
        if (r.nmse > s->worst_nmse) s->worst_nmse = r.nmse;
        if (r.ratio > s->worst_ratio) s->worst_ratio = r.ratio;
    }
    if (!r.ok)
        fprintf(stderr, "%s: nmse %.3g (max %.3g), worst elem %lld: got %.9g want %.9g (ratio %.3g)\n", what, r.nmse,
                t.nmse, (long long)r.worst_i, r.worst_i >= 0 ? got[r.worst_i] : 0.0,
                r.worst_i >= 0 ? ref[r.worst_i] : 0.0, r.ratio);
    return r.ok;
}

void op_stats_print(const op_stats *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i].cases)
            printf("  %-26s %4d cases  worst nmse %.3g  worst err/bound %.3g\n", s[i].name, s[i].cases,
                   s[i].worst_nmse, s[i].worst_ratio);
}


size_t test_kv_bytes(const test_kv *kv) { return kv_bytes(kv->elem, kv->n_kv_heads * kv->head_stride); }

// ---- through a backend ----

void *dev_upload(const backend *b, const void *host, size_t n_bytes) {
    void *p = b->ops->alloc(b, n_bytes);
    if (!p) {
        fprintf(stderr, "%s: alloc(%zu) failed\n", b->ops->name, n_bytes);
        abort();
    }
    if (n_bytes) b->ops->upload(b, p, host, n_bytes);
    return p;
}

float *dev_floats(const backend *b, const float *host, int64_t n) {
    return dev_upload(b, host, (size_t)(n > 0 ? n : 0) * sizeof(float));
}

float *dev_out(const backend *b, int64_t n) {
    float *h = out_new(n);
    float *d = dev_upload(b, h, (size_t)(n + GUARD_ELEMS) * sizeof(float));
    free(h);
    return d;
}

float *dev_fetch(const backend *b, const float *dev, int64_t n, int *guards_ok) {
    float *h = floats_new(n + GUARD_ELEMS);
    b->ops->download(b, h, dev, (size_t)(n + GUARD_ELEMS) * sizeof(float));
    if (guards_ok) *guards_ok = guard_intact(h, n);
    return h;
}

kv_view dev_kv(const backend *b, const test_kv *kv, int64_t first, void **buf) {
    *buf = dev_upload(b, kv->data, test_kv_bytes(kv));
    kv_view v = {(const uint8_t *)*buf + kv_bytes(kv->elem, first * kv->head_dim), kv->elem,
                 kv->head_stride};
    return v;
}

int dev_weight(const backend *b, weight *dst, const weight *src) {
    rc_err err = {{0}};
    if (b->ops->weight_upload(b, dst, src, &err)) {
        fprintf(stderr, "%s weight_upload: %s\n", b->ops->name, err.msg);
        return -1;
    }
    return 0;
}
