// Recycled Attention (design.md §2-§3) on N simulated ranks (threads with
// comm_sim) over a tiny model with an fp32 KV cache:
//   - exactness: a recycled cache as large as the context, or a schedule that
//     runs every step full (stride 1, dynamic with similarity 1 checked every
//     step), reproduces full attention (tokens identical, logits 1e-5);
//   - selections: after every rebuild (prefill end and each full step) the
//     cache holds exactly the top-K positions of a brute-force reference
//     computed here in double precision from the hook's q/lse and the full K
//     cache, and the same positions on 1, 2, 3, 4 ranks (contiguous and
//     zigzag prompts, a prompt shorter than the rank count);
//   - communication: a step in which no layer runs full makes no collective
//     call at all; the stride and dynamic schedules run full exactly when
//     they say;
//   - every rank ends every step with bitwise identical logits and recycled
//     caches (positions, scores, K/V rows);
//   - a second sequence after engine_reset equals a fresh engine's, a
//     sequence without a prompt builds every layer at its first step, a
//     prompt given in two prefill calls selects what one call does, an fp16
//     cache keeps the ranks bitwise equal;
//   - unit tests of the recycled cache, a rebuild on one rank with a
//     hand-built shard, and recycle_opts_validate.
// A selection that differs from the reference is reported with the scores
// involved, flagged as an exact or near tie at the K boundary when it is one.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/hash.h"
#include "engine/engine_internal.h"
#include "peek.h"
#include "test_backend.h"
#include "engine/sampler.h"
#include "policy/recycle.h"
#include "tiny_model.h"
#include "ref_order.h"

#define MAX_RANKS 4
#define N_DECODE_FULL 40
#define N_DECODE_DEVICE 6   // the --device-subset runs (the SIMT emulator: ~0.13 s per rank and step)

static int N_DECODE = N_DECODE_FULL;  // decode steps of every run
static int PREFILL_BLOCK = 5;          // --device-subset: 13 (fewer launches on the emulator)
#define N_EVENTS (N_DECODE + 1)  // event 0 = prefill end, event t = decode step t
#define PROMPT_MAX 97

// ---- a run of N simulated ranks ------------------------------------------------

typedef struct run_cfg {
    const char *label;
    const backend_ops *be;    // NULL: the test backend (test_backend.h)
    int attention;            // enum attention_kind
    recycle_opts ro;          // recycled mode
    int64_t n_prompt;
    int zigzag;
    const int32_t *forced;    // (N_DECODE) tokens to feed; NULL = greedy argmax
    int brute;                // one rank: check every rebuild against the brute-force reference
    int kv_f16;               // fp16 KV cache (default fp32)
    int warmup;               // run another sequence first, then engine_reset
    int64_t prefill_split;    // one rank: prefill the prompt in two calls, the first of this many tokens
} run_cfg;

typedef struct rank_job {
    const model *m;
    const char *dev_path;     // the device data path the engine attached ("none", "nccl", "staged")
    comm *c;
    const int32_t *prompt;
    const run_cfg *cfg;
    int64_t n_ctx, K;         // K: recycle k (0 in full mode)
    // per event
    float *logits;            // (N_EVENTS, V)
    int32_t *generated;       // (N_DECODE): token fed at decode step t+1
    int64_t *n_full;          // (N_EVENTS): e->last_step.n_full_layers ([0]: prefill, unused)
    uint8_t *layer_full;      // (N_EVENTS, n_layer): e->last_step.layer_full
    int64_t *step_calls;      // (N_EVENTS): e->last_step.comm_calls
    int64_t *step_bytes;      // (N_EVENTS): e->last_step.comm_bytes
    int64_t *ctr_calls;       // (N_EVENTS): delta of counters[COMM_PHASE_DECODE].n_calls around engine_decode
    int64_t *ctr_bytes;       // (N_EVENTS): ... bytes sent + received
    uint8_t *hook_calls;      // (N_EVENTS, n_layer): on_full_attention calls per layer
    int64_t *hook_ntotal;     // (N_EVENTS, n_layer): n_total the hook saw (-1: not called)
    int64_t *sel_count;       // (N_EVENTS, n_layer): recycled-cache count of KV head 0 after the event
    int64_t *cap0;            // (n_layer): capacity of KV head 0 (K, or its HeadKV budget)
    int64_t *sel_pos;         // (N_EVENTS, n_layer, n_kv, K): positions in logical order
    float *sel_score;         // (N_EVENTS, n_layer, n_kv, K): their stored scores
    uint64_t *row_hash;       // (N_EVENTS, n_layer): hash of the cache's K/V rows in logical order
    int64_t *layer_full_stats, *layer_recycled_stats;  // (n_layer): e->stats at the end
    int64_t rows_bad;         // selected rows this rank owns whose cached K/V differ from its shard
    int64_t n_brute;          // rebuilds checked against the brute-force reference
    // on_full_attention's last arguments per layer
    float *hq, *hlse;
    int64_t *hn;
    uint8_t *hcalled;
    int failed;
} rank_job;

static void hook(void *user, int64_t layer, int64_t n_total, const float *q, const float *lse) {
    rank_job *j = user;
    const model_config *c = &j->m->cfg;
    const int64_t q_dim = c->n_head * c->head_dim;
    memcpy(j->hq + layer * q_dim, q, (size_t)q_dim * sizeof(float));
    memcpy(j->hlse + layer * c->n_head, lse, (size_t)c->n_head * sizeof(float));
    j->hn[layer] = n_total;
    j->hcalled[layer]++;
}


static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// The selection of one layer rebuilt from the hook's q/lse, by definition:
// p = exp(scale q_g.k_j - lse_g) over every position of the single rank's
#define ROW_MAX 1024  // bytes of one K row in these tests' models

// Whether recycled-cache slot `slot` holds the full cache's rows at slot `kv_slot`.
static int same_rows(const recycle_cache *rc, const engine *e, int64_t l, int64_t h, int64_t slot, int64_t kv_slot) {
    uint8_t a[ROW_MAX], b[ROW_MAX];
    const size_t n = kv_cache_row_bytes(&e->kv);
    for (int which = 0; which < 2; which++) {
        peek_recycle_row(rc, which, l, h, slot, a);
        peek_kv_row(&e->kv, which, l, h, kv_slot, b);
        if (memcmp(a, b, n)) return 0;
    }
    return 1;
}

