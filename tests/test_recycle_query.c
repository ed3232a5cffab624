// Recycled attention's first-selection query window (--recycle-query window)
// and span-aware selection (--recycle-span), on the tiny sharding model with
// an fp32 KV cache, on 1, 2 and 3 simulated ranks:
//   - the first cache built from the prompt's last W queries holds exactly
//     the top-K of a brute force computed here in double: each window
//     query's own softmax over the keys it sees (causal), mean or max over
//     the window, the GQA combine (max, mean, first), max-pooling, top-K by
//     (score desc, position asc); the stored scores match;
//   - span R: after every rebuild (prefill end and full steps) the cache holds
//     the brute-force greedy fill of the top-K list (each entry and its next
//     R positions, no duplicates, K in all); span 0 is the plain top-K;
//   - W = 1 selects what the last query does (max: bitwise the same cache);
//   - 2 and 3 ranks (contiguous and zigzag) keep the positions one rank
//     keeps at every event, and every rank holds bitwise rank 0's cache;
//   - recycled attention switched on after a full-attention prefill (eval's
//     way) builds the first cache from the same window at its first step;
//   - a window longer than the prompt, and bad option values, fail with one
//     message naming the flag.
// A selection that differs from the reference says whether the differing
// scores are a near tie at the K boundary (float vs double rounding).
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "engine/sampler.h"
#include "peek.h"
#include "policy/kvpolicy.h"
#include "policy/recycle.h"
#include "ref_order.h"
#include "test_backend.h"
#include "tiny_model.h"

#define MAX_RANKS 3
#define N_PROMPT 97
#define N_STEPS_MAX 8
// Decode steps: stride 4 rebuilds at steps 4 and 8 (--device-subset: 4 steps).
static int N_STEPS = N_STEPS_MAX;
static int PREFILL_BLOCK = 5;  // several blocks per rank, uneven (--device-subset: 13, fewer launches)

typedef struct qcfg {
    const char *label;
    recycle_opts ro;
    int64_t n_prompt;
    int zigzag;
    int lazy;    // prefill under full attention, then switch to recycled (eval's way)
    int brute;   // one rank: check every rebuild against the brute force
    const backend_ops *be;  // NULL: the test backend (test_backend.h)
} qcfg;

typedef struct qjob {
    const model *m;
    comm *c;
    const int32_t *prompt, *forced;
    const qcfg *cfg;
    int64_t K;
    int64_t *pos;        // (N_STEPS + 1, L, KV, K) cache positions in logical order
    float *score;        // (same) their stored scores
    int64_t *cnt;        // (N_STEPS + 1, L, KV)
    float *logits;       // (N_STEPS + 1, V)
    float *hq, *hlse;    // the last on_full_attention arguments per layer
    uint8_t *hcalled;    // (L) since the last event
    int64_t n_brute;
    int failed;
    char err[1024];
} qjob;

static void hook(void *user, int64_t layer, int64_t n_total, const float *q, const float *lse) {
    qjob *j = user;
    const model_config *c = &j->m->cfg;
    const int64_t q_dim = c->n_head * c->head_dim;
    memcpy(j->hq + layer * q_dim, q, (size_t)q_dim * sizeof(float));
    memcpy(j->hlse + layer * c->n_head, lse, (size_t)c->n_head * sizeof(float));
    j->hcalled[layer] = 1;
    (void)n_total;
}

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// ---- the brute force -------------------------------------------------------------

// Positions ascending, their scores alongside (insertion sort: K is small here).
static void sort_by_position(int64_t *pos, double *score, int64_t n) {
    for (int64_t a = 1; a < n; a++)
        for (int64_t b = a; b > 0 && pos[b - 1] > pos[b]; b--) {
            const int64_t tp = pos[b];
            pos[b] = pos[b - 1];
            pos[b - 1] = tp;
            const double ts = score[b];
            score[b] = score[b - 1];
            score[b - 1] = ts;
        }
}

