// Op-level tests of the CPU backends (src/backend/cpu_ref.c, src/backend/cpu.c).
//  1. The specification: cpu_ref against naive math written here in double
//     (explicit softmax and closed forms for attention, rmsnorm, swiglu, the
//     rope rotation matrix column by column, matmul over a dequantizer written
//     here from the block layouts).
//  2. The fast backend against cpu_ref, op by op, for every weight type and
//     odd shapes that cross its code-path boundaries: matvec below 4 tokens and
//     GEMM from 4, the GEMM's weight chunking, 1024-key decode chunks, 256-key
//     prefill tiles, 8-wide SIMD tails, GQA groups beyond the 4-head tile.
//  3. The attention state (o, lse), lse = natural log of the softmax
//     denominator: merging shards in order equals attention over their union,
//     merging with empty states is exact and NaN-free.
//  4. Argmax ties go to the lowest index; NaN never wins.
//  5. The engine's element-wise, data-movement and selection ops (add,
//     add_bias, embed, kv_write, copy_rows, copy_2d, mean_heads,
//     score_reduce, maxpool_rows, topk_rows) and the memory entries, against
//     closed forms and brute force written here, then cpu against cpu_ref;
//     a few through the strict backend; two instances with their own thread counts.
// Every output buffer is pre-filled with NaN (an element a kernel forgets to
// write fails the finite check) and followed by guard words (an out-of-bounds
// write fails). KV caches are filled with NaN outside the rows an op may read,
// with a head stride larger than the rows in use, so stride and range bugs
// surface as NaN. Inputs are allocated at their exact size so ASan sees overreads.
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/kv_format.h"
#include "backend_strict.h"
#include "check.h"
#include "kernel_path.h"
#include "model/quant.h"
#include "opcheck.h"
#include "quantize_ref.h"

// Kernels report scratch they cannot get instead of aborting; the test asks
// for more than any allocator grants, so ASan must return NULL too.
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

// One instance per backend table, made in main (two threads for the fast one).
static backend g_ref, g_cpu;

static const backend *inst(const backend_ops *ops) { return ops == &backend_cpu_ref ? &g_ref : &g_cpu; }
static const backend_ops *const BOTH[2] = {&backend_cpu_ref, &backend_cpu};

// ---- comparison (the harness is tests/support/opcheck.c) ----

enum { ST_SPEC, ST_RMSNORM, ST_MATMUL, ST_ROPE, ST_SWIGLU, ST_DECODE, ST_PREFILL, ST_MERGE, ST_SHARDS, ST_SCORE, ST_COUNT };
static op_stats g_stats[ST_COUNT] = {
    {"spec (cpu_ref vs naive)", 0, 0, 0}, {"rmsnorm", 0, 0, 0}, {"matmul", 0, 0, 0},
    {"rope", 0, 0, 0}, {"swiglu", 0, 0, 0}, {"attn_decode", 0, 0, 0},
    {"attn_prefill", 0, 0, 0}, {"merge", 0, 0, 0}, {"shard merge", 0, 0, 0}, {"score_reduce", 0, 0, 0},
};

static int compare(int stat, const char *what, const float *got, const float *ref, int64_t n, tol t,
                   const double *atol_vec) {
    int ok = compare_report(&g_stats[stat], what, got, ref, n, t, atol_vec);
    CHECK(ok);
    return ok;
}


// The CPU backends' weight types: the harness's list (what every backend
// reads) and the ones only the CPU backends read.
static const uint32_t CPU_WEIGHT_TYPES[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16, GGML_TYPE_Q8_0,
                                            GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1};
#define N_CPU_WEIGHT_TYPES ((int)(sizeof(CPU_WEIGHT_TYPES) / sizeof(CPU_WEIGHT_TYPES[0])))
// Super-blocks of 256: rows of 256 * n.
static const uint32_t KQUANT_TYPES[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K};
#define N_KQUANT_TYPES 3

// ======================================================================
// 0. The harness itself can fail
// ======================================================================

static void test_harness_detects(void) {
    float ref[4] = {1.0f, 2.0f, -3.0f, -INFINITY};
    float got[4] = {1.0f, 2.0f, -3.0f, -INFINITY};
    CHECK(compare_quiet(got, ref, 4, TOL_FP32, NULL).ok);
    got[1] = 2.001f;  // 5e-4 relative
    CHECK(!compare_quiet(got, ref, 4, TOL_FP32, NULL).ok);
    got[1] = 2.0f;
    got[2] = NAN;
    CHECK(!compare_quiet(got, ref, 4, TOL_FP32, NULL).ok);
    got[2] = -3.0f;
    got[3] = -FLT_MAX;  // an empty state's lse must stay -inf
    CHECK(!compare_quiet(got, ref, 4, TOL_FP32, NULL).ok);
    float *o = out_new(8);
    CHECK(guard_intact(o, 8));
    CHECK(!all_finite(o, 8));  // pre-filled with NaN: unwritten outputs fail
    o[8] = 0.0f;               // one element past the end
    CHECK(!guard_intact(o, 8));
    free(o);
}

// ======================================================================
// 1. cpu_ref against naive math: the specification itself
// ======================================================================

static void test_spec_attention(void) {
    const backend_ops *ref = &backend_cpu_ref;
    static const int64_t ns[] = {1, 2, 7, 33, 300};
    static const int64_t hds[] = {8, 6};
    char what[200];
    for (int elem = 0; elem < 2; elem++)
        for (size_t a = 0; a < sizeof(hds) / sizeof(hds[0]); a++)
            for (size_t b = 0; b < sizeof(ns) / sizeof(ns[0]); b++) {
                int64_t hd = hds[a], n = ns[b], n_kv = 2, group = 2, n_q = n_kv * group;
                double scale = 1.0 / sqrt((double)hd);
                test_kv k = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f);
                float *q = normal_new(n_q * hd, 1.5f);
                double *on = malloc((size_t)(n_q * hd) * sizeof(double)), *ln = malloc((size_t)n_q * sizeof(double));
                for (int64_t h = 0; h < n_q; h++) naive_attention(on + h * hd, &ln[h], q + h * hd, &k, &v, h / group, n, scale);
                float *o = out_new(n_q * hd), *lse = out_new(n_q);
                kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
                ref->attn_decode(&g_ref, o, lse, q, &kvk, &kvv, n, n_q, n_kv, hd, (float)scale);
                float *onf = to_floats(on, n_q * hd), *lnf = to_floats(ln, n_q);
                snprintf(what, sizeof what, "spec decode %s hd=%lld n=%lld o", kv_name(elem), (long long)hd, (long long)n);
                compare(ST_SPEC, what, o, onf, n_q * hd, TOL_SPEC, NULL);
                snprintf(what, sizeof what, "spec decode %s hd=%lld n=%lld lse", kv_name(elem), (long long)hd, (long long)n);
                compare(ST_SPEC, what, lse, lnf, n_q, TOL_SPEC, NULL);
                CHECK(guard_intact(o, n_q * hd) && guard_intact(lse, n_q));
                free(o); free(lse); free(onf); free(lnf); free(on); free(ln); free(q);
                kv_free(&k); kv_free(&v);
            }

    // Causal prefill: query t at position pos0 + t sees keys 0..pos0+t.
    for (int elem = 0; elem < 2; elem++) {
        int64_t hd = 8, n_kv = 2, group = 3, n_q = n_kv * group, n_tok = 5, pos0 = 3, n_keys = pos0 + n_tok;
        double scale = 0.3;
        test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
        float *q = normal_new(n_tok * n_q * hd, 1.0f);
        double *on = malloc((size_t)(n_tok * n_q * hd) * sizeof(double)), *ln = malloc((size_t)(n_tok * n_q) * sizeof(double));
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t h = 0; h < n_q; h++)
                naive_attention(on + (t * n_q + h) * hd, &ln[t * n_q + h], q + (t * n_q + h) * hd, &k, &v, h / group,
                                pos0 + t + 1, scale);
        float *o = out_new(n_tok * n_q * hd), *lse = out_new(n_tok * n_q);
        kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
        ref->attn_prefill(&g_ref, o, lse, q, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, (float)scale);
        float *onf = to_floats(on, n_tok * n_q * hd), *lnf = to_floats(ln, n_tok * n_q);
        snprintf(what, sizeof what, "spec prefill %s o", kv_name(elem));
        compare(ST_SPEC, what, o, onf, n_tok * n_q * hd, TOL_SPEC, NULL);
        snprintf(what, sizeof what, "spec prefill %s lse", kv_name(elem));
        compare(ST_SPEC, what, lse, lnf, n_tok * n_q, TOL_SPEC, NULL);
        CHECK(guard_intact(o, n_tok * n_q * hd) && guard_intact(lse, n_tok * n_q));
        free(o); free(lse); free(onf); free(lnf); free(on); free(ln); free(q);
        kv_free(&k); kv_free(&v);
    }
}

// Closed forms, on both backends (the fast one must meet them too).
static void test_attention_closed_forms(const backend_ops *be) {
    char what[200];
    static const int64_t ns[] = {1, 7, 33, 1025, 3000};
    for (int elem = 0; elem < 2; elem++)
        for (size_t c = 0; c < sizeof(ns) / sizeof(ns[0]); c++) {
            int64_t n = ns[c], hd = 16, n_kv = 1, n_q = 3;
            test_kv k = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f);
            kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
            float *mean = floats_new(n_q * hd), *lse_want = floats_new(n_q);
            for (int64_t i = 0; i < hd; i++) {
                double s = 0.0;
                for (int64_t j = 0; j < n; j++) s += kv_val(&v, 0, j, i);
                for (int64_t h = 0; h < n_q; h++) mean[h * hd + i] = (float)(s / (double)n);
            }
            // (a) q = 0: every score is 0, so o = mean of V and lse = ln n.
            float *q = floats_new(n_q * hd);
            for (int64_t i = 0; i < n_q * hd; i++) q[i] = 0.0f;
            float *o = out_new(n_q * hd), *lse = out_new(n_q);
            be->attn_decode(inst(be), o, lse, q, &kvk, &kvv, n, n_q, n_kv, hd, 0.25f);
            for (int64_t h = 0; h < n_q; h++) lse_want[h] = (float)log((double)n);
            snprintf(what, sizeof what, "%s q=0 %s n=%lld: o = mean V", be->name, kv_name(elem), (long long)n);
            compare(ST_SPEC, what, o, mean, n_q * hd, TOL_ATTN, NULL);
            snprintf(what, sizeof what, "%s q=0 %s n=%lld: lse = ln n", be->name, kv_name(elem), (long long)n);
            compare(ST_SPEC, what, lse, lse_want, n_q, TOL_LSE, NULL);
            CHECK(guard_intact(o, n_q * hd) && guard_intact(lse, n_q));
            free(o); free(lse);

            // (b) every key row the same vector kr: s = scale q.kr for all keys, lse = s + ln n, o = mean V.
            // Scores near +-200 also check that the max is subtracted before exp.
            for (int sign = -1; sign <= 1; sign += 2) {
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < hd; i++) kv_set(&k, 0, j, i, i == 0 ? 2.0f : 0.0f);
                for (int64_t i = 0; i < n_q * hd; i++) q[i] = rand_normal();
                // s = scale * q[0] * 2 = +-(200 + 4h)
                for (int64_t h = 0; h < n_q; h++) q[h * hd] = (float)sign * (50.0f + (float)h);
                float scale = 2.0f;
                o = out_new(n_q * hd);
                lse = out_new(n_q);
                be->attn_decode(inst(be), o, lse, q, &kvk, &kvv, n, n_q, n_kv, hd, scale);
                for (int64_t h = 0; h < n_q; h++) lse_want[h] = (float)((double)scale * 2.0 * q[h * hd] + log((double)n));
                snprintf(what, sizeof what, "%s equal keys s=%+d %s n=%lld: o = mean V", be->name, 200 * sign, kv_name(elem),
                         (long long)n);
                compare(ST_SPEC, what, o, mean, n_q * hd, TOL_ATTN, NULL);
                snprintf(what, sizeof what, "%s equal keys %s n=%lld: lse = s + ln n", be->name, kv_name(elem), (long long)n);
                compare(ST_SPEC, what, lse, lse_want, n_q, TOL_LSE, NULL);
                free(o); free(lse);
            }

            // (c) one key far above the rest (scores 0 and 300): o = that key's value row, lse = 300.
            int64_t star = n / 2;
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < hd; i++) kv_set(&k, 0, j, i, j == star && i == 1 ? 1.0f : 0.0f);
            for (int64_t i = 0; i < n_q * hd; i++) q[i] = (i % hd == 1) ? 300.0f : rand_normal();
            o = out_new(n_q * hd);
            lse = out_new(n_q);
            be->attn_decode(inst(be), o, lse, q, &kvk, &kvv, n, n_q, n_kv, hd, 1.0f);
            float *vstar = floats_new(n_q * hd);
            for (int64_t h = 0; h < n_q; h++) {
                lse_want[h] = (float)(300.0 + log1p((double)(n - 1) * exp(-300.0)));
                for (int64_t i = 0; i < hd; i++) vstar[h * hd + i] = (float)kv_val(&v, 0, star, i);
            }
            snprintf(what, sizeof what, "%s one dominant key %s n=%lld: o = v*", be->name, kv_name(elem), (long long)n);
            compare(ST_SPEC, what, o, vstar, n_q * hd, TOL_ATTN, NULL);
            snprintf(what, sizeof what, "%s one dominant key %s n=%lld: lse = 300", be->name, kv_name(elem), (long long)n);
            compare(ST_SPEC, what, lse, lse_want, n_q, TOL_LSE, NULL);
            // A single key: o is its value row exactly (its weight is exp(0) / exp(0) = 1).
            if (n == 1) CHECK_MSG(same_bits(o, vstar, n_q * hd), "%s n=1 o == v exactly", be->name);
            free(o); free(lse); free(vstar); free(q); free(mean); free(lse_want);
            kv_free(&k); kv_free(&v);
        }

    // n_keys == 0: the empty state, o = 0 and lse = -inf.
    for (int elem = 0; elem < 2; elem++) {
        int64_t hd = 24, n_kv = 2, n_q = 6;
        test_kv k = kv_new(elem, n_kv, 0, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, 0, hd, -1.0f, 1.0f);
        kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
        float *q = normal_new(n_q * hd, 1.0f), *o = out_new(n_q * hd), *lse = out_new(n_q);
        be->attn_decode(inst(be), o, lse, q, &kvk, &kvv, 0, n_q, n_kv, hd, 0.2f);
        int ok = 1;
        for (int64_t i = 0; i < n_q * hd; i++) ok &= f32_bits(o[i]) == 0;  // +0.0
        for (int64_t h = 0; h < n_q; h++) ok &= lse[h] == -INFINITY;
        CHECK_MSG(ok, "%s n_keys=0 %s: o = +0, lse = -inf", be->name, kv_name(elem));
        CHECK(guard_intact(o, n_q * hd) && guard_intact(lse, n_q));
        free(q); free(o); free(lse);
        kv_free(&k); kv_free(&v);
    }

    // Prefill with q = 0: token t has o = mean of V rows 0..pos0+t and lse = ln(pos0+t+1),
    // across the 256-key tile boundary.
    for (int elem = 0; elem < 2; elem++) {
        int64_t hd = 8, n_kv = 1, n_q = 2, n_tok = 12, pos0 = 250, n_keys = pos0 + n_tok;
        test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
        kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
        float *q = floats_new(n_tok * n_q * hd);
        for (int64_t i = 0; i < n_tok * n_q * hd; i++) q[i] = 0.0f;
        float *want = floats_new(n_tok * n_q * hd), *lwant = floats_new(n_tok * n_q);
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t h = 0; h < n_q; h++) {
                lwant[t * n_q + h] = (float)log((double)(pos0 + t + 1));
                for (int64_t i = 0; i < hd; i++) {
                    double s = 0.0;
                    for (int64_t j = 0; j <= pos0 + t; j++) s += kv_val(&v, 0, j, i);
                    want[(t * n_q + h) * hd + i] = (float)(s / (double)(pos0 + t + 1));
                }
            }
        float *o = out_new(n_tok * n_q * hd), *lse = out_new(n_tok * n_q);
        be->attn_prefill(inst(be), o, lse, q, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, 0.125f);
        snprintf(what, sizeof what, "%s prefill q=0 %s: o = causal mean V", be->name, kv_name(elem));
        compare(ST_SPEC, what, o, want, n_tok * n_q * hd, TOL_ATTN, NULL);
        snprintf(what, sizeof what, "%s prefill q=0 %s: lse = ln(pos+1)", be->name, kv_name(elem));
        compare(ST_SPEC, what, lse, lwant, n_tok * n_q, TOL_LSE, NULL);
        CHECK(guard_intact(o, n_tok * n_q * hd) && guard_intact(lse, n_tok * n_q));
        free(q); free(o); free(lse); free(want); free(lwant);
        kv_free(&k); kv_free(&v);
    }
}

