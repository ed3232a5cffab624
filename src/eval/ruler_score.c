// Scoring a RULER answer (RULER's string_match_all).
#include "eval/ruler.h"

#include <string.h>

static int lower_ascii(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

static int contains_nocase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    if (n == 0) return 1;  // Python: '' in s
    for (const char *h = hay; *h; h++) {
        size_t i = 0;
        while (i < n && h[i] && lower_ascii((unsigned char)h[i]) == lower_ascii((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return 0;
}

// RULER string_match_all: sum(r.lower() in pred.lower() for r in refs) / len(refs).
// A plain substring test, so "1234567" is found inside "12345678".
double ruler_score(const ruler_sample *s, const char *output) {
    if (!s || !output || s->n_answers <= 0 || !s->answers) return 0.0;
    int hits = 0;
    for (int i = 0; i < s->n_answers; i++) hits += s->answers[i] && contains_nocase(output, s->answers[i]);
    return (double)hits / (double)s->n_answers;
}

