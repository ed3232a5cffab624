// The needle trace (src/eval/needle_trace.h) on a tiny model, every prompt
// position traced, against an independent computation:
//   - mass: p = exp(scale q.k - lse) in double from the query the engine's
//     on_full_attention hook reports and the fp32 K rows of the full cache;
//   - rank: those p combined over the KV group (max, mean), max-pooled with
//     the window cut at the ends, ordered by (score desc, position asc);
//   - held: a simulated recycled cache: at each full layer the top K of that
//     order (logical order ascending), at each recycled layer the new token
//     appended at the tail and the front dropped once K are held;
//   - full attention holds everything; a policy's held sets are its kept rows.
// A traced run gives the same logits bit for bit, the same statistics and
// the same communication counters as an untraced one, on 1 and 2 simulated
// ranks, and the 2-rank trace (rank 0 gathers) equals the 1-rank one.
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "eval/needle_trace.h"
#include "backend/kv_format.h"
#include "peek.h"
#include "test_backend.h"
#include "tiny_model.h"
#include "ref_order.h"

#define N_PROMPT 60
#define N_DECODE 12
#define N_STEPS (N_DECODE + 1)  // step 0: the prefill
#define MAX_RANKS 2

typedef struct run_cfg {
    const char *label;
    int attention;
    recycle_opts ro;
    kvpolicy_opts po;
} run_cfg;

typedef struct job {
    const model *m;
    comm *c;
    const run_cfg *cfg;
    const int32_t *prompt;
    int traced;
    const tokenizer *tok;
    needle_trace *nt;
    FILE *out;             // rank 0's trace
    char *text;            // its contents after the run
    size_t text_len;
    float *logits;         // (N_STEPS, V)
    int32_t tokens[N_STEPS];
    uint8_t layer_full[N_STEPS * 8];
    engine_stats stats;
    int64_t stat_full[8], stat_rec[8];
    comm_counters counters[COMM_PHASE_COUNT];
    // brute force (one rank): hook values per layer at the current step
    float *hq, *hlse;
    uint8_t *hcalled;
    double *want_mass;     // (N_STEPS, L, KV, N_PROMPT, G), NaN: no full attention
    int64_t *want_lo, *want_hi;  // (N_STEPS, L, KV, N_PROMPT) rank bounds (ties)
    uint8_t *want_ranked;  // (N_STEPS, L)
    int64_t *ring;         // (L, KV, K) simulated recycled cache, logical order
    int64_t *ring_n;       // (L, KV)
    uint8_t *want_held;    // (N_STEPS, L, KV, N_PROMPT)
    uint8_t *policy_held;  // (N_STEPS, L, H, N_PROMPT): a policy's kept rows, read from its store
    int failed;
} job;

static void on_full(void *user, int64_t layer, int64_t n_total, const float *q, const float *lse) {
    job *j = user;
    const model_config *c = &j->m->cfg;
    (void)n_total;
    memcpy(j->hq + layer * c->n_head * c->head_dim, q, (size_t)(c->n_head * c->head_dim) * sizeof(float));
    memcpy(j->hlse + layer * c->n_head, lse, (size_t)c->n_head * sizeof(float));
    j->hcalled[layer] = 1;
}

static void on_scores(void *user, int64_t layer, int64_t n_total, const float *scores, const int64_t *key_pos,
                      int64_t n_keys, const float *lse) {
    job *j = user;
    if (j->nt) needle_trace_on_scores(j->nt, layer, n_total, scores, key_pos, n_keys, lse);
}