// ======================================================================
// 1b. The quantized KV formats (q8_0, q4_0): layout, quantizer, closed forms
// ======================================================================

static const int BLOCK_KV[2] = {KV_Q8_0, KV_Q4_0};

// kv_bytes / kv_row_bytes / kv_row_at against byte offsets written out here,
// on head strides of an odd number of elements (float formats) or blocks.
static void test_kv_row_bytes(void) {
    CHECK(kv_bytes(KV_Q8_0, 32) == 34 && kv_bytes(KV_Q4_0, 32) == 18);
    CHECK(kv_bytes(KV_F16, 7) == 14 && kv_bytes(KV_F32, 7) == 28);
    CHECK(kv_row_bytes(KV_Q8_0, 64) == 68 && kv_row_bytes(KV_Q4_0, 96) == 54 && kv_row_bytes(KV_F16, 64) == 128);
    static uint8_t buf[1];
    for (int elem = 0; elem < 4; elem++)
        for (int64_t hd = 32; hd <= 96; hd += 64) {
            const int64_t stride = is_block_kv(elem) ? 7 * 32 + 3 * hd : 3 * hd + 5;  // odd in blocks / elements
            const kv_view kv = {buf, elem, stride};
            int ok = 1;
            for (int64_t h = 0; h < 3; h++)
                for (int64_t p = 0; p < 5; p++) {
                    size_t want;
                    if (elem == KV_Q8_0) want = (size_t)(h * stride / 32 + p * hd / 32) * 34;
                    else if (elem == KV_Q4_0) want = (size_t)(h * stride / 32 + p * hd / 32) * 18;
                    else want = (size_t)(h * stride + p * hd) * (elem == KV_F16 ? 2 : 4);
                    ok &= kv_row_at(&kv, h, p, hd) == buf + want;
                }
            CHECK_MSG(ok, "kv_row_at %s hd=%lld stride=%lld", kv_name(elem), (long long)hd, (long long)stride);
        }
    // Names, and the head_dim the block formats need.
    rc_err err;
    for (int elem = 0; elem < 4; elem++) CHECK(kv_elem_parse(kv_elem_name(elem)) == elem);
    CHECK(kv_elem_parse("q5_0") == -1 && kv_elem_parse("Q8_0") == -1);
    CHECK(kv_elem_check(KV_F16, 48, &err) == 0 && kv_elem_check(KV_Q8_0, 64, &err) == 0);
    CHECK(kv_elem_check(KV_Q4_0, 48, &err) != 0 && strstr(err.msg, "multiple of 32"));
    CHECK(kv_elem_check(KV_Q8_0, 16, &err) != 0);
}

// The library's quantizers (model/quant.c) give the reference quantizer's
// bytes (tests/support/quantize_ref.c, written from GGML's
// quantize_row_q*_0_ref), hand-picked ties round as GGML rounds, and every
// element comes back within d/2 (q4_0's one clipped extreme: within d), plus
// what storing d in fp16 adds.
static void test_kv_quantizer(void) {
    const int64_t n = 32 * 40;
    float *x = floats_new(n);
    uint8_t *a = malloc(kv_bytes(KV_Q8_0, n)), *b = malloc(kv_bytes(KV_Q8_0, n));
    for (int64_t i = 0; i < n; i++) {
        const int64_t blk = i / 32;
        const float scale = blk % 5 == 0 ? 1e-3f : blk % 5 == 1 ? 30.0f : 1.0f;
        x[i] = blk == 3 ? 0.0f : blk == 4 ? 0.5f : scale * rand_normal();  // a zero block (d = 0), a constant one
    }
    for (int t = 0; t < 2; t++) {
        const int elem = BLOCK_KV[t];
        const size_t nb = kv_bytes(elem, n);
        memset(a, 0x11, nb);
        memset(b, 0x22, nb);
        if (elem == KV_Q8_0) {
            quantize_row_q8_0(x, (block_q8_0 *)a, n);
            qref_quantize_row_q8_0(x, (block_q8_0 *)b, n);
        } else {
            quantize_row_q4_0(x, (block_q4_0 *)a, n);
            qref_quantize_row_q4_0(x, (block_q4_0 *)b, n);
        }
        CHECK_MSG(memcmp(a, b, nb) == 0, "%s: library quantizer == reference quantizer", kv_name(elem));
        int64_t bad = 0;
        for (int64_t blk = 0; blk < n / 32; blk++) {
            const float *xb = x + blk * 32;
            double amax = 0.0, mx = 0.0;
            for (int j = 0; j < 32; j++)
                if (fabs(xb[j]) > amax) amax = fabs(xb[j]), mx = xb[j];
            const double d32 = elem == KV_Q8_0 ? amax / 127.0 : mx / -8.0;
            const double d16 = qref_fp16_to_fp32(load_u16(a + blk * kv_bytes(elem, 32)));
            for (int j = 0; j < 32; j++) {
                const double got = naive_kv_block(elem, a + blk * kv_bytes(elem, 32), j);
                const int clipped = elem == KV_Q4_0 && d32 != 0.0 && xb[j] / d32 + 8.5 >= 16.0;
                const double bound = (clipped ? fabs(d32) : fabs(d32) / 2) +
                                     (elem == KV_Q8_0 ? 127.0 : 8.0) * fabs(d32 - d16) + 1e-6 * fabs(d32);
                bad += !(fabs(got - xb[j]) <= bound);
            }
        }
        CHECK_MSG(bad == 0, "%s: %lld elements beyond d/2 after quantize -> dequantize", kv_name(elem), (long long)bad);
    }
    // Ties, with d = 1 exactly: q8_0 (amax 127) rounds half away from zero;
    // q4_0 (extreme -8) rounds half up, and +8 (the extreme's opposite) clips to 7.
    float t8[32] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 126.5f}, t4[32] = {-8.0f, 2.5f, -2.5f, 0.5f, -0.5f, 8.0f, 7.4f};
    quantize_row_q8_0(t8, (block_q8_0 *)a, 32);
    quantize_row_q4_0(t4, (block_q4_0 *)b, 32);
    const double w8[6] = {127, 3, -3, 1, -1, 127}, w4[7] = {-8, 3, -2, 1, 0, 7, 7};
    int ok = load_u16(a) == 0x3c00 && load_u16(b) == 0x3c00;  // d = 1.0
    for (int j = 0; j < 6; j++) ok &= naive_kv_block(KV_Q8_0, a, j) == w8[j];
    for (int j = 0; j < 7; j++) ok &= naive_kv_block(KV_Q4_0, b, j) == w4[j];
    CHECK_MSG(ok, "q8_0 / q4_0 rounding of ties and the clipped extreme");
    free(x); free(a); free(b);
}

// Hand-built blocks whose values are known: q8_0 d = 0.5, q = j - 16, then
// d = -2, q = 3j - 40; q4_0 d = 0.25 with low nibble j and high nibble 15 - j
// (elements j < 16: (j - 8) / 4, elements 16 + j: (7 - j) / 4), then d = -1.
static void hand_row(int elem, uint8_t *row, double *vals) {
    if (elem == KV_Q8_0) {
        const uint16_t d[2] = {0x3800, 0xc000};  // 0.5, -2
        for (int b = 0; b < 2; b++) {
            memcpy(row + b * 34, &d[b], 2);
            for (int j = 0; j < 32; j++) {
                const int q = b ? 3 * j - 40 : j - 16;
                row[b * 34 + 2 + j] = (uint8_t)(int8_t)q;
                vals[b * 32 + j] = (b ? -2.0 : 0.5) * q;
            }
        }
    } else {
        const uint16_t d[2] = {0x3400, 0xbc00};  // 0.25, -1
        for (int b = 0; b < 2; b++) {
            memcpy(row + b * 18, &d[b], 2);
            for (int j = 0; j < 16; j++) {
                row[b * 18 + 2 + j] = (uint8_t)(j | ((15 - j) << 4));
                vals[b * 32 + j] = (b ? -1.0 : 0.25) * (j - 8);
                vals[b * 32 + 16 + j] = (b ? -1.0 : 0.25) * (7 - j);
            }
        }
    }
}

static void test_kv_block_closed_forms(void) {
    const int64_t hd = 64, n_q = 2;
    char what[160];
    for (int t = 0; t < 2; t++) {
        const int elem = BLOCK_KV[t];
        const size_t rb = kv_row_bytes(elem, hd);
        uint8_t row[68];
        double vals[64];
        hand_row(elem, row, vals);
        float dec[64];
        kv_decode_row(elem, row, dec, hd);
        int ok = 1;
        for (int64_t i = 0; i < hd; i++) ok &= dec[i] == vals[i] && kv_decode_at(elem, row, i) == vals[i];
        CHECK_MSG(ok, "%s: hand-built blocks decode to their closed form", kv_name(elem));
        // Through the attention ops of both backends. One key: o = its value
        // row exactly; one-hot queries: the raw score is scale * that element.
        // Three keys (the row, its negation... here the row at three slots
        // scaled by the same d) with q = 0: o = mean of V = the row, lse = ln 3.
        uint8_t *cache = malloc(3 * rb);
        for (int p = 0; p < 3; p++) memcpy(cache + p * rb, row, rb);
        const kv_view kv = {cache, elem, 3 * hd};
        for (int bi = 0; bi < 2; bi++) {
            const backend_ops *be = BOTH[bi];
            float *q = floats_new(n_q * hd), *o = out_new(n_q * hd), *lse = out_new(n_q), *sc = out_new(n_q * 1);
            for (int64_t i = 0; i < n_q * hd; i++) q[i] = 0.0f;
            q[5] = 1.0f;            // head 0 picks element 5
            q[hd + 40] = 1.0f;      // head 1 picks element 40
            be->attn_decode_scores(inst(be), o, lse, sc, q, &kv, &kv, 1, n_q, 1, hd, 0.5f);
            ok = sc[0] == (float)(0.5 * vals[5]) && sc[1] == (float)(0.5 * vals[40]);
            ok &= lse[0] == sc[0] && lse[1] == sc[1];
            for (int64_t i = 0; i < hd; i++) ok &= o[i] == (float)vals[i] && o[hd + i] == (float)vals[i];
            snprintf(what, sizeof what, "%s %s one hand-built key: scores, lse and o in closed form", be->name,
                     kv_name(elem));
            CHECK_MSG(ok && guard_intact(o, n_q * hd) && guard_intact(sc, n_q), "%s", what);
            for (int64_t i = 0; i < n_q * hd; i++) q[i] = 0.0f;
            free(o); free(lse);
            o = out_new(n_q * hd);
            lse = out_new(n_q);
            be->attn_decode(inst(be), o, lse, q, &kv, &kv, 3, n_q, 1, hd, 0.5f);
            float want[128], lwant[2] = {(float)log(3.0), (float)log(3.0)};
            for (int64_t i = 0; i < n_q * hd; i++) want[i] = (float)vals[i % hd];
            snprintf(what, sizeof what, "%s %s q=0 over 3 hand-built keys: o = the row, lse = ln 3", be->name, kv_name(elem));
            compare(ST_SPEC, what, o, want, n_q * hd, TOL_ATTN, NULL);
            compare(ST_SPEC, what, lse, lwant, n_q, TOL_LSE, NULL);
            free(q); free(o); free(lse); free(sc);
        }
        free(cache);
    }
}

// cpu_ref on quantized caches against the naive double attention over the
// values decoded by this file's own block decoder.
static void test_spec_attention_blocks(void) {
    static const int64_t ns[] = {1, 7, 33, 300};
    char what[200];
    for (int t = 0; t < 2; t++)
        for (int64_t hd = 32; hd <= 64; hd += 32)
            for (size_t c = 0; c < sizeof(ns) / sizeof(ns[0]); c++) {
                const int elem = BLOCK_KV[t];
                const int64_t n = ns[c], n_kv = 2, group = 3, n_q = n_kv * group;
                const double scale = 1.0 / sqrt((double)hd);
                test_kv k = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n, hd, -1.0f, 1.0f);
                float *q = normal_new(n_q * hd, 1.5f);
                double *on = malloc((size_t)(n_q * hd) * sizeof(double)), *ln = malloc((size_t)n_q * sizeof(double));
                for (int64_t h = 0; h < n_q; h++) naive_attention(on + h * hd, &ln[h], q + h * hd, &k, &v, h / group, n, scale);
                float *o = out_new(n_q * hd), *lse = out_new(n_q);
                kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
                backend_cpu_ref.attn_decode(&g_ref, o, lse, q, &kvk, &kvv, n, n_q, n_kv, hd, (float)scale);
                float *onf = to_floats(on, n_q * hd), *lnf = to_floats(ln, n_q);
                snprintf(what, sizeof what, "spec decode %s hd=%lld n=%lld", kv_name(elem), (long long)hd, (long long)n);
                compare(ST_SPEC, what, o, onf, n_q * hd, TOL_SPEC, NULL);
                compare(ST_SPEC, what, lse, lnf, n_q, TOL_SPEC, NULL);
                CHECK(guard_intact(o, n_q * hd) && guard_intact(lse, n_q));
                // Causal prefill of the last min(n, 5) positions: each sees keys 0..its position.
                const int64_t n_tok = n < 5 ? n : 5, pos0 = n - n_tok;
                float *qp = normal_new(n_tok * n_q * hd, 1.5f), *op = out_new(n_tok * n_q * hd), *lp = out_new(n_tok * n_q);
                double *opn = malloc((size_t)(n_tok * n_q * hd) * sizeof(double)), *lpn = malloc((size_t)(n_tok * n_q) * sizeof(double));
                for (int64_t tt = 0; tt < n_tok; tt++)
                    for (int64_t h = 0; h < n_q; h++)
                        naive_attention(opn + (tt * n_q + h) * hd, &lpn[tt * n_q + h], qp + (tt * n_q + h) * hd, &k, &v,
                                        h / group, pos0 + tt + 1, scale);
                backend_cpu_ref.attn_prefill(&g_ref, op, lp, qp, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, (float)scale);
                float *opf = to_floats(opn, n_tok * n_q * hd), *lpf = to_floats(lpn, n_tok * n_q);
                snprintf(what, sizeof what, "spec prefill %s hd=%lld n=%lld", kv_name(elem), (long long)hd, (long long)n);
                compare(ST_SPEC, what, op, opf, n_tok * n_q * hd, TOL_SPEC, NULL);
                compare(ST_SPEC, what, lp, lpf, n_tok * n_q, TOL_SPEC, NULL);
                free(qp); free(op); free(lp); free(opn); free(lpn); free(opf); free(lpf);
                free(o); free(lse); free(onf); free(lnf); free(on); free(ln); free(q);
                kv_free(&k); kv_free(&v);
            }
}

