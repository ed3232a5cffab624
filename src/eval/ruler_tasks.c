// RULER-style task generators (see ruler.h): the task table, RULER's
// templates and value kinds, the haystacks (noise lines, essay words, needle
// lines) with needle placement at sentence starts, and for each task its
// fixed part and its sized part (ruler_gen.h). ruler.c fits the size.
//
// Random numbers: splitmix64 streams seeded from FNV-1a of (seed, task,
// index); one stream for the fixed part, one for the sized part (re-seeded
// for every size, and by a "variant" counter used only when no size lands in
// the window, e.g. uuid-needle lines of ~90 tokens against a 1K target), one
// for a random depth.
#define _GNU_SOURCE  // memmem
#include "eval/ruler_gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/hash.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include "eval/ruler_words.h"
#include "eval/text.h"

// ---------------------------------------------------------------------------
// RULER's text (scripts/data/synthetic/constants.py, niah.py,
// variable_tracking.py), verbatim.

#define NIAH_TEMPLATE                                                                                           \
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. I will " \
    "quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic {type_needle_v} "   \
    "for {query} mentioned in the provided text?"
#define NIAH_ANSWER_PREFIX " The special magic {type_needle_v} for {query} mentioned in the provided text are"
#define NIAH_NEEDLE "One of the special magic {type_needle_v} for {key} is: {value}."
#define NOISE_BLOCK "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

#define VT_TEMPLATE                                                                                   \
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n" \
    "Question: Find all variables that are assigned the value {query} in the text above."
#define VT_ANSWER_PREFIX                                                                                      \
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assigned " \
    "the value {query}, they are: "

#define CWE_TEMPLATE                                                                                         \
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones " \
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
#define CWE_ANSWER_PREFIX " Answer: The top 10 words that appear most often in the list are:"

#define FWE_TEMPLATE                                                                                               \
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "   \
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. " \
    "What are the three most frequently appeared words in the above coded text?"
#define FWE_ANSWER_PREFIX " Answer: According to the coded text above, the three most frequently appeared words are:"

// RULER's sizes.
#define NIAH_NUMBER_DIGITS 7
#define VT_VAR_LEN 5                 // "VAR ABCDE"
#define VT_ICL_VAR_LEN 3             // the in-context example's variables
#define VT_ICL_NOISE_LINES 5         // RULER fills a 500-token example; 5 noise lines keep it short
#define CWE_NUM_COMMON 10
#define CWE_SHORT_CONTEXT 4096       // below this, RULER uses the small counts
#define FWE_CODE_LEN 6               // RULER's default --coded_wordlen
#define FWE_ALPHA 2.0
#define FWE_TOKENS_PER_VOCAB_WORD 50 // vocabulary size = target / 50, as RULER
#define FWE_NUM_ANSWERS 3
// A needle snaps to a sentence start within this fraction of the context;
// failing that, to a clause start (after , ; :), failing that to any word.
#define DEPTH_SNAP_WINDOW 0.02



char *ruler_strdup(const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

// Replaces every "{name}" in tmpl by its value; unknown placeholders stay.
static void sb_fill(strbuf *out, const char *tmpl, int n_vars, const char *const *names, const char *const *values) {
    const char *s = tmpl;
    while (*s) {
        int matched = 0;
        if (*s == '{') {
            for (int i = 0; i < n_vars; i++) {
                size_t ln = strlen(names[i]);
                if (strncmp(s + 1, names[i], ln) == 0 && s[1 + ln] == '}') {
                    sb_puts(out, values[i]);
                    s += ln + 2;
                    matched = 1;
                    break;
                }
            }
        }
        if (!matched) sb_put(out, s++, 1);
    }
}

// str.replace(from, to) on a heap string; returns the new string (the old is freed) or NULL.
static char *replace_all(char *s, const char *from, const char *to) {
    if (!s) return NULL;
    strbuf b = {0};
    size_t lf = strlen(from);
    const char *p = s, *hit;
    while ((hit = strstr(p, from))) {
        sb_put(&b, p, (size_t)(hit - p));
        sb_puts(&b, to);
        p = hit + lf;
    }
    sb_puts(&b, p);
    free(s);
    if (b.oom) {
        sb_free(&b);
        return NULL;
    }
    return b.p;
}

// ---------------------------------------------------------------------------
// splitmix64


static uint64_t rng_next(rng *r) { return splitmix64_next(&r->s); }

// Uniform in [0, n), n > 0, without modulo bias.
uint64_t ruler_rng_below(rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}


rng ruler_rng_stream(uint64_t base, uint64_t stream, uint64_t a, uint64_t b) {
    uint64_t v[4] = {base, stream, a, b};
    rng r = {fnv1a(FNV1A_INIT, v, sizeof(v))};
    rng_next(&r);
    return r;
}

// ---------------------------------------------------------------------------
// Tasks (RULER scripts/synthetic.yaml)



static const task_spec TASKS[] = {
    {"niah_single_1", KIND_NIAH, HAY_NOISE, VAL_WORDS, VAL_NUMBERS, 1, 1, 1, 128},
    {"niah_single_2", KIND_NIAH, HAY_ESSAY, VAL_WORDS, VAL_NUMBERS, 1, 1, 1, 128},
    {"niah_single_3", KIND_NIAH, HAY_ESSAY, VAL_WORDS, VAL_UUIDS, 1, 1, 1, 128},
    {"niah_multikey_1", KIND_NIAH, HAY_ESSAY, VAL_WORDS, VAL_NUMBERS, 4, 1, 1, 128},
    {"niah_multikey_2", KIND_NIAH, HAY_NEEDLE, VAL_WORDS, VAL_NUMBERS, 1, 1, 1, 128},
    {"niah_multikey_3", KIND_NIAH, HAY_NEEDLE, VAL_UUIDS, VAL_UUIDS, 1, 1, 1, 128},
    {"niah_multivalue", KIND_NIAH, HAY_ESSAY, VAL_WORDS, VAL_NUMBERS, 1, 4, 1, 128},
    {"niah_multiquery", KIND_NIAH, HAY_ESSAY, VAL_WORDS, VAL_NUMBERS, 4, 1, 4, 128},
    {"vt", KIND_VT, HAY_NOISE, VAL_WORDS, VAL_NUMBERS, 0, 0, 0, 30},
    {"cwe", KIND_CWE, HAY_NONE, VAL_WORDS, VAL_WORDS, 0, 0, 0, 120},
    {"fwe", KIND_FWE, HAY_NONE, VAL_WORDS, VAL_WORDS, 0, 0, 0, 50},
};

static const char *const TASK_NAMES[] = {
    "niah_single_1",   "niah_single_2",   "niah_single_3",   "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
    "niah_multivalue", "niah_multiquery", "vt",              "cwe",             "fwe",
};

const char *const *ruler_task_names(int *n) {
    if (n) *n = (int)ARRAY_LEN(TASK_NAMES);
    return TASK_NAMES;
}

const task_spec *ruler_find_task(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < ARRAY_LEN(TASKS); i++)
        if (strcmp(TASKS[i].name, name) == 0) return &TASKS[i];
    return NULL;
}

