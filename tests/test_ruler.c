// RULER task generators and scorer (src/eval/ruler.h), checked from the
// outside: every property is measured on the prompt text itself.
//   * tiny tokenizer (tests/support/tiny_model.h: byte-level BPE, ChatML
//     template): always runs;
//   * the real model's tokenizer and chat template (SmolLM2, at
//     RECALL_MODEL_PATH): the test fails when the file is missing, after the
//     tiny-tokenizer part has run.
// The essay haystack is the repository's Persuasion chapter
// (tests/data/prose), which the generator wraps around for long targets.
//
// Per sample: n_tokens within +-2% of the target and equal to our own
// tokenizer_encode count; every answer verbatim in the prompt; chat prompts
// start with "<|im_start|>" (as a token) and end with the assistant header
// plus RULER's answer prefix. niah: each needle exactly once, needle j at
// frac(depth + j/k) of the context in bytes (+-3%, or half a line for line
// haystacks, whose depth resolution is one line), the queried key in the
// question. vt: following the assignments in the prompt from the queried
// value reaches exactly the answers. cwe / fwe: counting the list / coded
// text gives the answers as the strictly most frequent words. Same inputs
// give byte-identical samples, another index another sample, another depth
// the same question.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "eval/ruler.h"
#include "gguf_writer.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"

#define PROSE_PATH RECALL_TEST_DATA "/prose/persuasion_ch1.txt"
#define DEPTH_TOLERANCE 0.03

static char *g_prose;
static size_t g_prose_len;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int is_niah(const char *task) { return strncmp(task, "niah_", 5) == 0; }

static int count_occurrences(const char *hay, const char *needle) {
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + len, needle)) n++;
    return n;
}

// Last occurrence of needle in [hay, hay_end).
static const char *find_last(const char *hay, const char *needle) {
    const char *last = NULL;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) last = p;
    return last;
}

static char *dup_range(const char *b, const char *e) {
    char *s = malloc((size_t)(e - b) + 1);
    memcpy(s, b, (size_t)(e - b));
    s[e - b] = '\0';
    return s;
}

// ---------------------------------------------------------------------------
// word counting for cwe / fwe

typedef struct word_count {
    char word[64];
    int count;
} word_count;

typedef struct counts {
    word_count *w;
    int n, cap;
} counts;

static void counts_add(counts *c, const char *word, size_t len) {
    if (len >= sizeof(c->w[0].word)) len = sizeof(c->w[0].word) - 1;
    for (int i = 0; i < c->n; i++)
        if (strlen(c->w[i].word) == len && memcmp(c->w[i].word, word, len) == 0) {
            c->w[i].count++;
            return;
        }
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->w = realloc(c->w, (size_t)c->cap * sizeof(*c->w));
    }
    memcpy(c->w[c->n].word, word, len);
    c->w[c->n].word[len] = '\0';
    c->w[c->n].count = 1;
    c->n++;
}

static int counts_get(const counts *c, const char *word) {
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->w[i].word, word) == 0) return c->w[i].count;
    return 0;
}

// The answers are exactly the most frequent words: each answer's count is
// above every other word's count (skip: a word left out of the ranking).
static void check_top_words(const char *label, const counts *c, const ruler_sample *s, const char *skip) {
    int min_answer = 1 << 30, max_other = 0;
    for (int i = 0; i < s->n_answers; i++) {
        int k = counts_get(c, s->answers[i]);
        CHECK_MSG(k > 0, "%s: answer %s is not in the list", label, s->answers[i]);
        if (k < min_answer) min_answer = k;
    }
    for (int i = 0; i < c->n; i++) {
        int is_answer = 0;
        for (int a = 0; a < s->n_answers; a++) is_answer |= strcmp(c->w[i].word, s->answers[a]) == 0;
        if (!is_answer && !(skip && strcmp(c->w[i].word, skip) == 0) && c->w[i].count > max_other)
            max_other = c->w[i].count;
    }
    CHECK_MSG(min_answer > max_other, "%s: least frequent answer %d times, most frequent other word %d times", label,
              min_answer, max_other);
}

// ---------------------------------------------------------------------------
// per-task checks on the prompt text