// After step `step` (all layers done): the brute-force expectations.
static void brute_step(job *j, const engine *e, int step) {
    const model_config *c = &j->m->cfg;
    const int64_t L = c->n_layer, H = c->n_head, KV = c->n_head_kv, G = H / KV, hd = c->head_dim;
    const int64_t n = e->n_past, P = N_PROMPT;
    const recycle_opts *o = &j->cfg->ro;
    const int recycled = j->cfg->attention == ATTENTION_RECYCLED, K = (int)o->k;
    const double scale = 1.0 / sqrt((double)hd);
    double *p = malloc((size_t)(H * n) * sizeof(double)), *agg = malloc((size_t)n * sizeof(double));
    ref_entry *ord = malloc((size_t)n * sizeof(ref_entry));
    for (int64_t l = 0; l < L; l++) {
        const size_t at = (size_t)(step * L + l);
        j->want_ranked[at] = j->hcalled[l];
        for (int64_t i = 0; i < KV * P * G; i++) j->want_mass[at * KV * P * G + i] = NAN;
        if (j->hcalled[l]) {
            const kv_view kk = kv_cache_k(&e->kv, l);
            float *kd = peek_copy(e->be, kk.data, (size_t)(KV * kk.head_stride) * sizeof(float));
            for (int64_t h = 0; h < H; h++) {
                const float *q = j->hq + (l * H + h) * hd;
                for (int64_t x = 0; x < n; x++) {
                    const float *k = kd + (h / G) * kk.head_stride + x * hd;  // one rank: slot = position
                    double dot = 0.0;
                    for (int64_t d = 0; d < hd; d++) dot += (double)q[d] * k[d];
                    p[h * n + x] = exp(scale * dot - j->hlse[l * H + h]);
                }
            }
            free(kd);
            for (int64_t kv = 0; kv < KV; kv++) {
                for (int64_t x = 0; x < n; x++) {
                    double a = 0.0;
                    for (int64_t g = 0; g < G; g++) {
                        const double v = p[(kv * G + g) * n + x];
                        a = o->group_agg == GROUP_AGG_MEAN ? a + v / (double)G : g == 0 ? v : fmax(a, v);
                    }
                    agg[x] = a;
                }
                for (int64_t x = 0; x < n; x++) {
                    double mx = -INFINITY;
                    for (int64_t y = x - o->pool_kernel / 2; y <= x + o->pool_kernel / 2; y++)
                        if (y >= 0 && y < n) mx = fmax(mx, agg[y]);
                    ord[x] = (ref_entry){mx, x};
                }
                for (int64_t i = 0; i < P; i++) {
                    const double s = ord[i].score;
                    int64_t lo = 0, hi = 0;
                    // Exactly equal scores (a pooling plateau) rank by position;
                    // near-equal ones (float vs double) may go either way.
                    for (int64_t x = 0; x < n; x++) {
                        if (x == i) continue;
                        const double v = ord[x].score;
                        lo += v > s * (1.0 + 1e-6) || (v == s && x < i);
                        hi += v >= s * (1.0 - 1e-6) && !(v == s && x > i);
                    }
                    j->want_lo[at * KV * P + kv * P + i] = lo;
                    j->want_hi[at * KV * P + kv * P + i] = hi;
                    for (int64_t g = 0; g < G; g++)
                        j->want_mass[((at * KV + kv) * P + i) * G + g] = p[(kv * G + g) * n + i];
                }
                if (recycled) {  // the rebuild: top K, kept in ascending order
                    ref_entry *sorted = malloc((size_t)n * sizeof(ref_entry));
                    memcpy(sorted, ord, (size_t)n * sizeof(ref_entry));
                    qsort(sorted, (size_t)n, sizeof(ref_entry), ref_cmp);
                    const int64_t ns = n < K ? n : K;
                    int64_t *ring = j->ring + (l * KV + kv) * K;
                    for (int64_t i = 0; i < ns; i++) ring[i] = sorted[ns - 1 - i].pos;
                    j->ring_n[l * KV + kv] = ns;
                    free(sorted);
                }
            }
        } else if (recycled) {  // a recycled layer: the new token joins, the front leaves when full
            for (int64_t kv = 0; kv < KV; kv++) {
                int64_t *ring = j->ring + (l * KV + kv) * K, *cnt = &j->ring_n[l * KV + kv];
                if (*cnt == K) {
                    memmove(ring, ring + 1, (size_t)(K - 1) * sizeof(int64_t));
                    (*cnt)--;
                }
                ring[(*cnt)++] = n - 1;
            }
        }
        for (int64_t kv = 0; kv < KV; kv++)
            for (int64_t i = 0; i < P; i++) {
                uint8_t h = !recycled;
                for (int64_t r = 0; recycled && r < j->ring_n[l * KV + kv]; r++) h |= j->ring[(l * KV + kv) * K + r] == i;
                j->want_held[(at * KV + kv) * P + i] = h;
            }
        if (e->policy && e->policy->built)
            for (int64_t sh = 0; sh < e->policy->n_store; sh++) {
                const kv_store_head *hh = kv_store_head_at(&e->policy->store, l, sh);
                for (int64_t i = 0; i < P; i++) {
                    uint8_t h = 0;
                    for (int64_t r = 0; r < hh->count; r++) h |= hh->pos[r] == i;
                    j->policy_held[(at * H + sh) * P + i] = h;
                }
            }
    }
    memset(j->hcalled, 0, (size_t)L);
    free(p);
    free(agg);
    free(ord);
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

static void *run_job(void *arg) {
    job *j = arg;
    const model_config *c = &j->m->cfg;
    const int64_t V = c->n_vocab, L = c->n_layer;
    rc_err err = {{0}};
    engine_opts o = engine_default_opts();
    o.n_ctx = N_PROMPT + N_DECODE;
    o.n_threads = 1;
    o.kv_elem = KV_F32;
    o.prefill_block = 16;
    o.comm = j->c;
    o.attention = j->cfg->attention;
    o.recycle = j->cfg->ro;
    o.policy = j->cfg->po;
    o.backend = test_backend();
    o.hook_user = j;
    if (j->traced) {
        o.on_attention_scores = on_scores;
        if (j->c->size == 1) o.on_full_attention = on_full;
        j->out = j->c->rank == 0 ? tmpfile() : NULL;
        j->nt = needle_trace_create(j->out, j->c, c, &err);
        int64_t pos[N_PROMPT];
        for (int64_t i = 0; i < N_PROMPT; i++) pos[i] = N_PROMPT - 1 - i;  // any order
        if (!j->nt || needle_trace_set_positions(j->nt, pos, NULL, N_PROMPT, &err)) goto fail;
    }
    engine *e = engine_create(j->m, &o, &err);
    if (!e) goto fail;
    if (j->nt) needle_trace_begin(j->nt, e, N_PROMPT, j->cfg->label, "test", "{\"case\":1}", j->cfg->ro.group_agg,
                                  j->cfg->ro.pool_kernel);
    if (engine_prefill(e, j->prompt, N_PROMPT, NULL, NULL, NULL, &err)) goto fail_e;
    for (int t = 0; t < N_STEPS; t++) {
        memcpy(j->logits + t * V, engine_logits(e), (size_t)V * sizeof(float));
        j->tokens[t] = argmax(engine_logits(e), V);
        if (t > 0) memcpy(j->layer_full + t * L, e->last_step.layer_full, (size_t)L);
        if (j->traced && j->c->size == 1) brute_step(j, e, t);
        if (j->nt) needle_trace_step(j->nt, e, t, j->tokens[t]);
        if (t + 1 < N_STEPS && engine_decode(e, j->tokens[t], &err)) goto fail_e;
    }
    if (j->nt) needle_trace_end(j->nt, j->tok, j->tokens, N_STEPS);
    j->stats = e->stats;
    for (int64_t l = 0; l < L; l++) j->stat_full[l] = e->stats.layer_full[l], j->stat_rec[l] = e->stats.layer_recycled[l];
    memcpy(j->counters, j->c->counters, sizeof(j->counters));
    engine_destroy(e);
    if (j->out) {
        fflush(j->out);
        j->text_len = (size_t)ftell(j->out);
        rewind(j->out);
        j->text = malloc(j->text_len + 1);
        j->text[fread(j->text, 1, j->text_len, j->out)] = '\0';
        fclose(j->out);
    }
    needle_trace_free(j->nt);
    return NULL;
fail_e:
    engine_destroy(e);
fail:
    fprintf(stderr, "%s rank %d: %s\n", j->cfg->label, j->c->rank, err.msg);
    j->failed = 1;
    return NULL;
}

static const tokenizer *g_tok;

static void run(const model *m, int n_ranks, int traced, const int32_t *prompt, const run_cfg *cfg, job *jobs) {
    const model_config *c = &m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, H = c->n_head, G = H / KV, P = N_PROMPT;
    comm *comms[MAX_RANKS];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(n_ranks, comms, &err) == 0, "%s", err.msg);
    pthread_t th[MAX_RANKS];
    const int64_t K = cfg->ro.k;
    for (int r = 0; r < n_ranks; r++) {
        job *j = &jobs[r];
        *j = (job){.m = m, .c = comms[r], .cfg = cfg, .prompt = prompt, .traced = traced, .tok = g_tok};
        j->logits = calloc((size_t)(N_STEPS * c->n_vocab), sizeof(float));
        j->hq = calloc((size_t)(L * H * c->head_dim), sizeof(float));
        j->hlse = calloc((size_t)(L * H), sizeof(float));
        j->hcalled = calloc((size_t)L, 1);
        j->want_mass = calloc((size_t)(N_STEPS * L * KV * P * G), sizeof(double));
        j->want_lo = calloc((size_t)(N_STEPS * L * KV * P), sizeof(int64_t));
        j->want_hi = calloc((size_t)(N_STEPS * L * KV * P), sizeof(int64_t));
        j->want_ranked = calloc((size_t)(N_STEPS * L), 1);
        j->ring = calloc((size_t)(L * KV * K), sizeof(int64_t));
        j->ring_n = calloc((size_t)(L * KV), sizeof(int64_t));
        j->want_held = calloc((size_t)(N_STEPS * L * KV * P), 1);
        j->policy_held = calloc((size_t)(N_STEPS * L * H * P), 1);
        pthread_create(&th[r], NULL, run_job, j);
    }
    for (int r = 0; r < n_ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < n_ranks; r++) {
        CHECK_MSG(!jobs[r].failed, "%s: rank %d of %d failed", cfg->label, r, n_ranks);
        comm_destroy(comms[r]);
    }
}

