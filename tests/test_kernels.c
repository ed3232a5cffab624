// The CUDA backend's memory, matmul, element-wise and data-movement ops,
// op by op against backend_cpu_ref (the specification) through the shared
// harness (support/opcheck.h): inputs uploaded through the backend, outputs
// NaN-prefilled with guard words after them, downloaded and compared.
//  - fp32 element-wise ops (rmsnorm, rope, swiglu): NMSE <= 1e-7 and the
//    elementwise bound of TOL_FP32; add, add_bias, embed, kv_write, copy_rows,
//    copy_2d, mean_heads: bit for bit (the same float operations, or none).
//  - matmul on the same stored weights for every weight type, n_tok in
//    {1, 3, 8} (matvec) and {9, 33} (dequantize + cuBLAS), odd n_in/n_out and
//    padded rows, with the per-element bound MATMUL_ABS_REL * sum |w x|.
//  - argmax exactly (ties to the lowest index, NaN never wins).
//  - sticky failures: a bad op is reported by synchronize, naming the call,
//    file:line and [rank r @ host].
// Built against the SIMT emulator (recall_cuda_emu) it runs in every CI run,
// under several RECALL_EMU_SEED values; built against the real recall_cuda it
// runs on a GPU and exits 77 when none is usable.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/cuda/backend_cuda.h"
#include "check.h"
#include "model/quant.h"
#include "opcheck.h"

static backend g_ref, g_gpu;
static const backend *G = &g_gpu;

static const int64_t ODD_N[] = {0, 1, 7, 33, 4097};
#define N_ODD ((int)(sizeof(ODD_N) / sizeof(ODD_N[0])))

enum { ST_RMSNORM, ST_ROPE, ST_SWIGLU, ST_MATMUL, ST_COUNT };
static op_stats g_stats[ST_COUNT] = {{"rmsnorm", 0, 0, 0}, {"rope", 0, 0, 0}, {"swiglu", 0, 0, 0}, {"matmul", 0, 0, 0}};

static void sync_ok(const char *what) {
    rc_err err = {{0}};
    int rc = G->ops->synchronize(G, &err);
    CHECK_MSG(rc == 0, "%s: synchronize: %s", what, err.msg);
}

// A device result against the reference array: fetch, guards, compare.
static void check_out(int stat, const char *what, const float *dev, const float *ref, int64_t n, tol t,
                      const double *atol) {
    int guards = 0;
    float *got = dev_fetch(G, dev, n, &guards);
    sync_ok(what);
    CHECK_MSG(guards, "%s: guard words after the output", what);
    CHECK(compare_report(&g_stats[stat], what, got, ref, n, t, atol));
    free(got);
}

static void check_bits(const char *what, const float *dev, const float *ref, int64_t n) {
    int guards = 0;
    float *got = dev_fetch(G, dev, n, &guards);
    sync_ok(what);
    CHECK_MSG(guards && same_bits(got, ref, n), "%s: bit for bit (guards %d)", what, guards);
    free(got);
}

// ---- memory ----

