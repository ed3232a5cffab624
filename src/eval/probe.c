#include "eval/probe.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include "eval/text.h"

// ---------------------------------------------------------------- scoring

// a (attention, position) ranks before b: attention descending, then
// position ascending, NaN last.
static int ranks_before(float a, int64_t pa, float b, int64_t pb) {
    int an = isnan(a), bn = isnan(b);
    if (an != bn) return bn;
    if (!an && a != b) return a > b;
    return pa < pb;
}

void probe_r_step(const float *attn, int64_t n_heads_total, int64_t n_pos, const int32_t *prompt_tokens,
                  probe_span needle, int32_t generated, int64_t n_answer, double *score) {
    if (n_pos <= 0 || n_answer <= 0) return;
    for (int64_t h = 0; h < n_heads_total; h++) {
        const float *row = attn + h * n_pos;
        int64_t best = 0;
        for (int64_t p = 1; p < n_pos; p++)
            if (ranks_before(row[p], p, row[best], best)) best = p;
        if (isnan(row[best])) continue;  // the whole row is NaN: the head attended nowhere
        if (best >= needle.begin && best < needle.end && prompt_tokens[best] == generated)
            score[h] += 1.0 / (double)n_answer;
    }
}

void probe_r2_step(const float *attn, int64_t n_heads_total, int64_t n_pos, probe_span correct, int64_t top_n,
                   int64_t n_answer, double *score) {
    if (n_pos <= 0 || n_answer <= 0 || top_n <= 0) return;
    int64_t begin = correct.begin < 0 ? 0 : correct.begin, end = correct.end > n_pos ? n_pos : correct.end;
    for (int64_t h = 0; h < n_heads_total; h++) {
        const float *row = attn + h * n_pos;
        // The span is a few tokens: for each of its positions, count the
        // positions ranked before it (stopping at top_n) instead of sorting
        // the whole row.
        for (int64_t p = begin; p < end; p++) {
            if (isnan(row[p])) continue;
            int64_t n_before = 0;
            for (int64_t q = 0; q < n_pos && n_before < top_n; q++)
                if (q != p && ranks_before(row[q], q, row[p], p)) n_before++;
            if (n_before < top_n) score[h] += (double)row[p] / (double)n_answer;
        }
    }
}

// -------------------------------------------------------------------- F1

typedef struct word {
    const char *s;
    size_t len;
} word;

static int cmp_word(const void *a, const void *b) {
    const word *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return (x->len > y->len) - (x->len < y->len);
}

static int is_article(const char *s, size_t len) {
    return (len == 1 && s[0] == 'a') || (len == 2 && memcmp(s, "an", 2) == 0) ||
           (len == 3 && memcmp(s, "the", 3) == 0);
}

// SQuAD's normalize_answer + split: lower-case, drop punctuation (joining
// what it separated: "don't" -> "dont"), split on whitespace, drop articles.
// Writes the normalized text into buf (strlen(s) + 1 bytes) and the words
// into words (room for strlen(s) / 2 + 1: each word but the last is followed
// by whitespace); returns the word count.
static size_t normalize_words(const char *s, char *buf, word *words) {
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 128 && ispunct(c)) continue;
        buf[n++] = (char)(c < 128 ? tolower(c) : c);
    }
    buf[n] = '\0';
    size_t n_words = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && isspace((unsigned char)buf[i])) i++;
        size_t start = i;
        while (i < n && !isspace((unsigned char)buf[i])) i++;
        if (i > start && !is_article(buf + start, i - start))
            words[n_words++] = (word){.s = buf + start, .len = i - start};
    }
    return n_words;
}

