#include "eval/score.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "eval/ruler.h"

int score_metric_parse(const char *name, score_metric *out) {
    if (!strcmp(name, "contains")) *out = SCORE_CONTAINS;
    else if (!strcmp(name, "exact")) *out = SCORE_EXACT;
    else if (!strcmp(name, "f1")) *out = SCORE_F1;
    else return -1;
    return 0;
}

int score_combine_parse(const char *name, score_combine *out) {
    if (!strcmp(name, "any")) *out = SCORE_ANY;
    else if (!strcmp(name, "all")) *out = SCORE_ALL;
    else return -1;
    return 0;
}

const char *score_metric_name(score_metric m) {
    return m == SCORE_EXACT ? "exact" : m == SCORE_F1 ? "f1" : "contains";
}

const char *score_combine_name(score_combine c) { return c == SCORE_ALL ? "all" : "any"; }

// SQuAD's normalize_answer, split into words: lower case, punctuation
// (ASCII, Python's string.punctuation) dropped, articles dropped. The words
// are written NUL-separated into buf (strlen(s) + 1 bytes); returns their count.
static int normalized_words(const char *s, char *buf, char ***words) {
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (ispunct(c)) continue;  // C locale: exactly the ASCII punctuation
        buf[n++] = isspace(c) ? ' ' : (char)tolower(c);
    }
    buf[n] = '\0';
    int cap = 8, count = 0;
    char **w = malloc((size_t)cap * sizeof(char *)), *save = NULL;
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (!strcmp(tok, "a") || !strcmp(tok, "an") || !strcmp(tok, "the")) continue;
        if (count == cap) w = realloc(w, (size_t)(cap *= 2) * sizeof(char *));
        w[count++] = tok;
    }
    *words = w;
    return count;
}

static double exact_or_f1(score_metric m, const char *output, const char *answer) {
    char *bo = malloc(strlen(output) + 1), *ba = malloc(strlen(answer) + 1), **wo, **wa;
    const int no = normalized_words(output, bo, &wo), na = normalized_words(answer, ba, &wa);
    double score;
    if (m == SCORE_EXACT || no == 0 || na == 0) {  // F1 with an empty side: 1 only when both are empty (SQuAD)
        int same = no == na;
        for (int i = 0; same && i < no; i++) same = !strcmp(wo[i], wa[i]);
        score = same ? 1.0 : 0.0;
    } else {
        // Common words counted as multisets: each answer word matches one output word at most.
        char *used = calloc((size_t)no, 1);
        int common = 0;
        for (int j = 0; j < na; j++)
            for (int i = 0; i < no; i++)
                if (!used[i] && !strcmp(wo[i], wa[j])) {
                    used[i] = 1;
                    common++;
                    break;
                }
        free(used);
        const double p = (double)common / no, r = (double)common / na;
        score = common ? 2.0 * p * r / (p + r) : 0.0;
    }
    free(wo);
    free(wa);
    free(bo);
    free(ba);
    return score;
}

double score_answer(score_metric m, const char *output, const char *answer) {
    if (!output || !answer) return 0.0;
    if (m == SCORE_CONTAINS) {
        char *one[1] = {(char *)answer};  // ruler_score only reads it
        const ruler_sample s = {.answers = one, .n_answers = 1};
        return ruler_score(&s, output);
    }
    return exact_or_f1(m, output, answer);
}

double score_output(score_metric m, score_combine c, const char *output, const char *const *answers, int n_answers) {
    if (n_answers < 1) return 0.0;
    double best = 0.0, sum = 0.0;
    for (int i = 0; i < n_answers; i++) {
        const double s = score_answer(m, output, answers[i]);
        best = s > best ? s : best;
        sum += s;
    }
    return c == SCORE_ALL ? sum / n_answers : best;
}