static void test_memory(void) {
    for (int ni = 0; ni < N_ODD; ni++) {
        const int64_t n = ODD_N[ni];
        const size_t nb = (size_t)n * sizeof(float);
        float *src = normal_new(n, 1.0f), *back = out_new(n);
        float *zero = floats_new(n), *z = out_new(n);
        memset(zero, 0, nb);
        void *p = G->ops->alloc(G, nb), *q = G->ops->alloc(G, nb);
        CHECK(p && q);
        G->ops->download(G, z, p, nb);
        CHECK_MSG(same_bits(z, zero, n) && guard_intact(z, n), "alloc is zero-filled n=%lld", (long long)n);
        G->ops->upload(G, p, src, nb);
        G->ops->copy(G, q, p, nb);
        G->ops->copy(G, q, q, nb);
        G->ops->download(G, back, q, nb);
        CHECK_MSG(same_bits(back, src, n) && guard_intact(back, n), "upload/copy/download n=%lld", (long long)n);
        G->ops->free(G, p);
        G->ops->free(G, q);
        free(src); free(back); free(zero); free(z);
    }
    // weight_upload copies the stored bytes to the device (a new pointer), weight_free resets the view.
    test_weight tw = weight_new(GGML_TYPE_Q4_1, 64, 5, 0);
    weight w;
    CHECK(dev_weight(G, &w, &tw.w) == 0);
    CHECK(w.data != tw.w.data && w.type == tw.w.type && w.n_in == 64 && w.n_out == 5 && w.row_bytes == tw.w.row_bytes);
    uint8_t *bytes = malloc(5 * tw.w.row_bytes);
    G->ops->download(G, bytes, w.data, 5 * tw.w.row_bytes);
    CHECK(memcmp(bytes, tw.buf, 5 * tw.w.row_bytes) == 0);
    G->ops->weight_free(G, &w);
    CHECK(w.data == NULL && w.n_out == 0);
    free(bytes);
    weight_free(&tw);
    // Unsupported types are refused at upload with one line naming the type.
    weight bad = {.type = GGML_TYPE_Q4_K, .data = tw.buf, .n_in = 256, .n_out = 1, .row_bytes = 144};
    rc_err err = {{0}};
    CHECK(G->ops->weight_upload(G, &w, &bad, &err) != 0 && strstr(err.msg, "Q4_K") != NULL);
    CHECK(!G->ops->supports(OP_MATMUL, GGML_TYPE_Q4_K) && !G->ops->supports(OP_EMBED, GGML_TYPE_Q5_0));
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++)
        CHECK(G->ops->supports(OP_MATMUL, WEIGHT_TYPES[ti]) && G->ops->supports(OP_EMBED, WEIGHT_TYPES[ti]));
    sync_ok("memory");
}

// ---- matmul ----

static void matmul_case(const test_weight *tw, int64_t n_tok, const char *label) {
    const weight *w = &tw->w;
    const int64_t n_out = w->n_out, n_in = w->n_in, n = n_tok * n_out;
    char what[200];
    snprintf(what, sizeof what, "matmul %s n_in=%lld n_out=%lld n_tok=%lld%s", ggml_type_name(w->type),
             (long long)n_in, (long long)n_out, (long long)n_tok, label);
    float *x = normal_new(n_tok * n_in, 1.0f), *ref = out_new(n);
    backend_cpu_ref.matmul(&g_ref, ref, x, w, n_tok);
    double *atol = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    float *row = floats_new(n_in);
    for (int64_t o = 0; o < n_out; o++) {
        dequantize_row(w->type, (const uint8_t *)w->data + (size_t)o * w->row_bytes, row, n_in);
        for (int64_t t = 0; t < n_tok; t++) {
            double a = 0.0;
            for (int64_t i = 0; i < n_in; i++) a += fabs((double)row[i] * x[t * n_in + i]);
            atol[t * n_out + o] = MATMUL_ABS_REL * a + 1e-30;
        }
    }
    weight dw;
    CHECK(dev_weight(G, &dw, w) == 0);
    float *dx = dev_floats(G, x, n_tok * n_in), *dout = dev_out(G, n);
    G->ops->matmul(G, dout, dx, &dw, n_tok);
    check_out(ST_MATMUL, what, dout, ref, n, (tol){1e-7, 0.0, 1e-5}, atol);
    // Deterministic: the same call again gives the same bits.
    float *dout2 = dev_out(G, n);
    G->ops->matmul(G, dout2, dx, &dw, n_tok);
    float *a = dev_fetch(G, dout, n, NULL), *b = dev_fetch(G, dout2, n, NULL);
    CHECK_MSG(same_bits(a, b, n), "%s: same bits on a second run", what);
    free(a); free(b);
    G->ops->free(G, dx);
    G->ops->free(G, dout);
    G->ops->free(G, dout2);
    G->ops->weight_free(G, &dw);
    free(x); free(ref); free(atol); free(row);
}