// P: (H, n) per query head and key, probabilities. Into want (sorted
// positions) and want_score (the score that chose each, same order) for KV
// head h: GQA combine, max-pool, top-K by (score desc, position asc), then
// the span fill. Returns the count; *boundary: the K-th score before the span.
static int64_t brute_select(const double *P, int64_t H, int64_t KV, int64_t h, int64_t n, const recycle_opts *o,
                            int64_t K, int64_t *want, double *want_score, double *boundary, double *agg_out) {
    const int64_t G = H / KV, half = o->pool_kernel / 2;
    double *agg = malloc((size_t)n * sizeof(double));
    ref_entry *ref = malloc((size_t)n * sizeof(ref_entry));
    uint8_t *taken = calloc((size_t)n, 1);
    for (int64_t p = 0; p < n; p++) {
        double a = 0.0;
        for (int64_t g = 0; g < G; g++) {
            const double x = P[(h * G + g) * n + p];
            if (o->group_agg == GROUP_AGG_MAX) a = g == 0 ? x : fmax(a, x);
            else if (o->group_agg == GROUP_AGG_MEAN) a += x / (double)G;
            else if (g == 0) a = x;
        }
        agg[p] = a;
    }
    for (int64_t p = 0; p < n; p++) {
        double mx = -INFINITY;
        for (int64_t x = p - half; x <= p + half; x++)
            if (x >= 0 && x < n) mx = fmax(mx, agg[x]);
        ref[p] = (ref_entry){mx, p};
        agg_out[p] = mx;
    }
    qsort(ref, (size_t)n, sizeof(ref_entry), ref_cmp);
    const int64_t n_sel = n < K ? n : K;
    *boundary = ref[n_sel - 1].score;
    int64_t m = 0;
    for (int64_t i = 0; i < n_sel && m < n_sel; i++)
        for (int64_t p = ref[i].pos; p <= ref[i].pos + o->span && p < n && m < n_sel; p++)
            if (!taken[p]) {
                taken[p] = 1;
                want[m] = p;
                want_score[m++] = ref[i].score;
            }
    sort_by_position(want, want_score, m);
    free(agg);
    free(ref);
    free(taken);
    return m;
}

// The cache of (layer, KV head h) against the brute force from P: (H, n).
static void brute_compare(qjob *j, const engine *e, int ev, int64_t l, const double *P, int64_t n) {
    const model_config *c = &j->m->cfg;
    const recycle_opts *o = &j->cfg->ro;
    const recycle_cache *rc = &e->recycle->cache;
    const int64_t H = c->n_head, KV = c->n_head_kv, K = rc->k;
    int64_t *want = malloc((size_t)K * sizeof(int64_t)), *got = malloc((size_t)K * sizeof(int64_t));
    double *want_score = malloc((size_t)K * sizeof(double)), *pooled = malloc((size_t)n * sizeof(double));
    for (int64_t h = 0; h < KV; h++) {
        double boundary;
        const int64_t m = brute_select(P, H, KV, h, n, o, K, want, want_score, &boundary, pooled);
        const int64_t cnt = recycle_cache_positions(rc, l, h, got);
        CHECK_MSG(cnt == m, "%s event %d layer %lld head %lld: %lld entries, the brute force %lld", j->cfg->label, ev,
                  (long long)l, (long long)h, (long long)cnt, (long long)m);
        if (cnt != m) continue;
        double *sc = malloc((size_t)(cnt + 1) * sizeof(double));
        for (int64_t i = 0; i < cnt; i++) sc[i] = rc->score[recycle_cache_row_index(rc, l, h, recycle_cache_slot(rc, l, h, i))];
        sort_by_position(got, sc, cnt);
        if (memcmp(got, want, (size_t)m * sizeof(int64_t)) != 0) {
            char detail[1024];
            int off = 0, near = 1;
            for (int side = 0; side < 2; side++) {
                const int64_t *a = side ? want : got, *b = side ? got : want;
                for (int64_t i = 0; i < m; i++)
                    if (!bsearch(&a[i], b, (size_t)m, sizeof(int64_t), cmp_i64)) {
                        const double s = pooled[a[i]], rel = fabs(s - boundary) / fabs(boundary);
                        if (!(rel <= 1e-6)) near = 0;
                        if (off < (int)sizeof(detail) - 80)
                            off += snprintf(detail + off, sizeof(detail) - (size_t)off, " %s %lld (%.9g)",
                                            side ? "missing" : "extra", (long long)a[i], s);
                    }
            }
            CHECK_MSG(0, "%s event %d layer %lld head %lld: selection differs from the brute force%s; K-th %.9g:%s",
                      j->cfg->label, ev, (long long)l, (long long)h, near ? " (NEAR TIE at the K boundary)" : "",
                      boundary, detail);
        } else {
            for (int64_t i = 0; i < m; i++)
                CHECK_MSG(fabs(sc[i] - want_score[i]) <= 1e-4 * fabs(want_score[i]) + 1e-30,
                          "%s event %d layer %lld head %lld pos %lld: stored score %.9g, brute force %.9g",
                          j->cfg->label, ev, (long long)l, (long long)h, (long long)got[i], sc[i], want_score[i]);
        }
        free(sc);
    }
    j->n_brute++;
    free(want);
    free(got);
    free(want_score);
    free(pooled);
}

