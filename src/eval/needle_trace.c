#define _GNU_SOURCE  // memmem
#include "eval/needle_trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/backend.h"
#include "policy/kvpolicy.h"
#include "policy/recycle.h"

// The hooks cannot return an error: running out of memory while tracing ends
// the run with one line, as the CLI does.
static void die_oom(void) {
    fprintf(stderr, "recall: out of memory for the needle trace\n");
    exit(1);
}

struct needle_trace {
    FILE *out;
    comm *cm;
    int64_t L, H, KV, G;
    int64_t *pos;          // (n_pos) answer positions, ascending
    int *answer_of;        // (n_pos) index into answers
    int64_t n_pos;
    char **answers;
    int n_answers;
    int64_t run;           // id of the current run (-1 before the first)
    int active;
    int agg;               // enum group_agg of the rank computation
    int64_t pool;
    int64_t cur_step;      // the step whose scores the hook sees
    int64_t *rank;         // (L, KV, n_pos) from the layer's last scored step
    int64_t *rank_step;    // (L), -1: never scored
    double *mass;          // (L, KV, n_pos, G)
    uint8_t *mass_valid;   // (L) scored at cur_step
    uint8_t *held;         // (L, cache heads, n_pos)
    uint8_t *held_all;     // (n_ranks, L, cache heads, n_pos)
    int64_t *pos_buf;      // (pos_cap) positions of one cache head
    int64_t pos_cap;
    float *dense, *aggr, *pooled;  // (H, n), (n), (n)
    int64_t dense_cap;
    float *g_scores;       // gathered scores (several ranks)
    int64_t *g_pos, g_cap;
};

needle_trace *needle_trace_create(FILE *out, comm *cm, const model_config *c, rc_err *err) {
    needle_trace *t = calloc(1, sizeof(*t));
    if (!t) {
        rc_fail(err, "out of memory for the needle trace");
        return NULL;
    }
    t->out = cm->rank == 0 ? out : NULL;
    t->cm = cm;
    t->L = c->n_layer;
    t->H = c->n_head;
    t->KV = c->n_head_kv;
    t->G = c->n_head / c->n_head_kv;
    t->run = -1;
    t->rank_step = malloc((size_t)t->L * sizeof(int64_t));
    t->mass_valid = calloc((size_t)t->L, 1);
    if (!t->rank_step || !t->mass_valid) {
        needle_trace_free(t);
        rc_fail(err, "out of memory for the needle trace");
        return NULL;
    }
    return t;
}

void needle_trace_free(needle_trace *t) {
    if (!t) return;
    for (int i = 0; i < t->n_answers; i++) free(t->answers[i]);
    free(t->answers);
    free(t->pos); free(t->answer_of); free(t->rank); free(t->rank_step); free(t->mass); free(t->mass_valid);
    free(t->held); free(t->held_all); free(t->pos_buf); free(t->dense); free(t->aggr); free(t->pooled);
    free(t->g_scores); free(t->g_pos);
    free(t);
}

void needle_trace_set_output(needle_trace *t, FILE *out) { t->out = t->cm->rank == 0 ? out : NULL; }

void needle_trace_install(needle_trace *t, engine_opts *eo) {
    eo->on_attention_scores = needle_trace_on_scores;
    eo->hook_user = t;
}

// ---- answer positions ------------------------------------------------------------

// The token pieces of ids concatenated (malloc'd) and each token's first byte
// in it: off (n + 1).
static char *token_bytes(const tokenizer *tok, const int32_t *ids, int64_t n, int64_t **off_out, size_t *len_out) {
    int64_t *off = malloc((size_t)(n + 1) * sizeof(int64_t));
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    if (!off || !buf) goto oom;
    for (int64_t i = 0; i < n; i++) {
        off[i] = (int64_t)len;
        size_t need = tokenizer_token_bytes(tok, ids[i], NULL, 0);
        if (len + need + 1 > cap) {
            while (len + need + 1 > cap) cap *= 2;
            char *p = realloc(buf, cap);
            if (!p) goto oom;
            buf = p;
        }
        len += tokenizer_token_bytes(tok, ids[i], buf + len, need);
    }
    off[n] = (int64_t)len;
    buf[len] = '\0';
    *off_out = off;
    *len_out = len;
    return buf;
oom:
    free(off);
    free(buf);
    return NULL;
}