// full (fp32) K cache, combined over the KV group, max-pooled with the window
// cut at the sequence ends, the top K by (score desc, position asc). All in
// double. Called on one rank only (the CHECKs are not thread-safe).
static void brute_check(rank_job *j, const engine *e, int ev, int64_t l) {
    const model_config *c = &j->m->cfg;
    const recycle_opts *o = &j->cfg->ro;
    const int64_t H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, group = H / KV;
    const int64_t n = j->hn[l], half = o->pool_kernel / 2;
    const double scale = 1.0 / sqrt((double)hd);
    CHECK_MSG(n == e->n_past, "%s event %d layer %lld: hook n_total %lld, engine holds %lld positions", j->cfg->label,
              ev, (long long)l, (long long)n, (long long)e->n_past);
    CHECK(e->kv.elem == KV_F32);
    for (int64_t i = 0; i < e->n_local; i++) CHECK_MSG(e->slot_pos[i] == i, "one rank: slot %lld holds %lld", (long long)i, (long long)e->slot_pos[i]);
    const kv_view kk = kv_cache_k(&e->kv, l);
    float *kd = peek_copy(e->be, kk.data, (size_t)(KV * kk.head_stride) * sizeof(float));
    const float *q = j->hq + l * H * hd, *lse = j->hlse + l * H;
    double *agg = malloc((size_t)n * sizeof(double)), *pooled = malloc((size_t)n * sizeof(double));
    ref_entry *ref = malloc((size_t)n * sizeof(ref_entry));
    const recycle_cache *rc = &e->recycle->cache;
    int64_t *got = malloc((size_t)rc->k * sizeof(int64_t)), *want = malloc((size_t)rc->k * sizeof(int64_t));
    for (int64_t h = 0; h < KV; h++) {
        const int64_t K = recycle_cache_cap(rc, l, h);  // o->k, or this head's HeadKV budget
        for (int64_t p = 0; p < n; p++) {
            double a = 0.0;
            for (int64_t g = 0; g < group; g++) {
                const float *qg = q + (h * group + g) * hd, *kp = kd + h * kk.head_stride + p * hd;
                double dot = 0.0;
                for (int64_t i = 0; i < hd; i++) dot += (double)qg[i] * kp[i];
                const double prob = exp(scale * dot - lse[h * group + g]);
                if (o->group_agg == GROUP_AGG_MAX) a = g == 0 ? prob : fmax(a, prob);
                else if (o->group_agg == GROUP_AGG_MEAN) a += prob / (double)group;
                else if (g == 0) a = prob;
            }
            agg[p] = a;
        }
        for (int64_t p = 0; p < n; p++) {
            double mx = -INFINITY;
            for (int64_t x = p - half; x <= p + half; x++)
                if (x >= 0 && x < n) mx = fmax(mx, agg[x]);
            pooled[p] = mx;
            ref[p] = (ref_entry){mx, p};
        }
        qsort(ref, (size_t)n, sizeof(ref_entry), ref_cmp);
        const int64_t n_sel = n < K ? n : K;
        const int64_t cnt = recycle_cache_positions(rc, l, h, got);
        CHECK_MSG(cnt == n_sel, "%s event %d layer %lld head %lld: %lld entries, expected min(K, n) = %lld",
                  j->cfg->label, ev, (long long)l, (long long)h, (long long)cnt, (long long)n_sel);
        if (cnt != n_sel) continue;
        // Logical order is ascending score: the reference scores must not decrease
        // (allowing float-vs-double rounding), and the stored scores match them.
        for (int64_t i = 0; i < cnt; i++) {
            const int64_t slot = recycle_cache_slot(rc, l, h, i);
            const double stored = rc->score[recycle_cache_row_index(rc, l, h, slot)], r = pooled[got[i]];
            CHECK_MSG(fabs(stored - r) <= 1e-5 * fabs(r) + 1e-30, "%s event %d layer %lld head %lld pos %lld: stored score %.9g, reference %.9g",
                      j->cfg->label, ev, (long long)l, (long long)h, (long long)got[i], stored, r);
            if (i > 0)
                CHECK_MSG(pooled[got[i]] >= pooled[got[i - 1]] * (1.0 - 1e-5),
                          "%s event %d layer %lld head %lld: logical entries %lld (pos %lld, %.9g) and %lld (pos %lld, %.9g) are not in ascending score order",
                          j->cfg->label, ev, (long long)l, (long long)h, (long long)i - 1, (long long)got[i - 1],
                          pooled[got[i - 1]], (long long)i, (long long)got[i], pooled[got[i]]);
            // The cached K/V rows are the full cache's rows of that position (one rank: slot = position).
            CHECK_MSG(same_rows(rc, e, l, h, slot, got[i]),
                      "%s event %d layer %lld head %lld: cached K/V row of position %lld differs from the full cache",
                      j->cfg->label, ev, (long long)l, (long long)h, (long long)got[i]);
        }
        qsort(got, (size_t)cnt, sizeof(int64_t), cmp_i64);
        for (int64_t i = 0; i < n_sel; i++) want[i] = ref[i].pos;
        qsort(want, (size_t)n_sel, sizeof(int64_t), cmp_i64);
        if (memcmp(got, want, (size_t)n_sel * sizeof(int64_t)) == 0) continue;
        // Mismatch: say whether it is a near-tie at the K boundary.
        const double boundary = ref[n_sel - 1].score;
        int near_tie = 1, exact_tie = 1;
        char detail[2048];
        int off = snprintf(detail, sizeof(detail), "boundary (K-th) reference score %.12g; next %.12g; differing:",
                           boundary, n_sel < n ? ref[n_sel].score : NAN);
        for (int side = 0; side < 2; side++) {
            const int64_t *a = side ? want : got, *b = side ? got : want;
            for (int64_t i = 0; i < n_sel; i++)
                if (!bsearch(&a[i], b, (size_t)n_sel, sizeof(int64_t), cmp_i64)) {
                    const double s = pooled[a[i]], rel = fabs(s - boundary) / fabs(boundary);
                    if (!(rel <= 1e-6)) near_tie = 0;
                    if (rel != 0.0) exact_tie = 0;
                    if (off < (int)sizeof(detail) - 80)
                        off += snprintf(detail + off, sizeof(detail) - (size_t)off, " %s pos %lld (ref %.12g, rel to boundary %.2g)",
                                        side ? "missing" : "extra", (long long)a[i], s, rel);
                }
        }
        CHECK_MSG(0, "%s event %d layer %lld head %lld: selection differs from the brute-force reference%s: %s",
                  j->cfg->label, ev, (long long)l, (long long)h,
                  exact_tie ? " (EXACT TIE at the K boundary: equal scores must be broken by position, lowest first)"
                  : near_tie ? " (NEAR-TIE at the K boundary: scores within 1e-6 relative, float vs double rounding)"
                             : "",
                  detail);
    }
    j->n_brute++;
    free(agg); free(pooled); free(ref); free(got); free(want); free(kd);
}

// Records the recycled cache and the hook calls after event ev.
static void record_event(rank_job *j, const engine *e, int ev) {
    const model_config *c = &j->m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, K = j->K;
    for (int64_t l = 0; l < L; l++) {
        j->hook_calls[ev * L + l] = j->hcalled[l];
        j->hook_ntotal[ev * L + l] = j->hcalled[l] ? j->hn[l] : -1;
    }
    if (!e->recycle) {
        memset(j->hcalled, 0, (size_t)L);
        return;
    }
    const recycle_cache *rc = &e->recycle->cache;
    for (int64_t l = 0; l < L; l++) {
        j->sel_count[ev * L + l] = recycle_cache_count(rc, l, 0);
        j->cap0[l] = recycle_cache_cap(rc, l, 0);
        uint64_t hsh = FNV1A_INIT;
        for (int64_t h = 0; h < KV; h++) {
            int64_t *pos = j->sel_pos + ((ev * L + l) * KV + h) * K;
            float *sc = j->sel_score + ((ev * L + l) * KV + h) * K;
            int64_t cnt = recycle_cache_positions(rc, l, h, pos);
            for (int64_t i = 0; i < cnt; i++) {
                const int64_t slot = recycle_cache_slot(rc, l, h, i);
                sc[i] = rc->score[recycle_cache_row_index(rc, l, h, slot)];
                uint8_t row[2][ROW_MAX];
                peek_recycle_row(rc, 0, l, h, slot, row[0]);
                peek_recycle_row(rc, 1, l, h, slot, row[1]);
                hsh = fnv1a(hsh, row[0], kv_cache_row_bytes(&rc->rows));
                hsh = fnv1a(hsh, row[1], kv_cache_row_bytes(&rc->rows));
                // A selected position this rank owns: the cached rows are its shard's rows.
                // (Right after a rebuild every entry is a selected shard row.)
                const int rebuilt = ev == 0 || e->last_step.layer_full[l];
                if (rebuilt) {
                    for (int64_t s = 0; s < e->n_local; s++)
                        if (e->slot_pos[s] == pos[i]) {
                            if (!same_rows(rc, e, l, h, slot, s)) j->rows_bad++;
                            break;
                        }
                }
            }
        }
        j->row_hash[ev * L + l] = hsh;
        const int rebuilt = ev == 0 || e->last_step.layer_full[l];
        if (j->cfg->brute && j->c->size == 1 && rebuilt && j->hcalled[l]) brute_check(j, e, ev, l);
    }
    memset(j->hcalled, 0, (size_t)L);
}

// Greedy decode of a warm-up sequence (another prompt), on the same engine.
static int warmup_sequence(rank_job *j, engine *e, rc_err *err) {
    const int64_t V = j->m->cfg.n_vocab;
    if (engine_prefill(e, j->prompt + 31, 50, NULL, NULL, NULL, err)) return -1;
    for (int t = 0; t < 10; t++)
        if (engine_decode(e, argmax_logits(engine_logits(e), V), err)) return -1;
    engine_reset(e);
    return 0;
}