static void free_jobs(job *jobs, int n) {
    for (int r = 0; r < n; r++) {
        job *j = &jobs[r];
        free(j->logits); free(j->hq); free(j->hlse); free(j->hcalled); free(j->want_mass); free(j->want_lo);
        free(j->want_hi); free(j->want_ranked); free(j->ring); free(j->ring_n); free(j->want_held);
        free(j->policy_held); free(j->text);
    }
}

// The parsed trace: needle_step lines by (step, layer).
typedef struct trace {
    cJSON *run, *end;
    cJSON *steps[N_STEPS * 8];
    int n_lines;
} trace;

static void parse_trace(const char *text, int64_t L, trace *tr) {
    memset(tr, 0, sizeof(*tr));
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        cJSON *o = cJSON_ParseWithLength(p, nl ? (size_t)(nl - p) : strlen(p));
        CHECK_MSG(o != NULL, "a trace line is not JSON: %.80s", p);
        tr->n_lines++;
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "event");
        if (o && cJSON_IsString(ev) && !strcmp(ev->valuestring, "needle_run")) tr->run = o;
        else if (o && cJSON_IsString(ev) && !strcmp(ev->valuestring, "needle_end")) tr->end = o;
        else if (o && cJSON_IsString(ev) && !strcmp(ev->valuestring, "needle_step")) {
            const int s = cJSON_GetObjectItem(o, "step")->valueint, l = cJSON_GetObjectItem(o, "layer")->valueint;
            CHECK(s >= 0 && s < N_STEPS && l >= 0 && l < L && !tr->steps[s * L + l]);
            if (s >= 0 && s < N_STEPS && l >= 0 && l < L && !tr->steps[s * L + l]) tr->steps[s * L + l] = o;
            else cJSON_Delete(o);
        } else {
            CHECK_MSG(0, "unexpected trace line %.80s", p);
            cJSON_Delete(o);
        }
        p = nl ? nl + 1 : NULL;
    }
}