int ruler_task_known(const char *name) { return ruler_find_task(name) != NULL; }

int ruler_task_needs_prose(const char *name) {
    const task_spec *t = ruler_find_task(name);
    return t && t->hay == HAY_ESSAY;
}

static const char *value_kind_name(value_kind k) {
    return k == VAL_NUMBERS ? "numbers" : k == VAL_UUIDS ? "uuids" : "words";
}

// RULER's generate_random: 7-digit number, adjective-noun word, or a version-4 uuid (lowercase).
static void random_value(rng *r, value_kind k, strbuf *out) {
    if (k == VAL_NUMBERS) {
        uint64_t lo = 1000000, hi = 9999999;  // 10^(d-1) .. 10^d - 1
        sb_printf(out, "%llu", (unsigned long long)(lo + ruler_rng_below(r, hi - lo + 1)));
    } else if (k == VAL_WORDS) {
        sb_printf(out, "%s-%s", ruler_adjectives[ruler_rng_below(r, ruler_n_adjectives)],
                  ruler_nouns[ruler_rng_below(r, ruler_n_nouns)]);
    } else {
        uint64_t a = rng_next(r), b = rng_next(r);
        a = (a & ~0xf000ull) | 0x4000ull;                          // version 4
        b = (b & ~(3ull << 62)) | (2ull << 62);                    // variant 10xx
        sb_printf(out, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
                  (unsigned long long)((a >> 16) & 0xffff), (unsigned long long)(a & 0xffff),
                  (unsigned long long)(b >> 48), (unsigned long long)(b & 0xffffffffffffull));
    }
}

// ---------------------------------------------------------------------------
// Haystack: units joined by `sep`; needles go between units. cls[u] is the
// boundary class before unit u (cls[n]: at the end).


static void hay_reset(hay *h, const char *sep) {
    h->n = 0;
    h->sep = sep;
    sb_clear(&h->pool);
    h->oom = h->pool.oom;
}

static void hay_free(hay *h) {
    free(h->p), free(h->len), free(h->pool_off), free(h->cls), free(h->prefix);
    sb_free(&h->pool);
    memset(h, 0, sizeof(*h));
}

static int hay_grow(hay *h) {
    if (h->oom) return -1;
    if (h->n + 1 < h->cap) return 0;
    int64_t cap = h->cap ? h->cap * 2 : 1024;
    const char **p = realloc(h->p, (size_t)cap * sizeof(*p));
    if (p) h->p = p;
    size_t *len = realloc(h->len, (size_t)cap * sizeof(*len));
    if (len) h->len = len;
    size_t *off = realloc(h->pool_off, (size_t)cap * sizeof(*off));
    if (off) h->pool_off = off;
    unsigned char *cls = realloc(h->cls, (size_t)cap + 1);
    if (cls) h->cls = cls;
    int64_t *prefix = realloc(h->prefix, ((size_t)cap + 1) * sizeof(*prefix));
    if (prefix) h->prefix = prefix;
    if (!p || !len || !off || !cls || !prefix) {
        h->oom = 1;
        return -1;
    }
    h->cap = cap;
    return 0;
}

static void hay_add_ext(hay *h, const char *p, size_t len, int cls_before) {
    if (hay_grow(h)) return;
    h->p[h->n] = p;
    h->len[h->n] = len;
    h->pool_off[h->n] = SIZE_MAX;
    h->cls[h->n] = (unsigned char)cls_before;
    h->n++;
}

static void hay_add_pool(hay *h, const char *p, size_t len, int cls_before) {
    if (hay_grow(h)) return;
    h->pool_off[h->n] = h->pool.n;
    sb_put(&h->pool, p, len);
    if (h->pool.oom) h->oom = 1;
    h->p[h->n] = NULL;
    h->len[h->n] = len;
    h->cls[h->n] = (unsigned char)cls_before;
    h->n++;
}