static void *run_rank(void *arg) {
    rank_job *j = arg;
    const model_config *c = &j->m->cfg;
    const run_cfg *cfg = j->cfg;
    const int64_t V = c->n_vocab, L = c->n_layer;
    engine_opts o = engine_default_opts();
    o.n_ctx = j->n_ctx;
    o.n_threads = 1;
    o.kv_elem = cfg->kv_f16 ? KV_F16 : KV_F32;
    o.prefill_block = PREFILL_BLOCK;  // several blocks per rank, uneven
    o.comm = j->c;
    o.zigzag = cfg->zigzag;
    o.attention = cfg->attention;
    o.recycle = cfg->ro;
    o.on_full_attention = hook;
    o.hook_user = j;
    o.backend = cfg->be ? cfg->be : test_backend();
    engine *e = NULL;
    rc_err err = {{0}};
    int rc = !(e = engine_create(j->m, &o, &err));
    if (e) j->dev_path = j->c->dev ? j->c->dev->kind : "none";
    if (rc == 0 && cfg->warmup) rc = warmup_sequence(j, e, &err);
    int64_t base_full[8] = {0}, base_recycled[8] = {0};  // the warm-up's per-layer counts
    if (rc == 0)
        for (int64_t l = 0; l < L && l < 8; l++) base_full[l] = e->stats.layer_full[l], base_recycled[l] = e->stats.layer_recycled[l];
    memset(j->hcalled, 0, (size_t)L);
    if (rc == 0 && cfg->n_prompt > 0) {
        const int64_t first = cfg->prefill_split > 0 ? cfg->prefill_split : cfg->n_prompt;
        rc = engine_prefill(e, j->prompt, first, NULL, NULL, NULL, &err);
        if (rc == 0 && first < cfg->n_prompt) {
            memset(j->hcalled, 0, (size_t)L);  // the second call's rebuild is the one recorded
            rc = engine_prefill(e, j->prompt + first, cfg->n_prompt - first, NULL, NULL, NULL, &err);
        }
    }
    if (rc) {
        fprintf(stderr, "%s rank %d: %s\n", cfg->label, j->c->rank, err.msg);
        j->failed = 1;
        engine_destroy(e);
        return NULL;
    }
    if (cfg->n_prompt > 0) {  // without a prompt there are no logits before the first token
        memcpy(j->logits, engine_logits(e), (size_t)V * sizeof(float));
        record_event(j, e, 0);
    }
    for (int t = 0; t < N_DECODE; t++) {
        int32_t next = cfg->forced ? cfg->forced[t] : argmax_logits(engine_logits(e), V);
        j->generated[t] = next;
        const comm_counters before = j->c->counters[COMM_PHASE_DECODE];
        if (engine_decode(e, next, &err)) {
            fprintf(stderr, "%s rank %d: %s\n", cfg->label, j->c->rank, err.msg);
            j->failed = 1;
            break;
        }
        const comm_counters *after = &j->c->counters[COMM_PHASE_DECODE];
        const int ev = t + 1;
        memcpy(j->logits + (int64_t)ev * V, engine_logits(e), (size_t)V * sizeof(float));
        j->n_full[ev] = e->last_step.n_full_layers;
        memcpy(j->layer_full + ev * L, e->last_step.layer_full, (size_t)L);
        j->step_calls[ev] = e->last_step.comm_calls;
        j->step_bytes[ev] = e->last_step.comm_bytes;
        j->ctr_calls[ev] = after->n_calls - before.n_calls;
        j->ctr_bytes[ev] = (after->bytes_sent - before.bytes_sent) + (after->bytes_recv - before.bytes_recv);
        record_event(j, e, ev);
    }
    for (int64_t l = 0; l < L && l < 8; l++) {
        j->layer_full_stats[l] = e->stats.layer_full[l] - base_full[l];
        j->layer_recycled_stats[l] = e->stats.layer_recycled[l] - base_recycled[l];
    }
    engine_destroy(e);
    return NULL;
}

static void free_job(rank_job *j) {
    free(j->logits); free(j->generated); free(j->n_full); free(j->layer_full); free(j->step_calls);
    free(j->step_bytes); free(j->ctr_calls); free(j->ctr_bytes); free(j->hook_calls); free(j->hook_ntotal);
    free(j->sel_count); free(j->cap0); free(j->sel_pos); free(j->sel_score); free(j->row_hash); free(j->layer_full_stats);
    free(j->layer_recycled_stats); free(j->hq); free(j->hlse); free(j->hn); free(j->hcalled);
}

static void free_jobs(rank_job *jobs, int n) {
    for (int r = 0; r < n; r++) free_job(&jobs[r]);
}

static void run_ranks(const model *m, int n_ranks, const int32_t *prompt, const run_cfg *cfg, rank_job *jobs) {
    const model_config *c = &m->cfg;
    const int64_t V = c->n_vocab, L = c->n_layer, KV = c->n_head_kv;
    comm *comms[MAX_RANKS];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(n_ranks, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < n_ranks; r++) {
        rank_job *j = &jobs[r];
        *j = (rank_job){.m = m, .c = comms[r], .prompt = prompt, .cfg = cfg, .n_ctx = cfg->n_prompt + N_DECODE,
                        .K = cfg->attention != ATTENTION_RECYCLED                ? 1
                             : cfg->ro.budgets == RECYCLE_BUDGETS_HEADKV ? cfg->n_prompt + N_DECODE  // any count fits
                                                                         : cfg->ro.k};
        j->logits = calloc((size_t)(N_EVENTS * V), sizeof(float));
        j->generated = calloc(N_DECODE, sizeof(int32_t));
        j->n_full = calloc(N_EVENTS, sizeof(int64_t));
        j->layer_full = calloc((size_t)(N_EVENTS * L), 1);
        j->step_calls = calloc(N_EVENTS, sizeof(int64_t));
        j->step_bytes = calloc(N_EVENTS, sizeof(int64_t));
        j->ctr_calls = calloc(N_EVENTS, sizeof(int64_t));
        j->ctr_bytes = calloc(N_EVENTS, sizeof(int64_t));
        j->hook_calls = calloc((size_t)(N_EVENTS * L), 1);
        j->hook_ntotal = calloc((size_t)(N_EVENTS * L), sizeof(int64_t));
        j->sel_count = calloc((size_t)(N_EVENTS * L), sizeof(int64_t));
        j->cap0 = calloc((size_t)L, sizeof(int64_t));
        j->sel_pos = calloc((size_t)(N_EVENTS * L * KV * j->K), sizeof(int64_t));
        j->sel_score = calloc((size_t)(N_EVENTS * L * KV * j->K), sizeof(float));
        j->row_hash = calloc((size_t)(N_EVENTS * L), sizeof(uint64_t));
        j->layer_full_stats = calloc((size_t)L, sizeof(int64_t));
        j->layer_recycled_stats = calloc((size_t)L, sizeof(int64_t));
        j->hq = calloc((size_t)(L * c->n_head * c->head_dim), sizeof(float));
        j->hlse = calloc((size_t)(L * c->n_head), sizeof(float));
        j->hn = calloc((size_t)L, sizeof(int64_t));
        j->hcalled = calloc((size_t)L, 1);
        pthread_create(&th[r], NULL, run_rank, j);
    }
    for (int r = 0; r < n_ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < n_ranks; r++) {
        CHECK_MSG(!jobs[r].failed, "%s: rank %d of %d failed", cfg->label, r, n_ranks);
        comm_destroy(comms[r]);
    }
}

// Same tokens as the reference and logits within tol at every event.
static void check_matches(const rank_job *got, const rank_job *ref, int64_t V, double tol, const char *what) {
    CHECK_MSG(memcmp(got->generated, ref->generated, N_DECODE * sizeof(int32_t)) == 0, "%s: generated tokens differ", what);
    for (int t = 0; t <= N_DECODE; t++) {
        double d = max_rel_diff(got->logits + (int64_t)t * V, ref->logits + (int64_t)t * V, V);
        CHECK_MSG(d <= tol, "%s: event %d: logits rel diff %.3g > %.1g", what, t, d, tol);
    }
}

// Within one run: every rank's logits, schedule and recycled cache (positions,
// scores, rows) are bitwise those of rank 0; no rank saw a bad row.
static void check_ranks_identical(const rank_job *jobs, int N, const model_config *c) {
    const int64_t V = c->n_vocab, L = c->n_layer, KV = c->n_head_kv, K = jobs[0].K;
    const char *lb = jobs[0].cfg->label;
    for (int r = 0; r < N; r++) {
        const rank_job *j = &jobs[r], *z = &jobs[0];
        CHECK_MSG(j->rows_bad == 0, "%s N=%d rank %d: %lld cached rows differ from the owner's shard", lb, N, r, (long long)j->rows_bad);
        CHECK_MSG(memcmp(j->logits, z->logits, (size_t)(N_EVENTS * V) * sizeof(float)) == 0,
                  "%s N=%d rank %d: logits differ from rank 0's", lb, N, r);
        CHECK_MSG(memcmp(j->generated, z->generated, N_DECODE * sizeof(int32_t)) == 0, "%s N=%d rank %d: tokens", lb, N, r);
        CHECK_MSG(memcmp(j->layer_full, z->layer_full, (size_t)(N_EVENTS * L)) == 0, "%s N=%d rank %d: schedule", lb, N, r);
        CHECK_MSG(memcmp(j->hook_calls, z->hook_calls, (size_t)(N_EVENTS * L)) == 0, "%s N=%d rank %d: hook calls", lb, N, r);
        if (j->cfg->attention != ATTENTION_RECYCLED) continue;
        CHECK_MSG(memcmp(j->sel_count, z->sel_count, (size_t)(N_EVENTS * L) * sizeof(int64_t)) == 0,
                  "%s N=%d rank %d: recycled cache counts differ from rank 0's", lb, N, r);
        CHECK_MSG(memcmp(j->row_hash, z->row_hash, (size_t)(N_EVENTS * L) * sizeof(uint64_t)) == 0,
                  "%s N=%d rank %d: recycled cache K/V rows differ from rank 0's", lb, N, r);
        for (int ev = 0; ev < N_EVENTS; ev++)
            for (int64_t l = 0; l < L; l++)
                for (int64_t h = 0; h < KV; h++) {
                    const int64_t o = ((ev * L + l) * KV + h) * K, n = z->sel_count[ev * L + l];
                    if (n < 0 || n > K) continue;
                    CHECK_MSG(memcmp(j->sel_pos + o, z->sel_pos + o, (size_t)n * sizeof(int64_t)) == 0 &&
                                  memcmp(j->sel_score + o, z->sel_score + o, (size_t)n * sizeof(float)) == 0,
                              "%s N=%d rank %d event %d layer %lld head %lld: recycled cache entries differ from rank 0's",
                              lb, N, r, ev, (long long)l, (long long)h);
                }
    }
}