// p of n keys for query q: (hd) of head hq, K: this layer's fp32 keys.
static void softmax_row(const float *q, const float *kd, int64_t head_stride, int64_t kvh, int64_t hd, int64_t n_seen,
                        int64_t n, double *out) {
    const double scale = 1.0 / sqrt((double)hd);
    double mx = -INFINITY, sum = 0.0;
    for (int64_t p = 0; p < n_seen; p++) {
        double d = 0.0;
        for (int64_t i = 0; i < hd; i++) d += (double)q[i] * kd[kvh * head_stride + p * hd + i];
        out[p] = scale * d;
        mx = fmax(mx, out[p]);
    }
    for (int64_t p = 0; p < n_seen; p++) sum += exp(out[p] - mx);
    for (int64_t p = 0; p < n; p++) out[p] = p < n_seen ? exp(out[p] - mx) / sum : 0.0;
}

// One rank, after the prefill: the first cache of every layer from the
// window's queries (e->win_q, the inputs) and the K cache.
static void brute_window(qjob *j, const engine *e) {
    const model_config *c = &j->m->cfg;
    const recycle_opts *o = &j->cfg->ro;
    const int64_t H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, G = H / KV, n = e->n_past;
    const int64_t W = o->query == RECYCLE_QUERY_WINDOW ? o->query_window : 1;
    double *P = malloc((size_t)(H * n) * sizeof(double)), *row = malloc((size_t)n * sizeof(double));
    for (int64_t l = 0; l < c->n_layer; l++) {
        const kv_view kk = kv_cache_k(&e->kv, l);
        float *kd = peek_copy(e->be, kk.data, (size_t)(KV * kk.head_stride) * sizeof(float));
        const int64_t row0 = l * KVPOLICY_WINDOW_MAX + e->win_n - W;
        float *q = peek_copy(e->be, e->win_q + row0 * H * hd, (size_t)(W * H * hd) * sizeof(float));
        for (int64_t i = 0; i < H * n; i++) P[i] = 0.0;  // both combines start at 0 (p >= 0)
        for (int64_t w = 0; w < W; w++)
            for (int64_t hq = 0; hq < H; hq++) {
                softmax_row(q + (w * H + hq) * hd, kd, kk.head_stride, hq / G, hd, n - W + w + 1, n, row);
                for (int64_t p = 0; p < n; p++) {
                    double *x = &P[hq * n + p];
                    if (o->query_agg == RECYCLE_QUERY_MAX) *x = fmax(*x, row[p]);
                    else *x += row[p] / (double)W;
                }
            }
        brute_compare(j, e, 0, l, P, n);
        free(kd);
        free(q);
    }
    free(P);
    free(row);
}

// One rank, a full step of layer l: the step's query (hook) over all n keys.
static void brute_step(qjob *j, const engine *e, int ev, int64_t l) {
    const model_config *c = &j->m->cfg;
    const int64_t H = c->n_head, KV = c->n_head_kv, hd = c->head_dim, G = H / KV, n = e->n_past;
    double *P = malloc((size_t)(H * n) * sizeof(double));
    const kv_view kk = kv_cache_k(&e->kv, l);
    float *kd = peek_copy(e->be, kk.data, (size_t)(KV * kk.head_stride) * sizeof(float));
    for (int64_t hq = 0; hq < H; hq++) softmax_row(j->hq + (l * H + hq) * hd, kd, kk.head_stride, hq / G, hd, n, n, P + hq * n);
    brute_compare(j, e, ev, l, P, n);
    free(kd);
    free(P);
}

// ---- runs on N simulated ranks -------------------------------------------------------