static void test_spec_rmsnorm_swiglu(void) {
    const backend_ops *ref = &backend_cpu_ref;
    char what[160];
    static const int64_t ns[] = {1, 7, 33, 576};
    for (size_t c = 0; c < sizeof(ns) / sizeof(ns[0]); c++) {
        int64_t n = ns[c], n_rows = 3;
        float eps = 1e-5f;
        float *x = normal_new(n_rows * n, 2.0f), *w = normal_new(n, 1.0f), *out = out_new(n_rows * n);
        double *want = malloc((size_t)(n_rows * n) * sizeof(double));
        for (int64_t r = 0; r < n_rows; r++) {
            double ss = 0.0;
            for (int64_t i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
            double rms = sqrt(ss / (double)n + (double)eps);
            for (int64_t i = 0; i < n; i++) want[r * n + i] = (double)x[r * n + i] / rms * w[i];
        }
        ref->rmsnorm(&g_ref, out, x, w, n_rows, n, eps);
        float *wf = to_floats(want, n_rows * n);
        snprintf(what, sizeof what, "spec rmsnorm n=%lld", (long long)n);
        compare(ST_SPEC, what, out, wf, n_rows * n, TOL_SPEC, NULL);
        CHECK(guard_intact(out, n_rows * n));
        free(x); free(w); free(out); free(want); free(wf);
    }
    // A constant row c with eps = 0 and w = 1 normalizes to sign(c).
    for (int b = 0; b < 2; b++) {
        const backend_ops *be = b ? &backend_cpu : &backend_cpu_ref;
        int64_t n = 37;
        float x[37], w[37], *out = out_new(n), want[37];
        for (int64_t i = 0; i < n; i++) {
            x[i] = -3.7f;
            w[i] = 1.0f;
            want[i] = -1.0f;
        }
        be->rmsnorm(inst(be), out, x, w, 1, n, 0.0f);
        snprintf(what, sizeof what, "%s rmsnorm constant row", be->name);
        compare(ST_SPEC, what, out, want, n, TOL_SPEC, NULL);
        free(out);
    }

    // swiglu = silu(g) * u, silu(g) = g / (1 + e^-g); silu(0) = 0.
    {
        static const float specials[] = {0.0f, 1e-3f, -1e-3f, 1.0f, -1.0f, 10.0f, -10.0f, 30.0f, -30.0f, 87.0f, -87.0f, 100.0f, -100.0f};
        int64_t n = 200;
        float *g = normal_new(n, 3.0f), *u = normal_new(n, 1.0f), *out = out_new(n);
        for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) g[i] = specials[i];
        double *want = malloc((size_t)n * sizeof(double));
        for (int64_t i = 0; i < n; i++) want[i] = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        ref->swiglu(&g_ref, out, g, u, n);
        float *wf = to_floats(want, n);
        compare(ST_SPEC, "spec swiglu", out, wf, n, TOL_SPEC, NULL);
        CHECK(out[0] == 0.0f);
        CHECK(guard_intact(out, n));
        free(g); free(u); free(out); free(want); free(wf);
    }
}

// The rope map is linear per position, so its matrix, read column by column
// from basis vectors, specifies it completely: pair (a, b) rotates by
// theta_i = pos * inv_freq[i] as [c -s; s c], with (a, b) = (i, i + rot/2)
// for neox and (2i, 2i+1) for adjacent pairs; dims >= rot_dim pass through.
static void test_rope_matrix(const backend_ops *be) {
    char what[160];
    const int64_t hd = 16, rot = 12, half = rot / 2;
    float inv_freq[6];
    rope_freqs(inv_freq, rot, 10000.0);
    static const int64_t positions[] = {0, 1, 7, 1000, 123457};
    for (int neox = 0; neox <= 1; neox++) {
        rope_table rt = {inv_freq, rot, neox};
        for (size_t pi = 0; pi < sizeof(positions) / sizeof(positions[0]); pi++) {
            // hd basis vectors as hd tokens (each one head), all at the same position.
            int64_t n_tok = hd, pos[16];
            float *x = out_new(n_tok * hd);
            for (int64_t t = 0; t < n_tok; t++) {
                pos[t] = positions[pi];
                for (int64_t i = 0; i < hd; i++) x[t * hd + i] = i == t ? 1.0f : 0.0f;
            }
            float want[16 * 16];
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t i = 0; i < hd; i++) want[t * hd + i] = i == t ? 1.0f : 0.0f;  // identity outside rot
            for (int64_t i = 0; i < half; i++) {
                int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                double th = (double)positions[pi] * inv_freq[i];
                // column a (input e_a) -> (c, s) at (a, b); column b (input e_b) -> (-s, c)
                want[a * hd + a] = (float)cos(th);
                want[a * hd + b] = (float)sin(th);
                want[b * hd + a] = (float)-sin(th);
                want[b * hd + b] = (float)cos(th);
            }
            be->rope(inst(be), x, n_tok, 1, hd, pos, &rt);
            snprintf(what, sizeof what, "%s rope matrix neox=%d pos=%lld", be->name, neox, (long long)positions[pi]);
            compare(ST_SPEC, what, x, want, n_tok * hd, (tol){1e-12, 1e-7, 1e-6}, NULL);
            CHECK(guard_intact(x, n_tok * hd));
            free(x);
        }
    }
}

static void test_rope_properties(const backend_ops *be) {
    char what[160];
    const int64_t n_tok = 9, n_heads = 3, hd = 64;
    float inv_freq[32];
    static const int64_t rots[] = {64, 32};
    for (size_t ri = 0; ri < 2; ri++)
        for (int neox = 0; neox <= 1; neox++) {
            int64_t rot = rots[ri], half = rot / 2;
            rope_freqs(inv_freq, rot, neox ? 1000000.0 : 10000.0);
            rope_table rt = {inv_freq, rot, neox};
            int64_t pos[9] = {0, 1, 2, 3, 100, 255, 256, 4095, 131071}, neg[9];
            for (int t = 0; t < 9; t++) neg[t] = -pos[t];
            int64_t n = n_tok * n_heads * hd;
            float *x0 = normal_new(n, 1.0f), *x = out_new(n);
            memcpy(x, x0, (size_t)n * sizeof(float));
            be->rope(inst(be), x, n_tok, n_heads, hd, pos, &rt);
            CHECK(guard_intact(x, n) && all_finite(x, n));
            // pos 0 (token 0) is the identity, bitwise; dims >= rot_dim are untouched everywhere.
            CHECK_MSG(same_bits(x, x0, n_heads * hd), "%s rope pos 0 is identity (neox=%d rot=%lld)", be->name, neox,
                      (long long)rot);
            int untouched = 1, norms = 1;
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t h = 0; h < n_heads; h++) {
                    const float *a0 = x0 + (t * n_heads + h) * hd, *a1 = x + (t * n_heads + h) * hd;
                    for (int64_t i = rot; i < hd; i++) untouched &= f32_bits(a0[i]) == f32_bits(a1[i]);
                    // each rotated pair keeps its length
                    for (int64_t i = 0; i < half; i++) {
                        int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                        double r0 = hypot(a0[a], a0[b]), r1 = hypot(a1[a], a1[b]);
                        norms &= fabs(r1 - r0) <= 1e-6 + 1e-6 * r0;
                    }
                }
            CHECK_MSG(untouched, "%s rope leaves dims >= rot_dim alone (neox=%d)", be->name, neox);
            CHECK_MSG(norms, "%s rope keeps each pair's norm (neox=%d rot=%lld)", be->name, neox, (long long)rot);
            // Rotating back by -pos returns the input.
            be->rope(inst(be), x, n_tok, n_heads, hd, neg, &rt);
            snprintf(what, sizeof what, "%s rope pos then -pos (neox=%d rot=%lld)", be->name, neox, (long long)rot);
            compare(ST_SPEC, what, x, x0, n, (tol){1e-12, 2e-6, 2e-6}, NULL);
            free(x0); free(x);
        }
    // The two pairings are different maps (a test that mixed them up would otherwise pass).
    {
        int64_t rot = 8;
        rope_freqs(inv_freq, rot, 10000.0);
        rope_table ra = {inv_freq, rot, 0}, rn = {inv_freq, rot, 1};
        float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        int64_t pos = 3;
        be->rope(inst(be), a, 1, 1, 8, &pos, &ra);
        be->rope(inst(be), b, 1, 1, 8, &pos, &rn);
        CHECK(!same_bits(a, b, 8));
    }
}

static void test_spec_matmul(void) {
    char what[160];
    for (int ti = 0; ti < N_CPU_WEIGHT_TYPES + N_KQUANT_TYPES; ti++) {
        int kq = ti >= N_CPU_WEIGHT_TYPES;
        uint32_t type = kq ? KQUANT_TYPES[ti - N_CPU_WEIGHT_TYPES] : CPU_WEIGHT_TYPES[ti];
        static const int64_t n_ins[] = {96, 576}, n_ins_k[] = {256, 768};
        for (size_t a = 0; a < 2; a++) {
            int64_t n_in = kq ? n_ins_k[a] : n_ins[a], n_out = 7, n_tok = 3;
            test_weight tw = weight_new(type, n_in, n_out, 0);
            float *x = normal_new(n_tok * n_in, 1.0f), *out = out_new(n_tok * n_out);
            double *want = malloc((size_t)(n_tok * n_out) * sizeof(double)), *abs_sum = malloc((size_t)(n_tok * n_out) * sizeof(double));
            naive_matmul(want, abs_sum, x, &tw.w, n_tok);
            backend_cpu_ref.matmul(&g_ref, out, x, &tw.w, n_tok);
            // ref rounds each dequantized weight to float (Q4_1's d q + m) and the sum once:
            // at most ~1 ulp of each term plus 1 ulp of the result.
            double *atol = malloc((size_t)(n_tok * n_out) * sizeof(double));
            for (int64_t i = 0; i < n_tok * n_out; i++) atol[i] = 2.0 * FLT_EPSILON * abs_sum[i] + 1e-30;
            float *wf = to_floats(want, n_tok * n_out);
            snprintf(what, sizeof what, "spec matmul %s n_in=%lld", ggml_type_name(type), (long long)n_in);
            compare(ST_SPEC, what, out, wf, n_tok * n_out, (tol){1e-12, 0.0, 2.0 * FLT_EPSILON}, atol);
            CHECK(guard_intact(out, n_tok * n_out));
            free(x); free(out); free(want); free(abs_sum); free(atol); free(wf);
            weight_free(&tw);
        }
    }
}

// ======================================================================
// 2. The fast backend against cpu_ref, op by op
// ======================================================================

static void test_supports(void) {
    const backend_ops *bes[2] = {&backend_cpu_ref, &backend_cpu};
    for (int b = 0; b < 2; b++) {
        for (int ti = 0; ti < N_CPU_WEIGHT_TYPES; ti++)
            CHECK_MSG(bes[b]->supports(OP_MATMUL, CPU_WEIGHT_TYPES[ti]), "%s supports matmul %s", bes[b]->name,
                      ggml_type_name(CPU_WEIGHT_TYPES[ti]));
        for (int ti = 0; ti < N_KQUANT_TYPES; ti++) CHECK(bes[b]->supports(OP_MATMUL, KQUANT_TYPES[ti]));
        CHECK(!bes[b]->supports(OP_MATMUL, GGML_TYPE_Q3_K));
        CHECK(!bes[b]->supports(OP_MATMUL, GGML_TYPE_Q8_K));
        CHECK(!bes[b]->supports(OP_MATMUL, 4));  // an id ggml never defined
        for (int op = 0; op < OP_COUNT; op++)
            if (op != OP_MATMUL) CHECK(bes[b]->supports(op, GGML_TYPE_F32));
    }
}

static void matmul_case(const test_weight *tw, int64_t n_tok, const char *label) {
    const weight *w = &tw->w;
    int64_t n_out = w->n_out, n_in = w->n_in;
    char what[200];
    float *x = normal_new(n_tok * n_in, 1.0f);
    float *x_copy = floats_new(n_tok * n_in);
    memcpy(x_copy, x, (size_t)(n_tok * n_in) * sizeof(float));
    float *ref = out_new(n_tok * n_out), *got = out_new(n_tok * n_out);
    backend_cpu_ref.matmul(&g_ref, ref, x, w, n_tok);
    backend_cpu.matmul(&g_cpu, got, x, w, n_tok);
    // Per-element bound from sum_k |w_ok x_k| (the dot product's condition).
    double *atol = malloc((size_t)(n_tok * n_out) * sizeof(double));
    float *row = floats_new(n_in);
    for (int64_t o = 0; o < n_out; o++) {
        dequantize_row(w->type, (const uint8_t *)w->data + (size_t)o * w->row_bytes, row, n_in);
        for (int64_t t = 0; t < n_tok; t++) {
            double a = 0.0;
            for (int64_t i = 0; i < n_in; i++) a += fabs((double)row[i] * x[t * n_in + i]);
            atol[t * n_out + o] = MATMUL_ABS_REL * a + 1e-30;
        }
    }
    snprintf(what, sizeof what, "matmul %s n_in=%lld n_out=%lld n_tok=%lld%s", ggml_type_name(w->type), (long long)n_in,
             (long long)n_out, (long long)n_tok, label);
    compare(ST_MATMUL, what, got, ref, n_tok * n_out, (tol){1e-7, 0.0, 1e-5}, atol);
    CHECK_MSG(guard_intact(got, n_tok * n_out) && guard_intact(ref, n_tok * n_out), "%s: guard", what);
    CHECK_MSG(same_bits(x, x_copy, n_tok * n_in), "%s: input unchanged", what);
    free(x); free(x_copy); free(ref); free(got); free(atol); free(row);
}