// The recycled cache of run `a` (several ranks) holds the same position set as
// run `ref` (one rank) after every event, for every layer and KV head.
static void check_same_selection(const rank_job *a, const rank_job *ref, int N, const model_config *c) {
    const int64_t L = c->n_layer, KV = c->n_head_kv, K = ref->K;
    int64_t *x = malloc((size_t)K * sizeof(int64_t)), *y = malloc((size_t)K * sizeof(int64_t));
    int reported = 0;
    for (int ev = 0; ev < N_EVENTS; ev++)
        for (int64_t l = 0; l < L; l++) {
            const int64_t n = ref->sel_count[ev * L + l];
            CHECK_MSG(a->sel_count[ev * L + l] == n, "%s N=%d zigzag=%d event %d layer %lld: count %lld, one rank %lld",
                      a->cfg->label, N, a->cfg->zigzag, ev, (long long)l, (long long)a->sel_count[ev * L + l], (long long)n);
            if (a->sel_count[ev * L + l] != n) continue;
            for (int64_t h = 0; h < KV; h++) {
                const int64_t o = ((ev * L + l) * KV + h) * K;
                memcpy(x, a->sel_pos + o, (size_t)n * sizeof(int64_t));
                memcpy(y, ref->sel_pos + o, (size_t)n * sizeof(int64_t));
                qsort(x, (size_t)n, sizeof(int64_t), cmp_i64);
                qsort(y, (size_t)n, sizeof(int64_t), cmp_i64);
                if (memcmp(x, y, (size_t)n * sizeof(int64_t)) == 0) continue;
                // Scores of the positions that differ, and of the front (lowest) entry.
                char detail[2048];
                int off = 0, near_tie = 1;
                const double front = ref->sel_score[o];
                for (int side = 0; side < 2; side++) {
                    const rank_job *p = side ? ref : a;
                    const int64_t *mine = side ? y : x, *other = side ? x : y;
                    for (int64_t i = 0; i < n; i++)
                        if (!bsearch(&mine[i], other, (size_t)n, sizeof(int64_t), cmp_i64)) {
                            double s = NAN;
                            for (int64_t k = 0; k < n; k++)
                                if (p->sel_pos[o + k] == mine[i]) s = p->sel_score[o + k];
                            if (!(fabs(s - front) <= 1e-6 * fabs(front))) near_tie = 0;
                            if (off < (int)sizeof(detail) - 80)
                                off += snprintf(detail + off, sizeof(detail) - (size_t)off, " %s has pos %lld (score %.9g)",
                                                side ? "1 rank" : "N ranks", (long long)mine[i], s);
                        }
                }
                CHECK_MSG(0, "%s N=%d zigzag=%d event %d layer %lld head %lld: positions differ from one rank%s; lowest selected score %.9g:%s",
                          a->cfg->label, N, a->cfg->zigzag, ev, (long long)l, (long long)h,
                          near_tie ? " (NEAR-TIE at the K boundary: scores within 1e-6 relative)" : "", front, detail);
                if (++reported > 5) goto out;
            }
        }
out:
    free(x);
    free(y);
}

// Schedule and communication of a recycled run on N ranks.
static void check_schedule_and_comm(const rank_job *j, int N, const model_config *c) {
    const recycle_opts *o = &j->cfg->ro;
    const int64_t L = c->n_layer;
    const char *lb = j->cfg->label;
    int64_t n_recycled_steps = 0, n_full_steps = 0, full_per_layer[16] = {0};
    for (int64_t l = 0; l < L && j->cfg->n_prompt > 0; l++) {  // prefill end: every layer built (hook once each, over the prompt)
        CHECK_MSG(j->hook_calls[l] == 1, "%s: prefill: hook called %d times for layer %lld", lb, j->hook_calls[l], (long long)l);
        CHECK_MSG(j->hook_ntotal[l] == j->cfg->n_prompt, "%s: prefill hook n_total %lld", lb, (long long)j->hook_ntotal[l]);
        CHECK_MSG(j->sel_count[l] == (j->cfg->n_prompt < j->cap0[l] ? j->cfg->n_prompt : j->cap0[l]), "%s: prefill selected %lld", lb,
                  (long long)j->sel_count[l]);
    }
    for (int t = 1; t <= N_DECODE; t++) {
        int64_t nf = 0;
        for (int64_t l = 0; l < L; l++) {
            const int full = j->layer_full[t * L + l];
            nf += full;
            full_per_layer[l] += full;
            // The hook runs exactly for the layers that ran full, over every position so far.
            CHECK_MSG(j->hook_calls[t * L + l] == full, "%s N=%d step %d layer %lld: hook calls %d, full %d", lb, N, t,
                      (long long)l, j->hook_calls[t * L + l], full);
            if (full)
                CHECK_MSG(j->hook_ntotal[t * L + l] == j->cfg->n_prompt + t, "%s step %d layer %lld: hook n_total %lld", lb, t,
                          (long long)l, (long long)j->hook_ntotal[t * L + l]);
            if (t == 1 && j->cfg->n_prompt == 0)  // no prefill: the first step builds every layer
                CHECK_MSG(full, "%s N=%d step 1 without a prompt: layer %lld not full", lb, N, (long long)l);
            else if (o->schedule == RECYCLE_STRIDE)
                CHECK_MSG(full == (t % o->stride == 0), "%s N=%d step %d layer %lld: full %d with stride %lld", lb, N, t,
                          (long long)l, full, (long long)o->stride);
            else if (full)
                CHECK_MSG(t % o->check_every == 0, "%s N=%d step %d layer %lld: full between checks (every %lld)", lb, N, t,
                          (long long)l, (long long)o->check_every);
            // Between rebuilds the cache grows by one per step up to K.
            if (!full) {
                const int64_t prev = j->sel_count[(t - 1) * L + l];
                CHECK_MSG(j->sel_count[t * L + l] == (prev < j->cap0[l] ? prev + 1 : j->cap0[l]), "%s step %d layer %lld: count %lld after %lld",
                          lb, t, (long long)l, (long long)j->sel_count[t * L + l], (long long)prev);
            }
        }
        CHECK_MSG(j->n_full[t] == nf, "%s step %d: n_full_layers %lld, layer flags say %lld", lb, t, (long long)j->n_full[t], (long long)nf);
        if (nf == 0) {
            n_recycled_steps++;
            CHECK_MSG(j->step_calls[t] == 0 && j->ctr_calls[t] == 0, "%s N=%d step %d: recycled step made %lld collective calls (counter delta %lld)",
                      lb, N, t, (long long)j->step_calls[t], (long long)j->ctr_calls[t]);
            CHECK_MSG(j->step_bytes[t] == 0 && j->ctr_bytes[t] == 0, "%s N=%d step %d: recycled step moved %lld bytes (counter delta %lld)",
                      lb, N, t, (long long)j->step_bytes[t], (long long)j->ctr_bytes[t]);
        } else {
            n_full_steps++;
            CHECK_MSG(j->step_calls[t] == j->ctr_calls[t], "%s step %d: comm_calls %lld, counter delta %lld", lb, t,
                      (long long)j->step_calls[t], (long long)j->ctr_calls[t]);
            if (N > 1)  // at least the (o, lse) all-gather of every full layer
                CHECK_MSG(j->ctr_calls[t] >= nf, "%s N=%d step %d: %lld full layers, only %lld collective calls", lb, N, t,
                          (long long)nf, (long long)j->ctr_calls[t]);
            else
                CHECK_MSG(j->ctr_calls[t] == 0, "%s one rank step %d: %lld collective calls", lb, t, (long long)j->ctr_calls[t]);
        }
    }
    for (int64_t l = 0; l < L; l++)
        CHECK_MSG(j->layer_full_stats[l] == full_per_layer[l] && j->layer_recycled_stats[l] == N_DECODE - full_per_layer[l],
                  "%s layer %lld: stats full/recycled %lld/%lld, steps say %lld/%lld", lb, (long long)l,
                  (long long)j->layer_full_stats[l], (long long)j->layer_recycled_stats[l], (long long)full_per_layer[l],
                  (long long)(N_DECODE - full_per_layer[l]));
    if (o->schedule == RECYCLE_STRIDE) {
        CHECK_MSG(n_full_steps == N_DECODE / o->stride + (j->cfg->n_prompt == 0 && o->stride > 1), "%s: %lld full steps with stride %lld", lb, (long long)n_full_steps,
                  (long long)o->stride);
    }
    (void)n_recycled_steps;
}

// Two runs of the same setting and rank count end bitwise equal.
static void check_runs_bitwise(const rank_job *a, const rank_job *b, const model_config *c, const char *what) {
    const int64_t V = c->n_vocab, L = c->n_layer, KV = c->n_head_kv, K = a->K;
    CHECK_MSG(memcmp(a->logits, b->logits, (size_t)(N_EVENTS * V) * sizeof(float)) == 0, "%s: logits differ", what);
    CHECK_MSG(memcmp(a->generated, b->generated, N_DECODE * sizeof(int32_t)) == 0, "%s: tokens differ", what);
    CHECK_MSG(memcmp(a->layer_full, b->layer_full, (size_t)(N_EVENTS * L)) == 0, "%s: schedules differ", what);
    CHECK_MSG(memcmp(a->sel_count, b->sel_count, (size_t)(N_EVENTS * L) * sizeof(int64_t)) == 0 &&
                  memcmp(a->sel_pos, b->sel_pos, (size_t)(N_EVENTS * L * KV * K) * sizeof(int64_t)) == 0 &&
                  memcmp(a->sel_score, b->sel_score, (size_t)(N_EVENTS * L * KV * K) * sizeof(float)) == 0 &&
                  memcmp(a->row_hash, b->row_hash, (size_t)(N_EVENTS * L) * sizeof(uint64_t)) == 0,
              "%s: recycled caches differ", what);
}

