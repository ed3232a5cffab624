#include "eval/text.h"

#include <string.h>

#include "core/array.h"

int text_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// UTF-8 ‘ ’ “ ” (e2 80 98/99/9c/9d) at p[0..2].
static int curly_quote(const char *p, int closing) {
    const unsigned char *u = (const unsigned char *)p;
    return u[0] == 0xe2 && u[1] == 0x80 && (closing ? (u[2] == 0x99 || u[2] == 0x9d) : (u[2] == 0x98 || u[2] == 0x9c));
}

static int is_abbreviation(const char *w, size_t n) {
    static const char *const ABBREV[] = {"Mr", "Mrs", "Ms", "Dr", "St", "Messrs", "Col", "Capt", "Gen", "Rev", "Esq", "Lt"};
    for (;;) {  // opening quotes and brackets
        if (n && (*w == '"' || *w == '\'' || *w == '(' || *w == '_')) w++, n--;
        else if (n >= 3 && curly_quote(w, 0)) w += 3, n -= 3;
        else break;
    }
    if (n == 1 && w[0] >= 'A' && w[0] <= 'Z') return 1;
    for (size_t i = 0; i < ARRAY_LEN(ABBREV); i++)
        if (strlen(ABBREV[i]) == n && memcmp(ABBREV[i], w, n) == 0) return 1;
    return 0;
}

int text_boundary_after(const char *w, size_t n) {
    for (;;) {  // closing quotes and brackets
        if (n && (w[n - 1] == '"' || w[n - 1] == '\'' || w[n - 1] == ')' || w[n - 1] == ']' || w[n - 1] == '_')) n--;
        else if (n >= 3 && curly_quote(w + n - 3, 1)) n -= 3;
        else break;
    }
    if (!n) return TEXT_BOUND_WORD;
    const char c = w[n - 1];
    if (c == '!' || c == '?') return TEXT_BOUND_SENTENCE;
    if (c == '.') return is_abbreviation(w, n - 1) ? TEXT_BOUND_WORD : TEXT_BOUND_SENTENCE;
    if (c == ',' || c == ';' || c == ':') return TEXT_BOUND_CLAUSE;
    return TEXT_BOUND_WORD;
}

int text_sentence_ends_before(const char *t, size_t i) {
    size_t w0 = i;
    while (w0 > 0 && !text_is_space(t[w0 - 1])) w0--;
    return text_boundary_after(t + w0, i - w0) == TEXT_BOUND_SENTENCE;
}
