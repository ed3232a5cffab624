// Whole-model tests of the engine on tiny synthetic models against golden
// logits from an independent numpy implementation of the HF Llama / Qwen2
// models (tests/golden/make_tiny_golden.py, which documents the .logits
// format and how to regenerate them).
//
//   test_engine [GOLDEN_DIR [MODEL]]
//
// The models are the table of tests/support/tiny_zoo.c; the test writes each
// one into a temporary directory (the .gguf files are not committed) and
// checks its size and FNV-1a hash against those recorded in
// GOLDEN_DIR/<name>.logits (default GOLDEN_DIR: RECALL_TEST_DATA/tiny), so a
// golden is only ever compared with the model it was computed from. Pointing
// GOLDEN_DIR at the output of `make_tiny_golden.py --variant V --out-dir DIR`
// (a deliberately wrong reference) must make this test fail: that is how we
// check that it can (MODEL: only that model of the table; the mutation
// tests run this way on the wrong goldens under tests/data/tiny_mutants/).
//
// Checked per model, on a 64-token sequence (logits at every position):
//   * prefill with logits_all, blocks of 7 (uneven) and of 512 (one block),
//     both backends, fp32 KV cache vs the exact golden, fp16 KV vs the golden
//     computed with K/V rounded to fp16 (and loosely vs the exact one);
//   * decode: prefill 20 tokens, then one token at a time;
//   * fast vs reference backend, prefill block size 1/7/512, prefill vs
//     decode, 1 vs 2 threads: the engines agree with each other more tightly
//     than with the golden;
//   * engine_reset and a rerun give bitwise identical logits;
//   * bad token ids, empty input and sequences longer than n_ctx fail with a
//     message and leave the engine usable (it then fills n_ctx exactly and
//     matches the golden).
// The llama3 model also runs a 1100-token sequence whose prefill blocks and
// decode steps cross the fast backend's attention tiles (256 keys in prefill,
// 1024 keys per decode chunk). Loader errors are checked on broken variants of
// a tiny model written to the temporary directory.
//
// Tolerances. "max rel" is max|got - ref| / max|ref| over all compared
// logits (the logit range is 4 to 68 depending on the model); NMSE is
// sum (got - ref)^2 / sum ref^2. Worst values measured over all models and
// runs (Release and ASan builds alike) are in brackets; bounds are 10-40x
// above them.
//   fp32 KV vs exact golden: NMSE <= 1e-11, max rel <= 1e-5 [2.6e-13, 4.5e-7].
//     The golden is float64 with exact (dequantized) weights, so this is the
//     engine's own fp32 error: dot products of length <= 128 (worst case
//     n*u = 128 * 6e-8 = 7.6e-6, typical sqrt(n)*u ~ 7e-7) over 1-3 layers.
//     A 10x too large RMSNorm epsilon (make_tiny_golden.py --variant
//     eps-x10), a ~1e-5 relative change, already fails it.
//   fp16 KV vs f16kv golden: NMSE <= 1e-9, max rel <= 3e-4 [9.6e-11, 2.8e-5].
//     As above plus rare one-ulp fp16 differences: the engine rounds fp32 K/V,
//     numpy rounds float64 K/V, and values within fp32 noise of an fp16
//     rounding midpoint go to different neighbours (2^-11 relative, on a few
//     of the ~10^4 cached elements). Rounding only K, not V (--variant
//     f16-k-only), fails it.
//   fp16 KV vs exact golden: NMSE <= 5e-7, max rel <= 2e-3 [2.9e-8, 2.4e-4]:
//     the fp16 rounding of K and V itself.
//   engine vs engine, fp32 KV: NMSE <= 1e-11, max rel <= 1e-5 [4.3e-13, 5.6e-7]:
//     fp32 engines that differ only in summation order and accumulator width.
//   engine vs engine, fp16 KV: NMSE <= 1e-9, max rel <= 3e-4 [9.6e-11, 2.8e-5]:
//     K/V computed in a different order round to different fp16 neighbours.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "kernel_path.h"
#include "core/hash.h"
#include "engine/engine_internal.h"
#include "test_backend.h"
#include "gguf_writer.h"
#include "model/model.h"
#include "model/quant.h"
#include "tiny_model.h"
#include "tiny_zoo.h"

#define TINY_DIR RECALL_TEST_DATA "/tiny"

// Threads for most engine runs (RECALL_TEST_THREADS overrides). One: the
// runs are tiny, thousands of short parallel regions, and OpenMP threads that
// spin at every barrier crawl when the test shares its cores with other jobs
// (measured on a loaded 2-core machine: 0.7 s with 1 thread, 5-55 s with 2).
// A few runs (MULTI_THREADS) cover the threaded paths: matvec rows, SGEMM, and
// decode attention chunks split over threads; main() also makes OpenMP's
// waiting passive for them.
static int g_threads = 1;
#define MULTI_THREADS 2

// ---- tolerances (see the header comment for where they come from) ----

typedef struct tol {
    double nmse;     // sum (got - ref)^2 / sum ref^2
    double max_rel;  // max |got - ref| / max |ref|
} tol;