// ---- recycled cache, one-rank rebuild, option validation -------------------------

static void fill_row(float *row, int64_t n, float base) {
    for (int64_t i = 0; i < n; i++) row[i] = base + 0.01f * (float)i;
}

static void expect_positions(const recycle_cache *c, int64_t layer, int64_t h, const int64_t *want, int64_t n,
                             const char *what) {
    int64_t got[16];
    int64_t cnt = recycle_cache_positions(c, layer, h, got);
    CHECK_MSG(cnt == n && recycle_cache_count(c, layer, h) == n, "%s: layer %lld head %lld count %lld, want %lld", what, (long long)layer,
              (long long)h, (long long)cnt, (long long)n);
    int ok = cnt == n;
    for (int64_t i = 0; ok && i < n; i++) ok = got[i] == want[i];
    if (!ok) {
        char buf[256];
        int off = 0;
        for (int64_t i = 0; i < cnt && off < 200; i++) off += snprintf(buf + off, sizeof(buf) - (size_t)off, " %lld", (long long)got[i]);
        CHECK_MSG(0, "%s: layer %lld head %lld positions [%s ] in logical order are not the expected ones", what,
                  (long long)layer, (long long)h, buf);
    }
}

// The K row (and V row) cached for logical entry i holds what was appended with that position.
static void expect_row(const recycle_cache *c, int64_t layer, int64_t h, int64_t i, float kbase, float vbase,
                       const char *what) {
    const int64_t hd = c->rows.head_dim, slot = recycle_cache_slot(c, layer, h, i);
    float k[64], v[64];
    peek_recycle_row(c, 0, layer, h, slot, k);
    peek_recycle_row(c, 1, layer, h, slot, v);
    int ok = 1;
    for (int64_t d = 0; d < hd; d++) ok &= k[d] == kbase + 0.01f * (float)d && v[d] == vbase + 0.01f * (float)d;
    CHECK_MSG(ok, "%s: layer %lld head %lld entry %lld: K/V row is not the appended one (K[0] %g, want %g)", what,
              (long long)layer, (long long)h, (long long)i, k[0], kbase);
}

static void test_recycle_cache_append(void) {
    enum { NL = 2, NKV = 2, HD = 4, KC = 3 };
    recycle_cache c;
    rc_err err = {{0}};
    CHECK_MSG(recycle_cache_init(&c, &g_cpu, NL, NKV, HD, NULL, KC, KV_F32, &err) == 0, "%s", err.msg);
    CHECK(recycle_cache_init(&(recycle_cache){0}, &g_cpu, NL, NKV, HD, NULL, 0, KV_F32, &err) != 0);  // k = 0 refused
    float kr[NKV * HD], vr[NKV * HD];
    // Position p, head h: K row starts at 100p + 10h, V row at -(100p + 10h).
    for (int64_t p = 10; p < 12; p++) {
        for (int h = 0; h < NKV; h++) {
            fill_row(kr + h * HD, HD, (float)(100 * p + 10 * h));
            fill_row(vr + h * HD, HD, -(float)(100 * p + 10 * h));
        }
        recycle_cache_append(&c, 0, p, kr, vr);
    }
    const int64_t w1[] = {10, 11};
    for (int h = 0; h < NKV; h++) {
        expect_positions(&c, 0, h, w1, 2, "append to an empty cache");
        for (int64_t i = 0; i < 2; i++) expect_row(&c, 0, h, i, (float)(100 * w1[i] + 10 * h), -(float)(100 * w1[i] + 10 * h), "append");
        CHECK(isinf(c.score[(0 * NKV + h) * KC + recycle_cache_slot(&c, 0, h, 1)]));  // appended: +inf
    }
    expect_positions(&c, 1, 0, NULL, 0, "the other layer is untouched");
    // Fill up, then two more: the front entry leaves each time.
    const int64_t more[] = {12, 13, 14};
    const int64_t w2[][3] = {{10, 11, 12}, {11, 12, 13}, {12, 13, 14}};
    for (int s = 0; s < 3; s++) {
        for (int h = 0; h < NKV; h++) {
            fill_row(kr + h * HD, HD, (float)(100 * more[s] + 10 * h));
            fill_row(vr + h * HD, HD, -(float)(100 * more[s] + 10 * h));
        }
        recycle_cache_append(&c, 0, more[s], kr, vr);
        for (int h = 0; h < NKV; h++) {
            expect_positions(&c, 0, h, w2[s], 3, s == 0 ? "append fills the cache" : "append to a full cache drops the front");
            for (int64_t i = 0; i < 3; i++)
                expect_row(&c, 0, h, i, (float)(100 * w2[s][i] + 10 * h), -(float)(100 * w2[s][i] + 10 * h), "append to a full cache");
        }
    }
    // Five more wrap the ring around more than once.
    for (int64_t p = 15; p < 20; p++) {
        for (int h = 0; h < NKV; h++) {
            fill_row(kr + h * HD, HD, (float)(100 * p + 10 * h));
            fill_row(vr + h * HD, HD, -(float)(100 * p + 10 * h));
        }
        recycle_cache_append(&c, 0, p, kr, vr);
    }
    const int64_t w3[] = {17, 18, 19};
    for (int h = 0; h < NKV; h++) {
        expect_positions(&c, 0, h, w3, 3, "ring wrap");
        for (int64_t i = 0; i < 3; i++) expect_row(&c, 0, h, i, (float)(100 * w3[i] + 10 * h), -(float)(100 * w3[i] + 10 * h), "ring wrap");
    }
    // Slots in use are exactly [0, count): attention reads them in slot order.
    for (int h = 0; h < NKV; h++) {
        int seen[KC] = {0};
        for (int64_t i = 0; i < KC; i++) {
            int64_t s = recycle_cache_slot(&c, 0, h, i);
            CHECK(s >= 0 && s < KC);
            if (s >= 0 && s < KC) seen[s]++;
        }
        for (int s = 0; s < KC; s++) CHECK_MSG(seen[s] == 1, "slot %d used %d times", s, seen[s]);
    }
    recycle_cache_clear(&c);
    expect_positions(&c, 0, 0, NULL, 0, "clear");
    recycle_cache_free(&c);
}