// Points pool units at the (now final) pool and fills prefix[]; cls_end is cls[n].
static int hay_finish(hay *h, int cls_end) {
    if (h->oom || hay_grow(h)) return -1;
    size_t sep_len = strlen(h->sep);
    h->prefix[0] = 0;
    for (int64_t u = 0; u < h->n; u++) {
        if (h->pool_off[u] != SIZE_MAX) h->p[u] = h->pool.p + h->pool_off[u];
        h->prefix[u + 1] = h->prefix[u] + (int64_t)(h->len[u] + sep_len);
    }
    h->cls[h->n] = (unsigned char)cls_end;
    return 0;
}

// One needle (or chain statement) to insert before unit `unit`.
typedef struct insert {
    const char *text;
    size_t len;
    double depth;  // wanted: (byte offset in the context) / (context bytes)
    int64_t unit;
    size_t offset;  // where it landed, relative to the context start
} insert;

// Chooses ins[i].unit so that each insert's first byte lands at depth * (the
// joined context's length), snapped to a sentence start (else a clause
// start, else a word) within DEPTH_SNAP_WINDOW. ins must be sorted by depth.
// The final offset of the r-th insert at unit u is prefix[u] + (bytes of the
// r earlier inserts, each with its separator), since all elements are joined by sep.
static void hay_place(const hay *h, insert *ins, int k) {
    size_t sep_len = strlen(h->sep);
    int64_t total = h->n ? h->prefix[h->n] - (int64_t)sep_len : 0;
    for (int i = 0; i < k; i++) total += (int64_t)ins[i].len + ((h->n + i) ? (int64_t)sep_len : 0);
    double window = DEPTH_SNAP_WINDOW * (double)total;
    int64_t umin = 0, before = 0;
    for (int r = 0; r < k; r++) {
        double want = ins[r].depth * (double)total - (double)before;
        // Nearest unit start by prefix (binary search over [umin, n]).
        int64_t lo = umin, hi = h->n;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if ((double)h->prefix[mid] < want) lo = mid + 1;
            else hi = mid;
        }
        int64_t u0 = lo;
        if (u0 > umin && fabs((double)h->prefix[u0 - 1] - want) <= fabs((double)h->prefix[u0] - want)) u0--;
        int64_t chosen = u0;
        for (int cls = TEXT_BOUND_SENTENCE; cls > TEXT_BOUND_WORD; cls--) {
            int64_t best = -1;
            double best_d = window;
            for (int64_t u = u0; u >= umin; u--) {
                double d = fabs((double)h->prefix[u] - want);
                if (d > window) break;
                if (h->cls[u] >= cls && d <= best_d) best = u, best_d = d;
            }
            for (int64_t u = u0 + 1; u <= h->n; u++) {
                double d = fabs((double)h->prefix[u] - want);
                if (d > window) break;
                if (h->cls[u] >= cls && d < best_d) best = u, best_d = d;
            }
            if (best >= 0) {
                chosen = best;
                break;
            }
        }
        ins[r].unit = chosen;
        umin = chosen;
        before += (int64_t)(ins[r].len + sep_len);
    }
}

// Joins units and inserts (sorted by unit; an insert comes before its unit) with sep.
static void hay_join(const hay *h, insert *ins, int k, strbuf *out) {
    size_t base = out->n;
    int first = 1, r = 0;
    for (int64_t u = 0; u <= h->n; u++) {
        for (; r < k && ins[r].unit == u; r++) {
            if (!first) sb_puts(out, h->sep);
            ins[r].offset = out->n - base;
            sb_put(out, ins[r].text, ins[r].len);
            first = 0;
        }
        if (u == h->n) break;
        if (!first) sb_puts(out, h->sep);
        sb_put(out, h->p[u], h->len[u]);
        first = 0;
    }
}

// Piece starts of a line: sentences (after ". ") or words (after ' ' and '-').
static int line_pieces(const char *s, size_t n, int by_word, size_t *starts, int cap) {
    int k = 0;
    starts[k++] = 0;
    for (size_t i = 0; i + 1 < n && k < cap; i++) {
        if (by_word ? (s[i] == ' ' || s[i] == '-') : (s[i] == '.' && s[i + 1] == ' ')) starts[k++] = by_word ? i + 1 : i + 2;
    }
    return k;
}

#define MAX_LINE_PIECES 64

// ---------------------------------------------------------------------------
// Essay words from the prose, whitespace collapsed, wrapping to the start of
// the prose at its end. Spans are cached as they are first needed.


static int essay_scan(essay *e, size_t *off, size_t *len) {
    for (int wraps = 0;;) {
        while (e->cursor < e->len && text_is_space(e->text[e->cursor])) e->cursor++;
        if (e->cursor < e->len) break;
        e->cursor = 0;
        if (++wraps > 1) return -1;
    }
    size_t s = e->cursor;
    while (e->cursor < e->len && !text_is_space(e->text[e->cursor])) e->cursor++;
    *off = s;
    *len = e->cursor - s;
    return 0;
}