static const tol TOL_F32_VS_GOLDEN = {1e-11, 1e-5};
static const tol TOL_F16_VS_F16_GOLDEN = {1e-9, 3e-4};
static const tol TOL_F16_VS_EXACT_GOLDEN = {5e-7, 2e-3};
static const tol TOL_ENGINE_F32 = {1e-11, 1e-5};
static const tol TOL_ENGINE_F16 = {1e-9, 3e-4};

// ---- golden files ----

#define MAX_SEQS 4

typedef struct golden_seq {
    char name[32];
    int64_t n_tokens;
    int32_t *tokens;   // (n_tokens)
    int64_t n_rows;
    int32_t *rows;     // (n_rows) positions, ascending
    float *exact;      // (n_rows, n_vocab)
    float *f16kv;      // (n_rows, n_vocab)
} golden_seq;

typedef struct golden {
    uint64_t gguf_n_bytes, gguf_fnv1a64;
    int64_t n_vocab;
    int n_seqs;
    golden_seq seqs[MAX_SEQS];
} golden;

static void golden_free(golden *g) {
    for (int s = 0; s < g->n_seqs; s++) {
        free(g->seqs[s].tokens);
        free(g->seqs[s].rows);
        free(g->seqs[s].exact);
        free(g->seqs[s].f16kv);
    }
    memset(g, 0, sizeof(*g));
}

static int read_exact(FILE *fp, void *dst, size_t n_bytes) { return fread(dst, 1, n_bytes, fp) == n_bytes ? 0 : -1; }

static int read_u32(FILE *fp, uint32_t *v) { return read_exact(fp, v, sizeof(*v)); }

// Reads one .logits file (format: tests/golden/make_tiny_golden.py). The
// file is ours, but it is still checked so a bad one fails cleanly.
static int golden_read(golden *g, const char *path) {
    memset(g, 0, sizeof(*g));
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    char magic[8];
    uint32_t n_vocab = 0, n_seqs = 0;
    int ok = read_exact(fp, magic, 8) == 0 && memcmp(magic, "RCTINY1", 8) == 0 &&
             read_exact(fp, &g->gguf_n_bytes, 8) == 0 && read_exact(fp, &g->gguf_fnv1a64, 8) == 0 &&
             read_u32(fp, &n_vocab) == 0 && read_u32(fp, &n_seqs) == 0 && n_vocab > 0 && n_vocab < (1u << 20) &&
             n_seqs >= 1 && n_seqs <= MAX_SEQS;
    g->n_vocab = n_vocab;
    for (uint32_t s = 0; ok && s < n_seqs; s++) {
        golden_seq *q = &g->seqs[s];
        g->n_seqs = (int)s + 1;
        uint32_t len = 0, n_tok = 0, n_rows = 0;
        ok = read_u32(fp, &len) == 0 && len < sizeof(q->name) && read_exact(fp, q->name, len) == 0 &&
             read_u32(fp, &n_tok) == 0 && n_tok > 0 && n_tok < (1u << 20);
        if (!ok) break;
        q->n_tokens = n_tok;
        q->tokens = malloc((size_t)n_tok * sizeof(int32_t));
        ok = q->tokens && read_exact(fp, q->tokens, (size_t)n_tok * sizeof(int32_t)) == 0 &&
             read_u32(fp, &n_rows) == 0 && n_rows > 0 && n_rows <= n_tok;
        if (!ok) break;
        q->n_rows = n_rows;
        q->rows = malloc((size_t)n_rows * sizeof(int32_t));
        q->exact = malloc((size_t)n_rows * n_vocab * sizeof(float));
        q->f16kv = malloc((size_t)n_rows * n_vocab * sizeof(float));
        ok = q->rows && q->exact && q->f16kv && read_exact(fp, q->rows, (size_t)n_rows * sizeof(int32_t)) == 0 &&
             read_exact(fp, q->exact, (size_t)n_rows * n_vocab * sizeof(float)) == 0 &&
             read_exact(fp, q->f16kv, (size_t)n_rows * n_vocab * sizeof(float)) == 0;
        for (uint32_t r = 0; ok && r < n_rows; r++)
            ok = q->rows[r] >= 0 && q->rows[r] < (int32_t)n_tok && (r == 0 || q->rows[r] > q->rows[r - 1]);
        for (uint32_t t = 0; ok && t < n_tok; t++) ok = q->tokens[t] >= 0 && q->tokens[t] < (int32_t)n_vocab;
    }
    ok = ok && fgetc(fp) == EOF;
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "%s: malformed golden file\n", path);
        golden_free(g);
        return -1;
    }
    return 0;
}

// FNV-1a 64 of a whole file; -1 on error.
static int file_fnv1a64(const char *path, uint64_t *n_bytes, uint64_t *hash) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    uint64_t h = FNV1A_INIT, n = 0;
    int c;
    while ((c = fgetc(fp)) != EOF) {
        const uint8_t byte = (uint8_t)c;
        h = fnv1a(h, &byte, 1);
        n++;
    }
    fclose(fp);
    *n_bytes = n;
    *hash = h;
    return 0;
}

// ---- comparisons ----

typedef struct err_stats {
    double nmse;
    double max_abs;
    double max_ref;
    int64_t n_nonfinite;
} err_stats;