double probe_f1(const char *prediction, const char *truth) {
    size_t lp = strlen(prediction), lt = strlen(truth);
    char *bp = malloc(lp + 1), *bt = malloc(lt + 1);
    word *wp = malloc((lp / 2 + 1) * sizeof(word)), *wt = malloc((lt / 2 + 1) * sizeof(word));
    double f1 = 0.0;
    if (bp && bt && wp && wt) {
        size_t np = normalize_words(prediction, bp, wp), nt = normalize_words(truth, bt, wt);
        if (np == 0 || nt == 0) {
            f1 = (np == 0 && nt == 0) ? 1.0 : 0.0;
        } else {
            qsort(wp, np, sizeof(word), cmp_word);
            qsort(wt, nt, sizeof(word), cmp_word);
            size_t common = 0;  // multiset intersection, by merging the sorted bags
            for (size_t i = 0, j = 0; i < np && j < nt;) {
                int c = cmp_word(&wp[i], &wt[j]);
                if (c == 0) common++, i++, j++;
                else if (c < 0) i++;
                else j++;
            }
            if (common > 0) {
                double precision = (double)common / (double)np, recall = (double)common / (double)nt;
                f1 = 2.0 * precision * recall / (precision + recall);
            }
        }
    }
    free(bp);
    free(bt);
    free(wp);
    free(wt);
    return f1;
}

// ------------------------------------------------------------- examples

// HeadKV's retrieval setting (from the Retrieval Head needle), varied by seed.
static const char *const k_cities[] = {
    "San Francisco", "Lisbon", "Kyoto", "Buenos Aires", "Reykjavik", "Cape Town",
    "Montreal",      "Hanoi",  "Oslo",  "Marrakesh",    "Melbourne", "Valparaiso",
};
static const char *const k_activities[] = {
    "eat a sandwich and sit in Dolores Park on a sunny day",
    "ride the old tram up the hill just after sunrise",
    "buy fresh figs at the market and eat them by the river",
    "climb the lighthouse stairs and watch the fishing boats return",
    "rent a green bicycle and follow the canal to the botanical garden",
    "drink hot chocolate in a tiny cafe while the rain falls outside",
    "take the night ferry and count the lights along the harbour",
    "walk barefoot on the black sand beach at low tide",
    "join the evening choir that sings under the stone bridge",
    "learn to fold paper cranes from the old man at the corner kiosk",
    "swim in the cold lake and then warm up in a wooden sauna",
    "listen to street drummers in the square until midnight",
};
// Names that do not occur in Austen and are not substrings of each other.
static const char *const k_names[] = {
    "Kofi", "Ingrid", "Mateo", "Yuki",  "Priya",  "Lars",   "Amara", "Dmitri",
    "Zara", "Tobias", "Imani", "Oskar", "Nadia",  "Rafael", "Sven",  "Leilani",
};

static const char k_book_open[] = "<book>\n";
static const char k_book_close[] = "\n</book>\nBased on the content of the book, Question: ";
static const char k_answer_cue[] = "\nAnswer:";

static uint64_t splitmix64(uint64_t *state) { return splitmix64_next(state); }

static size_t pick(uint64_t *rng, size_t n) { return (size_t)(splitmix64(rng) % n); }


// Insertion points: 0, len, and i where a sentence ends before a whitespace
// byte t[i] (sentences) or where any whitespace run starts (words).
static int is_sentence_point(const char *t, size_t len, size_t i) {
    return i == 0 || i == len || (text_is_space(t[i]) && text_sentence_ends_before(t, i));
}
static int is_word_point(const char *t, size_t len, size_t i) {
    return i == 0 || i == len || (text_is_space(t[i]) && !text_is_space(t[i - 1]));
}

// The insertion point nearest to target (ties: the earlier one).
static size_t nearest_point(const char *t, size_t len, size_t target, int (*is_point)(const char *, size_t, size_t)) {
    for (size_t d = 0;; d++) {
        if (d <= target && is_point(t, len, target - d)) return target - d;
        if (target + d <= len && is_point(t, len, target + d)) return target + d;
    }  // ends by d = max(target, len - target): 0 and len are points
}