// Positions the essay at the first sentence start at or after byte `at`.
static int essay_start(essay *e, size_t at) {
    e->cursor = at < e->len ? at : 0;
    while (e->cursor > 0 && e->cursor < e->len && !text_is_space(e->text[e->cursor - 1]) && !text_is_space(e->text[e->cursor]))
        e->cursor++;  // skip the rest of a word we landed in
    size_t off, len;
    int prev = TEXT_BOUND_WORD;
    for (int64_t i = 0; i < 200000; i++) {
        if (essay_scan(e, &off, &len)) return -1;
        if (prev == TEXT_BOUND_SENTENCE) {
            e->cursor = off;
            return 0;
        }
        prev = text_boundary_after(e->text + off, len);
    }
    e->cursor = 0;
    return 0;
}

static int essay_words(essay *e, int64_t n) {
    while (e->n < n) {
        if (e->n == e->cap) {
            int64_t cap = e->cap ? e->cap * 2 : 4096;
            size_t *off = realloc(e->off, (size_t)cap * sizeof(*off));
            if (off) e->off = off;
            uint32_t *wlen = realloc(e->wlen, (size_t)cap * sizeof(*wlen));
            if (wlen) e->wlen = wlen;
            if (!off || !wlen) return -1;
            e->cap = cap;
        }
        size_t off, len;
        if (essay_scan(e, &off, &len)) return -1;
        e->off[e->n] = off;
        e->wlen[e->n] = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
        e->n++;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Generator state


void ruler_gen_free(gen *g) {
    free(g->head), free(g->tail), free(g->answer_prefix), free(g->chat_pre), free(g->chat_post);
    for (int i = 0; i < g->n_answers; i++) free(g->answers[i]);
    for (int i = 0; i < g->n_needles; i++) free(g->needles[i]);
    for (int i = 0; i < g->n_keys; i++) free(g->keys[i]);
    for (int i = 0; i <= VT_NUM_HOPS; i++) free(g->chain[i]);
    free(g->words);
    if (g->codes)
        for (int i = 0; i < g->n_codes; i++) free(g->codes[i]);
    free(g->codes);
    free(g->es.off), free(g->es.wlen);
    hay_free(&g->h);
    sb_free(&g->ctx), sb_free(&g->line);
    free(g->order);
    memset(g, 0, sizeof(*g));
}

int ruler_oom(rc_err *err) { return rc_fail(err, "ruler: out of memory"); }

// Splits a filled template at "{context}" into g->head (appended after any
// existing head text in `pre`) and g->tail.
static int split_template(gen *g, const char *filled, const char *pre, rc_err *err) {
    const char *at = strstr(filled, "{context}");
    if (!at) return rc_fail(err, "ruler: internal error: template without {context}");
    strbuf h = {0};
    if (pre) sb_puts(&h, pre);
    sb_put(&h, filled, (size_t)(at - filled));
    g->head = h.p;
    g->tail = ruler_strdup(at + strlen("{context}"));
    if (h.oom || !g->tail) return ruler_oom(err);
    return 0;
}

static double frac(double x) { return x - floor(x); }

// ---------------------------------------------------------------------------
// niah

int niah_fixed(gen *g, rc_err *err) {
    const task_spec *t = g->t;
    rng r = ruler_rng_stream(g->base, STREAM_FIXED, 0, 0);
    strbuf b = {0};
    int rc = -1;
    // Keys (distinct), values, needles: needle j = key j / value j for
    // multi-key tasks, or value j of the one key for multivalue.
    char *values[MAX_NEEDLES] = {0};
    int n_values = t->num_k * t->num_v;
    for (int k = 0; k < t->num_k; k++) {
        for (;;) {
            sb_clear(&b);
            random_value(&r, t->key_type, &b);
            int dup = 0;
            for (int j = 0; j < k; j++) dup |= b.p && strcmp(g->keys[j], b.p) == 0;
            if (!dup) break;
        }
        if (b.oom || !(g->keys[k] = ruler_strdup(b.p))) goto fail_oom;
        g->n_keys = k + 1;
    }
    for (int i = 0; i < n_values; i++) {
        for (;;) {
            sb_clear(&b);
            random_value(&r, t->value_type, &b);
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= b.p && strcmp(values[j], b.p) == 0;
            if (!dup) break;
        }
        if (b.oom || !(values[i] = ruler_strdup(b.p))) goto fail_oom;
    }
    const char *type_plural = value_kind_name(t->value_type);
    for (int i = 0; i < n_values; i++) {
        const char *names[] = {"type_needle_v", "key", "value"};
        const char *vals[] = {type_plural, g->keys[t->num_v > 1 ? 0 : i], values[i]};
        sb_clear(&b);
        sb_fill(&b, NIAH_NEEDLE, 3, names, vals);
        if (b.oom || !(g->needles[i] = ruler_strdup(b.p))) goto fail_oom;
        g->n_needles = i + 1;
    }
    // Query: key 0 (single, multikey, multivalue) or all keys (multiquery),
    // RULER's "a, b, c, and d"; answers: the values of the queried keys.
    sb_clear(&b);
    for (int q = 0; q < t->num_q; q++) {
        if (q) sb_puts(&b, q == t->num_q - 1 ? ", and " : ", ");
        sb_puts(&b, g->keys[q]);
    }
    char *query = b.oom ? NULL : ruler_strdup(b.p);
    if (!query) goto fail_oom;
    for (int q = 0; q < t->num_q; q++)
        for (int v = 0; v < t->num_v; v++) {
            if (!(g->answers[g->n_answers] = ruler_strdup(values[q * t->num_v + v]))) {
                free(query);
                goto fail_oom;
            }
            g->n_answers++;
        }
    // One expected value: RULER rewrites the template into the singular.
    char *tmpl = ruler_strdup(NIAH_TEMPLATE), *prefix = ruler_strdup(NIAH_ANSWER_PREFIX);
    char type_name[16];
    snprintf(type_name, sizeof(type_name), "%s", type_plural);
    if (t->num_q * t->num_v == 1) {
        static const char *const FROM[] = {"Some", "are all", "are", "answers"};
        static const char *const TO[] = {"A", "is", "is", "answer"};
        for (int i = 0; i < 4; i++) {
            tmpl = replace_all(tmpl, FROM[i], TO[i]);
            prefix = replace_all(prefix, FROM[i], TO[i]);
        }
        type_name[strlen(type_name) - 1] = '\0';  // numbers -> number
    }
    if (!tmpl || !prefix) {
        free(tmpl), free(prefix), free(query);
        goto fail_oom;
    }
    const char *names[] = {"type_needle_v", "query"};
    const char *vals[] = {type_name, query};
    strbuf filled = {0}, ap = {0};
    sb_fill(&filled, tmpl, 2, names, vals);
    sb_fill(&ap, prefix, 2, names, vals);
    free(tmpl), free(prefix), free(query);
    if (filled.oom || ap.oom) {
        sb_free(&filled), sb_free(&ap);
        goto fail_oom;
    }
    g->answer_prefix = ap.p;
    rc = split_template(g, filled.p, NULL, err);
    sb_free(&filled);
    if (rc) goto done;
    if (t->hay == HAY_ESSAY) {
        g->es.text = g->o->prose;
        g->es.len = g->o->prose_len;
        if (essay_start(&g->es, (size_t)ruler_rng_below(&r, g->o->prose_len))) {
            rc = rc_fail(err, "ruler: the prose haystack has no words");
            goto done;
        }
    }
    rc = 0;
    goto done;
fail_oom:
    rc = ruler_oom(err);
done:
    for (int i = 0; i < MAX_NEEDLES; i++) free(values[i]);
    sb_free(&b);
    return rc;
}

// A line haystack of m pieces: whole lines and, first, the tail of one more
// line (its last r pieces), so the size moves by a sentence or a word rather
// than a line. Noise lines split at sentences, needle lines at words and
// uuid/word hyphens.
static int build_lines(gen *g, int64_t m, rng *r, const char *sep, int vt_noise) {
    hay *h = &g->h;
    hay_reset(h, sep);
    int by_word = g->t->hay == HAY_NEEDLE && !vt_noise;
    int64_t used = 0;
    size_t starts[MAX_LINE_PIECES];
    while (used < m) {
        strbuf *line = &g->line;
        sb_clear(line);
        if (by_word) {
            // RULER's needle haystack: needles with random keys and values (not the real keys).
            strbuf key = {0}, value = {0};
            for (;;) {
                sb_clear(&key);
                random_value(r, g->t->key_type, &key);
                int dup = 0;
                for (int k = 0; k < g->n_keys; k++) dup |= key.p && strcmp(key.p, g->keys[k]) == 0;
                if (!dup || key.oom) break;
            }
            random_value(r, g->t->value_type, &value);
            const char *names[] = {"type_needle_v", "key", "value"};
            const char *vals[] = {value_kind_name(g->t->value_type), key.p ? key.p : "", value.p ? value.p : ""};
            if (key.oom || value.oom) line->oom = 1;
            else sb_fill(line, NIAH_NEEDLE, 3, names, vals);
            sb_free(&key), sb_free(&value);
        } else {
            sb_puts(line, vt_noise ? NOISE_BLOCK "\n" : NOISE_BLOCK);
        }
        if (line->oom) return -1;
        int n_pieces = line_pieces(line->p, line->n, by_word, starts, MAX_LINE_PIECES);
        if (used + n_pieces <= m) {
            hay_add_pool(h, line->p, line->n, TEXT_BOUND_SENTENCE);
            used += n_pieces;
        } else {
            int64_t rest = m - used;  // 1 .. n_pieces-1
            size_t s = starts[n_pieces - rest];
            hay_add_pool(h, line->p + s, line->n - s, TEXT_BOUND_SENTENCE);
            used = m;
            if (h->oom) return -1;
            // The partial line goes first: rotate it to unit 0.
            int64_t last = h->n - 1;
            size_t off = h->pool_off[last], len = h->len[last];
            memmove(h->pool_off + 1, h->pool_off, (size_t)last * sizeof(size_t));
            memmove(h->len + 1, h->len, (size_t)last * sizeof(size_t));
            h->pool_off[0] = off;
            h->len[0] = len;
        }
        if (h->oom) return -1;
    }
    return hay_finish(h, TEXT_BOUND_SENTENCE);
}

int niah_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx, size_t *needle_off) {
    const task_spec *t = g->t;
    hay *h = &g->h;
    if (t->hay == HAY_ESSAY) {
        if (essay_words(&g->es, n)) return -1;
        hay_reset(h, " ");
        for (int64_t u = 0; u < n; u++) {
            int cls = u == 0 ? TEXT_BOUND_SENTENCE
                             : text_boundary_after(g->es.text + g->es.off[u - 1], g->es.wlen[u - 1]);
            hay_add_ext(h, g->es.text + g->es.off[u], g->es.wlen[u], cls);
        }
        int cls_end = n ? text_boundary_after(g->es.text + g->es.off[n - 1], g->es.wlen[n - 1]) : TEXT_BOUND_SENTENCE;
        if (hay_finish(h, cls_end)) return -1;
    } else {
        rng r = ruler_rng_stream(g->base, STREAM_SIZED, (uint64_t)n, variant);
        if (build_lines(g, n, &r, "\n", 0)) return -1;
    }
    // Needle j at frac(depth + j / k): evenly spread, needle 0 at `depth`.
    insert ins[MAX_NEEDLES];
    int k = g->n_needles;
    for (int j = 0; j < k; j++) {
        ins[j] = (insert){.text = g->needles[j], .len = strlen(g->needles[j]), .unit = j};
        ins[j].depth = j == 0 ? g->depth : frac(g->depth + (double)j / k);
    }
    // Sort by depth (insertion sort; .unit keeps the needle number until placed).
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && ins[j].depth < ins[j - 1].depth; j--) {
            insert tmp = ins[j];
            ins[j] = ins[j - 1];
            ins[j - 1] = tmp;
        }
    int needle_of[MAX_NEEDLES];
    for (int i = 0; i < k; i++) needle_of[i] = (int)ins[i].unit;
    hay_place(h, ins, k);
    hay_join(h, ins, k, ctx);
    for (int i = 0; i < k; i++) needle_off[needle_of[i]] = ins[i].offset;
    return ctx->oom ? -1 : 0;
}

