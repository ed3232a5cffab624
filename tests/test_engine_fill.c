// engine_fill_synthetic: decode after a synthetic fill does exactly the work
// of decode after a real prefill of the same depth (K/V bytes read, full and
// recycled steps, collective calls and bytes, positions held per rank), on
// 1-3 simulated ranks, for full, recycled and a KV-compression policy
// (SnapKV, whose vote reads the synthetic prompt window); the filled rows do
// not depend on the rank count and have the scale measured on the real model;
// each window query's lse equals a brute-force log-sum-exp over the keys it
// sees, on every rank count; bad uses fail with a message.
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "comm/comm.h"
#include "engine/engine_internal.h"
#include "peek.h"
#include "test_backend.h"
#include "tiny_model.h"

#define DEPTH 150
#define N_DECODE 24
#define MAX_RANKS 3
#define SEED 99

typedef struct run_cfg {
    int synthetic;
    int attention;
    recycle_opts ro;
    kvpolicy_opts po;
} run_cfg;

#define WIN 32  // the prompt window the engine keeps (KVPOLICY_WINDOW_MAX)
#define MAX_WIN_LSE (8 * WIN * 16)  // n_layer x WIN x n_head of the tiny model, with room

// What one rank saw, step by step.
typedef struct rank_job {
    const model *m;
    comm *cm;
    const run_cfg *cfg;
    const int32_t *tokens;
    int ok;
    char msg[sizeof(((rc_err *)0)->msg)];
    int64_t n_local, kv_used;
    int64_t kv_read[N_DECODE], n_full[N_DECODE], calls[N_DECODE], bytes[N_DECODE];
    int finite;
    // rows held after the fill/prefill: layer 1, KV head 1, first element of K and V per position
    float k_at[DEPTH], v_at[DEPTH];
    int have[DEPTH];
    double k_sq, v_sq, k_sum;
    int64_t n_elems;
    // the prompt window's lse per (layer, w, head): the engine's, and (one rank) brute force
    float win_lse[MAX_WIN_LSE];
    double win_lse_ref[MAX_WIN_LSE];
    int64_t win_n;
} rank_job;

// lse of window query w (position DEPTH - WIN + w) of layer l, head h, over
// keys 0..its position, from the cache's K rows and the window's queries.
static void brute_window_lse(const engine *e, rank_job *j) {
    const model_config *c = &j->m->cfg;
    const int64_t H = c->n_head, hd = c->head_dim, q_dim = H * hd, grp = H / c->n_head_kv;
    for (int64_t l = 0; l < c->n_layer; l++) {
        const kv_view kk = kv_cache_k(&e->kv, l);
        float *kd = peek_copy(e->be, kk.data, (size_t)(c->n_head_kv * kk.head_stride) * sizeof(float));
        float *q = peek_copy(e->be, e->win_q + l * WIN * q_dim, (size_t)(WIN * q_dim) * sizeof(float));
        for (int64_t w = 0; w < WIN; w++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t pos = DEPTH - WIN + w;
                double mx = -INFINITY, sum = 0, sc[DEPTH];
                for (int64_t p = 0; p <= pos; p++) {  // one rank: slot p holds position p
                    double dot = 0;
                    for (int64_t d = 0; d < hd; d++)
                        dot += (double)q[w * q_dim + h * hd + d] * kd[(h / grp) * kk.head_stride + p * hd + d];
                    sc[p] = dot / sqrt((double)hd);
                    mx = sc[p] > mx ? sc[p] : mx;
                }
                for (int64_t p = 0; p <= pos; p++) sum += exp(sc[p] - mx);
                j->win_lse_ref[(l * WIN + w) * H + h] = mx + log(sum);
            }
        free(kd);
        free(q);
    }
}