static void record(qjob *j, const engine *e, int ev) {
    const model_config *c = &j->m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, K = j->K;
    const recycle_cache *rc = &e->recycle->cache;
    for (int64_t l = 0; l < L; l++)
        for (int64_t h = 0; h < KV; h++) {
            const int64_t o = (ev * L + l) * KV + h;
            j->cnt[o] = recycle_cache_positions(rc, l, h, j->pos + o * K);
            for (int64_t i = 0; i < j->cnt[o]; i++)
                j->score[o * K + i] = rc->score[recycle_cache_row_index(rc, l, h, recycle_cache_slot(rc, l, h, i))];
        }
    memcpy(j->logits + (int64_t)ev * c->n_vocab, engine_logits(e), (size_t)c->n_vocab * sizeof(float));
}

static void *run_rank(void *arg) {
    qjob *j = arg;
    const model_config *c = &j->m->cfg;
    const qcfg *cfg = j->cfg;
    engine_opts o = engine_default_opts();
    o.n_ctx = cfg->n_prompt + N_STEPS;
    o.n_threads = 1;
    o.kv_elem = KV_F32;
    o.prefill_block = PREFILL_BLOCK;
    o.comm = j->c;
    o.zigzag = cfg->zigzag;
    o.attention = cfg->lazy ? ATTENTION_FULL : ATTENTION_RECYCLED;
    o.recycle = cfg->ro;
    o.retain_prompt_cache = cfg->lazy;
    o.on_full_attention = hook;
    o.hook_user = j;
    o.backend = cfg->be ? cfg->be : test_backend();
    rc_err err = {{0}};
    engine *e = engine_create(j->m, &o, &err);
    int rc = !e || engine_prefill(e, j->prompt, cfg->n_prompt, NULL, NULL, NULL, &err);
    if (rc == 0 && cfg->lazy) rc = engine_set_attention(e, ATTENTION_RECYCLED, &cfg->ro, NULL, &err);
    if (rc == 0 && !cfg->lazy) {
        record(j, e, 0);
        if (cfg->brute && j->c->size == 1) brute_window(j, e);
    }
    for (int t = 1; rc == 0 && t <= N_STEPS; t++) {
        memset(j->hcalled, 0, (size_t)c->n_layer);
        rc = engine_decode(e, j->forced[t - 1], &err);
        if (rc) break;
        record(j, e, t);
        if (cfg->brute && j->c->size == 1)
            for (int64_t l = 0; l < c->n_layer; l++)
                if (e->last_step.layer_full[l] && j->hcalled[l]) brute_step(j, e, t, l);
    }
    if (rc) {
        j->failed = 1;
        snprintf(j->err, sizeof(j->err), "%s", err.msg);
    }
    engine_destroy(e);
    return NULL;
}

static void run(const model *m, int N, const int32_t *prompt, const int32_t *forced, const qcfg *cfg, qjob *jobs) {
    const model_config *c = &m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, E = N_STEPS + 1;
    comm *comms[MAX_RANKS];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(N, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < N; r++) {
        qjob *j = &jobs[r];
        *j = (qjob){.m = m, .c = comms[r], .prompt = prompt, .forced = forced, .cfg = cfg, .K = cfg->ro.k};
        j->pos = calloc((size_t)(E * L * KV * j->K), sizeof(int64_t));
        j->score = calloc((size_t)(E * L * KV * j->K), sizeof(float));
        j->cnt = calloc((size_t)(E * L * KV), sizeof(int64_t));
        j->logits = calloc((size_t)(E * c->n_vocab), sizeof(float));
        j->hq = calloc((size_t)(L * c->n_head * c->head_dim), sizeof(float));
        j->hlse = calloc((size_t)(L * c->n_head), sizeof(float));
        j->hcalled = calloc((size_t)L, 1);
        pthread_create(&th[r], NULL, run_rank, j);
    }
    for (int r = 0; r < N; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < N; r++) comm_destroy(comms[r]);
}

static void free_jobs(qjob *jobs, int N) {
    for (int r = 0; r < N; r++) {
        free(jobs[r].pos); free(jobs[r].score); free(jobs[r].cnt); free(jobs[r].logits);
        free(jobs[r].hq); free(jobs[r].hlse); free(jobs[r].hcalled);
    }
}