static void test_matmul(void) {
    static const int64_t n_ins[] = {32, 96, 576};
    static const int64_t n_ins_float[] = {1, 7, 33};  // plain float rows need not be whole blocks
    static const int64_t n_outs[] = {1, 7, 33};
    static const int64_t n_toks[] = {1, 3, 8, 9, 33};  // <= 8: matvec; > 8: dequantize + cuBLAS
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const uint32_t type = WEIGHT_TYPES[ti];
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1 && !is_float_type(type)) break;
            const int64_t *ins = pass ? n_ins_float : n_ins;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) {
                    test_weight tw = weight_new(type, ins[a], n_outs[b], 0);
                    for (int c = 0; c < 5; c++) matmul_case(&tw, n_toks[c], "");
                    weight_free(&tw);
                }
        }
        // Rows spaced by row_bytes larger than the packed row (NaN padding for float types).
        test_weight tw = weight_new(type, is_float_type(type) ? 33 : 64, 9, 12);
        matmul_case(&tw, 2, " padded rows");
        matmul_case(&tw, 9, " padded rows");
        weight_free(&tw);
    }
    // A wide row: the matvec's lanes take several blocks each, the GEMM's k is long.
    test_weight tw = weight_new(GGML_TYPE_Q4_1, 4096, 5, 0);
    matmul_case(&tw, 1, " wide");
    matmul_case(&tw, 9, " wide");
    weight_free(&tw);
}

// ---- rmsnorm, rope, swiglu ----

static void test_rmsnorm(void) {
    for (int ni = 0; ni < N_ODD; ni++)
        for (int64_t n_rows = 1; n_rows <= 3; n_rows += 2) {
            const int64_t n = ODD_N[ni], total = n_rows * n;
            float *x = normal_new(total, 2.0f), *w = normal_new(n, 1.0f), *ref = out_new(total);
            backend_cpu_ref.rmsnorm(&g_ref, ref, x, w, n_rows, n, 1e-5f);
            float *dx = dev_floats(G, x, total), *dw = dev_floats(G, w, n), *dout = dev_out(G, total);
            G->ops->rmsnorm(G, dout, dx, dw, n_rows, n, 1e-5f);
            char what[96];
            snprintf(what, sizeof what, "rmsnorm rows=%lld n=%lld", (long long)n_rows, (long long)n);
            check_out(ST_RMSNORM, what, dout, ref, total, TOL_FP32, NULL);
            G->ops->rmsnorm(G, dx, dx, dw, n_rows, n, 1e-5f);  // in place (the engine does this)
            snprintf(what, sizeof what, "rmsnorm in place rows=%lld n=%lld", (long long)n_rows, (long long)n);
            float *got = floats_new(total);
            G->ops->download(G, got, dx, (size_t)total * sizeof(float));
            CHECK(compare_report(&g_stats[ST_RMSNORM], what, got, ref, total, TOL_FP32, NULL));
            G->ops->free(G, dx);
            G->ops->free(G, dw);
            G->ops->free(G, dout);
            free(x); free(w); free(ref); free(got);
        }
}

