// HeadKV probes (eval/probe.h): R and R2 scoring on constructed attention
// maps whose answers are worked out by hand (and R2 against a brute-force
// sort on random rows), SQuAD-style F1 on hand cases, and the probe prompts:
// needle at the requested depth, spans on the answer text, R2's distractor,
// determinism by seed. The probe algorithm (eval/head_probe.h) on cases
// whose answers hold by construction: the attention capture against exp(s -
// lse) placed by position, a sized prompt's length and needle span on a tiny
// model's byte-level tokenizer, and one example's answer against the same
// greedy decode run by hand.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "eval/head_probe.h"
#include "eval/probe.h"
#include "test_backend.h"
#include "tiny_model.h"

// ---------------------------------------------------------------- R probe

enum { N_POS = 20 };

// Row with `peak` at position p and the rest spread evenly (sums to 1).
static void peaked_row(float *row, int64_t p, float peak) {
    for (int64_t i = 0; i < N_POS; i++) row[i] = (1.0f - peak) / (N_POS - 1);
    row[p] = peak;
}

static void test_r_probe(void) {
    int32_t tokens[N_POS];
    for (int i = 0; i < N_POS; i++) tokens[i] = 100 + i;
    tokens[15] = 109;  // the token of needle position 9 also occurs outside the needle
    const probe_span needle = {8, 12};
    const int64_t n_answer = 4;
    float attn[5 * N_POS];
    double score[5] = {0};
    // The model copies the needle: step t generates tokens[8 + t].
    for (int t = 0; t < 4; t++) {
        int32_t generated = tokens[8 + t];
        peaked_row(attn + 0 * N_POS, 8 + t, 0.6f);           // head 0: on the token being copied -> +1/4
        peaked_row(attn + 1 * N_POS, 8 + (t + 1) % 4, 0.6f);  // head 1: inside the needle, another token -> 0
        peaked_row(attn + 2 * N_POS, 15, 0.6f);              // head 2: outside (token 109 there at t=1) -> 0
        // head 3: a tie between position 2 (outside) and 8 + t: the lower position wins -> 0
        peaked_row(attn + 3 * N_POS, 8 + t, 0.4f);
        attn[3 * N_POS + 2] = 0.4f;
        // head 4: NaN everywhere but the needle token: NaN ranks last -> +1/4 each step
        for (int i = 0; i < N_POS; i++) attn[4 * N_POS + i] = NAN;
        attn[4 * N_POS + 8 + t] = 0.01f;
        probe_r_step(attn, 5, N_POS, tokens, needle, generated, n_answer, score);
    }
    CHECK_CLOSE(score[0], 1.0, 1e-12, 0);
    CHECK(score[1] == 0.0);
    CHECK(score[2] == 0.0);
    CHECK(score[3] == 0.0);
    CHECK_CLOSE(score[4], 1.0, 1e-12, 0);

    // Scores add into the caller's array; n_answer = 0 or no positions add nothing.
    double acc[1] = {0.5};
    peaked_row(attn, 9, 0.9f);
    probe_r_step(attn, 1, N_POS, tokens, needle, tokens[9], 2, acc);
    CHECK_CLOSE(acc[0], 1.0, 1e-12, 0);  // 0.5 + 1/2
    probe_r_step(attn, 1, N_POS, tokens, needle, tokens[9], 0, acc);
    probe_r_step(attn, 1, 0, tokens, needle, tokens[9], 2, acc);
    CHECK_CLOSE(acc[0], 1.0, 1e-12, 0);
}

// --------------------------------------------------------------- R2 probe

// Brute force: sort positions by (attention desc, position asc, NaN last),
// take the first top_n, add those in the span.
static const float *g_row;
static int cmp_pos(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    float fx = g_row[x], fy = g_row[y];
    if (isnan(fx) != isnan(fy)) return isnan(fx) ? 1 : -1;
    if (!isnan(fx) && fx != fy) return fx > fy ? -1 : 1;
    return (x > y) - (x < y);
}