// ---------------------------------------------------------------------------
// vt: RULER's variable_tracking.py with one chain of VT_NUM_HOPS hops. Noise
// lines end in "\n" and all items are joined by " ", as RULER does; chain
// statement j goes before noise item pos[j] (distinct, sorted, random).

static void random_var(rng *r, int len, char *out) {
    for (int i = 0; i < len; i++) out[i] = (char)('A' + ruler_rng_below(r, 26));
    out[len] = '\0';
}

static void random_vars(rng *r, int len, char vars[][8], int n) {
    for (int i = 0; i < n; i++) {
        int dup;
        do {
            random_var(r, len, vars[i]);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= strcmp(vars[i], vars[j]) == 0;
        } while (dup);
    }
}

static void vt_statement(strbuf *b, char vars[][8], unsigned value, int j) {
    if (j == 0) sb_printf(b, "VAR %s = %u", vars[0], value);
    else sb_printf(b, "VAR %s = VAR %s ", vars[j], vars[j - 1]);  // RULER's trailing space
}

// k distinct sorted positions in [0, n), n >= k.
static void distinct_sorted(rng *r, int64_t n, int64_t *pos, int k) {
    for (int i = 0; i < k; i++) {
        int dup;
        do {
            pos[i] = (int64_t)ruler_rng_below(r, (uint64_t)n);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= pos[i] == pos[j];
        } while (dup);
    }
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && pos[j] < pos[j - 1]; j--) {
            int64_t t = pos[j];
            pos[j] = pos[j - 1];
            pos[j - 1] = t;
        }
}