static void test_matmul_vs_ref(void) {
    static const int64_t n_ins[] = {32, 64, 96, 576};
    static const int64_t n_ins_float[] = {1, 7, 33, 100};  // plain float rows need not be whole blocks
    static const int64_t n_outs[] = {1, 7, 33, 100};
    static const int64_t n_toks[] = {1, 2, 3, 4, 7, 33};  // < 4: matvec per token; >= 4: dequantize + SGEMM
    for (int ti = 0; ti < N_CPU_WEIGHT_TYPES; ti++) {
        uint32_t type = CPU_WEIGHT_TYPES[ti];
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1 && !is_float_type(type)) break;
            const int64_t *ins = pass ? n_ins_float : n_ins;
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) {
                    test_weight tw = weight_new(type, ins[a], n_outs[b], 0);
                    for (int c = 0; c < 6; c++) matmul_case(&tw, n_toks[c], "");
                    weight_free(&tw);
                }
        }
    }
    // K-quants: rows of 1, 2 and 6 super-blocks (SmolLM2's FFN width is 1536).
    static const int64_t n_ins_k[] = {256, 512, 1536};
    for (int ti = 0; ti < N_KQUANT_TYPES; ti++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 4; b++) {
                test_weight tw = weight_new(KQUANT_TYPES[ti], n_ins_k[a], n_outs[b], 0);
                for (int c = 0; c < 6; c++) matmul_case(&tw, n_toks[c], "");
                weight_free(&tw);
            }
    // Rows spaced by row_bytes larger than the packed row (the padding is NaN for float types).
    {
        test_weight tw = weight_new(GGML_TYPE_F32, 33, 9, 12);
        matmul_case(&tw, 1, " padded rows");
        matmul_case(&tw, 5, " padded rows");
        weight_free(&tw);
        tw = weight_new(GGML_TYPE_Q8_0, 64, 9, 4);
        matmul_case(&tw, 2, " padded rows");
        matmul_case(&tw, 5, " padded rows");
        weight_free(&tw);
        tw = weight_new(GGML_TYPE_Q6_K, 512, 9, 6);
        matmul_case(&tw, 1, " padded rows");
        matmul_case(&tw, 5, " padded rows");
        weight_free(&tw);
    }
    // The GEMM path dequantizes 8 Mi weights per chunk: 262144 inputs give
    // 32-row chunks, so 33 rows end with a one-row chunk.
    {
        test_weight tw = weight_new(GGML_TYPE_Q4_0, 262144, 33, 0);
        matmul_case(&tw, 1, " (long rows)");
        matmul_case(&tw, 5, " (two GEMM chunks)");
        weight_free(&tw);
    }
}

static void test_rmsnorm_vs_ref(void) {
    char what[160];
    static const int64_t ns[] = {1, 7, 33, 576, 4096};
    static const float scales[] = {1.0f, 1e3f, 1e-3f};
    static const float epss[] = {1e-5f, 1e-6f};
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 3; b++)
            for (size_t e = 0; e < 2; e++) {
                int64_t n = ns[a], n_rows = 3;
                float *x = normal_new(n_rows * n, scales[b]), *w = normal_new(n, 1.0f);
                float *ref = out_new(n_rows * n), *got = out_new(n_rows * n);
                backend_cpu_ref.rmsnorm(&g_ref, ref, x, w, n_rows, n, epss[e]);
                backend_cpu.rmsnorm(&g_cpu, got, x, w, n_rows, n, epss[e]);
                snprintf(what, sizeof what, "rmsnorm n=%lld scale=%g eps=%g", (long long)n, (double)scales[b], (double)epss[e]);
                compare(ST_RMSNORM, what, got, ref, n_rows * n, TOL_FP32, NULL);
                CHECK(guard_intact(got, n_rows * n));
                free(x); free(w); free(ref); free(got);
            }
}

static void test_swiglu_vs_ref(void) {
    char what[160];
    static const int64_t ns[] = {1, 7, 8, 9, 33, 1000};
    static const float specials[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 10.0f, -10.0f, 20.0f, -20.0f, 50.0f, -50.0f,
                                     87.0f, -87.0f, 88.0f, -88.0f, 89.0f, -89.0f, 100.0f, -100.0f, 1000.0f, -1000.0f};
    for (size_t a = 0; a < 6; a++) {
        int64_t n = ns[a];
        float *g = normal_new(n, 3.0f), *u = normal_new(n, 1.0f);
        if (n == 1000)
            for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
                g[3 * i] = specials[i];  // spread over SIMD lanes
                if (i % 4 == 0) u[3 * i] = 0.0f;
            }
        float *ref = out_new(n), *got = out_new(n);
        backend_cpu_ref.swiglu(&g_ref, ref, g, u, n);
        backend_cpu.swiglu(&g_cpu, got, g, u, n);
        snprintf(what, sizeof what, "swiglu n=%lld", (long long)n);
        // atol 1e-30: for g < -88 the fast exp clamps e^-g, giving ~1e-36 where the
        // true value underflows to ~0; harmless and far below any signal.
        compare(ST_SWIGLU, what, got, ref, n, (tol){1e-7, 1e-30, 2e-6}, NULL);
        CHECK(guard_intact(got, n));
        free(g); free(u); free(ref); free(got);
    }
}

static void test_rope_vs_ref(void) {
    char what[160];
    float inv_freq[64];
    static const int64_t hds[] = {64, 128, 24};
    for (int neox = 0; neox <= 1; neox++)
        for (size_t a = 0; a < 3; a++) {
            int64_t hd = hds[a], rot = a == 1 ? 64 : hd, n_tok = 7, n_heads = 5, n = n_tok * n_heads * hd;
            rope_freqs(inv_freq, rot, neox ? 1000000.0 : 500000.0);
            rope_table rt = {inv_freq, rot, neox};
            int64_t pos[7] = {0, 1, 33, 255, 1024, 40000, 131071};
            float *x = normal_new(n, 1.0f), *ref = out_new(n), *got = out_new(n);
            memcpy(ref, x, (size_t)n * sizeof(float));
            memcpy(got, x, (size_t)n * sizeof(float));
            backend_cpu_ref.rope(&g_ref, ref, n_tok, n_heads, hd, pos, &rt);
            backend_cpu.rope(&g_cpu, got, n_tok, n_heads, hd, pos, &rt);
            snprintf(what, sizeof what, "rope neox=%d hd=%lld rot=%lld", neox, (long long)hd, (long long)rot);
            compare(ST_ROPE, what, got, ref, n, TOL_FP32, NULL);
            CHECK(guard_intact(got, n));
            free(x); free(ref); free(got);
        }
}

// One decode case on both backends; n_kv_heads KV heads, `group` q heads each.
// q_sigma 2 gives scores of a few units; 16 a peaked softmax (scores to ~+-35)
// whose smallest weights underflow in float.
static void decode_case(int elem, int64_t n_keys, int64_t n_kv, int64_t group, int64_t hd, float q_sigma) {
    char what[200];
    int64_t n_q = n_kv * group;
    float scale = 1.0f / sqrtf((float)hd);
    test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
    kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
    float *q = normal_new(n_q * hd, q_sigma), *q_copy = floats_new(n_q * hd);
    memcpy(q_copy, q, (size_t)(n_q * hd) * sizeof(float));
    float *o_ref = out_new(n_q * hd), *l_ref = out_new(n_q), *o = out_new(n_q * hd), *l = out_new(n_q);
    backend_cpu_ref.attn_decode(&g_ref, o_ref, l_ref, q, &kvk, &kvv, n_keys, n_q, n_kv, hd, scale);
    backend_cpu.attn_decode(&g_cpu, o, l, q, &kvk, &kvv, n_keys, n_q, n_kv, hd, scale);
    snprintf(what, sizeof what, "decode %s n_keys=%lld kv=%lld group=%lld hd=%lld q_sigma=%g", kv_name(elem),
             (long long)n_keys, (long long)n_kv, (long long)group, (long long)hd, (double)q_sigma);
    compare(ST_DECODE, what, o, o_ref, n_q * hd, TOL_ATTN, NULL);
    compare(ST_DECODE, what, l, l_ref, n_q, TOL_LSE, NULL);
    CHECK_MSG(guard_intact(o, n_q * hd) && guard_intact(l, n_q), "%s: guard", what);
    CHECK_MSG(guard_intact(o_ref, n_q * hd) && guard_intact(l_ref, n_q), "%s: ref guard", what);
    CHECK_MSG(same_bits(q, q_copy, n_q * hd), "%s: q unchanged", what);

    // attn_decode_scores: the same o and lse bits as attn_decode, plus every raw
    // score q_h . k_j * scale, checked against a double dot product of the stored values.
    double *s_exact = malloc((size_t)(n_q * n_keys + 1) * sizeof(double));
    for (int64_t h = 0; h < n_q; h++)
        for (int64_t j = 0; j < n_keys; j++) {
            double acc = 0.0;
            for (int64_t i = 0; i < hd; i++) acc += (double)q[h * hd + i] * k.vals[((h / group) * n_keys + j) * hd + i];
            s_exact[h * n_keys + j] = acc * scale;
        }
    const backend_ops *bes[2] = {&backend_cpu_ref, &backend_cpu};
    for (int b = 0; b < 2; b++) {
        float *o2 = out_new(n_q * hd), *l2 = out_new(n_q), *sc = out_new(n_q * n_keys);
        float *o1 = b ? o : o_ref, *l1 = b ? l : l_ref;
        bes[b]->attn_decode_scores(inst(bes[b]), o2, l2, sc, q, &kvk, &kvv, n_keys, n_q, n_kv, hd, scale);
        CHECK_MSG(same_bits(o2, o1, n_q * hd) && same_bits(l2, l1, n_q), "%s: %s scores variant, same o/lse", what,
                  bes[b]->name);
        int64_t bad = 0;
        for (int64_t i = 0; i < n_q * n_keys; i++)
            if (!(fabs(sc[i] - s_exact[i]) <= 1e-5 + 1e-5 * fabs(s_exact[i]))) bad++;
        CHECK_MSG(bad == 0, "%s: %s scores: %lld of %lld off", what, bes[b]->name, (long long)bad,
                  (long long)(n_q * n_keys));
        CHECK_MSG(guard_intact(sc, n_q * n_keys) && guard_intact(o2, n_q * hd), "%s: scores guard", what);
        free(o2); free(l2); free(sc);
    }
    free(s_exact);
    free(q); free(q_copy); free(o_ref); free(l_ref); free(o); free(l);
    kv_free(&k); kv_free(&v);
}

static void test_decode_vs_ref(void) {
    static const int64_t n_keys[] = {0, 1, 7, 33, 1023, 1024, 1025, 3000};
    static const int64_t groups[] = {1, 3, 4};
    static const int64_t hds[] = {64, 32, 24};
    for (int elem = 0; elem < 2; elem++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 8; c++) decode_case(elem, n_keys[c], 2, groups[b], hds[a], 2.0f);
    // Groups beyond the 4-head register tile, head_dim off the 8-wide path
    // (6, 2) or beyond its 256 limit (272), the widest tiled head (256).
    static const struct { int64_t n_kv, group, hd; } extra[] = {
        {1, 5, 16}, {2, 8, 64}, {1, 7, 256}, {1, 2, 272}, {3, 1, 6}, {1, 2, 2},
    };
    static const int64_t extra_keys[] = {1, 9, 1025, 2049};
    for (int elem = 0; elem < 2; elem++)
        for (size_t e = 0; e < sizeof(extra) / sizeof(extra[0]); e++)
            for (int c = 0; c < 4; c++) decode_case(elem, extra_keys[c], extra[e].n_kv, extra[e].group, extra[e].hd, 2.0f);
    // Peaked softmax across chunks.
    for (int elem = 0; elem < 2; elem++) {
        decode_case(elem, 3000, 2, 3, 64, 16.0f);
        decode_case(elem, 1025, 1, 4, 24, 16.0f);
    }
    // The block formats (head_dim a multiple of 32): every code path above
    // (chunks, the 4-head tile and beyond it, the widest head).
    for (int t = 0; t < 2; t++) {
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 8; c++) decode_case(BLOCK_KV[t], n_keys[c], 2, groups[b], c % 2 ? 64 : 32, 2.0f);
        decode_case(BLOCK_KV[t], 1025, 1, 7, 256, 2.0f);
        decode_case(BLOCK_KV[t], 2049, 2, 8, 64, 2.0f);
        decode_case(BLOCK_KV[t], 3000, 2, 3, 64, 16.0f);
        decode_case(BLOCK_KV[t], 300, 3, 3, 96, 2.0f);
    }
}

// Fast decode splits keys into fixed chunks merged in chunk order, and
// matvec gives each row to one thread: neither depends on the thread count.
// Each count is its own instance.
static void test_thread_count_invariance(void) {
    int64_t n_kv = 2, group = 3, hd = 64, n_q = n_kv * group, n_keys = 3000;
    test_kv k = kv_new(KV_F16, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(KV_F16, n_kv, n_keys, hd, -1.0f, 1.0f);
    kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
    float *q = normal_new(n_q * hd, 2.0f);
    float *o[3], *l[3];
    test_weight tw = weight_new(GGML_TYPE_Q4_1, 576, 100, 0);
    float *x = normal_new(576, 1.0f), *mv[3];
    for (int t = 0; t < 3; t++) {
        backend bt;
        rc_err err;
        CHECK(backend_init(&bt, &backend_cpu, t + 1, -1, &err) == 0);
        o[t] = out_new(n_q * hd);
        l[t] = out_new(n_q);
        mv[t] = out_new(100);
        backend_cpu.attn_decode(&bt, o[t], l[t], q, &kvk, &kvv, n_keys, n_q, n_kv, hd, 0.125f);
        backend_cpu.matmul(&bt, mv[t], x, &tw.w, 1);
        backend_shutdown(&bt);
    }
    for (int t = 1; t < 3; t++) {
        CHECK_MSG(same_bits(o[t], o[0], n_q * hd) && same_bits(l[t], l[0], n_q), "decode with %d threads == 1 thread", t + 1);
        CHECK_MSG(same_bits(mv[t], mv[0], 100), "matvec with %d threads == 1 thread", t + 1);
    }
    for (int t = 0; t < 3; t++) {
        free(o[t]); free(l[t]); free(mv[t]);
    }
    free(q); free(x);
    weight_free(&tw);
    kv_free(&k); kv_free(&v);
}

static void prefill_case(int elem, int64_t n_tok, int64_t pos0, int64_t n_kv, int64_t group, int64_t hd, float q_sigma) {
    char what[200];
    int64_t n_q = n_kv * group, n_keys = pos0 + n_tok, n_o = n_tok * n_q * hd, n_l = n_tok * n_q;
    float scale = 1.0f / sqrtf((float)hd);
    test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
    kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
    float *q = normal_new(n_o, q_sigma), *q_copy = floats_new(n_o);
    memcpy(q_copy, q, (size_t)n_o * sizeof(float));
    float *o_ref = out_new(n_o), *l_ref = out_new(n_l), *o = out_new(n_o), *l = out_new(n_l), *o2 = out_new(n_o);
    backend_cpu_ref.attn_prefill(&g_ref, o_ref, l_ref, q, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, scale);
    backend_cpu.attn_prefill(&g_cpu, o, l, q, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, scale);
    backend_cpu.attn_prefill(&g_cpu, o2, NULL, q, n_tok, pos0, &kvk, &kvv, n_q, n_kv, hd, scale);
    snprintf(what, sizeof what, "prefill %s n_tok=%lld pos0=%lld kv=%lld group=%lld hd=%lld q_sigma=%g", kv_name(elem),
             (long long)n_tok, (long long)pos0, (long long)n_kv, (long long)group, (long long)hd, (double)q_sigma);
    compare(ST_PREFILL, what, o, o_ref, n_o, TOL_ATTN, NULL);
    compare(ST_PREFILL, what, l, l_ref, n_l, TOL_LSE, NULL);
    CHECK_MSG(same_bits(o2, o, n_o), "%s: lse = NULL gives the same o", what);
    CHECK_MSG(guard_intact(o, n_o) && guard_intact(l, n_l) && guard_intact(o2, n_o), "%s: guard", what);
    CHECK_MSG(guard_intact(o_ref, n_o) && guard_intact(l_ref, n_l), "%s: ref guard", what);
    CHECK_MSG(same_bits(q, q_copy, n_o), "%s: q unchanged", what);
    free(q); free(q_copy); free(o_ref); free(l_ref); free(o); free(l); free(o2);
    kv_free(&k); kv_free(&v);
}

static void test_prefill_vs_ref(void) {
    static const int64_t n_toks[] = {1, 5, 33, 300};
    static const int64_t pos0s[] = {0, 1, 255, 256, 700};
    // Rotated through the cases; the big ones (300 tokens) use the small configs.
    static const struct { int elem; int64_t n_kv, group, hd; } cfg[] = {
        {KV_F16, 2, 1, 64}, {KV_F32, 1, 3, 24}, {KV_F16, 2, 4, 32}, {KV_F32, 1, 2, 64}, {KV_F16, 1, 5, 16},
    };
    int i = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 5; b++, i++) {
            int c = n_toks[a] >= 300 ? (i % 2 ? 1 : 3) : i % 5;
            prefill_case(cfg[c].elem, n_toks[a], pos0s[b], cfg[c].n_kv, cfg[c].group, cfg[c].hd, 2.0f);
        }
    // One token deep into the cache (the decode shape), and a head_dim off the 8-wide path.
    prefill_case(KV_F32, 1, 1024, 1, 3, 24, 2.0f);
    prefill_case(KV_F16, 3, 510, 2, 2, 6, 2.0f);
    // Peaked softmax: the running max jumps between tiles and old sums are rescaled by tiny factors.
    prefill_case(KV_F16, 33, 700, 1, 2, 64, 16.0f);
    prefill_case(KV_F32, 40, 230, 2, 3, 24, 16.0f);
    // The block formats across the 256-key tiles.
    for (int t = 0; t < 2; t++) {
        prefill_case(BLOCK_KV[t], 33, 255, 2, 3, 64, 2.0f);
        prefill_case(BLOCK_KV[t], 300, 0, 1, 2, 32, 2.0f);
        prefill_case(BLOCK_KV[t], 5, 700, 3, 1, 96, 16.0f);
    }
}