// The token whose bytes hold byte b (off ascending, n tokens).
static int64_t token_at(const int64_t *off, int64_t n, int64_t b) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (off[mid] <= b) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int needle_trace_set_positions(needle_trace *t, const int64_t *pos, const int *answer_of, int64_t n, rc_err *err) {
    if (n > NEEDLE_TRACE_MAX_POSITIONS) n = NEEDLE_TRACE_MAX_POSITIONS;
    free(t->pos); free(t->answer_of); free(t->rank); free(t->mass); free(t->held); free(t->held_all);
    t->pos = malloc((size_t)(n + 1) * sizeof(int64_t));
    t->answer_of = malloc((size_t)(n + 1) * sizeof(int));
    // Pairs sorted by position, so held/rank arrays follow the prompt order.
    int64_t *pairs = malloc((size_t)(2 * n + 1) * sizeof(int64_t));
    const int64_t cache_heads_max = t->H;  // query heads, the most a policy keeps per layer
    t->rank = malloc((size_t)(t->L * t->KV * n + 1) * sizeof(int64_t));
    t->mass = malloc((size_t)(t->L * t->KV * n * t->G + 1) * sizeof(double));
    t->held = malloc((size_t)(t->L * cache_heads_max * n + 1));
    t->held_all = malloc((size_t)(t->cm->size * t->L * cache_heads_max * n + 1));
    if (!t->pos || !t->answer_of || !pairs || !t->rank || !t->mass || !t->held || !t->held_all) {
        free(pairs);
        t->n_pos = 0;
        return rc_fail(err, "out of memory for the needle trace");
    }
    for (int64_t i = 0; i < n; i++) {
        pairs[2 * i] = pos[i];
        pairs[2 * i + 1] = answer_of ? answer_of[i] : 0;
    }
    qsort(pairs, (size_t)n, 2 * sizeof(int64_t), cmp_i64);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (m > 0 && t->pos[m - 1] == pairs[2 * i]) continue;  // one entry per position
        t->pos[m] = pairs[2 * i];
        t->answer_of[m++] = (int)pairs[2 * i + 1];
    }
    free(pairs);
    t->n_pos = m;
    return 0;
}

int64_t needle_trace_positions(const needle_trace *t, int64_t *pos, int64_t *answer_of) {
    for (int64_t i = 0; i < t->n_pos; i++) {
        pos[i] = t->pos[i];
        answer_of[i] = t->answer_of[i];
    }
    return t->n_pos;
}

static int add_answer(needle_trace *t, const char *text) {
    char **p = realloc(t->answers, (size_t)(t->n_answers + 1) * sizeof(char *));
    if (!p) return -1;
    t->answers = p;
    if (!(t->answers[t->n_answers] = strdup(text))) return -1;
    t->n_answers++;
    return 0;
}

int64_t needle_trace_locate(needle_trace *t, const tokenizer *tok, const int32_t *ids, int64_t n_ids,
                            const char *const *answers, int n_answers, const char *const *regions, int n_regions,
                            int *truncated) {
    *truncated = 0;
    t->n_pos = 0;
    for (int i = 0; i < t->n_answers; i++) free(t->answers[i]);
    free(t->answers);
    t->answers = NULL;
    t->n_answers = 0;
    for (int a = 0; a < n_answers; a++)
        if (add_answer(t, answers[a])) return 0;
    int64_t *off = NULL;
    size_t len = 0;
    char *text = token_bytes(tok, ids, n_ids, &off, &len);
    int64_t *pos = malloc((size_t)(NEEDLE_TRACE_MAX_POSITIONS + 1) * sizeof(int64_t));
    int *which = malloc((size_t)(NEEDLE_TRACE_MAX_POSITIONS + 1) * sizeof(int));
    int64_t n = 0;
    if (!text || !pos || !which) goto done;
    const int n_scopes = n_regions > 0 ? n_regions : 1;
    for (int r = 0; r < n_scopes; r++) {
        const char *lo = text, *hi = text + len;
        if (n_regions > 0) {
            const char *at = memmem(text, len, regions[r], strlen(regions[r]));
            if (!at) continue;
            lo = at;
            hi = at + strlen(regions[r]);
        }
        for (int a = 0; a < n_answers; a++) {
            const size_t alen = strlen(answers[a]);
            if (alen == 0) continue;
            for (const char *p = lo; p + alen <= hi;) {
                const char *at = memmem(p, (size_t)(hi - p), answers[a], alen);
                if (!at) break;
                const int64_t b0 = at - text, b1 = b0 + (int64_t)alen - 1;
                for (int64_t k = token_at(off, n_ids, b0); k <= token_at(off, n_ids, b1); k++) {
                    if (n == NEEDLE_TRACE_MAX_POSITIONS) {
                        *truncated = 1;
                        goto done;
                    }
                    pos[n] = k;
                    which[n++] = a;
                }
                p = at + alen;
            }
        }
    }
done:;
    rc_err err = {{0}};
    int64_t got = 0;
    if (n > 0 && needle_trace_set_positions(t, pos, which, n, &err) == 0) got = t->n_pos;
    free(pos);
    free(which);
    free(text);
    free(off);
    return got;
}

