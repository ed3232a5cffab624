// The whole engine on the CUDA backend (in CI: its SIMT emulator,
// recall_cuda_emu) against the fast CPU backend, in one process: tiny Llama
// and Qwen2 models (GQA 2 and 4, head_dim 32 and 64, Q4_1 / Q8_0 / F16
// weights), a 45-token prompt in uneven prefill blocks (the GEMM path) then
// 24 greedy decode steps (the matvec path), with full attention and with
// recycled attention (stride 4, K 16, pooling), fp16 and fp32 KV caches.
// Checked: the greedy tokens are identical, every step's logits agree within
// test_engine's engine-vs-engine tolerances for fp32 KV (NMSE <= 1e-11, max
// rel <= 1e-5; measured worst 3.9e-13 / 7.9e-7) and for fp16 KV max rel
// <= 3e-4 with NMSE <= 1e-8 (measured worst 9.8e-10 / 2.8e-5: K/V that differ
// in the last fp32 bits round to different fp16 neighbours, 2^-11 relative,
// on more cached elements than test_engine's models hold; the whole fp16
// rounding is 5e-7 there), and recycled attention runs full and recycled
// steps on the same schedule on both backends.
// test_engine_cuda_emu and the multi-rank recycled tests need what this one
// does not: attention for head_dim 12 and 16, and host access to device
// buffers for the simulated communicator.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/cuda/backend_cuda.h"
#include "check.h"
#include "engine/engine.h"
#include "model/quant.h"
#include "policy/recycle.h"
#include "tiny_model.h"

#define N_PROMPT 45
#define N_DECODE 24

typedef struct run_out {
    int32_t tokens[N_DECODE];
    float *logits;  // (N_DECODE + 1, n_vocab): after the prompt, then after each decode step
    int64_t n_full_steps;
} run_out;

static int argmax_f(const float *x, int64_t n) {
    int best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = (int)i;
    return best;
}