static void free_trace(trace *tr) {
    cJSON_Delete(tr->run);
    cJSON_Delete(tr->end);
    for (int i = 0; i < N_STEPS * 8; i++) cJSON_Delete(tr->steps[i]);
}

static double num_at(const cJSON *a, int i, int k, int g) {
    const cJSON *x = cJSON_GetArrayItem(a, i);
    if (k >= 0) x = cJSON_GetArrayItem(x, k);
    if (g >= 0) x = cJSON_GetArrayItem(x, g);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

// The trace of one rank against the brute force.
static void check_against_brute(const job *j, const trace *tr) {
    const model_config *c = &j->m->cfg;
    const int64_t L = c->n_layer, KV = c->n_head_kv, H = c->n_head, G = H / KV, P = N_PROMPT;
    const char *what = j->cfg->label;
    const int recycled = j->cfg->attention == ATTENTION_RECYCLED, policy = attention_kind_is_policy(j->cfg->attention);
    CHECK_MSG(tr->run && tr->end, "%s: no needle_run or needle_end line", what);
    CHECK_MSG(tr->n_lines == 2 + N_STEPS * L, "%s: %d lines, expected %lld", what, tr->n_lines, (long long)(2 + N_STEPS * L));
    const cJSON *pos = cJSON_GetObjectItem(tr->run, "positions");
    CHECK(cJSON_GetArraySize(pos) == P);
    for (int i = 0; i < P && i < cJSON_GetArraySize(pos); i++) CHECK(num_at(pos, i, -1, -1) == i);  // sorted
    int64_t n_held_checked = 0, n_mass = 0, n_rank = 0, n_full_steps = 0, n_recycled_steps = 0;
    for (int s = 0; s < N_STEPS; s++)
        for (int64_t l = 0; l < L; l++) {
            const cJSON *o = tr->steps[s * L + l];
            CHECK_MSG(o != NULL, "%s: no line for step %d layer %lld", what, s, (long long)l);
            if (!o) continue;
            const size_t at = (size_t)(s * L + l);
            const int full = cJSON_GetObjectItem(o, "full")->valueint;
            CHECK_MSG(full == (s == 0 ? 1 : policy ? 0 : j->layer_full[s * L + l]), "%s step %d layer %lld: full %d",
                      what, s, (long long)l, full);
            if (s > 0) n_full_steps += full, n_recycled_steps += !full;
            CHECK(cJSON_GetObjectItem(o, "token")->valueint == j->tokens[s]);
            const cJSON *held = cJSON_GetObjectItem(o, "held"), *rank = cJSON_GetObjectItem(o, "rank"),
                        *mass = cJSON_GetObjectItem(o, "mass");
            if (policy) {  // compressed at the end of the prefill: held from step 0 on
                for (int64_t h = 0; h < KV; h++)
                    for (int64_t i = 0; i < P; i++)
                        CHECK_MSG(num_at(held, (int)h, (int)i, -1) == j->policy_held[(at * H + h) * P + i],
                                  "%s step %d layer %lld head %lld pos %lld: held differs from the policy's store", what,
                                  s, (long long)l, (long long)h, (long long)i);
                n_held_checked++;
            } else {
                for (int64_t kv = 0; kv < KV; kv++)
                    for (int64_t i = 0; i < P; i++) {
                        const double got = num_at(held, (int)kv, (int)i, -1);
                        CHECK_MSG(got == j->want_held[(at * KV + kv) * P + i],
                                  "%s step %d layer %lld KV head %lld position %lld: trace held %g, brute force %d", what,
                                  s, (long long)l, (long long)kv, (long long)i, got, j->want_held[(at * KV + kv) * P + i]);
                    }
                n_held_checked++;
            }
            // mass and rank exactly where full attention ran (and its scores were seen)
            const int scored = j->want_ranked[at];
            CHECK_MSG(cJSON_IsNull(mass) == !scored, "%s step %d layer %lld: mass %s, full attention %s", what, s,
                      (long long)l, cJSON_IsNull(mass) ? "null" : "given", scored ? "ran" : "did not run");
            if (scored && !cJSON_IsNull(mass)) {
                n_mass++;
                for (int64_t kv = 0; kv < KV; kv++)
                    for (int64_t i = 0; i < P; i++)
                        for (int64_t g = 0; g < G; g++) {
                            const double want = j->want_mass[((at * KV + kv) * P + i) * G + g];
                            CHECK_CLOSE(num_at(mass, (int)kv, (int)i, (int)g), want, 1e-7, 1e-4);
                        }
            }
            if (policy) {
                CHECK(cJSON_IsNull(rank));
                continue;
            }
            if (scored) {
                n_rank++;
                CHECK_MSG(cJSON_GetObjectItem(o, "rank_step")->valueint == s, "%s step %d layer %lld: rank_step", what,
                          s, (long long)l);
                for (int64_t kv = 0; kv < KV; kv++)
                    for (int64_t i = 0; i < P; i++) {
                        const double r = num_at(rank, (int)kv, (int)i, -1);
                        const int64_t lo = j->want_lo[(at * KV + kv) * P + i], hi = j->want_hi[(at * KV + kv) * P + i];
                        CHECK_MSG(r >= lo && r <= hi, "%s step %d layer %lld KV head %lld position %lld: rank %g, brute "
                                  "force %lld..%lld", what, s, (long long)l, (long long)kv, (long long)i, r,
                                  (long long)lo, (long long)hi);
                    }
            } else if (s > 0) {  // a recycled layer keeps the rank of its last rebuild
                const cJSON *prev = tr->steps[(s - 1) * L + l];
                CHECK(prev && cJSON_GetObjectItem(o, "rank_step")->valueint ==
                                  cJSON_GetObjectItem(prev, "rank_step")->valueint);
            }
        }
    CHECK_MSG(n_held_checked == N_STEPS * L && (policy || n_mass > 0), "%s: nothing checked", what);
    if (recycled)  // not vacuous: both kinds of layer steps happened
        CHECK_MSG(n_full_steps > 0 && n_recycled_steps > n_full_steps, "%s: %lld full, %lld recycled layer steps", what,
                  (long long)n_full_steps, (long long)n_recycled_steps);
    if (recycled) CHECK_MSG(n_rank > L, "%s: %lld ranked layer steps", what, (long long)n_rank);
}

// A traced run computes exactly what an untraced one does.
static void check_same_run(const job *a, const job *b, const model_config *c, const char *what) {
    const int64_t V = c->n_vocab, L = c->n_layer;
    CHECK_MSG(memcmp(a->tokens, b->tokens, sizeof(a->tokens)) == 0, "%s: tokens differ", what);
    CHECK_MSG(memcmp(a->logits, b->logits, (size_t)(N_STEPS * V) * sizeof(float)) == 0, "%s: logits differ", what);
    CHECK_MSG(memcmp(a->layer_full, b->layer_full, sizeof(a->layer_full)) == 0, "%s: schedules differ", what);
    CHECK_MSG(a->stats.kv_bytes_read == b->stats.kv_bytes_read && a->stats.n_full_steps == b->stats.n_full_steps &&
                  a->stats.n_decode_tokens == b->stats.n_decode_tokens,
              "%s: statistics differ", what);
    for (int64_t l = 0; l < L; l++) CHECK(a->stat_full[l] == b->stat_full[l] && a->stat_rec[l] == b->stat_rec[l]);
    for (int ph = 0; ph < COMM_PHASE_COUNT; ph++)
        CHECK_MSG(a->counters[ph].n_calls == b->counters[ph].n_calls &&
                      a->counters[ph].bytes_sent == b->counters[ph].bytes_sent &&
                      a->counters[ph].bytes_recv == b->counters[ph].bytes_recv,
                  "%s: communication counters of phase %d differ (%lld vs %lld calls)", what, ph,
                  (long long)a->counters[ph].n_calls, (long long)b->counters[ph].n_calls);
}

// The 2-rank trace (rank 0 gathers) against the 1-rank one.
static void check_same_trace(const trace *a, const trace *b, int64_t L, const char *what) {
    for (int s = 0; s < N_STEPS; s++)
        for (int64_t l = 0; l < L; l++) {
            const cJSON *x = a->steps[s * L + l], *y = b->steps[s * L + l];
            CHECK_MSG(x && y, "%s: step %d layer %lld missing", what, s, (long long)l);
            if (!x || !y) continue;
            char *hx = cJSON_PrintUnformatted(cJSON_GetObjectItem(x, "held"));
            char *hy = cJSON_PrintUnformatted(cJSON_GetObjectItem(y, "held"));
            char *rx = cJSON_PrintUnformatted(cJSON_GetObjectItem(x, "rank"));
            char *ry = cJSON_PrintUnformatted(cJSON_GetObjectItem(y, "rank"));
            CHECK_MSG(!strcmp(hx, hy), "%s step %d layer %lld: held differs between 2 ranks and 1", what, s, (long long)l);
            CHECK_MSG(!strcmp(rx, ry), "%s step %d layer %lld: rank differs between 2 ranks and 1:\n%s\n%s", what, s,
                      (long long)l, rx, ry);
            const cJSON *mx = cJSON_GetObjectItem(x, "mass"), *my = cJSON_GetObjectItem(y, "mass");
            CHECK(cJSON_IsNull(mx) == cJSON_IsNull(my));
            if (!cJSON_IsNull(mx) && !cJSON_IsNull(my))
                for (int kv = 0; kv < cJSON_GetArraySize(mx); kv++)
                    for (int i = 0; i < N_PROMPT; i++)
                        for (int g = 0; g < cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(mx, kv), i)); g++)
                            CHECK_CLOSE(num_at(mx, kv, i, g), num_at(my, kv, i, g), 1e-7, 1e-4);
            free(hx); free(hy); free(rx); free(ry);
        }
}