// ---- the scores hook -------------------------------------------------------------

static int grow_f(float **p, int64_t n) {
    float *q = realloc(*p, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!q) return -1;
    *p = q;
    return 0;
}

// Scores every rank's keys into t->dense (H, n_total) on rank 0. Returns 1
// on rank 0 when the dense scores are ready, 0 elsewhere.
static int gather_scores(needle_trace *t, int64_t n_total, const float *scores, const int64_t *key_pos,
                         int64_t n_keys) {
    comm *cm = t->cm;
    const int R = cm->size;
    if (n_total > t->dense_cap) {
        if (grow_f(&t->dense, t->H * n_total) || grow_f(&t->aggr, n_total) || grow_f(&t->pooled, n_total)) die_oom();
        t->dense_cap = n_total;
    }
    for (int64_t i = 0; i < t->H * n_total; i++) t->dense[i] = -INFINITY;
    if (R == 1) {
        for (int64_t j = 0; j < n_keys; j++)
            for (int64_t h = 0; h < t->H; h++) t->dense[h * n_total + key_pos[j]] = scores[h * n_keys + j];
        return 1;
    }
    // The trace's own traffic: kept out of the counters (see needle_trace.h).
    const comm_counters saved = cm->counters[cm->phase];
    rc_err err = {{0}};
    int64_t *nk = malloc((size_t)R * sizeof(int64_t));
    size_t *counts = malloc((size_t)R * sizeof(size_t));
    if (!nk || !counts) die_oom();
    if (comm_allgather(cm, &n_keys, sizeof(n_keys), nk, &err)) goto fail;
    int64_t total = 0;
    for (int r = 0; r < R; r++) total += nk[r];
    if (total > t->g_cap) {
        int64_t *p = realloc(t->g_pos, (size_t)(total > 0 ? total : 1) * sizeof(int64_t));
        if (!p || grow_f(&t->g_scores, t->H * total)) die_oom();
        t->g_pos = p;
        t->g_cap = total;
    }
    for (int r = 0; r < R; r++) counts[r] = (size_t)nk[r] * sizeof(int64_t);
    if (comm_allgatherv(cm, key_pos, counts, t->g_pos, &err)) goto fail;
    for (int r = 0; r < R; r++) counts[r] = (size_t)(nk[r] * t->H) * sizeof(float);
    if (comm_allgatherv(cm, scores, counts, t->g_scores, &err)) goto fail;
    cm->counters[cm->phase] = saved;
    if (cm->rank == 0) {
        int64_t at = 0;
        for (int r = 0; r < R; r++) {
            const float *blk = t->g_scores + at * t->H;  // rank r's (H, nk[r])
            for (int64_t j = 0; j < nk[r]; j++)
                for (int64_t h = 0; h < t->H; h++) t->dense[h * n_total + t->g_pos[at + j]] = blk[h * nk[r] + j];
            at += nk[r];
        }
    }
    free(nk);
    free(counts);
    return cm->rank == 0;
fail:
    fprintf(stderr, "recall: needle trace: %s\n", err.msg);
    exit(1);
}

// log p = s - lse, as the backends' score_reduce computes it.
static float logp(float s, float lse) { return lse == -INFINITY ? -INFINITY : s - lse; }

