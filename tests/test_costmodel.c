// The cost model (eval/costmodel.c) against figures computed by hand for a
// tiny shape, and against the engine's own counters (K/V bytes read,
// collective calls and bytes) on three simulated ranks.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "comm/comm.h"
#include "engine/engine.h"
#include "eval/costmodel.h"
#include "tiny_model.h"

// Shape: 2 layers, d_model 64, 4 heads over 2 KV heads of 16, d_ff 96,
// vocab 300, 1 byte per weight, f16 K/V. Per decode token:
//   params = 2 * (64*(64+2*32) + 64*64 + 3*64*96) + 64*300 = 2 * 30720 + 19200 = 80640
//   K/V bytes per position = 2 layers * 2 (K, V) * 2 heads * 16 * 2 bytes = 256
// 100 positions on 3 ranks: the largest shard holds 34.
static cm_shape tiny_shape(void) {
    cm_shape s = {.name = "tiny", .n_layer = 2, .d_model = 64, .n_head = 4, .n_head_kv = 2, .head_dim = 16,
                  .d_ff = 96, .n_vocab = 300, .weight_bytes_per_param = 1.0, .kv_elem_bytes = 2};
    return s;
}

static void test_hand_computed(void) {
    cm_shape s = tiny_shape();
    cm_device d = {.name = "test", .mem_bw = 1e9, .kv_bw = 0.5e9, .flops = 0, .prefill_flops = 1e10,
                   .link_latency = 1e-5, .link_bw = 1e9, .shared = 0};
    rc_err err = {{0}};
    cm_result r;
    CHECK(cm_params_per_token(&s) == 80640);

    cm_method_opts full = {.method = CM_FULL};
    CHECK(cm_predict(&s, &d, &full, 100, 3, &r, &err) == 0);
    CHECK(r.local_positions == 34);
    CHECK_CLOSE(r.full.weight_bytes, 80640, 0, 1e-12);
    CHECK_CLOSE(r.full.kv_bytes, 34 * 256, 0, 1e-12);                // 8704
    CHECK_CLOSE(r.full.flops, 2 * 80640 + 2 * 4 * 4 * 16 * 34, 0, 1e-12);  // 178688: 4 FLOPs per head-dim per key
    CHECK(r.full.calls == 2);                                        // one all-gather of (o, lse) per layer
    CHECK_CLOSE(r.full.comm_bytes, 2 * 2 * (4 * 16 + 4) * 4, 0, 1e-12);  // layers x other ranks x floats x 4 = 1088
    // 80640 / 1e9 + 8704 / 0.5e9 + 2 * 1e-5 + 1088 / 1e9
    CHECK_CLOSE(r.full.seconds, 8.064e-5 + 1.7408e-5 + 2e-5 + 1.088e-6, 0, 1e-12);
    CHECK_CLOSE(r.mean_step_seconds, r.full.seconds, 0, 1e-15);
    CHECK_CLOSE(r.total_mem, 80640 + 8704, 0, 1e-12);
    // Prefill: 2 * (80640 - 64*300) + 2*4*4*16 * 100/2 = 148480 FLOPs a token, a third of the
    // tokens per rank, + 2 all-gathers + 100 positions * 256 bytes * 2/3 over the link.
    CHECK_CLOSE(r.prefill_token_seconds, (148480.0 * 100 / 3 / 1e10 + 2e-5 + 100 * 256 * 2.0 / 3 / 1e9) / 100, 0, 1e-12);

    cm_method_opts rec = {.method = CM_RECYCLED, .k = 8, .stride = 4};
    CHECK(cm_predict(&s, &d, &rec, 100, 3, &r, &err) == 0);
    CHECK_CLOSE(r.full.kv_bytes, 8704 + 2 * 4 * 34 * 4, 0, 1e-12);  // + the scores written: 9792
    CHECK(r.full.calls == 6);  // per layer: states, candidate lists, rows
    // states 2*2*(68+2)*4 = 1120, candidates 2*2*(2 heads*8*16) = 1024, rows (bound) 2*2*8*2*32 * 2/3
    CHECK_CLOSE(r.full.comm_bytes, 1120 + 1024 + 2048.0 * 2 / 3, 0, 1e-12);
    // recycled step: K + (stride-1)/2 = 9.5 rows per layer and KV head
    CHECK_CLOSE(r.recycled.kv_bytes, 2 * 2 * 2 * 9.5 * 32, 0, 1e-12);  // 2432
    CHECK_CLOSE(r.recycled.flops, 2 * 80640 + 2 * 4 * 4 * 16 * 9.5, 0, 1e-12);
    CHECK(r.recycled.calls == 0 && r.recycled.comm_bytes == 0);
    CHECK_CLOSE(r.recycled.seconds, 8.064e-5 + 2432 / 0.5e9, 0, 1e-12);
    CHECK_CLOSE(r.mean_step_seconds, (r.full.seconds + 3 * r.recycled.seconds) / 4, 0, 1e-12);
    CHECK_CLOSE(r.recycled_mem, 2 * 2 * 2 * (8 + 4) * 32, 0, 1e-12);  // 3072
    // The rebuild: 2 layers x 2 KV heads rank 34 positions each (136
    // candidates) and gather 8 rows each (32 rows), on a device that ranks
    // 1e6 candidates/s and gathers 1e5 rows/s: + 136 us + 320 us on the full step only.
    CHECK_CLOSE(r.full.select_candidates, 2 * 2 * 34, 0, 1e-12);
    CHECK_CLOSE(r.full.gather_rows, 2 * 2 * 8, 0, 1e-12);
    CHECK(r.recycled.select_candidates == 0 && r.recycled.gather_rows == 0);
    const double full_before = r.full.seconds, rec_before = r.recycled.seconds;
    d.select_rate = 1e6;
    d.gather_rate = 1e5;
    CHECK(cm_predict(&s, &d, &rec, 100, 3, &r, &err) == 0);
    CHECK_CLOSE(r.full.seconds, full_before + 136 / 1e6 + 32 / 1e5, 0, 1e-12);
    CHECK_CLOSE(r.recycled.seconds, rec_before, 0, 1e-15);
    CHECK_CLOSE(r.mean_step_seconds, (r.full.seconds + 3 * r.recycled.seconds) / 4, 0, 1e-12);
    // Shared by 3 ranks at a third each, unless one rank's own rate is lower (here a tenth).
    d.shared = 1;
    CHECK(cm_predict(&s, &d, &rec, 100, 3, &r, &err) == 0);
    const double shared_sel = 3 * (136 / 1e6 + 32 / 1e5);
    d.rank_select_rate = 1e5;
    d.rank_gather_rate = 1e4;
    cm_result r1;
    CHECK(cm_predict(&s, &d, &rec, 100, 3, &r1, &err) == 0);
    CHECK_CLOSE(r1.full.seconds - r.full.seconds, (136 / 1e5 + 32 / 1e4) - shared_sel, 0, 1e-12);
    d.shared = 0;
    d.select_rate = d.gather_rate = d.rank_select_rate = d.rank_gather_rate = 0;

    // One rank: no collectives. A shared device (this CPU): 3 ranks read at a third each.
    CHECK(cm_predict(&s, &d, &full, 100, 1, &r, &err) == 0);
    CHECK(r.full.calls == 0 && r.full.comm_bytes == 0 && r.local_positions == 100);
    d.shared = 1;
    d.flops = 1e6;  // now compute-bound: 178688 FLOPs * 3 ranks / 1e6
    CHECK(cm_predict(&s, &d, &full, 100, 3, &r, &err) == 0);
    CHECK_CLOSE(r.full.seconds, 178688.0 * 3 / 1e6 + 2e-5 + 1088 / 1e9, 0, 1e-12);

    // A rank limited by its own threads: one rank alone on a shared device gets
    // at most rank_mem_bw / rank_kv_bw (here half the device).
    d.flops = 0;
    d.rank_mem_bw = 0.5e9;
    d.rank_kv_bw = 0.25e9;
    CHECK(cm_predict(&s, &d, &full, 100, 1, &r, &err) == 0);
    CHECK_CLOSE(r.full.seconds, 80640 / 0.5e9 + 100 * 256 / 0.25e9, 0, 1e-12);
    CHECK(cm_predict(&s, &d, &full, 100, 3, &r, &err) == 0);  // 3 ranks: the device's third is smaller
    CHECK_CLOSE(r.full.seconds, 3 * (80640 / 1e9 + 8704 / 0.5e9) + 2e-5 + 1088 / 1e9, 0, 1e-12);
    d.rank_mem_bw = d.rank_kv_bw = 0;

    // Bad settings fail with a message.
    CHECK(cm_predict(&s, &d, &full, 0, 3, &r, &err) != 0);
    cm_method_opts bad = {.method = CM_RECYCLED, .k = 0, .stride = 4};
    CHECK(cm_predict(&s, &d, &bad, 100, 3, &r, &err) != 0 && strstr(err.msg, "k >= 1"));
    cm_shape odd = s;
    odd.n_head_kv = 3;
    CHECK(cm_predict(&odd, &d, &full, 100, 3, &r, &err) != 0);
    cm_shape named;
    CHECK(cm_shape_by_name("llama-3.1-8b", &named) == 0 && named.n_layer == 32 && named.n_head_kv == 8);
    CHECK(cm_params_per_token(&named) > 7000000000LL && cm_params_per_token(&named) < 8100000000LL);
    CHECK(cm_shape_by_name("gpt-5", &named) != 0);
    cm_device h;
    CHECK(cm_device_by_name("h100", &h) == 0 && h.mem_bw == 3.35e12 && !h.shared);
}