static void check_niah(const char *label, const ruler_sample *s, double depth_wanted) {
    const char *p = s->prompt;
    // The context, found from the template's text: after "afterwards.\n", before the last "\nWhat ".
    const char *head = strstr(p, "afterwards.\n");
    const char *tail = find_last(p, "\nWhat ");
    CHECK_MSG(head && tail && tail > head, "%s: niah template not found", label);
    if (!head || !tail || tail <= head) return;
    int64_t cb = head + strlen("afterwards.\n") - p, ce = tail - p;
    CHECK_MSG(s->context_begin == cb && s->context_end == ce, "%s: context [%lld, %lld), found [%lld, %lld)", label,
              (long long)s->context_begin, (long long)s->context_end, (long long)cb, (long long)ce);
    double ctx_len = (double)(ce - cb);
    // Line haystacks place needles between lines: allow half the longest line.
    double tol = DEPTH_TOLERANCE;
    int line_hay = strstr(s->task, "single_1") || strstr(s->task, "multikey_2") || strstr(s->task, "multikey_3");
    if (line_hay) {
        int64_t longest = 0, start = cb;
        for (int64_t i = cb; i <= ce; i++)
            if (i == ce || p[i] == '\n') {
                if (i - start + 1 > longest) longest = i - start + 1;
                start = i + 1;
            }
        double half_line = 0.5 * (double)longest / ctx_len + 0.005;
        if (half_line > tol) tol = half_line;
    }
    CHECK_MSG(s->n_needles >= 1 && s->needles, "%s: no needles", label);
    for (int j = 0; j < s->n_needles; j++) {
        const char *needle = s->needles[j];
        CHECK_MSG(count_occurrences(p, needle) == 1, "%s: needle %d occurs %d times", label, j, count_occurrences(p, needle));
        const char *at = strstr(p, needle);
        if (!at) continue;
        CHECK_MSG(at - p >= cb && at + strlen(needle) - p <= ce, "%s: needle %d outside the context", label, j);
        double measured = (double)(at - p - cb) / ctx_len;
        double want = j == 0 ? depth_wanted : depth_wanted + (double)j / s->n_needles;
        want -= (double)(int64_t)want;  // frac
        if (j == 0) CHECK_CLOSE(s->depth, measured, 1e-12, 0);
        CHECK_MSG(fabs(measured - want) <= tol, "%s: needle %d at depth %.4f, wanted %.4f (+-%.3f)", label, j, measured,
                  want, tol);
        CHECK_MSG(strncmp(needle, "One of the special magic ", 25) == 0, "%s: needle '%s'", label, needle);
    }
    // Each answer is the value of one needle ("... is: VALUE.").
    for (int a = 0; a < s->n_answers; a++) {
        int found = 0;
        for (int j = 0; j < s->n_needles; j++) {
            const char *v = strstr(s->needles[j], " is: ");
            found |= v && strncmp(v + 5, s->answers[a], strlen(s->answers[a])) == 0 &&
                     strcmp(v + 5 + strlen(s->answers[a]), ".") == 0;
        }
        CHECK_MSG(found, "%s: answer %s is no needle's value", label, s->answers[a]);
    }
    // The key of needle 0 is asked for in the question, and appears once in the context.
    const char *k0 = strstr(s->needles[0], " for "), *k1 = strstr(s->needles[0], " is: ");
    if (k0 && k1) {
        char *key = dup_range(k0 + 5, k1);
        CHECK_MSG(strstr(tail, key) != NULL, "%s: key %s not in the question", label, key);
        char *ctx = dup_range(p + cb, p + ce);
        int with_key = 0;  // multivalue: every needle has the key
        for (int j = 0; j < s->n_needles; j++) with_key += strstr(s->needles[j], key) != NULL;
        CHECK_MSG(count_occurrences(ctx, key) == with_key, "%s: key %s occurs %d times in the context, %d needles",
                  label, key, count_occurrences(ctx, key), with_key);
        free(ctx);
        free(key);
    }
    int single = s->n_answers == 1;
    CHECK_MSG(strstr(p, single ? "A special magic " : "Some special magic ") != NULL, "%s: template number", label);
    // Line haystacks: every line of the context is noise or a needle (the first may be a line's tail).
    if (line_hay) {
        int64_t start = cb;
        int line_no = 0;
        for (int64_t i = cb; i <= ce; i++) {
            if (i != ce && p[i] != '\n') continue;
            char *line = dup_range(p + start, p + i);
            int ok;
            if (strstr(s->task, "single_1")) {
                ok = strcmp(line, "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.") == 0 ||
                     strncmp(line, "One of the special magic ", 25) == 0;
                if (!ok && line_no == 0)
                    ok = strstr("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.", line) != NULL;
            } else {
                ok = strncmp(line, "One of the special magic ", 25) == 0 && line[strlen(line) - 1] == '.';
                if (!ok && line_no == 0) ok = line[0] && line[strlen(line) - 1] == '.';  // a needle's tail
            }
            CHECK_MSG(ok, "%s: context line %d: '%.80s'", label, line_no, line);
            free(line);
            start = i + 1;
            line_no++;
        }
    }
}