static double r2_reference(const float *row, int64_t n_pos, probe_span span, int64_t top_n, int64_t n_answer) {
    int64_t *order = malloc((size_t)n_pos * sizeof(int64_t));
    for (int64_t i = 0; i < n_pos; i++) order[i] = i;
    g_row = row;
    qsort(order, (size_t)n_pos, sizeof(int64_t), cmp_pos);
    double s = 0;
    for (int64_t k = 0; k < top_n && k < n_pos; k++)
        if (order[k] >= span.begin && order[k] < span.end && !isnan(row[order[k]]))
            s += row[order[k]] / (double)n_answer;
    free(order);
    return s;
}

static void test_r2_probe(void) {
    const probe_span correct = {4, 6};
    // head 0: top 3 = 0.3 @4, 0.25 @0, 0.2 @5 -> 4 and 5 in the span: (0.3 + 0.2) / 2 = 0.25
    // head 1: all 0.1, ties by position: top 3 = 0, 1, 2 -> none in the span: 0
    // head 2: top 3 = 0.4 @1, 0.3 @2, 0.1 @4 -> only 4: 0.1 / 2 = 0.05 (0.03 @5 ranks 4th..)
    const float attn[3 * 10] = {
        0.25f, 0.05f, 0.05f, 0.05f, 0.30f, 0.20f, 0.02f, 0.03f, 0.03f, 0.02f,  //
        0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f, 0.10f,  //
        0.05f, 0.40f, 0.30f, 0.02f, 0.10f, 0.03f, 0.03f, 0.03f, 0.02f, 0.02f,  //
    };
    double score[3] = {0};
    probe_r2_step(attn, 3, 10, correct, 3, 2, score);
    CHECK_CLOSE(score[0], 0.25, 1e-7, 0);
    CHECK(score[1] == 0.0);
    CHECK_CLOSE(score[2], 0.05, 1e-7, 0);

    // top_n beyond the row: every span position counts. head 1: (0.1 + 0.1) / 2 = 0.1;
    // two steps add: head 0 gets 2 x 0.25.
    double all[3] = {0};
    probe_r2_step(attn, 3, 10, correct, 50, 2, all);
    probe_r2_step(attn, 3, 10, correct, 50, 2, all);
    CHECK_CLOSE(all[0], 0.5, 1e-7, 0);
    CHECK_CLOSE(all[1], 0.2, 1e-7, 0);
    // A span that runs past the row is clipped; top_n = 0 adds nothing.
    double clip[3] = {0};
    probe_r2_step(attn, 3, 10, (probe_span){8, 40}, 10, 1, clip);
    CHECK_CLOSE(clip[0], 0.05, 1e-7, 0);  // 0.03 + 0.02
    probe_r2_step(attn, 3, 10, correct, 0, 2, clip);
    CHECK_CLOSE(clip[0], 0.05, 1e-7, 0);

    // Random rows with ties and NaNs against the brute-force sort.
    uint64_t r = 0x123456789abcdefull;
    for (int trial = 0; trial < 300; trial++) {
        int64_t n_pos = 1 + (int64_t)(trial % 97);
        float *row = malloc((size_t)n_pos * sizeof(float));
        for (int64_t i = 0; i < n_pos; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            row[i] = (r % 23 == 0) ? NAN : (float)(r % 9) / 16.0f;  // few values: many ties
        }
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int64_t b = (int64_t)(r % (uint64_t)n_pos), e = b + 1 + (int64_t)((r >> 20) % 5);
        int64_t top_n = 1 + (int64_t)((r >> 30) % 8), n_answer = 1 + (int64_t)((r >> 40) % 4);
        double got = 0;
        probe_r2_step(row, 1, n_pos, (probe_span){b, e}, top_n, n_answer, &got);
        double want = r2_reference(row, n_pos, (probe_span){b, e}, top_n, n_answer);
        CHECK_MSG(fabs(got - want) < 1e-12, "trial %d: %g, brute force %g", trial, got, want);
        free(row);
    }
}