// got, ref: (n_rows, n) logits.
static err_stats compare(const float *got, const float *ref, int64_t n_rows, int64_t n) {
    err_stats st = {0};
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n_rows * n; i++) {
        if (!isfinite(got[i])) {
            st.n_nonfinite++;
            continue;
        }
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
        if (fabs(d) > st.max_abs) st.max_abs = fabs(d);
        if (fabs(ref[i]) > st.max_ref) st.max_ref = fabs(ref[i]);
    }
    st.nmse = den > 0 ? num / den : num;
    return st;
}

// Worst observed error per comparison kind, for the report.
enum { K_F32_GOLD, K_F16_GOLD, K_F16_EXACT, K_ENGINE_F32, K_ENGINE_F16, K_COUNT };
static const char *const kind_names[K_COUNT] = {"fp32 KV vs exact golden", "fp16 KV vs f16kv golden",
                                                "fp16 KV vs exact golden", "engine vs engine, fp32 KV",
                                                "engine vs engine, fp16 KV"};
static double g_worst_nmse[K_COUNT], g_worst_rel[K_COUNT];
static int g_verbose;  // RECALL_TEST_VERBOSE=1: print every comparison

static void check_stats(int kind, tol t, err_stats st, const char *model, const char *what) {
    double rel = st.max_ref > 0 ? st.max_abs / st.max_ref : st.max_abs;
    if (st.nmse > g_worst_nmse[kind]) g_worst_nmse[kind] = st.nmse;
    if (rel > g_worst_rel[kind]) g_worst_rel[kind] = rel;
    if (g_verbose)
        printf("  %-18s %-26s NMSE %.2e  max|d|/max|ref| %.2e  (%s)\n", model, kind_names[kind], st.nmse, rel, what);
    CHECK_MSG(st.n_nonfinite == 0 && st.nmse <= t.nmse && rel <= t.max_rel,
              "%s: %s: NMSE %.3g (tol %.1g), max|d| %.3g = %.3g of max|ref| %.3g (tol %.1g), %lld non-finite", model,
              what, st.nmse, t.nmse, st.max_abs, rel, st.max_ref, t.max_rel, (long long)st.n_nonfinite);
}

// Gathers golden rows out of full (n_tokens, n_vocab) logits.
static void gather_rows(float *dst, const float *all, const golden_seq *q, int64_t n_vocab) {
    for (int64_t r = 0; r < q->n_rows; r++)
        memcpy(dst + r * n_vocab, all + (int64_t)q->rows[r] * n_vocab, (size_t)n_vocab * sizeof(float));
}

// ---- running the engine ----

typedef struct run_cfg {
    const backend_ops *be;
    int kv_elem;
    int64_t block;
    int64_t n_prefill;  // tokens prefilled with logits_all, the rest decoded one by one; 0 = all prefilled
    int64_t n_ctx;      // 0: the sequence length
    int n_threads;      // 0: g_threads
} run_cfg;

static const char *cfg_name(const run_cfg *c, char *buf, size_t n) {
    int len = snprintf(buf, n, "%s, %d thread(s), %s KV, block %lld", (c->be ? c->be : test_backend())->name,
                       c->n_threads > 0 ? c->n_threads : g_threads, c->kv_elem == KV_F32 ? "fp32" : "fp16",
                       (long long)c->block);
    if (c->n_prefill > 0 && len > 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, ", prefill %lld then decode", (long long)c->n_prefill);
    return buf;
}

// Runs tokens[0..n) and fills all: (n, n_vocab) logits. Returns 0 or -1.
static int run_engine(const model *m, const run_cfg *c, const int32_t *tokens, int64_t n, float *all) {
    engine_opts o = engine_default_opts();
    o.n_ctx = c->n_ctx > 0 ? c->n_ctx : n;
    o.n_threads = c->n_threads > 0 ? c->n_threads : g_threads;
    o.kv_elem = c->kv_elem;
    o.prefill_block = c->block;
    o.backend = c->be ? c->be : test_backend();
    engine *e = NULL;
    rc_err err;
    if (!(e = engine_create(m, &o, &err))) {
        fprintf(stderr, "engine_init: %s\n", err.msg);
        return -1;
    }
    const int64_t V = m->cfg.n_vocab;
    const int64_t n_prefill = c->n_prefill > 0 ? c->n_prefill : n;
    int rc = engine_prefill(e, tokens, n_prefill, all, NULL, NULL, &err);
    for (int64_t t = n_prefill; rc == 0 && t < n; t++) {
        rc = engine_decode(e, tokens[t], &err);
        if (rc == 0) memcpy(all + t * V, engine_logits(e), (size_t)V * sizeof(float));
    }
    if (rc) fprintf(stderr, "engine: %s\n", err.msg);
    else if (e->n_past != n) rc = -1;
    engine_destroy(e);
    return rc;
}