// The position sets of a and b agree at events [ev0, N_STEPS]; bitwise adds the scores' order and bits.
static void same_sets(const qjob *a, const qjob *b, const model_config *c, int ev0, int bitwise, const char *what) {
    const int64_t L = c->n_layer, KV = c->n_head_kv, K = a->K;
    int64_t *x = malloc((size_t)K * sizeof(int64_t)), *y = malloc((size_t)K * sizeof(int64_t));
    int bad = 0;
    for (int ev = ev0; ev <= N_STEPS && bad < 3; ev++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t h = 0; h < KV; h++) {
                const int64_t o = (ev * L + l) * KV + h, n = a->cnt[o];
                int ok = n == b->cnt[o];
                if (ok && bitwise)
                    ok = !memcmp(a->pos + o * K, b->pos + o * K, (size_t)n * sizeof(int64_t)) &&
                         !memcmp(a->score + o * K, b->score + o * K, (size_t)n * sizeof(float));
                if (ok) {
                    memcpy(x, a->pos + o * K, (size_t)n * sizeof(int64_t));
                    memcpy(y, b->pos + o * K, (size_t)n * sizeof(int64_t));
                    qsort(x, (size_t)n, sizeof(int64_t), cmp_i64);
                    qsort(y, (size_t)n, sizeof(int64_t), cmp_i64);
                    ok = !memcmp(x, y, (size_t)n * sizeof(int64_t));
                }
                if (!ok && bad++ < 3)
                    CHECK_MSG(0, "%s: event %d layer %lld head %lld: caches differ (%lld vs %lld entries)", what, ev,
                              (long long)l, (long long)h, (long long)n, (long long)b->cnt[o]);
            }
    free(x);
    free(y);
}

static recycle_opts ropts(int64_t k, int64_t pool, int agg, int query, int64_t W, int qagg, int64_t span) {
    recycle_opts o = recycle_default_opts();
    o.k = k;
    o.stride = 4;
    o.pool_kernel = pool;
    o.group_agg = agg;
    o.query = query;
    o.query_window = W;
    o.query_agg = qagg;
    o.span = span;
    return o;
}

static void test_validate(void) {
    const int64_t n_ctx = 100;
    struct {
        const char *what, *flag;
        int64_t W, span;
    } bad[] = {{"window 0", "--recycle-query-window", 0, 0},
               {"window 33", "--recycle-query-window", RECYCLE_QUERY_WINDOW_MAX + 1, 0},
               {"span -1", "--recycle-span", 32, -1},
               {"span = ctx", "--recycle-span", 32, n_ctx}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        recycle_opts o = recycle_default_opts();
        o.k = 16;
        o.query = RECYCLE_QUERY_WINDOW;
        o.query_window = bad[i].W;
        o.span = bad[i].span;
        rc_err err = {{0}};
        CHECK_MSG(recycle_opts_validate(&o, n_ctx, &err) != 0, "%s: accepted", bad[i].what);
        CHECK_MSG(strstr(err.msg, bad[i].flag) != NULL, "%s: '%s' does not name %s", bad[i].what, err.msg, bad[i].flag);
    }
    recycle_opts o = recycle_default_opts();
    o.k = 16;
    o.query = 5;
    rc_err err = {{0}};
    CHECK_MSG(recycle_opts_validate(&o, n_ctx, &err) != 0 && strstr(err.msg, "--recycle-query"), "query 5: '%s'", err.msg);
    o = recycle_default_opts();
    o.k = 16;
    o.query_agg = 7;
    CHECK_MSG(recycle_opts_validate(&o, n_ctx, &err) != 0 && strstr(err.msg, "--recycle-query-agg"), "agg 7: '%s'", err.msg);
    o = recycle_default_opts();
    o.k = 16;
    o.query_window = RECYCLE_QUERY_WINDOW_MAX;
    o.span = n_ctx - 1;
    CHECK_MSG(recycle_opts_validate(&o, n_ctx, &err) == 0, "window 32, span ctx-1 refused: %s", err.msg);
}