static void *run_rank(void *arg) {
    rank_job *j = arg;
    const model_config *c = &j->m->cfg;
    rc_err err = {{0}};
    engine_opts o = engine_default_opts();
    o.n_ctx = DEPTH + N_DECODE + 1;
    o.kv_elem = KV_F32;
    o.comm = j->cm;
    o.backend = test_backend();
    o.retain_prompt_cache = 1;  // as recall bench: every method starts from the same fill or prefill
    engine *e = engine_create(j->m, &o, &err);
    if (!e) goto fail;
    // As recall bench: make the depth under full attention, then switch.
    if (j->cfg->synthetic ? engine_fill_synthetic(e, DEPTH, SEED, &err)
                          : engine_prefill(e, j->tokens, DEPTH, NULL, NULL, NULL, &err))
        goto fail_engine;
    j->n_local = e->n_local;
    j->win_n = e->win_n;
    for (int64_t l = 0; l < c->n_layer; l++) {
        float *wl = peek_copy(e->be, e->win_lse + l * WIN * c->n_head, (size_t)(WIN * c->n_head) * sizeof(float));
        memcpy(j->win_lse + l * WIN * c->n_head, wl, (size_t)(WIN * c->n_head) * sizeof(float));
        free(wl);
    }
    if (j->cfg->synthetic && j->cm->size == 1) brute_window_lse(e, j);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const kv_view kk0 = kv_cache_k(&e->kv, l), vv0 = kv_cache_v(&e->kv, l);
        const size_t layer_bytes = (size_t)(c->n_head_kv * kk0.head_stride) * sizeof(float);
        float *kd = peek_copy(e->be, kk0.data, layer_bytes), *vd = peek_copy(e->be, vv0.data, layer_bytes);
        const kv_view kk = {.data = kd, .head_stride = kk0.head_stride}, vv = {.data = vd, .head_stride = vv0.head_stride};
        for (int64_t h = 0; h < c->n_head_kv; h++)
            for (int64_t i = 0; i < e->n_local; i++)
                for (int64_t d = 0; d < c->head_dim; d++) {
                    const float kx = ((const float *)kk.data)[h * kk.head_stride + i * c->head_dim + d];
                    const float vx = ((const float *)vv.data)[h * vv.head_stride + i * c->head_dim + d];
                    j->k_sq += (double)kx * kx;
                    j->v_sq += (double)vx * vx;
                    j->k_sum += kx;
                    j->n_elems++;
                    if (l == 1 && h == 1 && d == 0) {
                        const int64_t p = e->slot_pos[i];
                        j->k_at[p] = kx;
                        j->v_at[p] = vx;
                        j->have[p] = 1;
                    }
                }
        free(kd);
        free(vd);
    }
    if (engine_truncate(e, DEPTH, &err) ||
        engine_set_attention(e, j->cfg->attention, &j->cfg->ro, &j->cfg->po, &err))
        goto fail_engine;
    j->finite = 1;
    for (int t = 0; t < N_DECODE; t++) {
        if (engine_decode(e, j->tokens[DEPTH + t], &err)) goto fail_engine;
        j->kv_read[t] = e->last_step.kv_bytes_read;
        j->n_full[t] = e->last_step.n_full_layers;
        j->calls[t] = e->last_step.comm_calls;
        j->bytes[t] = e->last_step.comm_bytes;
        for (int64_t v = 0; v < c->n_vocab; v++) j->finite &= isfinite(engine_logits(e)[v]) != 0;
    }
    j->kv_used = (int64_t)engine_kv_bytes_used(e);
    engine_destroy(e);
    j->ok = 1;
    return NULL;
fail_engine:
    engine_destroy(e);
fail:
    snprintf(j->msg, sizeof(j->msg), "%s", err.msg);
    return NULL;
}

