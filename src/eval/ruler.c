// RULER samples of a requested length (see ruler.h): the task's fixed part
// (ruler_tasks.c), then a search over the size n (regula falsi on full-prompt
// token counts) so the prompt lands within RULER_LENGTH_TOLERANCE of
// target_tokens; each probe encodes the whole prompt once, so a 32K-token
// sample costs a handful of ~15 ms encodes, never a re-tokenization per added
// sentence. Also the chat template around the prompt.
#include "eval/ruler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/strbuf.h"
#include "eval/ruler_gen.h"
#include "eval/text.h"
#include "tokenizer/chat.h"

#define FIT_MAX_PROBES 40
#define FIT_MAX_VARIANTS 24

// ---------------------------------------------------------------------------
// Sizing

typedef struct built {
    strbuf prompt;
    int64_t n, n_tokens;
    size_t ctx_begin, ctx_end;
    size_t needle_off[MAX_NEEDLES];  // in the prompt
} built;

static int count_tokens(const gen *g, const char *text, size_t n_bytes, int64_t *n_tokens, rc_err *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenizer_encode(g->o->tok, text, n_bytes, tokenizer_add_bos(g->o->tok), g->o->chat != NULL, &ids, &n, err);
    free(ids);
    if (rc) return rc_wrap(err, "ruler: encoding the prompt");
    *n_tokens = (int64_t)n;
    return 0;
}

// The prompt for size n (variant: another draw of the sized part's randomness).
static int probe(gen *g, int64_t n, uint64_t variant, built *b, rc_err *err) {
    strbuf *ctx = &g->ctx;
    sb_clear(ctx);
    size_t noff[MAX_NEEDLES] = {0};
    int rc;
    switch (g->t->kind) {
    case KIND_NIAH: rc = niah_context(g, n, variant, ctx, noff); break;
    case KIND_VT: rc = vt_context(g, n, variant, ctx); break;
    case KIND_CWE: rc = cwe_context(g, n, variant, ctx); break;
    default: rc = fwe_context(g, n, variant, ctx); break;
    }
    if (rc || ctx->oom || g->h.oom) return ruler_oom(err);
    strbuf *p = &b->prompt;
    sb_clear(p);
    if (g->chat_pre) sb_puts(p, g->chat_pre);
    sb_puts(p, g->head);
    b->ctx_begin = p->n;
    sb_put(p, ctx->p ? ctx->p : "", ctx->n);
    b->ctx_end = p->n;
    sb_puts(p, g->tail);
    if (g->chat_post) sb_puts(p, g->chat_post);
    sb_puts(p, g->answer_prefix);
    if (p->oom) return ruler_oom(err);
    for (int i = 0; i < MAX_NEEDLES; i++) b->needle_off[i] = b->ctx_begin + noff[i];
    b->n = n;
    return count_tokens(g, p->p, p->n, &b->n_tokens, err);
}

static void swap_built(built *a, built *b) {
    built t = *a;
    *a = *b;
    *b = t;
}

