// Sharded prefill + decode, simulated: N ranks as threads of one process
// (comm_sim), each with its own engine over the same tiny model, must
// reproduce the single-process computation (design.md §2): logits within
// 1e-5 relative, identical bits on every rank, each rank holding only its
// share of the KV cache, and exactly the expected collective calls.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "test_backend.h"
#include "engine/sampler.h"
#include "tiny_model.h"

#define MAX_RANKS 5
#define N_DECODE_FULL 40
#define N_DECODE_DEVICE 6   // the --device-subset runs (the SIMT emulator: ~0.13 s per rank and step)

static int N_DECODE = N_DECODE_FULL;  // decode steps of every run
static int PREFILL_BLOCK = 5;          // --device-subset: 13 (fewer launches on the emulator)

typedef struct rank_job {
    const model *m;
    const char *dev_path;     // the device data path the engine attached ("none", "nccl", "staged")
    const backend_ops *be;
    comm *c;
    const int32_t *prompt;
    int64_t n_prompt;
    int zigzag;
    int kv_elem;
    float *logits;        // (N_DECODE + 1, n_vocab): after prefill, then after each decode step
    int32_t *generated;   // (N_DECODE)
    int64_t n_local;      // KV positions held at the end
    int64_t capacity;
    comm_counters prefill, decode;
    int failed;
    char err[256];        // the first error
    double fail_s;        // when it came, seconds after the run started
} rank_job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double g_run_start;  // run_ranks' start (fault timing)

static void rank_failed(rank_job *j, const rc_err *err) {
    fprintf(stderr, "rank %d: %s\n", j->c->rank, err->msg);
    snprintf(j->err, sizeof(j->err), "%.255s", err->msg);
    j->fail_s = now_s() - g_run_start;
    j->failed = 1;
}

// Greedy decode from the prompt; every rank records its logits at each step.
static void *run_rank(void *arg) {
    rank_job *j = arg;
    const int64_t V = j->m->cfg.n_vocab;
    engine_opts o = engine_default_opts();
    o.backend = j->be;
    o.n_ctx = j->n_prompt + N_DECODE + 1;
    o.n_threads = 1;
    o.kv_elem = j->kv_elem;
    o.prefill_block = PREFILL_BLOCK;  // several blocks per rank, uneven
    o.comm = j->c;
    o.zigzag = j->zigzag;
    engine *e = NULL;
    rc_err err = {{0}};
    if ((e = engine_create(j->m, &o, &err))) j->dev_path = j->c->dev ? j->c->dev->kind : "none";
    if (!e || engine_prefill(e, j->prompt, j->n_prompt, NULL, NULL, NULL, &err)) {
        rank_failed(j, &err);
        engine_destroy(e);
        return NULL;
    }
    memcpy(j->logits, engine_logits(e), (size_t)V * sizeof(float));
    for (int t = 0; t < N_DECODE; t++) {
        int32_t next = argmax_logits(engine_logits(e), V);
        j->generated[t] = next;
        if (engine_decode(e, next, &err)) {
            rank_failed(j, &err);
            break;
        }
        memcpy(j->logits + (int64_t)(t + 1) * V, engine_logits(e), (size_t)V * sizeof(float));
    }
    j->n_local = e->n_local;
    j->capacity = e->kv.capacity;
    j->prefill = j->c->counters[COMM_PHASE_PREFILL];
    j->decode = j->c->counters[COMM_PHASE_DECODE];
    engine_destroy(e);
    return NULL;
}