// Random states (o, lse) with some empty parts (lse = -inf, o = NaN garbage
// that the merge must ignore) and lse spread wide enough that some weights
// underflow in float.
static void merge_parts_new(float **o_parts, float **lse_parts, int64_t n_parts, int64_t n_heads, int64_t hd,
                            double lse_spread, int empty_every) {
    *o_parts = floats_new(n_parts * n_heads * hd);
    *lse_parts = floats_new(n_parts * n_heads);
    for (int64_t r = 0; r < n_parts; r++)
        for (int64_t h = 0; h < n_heads; h++) {
            int empty = empty_every && (r * n_heads + h) % empty_every == 1;
            (*lse_parts)[r * n_heads + h] = empty ? -INFINITY : (float)(lse_spread * rand_normal());
            for (int64_t i = 0; i < hd; i++) (*o_parts)[(r * n_heads + h) * hd + i] = empty ? NAN : rand_normal();
        }
}

static void test_merge(void) {
    char what[200];
    static const int64_t n_partss[] = {1, 2, 3, 7, 33};
    static const double spreads[] = {0.5, 5.0, 60.0};
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 3; b++) {
            int64_t n_parts = n_partss[a], n_heads = 3, hd = 24;
            float *op, *lp;
            merge_parts_new(&op, &lp, n_parts, n_heads, hd, spreads[b], 3);
            float *o_ref = out_new(n_heads * hd), *l_ref = out_new(n_heads), *o = out_new(n_heads * hd), *l = out_new(n_heads);
            backend_cpu_ref.merge(&g_ref, o_ref, l_ref, op, lp, n_parts, n_heads, hd);
            backend_cpu.merge(&g_cpu, o, l, op, lp, n_parts, n_heads, hd);
            snprintf(what, sizeof what, "merge n_parts=%lld spread=%g", (long long)n_parts, spreads[b]);
            compare(ST_MERGE, what, o, o_ref, n_heads * hd, TOL_FP32, NULL);
            compare(ST_MERGE, what, l, l_ref, n_heads, TOL_FP32, NULL);
            CHECK_MSG(all_finite(o, n_heads * hd) && all_finite(o_ref, n_heads * hd), "%s: empty parts' NaN o ignored", what);
            CHECK(guard_intact(o, n_heads * hd) && guard_intact(l, n_heads));
            CHECK(guard_intact(o_ref, n_heads * hd) && guard_intact(l_ref, n_heads));
            // Against the formula: L = ln sum_r e^{lse_r}, o = sum_r e^{lse_r - L} o_r.
            if (b == 0) {
                float *ow = floats_new(n_heads * hd), *lw = floats_new(n_heads);
                for (int64_t h = 0; h < n_heads; h++) {
                    double sum = 0.0;
                    for (int64_t r = 0; r < n_parts; r++) sum += exp((double)lp[r * n_heads + h]);
                    double L = log(sum);
                    lw[h] = (float)L;
                    for (int64_t i = 0; i < hd; i++) {
                        double acc = 0.0;
                        for (int64_t r = 0; r < n_parts; r++)
                            if (lp[r * n_heads + h] != -INFINITY)
                                acc += exp((double)lp[r * n_heads + h] - L) * op[(r * n_heads + h) * hd + i];
                        ow[h * hd + i] = (float)acc;
                    }
                }
                snprintf(what, sizeof what, "spec merge n_parts=%lld", (long long)n_parts);
                compare(ST_SPEC, what, o_ref, ow, n_heads * hd, TOL_SPEC, NULL);
                compare(ST_SPEC, what, l_ref, lw, n_heads, TOL_SPEC, NULL);
                free(ow); free(lw);
            }
            free(op); free(lp); free(o_ref); free(l_ref); free(o); free(l);
        }

    const backend_ops *bes[2] = {&backend_cpu_ref, &backend_cpu};
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = bes[bi];
        int64_t n_heads = 2, hd = 12;
        // Natural log: two states with lse 0 merge to lse ln 2, o their mean.
        {
            float op[2 * 2 * 12], lp[4] = {0.0f, 3.0f, 0.0f, 3.0f}, want[2 * 12], *o = out_new(n_heads * hd), *l = out_new(n_heads);
            for (int i = 0; i < 2 * 2 * 12; i++) op[i] = rand_normal();
            for (int i = 0; i < 2 * 12; i++) want[i] = 0.5f * (op[i] + op[2 * 12 + i]);
            be->merge(inst(be), o, l, op, lp, 2, n_heads, hd);
            snprintf(what, sizeof what, "%s merge of equal lse: o = mean", be->name);
            compare(ST_SPEC, what, o, want, n_heads * hd, TOL_SPEC, NULL);
            CHECK_CLOSE(l[0], log(2.0), 1e-7, 1e-7);
            CHECK_CLOSE(l[1], 3.0 + log(2.0), 1e-7, 1e-7);
            free(o); free(l);
        }
        // All parts empty (also zero parts): o = 0, lse = -inf, no NaN.
        for (int64_t n_parts = 0; n_parts <= 3; n_parts++) {
            float op[3 * 2 * 12], lp[6];
            for (int i = 0; i < 3 * 2 * 12; i++) op[i] = n_parts == 3 ? NAN : 0.0f;  // garbage must not leak
            for (int i = 0; i < 6; i++) lp[i] = -INFINITY;
            float *o = out_new(n_heads * hd), *l = out_new(n_heads);
            be->merge(inst(be), o, l, op, lp, n_parts, n_heads, hd);
            int ok = 1;
            for (int64_t i = 0; i < n_heads * hd; i++) ok &= f32_bits(o[i]) == 0;  // +0.0, not NaN
            for (int64_t h = 0; h < n_heads; h++) ok &= l[h] == -INFINITY;
            CHECK_MSG(ok, "%s merge of %lld empty parts: o = +0, lse = -inf", be->name, (long long)n_parts);
            CHECK(guard_intact(o, n_heads * hd) && guard_intact(l, n_heads));
            free(o); free(l);
        }
        // A state merged with empty states (before, after, several) comes back bitwise,
        // and so does a single state on its own: its weight is exactly e^0 = 1.
        {
            static const int layouts[][4] = {{0, -1, -1, -1}, {0, 1, -1, -1}, {1, 0, -1, -1}, {1, 0, 1, 1}, {1, 1, 1, 0}};
            static const int lens[] = {1, 2, 2, 4, 4};
            float so[2 * 12], sl[2] = {7.25f, -1234.5f};
            for (int i = 0; i < 2 * 12; i++) so[i] = rand_normal();
            for (int li = 0; li < 5; li++) {
                int n_parts = lens[li];
                float op[4 * 2 * 12], lp[4 * 2];
                for (int r = 0; r < n_parts; r++) {
                    int empty = layouts[li][r];
                    for (int h = 0; h < 2; h++) {
                        lp[r * 2 + h] = empty ? -INFINITY : sl[h];
                        for (int i = 0; i < 12; i++) op[(r * 2 + h) * 12 + i] = empty ? (r % 2 ? NAN : 0.0f) : so[h * 12 + i];
                    }
                }
                float *o = out_new(n_heads * hd), *l = out_new(n_heads);
                be->merge(inst(be), o, l, op, lp, n_parts, n_heads, hd);
                CHECK_MSG(same_bits(o, so, n_heads * hd) && same_bits(l, sl, n_heads),
                          "%s merge with empty states is exact (layout %d)", be->name, li);
                free(o); free(l);
            }
        }
    }
}

// ======================================================================
// 3. Merging shards equals attention over their union
// ======================================================================

// cuts: n_shards + 1 boundaries, cuts[0] = 0, cuts[n_shards] = n_keys, non-decreasing.
static void shard_case(const backend_ops *be, int elem, int64_t n_keys, const int64_t *cuts, int n_shards, int64_t n_kv,
                       int64_t group, int64_t hd, const char *label) {
    char what[240];
    int64_t n_q = n_kv * group;
    float scale = 1.0f / sqrtf((float)hd);
    test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
    float *q = normal_new(n_q * hd, 2.0f);
    float *op = floats_new(n_shards * n_q * hd), *lp = floats_new(n_shards * n_q);
    for (int s = 0; s < n_shards; s++) {
        // A view whose position 0 is the shard's first key.
        kv_view kvk = kv_view_at(&k, cuts[s]), kvv = kv_view_at(&v, cuts[s]);
        float *o = out_new(n_q * hd), *l = out_new(n_q);
        be->attn_decode(inst(be), o, l, q, &kvk, &kvv, cuts[s + 1] - cuts[s], n_q, n_kv, hd, scale);
        CHECK(guard_intact(o, n_q * hd) && guard_intact(l, n_q));
        memcpy(op + s * n_q * hd, o, (size_t)(n_q * hd) * sizeof(float));
        memcpy(lp + s * n_q, l, (size_t)n_q * sizeof(float));
        free(o); free(l);
    }
    float *om = out_new(n_q * hd), *lm = out_new(n_q);
    be->merge(inst(be), om, lm, op, lp, n_shards, n_q, hd);
    kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
    float *o_all = out_new(n_q * hd), *l_all = out_new(n_q), *o_ref = out_new(n_q * hd), *l_ref = out_new(n_q);
    be->attn_decode(inst(be), o_all, l_all, q, &kvk, &kvv, n_keys, n_q, n_kv, hd, scale);
    backend_cpu_ref.attn_decode(&g_ref, o_ref, l_ref, q, &kvk, &kvv, n_keys, n_q, n_kv, hd, scale);
    int len = snprintf(what, sizeof what, "%s shards %s n_keys=%lld%s cuts", be->name, kv_name(elem), (long long)n_keys, label);
    for (int s = 0; s <= n_shards && len < (int)sizeof what - 12; s++)
        len += snprintf(what + len, sizeof what - (size_t)len, " %lld", (long long)cuts[s]);
    compare(ST_SHARDS, what, om, o_all, n_q * hd, TOL_ATTN, NULL);
    compare(ST_SHARDS, what, lm, l_all, n_q, TOL_LSE, NULL);
    compare(ST_SHARDS, what, om, o_ref, n_q * hd, TOL_ATTN, NULL);
    compare(ST_SHARDS, what, lm, l_ref, n_q, TOL_LSE, NULL);
    CHECK(guard_intact(om, n_q * hd) && guard_intact(lm, n_q));

    // Merging is associative: merge(merge(first shards), merge(rest)) = merge(all).
    if (n_shards >= 2) {
        int split = n_shards / 2;
        float *o2 = floats_new(2 * n_q * hd), *l2 = floats_new(2 * n_q);
        be->merge(inst(be), o2, l2, op, lp, split, n_q, hd);
        be->merge(inst(be), o2 + n_q * hd, l2 + n_q, op + split * n_q * hd, lp + split * n_q, n_shards - split, n_q, hd);
        float *oh = out_new(n_q * hd), *lh = out_new(n_q);
        be->merge(inst(be), oh, lh, o2, l2, 2, n_q, hd);
        snprintf(what, sizeof what, "%s hierarchical merge %s n_keys=%lld%s", be->name, kv_name(elem), (long long)n_keys, label);
        compare(ST_SHARDS, what, oh, om, n_q * hd, TOL_FP32, NULL);
        compare(ST_SHARDS, what, lh, lm, n_q, TOL_FP32, NULL);
        free(o2); free(l2); free(oh); free(lh);
    }
    free(q); free(op); free(lp); free(om); free(lm); free(o_all); free(l_all); free(o_ref); free(l_ref);
    kv_free(&k); kv_free(&v);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_shard_merge(void) {
    const backend_ops *bes[2] = {&backend_cpu_ref, &backend_cpu};
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = bes[bi];
        // Hand-picked cuts: empty shards (first, middle, last), length-1 shards, a
        // cut on the 1024-key chunk boundary and one next to it.
        static const int64_t c1[] = {0, 0, 1, 1024, 1025, 2100};
        static const int64_t c2[] = {0, 1, 1, 2, 2100, 2100};
        static const int64_t c3[] = {0, 2100};
        static const int64_t c4[] = {0, 1023, 2047, 2048, 2100};
        shard_case(be, KV_F16, 2100, c1, 5, 2, 3, 24, "");
        shard_case(be, KV_F32, 2100, c2, 5, 1, 4, 64, "");
        shard_case(be, KV_F16, 2100, c3, 1, 2, 1, 32, "");
        shard_case(be, KV_F32, 2100, c4, 4, 1, 2, 16, "");
        static const int64_t c5[] = {0, 0, 0};
        shard_case(be, KV_F16, 0, c5, 2, 1, 2, 8, " (all empty)");
        static const int64_t c6[] = {0, 0, 1, 1};
        shard_case(be, KV_F32, 1, c6, 3, 2, 2, 8, "");
        // Shard views that start mid-cache in the block formats.
        shard_case(be, KV_Q8_0, 2100, c1, 5, 2, 3, 64, "");
        shard_case(be, KV_Q4_0, 2100, c4, 4, 1, 2, 32, "");
        // Random cut points (sorted, so repeats give empty shards), N = 1..6.
        static const int64_t lens[] = {7, 300, 1500, 3000};
        for (int rep = 0; rep < 12; rep++) {
            int n_shards = 1 + rep % 6;
            int64_t n_keys = lens[rep % 4], cuts[7];
            cuts[0] = 0;
            cuts[n_shards] = n_keys;
            for (int s = 1; s < n_shards; s++) cuts[s] = rand_below(n_keys + 1);
            qsort(cuts + 1, (size_t)(n_shards > 1 ? n_shards - 1 : 0), sizeof(int64_t), cmp_i64);
            shard_case(be, rep % 2 ? KV_F32 : KV_F16, n_keys, cuts, n_shards, 1 + rep % 2, 1 + rep % 4, rep % 3 ? 64 : 24,
                       " (random)");
        }
    }
}