// recycle_span_fill on a hand-made list: followers, duplicates, the sequence end.
static void test_span_fill(void) {
    const scored_pos sel[5] = {{0.9f, 10}, {0.8f, 12}, {0.7f, 3}, {0.6f, 19}, {0.5f, 0}};
    scored_pos out[5];
    uint8_t taken[20] = {0};
    recycle_span_fill(sel, 5, 2, 20, taken, out);
    // 10, 11, 12 (10's span), then 12 taken: 13, 14 -> 5 entries.
    const int64_t want[5] = {10, 11, 12, 13, 14};
    const float want_score[5] = {0.9f, 0.9f, 0.9f, 0.8f, 0.8f};
    for (int i = 0; i < 5; i++)
        CHECK_MSG(out[i].pos == want[i] && out[i].score == want_score[i], "span fill entry %d: pos %lld score %g", i,
                  (long long)out[i].pos, out[i].score);
    for (int i = 0; i < 20; i++) CHECK_MSG(taken[i] == 0, "span fill left position %d marked", i);
    const scored_pos tail[3] = {{0.9f, 19}, {0.8f, 18}, {0.1f, 2}};
    recycle_span_fill(tail, 3, 4, 20, taken, out);  // 19 has no followers; 18 brings nothing new; then 2
    CHECK_MSG(out[0].pos == 19 && out[1].pos == 18 && out[2].pos == 2, "span fill at the end: %lld %lld %lld",
              (long long)out[0].pos, (long long)out[1].pos, (long long)out[2].pos);
    recycle_span_fill(sel, 5, 0, 20, taken, out);  // span 0: the list itself
    for (int i = 0; i < 5; i++) CHECK(out[i].pos == sel[i].pos && out[i].score == sel[i].score);
}

// --device-subset (the emulated CUDA backend, ~0.1 s per rank and step): the
// window (mean and max) with a span on 1 rank against the brute force and
// on 2 zigzag ranks against one CPU rank, and eval's switch on 2 ranks.
static void device_subset(const model *m, const int32_t *prompt, const int32_t *forced) {
    const model_config *c = &m->cfg;
    N_STEPS = 4;
    PREFILL_BLOCK = 13;
    const qcfg cases[] = {
        {"window 8 mean + span 2, GQA max", ropts(12, 7, GROUP_AGG_MAX, RECYCLE_QUERY_WINDOW, 8, RECYCLE_QUERY_MEAN, 2),
         N_PROMPT, 0, 0, 1, NULL},
        {"window 5 max, GQA mean", ropts(12, 3, GROUP_AGG_MEAN, RECYCLE_QUERY_WINDOW, 5, RECYCLE_QUERY_MAX, 0), N_PROMPT,
         0, 0, 1, NULL},
    };
    for (int i = 0; i < 2; i++) {
        qcfg cpu = cases[i];
        cpu.be = &backend_cpu;
        cpu.brute = 0;
        qjob ref[1], one[1], two[2];
        run(m, 1, prompt, forced, &cpu, ref);
        char what[160];
        if (i == 0) {  // one device rank against the brute force
            run(m, 1, prompt, forced, &cases[i], one);
            CHECK_MSG(!one[0].failed && !ref[0].failed, "%s: %s %s", cases[i].label, one[0].err, ref[0].err);
            CHECK_MSG(one[0].n_brute == c->n_layer * 2, "%s: %lld rebuilds checked", cases[i].label, (long long)one[0].n_brute);
            snprintf(what, sizeof what, "%s on one %s rank vs one cpu rank", cases[i].label, test_backend_name());
            same_sets(&one[0], &ref[0], c, 0, 0, what);
            free_jobs(one, 1);
        }
        qcfg x = cases[i];
        x.brute = 0;
        x.zigzag = 1;
        x.lazy = i == 1;
        run(m, 2, prompt, forced, &x, two);
        snprintf(what, sizeof what, "%s on two %s ranks (zigzag%s) vs one cpu rank", cases[i].label, test_backend_name(),
                 x.lazy ? ", switched after a full prefill" : "");
        CHECK_MSG(!two[0].failed && !two[1].failed, "%s: %s %s", what, two[0].err, two[1].err);
        same_sets(&two[0], &ref[0], c, x.lazy, 0, what);
        same_sets(&two[1], &two[0], c, x.lazy, 1, what);
        free_jobs(ref, 1);
        free_jobs(two, 2);
    }
}