// Regula falsi over the size n on whole-prompt token counts, bracketed by the
// largest size known to be short and the smallest known to be long; then,
// if the window falls between two neighbouring sizes, other draws of the
// sized randomness at those sizes.
static int fit(gen *g, built *best, rc_err *err) {
    const int64_t target = g->o->target_tokens;
    const int64_t slack = (int64_t)floor(RULER_LENGTH_TOLERANCE * (double)target);
    const int64_t lo = target - slack, hi = target + slack;
    built cur = {0};
    int rc = -1;
#define IN_WINDOW(t) ((t) >= lo && (t) <= hi)
#define CONSIDER()                                                                                        \
    do {                                                                                                  \
        if (best->n_tokens < 0 || llabs(cur.n_tokens - target) < llabs(best->n_tokens - target)) swap_built(&cur, best); \
    } while (0)
    best->n_tokens = -1;
    if (probe(g, g->n_min, 0, &cur, err)) goto done;
    int64_t t0 = cur.n_tokens;
    if (t0 > hi) {
        rc = rc_fail(err, "ruler: %s: target %lld tokens is too small: the prompt without haystack already takes %lld tokens",
                     g->t->name, (long long)target, (long long)t0);
        goto done;
    }
    CONSIDER();
    if (IN_WINDOW(t0)) {
        rc = 0;
        goto done;
    }
    int64_t below_n = g->n_min, below_t = t0, above_n = -1, above_t = 0, last_n = -1;
    int64_t n = g->n_min + 32 < g->n_max ? g->n_min + 32 : g->n_max;
    for (int it = 0; it < FIT_MAX_PROBES; it++) {
        if (probe(g, n, 0, &cur, err)) goto done;
        int64_t t = cur.n_tokens;
        CONSIDER();
        if (IN_WINDOW(t)) {
            rc = 0;
            goto done;
        }
        if (t < lo && n > below_n && (above_n < 0 || n < above_n)) below_n = n, below_t = t;
        if (t > hi && n > below_n && (above_n < 0 || n < above_n)) above_n = n, above_t = t;
        last_n = n;
        if (above_n < 0) {
            if (below_n >= g->n_max) {
                rc = rc_fail(err, "ruler: %s: target %lld tokens is too large: the largest haystack gives %lld tokens%s",
                             g->t->name, (long long)target, (long long)below_t,
                             g->t->kind == KIND_CWE ? " (cwe ran out of distinct words)" : "");
                goto done;
            }
            double rate = below_n > g->n_min ? (double)(below_t - t0) / (double)(below_n - g->n_min) : 1.0;
            if (rate <= 0) rate = 1.0;
            int64_t step = (int64_t)ceil((double)(target - below_t) / rate);
            n = below_n + (step > 1 ? step : 1);
            if (n > g->n_max) n = g->n_max;
        } else {
            if (above_n - below_n <= 1) break;
            double f = (double)(target - below_t) / (double)(above_t - below_t);
            n = below_n + (int64_t)llround(f * (double)(above_n - below_n));
            if (n <= below_n) n = below_n + 1;
            if (n >= above_n) n = above_n - 1;
            if (n == last_n) n = below_n + (above_n - below_n) / 2;
        }
    }
    if (above_n >= 0 && above_n - below_n <= 1) {
        for (uint64_t v = 1; v <= FIT_MAX_VARIANTS; v++) {
            int64_t cand[2] = {below_n, above_n};
            for (int c = 0; c < 2; c++) {
                if (probe(g, cand[c], v, &cur, err)) goto done;
                CONSIDER();
                if (IN_WINDOW(cur.n_tokens)) {
                    rc = 0;
                    goto done;
                }
            }
        }
    }
    rc = rc_fail(err, "ruler: %s: no haystack size gives %lld tokens +-%lld (closest: %lld)", g->t->name,
                 (long long)target, (long long)slack, (long long)best->n_tokens);
done:
#undef IN_WINDOW
#undef CONSIDER
    sb_free(&cur.prompt);
    return rc;
}

// ---------------------------------------------------------------------------
// Public API

#define CHAT_MARK "\x1eRULER_USER_MESSAGE\x1e"

static int setup_chat(gen *g, rc_err *err) {
    char *text = NULL;
    if (chat_format(g->o->chat, NULL, CHAT_MARK, &text, err)) return rc_wrap(err, "ruler: chat template");
    char *at = strstr(text, CHAT_MARK);
    if (!at || strstr(at + 1, CHAT_MARK)) {
        free(text);
        return rc_fail(err, "ruler: chat template: the user message does not appear exactly once");
    }
    *at = '\0';
    g->chat_pre = ruler_strdup(text);
    g->chat_post = ruler_strdup(at + strlen(CHAT_MARK));
    free(text);
    if (!g->chat_pre || !g->chat_post) return ruler_oom(err);
    // The answer prefix continues the assistant turn: no leading space after
    // a header that ends in whitespace (ChatML "assistant\n", Llama-3 "\n\n").
    size_t n = strlen(g->chat_post);
    if (n && text_is_space(g->chat_post[n - 1]) && g->answer_prefix[0] == ' ')
        memmove(g->answer_prefix, g->answer_prefix + 1, strlen(g->answer_prefix));
    return 0;
}

// The prompt must be exactly what chat_format gives for its user message.
static int check_chat(const gen *g, const built *b, rc_err *err) {
    size_t pre = strlen(g->chat_pre), post = strlen(g->chat_post), ap = strlen(g->answer_prefix);
    size_t user_len = b->prompt.n - pre - post - ap;
    char *user = malloc(user_len + 1), *text = NULL;
    if (!user) return ruler_oom(err);
    memcpy(user, b->prompt.p + pre, user_len);
    user[user_len] = '\0';
    int rc = chat_format(g->o->chat, NULL, user, &text, err);
    free(user);
    if (rc) return rc_wrap(err, "ruler: chat template");
    int same = strlen(text) == b->prompt.n - ap && memcmp(text, b->prompt.p, b->prompt.n - ap) == 0;
    free(text);
    return same ? 0 : rc_fail(err, "ruler: chat template: the prompt is not the template around the user message");
}