// ======================================================================
// 4. Argmax
// ======================================================================

static void test_argmax(void) {
    const backend_ops *bes[2] = {&backend_cpu_ref, &backend_cpu};
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = bes[bi];
        float one[1] = {-5.0f};
        CHECK(be->argmax(inst(be), one, 1) == 0);
        float same[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
        CHECK(be->argmax(inst(be), same, 9) == 0);
        float tie[10] = {0, 1, 3, 7, -1, 7, 2, 7, 0, 6};
        CHECK(be->argmax(inst(be), tie, 10) == 3);
        float last[5] = {-INFINITY, -3, -2, -1, 0};
        CHECK(be->argmax(inst(be), last, 5) == 4);
        float neg[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        CHECK(be->argmax(inst(be), neg, 4) == 0);
        float zeros[3] = {-0.0f, 0.0f, 0.0f};  // -0 == +0: a tie
        CHECK(be->argmax(inst(be), zeros, 3) == 0);
        float nan_first[4] = {NAN, 1, 2, NAN};  // NaN never wins ...
        CHECK_MSG(be->argmax(inst(be), nan_first, 4) == 2, "%s argmax skips NaN", be->name);
        float nan_mid[3] = {-1, NAN, -2};
        CHECK(be->argmax(inst(be), nan_mid, 3) == 0);
        float all_nan[3] = {NAN, NAN, NAN};  // ... unless nothing else is there
        CHECK(be->argmax(inst(be), all_nan, 3) == 0);
        // A vocabulary-sized vector with the maximum repeated at later positions.
        int64_t n = 49152;
        float *x = normal_new(n, 1.0f);
        x[31337] = 10.0f;
        x[40000] = 10.0f;
        x[n - 1] = 10.0f;
        int64_t want = 0;
        for (int64_t i = 1; i < n; i++)
            if (x[i] > x[want]) want = i;
        CHECK(want == 31337);
        CHECK_MSG(be->argmax(inst(be), x, n) == 31337, "%s argmax = %lld", be->name, (long long)be->argmax(inst(be), x, n));
        free(x);
    }
}

// ======================================================================
// The comparisons can fail: a realistic bug is caught at these tolerances.
// ======================================================================

static void test_sensitivity(void) {
    // Dropping the last key of 1025 (an off-by-one at the chunk boundary).
    {
        int64_t n_kv = 1, hd = 64, n_q = 2, n = 1025;  // two q heads share the KV head
        test_kv k = kv_new(KV_F16, n_kv, n, hd, -1.0f, 1.0f), v = kv_new(KV_F16, n_kv, n, hd, -1.0f, 1.0f);
        kv_view kvk = kv_view_at(&k, 0), kvv = kv_view_at(&v, 0);
        float *q = normal_new(n_q * hd, 2.0f), o0[128], l0[2], o1[128], l1[2];
        backend_cpu_ref.attn_decode(&g_ref, o0, l0, q, &kvk, &kvv, n, n_q, n_kv, hd, 0.125f);
        backend_cpu_ref.attn_decode(&g_ref, o1, l1, q, &kvk, &kvv, n - 1, n_q, n_kv, hd, 0.125f);
        CHECK_MSG(!compare_quiet(o1, o0, n_q * hd, TOL_ATTN, NULL).ok || !compare_quiet(l1, l0, n_q, TOL_LSE, NULL).ok,
                  "a dropped key is detected");
        CHECK_MSG(!compare_quiet(l1, l0, n_q, TOL_LSE, NULL).ok, "a dropped key moves lse beyond TOL_LSE");
        free(q);
        kv_free(&k); kv_free(&v);
    }
    // One Q4_0 nibble off by one step.
    {
        test_weight tw = weight_new(GGML_TYPE_Q4_0, 576, 7, 0);
        float *x = normal_new(576, 1.0f), r0[7], r1[7];
        backend_cpu_ref.matmul(&g_ref, r0, x, &tw.w, 1);
        block_q4_0 *b = (block_q4_0 *)((uint8_t *)tw.buf + 3 * tw.w.row_bytes);
        b[5].qs[7] ^= 0x01;
        backend_cpu_ref.matmul(&g_ref, r1, x, &tw.w, 1);
        double atol[7];
        for (int i = 0; i < 7; i++) atol[i] = MATMUL_ABS_REL * 576.0;  // generous: sum |w x| < 576 here
        CHECK_MSG(!compare_quiet(r1, r0, 7, (tol){1e-7, 0.0, 1e-5}, atol).ok, "one flipped nibble is detected");
        free(x);
        weight_free(&tw);
    }
}

// ======================================================================
// 5. The ops the engine, KV caches and policies call: add, add_bias, embed,
//    kv_write, copy_rows, copy_2d, mean_heads, score_reduce, maxpool_rows,
//    topk_rows, and the memory entries. Each against a closed form or a
//    brute force written here, then cpu against cpu_ref.
// ======================================================================

static const int64_t ODD_N[] = {0, 1, 7, 33, 4097};
#define N_ODD ((int)(sizeof(ODD_N) / sizeof(ODD_N[0])))


static void test_memory(void) {
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = BOTH[bi];
        const backend *b = inst(be);
        for (int ni = 0; ni < N_ODD; ni++) {
            const int64_t n = ODD_N[ni];
            uint8_t *p = be->alloc(b, (size_t)n * sizeof(float));
            CHECK_MSG(p != NULL, "%s alloc(%lld floats)", be->name, (long long)n);
            if (!p) continue;
            int zero = 1;
            for (int64_t i = 0; i < n * 4; i++) zero &= p[i] == 0;
            CHECK_MSG(zero, "%s alloc is zero-filled (n=%lld)", be->name, (long long)n);
            float *src = normal_new(n, 1.0f), *back = out_new(n), *q = be->alloc(b, (size_t)n * sizeof(float));
            be->upload(b, p, src, (size_t)n * sizeof(float));
            be->copy(b, q, p, (size_t)n * sizeof(float));
            be->copy(b, q, q, (size_t)n * sizeof(float));  // dst == src: a no-op
            be->download(b, back, q, (size_t)n * sizeof(float));
            CHECK_MSG(same_bits(back, src, n) && guard_intact(back, n), "%s upload/copy/download n=%lld", be->name,
                      (long long)n);
            be->free(b, p);
            be->free(b, q);
            free(src); free(back);
        }
        test_weight tw = weight_new(GGML_TYPE_Q4_1, 64, 5, 0);
        weight w;
        rc_err err;
        CHECK(be->weight_upload(b, &w, &tw.w, &err) == 0);
        CHECK_MSG(w.data == tw.w.data && w.type == tw.w.type && w.n_in == 64 && w.n_out == 5 &&
                      w.row_bytes == tw.w.row_bytes, "%s weight_upload hands back the same view (zero copy)", be->name);
        be->weight_free(b, &w);
        CHECK_MSG(w.data == NULL && w.n_out == 0, "%s weight_free resets the view", be->name);
        weight_free(&tw);
        if (be->synchronize) CHECK(be->synchronize(b, &err) == 0);
    }
}

static void test_add_vs_closed_form(void) {
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = BOTH[bi];
        for (int ni = 0; ni < N_ODD; ni++) {
            const int64_t n = ODD_N[ni];
            float *x = out_new(n), *y = normal_new(n, 3.0f), *want = floats_new(n);
            for (int64_t i = 0; i < n; i++) {
                x[i] = rand_normal();
                want[i] = x[i] + y[i];  // one correctly rounded float add per element
            }
            be->add(inst(be), x, y, n);
            CHECK_MSG(same_bits(x, want, n) && guard_intact(x, n), "%s add n=%lld", be->name, (long long)n);
            free(x); free(y); free(want);
            for (int64_t n_rows = 0; n_rows <= 3; n_rows += 3) {
                float *xb = out_new(n_rows * n), *bias = normal_new(n, 1.0f), *wb = floats_new(n_rows * n);
                for (int64_t r = 0; r < n_rows; r++)
                    for (int64_t i = 0; i < n; i++) {
                        xb[r * n + i] = rand_normal();
                        wb[r * n + i] = xb[r * n + i] + bias[i];
                    }
                be->add_bias(inst(be), xb, bias, n_rows, n);
                CHECK_MSG(same_bits(xb, wb, n_rows * n) && guard_intact(xb, n_rows * n), "%s add_bias %lldx%lld",
                          be->name, (long long)n_rows, (long long)n);
                free(xb); free(bias); free(wb);
            }
        }
    }
}

// Every weight type: rows of the table decoded by naive_weight, tokens repeated and at both ends.
static void test_embed(void) {
    for (int ti = 0; ti < N_CPU_WEIGHT_TYPES; ti++) {
        const int64_t n_in = 96, n_vocab = 11;
        test_weight tw = weight_new(CPU_WEIGHT_TYPES[ti], n_in, n_vocab, 4);  // padded rows: steps by row_bytes
        const int32_t tokens[6] = {4, 0, 10, 4, 2, 1};
        for (int64_t n = 0; n <= 6; n += 6) {
            float *got = out_new(n * n_in), *ref = out_new(n * n_in), *naive = floats_new(n * n_in);
            for (int64_t t = 0; t < n; t++)
                for (int64_t i = 0; i < n_in; i++)
                    naive[t * n_in + i] =
                        (float)naive_weight(tw.w.type, (const uint8_t *)tw.buf + (size_t)tokens[t] * tw.w.row_bytes, i);
            backend_cpu_ref.embed(&g_ref, ref, &tw.w, tokens, n);
            backend_cpu.embed(&g_cpu, got, &tw.w, tokens, n);
            char what[96];
            snprintf(what, sizeof what, "cpu_ref embed %s n=%lld vs naive", ggml_type_get(tw.w.type)->name, (long long)n);
            compare(ST_SPEC, what, ref, naive, n * n_in, (tol){1e-12, 1e-6, 1e-6}, NULL);
            CHECK_MSG(same_bits(got, ref, n * n_in) && guard_intact(got, n * n_in) && guard_intact(ref, n * n_in),
                      "cpu embed == cpu_ref embed (%s)", ggml_type_get(tw.w.type)->name);
            free(got); free(ref); free(naive);
        }
        weight_free(&tw);
    }
}

// Values that exercise fp16 rounding: exact halves (ties to even), subnormals,
// overflow to inf, signed zeros.
static float kv_value(int64_t i) {
    static const float special[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f), 0x1p-20f, -3e-7f,
                                    65504.0f, 65520.0f, 1e6f, -0.0f, 0.0f, INFINITY, -INFINITY, 0x1p-25f};
    const int n_special = (int)(sizeof(special) / sizeof(special[0]));
    return i % 5 == 0 ? special[(i / 5) % n_special] : rand_normal() * 4.0f;
}

static void test_kv_write(void) {
    const int64_t hds[] = {1, 7, 33, 64};
    for (int elem = 0; elem < 2; elem++)
        for (int64_t n_kv = 1; n_kv <= 3; n_kv += 2)
            for (int hi = 0; hi < 4; hi++)
                for (int64_t n_tok = 0; n_tok <= 5; n_tok += 5) {
                    const int64_t hd = hds[hi], n_slots = n_tok + 4, stride = n_slots * hd + 5;
                    const size_t n_bytes = kv_bytes(elem, n_kv * stride);
                    float *k = floats_new(n_tok * n_kv * hd), *v = floats_new(n_tok * n_kv * hd);
                    for (int64_t i = 0; i < n_tok * n_kv * hd; i++) {
                        k[i] = kv_value(i);
                        v[i] = kv_value(i + 2);
                    }
                    int64_t slot[15];
                    for (int64_t t = 0; t < n_tok; t++)  // distinct per head, different orders per head
                        for (int64_t h = 0; h < n_kv; h++) slot[t * n_kv + h] = h % 2 ? n_slots - 1 - t : (t + 2 * h) % n_slots;
                    uint8_t *cache[2][2];  // [backend][k/v]
                    for (int bi = 0; bi < 2; bi++) {
                        for (int c = 0; c < 2; c++) {
                            cache[bi][c] = malloc(n_bytes);
                            memset(cache[bi][c], 0xab, n_bytes);
                        }
                        kv_view kd = {cache[bi][0], elem, stride}, vd = {cache[bi][1], elem, stride};
                        BOTH[bi]->kv_write(inst(BOTH[bi]), &kd, &vd, slot, k, v, n_tok, n_kv, hd);
                    }
                    // Closed form: row (t, h) at head h, slot s; every other byte untouched.
                    int ok = 1;
                    uint8_t *want[2] = {malloc(n_bytes), malloc(n_bytes)};
                    for (int c = 0; c < 2; c++) {
                        memset(want[c], 0xab, n_bytes);
                        const float *src = c ? v : k;
                        for (int64_t t = 0; t < n_tok; t++)
                            for (int64_t h = 0; h < n_kv; h++)
                                for (int64_t i = 0; i < hd; i++) {
                                    const int64_t idx = h * stride + slot[t * n_kv + h] * hd + i;
                                    const float x = src[(t * n_kv + h) * hd + i];
                                    if (elem == KV_F32) {
                                        memcpy(want[c] + idx * 4, &x, 4);
                                    } else {
                                        uint16_t hv = fp32_to_fp16(x);
                                        memcpy(want[c] + idx * 2, &hv, 2);
                                        // and independently: the fp16 value is within half an ulp of x
                                        double back = qref_fp16_to_fp32(hv), ax = fabs((double)x);
                                        if (isfinite(x) && ax <= 65504.0 &&
                                            !(fabs(back - x) <= (ax >= 0x1p-14 ? ax * 0x1p-11 : 0x1p-25)))
                                            ok = 0;
                                    }
                                }
                        for (int bi = 0; bi < 2; bi++) ok &= memcmp(cache[bi][c], want[c], n_bytes) == 0;
                    }
                    CHECK_MSG(ok, "kv_write %s n_kv=%lld hd=%lld n_tok=%lld", kv_name(elem), (long long)n_kv,
                              (long long)hd, (long long)n_tok);
                    for (int bi = 0; bi < 2; bi++) {
                        free(cache[bi][0]);
                        free(cache[bi][1]);
                    }
                    free(want[0]); free(want[1]); free(k); free(v);
                }
}