static void test_rope(void) {
    static const int64_t hds[] = {64, 128};
    for (int hi = 0; hi < 2; hi++)
        for (int neox = 0; neox <= 1; neox++)
            for (int partial = 0; partial <= 1; partial++) {
                const int64_t hd = hds[hi], rot = partial ? hd / 2 : hd, n_tok = 7, n_heads = 3;
                const int64_t n = n_tok * n_heads * hd;
                float inv_freq[64];
                rope_freqs(inv_freq, rot, neox ? 1000000.0 : 500000.0);
                int64_t pos[7] = {0, 1, 33, 4097, 8191, 131071, 1000000};
                float *x = normal_new(n, 1.0f), *ref = out_new(n);
                memcpy(ref, x, (size_t)n * sizeof(float));
                rope_table rt = {inv_freq, rot, neox};
                backend_cpu_ref.rope(&g_ref, ref, n_tok, n_heads, hd, pos, &rt);
                float *dfreq = dev_floats(G, inv_freq, rot / 2);
                float *dx = dev_out(G, n);
                G->ops->upload(G, dx, x, (size_t)n * sizeof(float));
                rope_table drt = {dfreq, rot, neox};
                G->ops->rope(G, dx, n_tok, n_heads, hd, pos, &drt);
                // The host may reuse pos at once: the positions were staged.
                for (int t = 0; t < 7; t++) pos[t] = -1;
                char what[96];
                snprintf(what, sizeof what, "rope hd=%lld neox=%d rot=%lld", (long long)hd, neox, (long long)rot);
                check_out(ST_ROPE, what, dx, ref, n, TOL_FP32, NULL);
                G->ops->free(G, dx);
                G->ops->free(G, dfreq);
                free(x); free(ref);
            }
}

static void test_swiglu(void) {
    static const float specials[] = {0.0f, 1e-3f, -1e-3f, 1.0f, -1.0f, 30.0f, -30.0f, 87.0f, -87.0f, 100.0f, -100.0f};
    for (int ni = 0; ni < N_ODD; ni++) {
        const int64_t n = ODD_N[ni];
        float *g = normal_new(n, 3.0f), *u = normal_new(n, 1.0f), *ref = out_new(n);
        for (int64_t i = 0; i < n && i < (int64_t)(sizeof specials / sizeof specials[0]); i++) g[i] = specials[i];
        backend_cpu_ref.swiglu(&g_ref, ref, g, u, n);
        float *dg = dev_floats(G, g, n), *du = dev_floats(G, u, n), *dout = dev_out(G, n);
        G->ops->swiglu(G, dout, dg, du, n);
        char what[64];
        snprintf(what, sizeof what, "swiglu n=%lld", (long long)n);
        check_out(ST_SWIGLU, what, dout, ref, n, TOL_FP32, NULL);
        G->ops->free(G, dg);
        G->ops->free(G, du);
        G->ops->free(G, dout);
        free(g); free(u); free(ref);
    }
}

// ---- add, add_bias, embed, mean_heads: the same float operations, bit for bit ----

static void test_add(void) {
    for (int ni = 0; ni < N_ODD; ni++) {
        const int64_t n = ODD_N[ni];
        float *x = normal_new(n, 1.0f), *y = normal_new(n, 3.0f);
        float *dx = dev_out(G, n), *dy = dev_floats(G, y, n);
        G->ops->upload(G, dx, x, (size_t)n * sizeof(float));
        backend_cpu_ref.add(&g_ref, x, y, n);
        G->ops->add(G, dx, dy, n);
        char what[64];
        snprintf(what, sizeof what, "add n=%lld", (long long)n);
        check_bits(what, dx, x, n);
        G->ops->free(G, dx);
        G->ops->free(G, dy);
        free(x); free(y);
        for (int64_t n_rows = 1; n_rows <= 5; n_rows += 4) {
            float *xb = normal_new(n_rows * n, 1.0f), *bias = normal_new(n, 1.0f);
            float *dxb = dev_out(G, n_rows * n), *db = dev_floats(G, bias, n);
            G->ops->upload(G, dxb, xb, (size_t)(n_rows * n) * sizeof(float));
            backend_cpu_ref.add_bias(&g_ref, xb, bias, n_rows, n);
            G->ops->add_bias(G, dxb, db, n_rows, n);
            snprintf(what, sizeof what, "add_bias %lldx%lld", (long long)n_rows, (long long)n);
            check_bits(what, dxb, xb, n_rows * n);
            G->ops->free(G, dxb);
            G->ops->free(G, db);
            free(xb); free(bias);
        }
    }
}