static char **dup_strings(char *const *src, int n) {
    char **out = calloc((size_t)(n > 0 ? n : 1), sizeof(*out));
    if (!out) return NULL;
    for (int i = 0; i < n; i++)
        if (!(out[i] = ruler_strdup(src[i]))) {
            for (int j = 0; j < i; j++) free(out[j]);
            free(out);
            return NULL;
        }
    return out;
}

int ruler_generate(const ruler_gen_opts *o, ruler_sample *out, rc_err *err) {
    if (!out) return rc_fail(err, "ruler: no output sample");
    memset(out, 0, sizeof(*out));
    if (!o || !o->tok) return rc_fail(err, "ruler: no options or no tokenizer");
    const task_spec *t = ruler_find_task(o->task);
    if (!t) return rc_fail(err, "ruler: unknown task '%s'", o->task ? o->task : "(null)");
    if (o->target_tokens <= 0) return rc_fail(err, "ruler: %s: target_tokens must be positive", t->name);
    if (isnan(o->depth) || o->depth > 1.0) return rc_fail(err, "ruler: %s: depth %g is not in [0, 1] (or < 0 for a random one)", t->name, o->depth);
    if (t->hay == HAY_ESSAY && (!o->prose || o->prose_len == 0))
        return rc_fail(err, "ruler: %s needs the essay haystack (ruler_load_prose; launch/setup.sh extracts it)", t->name);

    gen g = {0};
    g.o = o;
    g.t = t;
    uint64_t key[2] = {o->seed, (uint64_t)o->index};
    g.base = fnv1a(fnv1a(FNV1A_INIT, t->name, strlen(t->name)), key, sizeof(key));
    g.depth = o->depth;
    if (g.depth < 0) {  // one of RULER's depths: round(linspace(0, 100, 40)) percent
        rng r = ruler_rng_stream(g.base, STREAM_DEPTH, 0, 0);
        g.depth = (double)lround((double)ruler_rng_below(&r, 40) * 100.0 / 39.0) / 100.0;
    }
    g.n_max = -1;
    int rc;
    switch (t->kind) {
    case KIND_NIAH: rc = niah_fixed(&g, err); break;
    case KIND_VT: rc = vt_fixed(&g, err); break;
    case KIND_CWE: rc = cwe_fixed(&g, err); break;
    default: rc = fwe_fixed(&g, err); break;
    }
    if (g.n_max < 0) g.n_max = g.n_min + 2 * o->target_tokens + 64;  // every unit costs at least ~1 token
    built best = {0};
    if (rc == 0 && o->chat) rc = setup_chat(&g, err);
    if (rc == 0) rc = fit(&g, &best, err);
    if (rc == 0 && o->chat) rc = check_chat(&g, &best, err);
    if (rc == 0) {
        snprintf(out->task, sizeof(out->task), "%s", t->name);
        out->prompt = best.prompt.p;
        best.prompt.p = NULL;
        out->n_tokens = best.n_tokens;
        out->max_new_tokens = t->max_new_tokens;
        out->add_bos = tokenizer_add_bos(o->tok);
        out->parse_special = o->chat != NULL;
        out->context_begin = (int64_t)best.ctx_begin;
        out->context_end = (int64_t)best.ctx_end;
        int64_t ctx_len = out->context_end - out->context_begin;
        out->depth = t->kind == KIND_NIAH && ctx_len > 0
                         ? (double)((int64_t)best.needle_off[0] - out->context_begin) / (double)ctx_len
                         : -1.0;
        out->n_answers = g.n_answers;
        out->answers = dup_strings(g.answers, g.n_answers);
        if (g.n_needles) {
            out->n_needles = g.n_needles;
            out->needles = dup_strings(g.needles, g.n_needles);
        }
        if (!out->answers || (g.n_needles && !out->needles)) {
            ruler_sample_free(out);
            rc = ruler_oom(err);
        }
    }
    sb_free(&best.prompt);
    ruler_gen_free(&g);
    return rc;
}

void ruler_sample_free(ruler_sample *s) {
    if (!s) return;
    free(s->prompt);
    if (s->answers)
        for (int i = 0; i < s->n_answers; i++) free(s->answers[i]);
    free(s->answers);
    if (s->needles)
        for (int i = 0; i < s->n_needles; i++) free(s->needles[i]);
    free(s->needles);
    memset(s, 0, sizeof(*s));
}
