// The attention and selection ops of the CUDA backend (attn_decode,
// attn_decode_scores, attn_prefill, merge, score_reduce, maxpool_rows,
// topk_rows) against backend_cpu_ref, through the generic op harness: inputs
// uploaded, outputs NaN-prefilled with guard words, KV caches NaN outside the
// valid rows. In the SIMT emulator (RECALL_EMU_SEED picks the thread
// interleaving) and, in a CUDA build, on a real GPU; 77 when none is usable.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/backend_cuda.h"
#include "check.h"
#include "opcheck.h"
#ifdef RC_SIMT_EMU
#include "kernels/emu/emu_runtime.h"  // rc_emu_set_seed: the second run gets another thread schedule
#endif

static backend g_ref, g_cu;
static const backend_ops *CU = &backend_cuda;

enum { ST_DECODE, ST_SCORES, ST_PREFILL, ST_MERGE, ST_REDUCE, ST_COUNT };
static op_stats g_stats[ST_COUNT] = {
    {"attn_decode", 0, 0, 0}, {"attn_decode_scores", 0, 0, 0}, {"attn_prefill", 0, 0, 0},
    {"merge", 0, 0, 0}, {"score_reduce", 0, 0, 0},
};

// Fails the test when the backend recorded an error (sticky): one line with it.
static void check_sync(const char *what) {
    rc_err err = {{0}};
    int rc = CU->synchronize(&g_cu, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
}

// Fetches n floats of a device output into a new host array; the guards must hold.
static float *fetch(const float *dev, int64_t n, const char *what) {
    int guards = 0;
    float *h = dev_fetch(&g_cu, dev, n, &guards);
    CHECK_MSG(guards, "%s: guard words after the output were overwritten", what);
    return h;
}

// The cache on the device, optionally repacked with a head stride that is a
// multiple of 16 bytes (the kernels' vector path; kv_new's stride is odd on
// purpose, which takes the scalar path). NaN outside the valid rows either way.
static kv_view dev_kv_layout(const test_kv *kv, int64_t first, int aligned, void **buf) {
    if (!aligned) return dev_kv(&g_cu, kv, first, buf);
    const size_t eb = kv_bytes(kv->elem, 1);  // f16 and f32 only here
    const int64_t hs = (kv->n_valid + 2) * kv->head_dim, n = kv->n_kv_heads * hs;
    uint8_t *h = malloc((size_t)n * eb);
    for (int64_t i = 0; i < n; i++) {
        if (kv->elem == KV_F16) ((uint16_t *)h)[i] = 0x7e00;
        else ((float *)h)[i] = NAN;
    }
    for (int64_t k = 0; k < kv->n_kv_heads; k++)
        memcpy(h + (size_t)(k * hs) * eb, (const uint8_t *)kv->data + (size_t)(k * kv->head_stride) * eb,
               (size_t)(kv->n_valid * kv->head_dim) * eb);
    *buf = dev_upload(&g_cu, h, (size_t)n * eb);
    free(h);
    return (kv_view){(const uint8_t *)*buf + (size_t)(first * kv->head_dim) * eb, kv->elem, hs};
}

// One decode case: keys [first, first + n_keys) of a cache, with and without scores.
static void decode_case(int elem, int64_t n_keys, int64_t n_q, int64_t n_kv, int64_t hd, int aligned) {
    const int64_t first = n_keys > 2 ? 2 : 0;
    test_kv k = kv_new(elem, n_kv, first + n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, first + n_keys, hd, -1.0f, 1.0f);
    float *q = normal_new(n_q * hd, 1.0f);
    const float scale = 1.0f / sqrtf((float)hd);
    float *o_ref = floats_new(n_q * hd), *l_ref = floats_new(n_q), *s_ref = floats_new(n_q * n_keys + 1);
    kv_view hk = kv_view_at(&k, first), hv = kv_view_at(&v, first);
    backend_cpu_ref.attn_decode_scores(&g_ref, o_ref, l_ref, s_ref, q, &hk, &hv, n_keys, n_q, n_kv, hd, scale);

    void *kb, *vb;
    kv_view dk = dev_kv_layout(&k, first, aligned, &kb), dv = dev_kv_layout(&v, first, aligned, &vb);
    float *dq = dev_floats(&g_cu, q, n_q * hd);
    char what[160];
    for (int with_scores = 0; with_scores < 2; with_scores++) {
        snprintf(what, sizeof what, "%s %s n_keys=%lld n_q=%lld n_kv=%lld hd=%lld %s", with_scores ? "attn_decode_scores" : "attn_decode",
                 kv_name(elem), (long long)n_keys, (long long)n_q, (long long)n_kv, (long long)hd,
                 aligned ? "aligned" : "odd stride");
        float *d_o = dev_out(&g_cu, n_q * hd), *d_l = dev_out(&g_cu, n_q), *d_s = dev_out(&g_cu, n_q * n_keys);
        if (with_scores) CU->attn_decode_scores(&g_cu, d_o, d_l, d_s, dq, &dk, &dv, n_keys, n_q, n_kv, hd, scale);
        else CU->attn_decode(&g_cu, d_o, d_l, dq, &dk, &dv, n_keys, n_q, n_kv, hd, scale);
        check_sync(what);
        float *o = fetch(d_o, n_q * hd, what), *l = fetch(d_l, n_q, what), *s = fetch(d_s, n_q * n_keys, what);
        op_stats *st = &g_stats[with_scores ? ST_SCORES : ST_DECODE];
        CHECK(compare_report(st, what, o, o_ref, n_q * hd, TOL_ATTN, NULL));
        CHECK(compare_report(st, what, l, l_ref, n_q, TOL_LSE, NULL));
        if (with_scores) CHECK(compare_report(st, what, s, s_ref, n_q * n_keys, TOL_ATTN, NULL));
        else CHECK_MSG(n_keys == 0 || isnan(s[0]), "%s: scores written by attn_decode", what);
        free(o); free(l); free(s);
        CU->free(&g_cu, d_o); CU->free(&g_cu, d_l); CU->free(&g_cu, d_s);
    }
    CU->free(&g_cu, kb); CU->free(&g_cu, vb); CU->free(&g_cu, dq);
    free(q); free(o_ref); free(l_ref); free(s_ref);
    kv_free(&k); kv_free(&v);
}

static void test_decode(void) {
    const int64_t ns[] = {0, 1, 7, 33, 4097}, ratios[] = {1, 3, 4, 8}, hds[] = {64, 128};
    int c = 0;
    for (int ni = 0; ni < 5; ni++)
        for (int ri = 0; ri < 4; ri++)
            for (int hi = 0; hi < 2; hi++)
                for (int elem = 0; elem < 2; elem++, c++) {
                    // the long shard (the one with splits) on half of the combinations, both types and dims
                    if (ns[ni] == 4097 && (ri + hi + elem) % 2 != 0) continue;
                    const int64_t n_kv = ratios[ri] == 8 ? 1 : 2;
                    decode_case(elem, ns[ni], n_kv * ratios[ri], n_kv, hds[hi], (c / 2) % 2);
                }
    decode_case(KV_F32, 300, 4, 2, 256, 1);   // the largest head_dim: V reuses K's shared buffer
    decode_case(KV_F16, 300, 40, 2, 96, 0);   // a group wider than one block's rows (tile kernel)
    decode_case(KV_F16, 1000, 24, 2, 128, 1); // the same in the decode kernel (12 heads: two blocks per group)
    decode_case(KV_F32, 1000, 24, 2, 64, 0);
    decode_case(KV_F16, 77, 6, 2, 12, 1);     // the tiny models' odd head dims: tile kernel, scalar tails
    decode_case(KV_F32, 4097, 3, 3, 6, 0);
    decode_case(KV_F16, 300, 9, 3, 20, 0);
}

static void prefill_case(int elem, int64_t n_tok, int64_t pos0, int64_t n_q, int64_t n_kv, int64_t hd, int aligned,
                         int with_lse) {
    const int64_t n_keys = pos0 + n_tok;
    test_kv k = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(elem, n_kv, n_keys, hd, -1.0f, 1.0f);
    float *q = normal_new(n_tok * n_q * hd, 1.0f);
    const float scale = 1.0f / sqrtf((float)hd);
    float *o_ref = floats_new(n_tok * n_q * hd), *l_ref = floats_new(n_tok * n_q + 1);
    kv_view hk = kv_view_at(&k, 0), hv = kv_view_at(&v, 0);
    backend_cpu_ref.attn_prefill(&g_ref, o_ref, l_ref, q, n_tok, pos0, &hk, &hv, n_q, n_kv, hd, scale);
    void *kb, *vb;
    kv_view dk = dev_kv_layout(&k, 0, aligned, &kb), dv = dev_kv_layout(&v, 0, aligned, &vb);
    float *dq = dev_floats(&g_cu, q, n_tok * n_q * hd), *d_o = dev_out(&g_cu, n_tok * n_q * hd);
    float *d_l = dev_out(&g_cu, n_tok * n_q);
    char what[160];
    snprintf(what, sizeof what, "attn_prefill %s n_tok=%lld pos0=%lld n_q=%lld n_kv=%lld hd=%lld %s%s", kv_name(elem),
             (long long)n_tok, (long long)pos0, (long long)n_q, (long long)n_kv, (long long)hd,
             aligned ? "aligned" : "odd stride", with_lse ? "" : " lse=NULL");
    CU->attn_prefill(&g_cu, d_o, with_lse ? d_l : NULL, dq, n_tok, pos0, &dk, &dv, n_q, n_kv, hd, scale);
    check_sync(what);
    float *o = fetch(d_o, n_tok * n_q * hd, what), *l = fetch(d_l, n_tok * n_q, what);
    CHECK(compare_report(&g_stats[ST_PREFILL], what, o, o_ref, n_tok * n_q * hd, TOL_ATTN, NULL));
    if (with_lse) CHECK(compare_report(&g_stats[ST_PREFILL], what, l, l_ref, n_tok * n_q, TOL_LSE, NULL));
    else CHECK_MSG(n_tok == 0 || isnan(l[0]), "%s: lse written though NULL was passed", what);
    free(o); free(l);
    CU->free(&g_cu, kb); CU->free(&g_cu, vb); CU->free(&g_cu, dq); CU->free(&g_cu, d_o); CU->free(&g_cu, d_l);
    free(q); free(o_ref); free(l_ref);
    kv_free(&k); kv_free(&v);
}

static void test_prefill(void) {
    const int64_t toks[] = {1, 7, 33}, pos0s[] = {0, 5}, ratios[] = {1, 3, 4, 8};
    int c = 0;
    for (int ti = 0; ti < 3; ti++)
        for (int pi = 0; pi < 2; pi++)
            for (int ri = 0; ri < 4; ri++, c++) {
                const int64_t n_kv = ratios[ri] == 8 ? 1 : 2;
                prefill_case(c % 2, toks[ti], pos0s[pi], n_kv * ratios[ri], n_kv, (c / 2) % 2 ? 128 : 64, (c / 3) % 2,
                             c % 5 != 4);
            }
    // a long prefix (4097 keys for the last query); the emulator makes these the costly cases
    prefill_case(KV_F16, 33, 4064, 4, 1, 128, 1, 1);
    prefill_case(KV_F32, 7, 4090, 3, 3, 64, 0, 1);
    prefill_case(KV_F16, 0, 3, 2, 1, 64, 1, 1);     // no tokens: nothing to do, nothing written
    prefill_case(KV_F32, 20, 3, 2, 1, 256, 1, 1);   // head_dim 256
    prefill_case(KV_F16, 33, 9, 6, 2, 12, 1, 1);    // odd head dims
    prefill_case(KV_F32, 17, 40, 2, 1, 5, 0, 1);
}

// o_parts random, NaN in the empty parts (lse -inf: the merge must ignore them),
// lse spread over ~20 nats so some weights underflow.
static void test_merge(void) {
    const int64_t parts[] = {0, 1, 3, 33}, hds[] = {64, 128, 7};
    for (int pi = 0; pi < 4; pi++)
        for (int hi = 0; hi < 3; hi++)
            for (int64_t n_heads = 1; n_heads <= 3; n_heads += 2) {
                const int64_t np = parts[pi], hd = hds[hi];
                float *op = floats_new(np * n_heads * hd + 1), *lp = floats_new(np * n_heads + 1);
                for (int64_t i = 0; i < np * n_heads; i++) {
                    const int empty = rand_below(4) == 0 || (i % n_heads == 1);  // head 1: every part empty
                    lp[i] = empty ? -INFINITY : rand_uniform(-10.0f, 10.0f);
                    for (int64_t d = 0; d < hd; d++) op[i * hd + d] = empty ? NAN : rand_uniform(-1.0f, 1.0f);
                }
                float *o_ref = floats_new(n_heads * hd), *l_ref = floats_new(n_heads);
                backend_cpu_ref.merge(&g_ref, o_ref, l_ref, op, lp, np, n_heads, hd);
                float *d_op = dev_floats(&g_cu, op, np * n_heads * hd), *d_lp = dev_floats(&g_cu, lp, np * n_heads);
                float *d_o = dev_out(&g_cu, n_heads * hd), *d_l = dev_out(&g_cu, n_heads);
                char what[96];
                snprintf(what, sizeof what, "merge n_parts=%lld n_heads=%lld hd=%lld", (long long)np, (long long)n_heads,
                         (long long)hd);
                CU->merge(&g_cu, d_o, d_l, d_op, d_lp, np, n_heads, hd);
                check_sync(what);
                float *o = fetch(d_o, n_heads * hd, what), *l = fetch(d_l, n_heads, what);
                CHECK(compare_report(&g_stats[ST_MERGE], what, o, o_ref, n_heads * hd, TOL_FP32, NULL));
                CHECK(compare_report(&g_stats[ST_MERGE], what, l, l_ref, n_heads, TOL_LSE, NULL));
                for (int64_t h = 0; h < n_heads; h++)  // an all-empty head: o = +0 exactly, lse = -inf
                    if (l_ref[h] == -INFINITY) {
                        int zero = l[h] == -INFINITY;
                        for (int64_t d = 0; d < hd; d++) zero &= f32_bits(o[h * hd + d]) == 0;
                        CHECK_MSG(zero, "%s: empty head %lld is not (0, -inf)", what, (long long)h);
                    }
                free(o); free(l); free(op); free(lp); free(o_ref); free(l_ref);
                CU->free(&g_cu, d_op); CU->free(&g_cu, d_lp); CU->free(&g_cu, d_o); CU->free(&g_cu, d_l);
            }
}

static void test_score_reduce(void) {
    const int64_t ns[] = {1, 7, 33, 4097};
    for (int mode = 0; mode < 4; mode++)
        for (int ni = 0; ni < 4; ni++)
            for (int64_t G = 1; G <= 4; G += 3) {
                const int64_t n = ns[ni], rows = 2, H = rows * G, ld = n + 3, n_acc = mode == 3 ? n - n / 3 : 0;
                float *raw = floats_new(H * ld), *lse = floats_new(H), *init = floats_new(rows * n);
                for (int64_t i = 0; i < H * ld; i++) raw[i] = i % ld >= n ? NAN : rand_uniform(-8.0f, 2.0f);
                for (int64_t h = 0; h < H; h++) lse[h] = h == H - 1 ? -INFINITY : rand_uniform(1.0f, 4.0f);
                for (int64_t i = 0; i < rows * n; i++) init[i] = rand_uniform(0.0f, 1.0f);
                float *want = floats_new(rows * n);
                memcpy(want, init, (size_t)(rows * n) * sizeof(float));
                backend_cpu_ref.score_reduce(&g_ref, want, raw, lse, H, rows, n, ld, n_acc, mode);
                float *d_raw = dev_floats(&g_cu, raw, H * ld), *d_lse = dev_floats(&g_cu, lse, H);
                float *d_out = dev_out(&g_cu, rows * n);
                if (mode == 3) CU->upload(&g_cu, d_out, init, (size_t)(rows * n) * sizeof(float));
                char what[96];
                snprintf(what, sizeof what, "score_reduce mode %d G=%lld n=%lld n_acc=%lld", mode, (long long)G,
                         (long long)n, (long long)n_acc);
                CU->score_reduce(&g_cu, d_out, d_raw, d_lse, H, rows, n, ld, n_acc, mode);
                check_sync(what);
                float *got = fetch(d_out, rows * n, what);
                if (mode == 3)  // ACC: columns from n_acc on are unchanged (still the initial values)
                    CHECK(compare_report(&g_stats[ST_REDUCE], what, got, want, rows * n, TOL_FP32, NULL));
                else
                    CHECK(compare_report(&g_stats[ST_REDUCE], what, got, want, rows * n, TOL_FP32, NULL));
                free(got); free(raw); free(lse); free(init); free(want);
                CU->free(&g_cu, d_raw); CU->free(&g_cu, d_lse); CU->free(&g_cu, d_out);
            }
}

static void test_maxpool(void) {
    const int64_t ns[] = {1, 7, 33, 4097}, kernels[] = {1, 3, 7, 129, 131, 8193};
    for (int64_t n_rows = 1; n_rows <= 3; n_rows += 2)
        for (int ni = 0; ni < 4; ni++)
            for (int ki = 0; ki < 6; ki++) {
                const int64_t n = ns[ni], kernel = kernels[ki];
                float *in = floats_new(n_rows * n), *want = floats_new(n_rows * n);
                for (int64_t i = 0; i < n_rows * n; i++) {  // ties, -inf, NaN (never wins) and -0 vs +0
                    const uint32_t r = rand_u32() % 23;
                    in[i] = r == 0 ? -INFINITY : r == 1 ? NAN : r == 2 ? -0.0f : (float)(rand_u32() % 9) - 4.0f;
                }
                backend_cpu_ref.maxpool_rows(&g_ref, want, in, n_rows, n, kernel);
                float *d_in = dev_floats(&g_cu, in, n_rows * n), *d_out = dev_out(&g_cu, n_rows * n);
                char what[96];
                snprintf(what, sizeof what, "maxpool_rows rows=%lld n=%lld kernel=%lld", (long long)n_rows, (long long)n,
                         (long long)kernel);
                CU->maxpool_rows(&g_cu, d_out, d_in, n_rows, n, kernel);
                check_sync(what);
                float *got = fetch(d_out, n_rows * n, what);
                // the reference keeps the first of equal values, so even the sign of a zero must agree
                CHECK_MSG(same_bits(got, want, n_rows * n), "%s", what);
                free(got); free(in); free(want);
                CU->free(&g_cu, d_in); CU->free(&g_cu, d_out);
            }
}

// One top-K case on n candidates per row drawn from few values (ties at the
// threshold are the rule), NaN, +-inf and -0 among them; positions shuffled.
static void topk_case(int64_t n_rows, int64_t n, const int64_t *k_host, int asc, int n_values) {
    const int64_t ld = n + 5;
    float *scores = floats_new(n_rows * ld + 1);
    int64_t *pos = malloc((size_t)(n + 1) * sizeof(int64_t));
    for (int64_t j = 0; j < n; j++) pos[j] = 3 * j + 1 + (j % 2 ? (int64_t)1 << 31 : 0);  // both halves of 32 bits
    for (int64_t j = n - 1; j > 0; j--) {
        int64_t r = rand_below(j + 1), t = pos[j];
        pos[j] = pos[r];
        pos[r] = t;
    }
    for (int64_t i = 0; i < n_rows * ld; i++) {
        const uint32_t r = rand_u32() % 64;
        scores[i] = i % ld >= n ? NAN : r == 0 ? NAN : r == 1 ? -INFINITY : r == 2 ? INFINITY : r == 3 ? -0.0f
                  : r == 4 ? 0.0f : (float)(rand_u32() % (uint32_t)n_values) * 0.25f - 1.0f;
    }
    int64_t k_max = 0;
    for (int64_t r = 0; r < n_rows; r++) k_max = k_host[r] > k_max ? k_host[r] : k_max;
    const int64_t k_stride = (k_max < n ? k_max : n) + 2;
    scored_pos *want = malloc((size_t)(n_rows * k_stride + 1) * sizeof(scored_pos));
    scored_pos *got = malloc((size_t)(n_rows * k_stride + 1) * sizeof(scored_pos));
    int64_t *n_want = malloc((size_t)(n_rows + 1) * sizeof(int64_t)), *n_got = malloc((size_t)(n_rows + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n_rows * k_stride; i++) got[i] = (scored_pos){.score = 77.0f, .pos = -9};
    for (int64_t r = 0; r <= n_rows; r++) n_got[r] = -5;
    backend_cpu_ref.topk_rows(&g_ref, want, n_want, scores, pos, n_rows, n, ld, k_host, k_stride, asc);
    float *d_sc = dev_floats(&g_cu, scores, n_rows * ld);
    CU->topk_rows(&g_cu, got, n_got, d_sc, pos, n_rows, n, ld, k_host, k_stride, asc);
    char what[96];
    snprintf(what, sizeof what, "topk_rows rows=%lld n=%lld k0=%lld ascending=%d values=%d", (long long)n_rows,
             (long long)n, (long long)k_host[0], asc, n_values);
    check_sync(what);
    int ok = n_got[n_rows] == -5;  // no count past n_rows
    for (int64_t r = 0; r < n_rows; r++) {
        ok &= n_got[r] == n_want[r];
        for (int64_t i = 0; i < n_want[r] && n_got[r] == n_want[r]; i++) {
            const scored_pos a = got[r * k_stride + i], b = want[r * k_stride + i];
            // exact: the same position and the same score bits (NaN: any NaN)
            ok &= a.pos == b.pos && (isnan(a.score) ? isnan(b.score) : f32_bits(a.score) == f32_bits(b.score));
        }
        for (int64_t i = n_want[r]; i < k_stride; i++) ok &= got[r * k_stride + i].pos == -9;
    }
    CHECK_MSG(ok, "%s", what);
    CU->free(&g_cu, d_sc);
    free(scores); free(pos); free(want); free(got); free(n_want); free(n_got);
}

static void test_topk(void) {
    const int64_t ns[] = {1, 7, 33, 4097};
    for (int asc = 0; asc < 2; asc++)
        for (int ni = 0; ni < 4; ni++) {
            const int64_t n = ns[ni];
            const int64_t ks[4] = {0, 1 + n / 3, n + 10, n};  // nothing, a part, more than n, all
            topk_case(4, n, ks, asc, 9);
            const int64_t k1[1] = {1 + n / 2};
            topk_case(1, n, k1, asc, 400000);  // few ties: decided by the score words alone
        }
    const int64_t big[3] = {777, 1, 30000};  // several blocks per row, ties at the threshold
    topk_case(3, 70001, big, 0, 5);
    topk_case(3, 70001, big, 1, 5);
    const int64_t huge[1] = {4099};  // a million candidates, a threshold inside a tie of ~100K
    topk_case(1, 1000003, huge, 0, 9);
}

// The same inputs twice give bitwise-equal outputs. In the emulator the second
// run uses another schedule seed (the interleaving is a function of the seed),
// so the reductions and merges cannot depend on the order threads run in.
static void reseed(int run) {
#ifdef RC_SIMT_EMU
    static unsigned long long first;
    if (run == 0) first = rc_emu_get_seed();
    rc_emu_set_seed(run == 0 ? first : first + 7919);
    if (run == 2) rc_emu_set_seed(first);
#else
    (void)run;
#endif
}

static void test_determinism(void) {
    const int64_t n_keys = 4097, n_q = 8, n_kv = 2, hd = 128, n_tok = 33;
    test_kv k = kv_new(KV_F16, n_kv, n_keys, hd, -1.0f, 1.0f), v = kv_new(KV_F16, n_kv, n_keys, hd, -1.0f, 1.0f);
    float *q = normal_new(n_tok * n_q * hd, 1.0f);
    void *kb, *vb;
    kv_view dk = dev_kv_layout(&k, 0, 1, &kb), dv = dev_kv_layout(&v, 0, 1, &vb);
    float *dq = dev_floats(&g_cu, q, n_tok * n_q * hd);
    const int64_t n_sc = 3 * 20000;
    float *sc = floats_new(n_sc);
    for (int64_t i = 0; i < n_sc; i++) sc[i] = (float)(rand_u32() % 7);  // ties: positions decide
    int64_t *pos = malloc(20000 * sizeof(int64_t)), kk[3] = {5, 333, 19999}, n_out[2][3];
    for (int64_t j = 0; j < 20000; j++) pos[j] = (j * 7919) % 20011;
    scored_pos *win[2];
    float *d_sc = dev_floats(&g_cu, sc, n_sc);
    float *o[2], *l[2], *s[2], *po[2], *pl[2];
    for (int t = 0; t < 2; t++) {
        reseed(t);
        float *d_o = dev_out(&g_cu, n_q * hd), *d_l = dev_out(&g_cu, n_q), *d_s = dev_out(&g_cu, n_q * n_keys);
        float *d_po = dev_out(&g_cu, n_tok * n_q * hd), *d_pl = dev_out(&g_cu, n_tok * n_q);
        CU->attn_decode_scores(&g_cu, d_o, d_l, d_s, dq, &dk, &dv, n_keys, n_q, n_kv, hd, 0.125f);
        CU->attn_prefill(&g_cu, d_po, d_pl, dq, n_tok, n_keys - n_tok, &dk, &dv, n_q, n_kv, hd, 0.125f);
        win[t] = malloc(3 * 20000 * sizeof(scored_pos));
        CU->topk_rows(&g_cu, win[t], n_out[t], d_sc, pos, 3, 20000, 20000, kk, 20000, 0);
        check_sync("determinism");
        o[t] = fetch(d_o, n_q * hd, "determinism");
        l[t] = fetch(d_l, n_q, "determinism");
        s[t] = fetch(d_s, n_q * n_keys, "determinism");
        po[t] = fetch(d_po, n_tok * n_q * hd, "determinism");
        pl[t] = fetch(d_pl, n_tok * n_q, "determinism");
        CU->free(&g_cu, d_o); CU->free(&g_cu, d_l); CU->free(&g_cu, d_s); CU->free(&g_cu, d_po); CU->free(&g_cu, d_pl);
    }
    reseed(2);
    CHECK_MSG(same_bits(o[0], o[1], n_q * hd) && same_bits(l[0], l[1], n_q) && same_bits(s[0], s[1], n_q * n_keys),
              "attn_decode_scores twice on the same input: outputs differ in some bit");
    CHECK_MSG(same_bits(po[0], po[1], n_tok * n_q * hd) && same_bits(pl[0], pl[1], n_tok * n_q),
              "attn_prefill twice on the same input: outputs differ in some bit");
    int same = 1;
    for (int r = 0; r < 3; r++) {
        same &= n_out[0][r] == n_out[1][r];
        for (int64_t i = 0; i < n_out[0][r] && same; i++)
            same &= win[0][r * 20000 + i].pos == win[1][r * 20000 + i].pos;
    }
    CHECK_MSG(same, "topk_rows twice on the same input: different winners");
    for (int t = 0; t < 2; t++) { free(o[t]); free(l[t]); free(s[t]); free(po[t]); free(pl[t]); free(win[t]); }
    CU->free(&g_cu, kb); CU->free(&g_cu, vb); CU->free(&g_cu, dq); CU->free(&g_cu, d_sc);
    free(q); free(sc); free(pos); kv_free(&k); kv_free(&v);
}

int main(void) {
    rc_err err = {{0}};
    backend_init(&g_ref, &backend_cpu_ref, 1, -1, &err);
    if (backend_init(&g_cu, CU, 1, 0, &err)) {
        printf("skipped: %s\n", err.msg);
        return TEST_SKIP;
    }
    rand_seed(20261202);
    test_decode();
    test_prefill();
    test_merge();
    test_score_reduce();
    test_maxpool();
    test_topk();
    test_determinism();
    op_stats_print(g_stats, ST_COUNT);
    backend_shutdown(&g_cu);
    backend_shutdown(&g_ref);
    TEST_MAIN_END();
}