// Runs one configuration on one golden sequence, compares with the golden
// (fp32 KV: exact; fp16 KV: f16kv tightly and exact loosely) and returns the
// full logits in `all` for engine-vs-engine comparisons.
static void run_vs_golden(const model *m, const golden *g, const golden_seq *q, const run_cfg *c, float *all,
                          float *rows_buf, const char *model_name) {
    char what[160], buf[96];
    snprintf(what, sizeof(what), "%s seq, %s", q->name, cfg_name(c, buf, sizeof(buf)));
    int rc = run_engine(m, c, q->tokens, q->n_tokens, all);
    CHECK_MSG(rc == 0, "%s: %s: engine failed", model_name, what);
    if (rc) return;
    gather_rows(rows_buf, all, q, g->n_vocab);
    if (c->kv_elem == KV_F32) {
        check_stats(K_F32_GOLD, TOL_F32_VS_GOLDEN, compare(rows_buf, q->exact, q->n_rows, g->n_vocab), model_name, what);
    } else {
        check_stats(K_F16_GOLD, TOL_F16_VS_F16_GOLDEN, compare(rows_buf, q->f16kv, q->n_rows, g->n_vocab), model_name,
                    what);
        check_stats(K_F16_EXACT, TOL_F16_VS_EXACT_GOLDEN, compare(rows_buf, q->exact, q->n_rows, g->n_vocab),
                    model_name, what);
    }
}

static void check_engine_pair(int kv_elem, const float *a, const float *b, int64_t n_rows, int64_t n_vocab,
                              const char *model_name, const char *what) {
    if (kv_elem == KV_F32)
        check_stats(K_ENGINE_F32, TOL_ENGINE_F32, compare(a, b, n_rows, n_vocab), model_name, what);
    else
        check_stats(K_ENGINE_F16, TOL_ENGINE_F16, compare(a, b, n_rows, n_vocab), model_name, what);
}

// The 64-token sequence: every configuration against the golden, plus the
// engine-vs-engine invariants.
static void test_main_seq(const model *m, const golden *g, const golden_seq *q, const char *name) {
    const int64_t n = q->n_tokens, V = g->n_vocab;
    const int64_t n_decode_prefill = 20;
    float *rows = malloc((size_t)(q->n_rows * V) * sizeof(float));
    // all[kv][backend][variant]: variant 0 = block 7, 1 = block 512, 2 = prefill 20 + decode
    float *all[2][2][3];
    const backend_ops *bes[2] = {test_backend(), &backend_cpu_ref};
    const int kvs[2] = {KV_F32, KV_F16};
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 2; b++)
            for (int v = 0; v < 3; v++) {
                all[k][b][v] = malloc((size_t)(n * V) * sizeof(float));
                run_cfg c = {.be = bes[b], .kv_elem = kvs[k], .block = v == 1 ? 512 : 7,
                             .n_prefill = v == 2 ? n_decode_prefill : 0};
                run_vs_golden(m, g, q, &c, all[k][b][v], rows, name);
            }
    // Engine vs engine, same KV type: backends, block sizes, prefill vs decode.
    for (int k = 0; k < 2; k++) {
        const char *kv = k == 0 ? "fp32 KV" : "fp16 KV";
        char what[128];
        for (int v = 0; v < 3; v++) {
            snprintf(what, sizeof(what), "%s: cpu vs cpu_ref (%s)", kv, v == 0 ? "block 7" : v == 1 ? "block 512" : "decode");
            check_engine_pair(kvs[k], all[k][0][v], all[k][1][v], n, V, name, what);
        }
        for (int b = 0; b < 2; b++) {
            snprintf(what, sizeof(what), "%s: %s block 7 vs block 512", kv, bes[b]->name);
            check_engine_pair(kvs[k], all[k][b][0], all[k][b][1], n, V, name, what);
            snprintf(what, sizeof(what), "%s: %s prefill vs prefill 20 + decode", kv, bes[b]->name);
            check_engine_pair(kvs[k], all[k][b][1], all[k][b][2], n, V, name, what);
        }
        // Block 1: every prefill token through the single-token kernels.
        float *one = malloc((size_t)(n * V) * sizeof(float));
        run_cfg c = {.be = NULL, .kv_elem = kvs[k], .block = 1};
        CHECK(run_engine(m, &c, q->tokens, n, one) == 0);
        snprintf(what, sizeof(what), "%s: cpu block 1 vs block 512", kv);
        check_engine_pair(kvs[k], one, all[k][0][1], n, V, name, what);
        free(one);
    }
    // Threads: the fast backend on MULTI_THREADS, prefill (SGEMM) and decode
    // (matvec, attention), vs the golden and vs the single-thread run.
    float *mt = malloc((size_t)(n * V) * sizeof(float));
    for (int v = 0; v < 3; v += 2) {
        run_cfg c = {.be = NULL, .kv_elem = KV_F32, .block = 7, .n_threads = MULTI_THREADS,
                     .n_prefill = v == 2 ? n_decode_prefill : 0};
        run_vs_golden(m, g, q, &c, mt, rows, name);
        char what[96];
        snprintf(what, sizeof(what), "fp32 KV: cpu %d threads vs %d (%s)", MULTI_THREADS, g_threads,
                 v == 0 ? "block 7" : "decode");
        check_engine_pair(KV_F32, mt, all[0][0][v], n, V, name, what);
    }
    free(mt);
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < 2; b++)
            for (int v = 0; v < 3; v++) free(all[k][b][v]);
    free(rows);
}