// The engine's counters for one full decode step on 3 simulated ranks.
typedef struct job {
    const model *m;
    comm *cm;
    const int32_t *tok;
    int ok;
    int64_t kv_read, calls, recv;
} job;

#define N_PROMPT 99

static void *rank_main(void *arg) {
    job *j = arg;
    rc_err err = {{0}};
    engine_opts o = engine_default_opts();
    o.n_ctx = N_PROMPT + 1;
    o.comm = j->cm;
    engine *e = engine_create(j->m, &o, &err);
    if (!e) return NULL;
    if (engine_prefill(e, j->tok, N_PROMPT, NULL, NULL, NULL, &err) == 0) {
        const comm_counters before = j->cm->counters[COMM_PHASE_DECODE];
        if (engine_decode(e, j->tok[N_PROMPT], &err) == 0) {
            j->kv_read = engine_last_step(e)->kv_bytes_read;
            j->calls = engine_last_step(e)->comm_calls;
            j->recv = j->cm->counters[COMM_PHASE_DECODE].bytes_recv - before.bytes_recv;
            j->ok = 1;
        }
    }
    engine_destroy(e);
    return NULL;
}

static void test_against_engine(void) {
    char path[64];
    rc_err err = {{0}};
    model m;
    if (tiny_model_sharding(path, &m, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    int32_t tok[N_PROMPT + 1];
    for (int i = 0; i <= N_PROMPT; i++) tok[i] = 5 + (i * 37) % 200;
    comm *comms[3];
    CHECK(comm_sim_create(3, comms, &err) == 0);
    job jobs[3];
    pthread_t th[3];
    for (int r = 0; r < 3; r++) {
        jobs[r] = (job){.m = &m, .cm = comms[r], .tok = tok};
        pthread_create(&th[r], NULL, rank_main, &jobs[r]);
    }
    for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
    const model_config *c = &m.cfg;
    cm_shape s = {.name = "tiny", .n_layer = c->n_layer, .d_model = c->d_model, .n_head = c->n_head,
                  .n_head_kv = c->n_head_kv, .head_dim = c->head_dim, .d_ff = c->ffn_dim, .n_vocab = c->n_vocab,
                  .weight_bytes = model_weight_bytes_per_token(&m), .kv_elem_bytes = 2};
    cm_device d = {.name = "t", .mem_bw = 1e9, .prefill_flops = 1e9, .link_bw = 1e9};
    cm_method_opts full = {.method = CM_FULL};
    cm_result r;
    CHECK(cm_predict(&s, &d, &full, N_PROMPT + 1, 3, &r, &err) == 0);
    int64_t most = 0;
    for (int rk = 0; rk < 3; rk++) {
        CHECK(jobs[rk].ok);
        most = jobs[rk].kv_read > most ? jobs[rk].kv_read : most;
        CHECK_MSG(jobs[rk].calls == r.full.calls, "rank %d: %lld calls, model %lld", rk, (long long)jobs[rk].calls,
                  (long long)r.full.calls);
        CHECK_MSG(jobs[rk].recv == (int64_t)r.full.comm_bytes, "rank %d: %lld bytes received, model %.0f", rk,
                  (long long)jobs[rk].recv, r.full.comm_bytes);
    }
    CHECK_MSG(most == (int64_t)r.full.kv_bytes, "largest shard read %lld K/V bytes, model %.0f", (long long)most,
              r.full.kv_bytes);
    for (int rk = 0; rk < 3; rk++) comm_destroy(comms[rk]);
    model_free(&m);
    remove(path);
}

int main(void) {
    test_hand_computed();
    test_against_engine();
    TEST_MAIN_END();
}