// vt: follow "VAR X = <value>" and "VAR Y = VAR X" in the question's text (not the example).
static void check_vt(const char *label, const ruler_sample *s) {
    const char *sec = find_last(s->prompt, "Memorize and track the chain(s) of variable assignment");
    const char *q = sec ? strstr(sec, "\nQuestion: Find all variables that are assigned the value ") : NULL;
    CHECK_MSG(sec && q, "%s: vt template not found", label);
    if (!sec || !q) return;
    unsigned value = 0;
    CHECK(sscanf(q, "\nQuestion: Find all variables that are assigned the value %u in the text above.", &value) == 1);
    CHECK_MSG(count_occurrences(s->prompt, "Memorize and track") == 2, "%s: expected the example and the question", label);
    char reached[32][16];
    int n_reached = 0;
    // Pass 1: variables assigned the value; then repeatedly variables assigned a reached one.
    for (int changed = 1; changed;) {
        changed = 0;
        for (const char *v = strstr(sec, "VAR "); v && v < q; v = strstr(v + 4, "VAR ")) {
            char lhs[16], rhs[16];
            unsigned num;
            int is_num = sscanf(v, "VAR %15[A-Z] = %u", lhs, &num) == 2;
            int is_var = !is_num && sscanf(v, "VAR %15[A-Z] = VAR %15[A-Z]", lhs, rhs) == 2;
            if (!is_num && !is_var) continue;
            int hit = is_num && num == value;
            for (int i = 0; is_var && i < n_reached; i++) hit |= strcmp(reached[i], rhs) == 0;
            int known = 0;
            for (int i = 0; i < n_reached; i++) known |= strcmp(reached[i], lhs) == 0;
            if (hit && !known && n_reached < 32) {
                snprintf(reached[n_reached++], sizeof(reached[0]), "%s", lhs);
                changed = 1;
            }
        }
    }
    CHECK_MSG(n_reached == s->n_answers && n_reached == 5, "%s: chain reaches %d variables, %d answers", label,
              n_reached, s->n_answers);
    for (int a = 0; a < s->n_answers; a++) {
        int found = 0;
        for (int i = 0; i < n_reached; i++) found |= strcmp(reached[i], s->answers[a]) == 0;
        CHECK_MSG(found, "%s: answer %s not on the chain", label, s->answers[a]);
        CHECK(strlen(s->answers[a]) == 5);
    }
}

// cwe: the question's numbered list "1. w 2. w ...", counted.
static void check_cwe(const char *label, const ruler_sample *s) {
    const char *sec = find_last(s->prompt, "Below is a numbered list of words.");
    const char *list = sec ? strchr(sec, '\n') : NULL;
    const char *end = list ? strstr(list, "\nQuestion: What are the 10 most common words in the above list?") : NULL;
    CHECK_MSG(sec && list && end, "%s: cwe template not found", label);
    if (!sec || !list || !end) return;
    CHECK(s->n_answers == 10);
    char *text = dup_range(list + 1, end);
    counts c = {0};
    int expect = 1, bad = 0;
    for (char *tok = strtok(text, " "); tok; tok = strtok(NULL, " ")) {
        int num;
        char dot;
        if (sscanf(tok, "%d%c", &num, &dot) != 2 || dot != '.' || num != expect) {
            bad = 1;
            break;
        }
        char *word = strtok(NULL, " ");
        if (!word) {
            bad = 1;
            break;
        }
        counts_add(&c, word, strlen(word));
        expect++;
    }
    CHECK_MSG(!bad && expect > 1, "%s: malformed numbered list near entry %d", label, expect);
    check_top_words(label, &c, s, NULL);
    free(c.w);
    free(text);
}