#define VT_N_VARS (VT_NUM_HOPS + 1)

int vt_fixed(gen *g, rc_err *err) {
    rng r = ruler_rng_stream(g->base, STREAM_FIXED, 0, 0);
    char vars[VT_N_VARS][8];
    random_vars(&r, VT_VAR_LEN, vars, VT_N_VARS);
    unsigned value = 10000 + (unsigned)ruler_rng_below(&r, 89999);  // numpy randint(10000, 99999)
    strbuf b = {0};
    for (int j = 0; j < VT_N_VARS; j++) {
        sb_clear(&b);
        vt_statement(&b, vars, value, j);
        if (b.oom || !(g->chain[j] = ruler_strdup(b.p))) goto fail;
        if (!(g->answers[j] = ruler_strdup(vars[j]))) goto fail;
        g->n_answers = j + 1;
    }
    // RULER prepends one solved example with 3-letter variables (its own
    // value) to every vt prompt; ours has VT_ICL_NOISE_LINES noise lines.
    rng ri = ruler_rng_stream(g->base, STREAM_ICL, 0, 0);
    char ivars[VT_N_VARS][8];
    random_vars(&ri, VT_ICL_VAR_LEN, ivars, VT_N_VARS);
    unsigned ivalue;
    do ivalue = 10000 + (unsigned)ruler_rng_below(&ri, 89999);
    while (ivalue == value);
    int64_t pos[VT_N_VARS];
    distinct_sorted(&ri, VT_ICL_NOISE_LINES, pos, VT_N_VARS);
    strbuf ctx = {0};
    for (int i = 0, j = 0; i < VT_ICL_NOISE_LINES; i++) {
        for (; j < VT_N_VARS && pos[j] == i; j++) {
            if (ctx.n) sb_puts(&ctx, " ");
            vt_statement(&ctx, ivars, ivalue, j);
        }
        if (ctx.n) sb_puts(&ctx, " ");
        sb_puts(&ctx, NOISE_BLOCK "\n");
    }
    char num_v[16], ival[16], val[16];
    snprintf(num_v, sizeof(num_v), "%d", VT_N_VARS);
    snprintf(ival, sizeof(ival), "%u", ivalue);
    snprintf(val, sizeof(val), "%u", value);
    const char *names[] = {"context", "query", "num_v"};
    const char *ivals[] = {ctx.p ? ctx.p : "", ival, num_v};
    sb_clear(&b);
    sb_fill(&b, VT_TEMPLATE, 3, names, ivals);
    sb_fill(&b, VT_ANSWER_PREFIX, 3, names, ivals);
    for (int j = 0; j < VT_N_VARS; j++) sb_printf(&b, "%s%s", j ? " " : "", ivars[j]);
    sb_puts(&b, "\n\n");
    sb_free(&ctx);
    // Main question: fill everything but {context}.
    const char *vals[] = {val, num_v};
    strbuf filled = {0}, ap = {0};
    sb_fill(&filled, VT_TEMPLATE, 2, names + 1, vals);
    sb_fill(&ap, VT_ANSWER_PREFIX, 2, names + 1, vals);
    g->answer_prefix = ap.p;
    if (b.oom || filled.oom || ap.oom) {
        sb_free(&filled);
        goto fail;
    }
    int rc = split_template(g, filled.p, b.p, err);
    sb_free(&filled);
    sb_free(&b);
    g->n_min = 5 * VT_N_VARS;  // whole noise lines: at least one per chain statement
    return rc;
fail:
    sb_free(&b);
    return ruler_oom(err);
}

