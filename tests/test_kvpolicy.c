// KV-compression policies (design.md §4: StreamingLLM, H2O, SnapKV,
// PyramidKV, Ada-KV, HeadKV) on the sharded cache, on N simulated ranks
// (threads with comm_sim) over a tiny GQA model (3 layers, 6 query heads over
// 2 KV heads, head_dim 16) with an fp32 KV cache. The reference is written
// here, by definition and in double precision, from a full-attention prefill
// of the same prompt on the same ranks (the window's queries and lse, the K
// rows; run just before, it does not depend on the policy) and the decode
// hook's q and k; it calls no policy or selection code (HeadKV's budget split
// comes from budget_headkv, tested in test_budget; PyramidKV's line is
// recomputed here and also compared with budget_pyramid).
//   1. kept sets: for every method (per KV head, and per query head for
//      SnapKV, HeadKV and H2O), pooling 7 and 1, budgets below the prompt and
//      at its edges (n - 1, n) and heads whose budget exceeds the prompt,
//      the union over ranks of every (layer, store
//      head)'s positions equals the reference at the end of the prompt and
//      after each of N_DECODE decode steps, on 1, 2, 3, 4 ranks, contiguous
//      and zigzag prompts (forced and greedy tokens); H2O's stored scores
//      follow the reference's accumulated attention; the hook's merged lse
//      equals the lse over the reference's kept rows at every step (so every
//      step attends to exactly the kept rows); evictions add up. The same
//      reference also checks kvpolicy_compress/attend/after_step on hand-built
//      shards with crafted exact ties (keys from 5 rows, twin heads), so every
//      tie-break is exercised: (score desc, position asc), Ada-KV's head
//      order, H2O's eviction order, Ada-KV's floor;
//   2. every rank holds only positions it owns, in ascending order, with the
//      full prefill's K/V rows (prompt) and the hook's k (decode tokens);
//      `held` (replicated) equals the union size on every rank, `budget` and
//      rows_kept_prompt equal the prompt's kept counts;
//   3. ranks agree bitwise (logits, hook arguments), and runs on 2..4 ranks
//      keep the same sets, pick the same tokens and give logits within 1e-5
//      of one rank's;
//   4. a budget covering the context (B = n_ctx) reproduces full attention
//      (tokens identical, logits within 1e-5) for every method;
//   5. memory: without retain_prompt_cache the full cache is freed at the
//      compression and engine_kv_bytes_used equals rows x 2 x row bytes (fp32
//      and fp16); with it, engine_truncate to the prompt + engine_set_attention
//      to another method (or to full attention) reproduces a fresh run of that
//      method bit for bit;
//   6. error paths: switching to a policy away from the prompt end, truncating
//      under a policy to another position or after the full cache was freed,
//      and kvpolicy_opts_validate's refusals, each naming its flag.
// A set that differs from the reference is reported with the layer, head and
// step, the positions that differ with their reference scores and the
// boundary scores, flagged as an EXACT TIE or a NEAR-TIE (float vs double).
// Release ~3 s, ASan+UBSan ~23 s on 2 cores.
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "model/quant.h"
#include "peek.h"
#include "test_backend.h"
#include "engine/sampler.h"
#include "kv/kv_cache.h"
#include "kv/shard.h"
#include "policy/budget.h"
#include "policy/kvpolicy.h"
#include "tiny_model.h"

#define MAX_RANKS 4
#define N_DECODE_FULL 30
#define N_DECODE_DEVICE 6   // the --device-subset runs (the SIMT emulator: ~0.13 s per rank and step)
#define N_EVENTS_MAX (N_DECODE_FULL + 1)
#define N_EVENTS (N_DECODE + 1)  // event 0 = end of the prompt, event t = after decode step t

static int N_DECODE = N_DECODE_FULL;  // decode steps of every run
static int PREFILL_BLOCK = 5;          // --device-subset: 13 (fewer launches on the emulator)
#define PROMPT_MAX 97
#define NEAR_TIE_REL 1e-5

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- the full-attention prefill the reference reads ------------------------------

typedef struct full_ref {
    int64_t n;           // prompt length
    float *k, *v;        // (n_layer, n_kv, n, head_dim) fp32
    int64_t win_n;
    float *win_q;        // (n_layer, win_n, n_head, head_dim)
    float *win_lse;      // (n_layer, win_n, n_head)
} full_ref;

static void full_ref_free(full_ref *fr) {
    free(fr->k); free(fr->v); free(fr->win_q); free(fr->win_lse);
    memset(fr, 0, sizeof(*fr));
}

// ---- a run of N simulated ranks ------------------------------------------------

typedef struct run_cfg {
    const char *label;
    const backend_ops *be;    // NULL: the test backend (test_backend.h)
    int attention;            // enum attention_kind
    kvpolicy_opts po;
    int64_t n_prompt;
    int zigzag;
    const int32_t *forced;    // (N_DECODE) tokens to feed; NULL = greedy argmax
    int kv_f16;
    int retain;               // retain_prompt_cache
    int do_switch;            // after the decode, truncate to the prompt, switch to switch_to, decode again
    int switch_to;
    kvpolicy_opts switch_po;
} run_cfg;

// What one rank saw in one phase (phase 1: after the switch).
typedef struct record {
    int64_t S;                // store heads per layer (0: no policy)
    uint8_t have[N_EVENTS_MAX];   // event recorded with a built store
    float *logits;            // (N_EVENTS, V)
    int32_t *generated;       // (N_DECODE)
    float *hq, *hk, *hlse;    // (N_DECODE, L, n_head * hd), (N_DECODE, L, n_kv * hd), (N_DECODE, L, n_head)
    int *hcalls;              // (N_DECODE, L)
    int64_t *hpos;            // (N_DECODE, L)
    int64_t *cnt;             // (N_EVENTS, L, S)
    int64_t *pos;             // (N_EVENTS, L, S, P)
    double *score;            // (N_EVENTS, L, S, P)
    int64_t *held;            // (N_EVENTS, L, S)
    int64_t *budget;          // (L, S) e->policy->budget
    float *cut_gap, *cut_score;  // (N_EVENTS, L) e->policy->cut_gap / cut_score
    int64_t *cut_pos;            // (N_EVENTS, L)
    uint8_t kv_null[N_EVENTS_MAX];
    size_t bytes_used[N_EVENTS_MAX], bytes_want[N_EVENTS_MAX];
    int64_t rows_store[N_EVENTS_MAX], rows_sum[N_EVENTS_MAX];
    int64_t rows_kept_prompt, rows_evicted;
    int64_t rows_bad, own_bad, order_bad, hook_bad;
    char bad_msg[320];
} record;

typedef struct rank_job {
    const model *m;
    const char *dev_path;     // the device data path the policy engine attached ("none", "nccl", "staged")
    comm *c;
    const int32_t *prompt;
    const run_cfg *cfg;
    int64_t P;                // positions a head can hold: n_prompt + N_DECODE
    // This rank's shard of a full-attention prefill of the same prompt on the
    // same ranks, and its window (every rank's copy).
    int64_t n_shard;
    int64_t *shard_pos;       // (n_shard) ascending
    uint8_t *shard_k, *shard_v;  // (L, n_kv, n_shard, head_dim) in the cache's element type
    int64_t win_n;
    float *win_q, *win_lse;   // (L, KVPOLICY_WINDOW_MAX, n_head, hd), (L, KVPOLICY_WINDOW_MAX, n_head)
    int n_ranks;
    int phase;
    record rec[2];
    int win_same;             // the policy run's window is bitwise the full prefill's
    int failed;
    char err[256];
} rank_job;