static void run_ranks(const model *m, int n_ranks, const int32_t *tokens, const run_cfg *cfg, rank_job *jobs) {
    rc_err err = {{0}};
    comm *comms[MAX_RANKS];
    memset(jobs, 0, (size_t)n_ranks * sizeof(rank_job));
    if (n_ranks == 1) comms[0] = comm_null_create();
    else CHECK_MSG(comm_sim_create(n_ranks, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < n_ranks; r++) {
        jobs[r] = (rank_job){.m = m, .cm = comms[r], .cfg = cfg, .tokens = tokens};
        pthread_create(&th[r], NULL, run_rank, &jobs[r]);
    }
    for (int r = 0; r < n_ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < n_ranks; r++) {
        CHECK_MSG(jobs[r].ok, "rank %d of %d: %s", r, n_ranks, jobs[r].msg);
        comm_destroy(comms[r]);
    }
}

// Decode after the fill does the same work as after the prefill, step by step.
// per_rank_kv 0: the K/V bytes held and read are compared summed over the
// ranks (a policy's kept rows sit where their scores put them).
static void check_same_work(const rank_job *fill, const rank_job *pre, int N, int exact_bytes, int per_rank_kv,
                            const char *what) {
    int64_t used[2] = {0}, read[2][N_DECODE] = {{0}};
    for (int r = 0; r < N; r++) {
        used[0] += fill[r].kv_used;
        used[1] += pre[r].kv_used;
        for (int t = 0; t < N_DECODE; t++) read[0][t] += fill[r].kv_read[t], read[1][t] += pre[r].kv_read[t];
    }
    CHECK_MSG(used[0] == used[1], "%s: KV bytes held %lld, prefill %lld", what, (long long)used[0], (long long)used[1]);
    for (int t = 0; t < N_DECODE; t++)
        CHECK_MSG(read[0][t] == read[1][t], "%s step %d: K/V bytes read by all ranks %lld vs %lld", what, t,
                  (long long)read[0][t], (long long)read[1][t]);
    for (int r = 0; r < N; r++) {
        CHECK_MSG(fill[r].n_local == pre[r].n_local, "%s rank %d: %lld positions held, prefill %lld", what, r,
                  (long long)fill[r].n_local, (long long)pre[r].n_local);
        CHECK_MSG(!per_rank_kv || fill[r].kv_used == pre[r].kv_used, "%s rank %d: KV bytes held differ", what, r);
        CHECK_MSG(fill[r].finite, "%s rank %d: non-finite logits after the fill", what, r);
        for (int t = 0; t < N_DECODE; t++) {
            CHECK_MSG(!per_rank_kv || fill[r].kv_read[t] == pre[r].kv_read[t], "%s rank %d step %d: K/V bytes read %lld vs %lld", what,
                      r, t, (long long)fill[r].kv_read[t], (long long)pre[r].kv_read[t]);
            CHECK_MSG(fill[r].n_full[t] == pre[r].n_full[t], "%s rank %d step %d: full layers %lld vs %lld", what, r, t,
                      (long long)fill[r].n_full[t], (long long)pre[r].n_full[t]);
            CHECK_MSG(fill[r].calls[t] == pre[r].calls[t], "%s rank %d step %d: collective calls %lld vs %lld", what,
                      r, t, (long long)fill[r].calls[t], (long long)pre[r].calls[t]);
            if (exact_bytes)
                CHECK_MSG(fill[r].bytes[t] == pre[r].bytes[t], "%s rank %d step %d: comm bytes %lld vs %lld", what, r,
                          t, (long long)fill[r].bytes[t], (long long)pre[r].bytes[t]);
        }
    }
}

int main(void) {
    test_backend_setup();
    char path[64];
    rc_err err = {{0}};
    model m;
    if (tiny_model_sharding(path, &m, &err)) {
        fprintf(stderr, "tiny model: %s\n", err.msg);
        return 1;
    }
    const model_config *c = &m.cfg;
    int32_t tokens[DEPTH + N_DECODE];
    uint64_t s = 777;
    for (int i = 0; i < DEPTH + N_DECODE; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)(c->n_vocab - 3));
    }
    recycle_opts ro = recycle_default_opts();
    ro.k = 16;
    ro.stride = 4;
    ro.schedule = RECYCLE_STRIDE;
    CHECK(c->n_layer * WIN * c->n_head <= MAX_WIN_LSE && WIN == KVPOLICY_WINDOW_MAX);
    kvpolicy_opts po = kvpolicy_default_opts();
    po.budget = 24;
    const run_cfg cfgs[3][2] = {
        {{.synthetic = 0, .attention = ATTENTION_FULL}, {.synthetic = 1, .attention = ATTENTION_FULL}},
        {{.synthetic = 0, .attention = ATTENTION_RECYCLED, .ro = ro}, {.synthetic = 1, .attention = ATTENTION_RECYCLED, .ro = ro}},
        {{.synthetic = 0, .attention = ATTENTION_SNAPKV, .po = po}, {.synthetic = 1, .attention = ATTENTION_SNAPKV, .po = po}},
    };
    static rank_job one[MAX_RANKS];
    for (int N = 1; N <= MAX_RANKS; N++)
        for (int k = 0; k < 3; k++) {
            rank_job pre[MAX_RANKS], fill[MAX_RANKS];
            run_ranks(&m, N, tokens, &cfgs[k][0], pre);
            run_ranks(&m, N, tokens, &cfgs[k][1], fill);
            char what[64];
            snprintf(what, sizeof(what), "%s on %d rank(s)", k == 2 ? "snapkv" : k ? "recycled" : "full", N);
            // Recycled rebuilds move the selected rows between ranks: their count depends on the scores.
            check_same_work(fill, pre, N, k == 0 || N == 1, k < 2 || N == 1, what);
            if (k == 0 && N == 1) memcpy(one, fill, sizeof(rank_job));
            // The window: all of it kept, its lse the brute-force one on every rank count.
            for (int r = 0; r < N; r++) {
                CHECK_MSG(fill[r].win_n == WIN, "%s rank %d: window of %lld", what, r, (long long)fill[r].win_n);
                for (int64_t i = 0; i < c->n_layer * WIN * c->n_head; i++)
                    CHECK_MSG(fabs(fill[r].win_lse[i] - one[0].win_lse_ref[i]) <= 1e-4 * (1 + fabs(one[0].win_lse_ref[i])),
                              "%s rank %d: window lse %lld is %.6f, brute force %.6f", what, r, (long long)i,
                              fill[r].win_lse[i], one[0].win_lse_ref[i]);
            }
            if (k == 1) {  // not vacuous: both kinds of step happened
                int64_t n_rec = 0;
                for (int t = 0; t < N_DECODE; t++) n_rec += fill[0].n_full[t] == 0;
                CHECK_MSG(n_rec == N_DECODE - N_DECODE / 4 - 1,  // full: the first step (builds) and every 4th
                           "%s: %lld recycled steps", what, (long long)n_rec);
            }
            if (k == 0 && N > 1) {
                int64_t calls = 0;
                for (int t = 0; t < N_DECODE; t++) calls += fill[0].calls[t];
                CHECK_MSG(calls == N_DECODE * c->n_layer, "%s: %lld calls, one all-gather per layer expected", what,
                          (long long)calls);
            }
            // Every position is held by exactly one rank, with the same values whatever the rank count.
            if (k == 0) {
                int64_t held = 0;
                for (int64_t p = 0; p < DEPTH; p++) {
                    int owners = 0;
                    for (int r = 0; r < N; r++) {
                        if (!fill[r].have[p]) continue;
                        owners++;
                        CHECK_MSG(fill[r].k_at[p] == one[0].k_at[p] && fill[r].v_at[p] == one[0].v_at[p],
                                  "%d ranks: position %lld differs from the 1-rank fill", N, (long long)p);
                    }
                    CHECK_MSG(owners == 1, "%d ranks: position %lld held by %d ranks", N, (long long)p, owners);
                    held += owners;
                }
                CHECK(held == DEPTH);
            }
        }
    // Scale: the per-element RMS measured on SmolLM2-135M (K 2.18, V 0.97), zero mean.
    {
        const double n = (double)one[0].n_elems;
        CHECK(one[0].n_elems == (int64_t)c->n_layer * c->n_head_kv * c->head_dim * DEPTH);
        CHECK_CLOSE(sqrt(one[0].k_sq / n), 2.18, 0.0, 0.03);
        CHECK_CLOSE(sqrt(one[0].v_sq / n), 0.97, 0.0, 0.03);
        CHECK_MSG(fabs(one[0].k_sum / n) < 0.05, "K mean %.4f", one[0].k_sum / n);
    }
    // A different seed gives different rows.
    {
        engine_opts o = engine_default_opts();
        o.n_ctx = DEPTH;
        o.kv_elem = KV_F32;
        o.backend = test_backend();
        engine *e = engine_create(&m, &o, &err);
        CHECK(e != NULL);
        CHECK(engine_fill_synthetic(e, DEPTH, SEED + 1, &err) == 0);
        kv_view kk = kv_cache_k(&e->kv, 1);
        float first = 0.0f;
        e->be->ops->download(e->be, &first, (const float *)kk.data + kk.head_stride, sizeof(float));
        CHECK(first != one[0].k_at[0]);
        // Bad uses: a second fill, too many positions, none.
        CHECK(engine_fill_synthetic(e, 10, SEED, &err) != 0 && strstr(err.msg, "must be empty"));
        engine_reset(e);
        CHECK(engine_fill_synthetic(e, DEPTH + 1, SEED, &err) != 0 && strstr(err.msg, "exceeds the context size"));
        CHECK(engine_fill_synthetic(e, 0, SEED, &err) != 0 && strstr(err.msg, "nothing to fill"));
        // Under a policy the fill compresses at once, as a prefill does: the full cache is freed.
        kvpolicy_opts pd = kvpolicy_default_opts();
        pd.budget = 16;
        CHECK(engine_set_attention(e, ATTENTION_SNAPKV, NULL, &pd, &err) == 0);
        CHECK_MSG(engine_fill_synthetic(e, 40, SEED, &err) == 0, "%s", err.msg);
        CHECK(e->n_local == 0 && e->n_past == 40 && engine_kv_bytes_used(e) > 0);
        engine_destroy(e);
    }
    model_free(&m);
    remove(path);
    TEST_MAIN_END();
}