// needle_trace_locate: the tokens whose pieces overlap each occurrence, inside a region when given.
static void test_locate(const model *m, const tokenizer *tok) {
    rc_err err = {{0}};
    const char *text = "code 8353752 here; again 8353752. Needle: the value is 4823262 (4823262 twice).";
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(tokenizer_encode(tok, text, strlen(text), 0, 0, &ids, &n, &err) == 0);
    needle_trace *t = needle_trace_create(NULL, &(comm){.size = 1}, &m->cfg, &err);
    CHECK(t != NULL);
    if (!t || !ids) return;
    const char *answers[] = {"8353752", "4823262"};
    const char *region[] = {"the value is 4823262"};
    int truncated = 0;
    for (int mode = 0; mode < 2; mode++) {
        const int64_t got = needle_trace_locate(t, tok, ids, (int64_t)n, answers, 2, mode ? region : NULL, mode,
                                                &truncated);
        int64_t pos[NEEDLE_TRACE_MAX_POSITIONS], of[NEEDLE_TRACE_MAX_POSITIONS];
        CHECK(needle_trace_positions(t, pos, of) == got && !truncated);
        // Expected, independently: walk the pieces and mark those overlapping an occurrence.
        char buf[256];
        size_t off = 0;
        int64_t want = 0;
        const char *scope = mode ? strstr(text, region[0]) : text;
        const size_t scope_len = mode ? strlen(region[0]) : strlen(text);
        for (size_t i = 0; i < n; i++) {
            const size_t len = tokenizer_token_bytes(tok, ids[i], buf, sizeof(buf));
            int hit = -1;
            for (int a = 0; a < 2 && hit < 0; a++)
                for (const char *p = strstr(scope, answers[a]); p && p + strlen(answers[a]) <= scope + scope_len;
                     p = strstr(p + 1, answers[a])) {
                    const size_t b0 = (size_t)(p - text), b1 = b0 + strlen(answers[a]);
                    if (off < b1 && off + len > b0) hit = a;
                }
            if (hit >= 0) {
                CHECK_MSG(want < got && pos[want] == (int64_t)i && of[want] == hit, "mode %d: token %zu (answer %d)",
                          mode, i, hit);
                want++;
            }
            off += len;
        }
        CHECK_MSG(want == got && got > 0, "mode %d: %lld positions, expected %lld", mode, (long long)got, (long long)want);
    }
    const char *absent[] = {"zebra"};
    CHECK(needle_trace_locate(t, tok, ids, (int64_t)n, absent, 1, NULL, 0, &truncated) == 0);
    // The answer step: the token that starts the first occurrence in an output.
    const char *out_text = "it is 4823262.";
    int32_t *out = NULL;
    size_t n_out = 0;
    CHECK(tokenizer_encode(tok, out_text, strlen(out_text), 0, 0, &out, &n_out, &err) == 0);
    int64_t matched = 0;
    const int64_t st = needle_answer_step(tok, out, (int64_t)n_out, answers, 2, &matched);
    CHECK(matched == 7);
    size_t off = 0;
    int64_t want_st = -1;
    for (size_t i = 0; i < n_out && want_st < 0; i++) {
        char buf[256];
        const size_t len = tokenizer_token_bytes(tok, out[i], buf, sizeof(buf));
        if (off + len > 6) want_st = (int64_t)i;  // "it is " is 6 bytes
        off += len;
    }
    CHECK_MSG(st == want_st && st > 0, "answer step %lld, expected %lld", (long long)st, (long long)want_st);
    CHECK(needle_answer_step(tok, out, 2, answers, 2, &matched) == -1 && matched == 0);
    free(out);
    // A value started right and lost: "4823" of 4823262 (4 of 7 bytes) counts; "48" does not.
    for (int k = 0; k < 2; k++) {
        const char *lost = k ? "no, 48 then" : "no, 4823 then";
        CHECK(tokenizer_encode(tok, lost, strlen(lost), 0, 0, &out, &n_out, &err) == 0);
        const int64_t st2 = needle_answer_step(tok, out, (int64_t)n_out, answers, 2, &matched);
        CHECK_MSG(k ? st2 == -1 && matched == 0 : st2 > 0 && matched == 4, "'%s': step %lld, %lld bytes", lost,
                  (long long)st2, (long long)matched);
        free(out);
    }
    free(ids);
    needle_trace_free(t);
}