// --------------------------------------------------------------------- F1

static void test_f1(void) {
    CHECK(probe_f1("eat a sandwich", "eat a sandwich") == 1.0);
    // "The" and "a" are articles, case and punctuation go: {eat, sandwich} both.
    CHECK(probe_f1("The EAT, a sandwich!", "eat sandwich") == 1.0);
    // {kofi, is, older} vs {kofi}: P = 1/3, R = 1, F1 = 2 (1/3) / (4/3) = 0.5 (does not count: > 0.5 needed)
    CHECK_CLOSE(probe_f1("Kofi is older.", "Kofi"), 0.5, 1e-12, 0);
    // {sit, in, park} vs {sit, in, dolores, park, on, sunny, day}: common 3, P = 1, R = 3/7,
    // F1 = 2 (3/7) / (10/7) = 0.6
    CHECK_CLOSE(probe_f1("Sit in the park.", "sit in Dolores Park on a sunny day"), 0.6, 1e-12, 0);
    // A bag, not a set: {park x3} vs {park}: common 1, P = 1/3, R = 1 -> 0.5
    CHECK_CLOSE(probe_f1("park park park", "park"), 0.5, 1e-12, 0);
    // {park, park} vs {park, park, day}: common 2, P = 1, R = 2/3 -> 0.8
    CHECK_CLOSE(probe_f1("park, park", "park park day"), 0.8, 1e-12, 0);
    CHECK(probe_f1("Paris", "London") == 0.0);
    CHECK(probe_f1("", "London") == 0.0);
    CHECK(probe_f1("London", "") == 0.0);
    CHECK(probe_f1("", "") == 1.0);
    CHECK(probe_f1("The...", " a ") == 1.0);  // both normalize to nothing
    CHECK(probe_f1("don't", "dont") == 1.0);  // punctuation is removed, not split on
    CHECK(probe_f1("  eat\n\ta\tsandwich  ", "eat sandwich") == 1.0);
    CHECK(probe_f1("An apple", "apple") == 1.0);
    CHECK(probe_f1("another", "other") == 0.0);  // "an" only as a whole word
}

// --------------------------------------------------------------- examples