void needle_trace_on_scores(void *user, int64_t layer, int64_t n_total, const float *scores, const int64_t *key_pos,
                            int64_t n_keys, const float *lse) {
    needle_trace *t = user;
    if (!t->active || t->n_pos == 0) return;
    if (!gather_scores(t, n_total, scores, key_pos, n_keys)) return;
    const int64_t n = n_total, half = t->pool / 2, G = t->G;
    for (int64_t kv = 0; kv < t->KV; kv++) {
        // The recycled rebuild's reduction (policy/recycle.c, score_reduce + maxpool_rows).
        for (int64_t j = 0; j < n; j++) {
            const int64_t h0 = kv * G;
            if (t->agg == GROUP_AGG_MEAN) {
                double acc = 0.0;
                for (int64_t h = h0; h < h0 + G; h++)
                    if (lse[h] != -INFINITY) acc += exp((double)t->dense[h * n + j] - (double)lse[h]);
                t->aggr[j] = (float)(acc / (double)G);
            } else {
                float m = logp(t->dense[h0 * n + j], lse[h0]);
                if (t->agg == GROUP_AGG_MAX)
                    for (int64_t h = h0 + 1; h < h0 + G; h++) {
                        const float x = logp(t->dense[h * n + j], lse[h]);
                        if (x > m) m = x;
                    }
                t->aggr[j] = m;
            }
        }
        for (int64_t j = 0; j < n; j++) {
            float m = -INFINITY;
            for (int64_t x = j - half; x <= j + half; x++)
                if (x >= 0 && x < n && t->aggr[x] > m) m = t->aggr[x];
            t->pooled[j] = m;
        }
        for (int64_t i = 0; i < t->n_pos; i++) {
            const int64_t p = t->pos[i];
            int64_t r = 0;
            if (p < n) {
                const float s = t->pooled[p];
                for (int64_t j = 0; j < n; j++) r += t->pooled[j] > s || (t->pooled[j] == s && j < p);
            } else {
                r = -1;
            }
            t->rank[(layer * t->KV + kv) * t->n_pos + i] = r;
            for (int64_t g = 0; g < G; g++) {
                const int64_t h = kv * G + g;
                t->mass[((layer * t->KV + kv) * t->n_pos + i) * G + g] =
                    p < n && lse[h] != -INFINITY ? exp((double)t->dense[h * n + p] - (double)lse[h]) : 0.0;
            }
        }
    }
    t->rank_step[layer] = t->cur_step;
    t->mass_valid[layer] = 1;
}

// ---- runs and steps ----------------------------------------------------------------

static void write_json_line(FILE *out, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) fprintf(out, "%s\n", s);
    free(s);
}

static int64_t cache_heads(const engine *e) {
    const kvpolicy_state *ps = engine_policy(e);
    return ps ? ps->n_store : engine_model(e)->cfg.n_head_kv;
}

void needle_trace_begin(needle_trace *t, const engine *e, int64_t n_prompt, const char *label, const char *describe,
                        const char *extra_json, int group_agg, int64_t pool_kernel) {
    t->run++;
    t->active = 1;
    t->agg = group_agg;
    t->pool = pool_kernel > 0 ? pool_kernel : 1;
    t->cur_step = 0;
    for (int64_t l = 0; l < t->L; l++) t->rank_step[l] = -1;
    memset(t->mass_valid, 0, (size_t)t->L);
    if (!t->out) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "needle_run");
    cJSON_AddNumberToObject(o, "run", (double)t->run);
    cJSON_AddStringToObject(o, "method", label);
    cJSON_AddStringToObject(o, "attention", attention_kind_name(engine_attention(e)));
    cJSON_AddStringToObject(o, "describe", describe ? describe : "");
    cJSON *ans = cJSON_AddArrayToObject(o, "answers");
    for (int a = 0; a < t->n_answers; a++) cJSON_AddItemToArray(ans, cJSON_CreateString(t->answers[a]));
    cJSON *pos = cJSON_AddArrayToObject(o, "positions"), *of = cJSON_AddArrayToObject(o, "answer_of");
    for (int64_t i = 0; i < t->n_pos; i++) {
        cJSON_AddItemToArray(pos, cJSON_CreateNumber((double)t->pos[i]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber(t->answer_of[i]));
    }
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)n_prompt);
    cJSON_AddNumberToObject(o, "n_layer", (double)t->L);
    cJSON_AddNumberToObject(o, "kv_heads", (double)t->KV);
    cJSON_AddNumberToObject(o, "group", (double)t->G);
    const int64_t CH = cache_heads(e);
    cJSON_AddNumberToObject(o, "cache_heads", (double)CH);
    cJSON_AddStringToObject(o, "rank_agg", group_agg_name(t->agg));
    cJSON_AddNumberToObject(o, "rank_pool", (double)t->pool);
    const recycle_state *rs = engine_recycle(e);
    const kvpolicy_state *ps = engine_policy(e);
    if (rs || (ps && ps->built)) {
        cJSON *rows = cJSON_AddArrayToObject(o, "cache_rows");
        for (int64_t l = 0; l < t->L; l++) {
            cJSON *row = cJSON_CreateArray();
            for (int64_t h = 0; h < CH; h++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)(rs ? recycle_cache_cap(&rs->cache, l, h)
                                                                          : ps->budget[l * ps->n_store + h])));
            cJSON_AddItemToArray(rows, row);
        }
    } else {
        cJSON_AddNullToObject(o, "cache_rows");
    }
    cJSON *extra = extra_json ? cJSON_Parse(extra_json) : NULL;
    if (extra) {
        for (cJSON *it = extra->child; it; it = it->next)
            cJSON_AddItemToObject(o, it->string, cJSON_Duplicate(it, 1));
        cJSON_Delete(extra);
    }
    write_json_line(t->out, o);
    cJSON_Delete(o);
}