int vt_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx) {
    rng r = ruler_rng_stream(g->base, STREAM_SIZED, (uint64_t)n, variant);
    if (build_lines(g, n, &r, " ", 1)) return -1;
    int64_t pos[VT_N_VARS];
    distinct_sorted(&r, g->h.n, pos, VT_N_VARS);
    insert ins[VT_N_VARS];
    for (int j = 0; j < VT_N_VARS; j++) ins[j] = (insert){.text = g->chain[j], .len = strlen(g->chain[j]), .unit = pos[j]};
    hay_join(&g->h, ins, VT_N_VARS, ctx);
    return ctx->oom ? -1 : 0;
}

// ---------------------------------------------------------------------------
// cwe: RULER's common_words_extraction.py. Below CWE_SHORT_CONTEXT tokens the
// common words appear 6 times and the others once (example: 20 words, 3/1),
// otherwise 30 and 3 times (example: 40 words, 10/3), as in RULER.

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int ensure_order(gen *g, size_t n) {
    if (n <= g->order_cap) return 0;
    int32_t *o = realloc(g->order, n * sizeof(*o));
    if (!o) return -1;
    g->order = o;
    g->order_cap = n;
    return 0;
}

static void shuffle_i32(rng *r, int32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ruler_rng_below(r, i);
        int32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

// "1. w 2. w ..." for `count` list entries: word i of `words` repeated as
// the counts say (first n_common words `freq_common` times, then `freq_other`).
static int cwe_list(gen *g, rng *r, const char **words, int n_common, int freq_common, int n_other, int freq_other,
                    strbuf *out) {
    size_t count = (size_t)n_common * (size_t)freq_common + (size_t)n_other * (size_t)freq_other;
    if (ensure_order(g, count)) return -1;
    size_t k = 0;
    for (int w = 0; w < n_common; w++)
        for (int f = 0; f < freq_common; f++) g->order[k++] = w;
    for (int w = 0; w < n_other; w++)
        for (int f = 0; f < freq_other; f++) g->order[k++] = n_common + w;
    shuffle_i32(r, g->order, count);
    for (size_t i = 0; i < count; i++) sb_printf(out, "%s%zu. %s", i ? " " : "", i + 1, words[g->order[i]]);
    return out->oom ? -1 : 0;
}

int cwe_fixed(gen *g, rc_err *err) {
    int total = (int)(ruler_n_adjectives + ruler_n_nouns + ruler_n_verbs);
    g->words = malloc((size_t)total * sizeof(*g->words));
    if (!g->words) return ruler_oom(err);
    int n = 0;
    for (size_t i = 0; i < ruler_n_adjectives; i++) g->words[n++] = ruler_adjectives[i];
    for (size_t i = 0; i < ruler_n_nouns; i++) g->words[n++] = ruler_nouns[i];
    for (size_t i = 0; i < ruler_n_verbs; i++) g->words[n++] = ruler_verbs[i];
    qsort(g->words, (size_t)n, sizeof(*g->words), cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(g->words[u - 1], g->words[i]) != 0) g->words[u++] = g->words[i];
    g->n_words = u;
    rng r = ruler_rng_stream(g->base, STREAM_FIXED, 0, 0);
    for (int i = u; i > 1; i--) {
        int j = (int)ruler_rng_below(&r, (uint64_t)i);
        const char *t = g->words[i - 1];
        g->words[i - 1] = g->words[j];
        g->words[j] = t;
    }
    int small = g->o->target_tokens < CWE_SHORT_CONTEXT;
    g->cwe_freq_common = small ? 6 : 30;
    g->cwe_freq_uncommon = small ? 1 : 3;
    g->cwe_n_example = small ? 20 : 40;
    int ex_fc = small ? 3 : 10, ex_fu = small ? 1 : 3;
    g->cwe_max_uncommon = g->n_words - CWE_NUM_COMMON - g->cwe_n_example;
    for (int i = 0; i < CWE_NUM_COMMON; i++) {
        if (!(g->answers[i] = ruler_strdup(g->words[i]))) return ruler_oom(err);
        g->n_answers = i + 1;
    }
    // The solved example (its words are the last of the permutation, never in the question's list).
    const char **ex = g->words + g->n_words - g->cwe_n_example;
    rng ri = ruler_rng_stream(g->base, STREAM_ICL, 0, 0);
    strbuf ctx = {0}, b = {0};
    if (cwe_list(g, &ri, ex, CWE_NUM_COMMON, ex_fc, g->cwe_n_example - CWE_NUM_COMMON, ex_fu, &ctx)) {
        sb_free(&ctx);
        return ruler_oom(err);
    }
    const char *names[] = {"context"};
    const char *vals[] = {ctx.p};
    sb_fill(&b, CWE_TEMPLATE, 1, names, vals);
    sb_puts(&b, CWE_ANSWER_PREFIX);
    for (int i = 0; i < CWE_NUM_COMMON; i++) sb_printf(&b, " %d. %s", i + 1, ex[i]);
    sb_puts(&b, "\n");
    sb_free(&ctx);
    g->answer_prefix = ruler_strdup(CWE_ANSWER_PREFIX);
    if (b.oom || !g->answer_prefix) {
        sb_free(&b);
        return ruler_oom(err);
    }
    int rc = split_template(g, CWE_TEMPLATE, b.p, err);
    sb_free(&b);
    g->n_min = 0;
    g->n_max = g->cwe_max_uncommon;
    return rc;
}

int cwe_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx) {
    rng r = ruler_rng_stream(g->base, STREAM_SIZED, (uint64_t)n, variant);
    return cwe_list(g, &r, g->words, CWE_NUM_COMMON, g->cwe_freq_common, (int)n, g->cwe_freq_uncommon, ctx);
}