static void note_bad(record *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_bad(record *r, const char *fmt, ...) {
    if (r->bad_msg[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->bad_msg, sizeof(r->bad_msg), fmt, ap);
    va_end(ap);
}

static void policy_hook(void *user, int64_t layer, int64_t pos, const float *q, const float *k, const float *lse) {
    rank_job *j = user;
    const model_config *c = &j->m->cfg;
    record *r = &j->rec[j->phase];
    const int64_t L = c->n_layer, H = c->n_head, KV = c->n_head_kv, hd = c->head_dim;
    const int64_t t = pos - j->cfg->n_prompt;
    if (t < 0 || t >= N_DECODE || layer < 0 || layer >= L) {
        r->hook_bad++;
        note_bad(r, "hook called for layer %lld at position %lld", (long long)layer, (long long)pos);
        return;
    }
    memcpy(r->hq + (t * L + layer) * H * hd, q, (size_t)(H * hd) * sizeof(float));
    memcpy(r->hk + (t * L + layer) * KV * hd, k, (size_t)(KV * hd) * sizeof(float));
    memcpy(r->hlse + (t * L + layer) * H, lse, (size_t)H * sizeof(float));
    r->hcalls[t * L + layer]++;
    r->hpos[t * L + layer] = pos;
}

// Snapshot of a built store after event ev, with the per-rank checks
// (ownership, order, rows) counted here and reported by the main thread.
static void record_store(rank_job *j, const kvpolicy_state *ps, const shard_plan *plan, int rank, int ev) {
    const model_config *c = &j->m->cfg;
    record *r = &j->rec[j->phase];
    const int64_t L = c->n_layer, KV = c->n_head_kv, hd = c->head_dim, P = j->P, n = j->cfg->n_prompt;
    const int64_t S = ps->n_store;
    r->S = S;
    r->have[ev] = 1;
    const size_t elem_bytes = ps->store.elem == KV_F16 ? 2 : 4, row = (size_t)hd * elem_bytes;
    uint8_t want_k[64 * 4];  // head_dim <= 64
    int64_t rows = 0;
    for (int64_t l = 0; l < L; l++) {
        r->cut_gap[ev * L + l] = ps->cut_gap[l];
        r->cut_score[ev * L + l] = ps->cut_score[l];
        r->cut_pos[ev * L + l] = ps->cut_pos[l];
    }
    for (int64_t l = 0; l < L; l++)
        for (int64_t s = 0; s < S; s++) {
            const kv_store_head *h = kv_store_head_at(&ps->store, l, s);
            const int64_t o = (ev * L + l) * S + s;
            r->cnt[o] = h->count;
            r->held[o] = ps->held[l * S + s];
            r->budget[l * S + s] = ps->budget[l * S + s];
            rows += h->count;
            if (h->count > P) {
                r->order_bad++;
                note_bad(r, "event %d layer %lld head %lld: %lld rows, more than %lld positions exist", ev, (long long)l,
                         (long long)s, (long long)h->count, (long long)P);
                r->cnt[o] = 0;
                continue;
            }
            if (h->count > 0) {  // an empty head may have no arrays
                memcpy(r->pos + o * P, h->pos, (size_t)h->count * sizeof(int64_t));
                float *sc = peek_copy(ps->be, h->score, (size_t)h->count * sizeof(float));
                for (int64_t i = 0; sc && i < h->count; i++) r->score[o * P + i] = sc[i];
                free(sc);
            }
            // The store head reads KV head s * qps / group.
            const int64_t kvh = s * ps->q_per_store / (c->n_head / KV);
            for (int64_t i = 0; i < h->count; i++) {
                const int64_t p = h->pos[i];
                if (i > 0 && p <= h->pos[i - 1]) {
                    r->order_bad++;
                    note_bad(r, "event %d layer %lld head %lld: positions %lld then %lld (not ascending)", ev,
                             (long long)l, (long long)s, (long long)h->pos[i - 1], (long long)p);
                }
                if (p < 0 || p >= n + N_DECODE || shard_owner(plan, p) != rank) {
                    r->own_bad++;
                    note_bad(r, "event %d layer %lld head %lld: rank %d holds position %lld (owner %d)", ev,
                             (long long)l, (long long)s, rank, (long long)p,
                             p >= 0 && p < n + N_DECODE ? shard_owner(plan, p) : -1);
                    continue;
                }
                uint8_t gk[64 * 4], gv[64 * 4];
                peek_store_row(&ps->store, 0, l, s, i, gk);
                peek_store_row(&ps->store, 1, l, s, i, gv);
                if (p < n) {  // a prompt row: this rank's rows of the full prefill
                    int64_t x = 0;
                    while (x < j->n_shard && j->shard_pos[x] != p) x++;
                    const size_t off = ((size_t)((l * KV + kvh) * j->n_shard + x)) * row;
                    if (x == j->n_shard || memcmp(gk, j->shard_k + off, row) || memcmp(gv, j->shard_v + off, row)) {
                        r->rows_bad++;
                        note_bad(r, "event %d layer %lld head %lld: K/V row of prompt position %lld differs from the full prefill's",
                                 ev, (long long)l, (long long)s, (long long)p);
                    }
                } else {  // a decode token: the hook's k of that step (V has no independent copy)
                    const float *hk = r->hk + ((p - n) * L + l) * KV * hd + kvh * hd;
                    if (ps->store.elem == KV_F32) memcpy(want_k, hk, (size_t)hd * sizeof(float));
                    else
                        for (int64_t d = 0; d < hd; d++) ((uint16_t *)want_k)[d] = fp32_to_fp16(hk[d]);
                    if (memcmp(gk, want_k, row)) {
                        r->rows_bad++;
                        note_bad(r, "event %d layer %lld head %lld: K row of decode position %lld differs from the hook's k",
                                 ev, (long long)l, (long long)s, (long long)p);
                    }
                }
            }
        }
    r->rows_sum[ev] = rows;
    r->rows_store[ev] = kv_store_rows(&ps->store);
    r->bytes_want[ev] = (size_t)rows * 2 * row;
    r->rows_kept_prompt = ps->stats.rows_kept_prompt;
    r->rows_evicted = ps->stats.rows_evicted;
}

static void record_event(rank_job *j, const engine *e, int ev) {
    record *r = &j->rec[j->phase];
    const int64_t V = j->m->cfg.n_vocab;
    memcpy(r->logits + (int64_t)ev * V, engine_logits(e), (size_t)V * sizeof(float));
    r->kv_null[ev] = e->kv.k == NULL;
    r->bytes_used[ev] = engine_kv_bytes_used(e);
    if (e->policy && e->policy->built) record_store(j, e->policy, &e->plan, j->c->rank, ev);
}

static int decode_phase(rank_job *j, engine *e, rc_err *err) {
    const int64_t V = j->m->cfg.n_vocab;
    record *r = &j->rec[j->phase];
    for (int t = 0; t < N_DECODE; t++) {
        const int32_t next = j->cfg->forced ? j->cfg->forced[t] : argmax_logits(engine_logits(e), V);
        r->generated[t] = next;
        if (engine_decode(e, next, err)) return -1;
        record_event(j, e, t + 1);
    }
    return 0;
}

static void *run_rank(void *arg) {
    rank_job *j = arg;
    const run_cfg *cfg = j->cfg;
    const model_config *c = &j->m->cfg;
    engine_opts o = engine_default_opts();
    o.n_ctx = cfg->n_prompt + N_DECODE;
    o.n_threads = 1;
    o.kv_elem = cfg->kv_f16 ? KV_F16 : KV_F32;
    o.prefill_block = PREFILL_BLOCK;  // several blocks per rank, uneven
    o.comm = j->c;
    o.zigzag = cfg->zigzag;
    o.attention = cfg->attention;
    o.policy = cfg->po;
    o.retain_prompt_cache = cfg->retain;
    o.on_policy_step = policy_hook;
    o.backend = cfg->be ? cfg->be : test_backend();
    o.hook_user = j;
    engine *e = NULL;
    rc_err err = {{0}};
    j->phase = 0;
    const int64_t L = c->n_layer, KV = c->n_head_kv, H = c->n_head, hd = c->head_dim;
    const size_t wq_n = (size_t)(L * KVPOLICY_WINDOW_MAX * H * hd), wl_n = (size_t)(L * KVPOLICY_WINDOW_MAX * H);
    {  // The full-attention prefill the reference reads (retained so that every rank gets the window).
        engine_opts fo = o;
        fo.attention = ATTENTION_FULL;
        fo.retain_prompt_cache = 1;
        fo.on_policy_step = NULL;
        int rc = !(e = engine_create(j->m, &fo, &err));
        if (rc == 0) rc = engine_prefill(e, j->prompt, cfg->n_prompt, NULL, NULL, NULL, &err);
        if (rc) {
            snprintf(j->err, sizeof(j->err), "full prefill: %.200s", err.msg);
            j->failed = 1;
            engine_destroy(e);
            return NULL;
        }
        const size_t row = kv_cache_row_bytes(&e->kv);
        j->n_shard = e->n_local;
        j->shard_pos = malloc((size_t)(e->n_local + 1) * sizeof(int64_t));
        j->shard_k = malloc((size_t)(L * KV * e->n_local) * row + 1);
        j->shard_v = malloc((size_t)(L * KV * e->n_local) * row + 1);
        memcpy(j->shard_pos, e->slot_pos, (size_t)e->n_local * sizeof(int64_t));
        for (int64_t l = 0; l < L; l++)
            for (int64_t h = 0; h < KV; h++)
                for (int64_t x = 0; x < e->n_local; x++) {
                    const size_t off = ((size_t)((l * KV + h) * e->n_local + x)) * row;
                    peek_kv_row(&e->kv, 0, l, h, x, j->shard_k + off);
                    peek_kv_row(&e->kv, 1, l, h, x, j->shard_v + off);
                }
        j->win_n = e->win_n;
        j->win_q = malloc(wq_n * sizeof(float));
        j->win_lse = malloc(wl_n * sizeof(float));
        e->be->ops->download(e->be, j->win_q, e->win_q, wq_n * sizeof(float));
        e->be->ops->download(e->be, j->win_lse, e->win_lse, wl_n * sizeof(float));
        engine_destroy(e);
    }
    int rc = !(e = engine_create(j->m, &o, &err));
    if (e) j->dev_path = j->c->dev ? j->c->dev->kind : "none";
    if (rc == 0) rc = engine_prefill(e, j->prompt, cfg->n_prompt, NULL, NULL, NULL, &err);
    if (rc == 0) {
        // The window every rank votes with is the full prefill's, bit for bit (the policy does not change the prefill).
        j->win_same = e->win_n == j->win_n;
        float *wq = peek_copy(e->be, e->win_q, wq_n * sizeof(float)), *wl = peek_copy(e->be, e->win_lse, wl_n * sizeof(float));
        for (int64_t l = 0; l < L && j->win_same; l++)
            j->win_same = memcmp(wq + l * KVPOLICY_WINDOW_MAX * H * hd, j->win_q + l * KVPOLICY_WINDOW_MAX * H * hd,
                                 (size_t)(e->win_n * H * hd) * sizeof(float)) == 0 &&
                          memcmp(wl + l * KVPOLICY_WINDOW_MAX * H, j->win_lse + l * KVPOLICY_WINDOW_MAX * H,
                                 (size_t)(e->win_n * H) * sizeof(float)) == 0;
        free(wq);
        free(wl);
        record_event(j, e, 0);
        rc = decode_phase(j, e, &err);
    }
    if (rc == 0 && cfg->do_switch) {
        rc = engine_truncate(e, cfg->n_prompt, &err);
        if (rc == 0) rc = engine_set_attention(e, cfg->switch_to, &o.recycle, &cfg->switch_po, &err);
        j->phase = 1;
        if (rc == 0) {
            record_event(j, e, 0);  // not built yet: only logits and memory are recorded
            rc = decode_phase(j, e, &err);
        }
    }
    if (rc) {
        snprintf(j->err, sizeof(j->err), "%.240s", err.msg);
        j->failed = 1;
    }
    engine_destroy(e);
    return NULL;
}

static void record_alloc(record *r, const model_config *c, int64_t P) {
    const int64_t L = c->n_layer, H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, V = c->n_vocab, S = H;
    memset(r, 0, sizeof(*r));
    r->logits = calloc((size_t)(N_EVENTS * V), sizeof(float));
    r->generated = calloc(N_DECODE, sizeof(int32_t));
    r->hq = calloc((size_t)(N_DECODE * L * H * hd), sizeof(float));
    r->hk = calloc((size_t)(N_DECODE * L * KV * hd), sizeof(float));
    r->hlse = calloc((size_t)(N_DECODE * L * H), sizeof(float));
    r->hcalls = calloc((size_t)(N_DECODE * L), sizeof(int));
    r->hpos = calloc((size_t)(N_DECODE * L), sizeof(int64_t));
    r->cnt = calloc((size_t)(N_EVENTS * L * S), sizeof(int64_t));
    r->pos = calloc((size_t)(N_EVENTS * L * S * P), sizeof(int64_t));
    r->score = calloc((size_t)(N_EVENTS * L * S * P), sizeof(double));
    r->held = calloc((size_t)(N_EVENTS * L * S), sizeof(int64_t));
    r->budget = calloc((size_t)(L * S), sizeof(int64_t));
    r->cut_gap = calloc((size_t)(N_EVENTS * L), sizeof(float));
    r->cut_score = calloc((size_t)(N_EVENTS * L), sizeof(float));
    r->cut_pos = calloc((size_t)(N_EVENTS * L), sizeof(int64_t));
}

static void record_free(record *r) {
    free(r->logits); free(r->generated); free(r->hq); free(r->hk); free(r->hlse); free(r->hcalls); free(r->hpos);
    free(r->cnt); free(r->pos); free(r->score); free(r->held); free(r->budget);
    free(r->cut_gap); free(r->cut_score); free(r->cut_pos);
    memset(r, 0, sizeof(*r));
}

static void free_jobs(rank_job *jobs, int n) {
    for (int r = 0; r < n; r++) {
        record_free(&jobs[r].rec[0]);
        record_free(&jobs[r].rec[1]);
        free(jobs[r].shard_pos); free(jobs[r].shard_k); free(jobs[r].shard_v); free(jobs[r].win_q); free(jobs[r].win_lse);
    }
}

// The reference's inputs (fp32 runs): every rank's shard of the full prefill by position, and the window.
static void full_ref_from_jobs(const rank_job *jobs, int N, full_ref *fr) {
    const model_config *c = &jobs[0].m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, H = c->n_head, hd = c->head_dim, n = jobs[0].cfg->n_prompt;
    fr->n = n;
    fr->k = calloc((size_t)(L * KV * n * hd), sizeof(float));
    fr->v = calloc((size_t)(L * KV * n * hd), sizeof(float));
    uint8_t *seen = calloc((size_t)n, 1);
    for (int r = 0; r < N; r++) {
        const rank_job *j = &jobs[r];
        for (int64_t x = 0; x < j->n_shard; x++) {
            const int64_t p = j->shard_pos[x];
            CHECK_MSG(p >= 0 && p < n && !seen[p], "full prefill: rank %d holds position %lld", r, (long long)p);
            if (p < 0 || p >= n) continue;
            seen[p] = 1;
            for (int64_t l = 0; l < L; l++)
                for (int64_t h = 0; h < KV; h++) {
                    memcpy(fr->k + ((l * KV + h) * n + p) * hd, j->shard_k + ((l * KV + h) * j->n_shard + x) * hd * sizeof(float),
                           (size_t)hd * sizeof(float));
                    memcpy(fr->v + ((l * KV + h) * n + p) * hd, j->shard_v + ((l * KV + h) * j->n_shard + x) * hd * sizeof(float),
                           (size_t)hd * sizeof(float));
                }
        }
        int same = j->win_n == jobs[0].win_n;
        for (int64_t l = 0; l < L && same; l++)  // the first win_n rows of each layer's KVPOLICY_WINDOW_MAX
            same = memcmp(j->win_q + l * KVPOLICY_WINDOW_MAX * H * hd, jobs[0].win_q + l * KVPOLICY_WINDOW_MAX * H * hd,
                          (size_t)(j->win_n * H * hd) * sizeof(float)) == 0 &&
                   memcmp(j->win_lse + l * KVPOLICY_WINDOW_MAX * H, jobs[0].win_lse + l * KVPOLICY_WINDOW_MAX * H,
                          (size_t)(j->win_n * H) * sizeof(float)) == 0;
        CHECK_MSG(same, "full prefill: rank %d's window differs from rank 0's", r);
    }
    for (int64_t p = 0; p < n; p++) CHECK_MSG(seen[p], "full prefill: no rank holds position %lld", (long long)p);
    free(seen);
    const int64_t wn = jobs[0].win_n;
    CHECK_MSG(wn == (n < KVPOLICY_WINDOW_MAX ? n : KVPOLICY_WINDOW_MAX), "full prefill kept %lld window rows", (long long)wn);
    fr->win_n = wn;
    fr->win_q = malloc((size_t)(L * wn * H * hd + 1) * sizeof(float));
    fr->win_lse = malloc((size_t)(L * wn * H + 1) * sizeof(float));
    for (int64_t l = 0; l < L; l++) {
        memcpy(fr->win_q + l * wn * H * hd, jobs[0].win_q + l * KVPOLICY_WINDOW_MAX * H * hd, (size_t)(wn * H * hd) * sizeof(float));
        memcpy(fr->win_lse + l * wn * H, jobs[0].win_lse + l * KVPOLICY_WINDOW_MAX * H, (size_t)(wn * H) * sizeof(float));
    }
}

static int run_ranks(const model *m, int n_ranks, const int32_t *prompt, const run_cfg *cfg, rank_job *jobs) {
    comm *comms[MAX_RANKS];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(n_ranks, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < n_ranks; r++) {
        rank_job *j = &jobs[r];
        *j = (rank_job){.m = m, .c = comms[r], .prompt = prompt, .cfg = cfg, .P = cfg->n_prompt + N_DECODE,
                        .n_ranks = n_ranks};
        record_alloc(&j->rec[0], &m->cfg, j->P);
        record_alloc(&j->rec[1], &m->cfg, j->P);
        pthread_create(&th[r], NULL, run_rank, j);
    }
    for (int r = 0; r < n_ranks; r++) pthread_join(th[r], NULL);
    int ok = 1;
    for (int r = 0; r < n_ranks; r++) {
        CHECK_MSG(!jobs[r].failed, "%s on %d rank(s): rank %d failed: %s", cfg->label, n_ranks, r, jobs[r].err);
        ok &= !jobs[r].failed;
        comm_destroy(comms[r]);
    }
    return ok;
}

// ---- the reference -----------------------------------------------------------------

typedef struct ref_entry {
    double score;
    int64_t head, pos;
} ref_entry;

static int ref_cmp(const void *a, const void *b) {  // score descending, then head, then position ascending
    const ref_entry *x = a, *y = b;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    if (x->head != y->head) return x->head < y->head ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

// PyramidKV's line by definition: min = b / beta, max = 2b - min, linear from
// layer 0 (max) to the last (min); floors plus one unit for the largest
// remainders (ties: lower layer first) so the sum is n_layer * b.
static void ref_pyramid(int64_t L, int64_t b, double beta, int64_t *out) {
    if (L == 1) {
        out[0] = b;
        return;
    }
    const double mn = (double)b / beta, mx = 2.0 * (double)b - mn;
    double rem[64];
    int64_t sum = 0;
    for (int64_t l = 0; l < L; l++) {
        const double y = mx - (mx - mn) * (double)l / (double)(L - 1);
        out[l] = (int64_t)floor(y);
        rem[l] = y - floor(y);
        sum += out[l];
    }
    for (int64_t left = L * b - sum; left > 0; left--) {
        int64_t best = -1;
        for (int64_t l = 0; l < L; l++)
            if (rem[l] >= 0 && (best < 0 || rem[l] > rem[best] + 1e-9)) best = l;
        out[best]++;
        rem[best] = -1;
    }
}

typedef struct ref_state {
    int64_t L, S, P, qps;
    uint8_t *kept;    // (L, S, P)
    double *score;    // (L, S, P): H2O's running score
    double *rank_sc;  // (L, S, P): the score the last choice ranked by (NaN: not ranked)
} ref_state;

// The keys of (layer, KV head) by position: the full prefill's for the
// prompt, the hook's k for decode tokens.
static const float *ref_key(const full_ref *fr, const record *r0, const model_config *c, int64_t l, int64_t kvh, int64_t p) {
    const int64_t KV = c->n_head_kv, hd = c->head_dim, n = fr->n;
    if (p < n) return fr->k + ((l * KV + kvh) * n + p) * hd;
    return r0->hk + ((p - n) * c->n_layer + l) * KV * hd + kvh * hd;
}

static double dot_d(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

// The prompt's selection, by the definitions in the header of kvpolicy.h and
// design.md §4.
static void ref_prompt(ref_state *st, int method, const kvpolicy_opts *po, const full_ref *fr, const model_config *c) {
    const head_scores *hs = po->scores;  // HeadKV: the scores the test filled in
    const int64_t L = c->n_layer, H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, n = fr->n, P = st->P;
    const int64_t S = st->S, qps = st->qps, group = H / KV, B = po->budget;
    const int64_t W = po->window < fr->win_n ? po->window : fr->win_n;
    const double scale = 1.0 / sqrt((double)hd);
    double *a = calloc((size_t)(S * n), sizeof(double)), *pooled = malloc((size_t)n * sizeof(double));
    ref_entry *list = malloc((size_t)(S * n) * sizeof(ref_entry));
    int64_t *kb = malloc((size_t)(L * S) * sizeof(int64_t));  // prefix budgets (SnapKV family)
    const int snap = method == KV_METHOD_SNAPKV || method == KV_METHOD_PYRAMIDKV || method == KV_METHOD_ADAKV ||
                     method == KV_METHOD_HEADKV;
    if (snap && B < n) {
        const int64_t b = B - W;
        if (method == KV_METHOD_PYRAMIDKV) {
            int64_t line[64], lib[64];
            rc_err err = {{0}};
            ref_pyramid(L, b, po->pyramid_beta, line);
            CHECK_MSG(budget_pyramid(L, b, po->pyramid_beta, lib, &err) == 0, "%s", err.msg);
            for (int64_t l = 0; l < L; l++) {
                CHECK_MSG(line[l] == lib[l], "PyramidKV layer %lld: budget_pyramid gives %lld, the line %lld", (long long)l,
                          (long long)lib[l], (long long)line[l]);
                for (int64_t s = 0; s < S; s++) kb[l * S + s] = line[l];
            }
        } else if (method == KV_METHOD_HEADKV) {
            double *sc = malloc((size_t)(L * S) * sizeof(double));
            for (int64_t l = 0; l < L; l++)
                for (int64_t s = 0; s < S; s++) {
                    double sum = 0.0;
                    for (int64_t h = s * qps; h < (s + 1) * qps; h++) sum += hs->score[l * H + h];
                    sc[l * S + s] = sum;
                }
            rc_err err = {{0}};
            CHECK_MSG(budget_headkv(sc, L * S, b, po->headkv_beta, kb, &err) == 0, "%s", err.msg);
            free(sc);
        } else {
            for (int64_t i = 0; i < L * S; i++) kb[i] = b;
        }
    }
    for (int64_t l = 0; l < L; l++) {
        uint8_t *kept = st->kept + l * S * P;
        double *score = st->score + l * S * P, *rsc = st->rank_sc + l * S * P;
        // The vote a_s(j): the window's exact probabilities, averaged over the query heads of the store head.
        memset(a, 0, (size_t)(S * n) * sizeof(double));
        for (int64_t w = 0; w < W; w++) {
            const int64_t pw = n - W + w, wi = fr->win_n - W + w;
            for (int64_t h = 0; h < H; h++) {
                const float *q = fr->win_q + ((l * fr->win_n + wi) * H + h) * hd;
                const double lse = fr->win_lse[(l * fr->win_n + wi) * H + h];
                for (int64_t j = 0; j <= pw; j++)
                    a[(h / qps) * n + j] += exp(scale * dot_d(q, ref_key(fr, NULL, c, l, h / group, j), hd) - lse) / (double)qps;
            }
        }
        for (int64_t s = 0; s < S; s++) {
            uint8_t *kp = kept + s * P;
            double *sp = score + s * P, *rp = rsc + s * P;
            const double *as = a + s * n;
            for (int64_t p = 0; p < P; p++) rp[p] = NAN;
            if (B >= n) {  // nothing to compress
                for (int64_t j = 0; j < n; j++) kp[j] = 1, sp[j] = as[j];
                continue;
            }
            if (method == KV_METHOD_STREAMING) {
                for (int64_t j = 0; j < n; j++) kp[j] = j < po->sinks || j >= n - (B - po->sinks);
            } else if (method == KV_METHOD_H2O) {
                const int64_t recent = B / 2, heavy = B - recent, nc = n - recent;
                int64_t m = 0;
                for (int64_t j = 0; j < nc; j++) list[m++] = (ref_entry){as[j], 0, j}, rp[j] = as[j];
                qsort(list, (size_t)m, sizeof(ref_entry), ref_cmp);
                for (int64_t i = 0; i < m && i < heavy; i++) kp[list[i].pos] = 1;
                for (int64_t j = nc; j < n; j++) kp[j] = 1;
                for (int64_t j = 0; j < n; j++) sp[j] = as[j];
            }
        }
        if (snap && B < n) {
            const int64_t half = po->pool_kernel / 2, nc = n - W, b = B - W;
            int64_t total_taken = 0;
            int64_t m_rest = 0;
            ref_entry *rest = malloc((size_t)(S * n + 1) * sizeof(ref_entry));
            for (int64_t s = 0; s < S; s++) {
                uint8_t *kp = kept + s * P;
                double *rp = rsc + s * P;
                for (int64_t j = 0; j < nc; j++) {  // the window ranks at -inf before pooling
                    double mx = -INFINITY;
                    for (int64_t x = j - half; x <= j + half; x++)
                        if (x >= 0 && x < nc) mx = fmax(mx, a[s * n + x]);
                    pooled[j] = mx;
                    rp[j] = mx;
                }
                int64_t m = 0;
                for (int64_t j = 0; j < nc; j++) list[m++] = (ref_entry){pooled[j], s, j};
                qsort(list, (size_t)m, sizeof(ref_entry), ref_cmp);
                int64_t k;
                if (method == KV_METHOD_ADAKV) {
                    const int64_t fl = (int64_t)floor(po->ada_floor * (double)b);
                    k = fl < m ? fl : m;
                    for (int64_t i = k; i < m; i++) rest[m_rest++] = list[i];
                    total_taken += k;
                } else {
                    k = kb[l * S + s] < m ? kb[l * S + s] : m;
                }
                for (int64_t i = 0; i < k; i++) kp[list[i].pos] = 1;
                for (int64_t j = nc; j < n; j++) kp[j] = 1;
            }
            if (method == KV_METHOD_ADAKV) {  // the layer's remaining slots go to the best entries of any head
                qsort(rest, (size_t)m_rest, sizeof(ref_entry), ref_cmp);
                const int64_t left = S * b - total_taken;
                for (int64_t i = 0; i < m_rest && i < left; i++) kept[rest[i].head * P + rest[i].pos] = 1;
            }
            free(rest);
        }
    }
    free(a); free(pooled); free(list); free(kb);
}

// Union over ranks of one head's positions after event ev into `got` (P);
// returns its size, or -1 with a message when two ranks hold one position.
static int64_t union_of(const rank_job *jobs, int N, int ph, int ev, int64_t l, int64_t s, uint8_t *got) {
    const int64_t L = jobs[0].m->cfg.n_layer, P = jobs[0].P;
    memset(got, 0, (size_t)P);
    int64_t size = 0;
    for (int r = 0; r < N; r++) {
        const record *rc = &jobs[r].rec[ph];
        const int64_t o = (ev * L + l) * rc->S + s;
        for (int64_t i = 0; i < rc->cnt[o]; i++) {
            const int64_t p = rc->pos[o * P + i];
            if (p < 0 || p >= P) continue;  // reported by the rank's own checks
            if (got[p]) return -1;
            got[p] = 1;
            size++;
        }
    }
    return size;
}

// Compares one head's union with the reference; on a mismatch prints the
// positions that differ with their reference scores and the boundary.
static int compare_head(const rank_job *jobs, int N, int ph, int ev, int64_t l, int64_t s, const ref_state *st,
                        const char *what) {
    const int64_t P = st->P, S = st->S;
    uint8_t *got = malloc((size_t)P);
    const int64_t size = union_of(jobs, N, ph, ev, l, s, got);
    const uint8_t *kp = st->kept + (l * S + s) * P;
    const double *rp = st->rank_sc + (l * S + s) * P;
    int same = size >= 0;
    for (int64_t p = 0; same && p < P; p++) same = got[p] == kp[p];
    if (!same) {
        // The boundary: the lowest ranked score kept and the highest left out
        // (H2O's eviction: the evicted row is the lowest, so "left out" <= "kept").
        double lo_kept = INFINITY, hi_out = -INFINITY, d_lo = INFINITY, d_hi = -INFINITY;
        for (int64_t p = 0; p < P; p++) {
            if (isnan(rp[p])) continue;
            if (kp[p]) lo_kept = fmin(lo_kept, rp[p]);
            else hi_out = fmax(hi_out, rp[p]);
        }
        char detail[1536];
        int off = 0, all_ranked = 1;
        for (int64_t p = 0; p < P; p++) {
            if (got[p] == kp[p]) continue;
            const double sc = rp[p];
            if (isnan(sc)) all_ranked = 0;
            d_lo = fmin(d_lo, sc), d_hi = fmax(d_hi, sc);
            if (off < (int)sizeof(detail) - 96)
                off += snprintf(detail + off, sizeof(detail) - (size_t)off, " %s %lld (ref score %.10g)",
                                kp[p] ? "missing" : "extra", (long long)p, sc);
        }
        // A tie when the positions that differ score (nearly) the same.
        const int exact = all_ranked && d_lo == d_hi, near = all_ranked && d_hi - d_lo <= NEAR_TIE_REL * fabs(d_hi);
        char when[48];
        if (ev == 0) snprintf(when, sizeof(when), "end of the prompt");
        else snprintf(when, sizeof(when), "after decode step %d", ev);
        CHECK_MSG(0, "%s: %s, layer %lld head %lld: kept set differs from the reference (%s%lld positions)%s; ranked "
                  "scores: lowest kept %.10g, highest left out %.10g;%s",
                  what, when, (long long)l, (long long)s, size < 0 ? "a position held twice, " : "", (long long)size,
                  exact ? " EXACT TIE (equal scores go by position, lowest first; Ada-KV: by head, then position)"
                  : near ? " NEAR-TIE (within 1e-5 relative: float vs double rounding)"
                         : "",
                  lo_kept, hi_out, detail);
    }
    free(got);
    return same;
}

// Replays phase ph of a run with the brute-force reference and compares the
// kept sets (and H2O's scores, and the merged lse) after every event.
static void ref_check(const rank_job *jobs, int N, const full_ref *fr, int ph, int method, const kvpolicy_opts *po,
                      const char *what) {
    const model_config *c = &jobs[0].m->cfg;
    const record *r0 = &jobs[0].rec[ph];
    const int64_t L = c->n_layer, H = c->n_head, hd = c->head_dim, group = H / c->n_head_kv, n = fr->n, P = jobs[0].P;
    const int64_t S = po->per_query_head ? H : c->n_head_kv, qps = H / S, B = po->budget;
    const double scale = 1.0 / sqrt((double)hd);
    CHECK_MSG(r0->S == S, "%s: %lld store heads per layer, want %lld", what, (long long)r0->S, (long long)S);
    if (r0->S != S) return;
    ref_state st = {.L = L, .S = S, .P = P, .qps = qps};
    st.kept = calloc((size_t)(L * S * P), 1);
    st.score = calloc((size_t)(L * S * P), sizeof(double));
    st.rank_sc = malloc((size_t)(L * S * P) * sizeof(double));
    double *lse_ref = malloc((size_t)H * sizeof(double));
    ref_prompt(&st, method, po, fr, c);
    int64_t prompt_rows = 0, evictions = 0, n_compared = 0;
    for (int64_t i = 0; i < L * S * P; i++) prompt_rows += st.kept[i];
    int64_t *prompt_kept = calloc((size_t)(L * S), sizeof(int64_t));
    for (int64_t i = 0; i < L * S; i++)
        for (int64_t p = 0; p < P; p++) prompt_kept[i] += st.kept[i * P + p];
    int reported = 0;
    int64_t n_cuts = 0;
    double ref_gap0[64], ref_score0[64];  // the compression's cuts, per layer (L <= 64)
    for (int64_t l = 0; l < 64; l++) ref_gap0[l] = INFINITY, ref_score0[l] = 0.0;
    double worst_lse = 0.0, worst_score = 0.0;
    char worst_lse_at[160] = "", worst_score_at[160] = "";
    for (int ev = 0; ev <= N_DECODE && reported < 4; ev++) {
        if (ev > 0) {
            const int64_t t = ev - 1, pos = n + t, n_total = pos + 1;
            for (int64_t l = 0; l < L; l++) {
                CHECK_MSG(r0->hcalls[t * L + l] == 1 && r0->hpos[t * L + l] == pos,
                          "%s: step %d layer %lld: hook called %d times (position %lld)", what, ev, (long long)l,
                          r0->hcalls[t * L + l], (long long)r0->hpos[t * L + l]);
                const float *q = r0->hq + (t * L + l) * H * hd;
                for (int64_t s = 0; s < S; s++) {
                    uint8_t *kp = st.kept + (l * S + s) * P;
                    double *sp = st.score + (l * S + s) * P, *rp = st.rank_sc + (l * S + s) * P;
                    const int64_t kvh = s * qps / group;
                    kp[pos] = 1;  // the new token joins with score 0
                    sp[pos] = 0.0;
                    int64_t count = 0;
                    for (int64_t p = 0; p < n_total; p++) count += kp[p];
                    for (int64_t p = 0; p < P; p++) rp[p] = NAN;
                    // The lse over the kept rows (new token included) must be the hook's merged lse.
                    for (int64_t h = s * qps; h < (s + 1) * qps; h++) {
                        double mx = -INFINITY, sum = 0.0;
                        for (int64_t p = 0; p < n_total; p++)
                            if (kp[p]) mx = fmax(mx, scale * dot_d(q + h * hd, ref_key(fr, r0, c, l, kvh, p), hd));
                        for (int64_t p = 0; p < n_total; p++)
                            if (kp[p]) sum += exp(scale * dot_d(q + h * hd, ref_key(fr, r0, c, l, kvh, p), hd) - mx);
                        lse_ref[h] = mx + log(sum);
                        const double d = fabs((double)r0->hlse[(t * L + l) * H + h] - lse_ref[h]) / fmax(1.0, fabs(lse_ref[h]));
                        if (d > worst_lse || isnan(d)) {
                            worst_lse = isnan(d) ? INFINITY : d;
                            snprintf(worst_lse_at, sizeof(worst_lse_at), "step %d layer %lld query head %lld: hook %.9g, reference %.9g",
                                     ev, (long long)l, (long long)h, r0->hlse[(t * L + l) * H + h], lse_ref[h]);
                        }
                    }
                    if (method == KV_METHOD_H2O) {
                        for (int64_t p = 0; p < n_total; p++) {
                            if (!kp[p]) continue;
                            double add = 0.0;
                            for (int64_t h = s * qps; h < (s + 1) * qps; h++)
                                add += exp(scale * dot_d(q + h * hd, ref_key(fr, r0, c, l, kvh, p), hd) - lse_ref[h]);
                            sp[p] += add / (double)qps;
                        }
                        if (count > B) {  // evict the lowest score outside the recent half (ties: lowest position)
                            const int64_t limit = n_total - B / 2;
                            int64_t worst = -1;
                            for (int64_t p = 0; p < limit; p++) {
                                if (!kp[p]) continue;
                                rp[p] = sp[p];
                                if (worst < 0 || sp[p] < sp[worst]) worst = p;
                            }
                            if (worst >= 0) {
                                kp[worst] = 0;
                                evictions++;
                            }
                        }
                    } else if (method == KV_METHOD_STREAMING && count > B) {
                        const int64_t gone = n_total - 1 - (B - po->sinks);
                        CHECK_MSG(gone >= 0 && kp[gone], "%s: reference streaming evicts position %lld it does not hold", what,
                                  (long long)gone);
                        if (gone >= 0) kp[gone] = 0;
                        evictions++;
                    }
                }
            }
        }
        if (!r0->have[ev]) {
            CHECK_MSG(ph == 1 && ev == 0, "%s: event %d: no built store", what, ev);
            continue;
        }
        // The narrowest ranked cut per layer (kvpolicy_state.cut_gap): the
        // reference's lowest ranked score kept minus its highest left out,
        // over the heads; the first decode step also reports the
        // compression's cuts. Ada-KV's shared pool cuts across heads and is
        // left to the trace's own use (selection_ties).
        if (method != KV_METHOD_ADAKV && reported == 0 && ph == 0 && L <= 64) {
            const int first_step = ev == 1;
            for (int64_t l = 0; l < L; l++) {
                double want = INFINITY, want_score = 0.0;
                for (int64_t s = 0; s < S; s++) {
                    const uint8_t *kp = st.kept + (l * S + s) * P;
                    const double *rp = st.rank_sc + (l * S + s) * P;
                    double lo_kept = INFINITY, hi_out = -INFINITY;
                    for (int64_t p = 0; p < P; p++) {
                        if (isnan(rp[p])) continue;
                        if (kp[p]) lo_kept = fmin(lo_kept, rp[p]);
                        else hi_out = fmax(hi_out, rp[p]);
                    }
                    if (isfinite(lo_kept) && isfinite(hi_out) && lo_kept - hi_out < want)
                        want = lo_kept - hi_out, want_score = lo_kept;
                }
                if (first_step && ref_gap0[l] < want) want = ref_gap0[l], want_score = ref_score0[l];
                if (ev == 0) ref_gap0[l] = want, ref_score0[l] = want_score;
                const double got = r0->cut_gap[ev * L + l];
                const int ok = isinf(want) ? r0->cut_pos[ev * L + l] < 0
                                           : r0->cut_pos[ev * L + l] >= 0 && fabs(got - want) <= 1e-6 + 1e-4 * fabs(want_score);
                CHECK_MSG(ok, "%s: event %d layer %lld: the policy's narrowest cut has gap %.9g (position %lld), the "
                          "reference %.9g (score %.9g)", what, ev, (long long)l, got, (long long)r0->cut_pos[ev * L + l],
                          want, want_score);
                n_cuts += !isinf(want);
                for (int r = 1; r < N; r++)
                    CHECK_MSG(memcmp(&jobs[r].rec[ph].cut_gap[ev * L + l], &r0->cut_gap[ev * L + l], sizeof(float)) == 0 &&
                              jobs[r].rec[ph].cut_pos[ev * L + l] == r0->cut_pos[ev * L + l],
                              "%s: event %d layer %lld: rank %d's cut differs from rank 0's", what, ev, (long long)l, r);
            }
        }
        for (int64_t l = 0; l < L && reported < 4; l++)
            for (int64_t s = 0; s < S; s++) {
                n_compared++;
                if (!compare_head(jobs, N, ph, ev, l, s, &st, what)) {
                    if (++reported >= 4) break;
                    continue;
                }
                const uint8_t *kp = st.kept + (l * S + s) * P;
                int64_t size = 0;
                for (int64_t p = 0; p < P; p++) size += kp[p];
                for (int r = 0; r < N; r++) {
                    const record *rc = &jobs[r].rec[ph];
                    const int64_t o = (ev * L + l) * S + s;
                    CHECK_MSG(rc->held[o] == size, "%s event %d layer %lld head %lld rank %d: held %lld, the ranks hold %lld", what,
                              ev, (long long)l, (long long)s, r, (long long)rc->held[o], (long long)size);
                    CHECK_MSG(rc->budget[l * S + s] == prompt_kept[l * S + s],
                              "%s layer %lld head %lld rank %d: budget %lld, the prompt kept %lld", what, (long long)l,
                              (long long)s, r, (long long)rc->budget[l * S + s], (long long)prompt_kept[l * S + s]);
                    if (method != KV_METHOD_H2O) continue;
                    for (int64_t i = 0; i < rc->cnt[o]; i++) {  // H2O: each row's accumulated attention
                        const int64_t p = rc->pos[o * P + i];
                        const double want = st.score[(l * S + s) * P + p], gotv = rc->score[o * P + i];
                        const double d = fabs(gotv - want) / (1e-6 + 1e-4 * fabs(want));
                        if (d > worst_score || isnan(d)) {
                            worst_score = isnan(d) ? INFINITY : d;
                            snprintf(worst_score_at, sizeof(worst_score_at),
                                     "event %d layer %lld head %lld position %lld: stored %.10g, reference %.10g", ev,
                                     (long long)l, (long long)s, (long long)p, gotv, want);
                        }
                    }
                }
            }
    }
    CHECK_MSG(worst_lse <= 2e-5, "%s: merged lse differs from the lse over the reference's kept rows by %.3g (%s)", what,
              worst_lse, worst_lse_at);
    CHECK_MSG(worst_score <= 1.0, "%s: H2O score off by %.3g x tolerance (%s)", what, worst_score, worst_score_at);
    if (reported == 0 && r0->have[N_DECODE]) {
        int64_t ev_sum = 0;
        for (int r = 0; r < N; r++) {
            ev_sum += jobs[r].rec[ph].rows_evicted;
            CHECK_MSG(jobs[r].rec[ph].rows_kept_prompt == prompt_rows, "%s rank %d: rows_kept_prompt %lld, the prompt kept %lld",
                      what, r, (long long)jobs[r].rec[ph].rows_kept_prompt, (long long)prompt_rows);
        }
        CHECK_MSG(ev_sum == evictions, "%s: ranks evicted %lld rows, the reference %lld", what, (long long)ev_sum,
                  (long long)evictions);
    }
    CHECK(n_compared > 0);
    if (n_cuts) printf("  %s: %lld ranked cuts match the reference's gaps\n", what, (long long)n_cuts);
    free(st.kept); free(st.score); free(st.rank_sc); free(lse_ref); free(prompt_kept);
}

// ---- checks of one run and between runs -------------------------------------------

// Per-rank checks, bitwise agreement of the ranks, memory accounting, and the
// reference for each phase run under a policy.
static void check_run(const rank_job *jobs, int N, const char *what) {
    const run_cfg *cfg = jobs[0].cfg;
    const model_config *c = &jobs[0].m->cfg;
    const int64_t L = c->n_layer, H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, V = c->n_vocab;
    full_ref fr = {0};
    if (!cfg->kv_f16) full_ref_from_jobs(jobs, N, &fr);
    for (int ph = 0; ph < (cfg->do_switch ? 2 : 1); ph++) {
        const int kind = ph ? cfg->switch_to : cfg->attention;
        const int policy = attention_kind_is_policy(kind);
        const record *z = &jobs[0].rec[ph];
        for (int r = 0; r < N; r++) {
            const record *rc = &jobs[r].rec[ph];
            CHECK_MSG(rc->rows_bad + rc->own_bad + rc->order_bad + rc->hook_bad == 0,
                      "%s phase %d rank %d: %lld bad rows, %lld positions not owned, %lld out of order, %lld bad hook calls; first: %s",
                      what, ph, r, (long long)rc->rows_bad, (long long)rc->own_bad, (long long)rc->order_bad,
                      (long long)rc->hook_bad, rc->bad_msg);
            if (ph == 0)
                CHECK_MSG(jobs[r].win_same, "%s rank %d: the prompt window differs from the full prefill's", what, r);
            // Every rank ends every step with the same bits.
            CHECK_MSG(memcmp(rc->logits, z->logits, (size_t)(N_EVENTS * V) * sizeof(float)) == 0,
                      "%s phase %d rank %d: logits differ from rank 0's", what, ph, r);
            CHECK_MSG(memcmp(rc->generated, z->generated, N_DECODE * sizeof(int32_t)) == 0, "%s phase %d rank %d: tokens", what, ph, r);
            if (policy) {
                CHECK_MSG(memcmp(rc->hq, z->hq, (size_t)(N_DECODE * L * H * hd) * sizeof(float)) == 0 &&
                              memcmp(rc->hk, z->hk, (size_t)(N_DECODE * L * KV * hd) * sizeof(float)) == 0 &&
                              memcmp(rc->hlse, z->hlse, (size_t)(N_DECODE * L * H) * sizeof(float)) == 0 &&
                              memcmp(rc->hcalls, z->hcalls, (size_t)(N_DECODE * L) * sizeof(int)) == 0,
                          "%s phase %d rank %d: hook arguments differ from rank 0's", what, ph, r);
                CHECK_MSG(rc->S == z->S && memcmp(rc->held, z->held, (size_t)(N_EVENTS * L * z->S) * sizeof(int64_t)) == 0,
                          "%s phase %d rank %d: held counts differ from rank 0's", what, ph, r);
            } else {
                for (int64_t i = 0; i < N_DECODE * L; i++)
                    CHECK_MSG(rc->hcalls[i] == 0, "%s phase %d: policy hook called under %s", what, ph, attention_kind_name(kind));
            }
            // Memory: the policy's rows only, and (unless retained) no full cache.
            for (int ev = 0; ev <= N_DECODE; ev++) {
                if (!rc->have[ev]) continue;
                CHECK_MSG(rc->bytes_used[ev] == rc->bytes_want[ev] && rc->rows_sum[ev] == rc->rows_store[ev],
                          "%s phase %d rank %d event %d: engine_kv_bytes_used %zu, %lld rows x 2 x row bytes = %zu (kv_store_rows %lld)",
                          what, ph, r, ev, rc->bytes_used[ev], (long long)rc->rows_sum[ev], rc->bytes_want[ev],
                          (long long)rc->rows_store[ev]);
                CHECK_MSG(rc->kv_null[ev] == !cfg->retain, "%s phase %d rank %d event %d: full cache %s", what, ph, r, ev,
                          rc->kv_null[ev] ? "freed although retained" : "still allocated after the compression");
            }
        }
        if (policy && !cfg->kv_f16) ref_check(jobs, N, &fr, ph, kind - ATTENTION_STREAMING, ph ? &cfg->switch_po : &cfg->po, what);
    }
    full_ref_free(&fr);
}

// Run `a` keeps the same sets as run `b` after every event of phase pa / pb,
// picks the same tokens, and its logits are within tol (0: bitwise) of b's.
static void compare_runs(const rank_job *a, int pa, const rank_job *b, int pb, double tol, const char *what) {
    const model_config *c = &a->m->cfg;
    const int64_t L = c->n_layer, V = c->n_vocab, P = a->P;
    const record *x = &a->rec[pa], *y = &b->rec[pb];
    CHECK_MSG(memcmp(x->generated, y->generated, N_DECODE * sizeof(int32_t)) == 0, "%s: generated tokens differ", what);
    double worst = 0.0;
    int worst_ev = -1;
    for (int ev = (pa || pb) ? 1 : 0; ev <= N_DECODE; ev++) {
        const double d = tol > 0 ? max_rel_diff(x->logits + (int64_t)ev * V, y->logits + (int64_t)ev * V, V)
                                 : (memcmp(x->logits + (int64_t)ev * V, y->logits + (int64_t)ev * V, (size_t)V * sizeof(float)) ? 1.0 : 0.0);
        if (d > worst) worst = d, worst_ev = ev;
    }
    CHECK_MSG(tol > 0 ? worst <= tol : worst == 0.0, "%s: logits differ at event %d (rel %.3g, tolerance %.1g%s)", what,
              worst_ev, worst, tol, tol > 0 ? "" : ": bitwise");
    if (x->S == 0 || y->S == 0) return;  // full attention on one side: no sets to compare
    if (x->S != y->S) {
        CHECK_MSG(x->S == y->S, "%s: %lld vs %lld store heads", what, (long long)x->S, (long long)y->S);
        return;
    }
    uint8_t *gx = malloc((size_t)P), *gy = malloc((size_t)P);
    int reported = 0;
    for (int ev = (pa || pb) ? 1 : 0; ev <= N_DECODE && reported < 3; ev++) {
        if (x->have[ev] != y->have[ev]) {
            CHECK_MSG(0, "%s event %d: store built in one run only", what, ev);
            continue;
        }
        if (!x->have[ev]) continue;
        for (int64_t l = 0; l < L; l++)
            for (int64_t s = 0; s < x->S; s++) {
                const int64_t ux = union_of(a, a->n_ranks, pa, ev, l, s, gx), uy = union_of(b, b->n_ranks, pb, ev, l, s, gy);
                if (ux == uy && memcmp(gx, gy, (size_t)P) == 0) continue;
                char d[512];
                int off = 0;
                for (int64_t p = 0; p < P && off < (int)sizeof(d) - 40; p++)
                    if (gx[p] != gy[p]) off += snprintf(d + off, sizeof(d) - (size_t)off, " %lld(%s)", (long long)p, gx[p] ? "extra" : "missing");
                CHECK_MSG(0, "%s event %d layer %lld head %lld: kept sets differ:%s", what, ev, (long long)l, (long long)s, d);
                if (++reported >= 3) goto out;
            }
    }
out:
    free(gx);
    free(gy);
}

// ---- error paths -------------------------------------------------------------------

static kvpolicy_opts popts(int64_t budget, int64_t pool, int per_query_head, const head_scores *hs) {
    kvpolicy_opts o = kvpolicy_default_opts();
    o.budget = budget;
    o.window = 8;
    o.sinks = 4;
    o.pool_kernel = pool;
    o.per_query_head = per_query_head;
    o.scores = hs;
    return o;
}

static void test_validate(const head_scores *hs, int64_t n_layer, int64_t n_head) {
    const kvpolicy_opts d = popts(64, 7, 0, hs);
    head_scores wrong_layers = *hs, wrong_heads = *hs;
    wrong_layers.n_layer = n_layer + 1;
    wrong_heads.n_head = n_head - 1;
    struct {
        const char *what;
        int method;
        const char *flag;  // "" = accepted
        kvpolicy_opts o;
    } cases[] = {
        {"snapkv, budget 7 < window 8", KV_METHOD_SNAPKV, "--kv-budget", d},
        {"snapkv, budget 7 < window 8 (names the window flag)", KV_METHOD_SNAPKV, "--kv-window", d},
        {"pyramidkv, budget 7 < window 8", KV_METHOD_PYRAMIDKV, "--kv-budget", d},
        {"adakv, budget 7 < window 8", KV_METHOD_ADAKV, "--kv-budget", d},
        {"headkv, budget 7 < window 8", KV_METHOD_HEADKV, "--kv-budget", d},
        {"snapkv, budget 8 = window", KV_METHOD_SNAPKV, "", d},
        {"streaming, budget 4 = sinks", KV_METHOD_STREAMING, "--kv-sinks", d},
        {"streaming, budget 3 < sinks", KV_METHOD_STREAMING, "--kv-budget", d},
        {"streaming, budget 5 = sinks + 1", KV_METHOD_STREAMING, "", d},
        {"headkv without scores", KV_METHOD_HEADKV, "--head-scores", d},
        {"headkv, scores for another layer count", KV_METHOD_HEADKV, "--head-scores", d},
        {"headkv, scores for another head count", KV_METHOD_HEADKV, "--head-scores", d},
        {"snapkv, pool 4", KV_METHOD_SNAPKV, "--kv-pool", d},
        {"snapkv, pool 0", KV_METHOD_SNAPKV, "--kv-pool", d},
        {"snapkv, pool 1", KV_METHOD_SNAPKV, "", d},
        {"snapkv, window 0", KV_METHOD_SNAPKV, "--kv-window", d},
        {"h2o, window 0", KV_METHOD_H2O, "--kv-window", d},
        {"snapkv, window 33", KV_METHOD_SNAPKV, "--kv-window", d},
        {"snapkv, window 32", KV_METHOD_SNAPKV, "", d},
        {"h2o, budget 0", KV_METHOD_H2O, "--kv-budget", d},
        {"h2o, budget 1", KV_METHOD_H2O, "--kv-budget", d},
        {"h2o, budget 2", KV_METHOD_H2O, "", d},
        {"streaming, sinks -1", KV_METHOD_STREAMING, "--kv-sinks", d},
        {"headkv, beta 1", KV_METHOD_HEADKV, "--headkv-beta", d},
        {"pyramidkv, beta 0.5", KV_METHOD_PYRAMIDKV, "--pyramid-beta", d},
        {"adakv, floor 1.5", KV_METHOD_ADAKV, "--ada-floor", d},
        {"adakv, floor NaN", KV_METHOD_ADAKV, "--ada-floor", d},
        {"unknown method 6", KV_METHOD_COUNT, "method", d},
    };
    cases[0].o.budget = cases[1].o.budget = cases[2].o.budget = cases[3].o.budget = cases[4].o.budget = 7;
    cases[5].o.budget = 8;
    cases[6].o.budget = 4;
    cases[7].o.budget = 3;
    cases[8].o.budget = 5;
    cases[9].o.scores = NULL;
    cases[10].o.scores = &wrong_layers;
    cases[11].o.scores = &wrong_heads;
    cases[12].o.pool_kernel = 4;
    cases[13].o.pool_kernel = 0;
    cases[14].o.pool_kernel = 1;
    cases[15].o.window = 0;
    cases[16].o.window = 0;
    cases[17].o.window = KVPOLICY_WINDOW_MAX + 1;
    cases[18].o.window = KVPOLICY_WINDOW_MAX;
    cases[19].o.budget = 0;
    cases[20].o.budget = 1;
    cases[21].o.budget = 2;
    cases[22].o.sinks = -1;
    cases[23].o.headkv_beta = 1.0;
    cases[24].o.pyramid_beta = 0.5;
    cases[25].o.ada_floor = 1.5;
    cases[26].o.ada_floor = NAN;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rc_err err = {{0}};
        const int rc = kvpolicy_opts_validate(cases[i].method, &cases[i].o, n_layer, n_head, &err);
        if (!cases[i].flag[0]) {
            CHECK_MSG(rc == 0, "validate: %s: refused (%s)", cases[i].what, err.msg);
        } else {
            CHECK_MSG(rc != 0, "validate: %s: accepted", cases[i].what);
            CHECK_MSG(strstr(err.msg, cases[i].flag) != NULL, "validate: %s: message '%s' does not name %s", cases[i].what,
                      err.msg, cases[i].flag);
        }
    }
    // Names round-trip, in the order of enum kv_method and enum attention_kind.
    for (int mth = 0; mth < KV_METHOD_COUNT; mth++) {
        CHECK(kv_method_from_name(kv_method_name(mth)) == mth);
        CHECK(attention_kind_from_name(kv_method_name(mth)) == ATTENTION_STREAMING + mth);
        CHECK(attention_kind_is_policy(ATTENTION_STREAMING + mth));
    }
    CHECK(kv_method_from_name("full") == -1 && !attention_kind_is_policy(ATTENTION_FULL) &&
          !attention_kind_is_policy(ATTENTION_RECYCLED));
}

static void test_engine_errors(const model *m, const int32_t *prompt, const head_scores *hs) {
    const int64_t n = 40;
    engine_opts o = engine_default_opts();
    o.n_ctx = n + 8;
    o.n_threads = 1;
    o.kv_elem = KV_F32;
    o.prefill_block = 16;
    const kvpolicy_opts po = popts(24, 7, 0, hs);
    engine *e = NULL;
    rc_err err = {{0}};
    int rc;

    // Full attention, one step past the prompt: a policy needs the prompt end.
    CHECK_MSG(!(e = engine_create(m, &o, &err)) == 0, "%s", err.msg);
    CHECK_MSG(engine_prefill(e, prompt, n, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(engine_decode(e, 7, &err) == 0, "%s", err.msg);
    err.msg[0] = 0;
    rc = engine_set_attention(e, ATTENTION_SNAPKV, &o.recycle, &po, &err);
    CHECK_MSG(rc != 0 && strstr(err.msg, "snapkv") && strstr(err.msg, "truncate"),
              "switching to snapkv one step after the prompt: rc %d, '%s'", rc, err.msg);
    CHECK_MSG(e->opts.attention == ATTENTION_FULL && !e->policy, "a refused switch changed the engine");
    CHECK_MSG(engine_decode(e, 8, &err) == 0, "full attention after a refused switch: %s", err.msg);
    // Back to the prompt, the switch works and the next step compresses (and frees the full cache).
    CHECK_MSG(engine_truncate(e, n, &err) == 0, "%s", err.msg);
    CHECK_MSG(engine_set_attention(e, ATTENTION_SNAPKV, &o.recycle, &po, &err) == 0, "%s", err.msg);
    CHECK_MSG(engine_decode(e, 7, &err) == 0, "%s", err.msg);
    CHECK(e->policy && e->policy->built && e->kv.k == NULL);
    // Released: neither truncating to the prompt nor switching can work any more.
    err.msg[0] = 0;
    rc = engine_truncate(e, n, &err);
    CHECK_MSG(rc != 0 && strstr(err.msg, "released"), "truncate after the full cache was freed: rc %d, '%s'", rc, err.msg);
    err.msg[0] = 0;
    rc = engine_set_attention(e, ATTENTION_FULL, &o.recycle, &po, &err);
    CHECK_MSG(rc != 0 && strstr(err.msg, "released"), "switch after the full cache was freed: rc %d, '%s'", rc, err.msg);
    CHECK_MSG(engine_decode(e, 8, &err) == 0, "snapkv after refused calls: %s", err.msg);
    engine_destroy(e);

    // A policy with the prompt retained: only the prompt end is a valid truncation.
    o.attention = ATTENTION_H2O;
    o.policy = po;
    o.retain_prompt_cache = 1;
    CHECK_MSG(!(e = engine_create(m, &o, &err)) == 0, "%s", err.msg);
    CHECK_MSG(engine_prefill(e, prompt, n, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    for (int t = 0; t < 3; t++) CHECK_MSG(engine_decode(e, 9 + t, &err) == 0, "%s", err.msg);
    const int64_t bad_n[] = {n + 1, n - 1, n + 3, 0};
    for (int i = 0; i < 4; i++) {
        err.msg[0] = 0;
        rc = engine_truncate(e, bad_n[i], &err);
        CHECK_MSG(rc != 0 && strstr(err.msg, "h2o") && strstr(err.msg, "40"), "truncate to %lld under h2o: rc %d, '%s'",
                  (long long)bad_n[i], rc, err.msg);
    }
    CHECK_MSG(e->n_past == n + 3, "a refused truncation changed n_past to %lld", (long long)e->n_past);
    err.msg[0] = 0;
    rc = engine_set_attention(e, ATTENTION_ADAKV, &o.recycle, &po, &err);
    CHECK_MSG(rc != 0 && strstr(err.msg, "adakv"), "switching to adakv 3 steps after the prompt: rc %d, '%s'", rc, err.msg);
    CHECK_MSG(engine_truncate(e, n, &err) == 0, "%s", err.msg);
    CHECK_MSG(engine_set_attention(e, ATTENTION_ADAKV, &o.recycle, &po, &err) == 0, "%s", err.msg);
    CHECK_MSG(engine_decode(e, 9, &err) == 0, "%s", err.msg);
    CHECK(e->policy && e->policy->built && e->kv.k != NULL);
    engine_destroy(e);

    // engine_init refuses what kvpolicy_opts_validate refuses.
    o.attention = ATTENTION_HEADKV;
    o.policy.scores = NULL;
    err.msg[0] = 0;
    rc = !(e = engine_create(m, &o, &err));
    CHECK_MSG(rc != 0 && strstr(err.msg, "--head-scores"), "engine_init with headkv and no scores: rc %d, '%s'", rc, err.msg);
    if (rc == 0) engine_destroy(e);
}

// ---- crafted ties, straight on the policy (one rank, no model) -------------------

// Prefix keys drawn from a handful of rows give exact ties everywhere (the
// vote of identical keys is bitwise identical), so every cut falls inside a
// group of equal scores and the order (score desc, position asc; Ada-KV: then
// head) decides; "twin heads" makes the store heads' scores identical too.
// One layer's second KV head has 3x sharper keys, so heads differ in how much
// Ada-KV's floor matters. Compression and decode run through kvpolicy_* on
// a hand-built shard; the same reference checks every event.
#define D_L 2
#define D_H 4
#define D_KV 2
#define D_HD 8
#define D_N 40
#define D_WIN 6  // window rows handed over; the policy votes with the last `window` of them
#define D_ROWS 5

static float d_rand(uint64_t *st) {
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*st >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static void direct_case(const char *label, int method, kvpolicy_opts po, int twin) {
    model fm;
    memset(&fm, 0, sizeof(fm));
    fm.cfg.n_layer = D_L, fm.cfg.n_head = D_H, fm.cfg.n_head_kv = D_KV, fm.cfg.head_dim = D_HD, fm.cfg.n_vocab = 1;
    const int64_t n = D_N, P = n + N_DECODE, L = D_L, H = D_H, KV = D_KV, hd = D_HD, group = H / KV;
    const double scale = 1.0 / sqrt((double)hd);
    run_cfg cfg = {.label = label, .attention = ATTENTION_STREAMING + method, .po = po, .n_prompt = n};
    rank_job j = {.m = &fm, .cfg = &cfg, .P = P, .n_ranks = 1};
    record_alloc(&j.rec[0], &fm.cfg, P);
    record *r = &j.rec[0];
    uint64_t st = 4242;
    float base[D_ROWS][D_HD];
    for (int i = 0; i < D_ROWS; i++)
        for (int d = 0; d < D_HD; d++) base[i][d] = 1.5f * d_rand(&st);
    full_ref fr = {.n = n, .win_n = D_WIN};
    fr.k = malloc((size_t)(L * KV * n * hd) * sizeof(float));
    fr.v = malloc((size_t)(L * KV * n * hd) * sizeof(float));
    fr.win_q = malloc((size_t)(L * D_WIN * H * hd) * sizeof(float));
    fr.win_lse = malloc((size_t)(L * D_WIN * H) * sizeof(float));
    for (int64_t l = 0; l < L; l++)
        for (int64_t h = 0; h < KV; h++)
            for (int64_t p = 0; p < n; p++) {
                float *kr = fr.k + ((l * KV + h) * n + p) * hd, *vr = fr.v + ((l * KV + h) * n + p) * hd;
                const int64_t src = twin ? 0 : h;
                const float sharp = (!twin && l == 1 && h == 1) ? 3.0f : 1.0f;
                for (int64_t d = 0; d < hd; d++) {
                    kr[d] = sharp * base[(p * 3 + l + 2 * src) % D_ROWS][d];
                    vr[d] = d_rand(&st);
                }
                if (twin && h == 1) memcpy(vr, fr.v + ((l * KV + 0) * n + p) * hd, (size_t)hd * sizeof(float));
            }
    for (int64_t l = 0; l < L; l++)
        for (int64_t w = 0; w < D_WIN; w++) {
            const int64_t pw = n - D_WIN + w;
            for (int64_t h = 0; h < H; h++) {
                float *q = fr.win_q + ((l * D_WIN + w) * H + h) * hd;
                for (int64_t d = 0; d < hd; d++) q[d] = d_rand(&st);
                if (twin && h >= group) memcpy(q, q - group * hd, (size_t)hd * sizeof(float));
                double mx = -INFINITY, sum = 0.0;
                for (int64_t p = 0; p <= pw; p++) mx = fmax(mx, scale * dot_d(q, fr.k + ((l * KV + h / group) * n + p) * hd, hd));
                for (int64_t p = 0; p <= pw; p++) sum += exp(scale * dot_d(q, fr.k + ((l * KV + h / group) * n + p) * hd, hd) - mx);
                fr.win_lse[(l * D_WIN + w) * H + h] = (float)(mx + log(sum));
            }
        }
    rc_err err = {{0}};
    kv_cache kv;
    CHECK_MSG(kv_cache_init(&kv, &g_cpu, L, KV, hd, n, KV_F32, &err) == 0, "%s", err.msg);
    int64_t slot_pos[D_N];
    for (int64_t l = 0; l < L; l++)
        for (int64_t h = 0; h < KV; h++)
            for (int64_t p = 0; p < n; p++) {
                memcpy((float *)kv.k + kv_cache_row_index(&kv, l, h, p) * hd, fr.k + ((l * KV + h) * n + p) * hd,
                       (size_t)hd * sizeof(float));
                memcpy((float *)kv.v + kv_cache_row_index(&kv, l, h, p) * hd, fr.v + ((l * KV + h) * n + p) * hd,
                       (size_t)hd * sizeof(float));
            }
    for (int64_t p = 0; p < n; p++) slot_pos[p] = p;
    shard_plan plan = {.n_ranks = 1, .zigzag = 0, .n_prompt = n};
    shard_ctx sh = {.kv = &kv, .slot_pos = slot_pos, .n_local = n, .plan = &plan, .n_total = n};
    j.n_shard = n;  // the rows check reads the shard in the reference's layout
    j.shard_pos = malloc((size_t)n * sizeof(int64_t));
    memcpy(j.shard_pos, slot_pos, (size_t)n * sizeof(int64_t));
    j.shard_k = malloc((size_t)(L * KV * n * hd) * sizeof(float));
    j.shard_v = malloc((size_t)(L * KV * n * hd) * sizeof(float));
    memcpy(j.shard_k, fr.k, (size_t)(L * KV * n * hd) * sizeof(float));
    memcpy(j.shard_v, fr.v, (size_t)(L * KV * n * hd) * sizeof(float));
    comm *cm = comm_null_create();
    kvpolicy_state ps;
    prompt_window win = {.n = D_WIN, .q = fr.win_q, .lse = fr.win_lse, .stride = D_WIN};
    int ok = kvpolicy_init(&ps, &g_cpu, method, &po, L, H, KV, hd, KV_F32, 1, &err) == 0;
    CHECK_MSG(ok, "%s: init: %s", label, err.msg);
    if (ok) {
        ok = kvpolicy_compress(&ps, &win, &sh, cm, &err) == 0;
        CHECK_MSG(ok, "%s: compress: %s", label, err.msg);
    }
    if (ok) record_store(&j, &ps, &plan, 0, 0);
    float q[D_H * D_HD], k[D_KV * D_HD], v[D_KV * D_HD], o[D_H * D_HD], lse[D_H];
    for (int t = 0; ok && t < N_DECODE; t++) {
        const int64_t pos = n + t;
        kvpolicy_begin_step(&ps);  // as engine_decode does
        for (int64_t l = 0; ok && l < L; l++) {
            for (int64_t i = 0; i < H * hd; i++) q[i] = d_rand(&st);
            for (int64_t h = 0; h < KV; h++)
                for (int64_t d = 0; d < hd; d++) k[h * hd + d] = base[(t + l + h) % D_ROWS][d], v[h * hd + d] = d_rand(&st);
            if (twin) {
                memcpy(q + group * hd, q, (size_t)(group * hd) * sizeof(float));
                memcpy(k + hd, k, (size_t)hd * sizeof(float));
                memcpy(v + hd, v, (size_t)hd * sizeof(float));
            }
            int64_t rows = 0;
            ok = kvpolicy_attend(&ps, l, q, k, v, pos, 1, o, lse, &rows, &err) == 0;
            memcpy(r->hq + (t * L + l) * H * hd, q, sizeof(q));
            memcpy(r->hk + (t * L + l) * KV * hd, k, sizeof(k));
            memcpy(r->hlse + (t * L + l) * H, lse, sizeof(lse));
            r->hcalls[t * L + l]++;
            r->hpos[t * L + l] = pos;
            if (ok) ok = kvpolicy_after_step(&ps, l, lse, pos + 1, cm, &err) == 0;
            CHECK_MSG(ok, "%s: step %d layer %lld: %s", label, t + 1, (long long)l, err.msg);
        }
        if (ok) record_store(&j, &ps, &plan, 0, t + 1);
    }
    if (ok) {
        CHECK_MSG(r->rows_bad + r->own_bad + r->order_bad == 0, "%s: %s", label, r->bad_msg);
        ref_check(&j, 1, &fr, 0, method, &po, label);
    }
    kvpolicy_free(&ps);
    comm_destroy(cm);
    kv_cache_free(&kv);
    full_ref_free(&fr);
    free_jobs(&j, 1);
}

static void test_direct_ties(void) {
    head_scores dhs = {.n_layer = D_L, .n_head = D_H};
    double sc[D_L * D_H] = {1.0, 0.0, 3.0, 2.0, 0.5, 4.0, 1.0, 1.0};
    dhs.score = sc;
    for (int twin = 0; twin < 2; twin++) {
        struct {
            const char *what;
            int method;
            kvpolicy_opts o;
        } cases[] = {
            {"h2o B 12", KV_METHOD_H2O, popts(12, 1, 0, NULL)},
            {"h2o B 13 per query head", KV_METHOD_H2O, popts(13, 1, 1, NULL)},
            {"snapkv B 12 pool 1", KV_METHOD_SNAPKV, popts(12, 1, 0, NULL)},
            {"snapkv B 12 pool 3", KV_METHOD_SNAPKV, popts(12, 3, 0, NULL)},
            {"snapkv B 11 pool 5 per query head", KV_METHOD_SNAPKV, popts(11, 5, 1, NULL)},
            {"pyramidkv B 12 pool 3", KV_METHOD_PYRAMIDKV, popts(12, 3, 0, NULL)},
            {"pyramidkv B 14 pool 1 beta 2", KV_METHOD_PYRAMIDKV, popts(14, 1, 0, NULL)},
            {"adakv B 12 pool 1 floor 0", KV_METHOD_ADAKV, popts(12, 1, 0, NULL)},
            {"adakv B 12 pool 3 floor 0.3", KV_METHOD_ADAKV, popts(12, 3, 0, NULL)},
            {"adakv B 13 pool 1 floor 0.3 per query head", KV_METHOD_ADAKV, popts(13, 1, 1, NULL)},
            {"adakv B 12 pool 3 floor 1", KV_METHOD_ADAKV, popts(12, 3, 0, NULL)},
            {"headkv B 12 pool 3", KV_METHOD_HEADKV, popts(12, 3, 0, &dhs)},
            {"headkv B 12 pool 1 per query head", KV_METHOD_HEADKV, popts(12, 1, 1, &dhs)},
            {"streaming B 12 sinks 2", KV_METHOD_STREAMING, popts(12, 1, 0, NULL)},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) cases[i].o.window = 4;
        cases[6].o.pyramid_beta = 2.0;
        cases[7].o.ada_floor = 0.0;
        cases[8].o.ada_floor = 0.3;
        cases[9].o.ada_floor = 0.3;
        cases[10].o.ada_floor = 1.0;
        cases[13].o.sinks = 2;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char what[160];
            snprintf(what, sizeof(what), "crafted ties%s: %s", twin ? ", twin heads" : "", cases[i].what);
            direct_case(what, cases[i].method, cases[i].o, twin);
        }
    }
}

// ---- main --------------------------------------------------------------------

// --device-subset: the multi-rank cases on the test backend (with
// RECALL_TEST_BACKEND=cuda_emu the emulated CUDA backend, whose buffers move
// over the device data path) against the reference and against the CPU
// backend on one rank (same kept sets, tokens, logits within 1e-5), ranks
// bitwise equal. Sized for the emulator: SnapKV (window, pooling, the
// prompt's compression) on 3 zigzag ranks and H2O (evictions every step) on
// 2, 6 steps.
static void device_subset(const model *m, const int32_t *prompt, const int32_t *forced) {
    N_DECODE = N_DECODE_DEVICE;
    PREFILL_BLOCK = 13;
    const struct { run_cfg cfg; int N; } runs[] = {
        {{.label = "snapkv B 24 pool 7, prompt 97", .attention = ATTENTION_SNAPKV, .po = popts(24, 7, 0, NULL),
          .n_prompt = 97, .forced = forced, .zigzag = 1}, 3},
        {{.label = "h2o B 24, prompt 61", .attention = ATTENTION_H2O, .po = popts(24, 7, 0, NULL), .n_prompt = 61,
          .forced = forced}, 2},
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        run_cfg cpu = runs[i].cfg;
        cpu.be = &backend_cpu;
        cpu.zigzag = 0;
        rank_job one[1], jobs[MAX_RANKS];
        const int N = runs[i].N;
        const int ok1 = run_ranks(m, 1, prompt, &cpu, one);
        char what[200];
        snprintf(what, sizeof(what), "%s, %d %s ranks%s vs one cpu rank", runs[i].cfg.label, N, test_backend_name(),
                 runs[i].cfg.zigzag ? " zigzag" : "");
        if (run_ranks(m, N, prompt, &runs[i].cfg, jobs)) {
            for (int r = 0; r < N; r++)
                CHECK_MSG(jobs[r].dev_path && !strcmp(jobs[r].dev_path, test_device_path(N)),
                          "%s: rank %d: device data path %s, expected %s", what, r,
                          jobs[r].dev_path ? jobs[r].dev_path : "?", test_device_path(N));
            check_run(jobs, N, what);
            if (ok1) compare_runs(&jobs[0], 0, &one[0], 0, 1e-5, what);
        }
        free_jobs(jobs, N);
        free_jobs(one, 1);
    }
}

int main(int argc, char **argv) {
    const int subset = argc > 1 && strcmp(argv[1], "--device-subset") == 0;
    if (argc > 1 && !subset) {
        fprintf(stderr, "usage: test_kvpolicy [--device-subset]\n");
        return 2;
    }
    test_backend_setup();
    const double t0 = now_s();
    char path[64];
    rc_err err = {{0}};
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);
    const model_config *c = &m.cfg;
    const int64_t V = c->n_vocab, L = c->n_layer, H = c->n_head;

    // HeadKV importance: uneven, one zero, no head dominant enough to want more than the prompt.
    head_scores hs = {.n_layer = L, .n_head = H};
    hs.score = calloc((size_t)(L * H), sizeof(double));
    for (int64_t i = 0; i < L * H; i++) hs.score[i] = 1.0 + (double)((i * 7) % 5);
    hs.score[4] = 0.0;
    hs.score[13] = 7.5;
    // One dominant head: per query head its HeadKV budget exceeds a 61-token prompt.
    head_scores hs_dom = {.n_layer = L, .n_head = H};
    hs_dom.score = calloc((size_t)(L * H), sizeof(double));
    for (int64_t i = 0; i < L * H; i++) hs_dom.score[i] = 1.0;
    hs_dom.score[7] = 40.0;

    if (!subset) {
        test_validate(&hs, L, H);
        test_direct_ties();
    }

    int32_t prompt[PROMPT_MAX], forced[N_DECODE_FULL];
    uint64_t s = 2024;
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
        free(hs.score);
        free(hs_dom.score);
        model_free(&m);
        unlink(path);
        TEST_MAIN_END();
    }
    test_engine_errors(&m, prompt, &hs);

    const double t_setup = now_s();

    // Full attention on one rank: greedy and forced, per prompt length (test 1's
    // "teeth" and test 4's reference).
    rank_job full_forced97[1], full_forced61[1], full_greedy97[1];
    {
        run_cfg f = {.label = "full, forced, prompt 97", .attention = ATTENTION_FULL, .n_prompt = 97, .forced = forced};
        run_ranks(&m, 1, prompt, &f, full_forced97);
        run_cfg f61 = f;
        f61.label = "full, forced, prompt 61";
        f61.n_prompt = 61;
        run_ranks(&m, 1, prompt, &f61, full_forced61);
        run_cfg g = f;
        g.label = "full, greedy, prompt 97";
        g.forced = NULL;
        run_ranks(&m, 1, prompt, &g, full_greedy97);
    }

    // 1-3. Kept sets against the reference on 1..4 ranks, contiguous and zigzag.
    {
        run_cfg sel[32];
        int ns = 0;
#define SEL(lbl, kind, po_, n_, forced_) \
    sel[ns++] = (run_cfg){.label = lbl, .attention = kind, .po = po_, .n_prompt = n_, .forced = forced_}
        SEL("streaming B 24 sinks 4, prompt 97", ATTENTION_STREAMING, popts(24, 7, 0, NULL), 97, forced);
        SEL("h2o B 24, prompt 97", ATTENTION_H2O, popts(24, 7, 0, NULL), 97, forced);
        SEL("h2o B 24 window 4, prompt 61, greedy", ATTENTION_H2O, popts(24, 7, 0, NULL), 61, NULL);
        sel[ns - 1].po.window = 4;
        SEL("h2o B 24 per query head, prompt 61", ATTENTION_H2O, popts(24, 7, 1, NULL), 61, forced);
        SEL("snapkv B 24 pool 7, prompt 97", ATTENTION_SNAPKV, popts(24, 7, 0, NULL), 97, forced);
        SEL("snapkv B 24 pool 1, prompt 61, greedy", ATTENTION_SNAPKV, popts(24, 1, 0, NULL), 61, NULL);
        SEL("snapkv B 24 pool 7 per query head, prompt 97", ATTENTION_SNAPKV, popts(24, 7, 1, NULL), 97, forced);
        SEL("pyramidkv B 24 pool 7, prompt 97", ATTENTION_PYRAMIDKV, popts(24, 7, 0, NULL), 97, forced);
        SEL("pyramidkv B 24 pool 1 beta 3, prompt 61, greedy", ATTENTION_PYRAMIDKV, popts(24, 1, 0, NULL), 61, NULL);
        sel[ns - 1].po.pyramid_beta = 3.0;
        SEL("adakv B 24 pool 7, prompt 97", ATTENTION_ADAKV, popts(24, 7, 0, NULL), 97, forced);
        SEL("adakv B 24 pool 1, prompt 61, greedy", ATTENTION_ADAKV, popts(24, 1, 0, NULL), 61, NULL);
        SEL("adakv B 20 pool 3 floor 0 per query head, prompt 61", ATTENTION_ADAKV, popts(20, 3, 1, NULL), 61, forced);
        sel[ns - 1].po.ada_floor = 0.0;
        SEL("headkv B 24 pool 7, prompt 97", ATTENTION_HEADKV, popts(24, 7, 0, &hs), 97, forced);
        SEL("headkv B 24 pool 1, prompt 61, greedy", ATTENTION_HEADKV, popts(24, 1, 0, &hs), 61, NULL);
        SEL("headkv B 24 pool 7 per query head, prompt 97", ATTENTION_HEADKV, popts(24, 7, 1, &hs), 97, forced);
        // Budgets at the edge of the prompt: B = n keeps everything at first, B = n - 1 drops one.
        SEL("streaming B = n = 97", ATTENTION_STREAMING, popts(97, 7, 0, NULL), 97, forced);
        SEL("h2o B = n = 97", ATTENTION_H2O, popts(97, 7, 0, NULL), 97, forced);
        SEL("h2o B = n - 1 = 96", ATTENTION_H2O, popts(96, 7, 0, NULL), 97, forced);
        SEL("snapkv B = n - 1 = 60 pool 7", ATTENTION_SNAPKV, popts(60, 7, 0, NULL), 61, forced);
        // A prompt shorter than the window and than the rank count (empty shards).
        SEL("h2o B 2, prompt 3 (window 8 votes with 3)", ATTENTION_H2O, popts(2, 7, 0, NULL), 3, forced);
        SEL("streaming B 2 sinks 1, prompt 3", ATTENTION_STREAMING, popts(2, 7, 0, NULL), 3, forced);
        sel[ns - 1].po.sinks = 1;
        // A head's budget above the prompt: PyramidKV's first layer wants 31 of 30, one
        // HeadKV head about 130 of 61. Such a head keeps every position.
        SEL("pyramidkv B 24 pool 7, prompt 30 (layer 0 budget 31 > prompt)", ATTENTION_PYRAMIDKV, popts(24, 7, 0, NULL), 30, forced);
        SEL("headkv B 24 pool 7 per query head, one dominant head, prompt 61 (its budget > prompt)", ATTENTION_HEADKV,
            popts(24, 7, 1, &hs_dom), 61, forced);
#undef SEL
        for (int i = 0; i < ns; i++) {
            const run_cfg *cfg = &sel[i];
            rank_job one[1];
            char what[256];
            snprintf(what, sizeof(what), "%s, 1 rank", cfg->label);
            const int ok1 = run_ranks(&m, 1, prompt, cfg, one);
            if (ok1) {
                check_run(one, 1, what);
                // Teeth: with a budget below the prompt the logits really change.
                const rank_job *full = cfg->n_prompt == 97 ? full_forced97 : cfg->n_prompt == 61 ? full_forced61 : NULL;
                if (cfg->forced && full && cfg->po.budget < cfg->n_prompt - 1) {
                    double worst = 0.0;
                    for (int t = 1; t <= N_DECODE; t++)
                        worst = fmax(worst, max_rel_diff(one[0].rec[0].logits + (int64_t)t * V, full->rec[0].logits + (int64_t)t * V, V));
                    CHECK_MSG(worst > 1e-4, "%s: logits within %.3g of full attention: the compression changes nothing", what, worst);
                }
            }
            for (int zig = 0; zig < 2; zig++)
                for (int N = 2; N <= MAX_RANKS; N++) {
                    run_cfg x = *cfg;
                    x.zigzag = zig;
                    rank_job jobs[MAX_RANKS];
                    snprintf(what, sizeof(what), "%s, %d ranks%s", cfg->label, N, zig ? " zigzag" : "");
                    if (run_ranks(&m, N, prompt, &x, jobs)) {
                        check_run(jobs, N, what);
                        if (ok1) compare_runs(&jobs[0], 0, &one[0], 0, 1e-5, what);
                    }
                    free_jobs(jobs, N);
                }
            free_jobs(one, 1);
        }
    }
    const double t_sel = now_s();

    // 4. B = n_ctx: nothing is ever dropped, every method is full attention.
    {
        const int kinds[] = {ATTENTION_STREAMING, ATTENTION_H2O, ATTENTION_SNAPKV, ATTENTION_PYRAMIDKV,
                             ATTENTION_ADAKV,     ATTENTION_HEADKV, ATTENTION_SNAPKV, ATTENTION_HEADKV};
        for (int i = 0; i < 8; i++) {
            const int64_t n_ctx = 97 + N_DECODE;
            run_cfg x = {.label = attention_kind_name(kinds[i]), .attention = kinds[i],
                         .po = popts(n_ctx, 7, i >= 6, &hs), .n_prompt = 97};
            const int runs[3][2] = {{1, 0}, {3, 0}, {2, 1}};
            for (int k = 0; k < 3; k++) {
                const int N = runs[k][0];
                x.zigzag = runs[k][1];
                rank_job jobs[MAX_RANKS];
                char what[160];
                snprintf(what, sizeof(what), "%s%s B = n_ctx, %d rank(s)%s, greedy, vs full attention", x.label,
                         i >= 6 ? " per query head" : "", N, x.zigzag ? " zigzag" : "");
                if (run_ranks(&m, N, prompt, &x, jobs)) {
                    check_run(jobs, N, what);
                    compare_runs(&jobs[0], 0, &full_greedy97[0], 0, 1e-5, what);
                }
                free_jobs(jobs, N);
            }
        }
    }
    const double t_ctx = now_s();

    // 5. Memory: an fp16 store (bytes per row halve); switching methods on a retained prompt.
    {
        run_cfg h = {.label = "snapkv B 24 pool 7, fp16 KV", .attention = ATTENTION_SNAPKV, .po = popts(24, 7, 0, NULL),
                     .n_prompt = 97, .forced = forced, .kv_f16 = 1};
        rank_job jobs[MAX_RANKS];
        if (run_ranks(&m, 2, prompt, &h, jobs)) {
            check_run(jobs, 2, "snapkv fp16, 2 ranks");
            for (int r = 0; r < 2; r++)
                CHECK_MSG(jobs[r].rec[0].have[N_DECODE] && jobs[r].rec[0].bytes_used[N_DECODE] == (size_t)jobs[r].rec[0].rows_sum[N_DECODE] * 2 * (size_t)c->head_dim * 2,
                          "fp16 store, rank %d: %zu bytes for %lld rows", r, jobs[r].rec[0].bytes_used[N_DECODE],
                          (long long)jobs[r].rec[0].rows_sum[N_DECODE]);
        }
        free_jobs(jobs, 2);

        struct {
            const char *label;
            int from, to;
            kvpolicy_opts pf, pt;
            int N, zig;
        } sw[] = {
            {"snapkv -> h2o", ATTENTION_SNAPKV, ATTENTION_H2O, popts(24, 7, 0, NULL), popts(24, 7, 0, NULL), 1, 0},
            {"snapkv -> h2o", ATTENTION_SNAPKV, ATTENTION_H2O, popts(24, 7, 0, NULL), popts(24, 7, 0, NULL), 3, 0},
            {"h2o -> headkv per query head", ATTENTION_H2O, ATTENTION_HEADKV, popts(24, 7, 0, NULL), popts(24, 7, 1, &hs), 1, 0},
            {"h2o -> headkv per query head", ATTENTION_H2O, ATTENTION_HEADKV, popts(24, 7, 0, NULL), popts(24, 7, 1, &hs), 2, 1},
            {"streaming -> adakv", ATTENTION_STREAMING, ATTENTION_ADAKV, popts(24, 7, 0, NULL), popts(24, 1, 0, NULL), 4, 0},
            {"pyramidkv -> full", ATTENTION_PYRAMIDKV, ATTENTION_FULL, popts(24, 7, 0, NULL), popts(24, 7, 0, NULL), 1, 0},
            {"pyramidkv -> full", ATTENTION_PYRAMIDKV, ATTENTION_FULL, popts(24, 7, 0, NULL), popts(24, 7, 0, NULL), 3, 1},
        };
        for (size_t i = 0; i < sizeof(sw) / sizeof(sw[0]); i++) {
            const int N = sw[i].N;
            run_cfg a = {.label = sw[i].label, .attention = sw[i].from, .po = sw[i].pf, .n_prompt = 97, .forced = forced,
                         .zigzag = sw[i].zig, .retain = 1, .do_switch = 1, .switch_to = sw[i].to, .switch_po = sw[i].pt};
            run_cfg fa = {.label = "fresh (first method)", .attention = sw[i].from, .po = sw[i].pf, .n_prompt = 97,
                          .forced = forced, .zigzag = sw[i].zig};
            run_cfg fb = fa;
            fb.label = "fresh (second method)";
            fb.attention = sw[i].to;
            fb.po = sw[i].pt;
            rank_job ja[MAX_RANKS], jfa[MAX_RANKS], jfb[MAX_RANKS];
            char what[200];
            snprintf(what, sizeof(what), "retained prompt, %s, %d rank(s)%s", sw[i].label, N, sw[i].zig ? " zigzag" : "");
            const int ok = run_ranks(&m, N, prompt, &a, ja) & run_ranks(&m, N, prompt, &fa, jfa) &
                           run_ranks(&m, N, prompt, &fb, jfb);
            if (ok) {
                check_run(ja, N, what);
                char w2[320];
                snprintf(w2, sizeof(w2), "%s: first method vs a fresh run without retain", what);
                compare_runs(&ja[0], 0, &jfa[0], 0, 0.0, w2);
                snprintf(w2, sizeof(w2), "%s: after truncate + switch vs a fresh run of the second method", what);
                compare_runs(&ja[0], 1, &jfb[0], 0, 0.0, w2);
                for (int r = 0; r < N; r++)  // the same rows in the same order (scores included)
                    for (int ev = 1; ev <= N_DECODE && attention_kind_is_policy(sw[i].to); ev++) {
                        const record *x = &ja[r].rec[1], *y = &jfb[r].rec[0];
                        const int64_t nh = L * x->S, P = ja[r].P;
                        int same = x->S == y->S && memcmp(x->cnt + ev * nh, y->cnt + ev * nh, (size_t)nh * sizeof(int64_t)) == 0;
                        for (int64_t o = ev * nh; same && o < (ev + 1) * nh; o++)
                            same = memcmp(x->pos + o * P, y->pos + o * P, (size_t)x->cnt[o] * sizeof(int64_t)) == 0 &&
                                   memcmp(x->score + o * P, y->score + o * P, (size_t)x->cnt[o] * sizeof(double)) == 0;
                        CHECK_MSG(same, "%s rank %d event %d: store differs from the fresh run's", w2, r, ev);
                        if (!same) break;
                    }
            }
            free_jobs(ja, N);
            free_jobs(jfa, N);
            free_jobs(jfb, N);
        }
    }
    const double t_end = now_s();
    printf("setup %.2f s, kept sets %.2f s, B = n_ctx %.2f s, memory/switch %.2f s\n", t_setup - t0, t_sel - t_setup,
           t_ctx - t_sel, t_end - t_ctx);

    free_jobs(full_forced97, 1);
    free_jobs(full_forced61, 1);
    free_jobs(full_greedy97, 1);
    free(hs.score);
    free(hs_dom.score);
    model_free(&m);
    unlink(path);
    TEST_MAIN_END();
}