// Prefill n_pre tokens, decode the rest; all: (n, n_vocab).
static void prefill_decode(engine *e, const int32_t *tokens, int64_t n, int64_t n_pre, float *all) {
    const int64_t V = e->m->cfg.n_vocab;
    rc_err err;
    CHECK(e->n_past == 0);
    CHECK(engine_prefill(e, tokens, n_pre, all, NULL, NULL, &err) == 0);
    for (int64_t t = n_pre; t < n; t++) {
        CHECK(engine_decode(e, tokens[t], &err) == 0);
        memcpy(all + t * V, engine_logits(e), (size_t)V * sizeof(float));
    }
}

// Determinism, on MULTI_THREADS: an engine that ran another sequence and was
// reset, a fresh engine, and the first one reset again give bitwise identical
// logits (prefill and decode), so nothing of the old sequence leaks through
// and nothing depends on thread timing.
static void test_determinism(const model *m, const golden_seq *q, const char *name) {
    const int64_t n = q->n_tokens, V = m->cfg.n_vocab, n_pre = 23;
    engine_opts o = engine_default_opts();
    o.n_ctx = n;
    o.n_threads = MULTI_THREADS;
    o.prefill_block = 7;
    engine *e1 = NULL, *e2 = NULL;
    rc_err err;
    if (!(e1 = engine_create(m, &o, &err))) {
        CHECK_MSG(0, "%s: engine_init: %s", name, err.msg);
        return;
    }
    if (!(e2 = engine_create(m, &o, &err))) {
        CHECK_MSG(0, "%s: engine_init: %s", name, err.msg);
        engine_destroy(e1);
        return;
    }
    int32_t *other = malloc((size_t)n * sizeof(int32_t));
    for (int64_t t = 0; t < n; t++) other[t] = q->tokens[n - 1 - t];
    float *a = malloc((size_t)(n * V) * sizeof(float)), *b = malloc((size_t)(n * V) * sizeof(float));
    float *c = malloc((size_t)(n * V) * sizeof(float));
    prefill_decode(e1, other, n, n - 5, a);
    engine_reset(e1);
    prefill_decode(e1, q->tokens, n, n_pre, a);
    prefill_decode(e2, q->tokens, n, n_pre, b);
    engine_reset(e1);
    prefill_decode(e1, q->tokens, n, n_pre, c);
    const size_t n_bytes = (size_t)(n * V) * sizeof(float);
    CHECK_MSG(memcmp(a, b, n_bytes) == 0, "%s: reset engine and fresh engine differ", name);
    CHECK_MSG(memcmp(a, c, n_bytes) == 0, "%s: second rerun after engine_reset differs", name);
    free(other);
    free(a);
    free(b);
    free(c);
    engine_destroy(e1);
    engine_destroy(e2);
}

// Bad input fails with a message and leaves the engine usable.
static void test_engine_errors(const model *m, const golden *g, const golden_seq *q, const char *name) {
    const int64_t V = m->cfg.n_vocab, n_ctx = 16;
    engine_opts o = engine_default_opts();
    o.n_ctx = n_ctx;
    o.n_threads = g_threads;
    o.kv_elem = KV_F32;
    o.prefill_block = 7;
    engine *e = NULL;
    rc_err err;
    if (!(e = engine_create(m, &o, &err))) {
        CHECK_MSG(0, "%s: engine_init: %s", name, err.msg);
        return;
    }
    int32_t toks[32];
    memcpy(toks, q->tokens, sizeof(toks));
    err.msg[0] = 0;

    int32_t bad_ids[] = {-1, (int32_t)V, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        int32_t saved = toks[5];
        toks[5] = bad_ids[i];
        err.msg[0] = 0;
        CHECK_MSG(engine_prefill(e, toks, 8, NULL, NULL, NULL, &err) == -1 && strstr(err.msg, "token"),
                  "%s: prefill with token id %d: '%s'", name, bad_ids[i], err.msg);
        CHECK(e->n_past == 0);
        toks[5] = saved;
        err.msg[0] = 0;
        CHECK_MSG(engine_decode(e, bad_ids[i], &err) == -1 && strstr(err.msg, "token"),
                  "%s: decode of token id %d: '%s'", name, bad_ids[i], err.msg);
        CHECK(e->n_past == 0);
    }
    err.msg[0] = 0;
    CHECK_MSG(engine_prefill(e, toks, 0, NULL, NULL, NULL, &err) == -1 && err.msg[0], "%s: empty prefill", name);
    err.msg[0] = 0;
    CHECK_MSG(engine_prefill(e, toks, n_ctx + 1, NULL, NULL, NULL, &err) == -1 && strstr(err.msg, "context"),
              "%s: prefill of n_ctx + 1 tokens: '%s'", name, err.msg);
    CHECK(e->n_past == 0);

    // After the failures the engine still computes the right thing: fill the
    // context exactly (prefill 10 + decode 6), compare with the golden, then
    // one more token must fail.
    float *all = malloc((size_t)(n_ctx * V) * sizeof(float));
    CHECK(engine_prefill(e, toks, 10, all, NULL, NULL, &err) == 0);
    for (int64_t t = 10; t < n_ctx; t++) {
        CHECK(engine_decode(e, toks[t], &err) == 0);
        memcpy(all + t * V, engine_logits(e), (size_t)V * sizeof(float));
    }
    CHECK(e->n_past == n_ctx);
    if (q->rows[n_ctx - 1] == n_ctx - 1)  // main sequence: every position is a row
        check_stats(K_F32_GOLD, TOL_F32_VS_GOLDEN, compare(all, q->exact, n_ctx, g->n_vocab), name,
                    "after rejected inputs, context filled exactly");
    err.msg[0] = 0;
    CHECK_MSG(engine_decode(e, toks[n_ctx], &err) == -1 && strstr(err.msg, "context"),
              "%s: decode past n_ctx: '%s'", name, err.msg);
    CHECK(e->n_past == n_ctx);
    err.msg[0] = 0;
    CHECK_MSG(engine_prefill(e, toks, 1, NULL, NULL, NULL, &err) == -1 && strstr(err.msg, "context"),
              "%s: prefill past n_ctx: '%s'", name, err.msg);
    free(all);
    engine_destroy(e);
}