// fwe: the coded text between "coded words. " and "\nQuestion:", counted; "..." is the noise word.
static void check_fwe(const char *label, const ruler_sample *s) {
    const char *b = strstr(s->prompt, "Find the three most frequently appeared coded words. ");
    const char *e = b ? strstr(b, "\nQuestion: Do not provide any explanation.") : NULL;
    CHECK_MSG(b && e, "%s: fwe template not found", label);
    if (!b || !e) return;
    CHECK(s->n_answers == 3);
    char *text = dup_range(b + strlen("Find the three most frequently appeared coded words. "), e);
    counts c = {0};
    for (char *tok = strtok(text, " "); tok; tok = strtok(NULL, " ")) counts_add(&c, tok, strlen(tok));
    check_top_words(label, &c, s, "...");
    int dots = counts_get(&c, "...");
    for (int i = 0; i < c.n; i++)
        CHECK_MSG(strcmp(c.w[i].word, "...") == 0 || (c.w[i].count < dots && strlen(c.w[i].word) == 6),
                  "%s: code %s (%d times, noise %d)", label, c.w[i].word, c.w[i].count, dots);
    free(c.w);
    free(text);
}

// ---------------------------------------------------------------------------

typedef struct tok_ctx {
    const char *name;
    tokenizer *tok;
    const gguf_file *f;
} tok_ctx;

static const char *answer_prefix_end(const char *task) {
    if (is_niah(task)) return " mentioned in the provided text";
    if (strcmp(task, "vt") == 0) return ", they are: ";
    if (strcmp(task, "cwe") == 0) return "appear most often in the list are:";
    return "the three most frequently appeared words are:";
}

static int generate(const tok_ctx *tc, const char *task, int64_t target, uint64_t seed, int64_t index, double depth,
                    int chat, ruler_sample *s, double *seconds) {
    ruler_gen_opts o = {.task = task, .target_tokens = target, .seed = seed, .index = index, .depth = depth,
                        .tok = tc->tok, .chat = chat ? tc->f : NULL, .prose = g_prose, .prose_len = g_prose_len};
    rc_err err = {{0}};
    double t0 = now_s();
    int rc = ruler_generate(&o, s, &err);
    if (seconds) *seconds += now_s() - t0;
    CHECK_MSG(rc == 0, "%s %s %lld chat=%d: %s", tc->name, task, (long long)target, chat, err.msg);
    return rc;
}