static char *read_prose(size_t *len) {
    const char *path = RECALL_TEST_DATA "/prose/persuasion_ch1.txt";
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static const char *find_after(const char *s, const char *needle) {
    const char *p = strstr(s, needle);
    return p ? p + strlen(needle) : NULL;
}

static int count_occurrences(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

// The inserted sentence holding the answer span that starts at `at`:
// R: "The best thing to do in <city> is <activity>."; R2: "<X> is older
// than <Y>." (span on X) or "<Y> is younger than <X>." (span on X).
static void inserted_sentence(const char *p, int kind, size_t at, size_t *begin, size_t *end) {
    size_t b = at;
    if (kind == PROBE_R) {
        const char *s = strstr(p, "The best thing to do in ");
        b = s ? (size_t)(s - p) : at;
    } else if (at >= 17 && memcmp(p + at - 17, " is younger than ", 17) == 0) {
        b = at - 17;
        while (b > 0 && p[b - 1] >= 'A' && p[b - 1] <= 'z') b--;
    }
    const char *dot = strchr(p + at, '.');
    *begin = b;
    *end = dot ? (size_t)(dot - p) + 1 : at;
}

static void check_example_common(const probe_example *ex, int64_t n_bytes, const char *what) {
    const char *p = ex->prompt;
    CHECK_MSG(strncmp(p, "<book>\n", 7) == 0, "%s: prompt does not open the book", what);
    const char *close = strstr(p, "\n</book>\nBased on the content of the book, Question: ");
    CHECK_MSG(close != NULL, "%s: no question part", what);
    if (!close) return;
    size_t plen = strlen(p);
    CHECK_MSG(plen >= 8 && strcmp(p + plen - 8, "\nAnswer:") == 0, "%s: prompt does not end with the answer cue", what);
    CHECK_MSG(ex->needle_end > ex->needle_begin && ex->needle_end <= (size_t)(close - p), "%s: needle span %zu..%zu",
              what, ex->needle_begin, ex->needle_end);
    CHECK_MSG(strlen(ex->answer) == ex->needle_end - ex->needle_begin &&
                  memcmp(p + ex->needle_begin, ex->answer, strlen(ex->answer)) == 0,
              "%s: the needle span is not the answer \"%s\"", what, ex->answer);
    // The context without the inserted sentences fits n_bytes and is cut at a sentence end near it.
    (void)n_bytes;
}

static void test_examples(void) {
    size_t hay_len = 0;
    char *hay = read_prose(&hay_len);
    CHECK_MSG(hay != NULL, "cannot read %s", RECALL_TEST_DATA "/prose/persuasion_ch1.txt");
    if (!hay) return;
    rc_err err = {{0}};
    const double depths[] = {0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 1.0};
    const int64_t lengths[] = {3000, 8000, 40000};  // 40000: the 17 KB chapter repeated
    char what[128];
    int n_placed = 0, n_between_sentences = 0;

    for (int kind = 0; kind < 2; kind++)
        for (size_t li = 0; li < 3; li++)
            for (size_t di = 0; di < sizeof(depths) / sizeof(depths[0]); di++) {
                uint64_t seed = 1000 * kind + 10 * li + di;
                snprintf(what, sizeof(what), "kind %d, %lld bytes, depth %.2f", kind, (long long)lengths[li],
                         depths[di]);
                probe_example ex;
                int rc = probe_make_example(kind, hay, hay_len, lengths[li], depths[di], seed, &ex, &err);
                CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
                if (rc) continue;
                check_example_common(&ex, lengths[li], what);
                const char *p = ex.prompt;
                const char *close = strstr(p, "\n</book>\n");
                const char *question = find_after(p, "Question: ");
                size_t ctx0 = 7, ctx_len = (size_t)(close - p) - ctx0;

                // The inserted sentences, and the context length without them.
                size_t nb, ne, db = 0, de = 0;
                inserted_sentence(p, kind, ex.needle_begin, &nb, &ne);
                size_t inserted = (ne - nb) + 1;
                if (kind == PROBE_R2) {
                    inserted_sentence(p, kind, ex.distractor_begin, &db, &de);
                    inserted += (de - db) + 1;
                }
                size_t plain_len = ctx_len - inserted;
                CHECK_MSG(plain_len <= (size_t)lengths[li] && plain_len + 1000 >= (size_t)lengths[li],
                          "%s: context of %zu bytes", what, plain_len);
                char last = p[close - p - 1];
                CHECK_MSG(last == '.' || last == '!' || last == '?' || last == '"' || last == '\'',
                          "%s: context ends with '%c', not a sentence end", what, last);
                if (lengths[li] > (int64_t)hay_len) CHECK(strstr(p, "\n\n") != NULL);

                // The needle's depth within the prose (its offset less the distractor before it).
                size_t offset = nb - ctx0;
                if (kind == PROBE_R2 && db < nb) offset -= (de - db) + 1;
                double measured = (double)offset / (double)plain_len;
                CHECK_MSG(fabs(measured - depths[di]) <= 0.02, "%s: needle at depth %.4f", what, measured);
                // Between sentences when one is near enough (in these texts, most of the time).
                n_placed++;
                n_between_sentences += nb == ctx0 || (nb >= 2 && strchr(".!?\"'", p[nb - 2]) && p[nb - 1] == ' ');

                if (kind == PROBE_R) {
                    CHECK_MSG(strncmp(p + nb, "The best thing to do in ", 24) == 0, "%s: needle sentence \"%.60s\"",
                              what, p + nb);
                    CHECK(question && strncmp(question, "What is the best thing to do in ", 32) == 0);
                    CHECK(ex.distractor_begin == 0 && ex.distractor_end == 0);
                    CHECK_MSG(count_occurrences(p, ex.answer) == 1, "%s: the answer occurs more than once", what);
                } else {
                    // The needle says who is older; the answer is that person, and
                    // the question names the needle's two people.
                    char sentence[128] = {0}, a[32] = {0}, rel[16] = {0}, b[32] = {0};
                    memcpy(sentence, p + nb, ne - nb < 127 ? ne - nb : 127);
                    int parsed = sscanf(sentence, "%31s is %15s than %31[^.].", a, rel, b) == 3;
                    CHECK_MSG(parsed, "%s: needle \"%s\"", what, sentence);
                    const char *older = strcmp(rel, "older") == 0 ? a : b;
                    CHECK_MSG(strcmp(older, ex.answer) == 0, "%s: \"%s\" but the answer is %s", what, sentence,
                              ex.answer);
                    CHECK(question && strstr(question, a) && strstr(question, b) &&
                          strncmp(question, "Who is older, ", 14) == 0);
                    // The distractor: another pair, elsewhere, not in the question.
                    size_t dl = ex.distractor_end - ex.distractor_begin;
                    char dname[32] = {0};
                    memcpy(dname, p + ex.distractor_begin, dl < 31 ? dl : 31);
                    CHECK_MSG(dl > 0 && strcmp(dname, ex.answer) != 0 && strcmp(dname, a) != 0 &&
                                  strcmp(dname, b) != 0,
                              "%s: distractor name \"%s\"", what, dname);
                    CHECK(ex.distractor_end <= nb || ex.distractor_begin >= ne);
                    CHECK(question && !strstr(question, dname));
                    char dsentence[128] = {0}, da[32] = {0}, drel[16] = {0}, dbn[32] = {0};
                    memcpy(dsentence, p + db, de - db < 127 ? de - db : 127);
                    CHECK_MSG(sscanf(dsentence, "%31s is %15s than %31[^.].", da, drel, dbn) == 3 &&
                                  strcmp(strcmp(drel, "older") == 0 ? da : dbn, dname) == 0,
                              "%s: distractor sentence \"%s\", span \"%s\"", what, dsentence, dname);
                    // About half the text away from the needle.
                    double ddepth = (double)(db - ctx0) / (double)ctx_len;
                    double ndepth = (double)(nb - ctx0) / (double)ctx_len;
                    CHECK_MSG(fabs(fabs(ddepth - ndepth) - 0.5) < 0.05, "%s: needle at %.3f, distractor at %.3f", what,
                              ndepth, ddepth);
                    CHECK_MSG(count_occurrences(p, ex.answer) == 2, "%s: %s occurs %d times", what, ex.answer,
                              count_occurrences(p, ex.answer));  // needle and question
                }

                // Deterministic by seed.
                probe_example again;
                CHECK(probe_make_example(kind, hay, hay_len, lengths[li], depths[di], seed, &again, &err) == 0);
                CHECK_MSG(strcmp(again.prompt, ex.prompt) == 0 && strcmp(again.answer, ex.answer) == 0 &&
                              again.needle_begin == ex.needle_begin && again.distractor_begin == ex.distractor_begin,
                          "%s: not deterministic", what);
                probe_example_free(&again);
                probe_example_free(&ex);
                CHECK(ex.prompt == NULL && ex.answer == NULL);
            }

    CHECK_MSG(2 * n_between_sentences >= n_placed, "only %d of %d needles between sentences", n_between_sentences,
              n_placed);
    printf("%d of %d needles between sentences\n", n_between_sentences, n_placed);

    // Seeds vary the needle.
    for (int kind = 0; kind < 2; kind++) {
        char answers[20][128];
        int distinct = 0;
        for (int s = 0; s < 20; s++) {
            probe_example ex;
            CHECK(probe_make_example(kind, hay, hay_len, 4000, 0.5, (uint64_t)s * 7919, &ex, &err) == 0);
            snprintf(answers[s], sizeof(answers[s]), "%s | %s", ex.answer, find_after(ex.prompt, "Question: "));
            int seen = 0;
            for (int k = 0; k < s; k++) seen |= strcmp(answers[k], answers[s]) == 0;
            distinct += !seen;
            probe_example_free(&ex);
        }
        CHECK_MSG(distinct >= 10, "kind %d: only %d distinct needles in 20 seeds", kind, distinct);
    }

    // Short, unpunctuated and empty haystacks still give a well-formed prompt.
    probe_example ex;
    const char *tiny = "One. Two! Three?";
    CHECK(probe_make_example(PROBE_R, tiny, strlen(tiny), 60, 0.5, 1, &ex, &err) == 0);
    CHECK(strstr(ex.prompt, "Three?\n\nOne.") != NULL);
    CHECK(memcmp(ex.prompt + ex.needle_begin, ex.answer, strlen(ex.answer)) == 0);
    probe_example_free(&ex);
    const char *words = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
    CHECK(probe_make_example(PROBE_R2, words, strlen(words), 40, 0.5, 2, &ex, &err) == 0);
    CHECK(memcmp(ex.prompt + ex.needle_begin, ex.answer, strlen(ex.answer)) == 0);
    probe_example_free(&ex);
    CHECK(probe_make_example(PROBE_R2, NULL, 0, 0, 0.0, 3, &ex, &err) == 0);
    CHECK_MSG(strstr(ex.prompt, ". ") != NULL && memcmp(ex.prompt + ex.needle_begin, ex.answer, strlen(ex.answer)) == 0,
              "prompt \"%s\"", ex.prompt);  // the two sentences are separated
    probe_example_free(&ex);

    // Errors.
    CHECK(probe_make_example(2, hay, hay_len, 1000, 0.5, 1, &ex, &err) == -1 && strstr(err.msg, "kind"));
    CHECK(probe_make_example(PROBE_R, hay, hay_len, 1000, 1.5, 1, &ex, &err) == -1 && strstr(err.msg, "depth"));
    CHECK(probe_make_example(PROBE_R, hay, hay_len, 1000, NAN, 1, &ex, &err) == -1 && strstr(err.msg, "depth"));
    CHECK(probe_make_example(PROBE_R, hay, hay_len, -5, 0.5, 1, &ex, &err) == -1 && strstr(err.msg, "length"));
    CHECK(probe_make_example(PROBE_R, "", 0, 1000, 0.5, 1, &ex, &err) == -1 && strstr(err.msg, "empty"));
    CHECK(probe_make_example(PROBE_R, "a\0b", 3, 1000, 0.5, 1, &ex, &err) == -1 && strstr(err.msg, "NUL"));
    CHECK(ex.prompt == NULL);
    free(hay);
}

// ---------------------------------------------------------------- head_probe

static void test_capture(void) {
    rc_err err = {{0}};
    head_probe_capture c;
    CHECK(head_probe_capture_init(&c, 2, 3, 8, 1, &err) == 0);
    enum { N = 5 };
    const int64_t key_pos[N] = {3, 0, 4, 1, 2};  // a shard's order: rows land by position
    float scores[3 * N], lse[3];
    for (int h = 0; h < 3; h++) {
        double sum = 0.0;
        for (int j = 0; j < N; j++) scores[h * N + j] = (float)(0.3 * (h + 1) * (j - 2) + 0.1 * j * j);
        for (int j = 0; j < N; j++) sum += exp((double)scores[h * N + j]);
        lse[h] = (float)log(sum);
    }
    head_probe_on_attention(&c, 1, N, scores, key_pos, N, lse);
    CHECK(c.n_layers_seen == 1 && c.n_total == N);
    for (int h = 0; h < 3; h++)
        for (int j = 0; j < N; j++) {
            const double want = exp((double)scores[h * N + j] - (double)lse[h]);
            CHECK_CLOSE(c.attn[(1 * 3 + h) * N + key_pos[j]], want, 1e-7, 1e-5);
        }
    CHECK_MSG(c.worst_row_sum_error < 1e-5, "row sums off by %g", c.worst_row_sum_error);
    // An lse log 2 too small: every row sums to 2, and the capture says so.
    for (int h = 0; h < 3; h++) lse[h] -= (float)log(2.0);
    head_probe_on_attention(&c, 0, N, scores, key_pos, N, lse);
    CHECK_CLOSE(c.worst_row_sum_error, 1.0, 1e-4, 0);
    // A layer out of range, or keys that do not cover the sequence, are not captured.
    head_probe_on_attention(&c, 2, N, scores, key_pos, N, lse);
    head_probe_on_attention(&c, 0, N + 1, scores, key_pos, N, lse);
    CHECK(c.n_layers_seen == 2);
    head_probe_capture_free(&c);
}

// The bytes of tokens [b, e).
static void spell(const tokenizer *tok, const int32_t *ids, int64_t b, int64_t e, char *out, size_t cap) {
    size_t n = 0;
    for (int64_t i = b; i < e; i++) n += tokenizer_token_bytes(tok, ids[i], out + n, cap - n - 1);
    out[n] = '\0';
}

static void test_on_tiny_model(void) {
    size_t hay_len = 0;
    char *hay = read_prose(&hay_len);
    if (!hay) return;
    rc_err err = {{0}};
    char path[64];
    model m;
    CHECK_MSG(tiny_model_sharding(path, &m, &err) == 0, "%s", err.msg);  // 256 positions
    tokenizer *tok = NULL;
    CHECK_MSG(tokenizer_init(&tok, &m.file, &err) == 0, "%s", err.msg);
    const int64_t length = 200, max_new = 6;
    for (int kind = 0; kind < 2; kind++) {
        head_probe_setup ps = {.m = &m, .tok = tok, .kind = kind, .chat = 0, .hay = hay, .hay_len = hay_len};
        double bpt = 0;
        CHECK(head_probe_bytes_per_token(tok, hay, hay_len, length, &bpt, &err) == 0 && bpt > 1.0);
        head_probe_prompt pp;
        int rc = head_probe_sized_prompt(&ps, bpt, length, 0.5, 7 + kind, &pp, &err);
        CHECK_MSG(rc == 0, "kind %d: %s", kind, err.msg);
        if (rc) continue;
        // Length: at most the budget; the haystack is cut at sentence ends,
        // which on a ~1-byte-per-token vocabulary are tens of tokens apart.
        CHECK_MSG(pp.n_ids <= length && (double)pp.n_ids >= 0.8 * (double)length,
                  "kind %d: %lld tokens for a length of %lld", kind, (long long)pp.n_ids, (long long)length);
        // The needle span is the smallest run of tokens that spells the needle's answer text.
        char want[128], got[512];
        const size_t wl = pp.ex.needle_end - pp.ex.needle_begin;
        CHECK(wl > 0 && wl < sizeof(want));
        memcpy(want, pp.ex.prompt + pp.ex.needle_begin, wl);
        want[wl] = '\0';
        spell(tok, pp.ids, pp.needle.begin, pp.needle.end, got, sizeof(got));
        CHECK_MSG(strstr(got, want) != NULL, "kind %d: needle tokens spell '%s', not '%s'", kind, got, want);
        spell(tok, pp.ids, pp.needle.begin + 1, pp.needle.end, got, sizeof(got));
        CHECK_MSG(strstr(got, want) == NULL, "kind %d: the span's first token is not needed", kind);
        spell(tok, pp.ids, pp.needle.begin, pp.needle.end - 1, got, sizeof(got));
        CHECK_MSG(strstr(got, want) == NULL, "kind %d: the span's last token is not needed", kind);
        CHECK(pp.n_answer == pp.needle.end - pp.needle.begin);

        // One example: its answer is the greedy decode after prefilling all
        // but the last prompt token, which the test repeats on a plain engine.
        engine_opts eo = engine_default_opts();
        eo.n_ctx = length + max_new + 1;
        eo.backend = test_backend();
        eo.kv_elem = KV_F32;
        head_probe_capture cap;
        CHECK(head_probe_capture_init(&cap, m.cfg.n_layer, m.cfg.n_head, eo.n_ctx, 1, &err) == 0);
        eo.on_attention_scores = head_probe_on_attention;
        eo.hook_user = &cap;
        engine *e = engine_create(&m, &eo, &err);
        CHECK_MSG(e != NULL, "%s", err.msg);
        double *ex_score = malloc((size_t)(m.cfg.n_layer * m.cfg.n_head) * sizeof(double));
        head_probe_outcome res;
        rc = e ? head_probe_run_example(e, &cap, &ps, &pp, max_new, ex_score, NULL, NULL, &res, &err) : -1;
        CHECK_MSG(rc == 0, "kind %d: %s", kind, err.msg);
        if (rc == 0) {
            eo.on_attention_scores = NULL;
            eo.hook_user = NULL;
            engine *plain = engine_create(&m, &eo, &err);
            CHECK(plain && engine_prefill(plain, pp.ids, pp.n_ids - 1, NULL, NULL, NULL, &err) == 0);
            const int64_t steps = kind == PROBE_R2 && pp.n_expected < max_new ? pp.n_expected : max_new;
            char answer[256] = "";
            size_t n = 0;
            int64_t n_gen = 0;
            tokenizer_stream st = {0};
            int32_t cur = pp.ids[pp.n_ids - 1];
            for (int64_t t = 0; plain && t < steps; t++) {
                CHECK(engine_decode(plain, cur, &err) == 0);
                cur = argmax_logits(engine_logits(plain), m.cfg.n_vocab);
                if (tokenizer_is_eog(tok, cur)) break;
                n_gen++;
                const size_t len = tokenizer_decode_stream(tok, &st, cur, answer + n, sizeof(answer) - n - 1);
                n += len;
                answer[n] = '\0';
                if (memchr(answer + n - len, '\n', len) && strspn(answer, " \n\r\t") < n) break;
            }
            n += tokenizer_stream_flush(tok, &st, answer + n, sizeof(answer) - n - 1);
            answer[n] = '\0';
            CHECK_MSG(strcmp(res.answer, answer) == 0 && res.n_gen == n_gen,
                      "kind %d: answer '%s' (%lld tokens), the greedy decode '%s' (%lld)", kind, res.answer,
                      (long long)res.n_gen, answer, (long long)n_gen);
            CHECK(res.f1 == probe_f1(answer, pp.ex.answer) && res.counted == (res.f1 > PROBE_F1_MIN));
            // Every step adds at most 1 / n_answer per head (R) or the head's attention mass / n_answer (R2).
            for (int64_t i = 0; i < m.cfg.n_layer * m.cfg.n_head; i++)
                CHECK(ex_score[i] >= 0 && ex_score[i] <= (double)res.n_gen / (double)pp.n_answer + 1e-9);
            if (plain) engine_destroy(plain);
            free(res.answer);
        }
        free(ex_score);
        if (e) engine_destroy(e);
        head_probe_capture_free(&cap);
        head_probe_prompt_free(&pp);
    }
    tokenizer_free(tok);
    model_free(&m);
    unlink(path);
    free(hay);
}

int main(void) {
    test_backend_setup();
    test_capture();
    test_on_tiny_model();
    test_r_probe();
    test_r2_probe();
    test_f1();
    test_examples();
    TEST_MAIN_END();
}