int main(int argc, char **argv) {
    const int subset = argc > 1 && strcmp(argv[1], "--device-subset") == 0;
    if (argc > 1 && !subset) {
        fprintf(stderr, "usage: test_recycle_query [--device-subset]\n");
        return 2;
    }
    test_backend_setup();
    if (!subset) {
        test_validate();
        test_span_fill();
    }
    char path[64];
    rc_err err = {{0}};
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);
    const model_config *c = &m.cfg;
    int32_t prompt[N_PROMPT], forced[N_STEPS_MAX];
    uint64_t s = 4242;
    for (int i = 0; i < N_PROMPT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((s >> 33) % (uint64_t)(c->n_vocab - 3));
    }
    for (int i = 0; i < N_STEPS_MAX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        forced[i] = (int32_t)((s >> 33) % (uint64_t)(c->n_vocab - 3));
    }
    if (subset) {
        device_subset(&m, prompt, forced);
        model_free(&m);
        unlink(path);
        TEST_MAIN_END();
    }
    const int W_ = RECYCLE_QUERY_WINDOW;
    qcfg cases[] = {
        {"window 8 mean, GQA max, pool 7", ropts(12, 7, GROUP_AGG_MAX, W_, 8, RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 8 max, GQA max, pool 7", ropts(12, 7, GROUP_AGG_MAX, W_, 8, RECYCLE_QUERY_MAX, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 32 mean, GQA mean, pool 1", ropts(12, 1, GROUP_AGG_MEAN, W_, 32, RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 5 max, GQA mean, pool 3", ropts(12, 3, GROUP_AGG_MEAN, W_, 5, RECYCLE_QUERY_MAX, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 8 mean, GQA first, pool 5", ropts(12, 5, GROUP_AGG_FIRST, W_, 8, RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 8 max, GQA first, pool 1", ropts(12, 1, GROUP_AGG_FIRST, W_, 8, RECYCLE_QUERY_MAX, 0), N_PROMPT, 0, 0, 1, NULL},
        {"last, span 3, pool 7", ropts(12, 7, GROUP_AGG_MAX, RECYCLE_QUERY_LAST, 32, RECYCLE_QUERY_MEAN, 3), N_PROMPT, 0, 0, 1, NULL},
        {"last, span 0, pool 7", ropts(12, 7, GROUP_AGG_MAX, RECYCLE_QUERY_LAST, 32, RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 1, NULL},
        {"window 16 mean + span 5, GQA mean", ropts(16, 3, GROUP_AGG_MEAN, W_, 16, RECYCLE_QUERY_MEAN, 5), N_PROMPT, 0, 0, 1, NULL},
        {"window 3 max + span 2, prompt 7", ropts(6, 3, GROUP_AGG_MAX, W_, 3, RECYCLE_QUERY_MAX, 2), 7, 0, 0, 1, NULL},
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n_cases; i++) {
        qjob one[1];
        run(&m, 1, prompt, forced, &cases[i], one);
        CHECK_MSG(!one[0].failed, "%s: %s", cases[i].label, one[0].err);
        // every rebuild checked: the prefill's layers and the full layers at steps 4 and 8
        CHECK_MSG(one[0].n_brute == c->n_layer * 3, "%s: %lld rebuilds checked, want %lld", cases[i].label,
                  (long long)one[0].n_brute, (long long)(c->n_layer * 3));
        for (int N = 2; N <= MAX_RANKS; N++)
            for (int zig = 0; zig < 2; zig++) {
                if (zig && (N == 2 || i % 2)) continue;  // keep the run time down
                qcfg x = cases[i];
                x.zigzag = zig;
                x.brute = 0;
                qjob jobs[MAX_RANKS];
                run(&m, N, prompt, forced, &x, jobs);
                char what[200];
                snprintf(what, sizeof what, "%s on %d ranks%s vs one", x.label, N, zig ? " (zigzag)" : "");
                for (int r = 0; r < N; r++) CHECK_MSG(!jobs[r].failed, "%s rank %d: %s", what, r, jobs[r].err);
                same_sets(&jobs[0], &one[0], c, 0, 0, what);
                for (int r = 1; r < N; r++) {
                    snprintf(what, sizeof what, "%s on %d ranks%s: rank %d vs rank 0", x.label, N, zig ? " (zigzag)" : "", r);
                    same_sets(&jobs[r], &jobs[0], c, 0, 1, what);
                    CHECK_MSG(!memcmp(jobs[r].logits, jobs[0].logits, (size_t)((N_STEPS + 1) * c->n_vocab) * sizeof(float)),
                              "%s: logits differ", what);
                }
                free_jobs(jobs, N);
            }
        free_jobs(one, 1);
    }
    // The window really changes the selection (the checks above have teeth).
    {
        qjob a[1], b[1];
        run(&m, 1, prompt, forced, &cases[0], a);
        qcfg last = cases[7];
        run(&m, 1, prompt, forced, &last, b);
        const int64_t L = c->n_layer, KV = c->n_head_kv, K = a[0].K;
        int64_t differ = 0;
        for (int64_t o = 0; o < L * KV; o++) {
            int64_t x[64], y[64];
            memcpy(x, a[0].pos + o * K, (size_t)K * sizeof(int64_t));
            memcpy(y, b[0].pos + o * K, (size_t)K * sizeof(int64_t));
            qsort(x, (size_t)K, sizeof(int64_t), cmp_i64);
            qsort(y, (size_t)K, sizeof(int64_t), cmp_i64);
            differ += memcmp(x, y, (size_t)K * sizeof(int64_t)) != 0;
        }
        CHECK_MSG(differ > 0, "window 8 selects what the last query does in every layer and head");
        free_jobs(a, 1);
        free_jobs(b, 1);
    }
    // W = 1 is the last query: max bitwise (the same log-probabilities), mean by position.
    for (int qa = 0; qa < 2; qa++) {
        qcfg w1 = {"window 1", ropts(12, 7, GROUP_AGG_MAX, W_, 1, qa ? RECYCLE_QUERY_MAX : RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 0, NULL};
        qcfg last = {"last", ropts(12, 7, GROUP_AGG_MAX, RECYCLE_QUERY_LAST, 1, RECYCLE_QUERY_MEAN, 0), N_PROMPT, 0, 0, 0, NULL};
        for (int N = 1; N <= 2; N++) {
            qjob a[MAX_RANKS], b[MAX_RANKS];
            run(&m, N, prompt, forced, &w1, a);
            run(&m, N, prompt, forced, &last, b);
            char what[96];
            snprintf(what, sizeof what, "window 1 %s vs last on %d rank(s)", qa ? "max" : "mean", N);
            CHECK_MSG(!a[0].failed && !b[0].failed, "%s: %s %s", what, a[0].err, b[0].err);
            same_sets(&a[0], &b[0], c, 0, qa, what);
            free_jobs(a, N);
            free_jobs(b, N);
        }
    }
    // Eval's way: a full-attention prefill, then recycled with the window: its
    // first step builds the cache from the same window the recycled prefill
    // used (the same positions from step 1 on), on 1 and 3 ranks.
    for (int qa = 0; qa < 2; qa++)
        for (int N = 1; N <= 3; N += 2) {
            qcfg pre = {"window 8 at the prefill", ropts(12, 7, GROUP_AGG_MAX, W_, 8, qa ? RECYCLE_QUERY_MAX : RECYCLE_QUERY_MEAN, 2),
                        N_PROMPT, 0, 0, 0, NULL};
            qcfg lazy = pre;
            lazy.label = "window 8 after a full prefill";
            lazy.lazy = 1;
            qjob a[MAX_RANKS], b[MAX_RANKS];
            run(&m, N, prompt, forced, &pre, a);
            run(&m, N, prompt, forced, &lazy, b);
            char what[120];
            snprintf(what, sizeof what, "window 8 %s: switched after a full prefill vs recycled prefill, %d rank(s)",
                     qa ? "max" : "mean", N);
            CHECK_MSG(!a[0].failed && !b[0].failed, "%s: %s %s", what, a[0].err, b[0].err);
            same_sets(&b[0], &a[0], c, 1, 1, what);
            CHECK_MSG(max_rel_diff(b[0].logits + c->n_vocab, a[0].logits + c->n_vocab, c->n_vocab) <= 1e-6,
                      "%s: step 1 logits differ", what);
            free_jobs(a, N);
            free_jobs(b, N);
        }
    // A window longer than the prompt fails, naming the flag.
    {
        qcfg shortp = {"window 8, prompt 5", ropts(4, 1, GROUP_AGG_MAX, W_, 8, RECYCLE_QUERY_MEAN, 0), 5, 0, 0, 0, NULL};
        qjob a[1];
        run(&m, 1, prompt, forced, &shortp, a);
        CHECK_MSG(a[0].failed && strstr(a[0].err, "--recycle-query-window"), "window 8 on a 5-token prompt: failed %d '%s'",
                  a[0].failed, a[0].err);
        free_jobs(a, 1);
    }
    model_free(&m);
    unlink(path);
    TEST_MAIN_END();
}