// Everything a single sample must satisfy.
static void check_sample(const tok_ctx *tc, const ruler_sample *s, const char *task, int64_t target, double depth,
                         int chat) {
    char label[160];
    snprintf(label, sizeof(label), "%s %s target %lld depth %.2f chat %d", tc->name, task, (long long)target, depth, chat);
    CHECK_MSG(strcmp(s->task, task) == 0, "%s: task '%s'", label, s->task);
    CHECK_MSG(s->prompt && s->answers && s->n_answers > 0, "%s: empty sample", label);
    if (!s->prompt || !s->answers) return;
    size_t len = strlen(s->prompt);
    // Length: within 2% and equal to our own count.
    CHECK_MSG(llabs(s->n_tokens - target) <= (int64_t)(RULER_LENGTH_TOLERANCE * (double)target), "%s: %lld tokens",
              label, (long long)s->n_tokens);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc_err err = {{0}};
    int add_bos = tokenizer_add_bos(tc->tok);
    CHECK(tokenizer_encode(tc->tok, s->prompt, len, add_bos, chat, &ids, &n_ids, &err) == 0);
    CHECK_MSG((int64_t)n_ids == s->n_tokens, "%s: n_tokens %lld, encode gives %zu", label, (long long)s->n_tokens, n_ids);
    CHECK(s->add_bos == add_bos && s->parse_special == chat);
    // Chat: the template's first token opens the prompt; the assistant header precedes the answer prefix.
    if (chat && n_ids > (size_t)add_bos) {
        char piece[64] = {0};
        tokenizer_token_bytes(tc->tok, ids[add_bos], piece, sizeof(piece) - 1);
        CHECK_MSG(strncmp(s->prompt, "<|im_start|>", 12) == 0 && strcmp(piece, "<|im_start|>") == 0,
                  "%s: chat prompt starts with '%.20s' (token '%s')", label, s->prompt, piece);
        CHECK_MSG(strstr(s->prompt, "<|im_start|>assistant\n") != NULL, "%s: no assistant header", label);
        const char *ap = strstr(s->prompt, "<|im_start|>assistant\n");
        if (ap) CHECK_MSG(ap[22] != ' ' && ap[22] != '\0', "%s: answer prefix must follow the header", label);
    }
    if (!chat) CHECK_MSG(strstr(s->prompt, "<|im_start|>") == NULL, "%s: chat token in a plain prompt", label);
    free(ids);
    const char *suffix = answer_prefix_end(task);
    const char *at = find_last(s->prompt, suffix);
    CHECK_MSG(at != NULL, "%s: answer prefix '%s' missing", label, suffix);
    if (at && is_niah(task)) {
        const char *rest = at + strlen(suffix);
        CHECK_MSG(strcmp(rest, " is") == 0 || strcmp(rest, " are") == 0, "%s: prompt ends with '%s'", label, rest);
    } else if (at) {
        CHECK_MSG(at + strlen(suffix) == s->prompt + len, "%s: prompt does not end with the answer prefix", label);
    }
    // Answers verbatim in the context.
    CHECK(s->context_begin > 0 && s->context_begin < s->context_end && s->context_end <= (int64_t)len);
    for (int a = 0; a < s->n_answers; a++) {
        const char *hit = strstr(s->prompt + s->context_begin, s->answers[a]);
        CHECK_MSG(hit && hit - s->prompt < s->context_end, "%s: answer %s not in the context", label, s->answers[a]);
    }
    if (is_niah(task)) {
        CHECK(s->max_new_tokens == 128);
        check_niah(label, s, depth);
    } else {
        CHECK_CLOSE(s->depth, -1.0, 0, 0);
        CHECK(s->n_needles == 0 && s->needles == NULL);
        if (strcmp(task, "vt") == 0) {
            CHECK(s->max_new_tokens == 30);
            check_vt(label, s);
        } else if (strcmp(task, "cwe") == 0) {
            CHECK(s->max_new_tokens == 120);
            check_cwe(label, s);
        } else {
            CHECK(s->max_new_tokens == 50);
            check_fwe(label, s);
        }
    }
}

static int same_sample(const ruler_sample *a, const ruler_sample *b) {
    if (!a->prompt || !b->prompt || strcmp(a->prompt, b->prompt) != 0 || a->n_answers != b->n_answers) return 0;
    for (int i = 0; i < a->n_answers; i++)
        if (strcmp(a->answers[i], b->answers[i]) != 0) return 0;
    return a->n_tokens == b->n_tokens;
}

static int same_answers(const ruler_sample *a, const ruler_sample *b) {
    if (a->n_answers != b->n_answers) return 0;
    for (int i = 0; i < a->n_answers; i++)
        if (strcmp(a->answers[i], b->answers[i]) != 0) return 0;
    return 1;
}