// The long sequence (llama3 model): prefill blocks and decode steps that
// cross the fast backend's key tiles (256 in prefill, 1024 per decode chunk).
static void test_long_seq(const model *m, const golden *g, const golden_seq *q, const char *name) {
    const int64_t n = q->n_tokens, V = g->n_vocab;
    float *all = malloc((size_t)(n * V) * sizeof(float));
    float *ref = malloc((size_t)(n * V) * sizeof(float));
    float *rows = malloc((size_t)(q->n_rows * V) * sizeof(float));
    const run_cfg cfgs[] = {
        {.be = NULL, .kv_elem = KV_F32, .block = 512},  // blocks 512, 512, 76
        // then decode 1010..1099: the 2 chunks of 1024 keys go to 2 threads
        {.be = NULL, .kv_elem = KV_F32, .block = 300, .n_prefill = 1010, .n_threads = MULTI_THREADS},
        {.be = NULL, .kv_elem = KV_F16, .block = 512, .n_threads = MULTI_THREADS},
        {.be = &backend_cpu_ref, .kv_elem = KV_F32, .block = 512},
    };
    // ref: the first (fast, fp32 KV, block 512) run, for engine-vs-engine checks.
    run_vs_golden(m, g, q, &cfgs[0], ref, rows, name);
    for (size_t i = 1; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        run_vs_golden(m, g, q, &cfgs[i], all, rows, name);
        if (i == 1) check_engine_pair(KV_F32, all, ref, n, V, name, "long seq: prefill 1010 + decode vs prefill");
        if (i == 3) check_engine_pair(KV_F32, all, ref, n, V, name, "long seq: cpu_ref vs cpu, block 512");
    }
    free(all);
    free(ref);
    free(rows);
}

// ---- loader errors on broken variants of a tiny model ----

static char g_tmpdir[256];

typedef void (*tweak_fn)(gguf_writer *w);

// Writes a tiny model (params p, then tweak) and expects model_load to fail
// with a message containing every string in `needles` (NULL-terminated).
static void expect_load_error(const char *label, const tiny_model_params *p, tweak_fn tweak, const char *const *needles) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.gguf", g_tmpdir, label);
    gguf_writer w;
    gguf_writer_init(&w);
    rc_err err;
    int rc = tiny_model_build(&w, p, &err);
    if (rc == 0 && tweak) tweak(&w);
    if (rc == 0) rc = gguf_writer_write_file(&w, path, NULL, &err);
    gguf_writer_free(&w);
    CHECK_MSG(rc == 0, "%s: writing the model: %s", label, err.msg);
    if (rc) return;
    model m;
    err.msg[0] = 0;
    rc = model_load(&m, path, &err);
    // Look for the needles after the path the message starts with (the
    // temporary directory's random name may contain anything).
    const char *msg = strncmp(err.msg, path, strlen(path)) == 0 ? err.msg + strlen(path) : err.msg;
    CHECK_MSG(rc == -1, "%s: model_load accepted a broken model", label);
    if (rc == 0) {
        model_free(&m);
        return;
    }
    for (const char *const *s = needles; *s; s++)
        CHECK_MSG(strstr(msg, *s) != NULL, "%s: message '%s' does not mention '%s'", label, err.msg, *s);
    remove(path);
}

// Renames a tensor in place (same length), so the model lacks the original.
static void rename_tensor(gguf_writer *w, const char *name, const char *new_name) {
    int64_t i = gguf_writer_find_tensor(w, name);
    CHECK_MSG(i >= 0 && strlen(name) == strlen(new_name), "no tensor %s", name);
    if (i >= 0 && strlen(name) == strlen(new_name)) memcpy(w->tensors[i].name, new_name, strlen(new_name));
}

// Finds a serialized metadata entry (u64 key length, key, u32 type, value)
// and returns a pointer to its type field, or NULL.
static uint8_t *find_kv(gguf_writer *w, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 8; i + n + 4 <= w->kv_n_bytes; i++) {
        uint64_t len;
        memcpy(&len, w->kv_bytes + i - 8, 8);
        if (len == n && memcmp(w->kv_bytes + i, key, n) == 0) return w->kv_bytes + i + n;
    }
    return NULL;
}