// kv_write into q8_0 / q4_0 caches: each row lands at its (head, slot) as the
// reference quantizer's blocks, on head strides of an odd number of blocks;
// every other byte is untouched.
static void test_kv_write_blocks(void) {
    for (int t = 0; t < 2; t++)
        for (int64_t hd = 32; hd <= 96; hd += 32)
            for (int64_t n_kv = 1; n_kv <= 3; n_kv += 2) {
                const int elem = BLOCK_KV[t];
                const uint32_t gt = elem == KV_Q8_0 ? GGML_TYPE_Q8_0 : GGML_TYPE_Q4_0;
                const int64_t n_tok = 5, n_slots = n_tok + 4, stride = n_slots * hd + 3 * 32;
                const size_t n_bytes = kv_bytes(elem, n_kv * stride), rb = kv_row_bytes(elem, hd);
                float *k = floats_new(n_tok * n_kv * hd), *v = floats_new(n_tok * n_kv * hd);
                for (int64_t i = 0; i < n_tok * n_kv * hd; i++) {
                    k[i] = rand_normal() * (i % 64 < 32 ? 4.0f : 0.01f);
                    v[i] = i % 96 < 32 ? 0.0f : rand_normal();  // some all-zero blocks (d = 0)
                }
                int64_t slot[15];
                for (int64_t tt = 0; tt < n_tok; tt++)
                    for (int64_t h = 0; h < n_kv; h++) slot[tt * n_kv + h] = h % 2 ? n_slots - 1 - tt : (tt + 2 * h) % n_slots;
                uint8_t *cache[2][2], *want[2] = {malloc(n_bytes), malloc(n_bytes)};
                for (int bi = 0; bi < 2; bi++) {
                    for (int c = 0; c < 2; c++) {
                        cache[bi][c] = malloc(n_bytes);
                        memset(cache[bi][c], 0xab, n_bytes);
                    }
                    kv_view kd = {cache[bi][0], elem, stride}, vd = {cache[bi][1], elem, stride};
                    BOTH[bi]->kv_write(inst(BOTH[bi]), &kd, &vd, slot, k, v, n_tok, n_kv, hd);
                }
                int ok = 1;
                for (int c = 0; c < 2; c++) {
                    memset(want[c], 0xab, n_bytes);
                    for (int64_t tt = 0; tt < n_tok; tt++)
                        for (int64_t h = 0; h < n_kv; h++) {
                            const size_t off = (size_t)((h * stride + slot[tt * n_kv + h] * hd) / 32) * (rb / (size_t)(hd / 32));
                            ok &= qref_quantize(gt, (c ? v : k) + (tt * n_kv + h) * hd, want[c] + off, hd) == rb;
                        }
                    for (int bi = 0; bi < 2; bi++) ok &= memcmp(cache[bi][c], want[c], n_bytes) == 0;
                }
                CHECK_MSG(ok, "kv_write %s n_kv=%lld hd=%lld: the reference quantizer's blocks at (head, slot)",
                          kv_name(elem), (long long)n_kv, (long long)hd);
                for (int bi = 0; bi < 2; bi++) {
                    free(cache[bi][0]);
                    free(cache[bi][1]);
                }
                free(want[0]); free(want[1]); free(k); free(v);
            }
}

static void test_copy_rows_2d(void) {
    const size_t row_bytes_list[] = {4, 12, 256};
    for (int bi = 0; bi < 2; bi++) {
        const backend_ops *be = BOTH[bi];
        for (int ri = 0; ri < 3; ri++)
            for (int ni = 0; ni < N_ODD; ni++) {  // 4097 rows of 256 bytes: the CPU backend's threaded gather
                const int64_t n_rows = ODD_N[ni], n_src = n_rows + 5, n_dst = n_rows + 3;
                const size_t rb = row_bytes_list[ri];
                uint8_t *src = malloc((size_t)n_src * rb + 1), *dst = malloc((size_t)n_dst * rb + 1);
                uint8_t *want = malloc((size_t)n_dst * rb + 1);
                for (size_t i = 0; i < (size_t)n_src * rb; i++) src[i] = (uint8_t)rand_u32();
                int64_t *di = malloc((size_t)(n_rows + 1) * sizeof(int64_t)), *si = malloc((size_t)(n_rows + 1) * sizeof(int64_t));
                for (int64_t i = 0; i < n_rows; i++) {
                    di[i] = n_dst - 1 - i;       // reversed
                    si[i] = (i * 5 + 2) % n_src;  // scattered (repeats allowed on the source side)
                }
                for (int mode = 0; mode < 3; mode++) {  // both lists, NULL dst list, NULL src list
                    memset(dst, 0x5a, (size_t)n_dst * rb);
                    memset(want, 0x5a, (size_t)n_dst * rb);
                    const int64_t *dl = mode == 1 ? NULL : di, *sl = mode == 2 ? NULL : si;
                    for (int64_t i = 0; i < n_rows; i++)
                        memcpy(want + (size_t)(dl ? dl[i] : i) * rb, src + (size_t)(sl ? sl[i] : i) * rb, rb);
                    be->copy_rows(inst(be), dst, dl, src, sl, n_rows, rb);
                    CHECK_MSG(memcmp(dst, want, (size_t)n_dst * rb) == 0, "%s copy_rows rb=%zu n=%lld mode %d",
                              be->name, rb, (long long)n_rows, mode);
                }
                // copy_2d: a (n_rows x rb) block between pitches rb+8 (src) and rb+3 (dst), and the dense case
                for (int dense = 0; dense < 2; dense++) {
                    const size_t sp = dense ? rb : rb + 8, dp = dense ? rb : rb + 3;
                    uint8_t *s2 = malloc((size_t)n_rows * sp + 1), *d2 = malloc((size_t)n_rows * dp + 1);
                    uint8_t *w2 = malloc((size_t)n_rows * dp + 1);
                    for (size_t i = 0; i < (size_t)n_rows * sp; i++) s2[i] = (uint8_t)rand_u32();
                    memset(d2, 0x3c, (size_t)n_rows * dp);
                    memset(w2, 0x3c, (size_t)n_rows * dp);
                    for (int64_t r = 0; r < n_rows; r++) memcpy(w2 + (size_t)r * dp, s2 + (size_t)r * sp, rb);
                    be->copy_2d(inst(be), d2, dp, s2, sp, rb, n_rows);
                    CHECK_MSG(memcmp(d2, w2, (size_t)n_rows * dp) == 0, "%s copy_2d rb=%zu n=%lld dense=%d", be->name,
                              rb, (long long)n_rows, dense);
                    free(s2); free(d2); free(w2);
                }
                free(src); free(dst); free(want); free(di); free(si);
            }
    }
}

static void test_mean_heads(void) {
    const int64_t heads[] = {1, 3, 9}, hds[] = {1, 7, 64};
    for (int a = 0; a < 3; a++)
        for (int c = 0; c < 3; c++) {
            const int64_t nh = heads[a], hd = hds[c];
            float *q = normal_new(nh * hd, 2.0f), *got = out_new(hd), *ref = out_new(hd), *naive = floats_new(hd);
            for (int64_t i = 0; i < hd; i++) {
                long double s = 0;
                for (int64_t h = 0; h < nh; h++) s += q[h * hd + i];
                naive[i] = (float)(s / nh);
            }
            backend_cpu_ref.mean_heads(&g_ref, ref, q, nh, hd);
            backend_cpu.mean_heads(&g_cpu, got, q, nh, hd);
            compare(ST_SPEC, "cpu_ref mean_heads vs naive", ref, naive, hd, (tol){1e-12, 1e-7, 1e-6}, NULL);
            CHECK_MSG(same_bits(got, ref, hd) && guard_intact(got, hd) && guard_intact(ref, hd),
                      "cpu mean_heads == cpu_ref (heads %lld, hd %lld)", (long long)nh, (long long)hd);
            free(q); free(got); free(ref); free(naive);
        }
}

// The definition of score_reduce, in double: probabilities p = exp(s - lse), 0 when lse = -inf.
static double naive_score(const float *raw, const float *lse, int64_t ld, int64_t g, int64_t G, int64_t j, int mode) {
    if (mode == SCORE_FIRST_LOGP || mode == SCORE_MAX_LOGP) {
        double m = -INFINITY;
        for (int64_t h = g * G; h < (mode == SCORE_FIRST_LOGP ? g * G + 1 : (g + 1) * G); h++) {
            double x = lse[h] == -INFINITY ? -INFINITY : (double)raw[h * ld + j] - lse[h];
            m = x > m ? x : m;
        }
        return m;
    }
    double s = 0;
    for (int64_t h = g * G; h < (g + 1) * G; h++)
        if (lse[h] != -INFINITY) s += exp((double)raw[h * ld + j] - lse[h]);
    return s / (double)G;
}

static void test_score_reduce(void) {
    const int64_t shapes[][2] = {{1, 1}, {3, 3}, {2, 4}};  // (out rows, group)
    for (int si = 0; si < 3; si++)
        for (int ni = 0; ni < N_ODD; ni++)
            for (int mode = 0; mode < 4; mode++) {
                const int64_t rows = shapes[si][0], G = shapes[si][1], H = rows * G, n = ODD_N[ni], ld = n + 3;
                float *raw = floats_new(H * ld), *lse = floats_new(H);
                for (int64_t h = 0; h < H; h++) {
                    lse[h] = 2.0f + rand_uniform(0.0f, 3.0f);
                    for (int64_t j = 0; j < ld; j++) raw[h * ld + j] = j < n ? rand_normal() * 2.0f : NAN;  // NaN past n
                }
                if (H > 1) lse[H - 1] = lse[(rows - 1) * G] = -INFINITY;  // heads with no keys anywhere (one a group's first)
                const int acc = mode == SCORE_ACC_MEAN_P;
                const int64_t n_accs[] = {0, n / 2, n, n + 5};
                for (int ai = 0; ai < (acc ? 4 : 1); ai++) {
                    const int64_t n_acc = n_accs[ai];
                    float *got = out_new(rows * n), *ref = out_new(rows * n), *want = floats_new(rows * n);
                    for (int64_t i = 0; i < rows * n; i++) {
                        float prior = acc ? rand_uniform(0.0f, 1.0f) : NAN;
                        got[i] = ref[i] = prior;
                        want[i] = prior;
                    }
                    for (int64_t g = 0; g < rows; g++)
                        for (int64_t j = 0; j < n; j++) {
                            if (acc && j >= n_acc) continue;  // untouched beyond the causal prefix
                            double x = naive_score(raw, lse, ld, g, G, j, mode);
                            want[g * n + j] = (float)(acc ? want[g * n + j] + x : x);
                        }
                    backend_cpu_ref.score_reduce(&g_ref, ref, raw, lse, H, rows, n, ld, n_acc, mode);
                    backend_cpu.score_reduce(&g_cpu, got, raw, lse, H, rows, n, ld, n_acc, mode);
                    char what[128];
                    snprintf(what, sizeof what, "score_reduce mode %d rows=%lld G=%lld n=%lld n_acc=%lld", mode,
                             (long long)rows, (long long)G, (long long)n, (long long)n_acc);
                    CHECK_MSG(guard_intact(got, rows * n) && guard_intact(ref, rows * n), "%s: guards", what);
                    compare(ST_SCORE, what, ref, want, rows * n, (tol){1e-12, 1e-30, 1e-6}, NULL);
                    if (mode == SCORE_MAX_LOGP || mode == SCORE_FIRST_LOGP)  // one float subtraction and max: exact
                        CHECK_MSG(same_bits(got, ref, rows * n), "%s: cpu == cpu_ref bit for bit", what);
                    else
                        compare(ST_SCORE, what, got, ref, rows * n, (tol){1e-12, 1e-30, 2e-6}, NULL);
                    free(got); free(ref); free(want);
                }
                free(raw); free(lse);
            }
}

static void test_maxpool_rows(void) {
    const int64_t kernels[] = {1, 3, 7, 8193};
    for (int64_t n_rows = 0; n_rows <= 3; n_rows += (n_rows == 0 ? 1 : 2))
        for (int ni = 0; ni < N_ODD; ni++)
            for (int ki = 0; ki < 4; ki++) {
                const int64_t n = ODD_N[ni], kernel = kernels[ki];
                float *in = floats_new(n_rows * n), *want = floats_new(n_rows * n);
                for (int64_t i = 0; i < n_rows * n; i++)  // ties and -inf are common
                    in[i] = i % 11 == 3 ? -INFINITY : (float)(rand_u32() % 9) - 4.0f;
                for (int64_t r = 0; r < n_rows; r++)
                    for (int64_t i = 0; i < n; i++) {
                        float m = -INFINITY;
                        for (int64_t j = i - kernel / 2; j <= i + kernel / 2; j++)
                            if (j >= 0 && j < n) m = fmaxf(m, in[r * n + j]);
                        want[r * n + i] = m;
                    }
                for (int bi = 0; bi < 2; bi++) {
                    float *got = out_new(n_rows * n);
                    BOTH[bi]->maxpool_rows(inst(BOTH[bi]), got, in, n_rows, n, kernel);
                    CHECK_MSG(same_bits(got, want, n_rows * n) && guard_intact(got, n_rows * n),
                              "%s maxpool_rows rows=%lld n=%lld kernel=%lld", BOTH[bi]->name, (long long)n_rows,
                              (long long)n, (long long)kernel);
                    free(got);
                }
                free(in); free(want);
            }
}

// Brute-force selection order, written apart from both backends: NaN last,
// then score descending (ascending: ascending; -0 == +0), then position ascending.
static int naive_before(scored_pos a, scored_pos b, int ascending) {
    if (isnan(a.score) || isnan(b.score)) return isnan(b.score) && (!isnan(a.score) || a.pos < b.pos);
    if (a.score != b.score) return ascending ? a.score < b.score : a.score > b.score;
    return a.pos < b.pos;
}

static int same_winner(scored_pos a, scored_pos b) {
    return a.pos == b.pos && (a.score == b.score || (isnan(a.score) && isnan(b.score)));
}