static void test_tasks(const tok_ctx *tc, const int64_t *targets, int n_targets, double *seconds, int *n_samples) {
    int n_tasks;
    const char *const *tasks = ruler_task_names(&n_tasks);
    CHECK(n_tasks == 11);
    static const double DEPTHS[] = {0.1, 0.5, 0.9};
    for (int ti = 0; ti < n_tasks; ti++) {
        const char *task = tasks[ti];
        CHECK(ruler_task_known(task));
        for (int li = 0; li < n_targets; li++) {
            int64_t target = targets[li];
            int n_depths = is_niah(task) ? 3 : 1;
            for (int di = 0; di < n_depths; di++)
                for (int chat = 0; chat <= 1; chat++) {
                    if (chat && di != 1 && n_depths == 3) continue;  // chat at depth 0.5 only
                    double depth = is_niah(task) ? DEPTHS[di] : 0.5;
                    ruler_sample s;
                    if (generate(tc, task, target, 7, 3, depth, chat, &s, seconds)) continue;
                    (*n_samples)++;
                    check_sample(tc, &s, task, target, depth, chat);
                    if (di == 0 && chat == 0) {
                        // Determinism, and a new sample for a new index / seed.
                        ruler_sample again, next, other_seed;
                        if (generate(tc, task, target, 7, 3, depth, 0, &again, seconds) == 0) {
                            CHECK_MSG(same_sample(&s, &again), "%s %s %lld: same inputs, different sample", tc->name,
                                      task, (long long)target);
                            ruler_sample_free(&again);
                        }
                        if (generate(tc, task, target, 7, 4, depth, 0, &next, seconds) == 0) {
                            CHECK_MSG(strcmp(s.prompt, next.prompt) != 0 && !same_answers(&s, &next),
                                      "%s %s %lld: index 3 and 4 give the same sample", tc->name, task, (long long)target);
                            check_sample(tc, &next, task, target, depth, 0);
                            ruler_sample_free(&next);
                        }
                        if (generate(tc, task, target, 8, 3, depth, 0, &other_seed, seconds) == 0) {
                            CHECK_MSG(!same_answers(&s, &other_seed), "%s %s: seeds 7 and 8 give the same answers",
                                      tc->name, task);
                            ruler_sample_free(&other_seed);
                        }
                        (*n_samples) += 3;
                    }
                    if (is_niah(task) && di == 1 && chat == 0) {
                        // Another depth asks the same question.
                        ruler_sample deep;
                        if (generate(tc, task, target, 7, 3, 0.9, 0, &deep, seconds) == 0) {
                            CHECK_MSG(same_answers(&s, &deep) && strcmp(s.prompt, deep.prompt) != 0,
                                      "%s %s: depth changes the answers or not the prompt", tc->name, task);
                            ruler_sample_free(&deep);
                        }
                        // A random depth is one of RULER's 40 (round(linspace(0, 100, 40)) percent).
                        ruler_sample rnd;
                        if (generate(tc, task, target, 7, 3, -1.0, 0, &rnd, seconds) == 0) {
                            CHECK(rnd.depth >= 0.0 && rnd.depth <= 1.0);
                            CHECK_MSG(same_answers(&s, &rnd), "%s %s: random depth changes the answers", tc->name, task);
                            ruler_sample_free(&rnd);
                        }
                        (*n_samples) += 2;
                    }
                    ruler_sample_free(&s);
                    CHECK(s.prompt == NULL && s.answers == NULL && s.n_answers == 0);
                }
        }
    }
}

static void expect_error(const tok_ctx *tc, const char *task, int64_t target, double depth, const char *prose,
                         const char *needle) {
    ruler_gen_opts o = {.task = task, .target_tokens = target, .seed = 1, .depth = depth, .tok = tc->tok,
                        .prose = prose, .prose_len = prose ? strlen(prose) : 0};
    ruler_sample s;
    rc_err err = {{0}};
    int rc = ruler_generate(&o, &s, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, needle) != NULL, "%s %s %lld: rc %d, message '%s' (wanted '%s')", tc->name,
              task ? task : "(null)", (long long)target, rc, err.msg, needle);
    CHECK(s.prompt == NULL && s.answers == NULL);
    if (rc == 0) ruler_sample_free(&s);
}

static void test_errors(const tok_ctx *tc) {
    expect_error(tc, "niah_single_9", 1024, 0.5, g_prose, "unknown task");
    expect_error(tc, NULL, 1024, 0.5, g_prose, "unknown task");
    expect_error(tc, "niah_single_2", 1024, 0.5, NULL, "essay haystack");
    expect_error(tc, "niah_single_2", 1024, 0.5, "   \n  ", "no words");
    expect_error(tc, "niah_single_1", 0, 0.5, NULL, "positive");
    expect_error(tc, "niah_single_1", 1024, 1.5, NULL, "depth");
    expect_error(tc, "niah_single_1", 1024, NAN, NULL, "depth");
    for (int i = 0; i < 11; i++) expect_error(tc, ruler_task_names(NULL)[i], 40, 0.5, g_prose, "too small");
    CHECK(!ruler_task_known("cwe2") && !ruler_task_known(NULL) && !ruler_task_known(""));
    CHECK(ruler_task_needs_prose("niah_single_2") && !ruler_task_needs_prose("niah_single_1") &&
          !ruler_task_needs_prose("cwe"));
    // Noise tasks work without prose.
    ruler_gen_opts o = {.task = "niah_single_1", .target_tokens = 2048, .seed = 1, .depth = 0.25, .tok = tc->tok};
    ruler_sample s;
    rc_err err = {{0}};
    CHECK_MSG(ruler_generate(&o, &s, &err) == 0, "noise haystack without prose: %s", err.msg);
    ruler_sample_free(&s);
    ruler_sample_free(NULL);
}