// held: (L, CH, n_pos); returns 0 where nothing is kept yet (null), 1 when filled.
static int fill_held(needle_trace *t, const engine *e) {
    const int64_t L = t->L, CH = cache_heads(e), n = t->n_pos;
    const recycle_state *rs = engine_recycle(e);
    const kvpolicy_state *ps = engine_policy(e);
    if (!rs && !ps) {  // full attention holds every position
        memset(t->held, 1, (size_t)(L * CH * n));
        return 1;
    }
    if (rs) {
        for (int64_t l = 0; l < L; l++)
            if (!rs->built[l]) return 0;
        if (rs->cache.k > t->pos_cap) {
            int64_t *p = realloc(t->pos_buf, (size_t)rs->cache.k * sizeof(int64_t));
            if (!p) die_oom();
            t->pos_buf = p;
            t->pos_cap = rs->cache.k;
        }
        for (int64_t l = 0; l < L; l++)
            for (int64_t h = 0; h < CH; h++) {
                const int64_t cnt = recycle_cache_positions(&rs->cache, l, h, t->pos_buf);
                qsort(t->pos_buf, (size_t)cnt, sizeof(int64_t), cmp_i64);
                for (int64_t i = 0; i < n; i++)
                    t->held[(l * CH + h) * n + i] =
                        bsearch(&t->pos[i], t->pos_buf, (size_t)cnt, sizeof(int64_t), cmp_i64) != NULL;
            }
        return 1;
    }
    if (!ps->built) return 0;
    for (int64_t l = 0; l < L; l++)
        for (int64_t h = 0; h < CH; h++) {
            const kv_store_head *sh = kv_store_head_at(&ps->store, l, h);  // ascending positions, this rank's
            for (int64_t i = 0; i < n; i++)
                t->held[(l * CH + h) * n + i] =
                    bsearch(&t->pos[i], sh->pos, (size_t)sh->count, sizeof(int64_t), cmp_i64) != NULL;
        }
    comm *cm = t->cm;
    if (cm->size > 1) {  // each rank keeps its own rows: a position is held if its owner holds it
        const size_t bytes = (size_t)(L * CH * n);
        const comm_counters saved = cm->counters[cm->phase];
        rc_err err = {{0}};
        if (comm_allgather(cm, t->held, bytes, t->held_all, &err)) {
            fprintf(stderr, "recall: needle trace: %s\n", err.msg);
            exit(1);
        }
        cm->counters[cm->phase] = saved;
        for (size_t b = 0; b < bytes; b++) {
            uint8_t v = 0;
            for (int r = 0; r < cm->size; r++) v |= t->held_all[(size_t)r * bytes + b];
            t->held[b] = v;
        }
    }
    return 1;
}

