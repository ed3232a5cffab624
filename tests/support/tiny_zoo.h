// The named tiny models behind tests/test_engine.c and its numpy golden
// logits (tests/golden/make_tiny_golden.py): one table of tiny_model_params,
// shared by the generator (tests/make_tiny_models.c) and the test, which
// regenerates a model when its .gguf is not on disk. Every .logits file
// records the size and FNV-1a hash of the .gguf it was computed from, so a
// change to this table or to the writer (tiny_model.c) shows up as a hash
// mismatch until the goldens are regenerated.
#ifndef RECALL_TESTS_TINY_ZOO_H
#define RECALL_TESTS_TINY_ZOO_H

#include "tiny_model.h"

int tiny_zoo_count(void);
const char *tiny_zoo_name(int i);                 // file name without ".gguf"
void tiny_zoo_params(int i, tiny_model_params *p);  // tiny_model_default + the entry's settings

#endif