static void test_score(void) {
    char *ans[] = {"1234567", "7654321", "Apple-Pie", "0f8e2a4c-1b3d-4e5f-8a9b-0c1d2e3f4a5b"};
    ruler_sample s = {.answers = ans, .n_answers = 4};
    CHECK_CLOSE(ruler_score(&s, "1234567, 7654321, apple-pie and 0F8E2A4C-1B3D-4E5F-8A9B-0C1D2E3F4A5B."), 1.0, 0, 0);
    CHECK_CLOSE(ruler_score(&s, "The numbers are 1234567 and 7654321."), 0.5, 0, 0);
    CHECK_CLOSE(ruler_score(&s, "I do not know."), 0.0, 0, 0);
    CHECK_CLOSE(ruler_score(&s, ""), 0.0, 0, 0);
    CHECK_CLOSE(ruler_score(&s, NULL), 0.0, 0, 0);
    // Case-insensitive both ways.
    CHECK_CLOSE(ruler_score(&s, "APPLE-PIE"), 0.25, 0, 0);
    CHECK_CLOSE(ruler_score(&s, "apple-pie"), 0.25, 0, 0);
    // RULER's string_match_all is a substring test: an answer inside a longer number counts.
    CHECK_CLOSE(ruler_score(&s, "12345678"), 0.25, 0, 0);
    CHECK_CLOSE(ruler_score(&s, "123456"), 0.0, 0, 0);  // a prefix of the answer does not
    char *one[] = {"4067069"};
    ruler_sample s1 = {.answers = one, .n_answers = 1};
    CHECK_CLOSE(ruler_score(&s1, " The special magic number is 4067069."), 1.0, 0, 0);
    CHECK_CLOSE(ruler_score(&s1, "406 7069"), 0.0, 0, 0);
    ruler_sample none = {0};
    CHECK_CLOSE(ruler_score(&none, "anything"), 0.0, 0, 0);
    CHECK_CLOSE(ruler_score(NULL, "anything"), 0.0, 0, 0);
}

static void test_score_generated(const tok_ctx *tc) {
    int n_tasks;
    const char *const *tasks = ruler_task_names(&n_tasks);
    for (int i = 0; i < n_tasks; i++) {
        ruler_sample s;
        if (generate(tc, tasks[i], 2048, 11, 0, 0.3, 0, &s, NULL)) continue;
        char out[2048] = "";
        for (int a = 0; a < s.n_answers; a++) {
            strcat(out, a ? ", " : "");
            strcat(out, s.answers[a]);
        }
        CHECK_CLOSE(ruler_score(&s, out), 1.0, 0, 0);
        // Half of the answers (rounded down) present.
        char half[2048] = "";
        for (int a = 0; a < s.n_answers / 2; a++) {
            strcat(half, " ");
            strcat(half, s.answers[a]);
        }
        CHECK_CLOSE(ruler_score(&s, half), (double)(s.n_answers / 2) / s.n_answers, 1e-12, 0);
        // The prompt's question alone (without the context) names no answer.
        CHECK_CLOSE(ruler_score(&s, s.prompt + s.context_end), 0.0, 0, 0);
        ruler_sample_free(&s);
    }
}