// ---------------------------------------------------------------------------
// fwe: RULER's freq_words_extraction.py. The word of rank k (1-based) appears
// floor(N k^-alpha / zeta(alpha)) times; rank 1 is the noise "...", ranks 2-4
// are the answers. The vocabulary has target/50 random codes.

static const double FWE_ZETA2 = 1.6449340668482264;  // zeta(2) = pi^2 / 6

static int64_t fwe_count(int64_t n_words, int rank0) {
    double k = (double)(rank0 + 1);
    return (int64_t)floor((double)n_words / (k * k) / FWE_ZETA2);
}

int fwe_fixed(gen *g, rc_err *err) {
    int64_t v = g->o->target_tokens / FWE_TOKENS_PER_VOCAB_WORD;
    if (v < FWE_NUM_ANSWERS + 2) v = FWE_NUM_ANSWERS + 2;
    if (v > 1000000) return rc_fail(err, "ruler: fwe: target %lld tokens is too large", (long long)g->o->target_tokens);
    g->n_codes = (int)v;
    g->codes = calloc((size_t)v, sizeof(*g->codes));
    char **sorted = malloc((size_t)v * sizeof(*sorted));
    if (!g->codes || !sorted) {
        free(sorted);
        return ruler_oom(err);
    }
    rng r = ruler_rng_stream(g->base, STREAM_FIXED, 0, 0);
    if (!(g->codes[0] = ruler_strdup("..."))) goto fail;
    for (int i = 1; i < g->n_codes; i++) {
        if (!(g->codes[i] = malloc(FWE_CODE_LEN + 1))) goto fail;
        for (int c = 0; c < FWE_CODE_LEN; c++) g->codes[i][c] = (char)('a' + ruler_rng_below(&r, 26));
        g->codes[i][FWE_CODE_LEN] = '\0';
    }
    // Redraw duplicates until all codes differ (26^6 codes: rarely needed).
    for (int dups = 1; dups;) {
        memcpy(sorted, g->codes, (size_t)v * sizeof(*sorted));
        qsort(sorted, (size_t)v, sizeof(*sorted), cmp_str);
        dups = 0;
        for (int i = 1; i < g->n_codes; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0) {
                for (int c = 0; c < FWE_CODE_LEN; c++) sorted[i][c] = (char)('a' + ruler_rng_below(&r, 26));
                dups = 1;
            }
    }
    free(sorted);
    sorted = NULL;
    for (int i = 0; i < FWE_NUM_ANSWERS; i++) {
        if (!(g->answers[i] = ruler_strdup(g->codes[1 + i]))) goto fail;
        g->n_answers = i + 1;
    }
    g->answer_prefix = ruler_strdup(FWE_ANSWER_PREFIX);
    if (!g->answer_prefix) goto fail;
    // Smallest N whose answers are strictly the most frequent codes.
    int64_t n = 1;
    while (!(fwe_count(n, FWE_NUM_ANSWERS) > fwe_count(n, FWE_NUM_ANSWERS + 1) && fwe_count(n, FWE_NUM_ANSWERS) > 0)) n++;
    g->n_min = n;
    return split_template(g, FWE_TEMPLATE, NULL, err);
fail:
    free(sorted);
    return ruler_oom(err);
}

int fwe_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx) {
    size_t total = 0;
    int n_used = 0;
    for (; n_used < g->n_codes && fwe_count(n, n_used) > 0; n_used++) total += (size_t)fwe_count(n, n_used);
    if (ensure_order(g, total)) return -1;
    size_t k = 0;
    for (int i = 0; i < n_used; i++)
        for (int64_t c = fwe_count(n, i); c > 0; c--) g->order[k++] = i;
    rng r = ruler_rng_stream(g->base, STREAM_SIZED, (uint64_t)n, variant);
    shuffle_i32(&r, g->order, total);
    for (size_t i = 0; i < total; i++) {
        if (i) sb_puts(ctx, " ");
        sb_puts(ctx, g->codes[g->order[i]]);
    }
    return ctx->oom ? -1 : 0;
}