static void test_embed(void) {
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const int64_t n_in = 96, n_vocab = 11;
        test_weight tw = weight_new(WEIGHT_TYPES[ti], n_in, n_vocab, 4);  // padded rows: steps by row_bytes
        int32_t tokens[7] = {4, 0, 10, 4, 2, 1, 10};
        weight dw;
        CHECK(dev_weight(G, &dw, &tw.w) == 0);
        for (int64_t n = 0; n <= 7; n += 7) {
            float *ref = out_new(n * n_in), *dout = dev_out(G, n * n_in);
            backend_cpu_ref.embed(&g_ref, ref, &tw.w, tokens, n);
            G->ops->embed(G, dout, &dw, tokens, n);
            char what[64];
            snprintf(what, sizeof what, "embed %s n=%lld", ggml_type_name(tw.w.type), (long long)n);
            check_bits(what, dout, ref, n * n_in);
            G->ops->free(G, dout);
            free(ref);
        }
        G->ops->weight_free(G, &dw);
        weight_free(&tw);
    }
}

static void test_mean_heads(void) {
    static const int64_t heads[] = {1, 3, 9}, hds[] = {1, 7, 64, 128};
    for (int a = 0; a < 3; a++)
        for (int c = 0; c < 4; c++) {
            const int64_t nh = heads[a], hd = hds[c];
            float *q = normal_new(nh * hd, 2.0f), *ref = out_new(hd);
            backend_cpu_ref.mean_heads(&g_ref, ref, q, nh, hd);
            float *dq = dev_floats(G, q, nh * hd), *dout = dev_out(G, hd);
            G->ops->mean_heads(G, dout, dq, nh, hd);
            char what[64];
            snprintf(what, sizeof what, "mean_heads heads=%lld hd=%lld", (long long)nh, (long long)hd);
            check_bits(what, dout, ref, hd);
            G->ops->free(G, dq);
            G->ops->free(G, dout);
            free(q); free(ref);
        }
}

// ---- kv_write, copy_rows, copy_2d: whole destination buffers byte for byte ----

static float kv_value(int64_t i) {  // fp16 rounding cases: ties, subnormals, overflow, signed zeros
    static const float special[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -(1.0f + 0x1p-11f), 0x1p-20f, -3e-7f,
                                    65504.0f, 65520.0f, 1e6f, -0.0f, 0.0f, INFINITY, -INFINITY, 0x1p-25f};
    return i % 5 == 0 ? special[(i / 5) % 13] : rand_normal() * 4.0f;
}