// A rebuild on one rank (null communicator) over a hand-built shard whose
// scores make the selection obvious, then appends to the rebuilt cache and a
// second rebuild that keeps some rows.
static void test_rebuild_one_rank(void) {
    enum { NH = 2, NKV = 1, HD = 4, N = 10, KC = 4 };
    recycle_opts o = recycle_default_opts();
    o.k = KC;
    o.pool_kernel = 1;
    o.group_agg = GROUP_AGG_MAX;
    recycle_state rs;
    rc_err err = {{0}};
    CHECK_MSG(recycle_init(&rs, &g_cpu, &o, 1, NH, NKV, HD, 64, KV_F32, 1, &err) == 0, "%s", err.msg);
    kv_cache kv;
    CHECK_MSG(kv_cache_init(&kv, &g_cpu, 1, NKV, HD, N, KV_F32, &err) == 0, "%s", err.msg);
    float k[N * NKV * HD], v[N * NKV * HD];
    int64_t slot_pos[N];
    for (int j = 0; j < N; j++) {
        fill_row(k + j * HD, HD, (float)(1000 + j));
        fill_row(v + j * HD, HD, -(float)(1000 + j));
        slot_pos[j] = j;
    }
    CHECK(kv_cache_store(&kv, 0, 0, N, k, v, &err) == 0);
    // raw (NH, N) scaled scores; lse 0 so p = exp(raw). Head 0 favours 7 then 2,
    // head 1 favours 9 then 4; with max over the group the top 4 best-first are
    // 7 (-0.1), 9 (-0.2), 2 (-0.3), 4 (-0.4); everything else is <= -3.
    float raw[NH * N];
    for (int j = 0; j < N; j++) raw[j] = raw[N + j] = -3.0f - 0.1f * (float)j;
    raw[7] = -0.1f, raw[2] = -0.3f, raw[N + 9] = -0.2f, raw[N + 4] = -0.4f;
    raw[N + 7] = -5.0f;
    const float lse[NH] = {0.0f, 0.0f};
    float qmean[HD] = {1, 0, 0, 0};
    shard_plan plan = {.n_ranks = 1, .zigzag = 0, .n_prompt = N};
    shard_ctx sh = {.kv = &kv, .slot_pos = slot_pos, .n_local = N, .plan = &plan, .n_total = N};
    comm *cm = comm_null_create();
    CHECK_MSG(recycle_rebuild(&rs, 0, raw, lse, qmean, &sh, cm, &err) == 0, "%s", err.msg);
    const int64_t want1[] = {4, 2, 9, 7};  // logical order = ascending score
    expect_positions(&rs.cache, 0, 0, want1, 4, "rebuild selects the top K, lowest first");
    for (int64_t i = 0; i < 4; i++) {
        expect_row(&rs.cache, 0, 0, i, (float)(1000 + want1[i]), -(float)(1000 + want1[i]), "rebuild copies the shard's rows");
        CHECK_CLOSE(rs.cache.score[recycle_cache_slot(&rs.cache, 0, 0, i)], expf(raw[want1[i]] > raw[N + want1[i]] ? raw[want1[i]] : raw[N + want1[i]]), 0, 1e-6);
    }
    CHECK(rs.stats.n_rebuilds == 1 && rs.stats.rows_fetched == 4 && rs.stats.rows_reused == 0);
    // Append 10 and 11 (not in the shard): the lowest entries (4, then 2) leave.
    float kr[HD], vr[HD];
    fill_row(kr, HD, 1010), fill_row(vr, HD, -1010);
    recycle_cache_append(&rs.cache, 0, 10, kr, vr);
    const int64_t want2[] = {2, 9, 7, 10};
    expect_positions(&rs.cache, 0, 0, want2, 4, "append after a rebuild drops the lowest score");
    fill_row(kr, HD, 1011), fill_row(vr, HD, -1011);
    recycle_cache_append(&rs.cache, 0, 11, kr, vr);
    const int64_t want3[] = {9, 7, 10, 11};
    expect_positions(&rs.cache, 0, 0, want3, 4, "second append");
    for (int64_t i = 0; i < 4; i++) expect_row(&rs.cache, 0, 0, i, (float)(1000 + want3[i]), -(float)(1000 + want3[i]), "after appends");
    // Rebuild again with new favourites 1 and 3 (scores -0.05, -0.15): the top 4 are
    // 1, 7, 3, 9 -- rows 7 and 9 are still cached (reused), 1 and 3 are copied in.
    raw[1] = -0.05f, raw[N + 3] = -0.15f;
    CHECK_MSG(recycle_rebuild(&rs, 0, raw, lse, qmean, &sh, cm, &err) == 0, "%s", err.msg);
    const int64_t want4[] = {9, 3, 7, 1};
    expect_positions(&rs.cache, 0, 0, want4, 4, "second rebuild");
    for (int64_t i = 0; i < 4; i++) expect_row(&rs.cache, 0, 0, i, (float)(1000 + want4[i]), -(float)(1000 + want4[i]), "second rebuild rows");
    CHECK_MSG(rs.stats.rows_reused == 2 && rs.stats.rows_fetched == 6, "reused %lld fetched %lld",
              (long long)rs.stats.rows_reused, (long long)rs.stats.rows_fetched);
    CHECK(cm->counters[COMM_PHASE_SETUP].n_calls + cm->counters[COMM_PHASE_PREFILL].n_calls +
              cm->counters[COMM_PHASE_DECODE].n_calls == 0);
    // Max-pooling with kernel 3 (max over the group first): 0, 1, 2 all pool to
    // exp(-0.05) (position 1's), 6, 7, 8 to exp(-0.1) (7's); 3 and 4 only reach
    // exp(-0.15). Best first: 0, 1, 2, then 6 by position among the tie.
    recycle_free(&rs);
    o.pool_kernel = 3;
    CHECK_MSG(recycle_init(&rs, &g_cpu, &o, 1, NH, NKV, HD, 64, KV_F32, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(recycle_rebuild(&rs, 0, raw, lse, qmean, &sh, cm, &err) == 0, "%s", err.msg);
    const int64_t want5[] = {6, 2, 1, 0};
    expect_positions(&rs.cache, 0, 0, want5, 4, "rebuild with pooling (kernel 3)");
    // Mean over the group: 1 = (e^-0.05 + e^-3.1)/2 = 0.498, 7 = (e^-0.1 + e^-5)/2 = 0.456,
    // 3 = (e^-3.3 + e^-0.15)/2 = 0.449, 9 = (e^-3.9 + e^-0.2)/2 = 0.419; next 2 = 0.391.
    recycle_free(&rs);
    o.pool_kernel = 1;
    o.group_agg = GROUP_AGG_MEAN;
    CHECK_MSG(recycle_init(&rs, &g_cpu, &o, 1, NH, NKV, HD, 64, KV_F32, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(recycle_rebuild(&rs, 0, raw, lse, qmean, &sh, cm, &err) == 0, "%s", err.msg);
    const int64_t want6[] = {9, 3, 7, 1};
    expect_positions(&rs.cache, 0, 0, want6, 4, "rebuild with mean aggregation");
    // First query head only: 1 (-0.05), 7 (-0.1), 2 (-0.3), then 0 (-3.0).
    recycle_free(&rs);
    o.group_agg = GROUP_AGG_FIRST;
    CHECK_MSG(recycle_init(&rs, &g_cpu, &o, 1, NH, NKV, HD, 64, KV_F32, 1, &err) == 0, "%s", err.msg);
    CHECK_MSG(recycle_rebuild(&rs, 0, raw, lse, qmean, &sh, cm, &err) == 0, "%s", err.msg);
    const int64_t want7[] = {0, 2, 7, 1};
    expect_positions(&rs.cache, 0, 0, want7, 4, "rebuild with the first head");
    recycle_free(&rs);
    comm_destroy(cm);
    kv_cache_free(&kv);
}

static void test_validate(void) {
    const int64_t n_ctx = 100;
    recycle_opts d = recycle_default_opts();
    d.k = 64;
    rc_err err = {{0}};
    CHECK_MSG(recycle_opts_validate(&d, n_ctx, &err) == 0, "defaults with k 64: %s", err.msg);
    struct {
        const char *what, *flag;
        recycle_opts o;
        int ok;
    } cases[] = {
        {"k = ctx", "", d, 1},
        {"k 0", "--recycle-k", d, 0},
        {"k -1", "--recycle-k", d, 0},
        {"k > ctx", "--recycle-k", d, 0},
        {"stride 0", "--recycle-stride", d, 0},
        {"check_every 0", "--recycle-check-every", d, 0},
        {"similarity 1.5", "--recycle-similarity", d, 0},
        {"similarity -1.5", "--recycle-similarity", d, 0},
        {"similarity NaN", "--recycle-similarity", d, 0},
        {"similarity 1", "", d, 1},
        {"similarity -1", "", d, 1},
        {"pool 4", "--recycle-pool", d, 0},
        {"pool 0", "--recycle-pool", d, 0},
        {"pool 1", "", d, 1},
        {"schedule 7", "schedule", d, 0},
        {"agg 9", "aggregation", d, 0},
    };
    cases[0].o.k = n_ctx;
    cases[1].o.k = 0;
    cases[2].o.k = -1;
    cases[3].o.k = n_ctx + 1;
    cases[4].o.stride = 0;
    cases[5].o.check_every = 0;
    cases[6].o.similarity = 1.5;
    cases[7].o.similarity = -1.5;
    cases[8].o.similarity = NAN;
    cases[9].o.similarity = 1.0;
    cases[10].o.similarity = -1.0;
    cases[11].o.pool_kernel = 4;
    cases[12].o.pool_kernel = 0;
    cases[13].o.pool_kernel = 1;
    cases[14].o.schedule = 7;
    cases[15].o.group_agg = 9;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rc_err e2 = {{0}};
        int rc = recycle_opts_validate(&cases[i].o, n_ctx, &e2);
        if (cases[i].ok) {
            CHECK_MSG(rc == 0, "%s: refused (%s)", cases[i].what, e2.msg);
        } else {
            CHECK_MSG(rc != 0, "%s: accepted", cases[i].what);
            CHECK_MSG(strstr(e2.msg, cases[i].flag) != NULL, "%s: message '%s' does not name %s", cases[i].what, e2.msg,
                      cases[i].flag);
        }
    }
    // The engine refuses them too.
    recycle_state rs;
    recycle_opts bad = d;
    bad.k = n_ctx + 1;
    CHECK(recycle_init(&rs, &g_cpu, &bad, 1, 2, 1, 4, n_ctx, KV_F32, 1, &err) != 0);
}

// ---- main --------------------------------------------------------------------

static recycle_opts ropts(int64_t k, int64_t stride, int64_t pool, int agg) {
    recycle_opts o = recycle_default_opts();
    o.k = k;
    o.schedule = RECYCLE_STRIDE;
    o.stride = stride;
    o.pool_kernel = pool;
    o.group_agg = agg;
    return o;
}

// --device-subset: the multi-rank cases on the test backend (with
// RECALL_TEST_BACKEND=cuda_emu the emulated CUDA backend, whose buffers move
// over the device data path: emulated NCCL, or host-staged) against the CPU
// backend on one rank: same kept sets after every event, same schedule, no
// collective call on recycled steps, bitwise equal ranks (selections, rows,
// logits), the CPU run's tokens and logits within 1e-5. Sized for the
// emulator: N = 1..4 (3 zigzag), 6 steps, one setting with pooling (the halo
// exchange), rebuild rows and the stride schedule.
static void device_subset(const model *m, const int32_t *prompt, const int32_t *forced) {
    const model_config *c = &m->cfg;
    N_DECODE = N_DECODE_DEVICE;
    PREFILL_BLOCK = 13;
    const run_cfg base = {.label = "K 12, pool 7, max, stride 3", .attention = ATTENTION_RECYCLED,
                          .n_prompt = PROMPT_MAX, .ro = ropts(12, 3, 7, GROUP_AGG_MAX), .forced = forced};
    run_cfg cpu = base;
    cpu.be = &backend_cpu;
    rank_job ref[1];
    run_ranks(m, 1, prompt, &cpu, ref);
    check_schedule_and_comm(&ref[0], 1, c);
    for (int N = 1; N <= MAX_RANKS; N++) {
        run_cfg x = base;
        x.zigzag = N == 3;
        rank_job jobs[MAX_RANKS];
        run_ranks(m, N, prompt, &x, jobs);
        char what[160];
        snprintf(what, sizeof(what), "%s on %d %s rank(s)%s vs one cpu rank", base.label, N, test_backend_name(),
                 x.zigzag ? " (zigzag)" : "");
        for (int r = 0; r < N; r++)
            CHECK_MSG(jobs[r].dev_path && !strcmp(jobs[r].dev_path, test_device_path(N)),
                      "%s: rank %d: device data path %s, expected %s", what, r, jobs[r].dev_path ? jobs[r].dev_path : "?",
                      test_device_path(N));
        check_ranks_identical(jobs, N, c);
        check_schedule_and_comm(&jobs[0], N, c);
        check_same_selection(&jobs[0], &ref[0], N, c);
        check_matches(&jobs[0], &ref[0], c->n_vocab, 1e-5, what);
        free_jobs(jobs, N);
    }
    free_jobs(ref, 1);
}

int main(int argc, char **argv) {
    const int subset = argc > 1 && strcmp(argv[1], "--device-subset") == 0;
    if (argc > 1 && !subset) {
        fprintf(stderr, "usage: test_recycle [--device-subset]\n");
        return 2;
    }
    test_backend_setup();
    if (!subset) {
        test_recycle_cache_append();
        test_rebuild_one_rank();
        test_validate();
    }

    char path[64];
    rc_err err = {{0}};
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);
    const model_config *c = &m.cfg;
    const int64_t V = c->n_vocab;

    int32_t prompt[PROMPT_MAX], forced[N_DECODE_FULL];
    uint64_t s = 12345;
    for (int i = 0; i < PROMPT_MAX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
    for (int i = 0; i < N_DECODE; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        forced[i] = (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
    if (subset) {
        device_subset(&m, prompt, forced);
        model_free(&m);
        unlink(path);
        TEST_MAIN_END();
    }
    const int64_t n_ctx = PROMPT_MAX + N_DECODE;  // what run_ranks gives the engine

    // Full-attention references on one rank: greedy, and fed the forced tokens.
    run_cfg full_greedy = {.label = "full", .attention = ATTENTION_FULL, .n_prompt = PROMPT_MAX};
    run_cfg full_forced = full_greedy;
    full_forced.forced = forced;
    rank_job ref[1], ref_forced[1];
    run_ranks(&m, 1, prompt, &full_greedy, ref);
    run_ranks(&m, 1, prompt, &full_forced, ref_forced);

    // (a)/(b) Exactness: the recycled cache sees everything, or every step is full.
    {
        run_cfg ex[4];
        ex[0] = (run_cfg){.label = "K = ctx, stride 10", .attention = ATTENTION_RECYCLED, .n_prompt = PROMPT_MAX,
                          .ro = ropts(n_ctx, 10, 7, GROUP_AGG_MAX)};
        ex[1] = (run_cfg){.label = "K 16, stride 1", .attention = ATTENTION_RECYCLED, .n_prompt = PROMPT_MAX,
                          .ro = ropts(16, 1, 7, GROUP_AGG_MAX)};
        ex[2] = ex[1];
        ex[2].label = "K 16, dynamic, similarity 1, every step";
        ex[2].ro.schedule = RECYCLE_DYNAMIC;
        ex[2].ro.stride = 3;  // ignored by the dynamic schedule
        ex[2].ro.check_every = 1;
        ex[2].ro.similarity = 1.0;
        ex[3] = ex[0];
        ex[3].label = "K = ctx, stride 10, zigzag";
        ex[3].zigzag = 1;
        for (int i = 0; i < 4; i++)
            for (int N = 1; N <= 3; N += 2) {
                if (i == 3 && N == 1) continue;
                rank_job jobs[MAX_RANKS];
                run_ranks(&m, N, prompt, &ex[i], jobs);
                char what[160];
                snprintf(what, sizeof(what), "%s on %d rank(s) vs full attention", ex[i].label, N);
                check_matches(&jobs[0], &ref[0], V, 1e-5, what);
                check_ranks_identical(jobs, N, c);
                check_schedule_and_comm(&jobs[0], N, c);
                int64_t n_recycled = 0;
                for (int t = 1; t <= N_DECODE; t++) n_recycled += jobs[0].n_full[t] == 0;
                if (i == 0 || i == 3)  // not vacuous: most steps did run recycled
                    CHECK_MSG(n_recycled == N_DECODE - N_DECODE / 10, "%s: %lld recycled steps", what, (long long)n_recycled);
                else
                    CHECK_MSG(n_recycled == 0, "%s: %lld recycled steps (every step must be full)", what, (long long)n_recycled);
                if (i == 2)
                    for (int t = 1; t <= N_DECODE; t++)
                        CHECK_MSG(jobs[0].n_full[t] == c->n_layer, "%s step %d: %lld full layers", what, t, (long long)jobs[0].n_full[t]);
                free_jobs(jobs, N);
            }
    }

    // (c)/(d)/(e) Selections on 1..4 ranks, schedules, communication, cross-rank identity.
    {
        run_cfg sel[6];
        sel[0] = (run_cfg){.label = "K 12, pool 7, max, stride 5", .attention = ATTENTION_RECYCLED, .n_prompt = PROMPT_MAX,
                           .ro = ropts(12, 5, 7, GROUP_AGG_MAX), .forced = forced, .brute = 1};
        sel[1] = (run_cfg){.label = "K 12, pool 1, mean, stride 5", .attention = ATTENTION_RECYCLED, .n_prompt = PROMPT_MAX,
                           .ro = ropts(12, 5, 1, GROUP_AGG_MEAN), .forced = forced, .brute = 1};
        sel[2] = (run_cfg){.label = "K 20, pool 3, first, dynamic QC 4 s 0.2", .attention = ATTENTION_RECYCLED,
                           .n_prompt = PROMPT_MAX, .ro = ropts(20, 10, 3, GROUP_AGG_FIRST), .forced = forced, .brute = 1};
        sel[2].ro.schedule = RECYCLE_DYNAMIC;
        sel[2].ro.check_every = 4;
        sel[2].ro.similarity = 0.2;
        sel[3] = (run_cfg){.label = "prompt 5, K 12, pool 7, stride 5", .attention = ATTENTION_RECYCLED, .n_prompt = 5,
                           .ro = ropts(12, 5, 7, GROUP_AGG_MAX), .forced = forced, .brute = 1};
        sel[4] = (run_cfg){.label = "K 12, pool 9, max, stride 3 (greedy)", .attention = ATTENTION_RECYCLED,
                           .n_prompt = PROMPT_MAX, .ro = ropts(12, 3, 9, GROUP_AGG_MAX), .brute = 1};
        // HeadKV budgets: K per (layer, KV head) from importance scores with a
        // zero, a tie and a dominant head; same total as K 12 everywhere.
        head_scores hs = {.n_layer = c->n_layer, .n_head = c->n_head};
        hs.score = calloc((size_t)(c->n_layer * c->n_head), sizeof(double));
        for (int64_t i = 0; i < c->n_layer * c->n_head; i++) hs.score[i] = (double)((i * 7) % 5);
        hs.score[1] = 40.0;
        sel[5] = (run_cfg){.label = "K 12 on average, HeadKV budgets, pool 7, max, stride 5", .attention = ATTENTION_RECYCLED,
                           .n_prompt = PROMPT_MAX, .ro = ropts(12, 5, 7, GROUP_AGG_MAX), .forced = forced, .brute = 1};
        sel[5].ro.budgets = RECYCLE_BUDGETS_HEADKV;
        sel[5].ro.head_scores = &hs;
        {  // the allocation is not uniform and keeps the total
            recycle_state rs;
            rc_err err = {{0}};
            CHECK_MSG(recycle_init(&rs, &g_cpu, &sel[5].ro, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, 200, KV_F32, 1, &err) == 0,
                      "%s", err.msg);
            int64_t total = 0, lo = INT64_MAX, hi = 0;
            for (int64_t l = 0; l < c->n_layer; l++)
                for (int64_t h = 0; h < c->n_head_kv; h++) {
                    const int64_t k = recycle_cache_cap(&rs.cache, l, h);
                    total += k;
                    lo = k < lo ? k : lo;
                    hi = k > hi ? k : hi;
                }
            CHECK_MSG(total == c->n_layer * c->n_head_kv * 12 && recycle_cache_total_rows(&rs.cache) == total,
                      "HeadKV recycled budgets: %lld rows in all, want %lld", (long long)total,
                      (long long)(c->n_layer * c->n_head_kv * 12));
            CHECK_MSG(lo < 12 && hi > 12 && !rs.cache.uniform, "HeadKV recycled budgets are uniform (%lld..%lld)",
                      (long long)lo, (long long)hi);
            recycle_free(&rs);
        }
        for (int i = 0; i < 6; i++) {
            rank_job one[1];
            run_ranks(&m, 1, prompt, &sel[i], one);
            CHECK_MSG(one[0].n_brute > 0, "%s: no rebuild checked against the brute force", sel[i].label);
            // Every rebuild (prefill + each full layer step) was checked against the brute force.
            int64_t want_brute = c->n_layer;
            for (int t = 1; t <= N_DECODE; t++) want_brute += one[0].n_full[t];
            CHECK_MSG(one[0].n_brute == want_brute, "%s: %lld rebuilds checked, %lld expected", sel[i].label,
                      (long long)one[0].n_brute, (long long)want_brute);
            check_schedule_and_comm(&one[0], 1, c);
            if (i == 0) {  // the reduced cache really changes the result (the checks above have teeth)
                double worst = 0.0;
                for (int t = 1; t <= N_DECODE; t++)
                    worst = fmax(worst, max_rel_diff(one[0].logits + (int64_t)t * V, ref_forced[0].logits + (int64_t)t * V, V));
                CHECK_MSG(worst > 1e-4, "%s: recycled logits within %.3g of full attention: the top-K cache is not used", sel[i].label, worst);
            }
            if (i == 2) {  // the dynamic schedule ran some layers full and some recycled after a check
                int64_t full_at_checks = 0, recycled_at_checks = 0;
                for (int t = sel[i].ro.check_every; t <= N_DECODE; t += (int)sel[i].ro.check_every)
                    for (int64_t l = 0; l < c->n_layer; l++) {
                        full_at_checks += one[0].layer_full[t * c->n_layer + l];
                        recycled_at_checks += !one[0].layer_full[t * c->n_layer + l];
                    }
                printf("%s: at the %d checks, %lld layer-steps full, %lld recycled\n", sel[i].label,
                       N_DECODE / (int)sel[i].ro.check_every, (long long)full_at_checks, (long long)recycled_at_checks);
                CHECK_MSG(full_at_checks > 0 && recycled_at_checks > 0, "%s: the checks must go both ways for this test to cover them",
                          sel[i].label);
            }
            for (int zig = 0; zig < 2; zig++)
                for (int N = 2; N <= MAX_RANKS; N++) {
                    if (zig && N == 4 && i != 3) continue;
                    if (i >= 1 && !zig && N == 2) continue;  // keep the run time down: N = 2 once per setting is enough
                    run_cfg cfg = sel[i];
                    cfg.zigzag = zig;
                    cfg.brute = 0;
                    rank_job jobs[MAX_RANKS];
                    run_ranks(&m, N, prompt, &cfg, jobs);
                    char what[200];
                    snprintf(what, sizeof(what), "%s on %d ranks%s vs one rank", sel[i].label, N, zig ? " (zigzag)" : "");
                    check_ranks_identical(jobs, N, c);
                    check_schedule_and_comm(&jobs[0], N, c);
                    check_same_selection(&jobs[0], &one[0], N, c);
                    check_matches(&jobs[0], &one[0], V, 1e-5, what);
                    free_jobs(jobs, N);
                }
            free_jobs(one, 1);
        }
        free(hs.score);
    }

    // Engine reuse, a sequence without a prompt, a prompt in two prefill calls,
    // an fp16 cache, a dynamic schedule that never runs full.
    {
        const run_cfg base = {.label = "K 12, pool 7, max, stride 5", .attention = ATTENTION_RECYCLED,
                              .n_prompt = PROMPT_MAX, .ro = ropts(12, 5, 7, GROUP_AGG_MAX), .forced = forced, .brute = 1};
        rank_job one[1];
        run_ranks(&m, 1, prompt, &base, one);
        // A second sequence on the same engine (engine_reset) is the same as on a fresh engine.
        for (int N = 1; N <= 2; N++) {
            run_cfg w = base;
            w.label = "after a warm-up sequence";
            w.warmup = 1;
            w.brute = N == 1;
            rank_job fresh[MAX_RANKS], warm[MAX_RANKS];
            run_cfg f = base;
            f.brute = 0;
            run_ranks(&m, N, prompt, &f, fresh);
            run_ranks(&m, N, prompt, &w, warm);
            char what[120];
            snprintf(what, sizeof(what), "second sequence after engine_reset on %d rank(s) vs a fresh engine", N);
            check_runs_bitwise(&warm[0], &fresh[0], c, what);
            check_ranks_identical(warm, N, c);
            check_schedule_and_comm(&warm[0], N, c);
            free_jobs(fresh, N);
            free_jobs(warm, N);
        }
        // The prompt in two prefill calls (one rank): the second call's rebuild
        // covers the whole prompt, so everything matches the one-call run.
        {
            run_cfg sp = base;
            sp.label = "prefill in two calls (60 + 37)";
            sp.prefill_split = 60;
            rank_job two[1];
            run_ranks(&m, 1, prompt, &sp, two);
            check_same_selection(&two[0], &one[0], 1, c);
            check_matches(&two[0], &one[0], V, 1e-5, sp.label);
            check_schedule_and_comm(&two[0], 1, c);
            free_jobs(two, 1);
        }
        // No prompt: the first decode step builds every layer's cache.
        {
            run_cfg np = base;
            np.label = "no prompt, K 8, pool 5, stride 3";
            np.n_prompt = 0;
            np.ro = ropts(8, 3, 5, GROUP_AGG_MAX);
            run_cfg npk = np;
            npk.label = "no prompt, K = ctx, stride 3";
            npk.ro.k = N_DECODE;
            npk.brute = 0;
            run_cfg npf = {.label = "no prompt, full", .attention = ATTENTION_FULL, .n_prompt = 0, .forced = forced};
            rank_job nref[1], n1[1];
            run_ranks(&m, 1, prompt, &npf, nref);
            run_ranks(&m, 1, prompt, &np, n1);
            check_schedule_and_comm(&n1[0], 1, c);
            CHECK_MSG(n1[0].n_brute > 0, "%s: nothing checked", np.label);
            for (int N = 2; N <= 3; N++) {
                rank_job jobs[MAX_RANKS];
                run_cfg x = np;
                x.brute = 0;
                run_ranks(&m, N, prompt, &x, jobs);
                check_ranks_identical(jobs, N, c);
                check_schedule_and_comm(&jobs[0], N, c);
                check_same_selection(&jobs[0], &n1[0], N, c);
                check_matches(&jobs[0], &n1[0], V, 1e-5, "no prompt on N ranks vs one");
                free_jobs(jobs, N);
                run_ranks(&m, N, prompt, &npk, jobs);
                check_matches(&jobs[0], &nref[0], V, 1e-5, "no prompt, K = ctx on N ranks vs full attention");
                check_ranks_identical(jobs, N, c);
                check_schedule_and_comm(&jobs[0], N, c);
                free_jobs(jobs, N);
            }
            free_jobs(nref, 1);
            free_jobs(n1, 1);
        }
        // fp16 cache: ranks still agree bit for bit, recycled steps still silent.
        {
            run_cfg h = base;
            h.label = "fp16 KV, K 12, pool 7, stride 5";
            h.kv_f16 = 1;
            h.brute = 0;
            rank_job jobs[MAX_RANKS];
            run_ranks(&m, 3, prompt, &h, jobs);
            check_ranks_identical(jobs, 3, c);
            check_schedule_and_comm(&jobs[0], 3, c);
            free_jobs(jobs, 3);
        }
        // Dynamic with similarity -1: no check ever fires, every step after the prefill is recycled.
        {
            run_cfg d = base;
            d.label = "dynamic, similarity -1";
            d.ro.schedule = RECYCLE_DYNAMIC;
            d.ro.check_every = 1;
            d.ro.similarity = -1.0;
            d.brute = 0;
            rank_job jobs[MAX_RANKS];
            run_ranks(&m, 2, prompt, &d, jobs);
            check_ranks_identical(jobs, 2, c);
            check_schedule_and_comm(&jobs[0], 2, c);
            for (int t = 1; t <= N_DECODE; t++) CHECK_MSG(jobs[0].n_full[t] == 0, "%s: step %d ran full", d.label, t);
            free_jobs(jobs, 2);
        }
        free_jobs(one, 1);
    }

    free_jobs(ref, 1);
    free_jobs(ref_forced, 1);
    model_free(&m);
    unlink(path);
    TEST_MAIN_END();
}