static int run(const model *m, const backend_ops *be, int attention, int kv_elem, run_out *out) {
    const int64_t V = m->cfg.n_vocab;
    engine_opts o = engine_default_opts();
    o.n_ctx = N_PROMPT + N_DECODE + 1;
    o.n_threads = 1;
    o.kv_elem = kv_elem;
    o.prefill_block = 13;  // uneven blocks of more than 8 tokens: the GEMM path
    o.backend = be;
    o.attention = attention;
    o.recycle.k = 16;
    o.recycle.stride = 4;
    o.recycle.pool_kernel = 3;
    rc_err err = {{0}};
    engine *e = engine_create(m, &o, &err);
    if (!e) {
        fprintf(stderr, "%s: engine_create: %s\n", be->name, err.msg);
        return -1;
    }
    int32_t prompt[N_PROMPT];
    uint64_t s = 777;
    for (int i = 0; i < N_PROMPT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
    out->logits = malloc((size_t)((N_DECODE + 1) * V) * sizeof(float));
    int rc = engine_prefill(e, prompt, N_PROMPT, NULL, NULL, NULL, &err);
    for (int t = 0; rc == 0 && t < N_DECODE; t++) {
        memcpy(out->logits + t * V, engine_logits(e), (size_t)V * sizeof(float));
        out->tokens[t] = argmax_f(engine_logits(e), V);
        rc = engine_decode(e, out->tokens[t], &err);
    }
    if (rc == 0) memcpy(out->logits + N_DECODE * V, engine_logits(e), (size_t)V * sizeof(float));
    else fprintf(stderr, "%s: %s\n", be->name, err.msg);
    out->n_full_steps = engine_get_stats(e)->n_full_steps;
    engine_destroy(e);
    return rc;
}

static void compare_runs(const run_out *a, const run_out *b, int64_t V, int kv_elem, const char *what) {
    const double max_nmse = kv_elem == KV_F16 ? 1e-8 : 1e-11, max_rel = kv_elem == KV_F16 ? 3e-4 : 1e-5;
    CHECK_MSG(memcmp(a->tokens, b->tokens, sizeof a->tokens) == 0, "%s: the same greedy tokens", what);
    double worst_nmse = 0, worst_rel = 0;
    for (int t = 0; t <= N_DECODE; t++) {
        const float *x = a->logits + t * V, *y = b->logits + t * V;
        double num = 0, den = 0;
        int finite = 1;
        for (int64_t i = 0; i < V; i++) {
            finite &= isfinite(x[i]);
            num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            den += (double)y[i] * y[i];
        }
        const double nmse = num / (den > 0 ? den : 1), rel = max_rel_diff(x, y, V);
        CHECK_MSG(finite && nmse <= max_nmse && rel <= max_rel, "%s step %d: NMSE %.3g (max %.3g), max rel %.3g (max %.3g)",
                  what, t, nmse, max_nmse, rel, max_rel);
        if (getenv("RECALL_TEST_VERBOSE")) printf("    step %d nmse %.3g rel %.3g\n", t, nmse, rel);
        worst_nmse = fmax(worst_nmse, nmse);
        worst_rel = fmax(worst_rel, rel);
    }
    printf("  %-44s worst NMSE %.3g, max rel %.3g\n", what, worst_nmse, worst_rel);
}

int main(void) {
    {  // no usable backend (a real build without a GPU): skipped
        backend probe;
        rc_err err = {{0}};
        if (backend_init(&probe, &backend_cuda, 1, -1, &err)) {
            fprintf(stderr, "test_cuda_engine: skipped: %s\n", err.msg);
            return 77;
        }
        backend_shutdown(&probe);
    }
    tiny_model_params ps[2];
    tiny_model_default(&ps[0]);  // llama, Q4_1 attention, Q8_0 FFN, F16 embeddings, GQA 2, head_dim 32
    ps[0].d_model = 128;
    ps[0].n_head = 4;
    ps[0].n_head_kv = 2;
    ps[0].head_dim = 32;
    ps[0].d_ff = 160;
    ps[0].type_embd = GGML_TYPE_F16;
    ps[0].type_attn = GGML_TYPE_Q4_1;
    ps[0].type_ffn = GGML_TYPE_Q8_0;
    ps[0].type_output = GGML_TYPE_Q4_0;
    tiny_model_default(&ps[1]);  // qwen2 (biases, NeoX rope), GQA 4, head_dim 64, tied output
    ps[1].arch = "qwen2";
    ps[1].seed = 5;
    ps[1].n_layer = 1;
    ps[1].d_model = 64;
    ps[1].n_head = 4;
    ps[1].n_head_kv = 1;
    ps[1].head_dim = 64;
    ps[1].tied_output = 1;
    ps[1].type_embd = ps[1].type_attn = ps[1].type_ffn = GGML_TYPE_BF16;
    const char *tmp = getenv("TMPDIR");
    for (int mi = 0; mi < 2; mi++) {
        char path[512];
        snprintf(path, sizeof path, "%s/recall_test_cuda_engine_%d_%d.gguf", tmp && *tmp ? tmp : "/tmp", (int)getpid(),
                 mi);
        rc_err err = {{0}};
        model m;
        if (tiny_model_write(path, &ps[mi], &err) || model_load(&m, path, &err)) {
            CHECK_MSG(0, "model %d: %s", mi, err.msg);
            remove(path);
            continue;
        }
        const int64_t V = m.cfg.n_vocab;
        for (int kv = 0; kv < 2; kv++)
            for (int att = 0; att < 2; att++) {
                const int attention = att ? ATTENTION_RECYCLED : ATTENTION_FULL, kv_elem = kv ? KV_F32 : KV_F16;
                char what[160];
                snprintf(what, sizeof what, "%s %s, %s KV", ps[mi].arch, att ? "recycled" : "full",
                         kv ? "fp32" : "fp16");
                const clock_t c0 = clock();
                run_out cpu = {0}, gpu = {0};
                const int rc_cpu = run(&m, &backend_cpu, attention, kv_elem, &cpu);
                const int rc_gpu = run(&m, &backend_cuda, attention, kv_elem, &gpu);
                CHECK_MSG(rc_cpu == 0 && rc_gpu == 0, "%s: both engines ran", what);
                if (rc_cpu == 0 && rc_gpu == 0) {
                    compare_runs(&gpu, &cpu, V, kv_elem, what);
                    CHECK_MSG(gpu.n_full_steps == cpu.n_full_steps, "%s: full steps %lld vs %lld", what,
                              (long long)gpu.n_full_steps, (long long)cpu.n_full_steps);
                    if (att) CHECK_MSG(cpu.n_full_steps < N_DECODE, "%s: some steps ran recycled", what);
                }
                printf("  %-44s %.1f s CPU time\n", what, (double)(clock() - c0) / CLOCKS_PER_SEC);
                free(cpu.logits);
                free(gpu.logits);
            }
        model_free(&m);
        remove(path);
    }
    TEST_MAIN_END();
}