// The first n_bytes of the haystack repeated endlessly (copies separated by
// a blank line), plus one byte of lookahead, cut at the last sentence end
// (else the last word end, else a UTF-8 character boundary).
static char *build_context(const char *hay, size_t hay_len, size_t n_bytes, size_t *out_len) {
    static const char sep[] = "\n\n";
    char *t = malloc(n_bytes + 2);
    if (!t) return NULL;
    for (size_t len = 0; len < n_bytes + 1;) {
        size_t n = hay_len < n_bytes + 1 - len ? hay_len : n_bytes + 1 - len;
        memcpy(t + len, hay, n);
        len += n;
        n = 2 < n_bytes + 1 - len ? 2 : n_bytes + 1 - len;
        memcpy(t + len, sep, n);
        len += n;
    }
    // The lookahead byte t[n_bytes] decides whether a sentence ends at n_bytes.
    size_t cut = 0;
    for (size_t i = n_bytes; i > 0 && !cut; i--)
        if (text_is_space(t[i]) && text_sentence_ends_before(t, i)) cut = i;
    for (size_t i = n_bytes; i > 0 && !cut; i--)
        if (text_is_space(t[i]) && !text_is_space(t[i - 1])) cut = i;
    if (!cut) {
        cut = n_bytes;
        while (cut > 0 && ((unsigned char)t[cut] & 0xc0) == 0x80) cut--;  // not inside a UTF-8 character
    }
    t[cut] = '\0';
    *out_len = cut;
    return t;
}

typedef struct insertion {
    size_t at;          // byte offset in the context
    const char *text;   // the sentence
    size_t span_begin, span_end;  // the answer-like part, offsets within text
    int is_needle;
} insertion;

