// The RULER word lists (src/eval/ruler_words.c): adjectives and nouns make
// the "words" keys and values; all three, deduplicated, are cwe's vocabulary.
#ifndef RECALL_EVAL_RULER_WORDS_H
#define RECALL_EVAL_RULER_WORDS_H

#include <stddef.h>

extern const char *const ruler_adjectives[];
extern const char *const ruler_nouns[];
extern const char *const ruler_verbs[];
extern const size_t ruler_n_adjectives, ruler_n_nouns, ruler_n_verbs;

#endif