static void test_kv_write(void) {
    static const int64_t hds[] = {1, 7, 64, 128};
    for (int elem = 0; elem < 2; elem++)
        for (int64_t n_kv = 1; n_kv <= 8; n_kv = n_kv == 1 ? 3 : n_kv == 3 ? 8 : 9)
            for (int hi = 0; hi < 4; hi++)
                for (int64_t n_tok = 0; n_tok <= 5; n_tok += 5) {
                    const int64_t hd = hds[hi], n_slots = n_tok + 4, stride = n_slots * hd + 5;
                    const size_t n_bytes = kv_bytes(elem, n_kv * stride);
                    float *k = floats_new(n_tok * n_kv * hd), *v = floats_new(n_tok * n_kv * hd);
                    for (int64_t i = 0; i < n_tok * n_kv * hd; i++) {
                        k[i] = kv_value(i);
                        v[i] = kv_value(i + 2);
                    }
                    int64_t slot[5 * 8 + 1];
                    for (int64_t t = 0; t < n_tok; t++)  // distinct per head, different orders per head
                        for (int64_t h = 0; h < n_kv; h++)
                            slot[t * n_kv + h] = h % 2 ? n_slots - 1 - t : (t + 2 * h) % n_slots;
                    uint8_t *hk = malloc(n_bytes), *hv = malloc(n_bytes);
                    memset(hk, 0xab, n_bytes);
                    memset(hv, 0xcd, n_bytes);
                    void *dk = dev_upload(G, hk, n_bytes), *dv = dev_upload(G, hv, n_bytes);
                    float *dks = dev_floats(G, k, n_tok * n_kv * hd), *dvs = dev_floats(G, v, n_tok * n_kv * hd);
                    kv_view rk = {hk, elem, stride}, rv = {hv, elem, stride};
                    kv_view gk = {dk, elem, stride}, gv = {dv, elem, stride};
                    backend_cpu_ref.kv_write(&g_ref, &rk, &rv, slot, k, v, n_tok, n_kv, hd);
                    G->ops->kv_write(G, &gk, &gv, slot, dks, dvs, n_tok, n_kv, hd);
                    uint8_t *bk = malloc(n_bytes), *bv = malloc(n_bytes);
                    G->ops->download(G, bk, dk, n_bytes);
                    G->ops->download(G, bv, dv, n_bytes);
                    sync_ok("kv_write");
                    CHECK_MSG(memcmp(bk, hk, n_bytes) == 0 && memcmp(bv, hv, n_bytes) == 0,
                              "kv_write %s n_kv=%lld hd=%lld n_tok=%lld: caches byte for byte", kv_name(elem),
                              (long long)n_kv, (long long)hd, (long long)n_tok);
                    G->ops->free(G, dk);
                    G->ops->free(G, dv);
                    G->ops->free(G, dks);
                    G->ops->free(G, dvs);
                    free(hk); free(hv); free(bk); free(bv); free(k); free(v);
                }
}

static void test_copy_rows_2d(void) {
    static const size_t row_bytes_list[] = {3, 4, 12, 256};
    for (int ri = 0; ri < 4; ri++)
        for (int ni = 0; ni < 4; ni++) {
            const int64_t n_rows = ODD_N[ni], n_src = n_rows + 5, n_dst = n_rows + 3;
            const size_t rb = row_bytes_list[ri], sb = (size_t)n_src * rb, db = (size_t)n_dst * rb;
            uint8_t *src = malloc(sb + 1), *ref = malloc(db + 1), *got = malloc(db + 1);
            for (size_t i = 0; i < sb; i++) src[i] = (uint8_t)rand_u32();
            int64_t *di = malloc((size_t)(n_rows + 1) * sizeof(int64_t)), *si = malloc((size_t)(n_rows + 1) * sizeof(int64_t));
            for (int64_t i = 0; i < n_rows; i++) {
                di[i] = n_dst - 1 - i;        // reversed
                si[i] = (i * 5 + 2) % n_src;  // scattered, repeats allowed on the source side
            }
            void *dsrc = dev_upload(G, src, sb);
            for (int mode = 0; mode < 4; mode++) {  // both lists, NULL dst list, NULL src list, both NULL
                const int64_t *dl = mode == 1 || mode == 3 ? NULL : di, *sl = mode >= 2 ? NULL : si;
                memset(ref, 0x5a, db);
                void *ddst = dev_upload(G, ref, db);
                backend_cpu_ref.copy_rows(&g_ref, ref, dl, src, sl, n_rows, rb);
                G->ops->copy_rows(G, ddst, dl, dsrc, sl, n_rows, rb);
                G->ops->download(G, got, ddst, db);
                sync_ok("copy_rows");
                CHECK_MSG(memcmp(got, ref, db) == 0, "copy_rows rb=%zu n=%lld mode %d", rb, (long long)n_rows, mode);
                G->ops->free(G, ddst);
            }
            G->ops->free(G, dsrc);
            // copy_2d: pitches rb+8 (src) and rb+3 (dst), and the dense case
            for (int dense = 0; dense < 2; dense++) {
                const size_t sp = dense ? rb : rb + 8, dp = dense ? rb : rb + 3;
                const size_t s2b = (size_t)n_rows * sp, d2b = (size_t)n_rows * dp;
                uint8_t *s2 = malloc(s2b + 1), *r2 = malloc(d2b + 1), *g2 = malloc(d2b + 1);
                for (size_t i = 0; i < s2b; i++) s2[i] = (uint8_t)rand_u32();
                memset(r2, 0x3c, d2b);
                void *ds = dev_upload(G, s2, s2b), *dd = dev_upload(G, r2, d2b);
                backend_cpu_ref.copy_2d(&g_ref, r2, dp, s2, sp, rb, n_rows);
                G->ops->copy_2d(G, dd, dp, ds, sp, rb, n_rows);
                G->ops->download(G, g2, dd, d2b);
                sync_ok("copy_2d");
                CHECK_MSG(memcmp(g2, r2, d2b) == 0, "copy_2d rb=%zu n=%lld dense=%d", rb, (long long)n_rows, dense);
                G->ops->free(G, ds);
                G->ops->free(G, dd);
                free(s2); free(r2); free(g2);
            }
            free(src); free(ref); free(got); free(di); free(si);
        }
}