// Draws 4 distinct names, preferring ones the context does not contain.
static void pick_names(uint64_t *rng, const char *ctx, const char *names_out[4]) {
    size_t order[ARRAY_LEN(k_names)];
    for (size_t i = 0; i < ARRAY_LEN(k_names); i++) order[i] = i;
    for (size_t i = ARRAY_LEN(k_names) - 1; i > 0; i--) {
        size_t j = pick(rng, i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_LEN(k_names) && n < 4; i++)
        if (!strstr(ctx, k_names[order[i]])) names_out[n++] = k_names[order[i]];
    for (size_t i = 0; i < ARRAY_LEN(k_names) && n < 4; i++) {  // the context holds most names: take any
        int used = 0;
        for (size_t k = 0; k < n; k++) used |= names_out[k] == k_names[order[i]];
        if (!used) names_out[n++] = k_names[order[i]];
    }
}

// "<older> is older than <younger>." or "<younger> is younger than <older>.";
// the older person's name span within it.
static void comparison_sentence(char *buf, size_t cap, int form, const char *older, const char *younger,
                                size_t *span_begin, size_t *span_end) {
    if (form == 0) {
        snprintf(buf, cap, "%s is older than %s.", older, younger);
        *span_begin = 0;
    } else {
        snprintf(buf, cap, "%s is younger than %s.", younger, older);
        *span_begin = strlen(younger) + strlen(" is younger than ");
    }
    *span_end = *span_begin + strlen(older);
}

int probe_make_example(int kind, const char *haystack, size_t haystack_len, int64_t n_haystack_bytes, double depth,
                       uint64_t seed, probe_example *out, rc_err *err) {
    memset(out, 0, sizeof(*out));
    const int64_t max_bytes = INT64_C(1) << 30;
    if (kind != PROBE_R && kind != PROBE_R2) return rc_fail(err, "probe example: unknown probe kind %d", kind);
    if (n_haystack_bytes < 0 || n_haystack_bytes > max_bytes)
        return rc_fail(err, "probe example: haystack length %lld bytes is outside [0, 2^30]",
                       (long long)n_haystack_bytes);
    if (n_haystack_bytes > 0 && (!haystack || haystack_len == 0))
        return rc_fail(err, "probe example: the haystack text is empty");
    if (haystack && memchr(haystack, '\0', haystack_len))
        return rc_fail(err, "probe example: the haystack text contains a NUL byte");
    if (!(depth >= 0.0 && depth <= 1.0)) return rc_fail(err, "probe example: depth %g is outside [0, 1]", depth);

    size_t ctx_len = 0;
    char *ctx = n_haystack_bytes > 0 ? build_context(haystack, haystack_len, (size_t)n_haystack_bytes, &ctx_len)
                                     : calloc(1, 1);
    if (!ctx) return rc_fail(err, "probe example: out of memory");

    uint64_t rng = seed;
    char needle[256], distractor[256], question[256], answer[128];
    insertion ins[2];
    int n_ins = 0;
    double depths[2] = {depth, depth < 0.5 ? depth + 0.5 : depth - 0.5};
    if (kind == PROBE_R) {
        const char *city = k_cities[pick(&rng, ARRAY_LEN(k_cities))];
        const char *activity = k_activities[pick(&rng, ARRAY_LEN(k_activities))];
        snprintf(needle, sizeof(needle), "The best thing to do in %s is %s.", city, activity);
        snprintf(question, sizeof(question), "What is the best thing to do in %s?", city);
        snprintf(answer, sizeof(answer), "%s", activity);
        size_t b = strlen(needle) - strlen(activity) - 1;
        ins[n_ins++] = (insertion){.text = needle, .span_begin = b, .span_end = b + strlen(activity), .is_needle = 1};
    } else {
        const char *names[4];  // needle: older, younger; distractor: older, younger
        pick_names(&rng, ctx, names);
        size_t nb, ne, db, de;
        comparison_sentence(needle, sizeof(needle), (int)pick(&rng, 2), names[0], names[1], &nb, &ne);
        comparison_sentence(distractor, sizeof(distractor), (int)pick(&rng, 2), names[2], names[3], &db, &de);
        int older_first = (int)pick(&rng, 2);
        snprintf(question, sizeof(question), "Who is older, %s or %s? Answer with one name.",
                 older_first ? names[0] : names[1], older_first ? names[1] : names[0]);
        snprintf(answer, sizeof(answer), "%s", names[0]);
        ins[n_ins++] = (insertion){.text = needle, .span_begin = nb, .span_end = ne, .is_needle = 1};
        ins[n_ins++] = (insertion){.text = distractor, .span_begin = db, .span_end = de, .is_needle = 0};
    }

    // Where each sentence goes: the nearest sentence boundary to its depth,
    // or the nearest word boundary when that is 2% of the text away or more
    // (the reference NIAH code always backs up to a sentence end, but a long
    // Austen sentence is 5% of a 1K-token text). The 2 bytes keep the
    // needle, after its separating space, strictly within 2% of depth.
    size_t slack = ctx_len / 50 > 2 ? ctx_len / 50 - 2 : 0;
    for (int k = 0; k < n_ins; k++) {
        size_t target = (size_t)llround(depths[k] * (double)ctx_len);
        size_t at = nearest_point(ctx, ctx_len, target, is_sentence_point);
        if ((at > target ? at - target : target - at) > slack)
            at = nearest_point(ctx, ctx_len, target, is_word_point);
        ins[k].at = at;
    }
    if (n_ins == 2 && (ins[1].at < ins[0].at)) {  // in text order (needle first at equal offsets)
        insertion tmp = ins[0];
        ins[0] = ins[1];
        ins[1] = tmp;
    }

    strbuf p = {0};
    sb_puts(&p, k_book_open);
    size_t done = 0;
    for (int k = 0; k < n_ins; k++) {
        sb_put(&p, ctx + done, ins[k].at - done);
        done = ins[k].at;
        // One space separates the sentence from text it would otherwise touch.
        if (!p.oom && !text_is_space(p.p[p.n - 1])) sb_puts(&p, " ");
        size_t sentence_at = p.n;
        sb_puts(&p, ins[k].text);
        if (ins[k].at < ctx_len && !text_is_space(ctx[ins[k].at])) sb_puts(&p, " ");
        if (ins[k].is_needle) {
            out->needle_begin = sentence_at + ins[k].span_begin;
            out->needle_end = sentence_at + ins[k].span_end;
        } else {
            out->distractor_begin = sentence_at + ins[k].span_begin;
            out->distractor_end = sentence_at + ins[k].span_end;
        }
    }
    sb_put(&p, ctx + done, ctx_len - done);
    sb_puts(&p, k_book_close);
    sb_puts(&p, question);
    sb_puts(&p, k_answer_cue);
    free(ctx);
    out->answer = strdup(answer);
    if (p.oom || !out->answer) {
        sb_free(&p);
        free(out->answer);
        memset(out, 0, sizeof(*out));
        return rc_fail(err, "probe example: out of memory");
    }
    out->prompt = p.p;
    return 0;
}

void probe_example_free(probe_example *ex) {
    if (!ex) return;
    free(ex->prompt);
    free(ex->answer);
    ex->prompt = ex->answer = NULL;
}