static void patch_u32_kv(gguf_writer *w, const char *key, uint32_t v) {
    uint8_t *p = find_kv(w, key);
    uint32_t type = 0;
    if (p) memcpy(&type, p, 4);
    CHECK_MSG(p && type == GGUF_VAL_UINT32, "no u32 key %s", key);
    if (p && type == GGUF_VAL_UINT32) memcpy(p + 4, &v, 4);
}

static void rename_kv(gguf_writer *w, const char *key, const char *new_key) {
    uint8_t *p = find_kv(w, key);
    CHECK_MSG(p && strlen(key) == strlen(new_key), "no key %s", key);
    if (p && strlen(key) == strlen(new_key)) memcpy(p - strlen(key), new_key, strlen(new_key));
}

static void tw_missing_ffn_up(gguf_writer *w) { rename_tensor(w, "blk.1.ffn_up.weight", "blk.1.ffn_uX.weight"); }
static void tw_missing_embd(gguf_writer *w) { rename_tensor(w, "token_embd.weight", "token_embX.weight"); }
static void tw_missing_out_norm(gguf_writer *w) { rename_tensor(w, "output_norm.weight", "output_norX.weight"); }
static void tw_missing_k_bias(gguf_writer *w) { rename_tensor(w, "blk.0.attn_k.bias", "blk.0.attn_k.biaX"); }
static void tw_missing_block_count(gguf_writer *w) { rename_kv(w, "llama.block_count", "llama.block_counX"); }
static void tw_kv_heads_3(gguf_writer *w) { patch_u32_kv(w, "llama.attention.head_count_kv", 3); }

// Smaller ne[1] than the config wants; the data bytes (more than needed) stay.
static void set_ne1(gguf_writer *w, const char *name, uint64_t ne1) {
    int64_t i = gguf_writer_find_tensor(w, name);
    CHECK_MSG(i >= 0, "no tensor %s", name);
    if (i >= 0) w->tensors[i].ne[1] = ne1;
}
static void tw_k_shape(gguf_writer *w) { set_ne1(w, "blk.0.attn_k.weight", 16); }
static void tw_output_shape(gguf_writer *w) { set_ne1(w, "output.weight", 299); }

// rope_freqs.weight of the wrong length, or with a zero factor.
static void tw_rope_freqs_short(gguf_writer *w) {
    int64_t i = gguf_writer_find_tensor(w, "rope_freqs.weight");
    CHECK(i >= 0);
    if (i >= 0) w->tensors[i].ne[0] = 7;
}
static void tw_rope_freqs_zero(gguf_writer *w) {
    int64_t i = gguf_writer_find_tensor(w, "rope_freqs.weight");
    CHECK(i >= 0);
    if (i >= 0) memset(w->tensors[i].data + 3 * sizeof(float), 0, sizeof(float));
}

