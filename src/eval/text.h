// Where sentences end in prose: the one rule the RULER haystacks and the
// HeadKV probes place needles by.
#ifndef RECALL_EVAL_TEXT_H
#define RECALL_EVAL_TEXT_H

#include <stddef.h>

enum text_bound { TEXT_BOUND_WORD = 0, TEXT_BOUND_CLAUSE = 1, TEXT_BOUND_SENTENCE = 2 };

int text_is_space(char c);  // ASCII whitespace
// The boundary after the word w[0, n) (no whitespace inside): a sentence ends
// at . ! ? (closing quotes and brackets, ASCII or UTF-8 ’ ”, may follow)
// unless the word is a title or an initial ("Mr.", "Capt.", "J."); a clause
// at , ; :; else a word.
int text_boundary_after(const char *w, size_t n);
// Does a sentence end just before byte i of t (the word that ends there,
// back to the previous whitespace)?
int text_sentence_ends_before(const char *t, size_t i);

#endif