// ---- argmax ----

static int64_t gpu_argmax(const float *x, int64_t n) {
    float *dx = dev_floats(G, x, n);
    int64_t r = G->ops->argmax(G, dx, n);
    G->ops->free(G, dx);
    return r;
}

static void test_argmax(void) {
    for (int ni = 1; ni < N_ODD; ni++) {
        const int64_t n = ODD_N[ni];
        float *x = normal_new(n, 1.0f);
        CHECK_MSG(gpu_argmax(x, n) == backend_cpu_ref.argmax(&g_ref, x, n), "argmax random n=%lld", (long long)n);
        // Ties: the maximum at several places, the lowest index wins.
        const int64_t a = n / 3, b = n - 1;
        x[b] = 50.0f;
        x[a] = 50.0f;
        CHECK_MSG(gpu_argmax(x, n) == a, "argmax tie n=%lld", (long long)n);
        // NaN never wins, wherever it is.
        for (int64_t i = 0; i < n; i += 3) x[i] = NAN;
        CHECK_MSG(gpu_argmax(x, n) == backend_cpu_ref.argmax(&g_ref, x, n), "argmax with NaN n=%lld", (long long)n);
        // All NaN: the first index. All -inf: the first index.
        for (int64_t i = 0; i < n; i++) x[i] = NAN;
        CHECK(gpu_argmax(x, n) == 0);
        for (int64_t i = 0; i < n; i++) x[i] = -INFINITY;
        CHECK(gpu_argmax(x, n) == 0);
        // -0 and +0 tie.
        for (int64_t i = 0; i < n; i++) x[i] = i % 2 ? 0.0f : -0.0f;
        CHECK(gpu_argmax(x, n) == 0);
        if (n > 2) {
            x[n - 1] = NAN;
            x[n - 2] = -INFINITY;
            x[1] = 1e-30f;
            CHECK(gpu_argmax(x, n) == 1);
        }
        free(x);
    }
    // The vocabulary sizes of the real models, with the maximum last.
    for (int64_t n = 49152; n <= 128256; n += 128256 - 49152) {
        float *x = normal_new(n, 1.0f);
        x[n - 1] = 10.0f;
        CHECK(gpu_argmax(x, n) == n - 1);
        free(x);
    }
    sync_ok("argmax");
}

// ---- failures are sticky and named ----