// Rows of 4097 keys take the CPU backend's threshold path (a sampled cut-off,
// then only the keys that pass); with positions in ascending order it sorts
// by score alone, so both position orders are tried. Every 16th key scores
// high in the ordered rows, so a strided sample misjudges the cut-off there.
static void test_topk_rows(void) {
    for (int in_order = 0; in_order < 2; in_order++)
    for (int asc = 0; asc < 2; asc++)
    for (int64_t n_rows = 0; n_rows <= 3; n_rows += (n_rows == 0 ? 1 : 2))
        for (int ni = 0; ni < N_ODD; ni++) {
            const int64_t n = ODD_N[ni], ld = n + 2;
            const int64_t ks[3] = {n_rows > 1 ? 0 : 5, 1 + n / 3, n + 10};  // nothing, a part, more than n
            float *scores = floats_new(n_rows * ld);
            int64_t *pos = malloc((size_t)(n + 1) * sizeof(int64_t));
            for (int64_t j = 0; j < n; j++) pos[j] = 3 * j + 1;
            for (int64_t j = n - 1; j > 0 && !in_order; j--) {  // positions not in index order
                int64_t r = rand_below(j + 1), t = pos[j];
                pos[j] = pos[r];
                pos[r] = t;
            }
            for (int64_t i = 0; i < n_rows * ld; i++) {
                const uint32_t r = rand_u32() % 64;
                scores[i] = r == 0 ? NAN : r == 1 ? -INFINITY : r == 2 ? INFINITY : r == 3 ? -0.0f
                          : in_order ? (float)(rand_u32() % 20000) * 1e-3f - 10.0f  // a few ties
                                           + (i % ld % 16 == 0 ? 20.0f : 0.0f)  // a sample every 16th key would overrate
                                     : (float)(r % 9) * 0.5f - 2.0f;                // many ties
            }
            int64_t k_max = 0;
            for (int64_t r = 0; r < n_rows; r++) k_max = ks[r % 3] > k_max ? ks[r % 3] : k_max;
            const int64_t k_stride = k_max + 2;
            int64_t k_host[3], n_out[2][4];
            for (int64_t r = 0; r < n_rows; r++) k_host[r] = ks[r % 3];
            scored_pos *out[2];
            for (int bi = 0; bi < 2; bi++) {
                out[bi] = malloc((size_t)(n_rows * k_stride + 1) * sizeof(scored_pos));
                for (int64_t i = 0; i < n_rows * k_stride; i++) out[bi][i] = (scored_pos){.score = 77.0f, .pos = -9};
                for (int r = 0; r < 4; r++) n_out[bi][r] = -5;
                BOTH[bi]->topk_rows(inst(BOTH[bi]), out[bi], n_out[bi], scores, pos, n_rows, n, ld, k_host, k_stride, asc);
            }
            int ok = n_out[0][n_rows] == -5 && n_out[1][n_rows] == -5;  // no count written past n_rows
            scored_pos *want = malloc((size_t)(n + 1) * sizeof(scored_pos));
            uint8_t *taken = malloc((size_t)(n + 1));
            for (int64_t r = 0; r < n_rows; r++) {
                const int64_t m = k_host[r] < n ? k_host[r] : n;
                memset(taken, 0, (size_t)(n + 1));
                for (int64_t i = 0; i < m; i++) {  // selection sort: the best untaken each time
                    int64_t best = -1;
                    for (int64_t j = 0; j < n; j++) {
                        scored_pos c = {scores[r * ld + j], pos[j]};
                        if (!taken[j] && (best < 0 || naive_before(c, (scored_pos){scores[r * ld + best], pos[best]}, asc)))
                            best = j;
                    }
                    taken[best] = 1;
                    want[i] = (scored_pos){scores[r * ld + best], pos[best]};
                }
                for (int bi = 0; bi < 2; bi++) {
                    ok &= n_out[bi][r] == m;
                    for (int64_t i = 0; i < m && n_out[bi][r] == m; i++) ok &= same_winner(out[bi][r * k_stride + i], want[i]);
                    for (int64_t i = m; i < k_stride; i++)  // nothing written past the count
                        ok &= out[bi][r * k_stride + i].pos == -9;
                }
            }
            CHECK_MSG(ok, "topk_rows rows=%lld n=%lld ascending=%d positions in order=%d", (long long)n_rows,
                      (long long)n, asc, in_order);
            free(scores); free(pos); free(out[0]); free(out[1]); free(want); free(taken);
        }
}

// The same ops through cpu_strict (buffers it allocates, uploads and
// downloads) give what cpu gives on host buffers, bit for bit.
static void test_strict_same_results(void) {
    backend s;
    rc_err err;
    CHECK(backend_init(&s, &backend_cpu_strict, 2, -1, &err) == 0);
    const int64_t n_kv = 2, group = 3, n_q = n_kv * group, hd = 64, n_keys = 300, n_slots = 320;
    const size_t kv_bytes = (size_t)(n_kv * n_slots * hd) * sizeof(uint16_t);
    // host copies for the cpu run
    float *k = normal_new(n_keys * n_kv * hd, 1.0f), *v = normal_new(n_keys * n_kv * hd, 1.0f);
    float *q = normal_new(n_q * hd, 2.0f), *y = normal_new(n_q * hd, 1.0f);
    int64_t slot[2 * 300], pos[300], kk[2] = {17, 400}, n_sel[2][2];
    for (int64_t t = 0; t < n_keys; t++) {
        pos[t] = t;
        for (int64_t h = 0; h < n_kv; h++) slot[t * n_kv + h] = t;
    }
    uint16_t *kc = calloc(1, kv_bytes), *vc = calloc(1, kv_bytes);
    float o[2][6 * 64], lse[2][6], sc[2][6 * 300], red[2][2 * 300], pooled[2][2 * 300], x[2][6 * 64];
    scored_pos top[2][2 * 400];
    {  // cpu on host memory
        const backend *b = &g_cpu;
        kv_view kd = {kc, KV_F16, n_slots * hd}, vd = {vc, KV_F16, n_slots * hd};
        backend_cpu.kv_write(b, &kd, &vd, slot, k, v, n_keys, n_kv, hd);
        backend_cpu.attn_decode_scores(b, o[0], lse[0], sc[0], q, &kd, &vd, n_keys, n_q, n_kv, hd, 0.125f);
        backend_cpu.score_reduce(b, red[0], sc[0], lse[0], n_q, n_kv, n_keys, n_keys, 0, SCORE_MAX_LOGP);
        backend_cpu.maxpool_rows(b, pooled[0], red[0], n_kv, n_keys, 7);
        backend_cpu.topk_rows(b, top[0], n_sel[0], pooled[0], pos, n_kv, n_keys, n_keys, kk, 400, 0);
        memcpy(x[0], q, sizeof(x[0]));
        backend_cpu.add(b, x[0], y, n_q * hd);
    }
    {  // strict: everything through its buffers
        const backend *b = &s;
        const backend_ops *be = s.ops;
        void *kd_buf = be->alloc(b, kv_bytes), *vd_buf = be->alloc(b, kv_bytes);
        float *dk = backend_upload_new(b, k, (size_t)(n_keys * n_kv * hd) * 4);
        float *dv = backend_upload_new(b, v, (size_t)(n_keys * n_kv * hd) * 4);
        float *dq = backend_upload_new(b, q, sizeof(x[0])), *dy = backend_upload_new(b, y, sizeof(x[0]));
        float *dout = be->alloc(b, sizeof(o[1])), *dl = be->alloc(b, sizeof(lse[1])), *dsc = be->alloc(b, sizeof(sc[1]));
        float *dred = be->alloc(b, sizeof(red[1])), *dpool = be->alloc(b, sizeof(pooled[1]));
        kv_view kd = {kd_buf, KV_F16, n_slots * hd}, vd = {vd_buf, KV_F16, n_slots * hd};
        be->kv_write(b, &kd, &vd, slot, dk, dv, n_keys, n_kv, hd);
        be->attn_decode_scores(b, dout, dl, dsc, dq, &kd, &vd, n_keys, n_q, n_kv, hd, 0.125f);
        be->score_reduce(b, dred, dsc, dl, n_q, n_kv, n_keys, n_keys, 0, SCORE_MAX_LOGP);
        be->maxpool_rows(b, dpool, dred, n_kv, n_keys, 7);
        be->topk_rows(b, top[1], n_sel[1], dpool, pos, n_kv, n_keys, n_keys, kk, 400, 0);
        be->add(b, dq, dy, n_q * hd);
        be->download(b, o[1], dout, sizeof(o[1]));
        be->download(b, lse[1], dl, sizeof(lse[1]));
        be->download(b, pooled[1], dpool, sizeof(pooled[1]));
        be->download(b, x[1], dq, sizeof(x[1]));
        CHECK(be->synchronize(b, &err) == 0);
        void *bufs[] = {kd_buf, vd_buf, dk, dv, dq, dy, dout, dl, dsc, dred, dpool};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) be->free(b, bufs[i]);
    }
    CHECK_MSG(same_bits(o[0], o[1], n_q * hd) && same_bits(lse[0], lse[1], n_q), "strict attention == cpu");
    CHECK_MSG(same_bits(pooled[0], pooled[1], n_kv * n_keys), "strict score_reduce + maxpool == cpu");
    CHECK_MSG(same_bits(x[0], x[1], n_q * hd), "strict add == cpu");
    int ok = n_sel[0][0] == 17 && n_sel[1][0] == 17 && n_sel[0][1] == 300 && n_sel[1][1] == 300;
    for (int64_t r = 0; r < 2 && ok; r++)
        for (int64_t i = 0; i < n_sel[0][r]; i++) ok &= same_winner(top[0][r * 400 + i], top[1][r * 400 + i]);
    CHECK_MSG(ok, "strict topk_rows == cpu");
    backend_shutdown(&s);
    free(k); free(v); free(q); free(y); free(kc); free(vc);
}

// Two instances with 1 and 2 threads, called alternately, keep their own
// counts: a kernel that cannot get its per-thread scratch reports the size
// it asked for (threads x per-thread bytes) at synchronize, so a thread count
// held in a global would give both instances the same size. Results agree
// bit for bit, and the error is sticky until synchronize clears it.
static void test_two_instances(void) {
    backend one, two;
    rc_err err;
    CHECK(backend_init(&one, &backend_cpu, 1, -1, &err) == 0);
    CHECK(backend_init(&two, &backend_cpu, 2, -1, &err) == 0);
    const int64_t n_huge = (int64_t)1 << 44;  // 2^44 keys x 16 bytes x threads: more than the address space
    const int64_t k1 = 1;
    int64_t n_out = -1;
    float dummy = 0.0f;
    int64_t pos0 = 0;
    char msg[2][2][1024];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            const backend *b = i ? &two : &one;
            backend_cpu.topk_rows(b, NULL, &n_out, &dummy, &pos0, 1, n_huge, 0, &k1, 0, 0);
            CHECK(n_out == 0);
            // later work on the same instance does not overwrite the first error
            float a[3] = {1, 2, 3}, c[3] = {1, 1, 1};
            backend_cpu.add(b, a, c, 3);
        }
        for (int i = 0; i < 2; i++) {
            const backend *b = i ? &two : &one;
            CHECK(backend_cpu.synchronize(b, &err) == -1);
            snprintf(msg[round][i], sizeof msg[round][i], "%s", err.msg);
            CHECK_MSG(backend_cpu.synchronize(b, &err) == 0, "synchronize clears the error");
        }
    }
    const unsigned long long per_thread = (unsigned long long)n_huge * 2 * 8;
    char want[2][128];
    snprintf(want[0], sizeof want[0], "topk_rows could not allocate %llu bytes", per_thread);
    snprintf(want[1], sizeof want[1], "topk_rows could not allocate %llu bytes", 2 * per_thread);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 2; i++)
            CHECK_MSG(strstr(msg[round][i], want[i]) != NULL, "instance with %d thread(s) says \"%s\", wants \"%s\"",
                      i + 1, msg[round][i], want[i]);
    CHECK(one.n_threads == 1 && two.n_threads == 2);

    // Same results whatever the thread count, interleaved.
    const int64_t n_kv = 3, n = 4097;
    float *scores = normal_new(n_kv * n, 1.0f), *p1 = out_new(n_kv * n), *p2 = out_new(n_kv * n);
    int64_t *pos = malloc((size_t)n * sizeof(int64_t)), kk[3] = {100, 5, 4097}, c1[3], c2[3];
    for (int64_t j = 0; j < n; j++) pos[j] = j;
    scored_pos *t1 = malloc((size_t)(n_kv * n) * sizeof(scored_pos)), *t2 = malloc((size_t)(n_kv * n) * sizeof(scored_pos));
    backend_cpu.maxpool_rows(&one, p1, scores, n_kv, n, 7);
    backend_cpu.maxpool_rows(&two, p2, scores, n_kv, n, 7);
    backend_cpu.topk_rows(&two, t2, c2, p2, pos, n_kv, n, n, kk, n, 1);
    backend_cpu.topk_rows(&one, t1, c1, p1, pos, n_kv, n, n, kk, n, 1);
    int ok = same_bits(p1, p2, n_kv * n);
    for (int64_t r = 0; r < n_kv; r++) {
        ok &= c1[r] == c2[r] && c1[r] == kk[r];
        for (int64_t i = 0; i < c1[r] && ok; i++) ok &= same_winner(t1[r * n + i], t2[r * n + i]);
    }
    CHECK_MSG(ok, "1 and 2 threads give the same maxpool and top-K");
    free(scores); free(p1); free(p2); free(pos); free(t1); free(t2);
    backend_shutdown(&one);
    backend_shutdown(&two);
    CHECK(one.ops == NULL && one.impl == NULL);  // shutdown leaves the instance empty
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Runs one test function and reports its wall time.
#define RUN(call)                                                     \
    do {                                                              \
        double t_ = now_s();                                          \
        call;                                                         \
        printf("  %-48s %7.3f s\n", #call, now_s() - t_);            \
    } while (0)

// With --simd-only: only the tests of ops whose CPU kernels differ by path
// (matvec, decode attention, swiglu, kv_write), for the runs that force each path.
int main(int argc, char **argv) {
    double t0 = now_s();
    const int all = !(argc > 1 && !strcmp(argv[1], "--simd-only"));
    rc_err err;
    if (backend_init(&g_ref, &backend_cpu_ref, 1, -1, &err) || backend_init(&g_cpu, &backend_cpu, 2, -1, &err)) {
        fprintf(stderr, "test_ops: %s\n", err.msg);
        return 1;
    }
    const int path_rc = test_check_kernel_path("test_ops");
    if (path_rc) return path_rc;

    if (all) RUN(test_harness_detects());
    if (all) RUN(test_sensitivity());

    if (all) RUN(test_spec_attention());
    if (all) RUN(test_spec_rmsnorm_swiglu());
    if (all) RUN(test_spec_matmul());
    if (all) RUN(test_rope_matrix(&backend_cpu_ref));
    if (all) RUN(test_rope_matrix(&backend_cpu));
    if (all) RUN(test_rope_properties(&backend_cpu_ref));
    if (all) RUN(test_rope_properties(&backend_cpu));
    if (all) RUN(test_attention_closed_forms(&backend_cpu_ref));
    RUN(test_attention_closed_forms(&backend_cpu));
    if (all) RUN(test_kv_row_bytes());
    if (all) RUN(test_kv_quantizer());
    if (all) RUN(test_kv_block_closed_forms());
    if (all) RUN(test_spec_attention_blocks());

    if (all) RUN(test_supports());
    if (all) RUN(test_rmsnorm_vs_ref());
    RUN(test_swiglu_vs_ref());
    if (all) RUN(test_rope_vs_ref());
    RUN(test_matmul_vs_ref());
    RUN(test_decode_vs_ref());
    RUN(test_thread_count_invariance());
    if (all) RUN(test_prefill_vs_ref());
    if (all) RUN(test_merge());

    RUN(test_shard_merge());
    if (all) RUN(test_argmax());

    if (all) RUN(test_memory());
    if (all) RUN(test_add_vs_closed_form());
    if (all) RUN(test_embed());
    RUN(test_kv_write());
    RUN(test_kv_write_blocks());
    if (all) RUN(test_copy_rows_2d());
    if (all) RUN(test_mean_heads());
    if (all) RUN(test_score_reduce());
    if (all) RUN(test_maxpool_rows());
    if (all) RUN(test_topk_rows());
    if (all) RUN(test_strict_same_results());
    if (all) RUN(test_two_instances());
    CHECK_MSG(backend_cpu.synchronize(&g_cpu, &err) == 0, "no kernel ran out of scratch: %s", err.msg);
    backend_shutdown(&g_cpu);
    backend_shutdown(&g_ref);

    printf("%-24s %6s %12s %14s\n", "op", "cases", "worst nmse", "worst |d|/tol");
    for (int i = 0; i < ST_COUNT; i++)
        printf("%-24s %6d %12.3g %14.3g\n", g_stats[i].name, g_stats[i].cases, g_stats[i].worst_nmse, g_stats[i].worst_ratio);
    printf("test_ops: %.2f s\n", now_s() - t0);
    TEST_MAIN_END();
}