static void run_ranks(const model *m, const backend_ops *be, int n_ranks, const int32_t *prompt, int64_t n_prompt,
                      int zigzag, int kv_elem, rank_job *jobs) {
    const int64_t V = m->cfg.n_vocab;
    comm *comms[MAX_RANKS];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(n_ranks, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    g_run_start = now_s();
    for (int r = 0; r < n_ranks; r++) {
        jobs[r] = (rank_job){.m = m, .be = be, .c = comms[r], .prompt = prompt, .n_prompt = n_prompt, .zigzag = zigzag,
                             .kv_elem = kv_elem};
        jobs[r].logits = malloc((size_t)((N_DECODE + 1) * V) * sizeof(float));
        jobs[r].generated = malloc(N_DECODE * sizeof(int32_t));
        pthread_create(&th[r], NULL, run_rank, &jobs[r]);
    }
    for (int r = 0; r < n_ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < n_ranks; r++) comm_destroy(comms[r]);
}

static void free_jobs(rank_job *jobs, int n) {
    for (int r = 0; r < n; r++) {
        free(jobs[r].logits);
        free(jobs[r].generated);
    }
}

// shard_runs and shard_local_count against a position-by-position scan of shard_owner.
static void test_runs_vs_owner(void) {
    static const int64_t prompts[] = {0, 1, 3, 7, 97, 100};
    static const int64_t totals_extra[] = {0, 1, 31, 32, 33, 200};
    for (int zig = 0; zig < 2; zig++)
        for (int N = 1; N <= MAX_RANKS; N++)
            for (size_t a = 0; a < sizeof(prompts) / sizeof(prompts[0]); a++)
                for (size_t b = 0; b < sizeof(totals_extra) / sizeof(totals_extra[0]); b++) {
                    shard_plan pl = {.n_ranks = N, .zigzag = zig, .n_prompt = prompts[a]};
                    const int64_t n_total = prompts[a] + totals_extra[b];
                    shard_run runs[64];
                    CHECK(shard_max_runs(&pl, n_total) <= 64);
                    int64_t n_runs = shard_runs(&pl, n_total, runs), expect_start = 0;
                    int64_t counts[MAX_RANKS] = {0};
                    for (int64_t p = 0; p < n_total; p++) counts[shard_owner(&pl, p)]++;
                    for (int64_t i = 0; i < n_runs; i++) {
                        CHECK_MSG(runs[i].start == expect_start && runs[i].end > runs[i].start, "run %lld bounds", (long long)i);
                        if (i > 0) CHECK_MSG(runs[i].owner != runs[i - 1].owner, "adjacent runs not merged");
                        for (int64_t p = runs[i].start; p < runs[i].end; p++)
                            CHECK_MSG(shard_owner(&pl, p) == runs[i].owner, "N=%d zig=%d pos %lld owner", N, zig,
                                      (long long)p);
                        expect_start = runs[i].end;
                    }
                    CHECK_MSG(expect_start == n_total, "runs cover [0, %lld)", (long long)n_total);
                    for (int r = 0; r < N; r++)
                        CHECK_MSG(shard_local_count(&pl, r, n_total) == counts[r], "N=%d zig=%d prompt=%lld total=%lld rank %d count",
                                  N, zig, (long long)prompts[a], (long long)n_total, r);
                }
}

// One run on N ranks against the one-rank reference `ref`: bitwise equal
// ranks, each holding its share, the expected collective calls and bytes,
// the reference's tokens and logits within the cache type's tolerance.
static void check_sharded(const model *m, const rank_job *jobs, int N, const rank_job *ref, int64_t n_prompt, int zig,
                          int kv_elem, const char *what) {
    const int64_t V = m->cfg.n_vocab;
    int64_t total_local = 0;
    for (int r = 0; r < N; r++) {
        CHECK(!jobs[r].failed);
        total_local += jobs[r].n_local;
        // Bitwise identical logits on every rank at every step.
        CHECK_MSG(memcmp(jobs[r].logits, jobs[0].logits, (size_t)((N_DECODE + 1) * V) * 4) == 0,
                  "%s N=%d rank %d logits differ from rank 0", what, N, r);
        // Each rank holds about 1/N of the positions: its prompt share plus
        // at most one generation block beyond its round-robin share.
        int64_t bound = (n_prompt + N - 1) / N + (zig ? 2 : 0) +
                        ((N_DECODE + SHARD_GEN_BLOCK * N - 1) / (SHARD_GEN_BLOCK * N)) * SHARD_GEN_BLOCK;
        CHECK_MSG(jobs[r].n_local <= bound, "%s N=%d rank %d holds %lld positions (bound %lld)", what, N, r,
                  (long long)jobs[r].n_local, (long long)bound);
        // Collectives: prefill = one K/V all-gather per layer + one broadcast of
        // the last hidden state; decode = one (o, lse) all-gather per layer per step.
        int64_t want_prefill = N > 1 ? m->cfg.n_layer + 1 : 0;
        int64_t want_decode = N > 1 ? (int64_t)N_DECODE * m->cfg.n_layer : 0;
        CHECK_MSG(jobs[r].prefill.n_calls == want_prefill, "%s N=%d prefill calls %lld != %lld", what, N,
                  (long long)jobs[r].prefill.n_calls, (long long)want_prefill);
        CHECK_MSG(jobs[r].decode.n_calls == want_decode, "%s N=%d decode calls %lld != %lld", what, N,
                  (long long)jobs[r].decode.n_calls, (long long)want_decode);
        if (N > 1) {  // per step and layer: N states of n_head*(head_dim+1) floats
            int64_t want = (int64_t)N_DECODE * m->cfg.n_layer * (N - 1) * m->cfg.n_head * (m->cfg.head_dim + 1) * 4;
            CHECK_MSG(jobs[r].decode.bytes_recv == want, "%s N=%d decode bytes %lld != %lld", what, N,
                      (long long)jobs[r].decode.bytes_recv, (long long)want);
        }
    }
    CHECK_MSG(total_local == n_prompt + N_DECODE, "%s N=%d positions held %lld != %lld", what, N,
              (long long)total_local, (long long)(n_prompt + N_DECODE));
    // Same tokens and logits as one process.
    CHECK_MSG(memcmp(jobs[0].generated, ref->generated, (size_t)N_DECODE * sizeof(int32_t)) == 0,
              "%s N=%d zigzag=%d: generated tokens differ from one process", what, N, zig);
    // f32 cache: only summation order differs (merge of partial states) -> 1e-5.
    // f16 cache: a 1e-7 upstream difference can flip the rounding of a new K/V
    // element by one fp16 ulp (5e-4 relative), so logits move by up to ~5e-5.
    const double tol = kv_elem == KV_F32 ? 1e-5 : 2e-4;
    for (int t = 0; t <= N_DECODE; t++) {
        double d = max_rel_diff(jobs[0].logits + (int64_t)t * V, ref->logits + (int64_t)t * V, V);
        CHECK_MSG(d <= tol, "%s N=%d zigzag=%d kv=%s prompt=%lld step %d: rel diff %.3g", what, N, zig,
                  kv_elem == KV_F32 ? "f32" : "f16", (long long)n_prompt, t, d);
    }
}

// --device-subset: the multi-rank cases on the test backend (with
// RECALL_TEST_BACKEND=cuda_emu the emulated CUDA backend, whose buffers move
// over the device data path: emulated NCCL, or host-staged) against the CPU
// backend on one rank. Sized for the emulator (test_recycle --device-subset
// runs 1..4 ranks through the same paths): 2 ranks, 3 zigzag with an fp16
// cache, 4 over a 3-token prompt (ranks without prompt positions: empty
// parts in the exchanges), 6 steps.
static void device_subset(const model *m, const int32_t *prompt) {
    N_DECODE = N_DECODE_DEVICE;
    PREFILL_BLOCK = 13;
    static const struct { int64_t n_prompt; int zig, N, kv_elem; } runs[] = {
        {97, 0, 2, KV_F32}, {97, 1, 3, KV_F16}, {3, 0, 4, KV_F32},
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        rank_job ref[1], jobs[MAX_RANKS];
        run_ranks(m, &backend_cpu, 1, prompt, runs[i].n_prompt, 0, runs[i].kv_elem, ref);
        CHECK(!ref[0].failed);
        run_ranks(m, test_backend(), runs[i].N, prompt, runs[i].n_prompt, runs[i].zig, runs[i].kv_elem, jobs);
        char what[64];
        snprintf(what, sizeof(what), "%s vs cpu", test_backend_name());
        for (int r = 0; r < runs[i].N; r++)
            CHECK_MSG(jobs[r].dev_path && !strcmp(jobs[r].dev_path, test_device_path(runs[i].N)),
                      "%s N=%d rank %d: device data path %s, expected %s", what, runs[i].N, r,
                      jobs[r].dev_path ? jobs[r].dev_path : "?", test_device_path(runs[i].N));
        check_sharded(m, jobs, runs[i].N, &ref[0], runs[i].n_prompt, runs[i].zig, runs[i].kv_elem, what);
        free_jobs(jobs, runs[i].N);
        free_jobs(ref, 1);
    }
}

// A rank that fails ends the job: RECALL_COMM_FAIL makes rank 1 fail its
// call-th collective of `phase` before it starts, while ranks 0 and 2 wait
// inside the same device transfer. Rank 1 cancels the device data path
// (ncclCommAbort); the others must fail too, promptly, instead of hanging.
static void device_fault(const model *m, const int32_t *prompt, const char *spec, const char *what) {
    setenv(COMM_FAIL_ENV, spec, 1);
    rank_job jobs[3];
    run_ranks(m, test_backend(), 3, prompt, 97, 0, KV_F32, jobs);
    unsetenv(COMM_FAIL_ENV);
    for (int r = 0; r < 3; r++) {
        CHECK_MSG(jobs[r].failed, "fault in %s (%s): rank %d did not fail", what, spec, r);
        CHECK_MSG(jobs[r].fail_s < 30.0, "fault in %s: rank %d failed only after %.1f s", what, r, jobs[r].fail_s);
        if (r == 1)
            CHECK_MSG(strstr(jobs[r].err, "injected failure") != NULL, "fault in %s: rank 1 says '%s'", what, jobs[r].err);
        else  // woken by the abort, naming the NCCL call and the device
            CHECK_MSG(strstr(jobs[r].err, "failed: ") && strstr(jobs[r].err, "GPU "), "fault in %s: rank %d says '%s'", what,
                      r, jobs[r].err);
    }
    free_jobs(jobs, 3);
}

int main(int argc, char **argv) {
    const int subset = argc > 1 && strcmp(argv[1], "--device-subset") == 0;
    if (argc > 1 && !subset) {
        fprintf(stderr, "usage: test_shard [--device-subset]\n");
        return 2;
    }
    test_backend_setup();
    if (!subset) test_runs_vs_owner();
    char path[64];
    rc_err err = {{0}};
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);
    const int64_t V = m.cfg.n_vocab;

    int32_t prompt[97];
    uint64_t s = 12345;
    for (int i = 0; i < 97; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
    if (subset) {
        device_subset(&m, prompt);
        if (strcmp(test_device_path(3), "nccl") == 0) {
            device_fault(&m, prompt, "1:prefill:2", "layer 1's K/V exchange (an allgatherv)");
            device_fault(&m, prompt, "1:decode:2", "the (o, lse) all-gather");
        }
        model_free(&m);
        unlink(path);
        TEST_MAIN_END();
    }
    const int64_t prompt_lens[] = {97, 3, 1};  // 3 and 1: some ranks own no prompt position

    for (int kv = 0; kv < 2; kv++) {
        const int kv_elem = kv ? KV_F32 : KV_F16;
        for (size_t pl = 0; pl < sizeof(prompt_lens) / sizeof(prompt_lens[0]); pl++) {
            const int64_t n_prompt = prompt_lens[pl];
            rank_job ref[1];
            run_ranks(&m, test_backend(), 1, prompt, n_prompt, 0, kv_elem, ref);
            CHECK(!ref[0].failed);
            for (int zig = 0; zig < 2; zig++)
                for (int N = 1; N <= MAX_RANKS; N++) {
                    rank_job jobs[MAX_RANKS];
                    run_ranks(&m, test_backend(), N, prompt, n_prompt, zig, kv_elem, jobs);
                    check_sharded(&m, jobs, N, &ref[0], n_prompt, zig, kv_elem, test_backend_name());
                    free_jobs(jobs, N);
                }
            free_jobs(ref, 1);
        }
    }
    model_free(&m);
    unlink(path);
    TEST_MAIN_END();
}