static void test_sticky_failure(void) {
    backend b2;
    rc_err err = {{0}};
    if (backend_init(&b2, &backend_cuda, 1, 0, &err)) {
        CHECK_MSG(0, "second instance: %s", err.msg);
        return;
    }
    test_weight tw = weight_new(GGML_TYPE_F32, 8, 3, 0);
    weight dw;
    CHECK(b2.ops->weight_upload(&b2, &dw, &tw.w, &err) == 0);
    float *out = b2.ops->alloc(&b2, 8 * 2 * sizeof(float));
    const int32_t tokens[2] = {1, 3};  // 3 is outside the 3-row table
    b2.ops->embed(&b2, out, &dw, tokens, 2);
    CHECK(b2.ops->synchronize(&b2, &err) != 0);
    CHECK_MSG(strstr(err.msg, "cuda_embed") && strstr(err.msg, "[rank ") && strstr(err.msg, "cuda_matmul.c:"),
              "the failure names the call, file:line and the rank: %s", err.msg);
    // Sticky: the first failure is still the one reported.
    b2.ops->rope(&b2, out, 1, 1, 8, (const int64_t[]){0}, &(rope_table){NULL, 7, 0});
    rc_err err2 = {{0}};
    CHECK(b2.ops->synchronize(&b2, &err2) != 0 && strcmp(err.msg, err2.msg) == 0);
    b2.ops->free(&b2, out);
    b2.ops->weight_free(&b2, &dw);
    backend_shutdown(&b2);
    weight_free(&tw);
    // The first instance is unaffected.
    sync_ok("after another instance failed");
}

// A block-format (q8_0) cache is refused by name, before the f16/f32 kernel could overrun its rows.
static void test_kv_write_refuses_block_types(void) {
    backend b2;
    rc_err err = {{0}};
    if (backend_init(&b2, &backend_cuda, 1, 0, &err)) {
        CHECK_MSG(0, "second instance: %s", err.msg);
        return;
    }
    const int64_t head_dim = 32, slot = 0;
    void *kq = b2.ops->alloc(&b2, kv_row_bytes(KV_Q8_0, head_dim)), *vq = b2.ops->alloc(&b2, kv_row_bytes(KV_Q8_0, head_dim));
    float *rows = b2.ops->alloc(&b2, 2 * head_dim * sizeof(float));
    kv_view kd = {kq, KV_Q8_0, head_dim}, vd = {vq, KV_Q8_0, head_dim};
    b2.ops->kv_write(&b2, &kd, &vd, &slot, rows, rows + head_dim, 1, 1, head_dim);
    CHECK(b2.ops->synchronize(&b2, &err) != 0);
    CHECK_MSG(strstr(err.msg, "kv_write") && strstr(err.msg, "f16 or f32"), "names the op and the types: %s", err.msg);
    b2.ops->free(&b2, rows);
    b2.ops->free(&b2, kq);
    b2.ops->free(&b2, vq);
    backend_shutdown(&b2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define RUN(call)                                                \
    do {                                                         \
        double t_ = now_s();                                     \
        call;                                                    \
        printf("  %-28s %7.2f s\n", #call, now_s() - t_);        \
        fflush(stdout);                                          \
    } while (0)

int main(void) {
    rc_err err = {{0}};
    if (backend_init(&g_ref, &backend_cpu_ref, 1, -1, &err)) {
        fprintf(stderr, "test_kernels: %s\n", err.msg);
        return 1;
    }
    if (backend_init(&g_gpu, &backend_cuda, 1, 0, &err)) {
        fprintf(stderr, "test_kernels: skipped: %s\n", err.msg);
        return 77;
    }
    const char *seed = getenv("RECALL_EMU_SEED");
    printf("test_kernels on %s (RECALL_EMU_SEED=%s)\n", backend_cuda.name, seed ? seed : "unset");
    RUN(test_memory());
    RUN(test_matmul());
    RUN(test_rmsnorm());
    RUN(test_rope());
    RUN(test_swiglu());
    RUN(test_add());
    RUN(test_embed());
    RUN(test_mean_heads());
    RUN(test_kv_write());
    RUN(test_copy_rows_2d());
    RUN(test_argmax());
    RUN(test_sticky_failure());
    RUN(test_kv_write_refuses_block_types());
    op_stats_print(g_stats, ST_COUNT);
    backend_shutdown(&g_gpu);
    backend_shutdown(&g_ref);
    TEST_MAIN_END();
}