static void test_load_prose(void) {
    char *text = NULL;
    size_t len = 0;
    rc_err err = {{0}};
    CHECK(ruler_load_prose("/nonexistent/austen.txt", &text, &len, &err) == -1 && text == NULL && len == 0);
    CHECK_MSG(strstr(err.msg, "/nonexistent/austen.txt") && strstr(err.msg, "setup.sh"), "%s", err.msg);
    char path[] = "/tmp/test_ruler_empty_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, "\n \n", 3) == 3);
        close(fd);
        CHECK(ruler_load_prose(path, &text, &len, &err) == -1 && text == NULL);
        CHECK_MSG(strstr(err.msg, "empty") != NULL, "%s", err.msg);
        unlink(path);
    }
    CHECK(ruler_load_prose(RECALL_TEST_DATA "/prose", &text, &len, &err) == -1);
    CHECK_MSG(ruler_load_prose(PROSE_PATH, &text, &len, &err) == 0, "%s", err.msg);
    CHECK(text && len > 10000 && strlen(text) == len);
    free(text);
}

// ---------------------------------------------------------------------------

static int tiny_tokenizer(uint8_t **img, gguf_file *f, tokenizer **tok) {
    tiny_model_params p;
    tiny_model_default(&p);
    gguf_writer w;
    gguf_writer_init(&w);
    rc_err err = {{0}};
    size_t n = 0;
    int rc = tiny_model_build(&w, &p, &err);
    if (rc == 0) rc = gguf_writer_write_memory(&w, img, &n, NULL, &err);
    gguf_writer_free(&w);
    if (rc == 0) rc = gguf_open_memory(f, *img, n, "tiny.gguf", &err);
    if (rc == 0 && (rc = tokenizer_init(tok, f, &err))) gguf_close(f);
    CHECK_MSG(rc == 0, "tiny tokenizer: %s", err.msg);
    return rc;
}

int main(void) {
    rc_err err = {{0}};
    if (ruler_load_prose(PROSE_PATH, &g_prose, &g_prose_len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_score();
    test_load_prose();

    // Tiny byte-level tokenizer (about one token per byte): no model needed.
    uint8_t *img = NULL;
    gguf_file tiny_f;
    tokenizer *tiny_tok = NULL;
    if (tiny_tokenizer(&img, &tiny_f, &tiny_tok) == 0) {
        tok_ctx tc = {"tiny", tiny_tok, &tiny_f};
        static const int64_t TARGETS[] = {2048, 8192};  // vt's and cwe's examples alone take ~1K and ~5K bytes
        double secs = 0;
        int n = 0;
        test_tasks(&tc, TARGETS, 2, &secs, &n);
        test_errors(&tc);
        test_score_generated(&tc);
        printf("tiny tokenizer: %d samples in %.2f s\n", n, secs);
        tokenizer_free(tiny_tok);
        gguf_close(&tiny_f);
    }
    free(img);

    gguf_file f;
    if (gguf_open(&f, RECALL_MODEL_PATH, &err) != 0) {
        free(g_prose);
        return test_missing_model(RECALL_MODEL_PATH, err.msg);
    }
    tokenizer *tok = NULL;
    CHECK_MSG(tokenizer_init(&tok, &f, &err) == 0, "%s", err.msg);
    if (tok) {
        tok_ctx tc = {"smollm2", tok, &f};
        static const int64_t TARGETS[] = {1024, 4096};
        double secs = 0;
        int n = 0;
        test_tasks(&tc, TARGETS, 2, &secs, &n);
        test_errors(&tc);
        test_score_generated(&tc);
        printf("smollm2 tokenizer: %d samples in %.2f s\n", n, secs);
        // Long samples: 32K tokens for every task (the prose wraps around), with the time each takes.
        int n_tasks;
        const char *const *tasks = ruler_task_names(&n_tasks);
        for (int i = 0; i < n_tasks; i++) {
            ruler_sample s;
            double t = 0;
            if (generate(&tc, tasks[i], 32768, 5, 0, 0.5, 1, &s, &t) == 0) {
                check_sample(&tc, &s, tasks[i], 32768, 0.5, 1);
                printf("  %-16s 32768 -> %lld tokens in %.3f s\n", tasks[i], (long long)s.n_tokens, t);
                ruler_sample_free(&s);
            }
        }
        // cwe has about 2,250 distinct words for its list: far beyond 32K tokens it says so.
        expect_error(&tc, "cwe", 120000, 0.5, NULL, "too large");
        tokenizer_free(tok);
    }
    gguf_close(&f);
    free(g_prose);
    TEST_MAIN_END();
}