void needle_trace_step(needle_trace *t, const engine *e, int64_t step, int32_t token) {
    if (!t->active) return;
    const int64_t L = t->L, CH = cache_heads(e), n = t->n_pos, G = t->G;
    const int has_held = fill_held(t, e);
    const engine_step *st = engine_last_step(e);
    const int64_t pos = step == 0 ? engine_n_prompt(e) - 1 : st->pos;
    FILE *f = t->out;
    for (int64_t l = 0; f && l < L; l++) {
        // A policy's layer attends to its kept rows only, never to every position.
        const int full = step == 0 ? 1 : engine_policy(e) ? 0 : st->layer_full[l];
        fprintf(f, "{\"event\":\"needle_step\",\"run\":%lld,\"step\":%lld,\"pos\":%lld,\"token\":%d,\"layer\":%lld,"
                   "\"full\":%d,\"held\":",
                (long long)t->run, (long long)step, (long long)pos, token, (long long)l, full);
        if (!has_held) {
            fputs("null", f);
        } else {
            fputc('[', f);
            for (int64_t h = 0; h < CH; h++) {
                fputs(h ? ",[" : "[", f);
                for (int64_t i = 0; i < n; i++) fprintf(f, i ? ",%d" : "%d", t->held[(l * CH + h) * n + i]);
                fputc(']', f);
            }
            fputc(']', f);
        }
        const int ranked = t->rank_step[l] >= 0 && !engine_policy(e);
        fprintf(f, ",\"rank_step\":%lld,\"rank\":", (long long)(ranked ? t->rank_step[l] : -1));
        if (!ranked) {
            fputs("null", f);
        } else {
            fputc('[', f);
            for (int64_t kv = 0; kv < t->KV; kv++) {
                fputs(kv ? ",[" : "[", f);
                for (int64_t i = 0; i < n; i++)
                    fprintf(f, i ? ",%lld" : "%lld", (long long)t->rank[(l * t->KV + kv) * n + i]);
                fputc(']', f);
            }
            fputc(']', f);
        }
        fputs(",\"mass\":", f);
        if (!t->mass_valid[l]) {
            fputs("null", f);
        } else {
            fputc('[', f);
            for (int64_t kv = 0; kv < t->KV; kv++) {
                fputs(kv ? ",[" : "[", f);
                for (int64_t i = 0; i < n; i++) {
                    fputs(i ? ",[" : "[", f);
                    for (int64_t g = 0; g < G; g++)
                        fprintf(f, g ? ",%.6g" : "%.6g", t->mass[((l * t->KV + kv) * n + i) * G + g]);
                    fputc(']', f);
                }
                fputc(']', f);
            }
            fputc(']', f);
        }
        fputs("}\n", f);
    }
    memset(t->mass_valid, 0, (size_t)L);
    t->cur_step = step + 1;
}

int64_t needle_answer_step(const tokenizer *tok, const int32_t *tokens, int64_t n_tokens, const char *const *answers,
                           int n_answers, int64_t *matched) {
    *matched = 0;
    if (n_tokens <= 0) return -1;
    int64_t *off = NULL;
    size_t len = 0;
    char *text = token_bytes(tok, tokens, n_tokens, &off, &len);
    int64_t best = -1;
    size_t best_len = 0;
    // The longest prefix of any answer that occurs (at least half of it), earliest first.
    for (int a = 0; text && a < n_answers; a++) {
        const size_t alen = strlen(answers[a]);
        for (size_t k = alen; k > 0 && 2 * k >= alen && k >= best_len; k--) {
            const char *at = memmem(text, len, answers[a], k);
            if (!at) continue;
            if (k > best_len || at - text < best) {
                best = at - text;
                best_len = k;
            }
            break;
        }
    }
    const int64_t step = best < 0 ? -1 : token_at(off, n_tokens, best);
    *matched = (int64_t)best_len;
    free(text);
    free(off);
    return step;
}

void needle_trace_end(needle_trace *t, const tokenizer *tok, const int32_t *tokens, int64_t n_tokens) {
    if (!t->active) return;
    t->active = 0;
    if (!t->out) return;
    tokenizer_stream st = {0};
    const size_t cap = tokenizer_decode_cap(tok);
    char *piece = malloc(cap + 1);
    size_t out_cap = 256, out_len = 0;
    char *out = malloc(out_cap);
    if (!piece || !out) die_oom();
    for (int64_t i = 0; i <= n_tokens; i++) {
        const size_t k = i < n_tokens ? tokenizer_decode_stream(tok, &st, tokens[i], piece, cap)
                                      : tokenizer_stream_flush(tok, &st, piece, cap);
        if (out_len + k + 1 > out_cap) {
            while (out_len + k + 1 > out_cap) out_cap *= 2;
            char *p = realloc(out, out_cap);
            if (!p) die_oom();
            out = p;
        }
        memcpy(out + out_len, piece, k);
        out_len += k;
    }
    out[out_len] = '\0';
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "needle_end");
    cJSON_AddNumberToObject(o, "run", (double)t->run);
    cJSON_AddNumberToObject(o, "steps", (double)t->cur_step);
    cJSON_AddNumberToObject(o, "tokens", (double)n_tokens);
    cJSON_AddStringToObject(o, "output", out);
    int64_t matched = 0;
    const int64_t at = needle_answer_step(tok, tokens, n_tokens, (const char *const *)t->answers, t->n_answers, &matched);
    cJSON_AddNumberToObject(o, "answer_step", (double)at);
    cJSON_AddNumberToObject(o, "answer_bytes", (double)matched);
    write_json_line(t->out, o);
    fflush(t->out);
    cJSON_Delete(o);
    free(piece);
    free(out);
}