static recycle_opts ropts(int64_t k, int64_t stride, int64_t pool, int agg) {
    recycle_opts o = recycle_default_opts();
    o.k = k;
    o.stride = stride;
    o.pool_kernel = pool;
    o.group_agg = agg;
    return o;
}

int main(void) {
    test_backend_setup();
    char path[64];
    rc_err err = {{0}};
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);
    const model_config *c = &m.cfg;
    CHECK(c->n_layer <= 8);
    tokenizer *tok = NULL;
    CHECK_MSG(tokenizer_init(&tok, &m.file, &err) == 0, "%s", err.msg);
    g_tok = tok;
    test_locate(&m, tok);
    int32_t prompt[N_PROMPT];
    uint64_t s = 2024;
    for (int i = 0; i < N_PROMPT; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((s >> 33) % (uint64_t)(c->n_vocab - 3));
    }
    kvpolicy_opts snap = kvpolicy_default_opts();
    snap.budget = 16;
    snap.window = 4;
    const run_cfg cfgs[] = {
        {.label = "recycled K 12, stride 4, pool 5, max", .attention = ATTENTION_RECYCLED,
         .ro = ropts(12, 4, 5, GROUP_AGG_MAX), .po = kvpolicy_default_opts()},
        {.label = "recycled K 9, stride 3, pool 1, mean", .attention = ATTENTION_RECYCLED,
         .ro = ropts(9, 3, 1, GROUP_AGG_MEAN), .po = kvpolicy_default_opts()},
        {.label = "full", .attention = ATTENTION_FULL, .ro = ropts(12, 4, 7, GROUP_AGG_MAX),
         .po = kvpolicy_default_opts()},
        {.label = "snapkv budget 16", .attention = ATTENTION_SNAPKV, .ro = ropts(12, 4, 7, GROUP_AGG_MAX), .po = snap},
    };
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        job plain[MAX_RANKS], traced[MAX_RANKS], plain2[MAX_RANKS], traced2[MAX_RANKS];
        run(&m, 1, 0, prompt, &cfgs[i], plain);
        run(&m, 1, 1, prompt, &cfgs[i], traced);
        char what[160];
        snprintf(what, sizeof(what), "%s, traced vs untraced", cfgs[i].label);
        check_same_run(&traced[0], &plain[0], c, what);
        trace tr1 = {0}, tr2 = {0};
        if (traced[0].text) {
            parse_trace(traced[0].text, c->n_layer, &tr1);
            check_against_brute(&traced[0], &tr1);
        }
        // Two simulated ranks: the counters of an untraced run, and rank 0's trace equal to one rank's.
        run(&m, 2, 0, prompt, &cfgs[i], plain2);
        run(&m, 2, 1, prompt, &cfgs[i], traced2);
        for (int r = 0; r < 2; r++) {
            snprintf(what, sizeof(what), "%s, 2 ranks, rank %d, traced vs untraced", cfgs[i].label, r);
            check_same_run(&traced2[r], &plain2[r], c, what);
        }
        CHECK_MSG(traced2[1].text == NULL, "rank 1 must write nothing");
        if (traced2[0].text && traced[0].text) {
            parse_trace(traced2[0].text, c->n_layer, &tr2);
            snprintf(what, sizeof(what), "%s, 2 ranks vs 1", cfgs[i].label);
            check_same_trace(&tr2, &tr1, c->n_layer, what);
        }
        free_trace(&tr1);
        free_trace(&tr2);
        free_jobs(plain, 1);
        free_jobs(traced, 1);
        free_jobs(plain2, 2);
        free_jobs(traced2, 2);
    }
    tokenizer_free(tok);
    model_free(&m);
    remove(path);
    TEST_MAIN_END();
}