static void test_load_errors(void) {
    tiny_model_params p;
    tiny_model_default(&p);  // llama, 4 heads / 2 KV heads, head_dim 16, separate output
    {
        const char *n[] = {"blk.1.ffn_up.weight", "missing", NULL};
        expect_load_error("missing_ffn_up", &p, tw_missing_ffn_up, n);
    }
    {
        const char *n[] = {"token_embd.weight", NULL};
        expect_load_error("missing_token_embd", &p, tw_missing_embd, n);
    }
    {
        const char *n[] = {"output_norm.weight", NULL};
        expect_load_error("missing_output_norm", &p, tw_missing_out_norm, n);
    }
    {
        const char *n[] = {"blk.0.attn_k.weight", "shape", "16", "32", NULL};
        expect_load_error("wrong_shape_k", &p, tw_k_shape, n);
    }
    {
        const char *n[] = {"output.weight", "299", "300", NULL};
        expect_load_error("wrong_shape_output", &p, tw_output_shape, n);
    }
    {
        const char *n[] = {"head count", "4", "3", NULL};
        expect_load_error("heads_not_multiple", &p, tw_kv_heads_3, n);
    }
    {
        const char *n[] = {"llama.block_count", NULL};
        expect_load_error("missing_block_count", &p, tw_missing_block_count, n);
    }
    tiny_model_params q = p;
    q.arch = "qwen2";
    {
        const char *n[] = {"blk.0.attn_k.bias", NULL};
        expect_load_error("qwen2_missing_k_bias", &q, tw_missing_k_bias, n);
    }
    tiny_model_params r = p;
    r.rope_scaling = TINY_ROPE_LLAMA3;
    r.rope_factor = 8.0f;
    {
        const char *n[] = {"rope_freqs.weight", "7", "8", NULL};
        expect_load_error("rope_freqs_short", &r, tw_rope_freqs_short, n);
    }
    {
        const char *n[] = {"rope_freqs.weight", "3", NULL};
        expect_load_error("rope_freqs_zero", &r, tw_rope_freqs_zero, n);
    }
    // The unbroken models load: the failures above come from the tweaks.
    const tiny_model_params *ok[] = {&p, &q, &r};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/valid_%d.gguf", g_tmpdir, i);
        rc_err err;
        model m;
        int rc = tiny_model_write(path, ok[i], &err);
        if (rc == 0) rc = model_load(&m, path, &err);
        CHECK_MSG(rc == 0, "valid model %d: %s", i, err.msg);
        if (rc == 0) model_free(&m);
        remove(path);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Writes zoo model i into the temporary directory. The .gguf files are not
// committed (*.gguf is git-ignored); the writer is deterministic, and the hash
// recorded in the .logits file checks that this is the model the golden was
// computed from.
static int write_zoo_model(int i, char *path, size_t n) {
    snprintf(path, n, "%s/%s.gguf", g_tmpdir, tiny_zoo_name(i));
    tiny_model_params p;
    tiny_zoo_params(i, &p);
    rc_err err;
    if (tiny_model_write(path, &p, &err)) {
        CHECK_MSG(0, "%s: %s", tiny_zoo_name(i), err.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    test_backend_setup();
    const int path_rc = test_check_kernel_path("test_engine");
    if (path_rc) return path_rc;
    // libgomp reads OMP_WAIT_POLICY when it is loaded, before main: set it and
    // restart once (see g_threads). Without /proc the test just runs as is.
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execv("/proc/self/exe", argv);
    }
    const char *golden_dir = argc > 1 ? argv[1] : TINY_DIR;
    const char *only = argc > 2 ? argv[2] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);  // progress lines survive a sanitizer abort
    g_verbose = getenv("RECALL_TEST_VERBOSE") && atoi(getenv("RECALL_TEST_VERBOSE")) > 0;
    if (getenv("RECALL_TEST_THREADS") && atoi(getenv("RECALL_TEST_THREADS")) > 0)
        g_threads = atoi(getenv("RECALL_TEST_THREADS"));
    double t0 = now_s();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof(g_tmpdir), "%s/recall_test_engine_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", g_tmpdir, strerror(errno));
        return 1;
    }
    for (int i = 0; i < tiny_zoo_count(); i++) {
        const char *name = tiny_zoo_name(i);
        if (only && strcmp(name, only) != 0) continue;
        char gpath[1024], lpath[1024];
        if (write_zoo_model(i, gpath, sizeof(gpath))) continue;
        snprintf(lpath, sizeof(lpath), "%s/%s.logits", golden_dir, name);
        golden g;
        if (golden_read(&g, lpath)) {
            CHECK_MSG(0, "%s: cannot read the golden file %s", name, lpath);
            remove(gpath);
            continue;
        }
        uint64_t n_bytes = 0, hash = 0;
        CHECK_MSG(file_fnv1a64(gpath, &n_bytes, &hash) == 0 && n_bytes == g.gguf_n_bytes && hash == g.gguf_fnv1a64,
                  "%s: %s is not the model %s was computed from (%llu bytes, FNV-1a %016llx; golden: %llu bytes, "
                  "%016llx): if tiny_zoo.c or tiny_model.c changed, regenerate the goldens (make_tiny_golden.py)",
                  name, gpath, lpath, (unsigned long long)n_bytes, (unsigned long long)hash,
                  (unsigned long long)g.gguf_n_bytes, (unsigned long long)g.gguf_fnv1a64);
        model m;
        rc_err err;
        if (model_load(&m, gpath, &err)) {
            CHECK_MSG(0, "%s: model_load: %s", name, err.msg);
            golden_free(&g);
            remove(gpath);
            continue;
        }
        CHECK_MSG(m.cfg.n_vocab == g.n_vocab, "%s: vocab %lld, golden %lld", name, (long long)m.cfg.n_vocab,
                  (long long)g.n_vocab);
        if (m.cfg.n_vocab == g.n_vocab) {
            double t1 = now_s();
            for (int s = 0; s < g.n_seqs; s++) {
                const golden_seq *q = &g.seqs[s];
                if (strcmp(q->name, "main") == 0) {
                    test_main_seq(&m, &g, q, name);
                    test_determinism(&m, q, name);
                    test_engine_errors(&m, &g, q, name);
                } else if (strcmp(q->name, "long") == 0) {
                    test_long_seq(&m, &g, q, name);
                } else {
                    CHECK_MSG(0, "%s: unknown sequence '%s'", name, q->name);
                }
            }
            printf("%-18s %s, %lld layers, d_model %lld, heads %lld/%lld x %lld, vocab %lld: %.2f s\n", name,
                   m.cfg.arch_name, (long long)m.cfg.n_layer, (long long)m.cfg.d_model, (long long)m.cfg.n_head,
                   (long long)m.cfg.n_head_kv, (long long)m.cfg.head_dim, (long long)m.cfg.n_vocab, now_s() - t1);
        }
        model_free(&m);
        golden_free(&g);
        remove(gpath);
    }

    test_load_errors();
    rmdir(g_tmpdir);

    printf("worst errors (NMSE / max|d| over max|ref|):\n");
    for (int k = 0; k < K_COUNT; k++)
        printf("  %-26s %.3g / %.3g\n", kind_names[k], g_worst_nmse[k], g_worst_rel[k]);
    printf("total %.2f s\n", now_s() - t0);
    TEST_MAIN_END();
}
