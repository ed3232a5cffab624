// RULER-style synthetic long-context tasks (NVIDIA RULER, scripts/synthetic.yaml
// and scripts/data/synthetic/*.py), generated in C so that a sample is a pure
// function of (task, target_tokens, seed, index, depth, tokenizer) and its
// prompt hits a token budget measured with the model's own tokenizer.
//
// Tasks and their RULER configuration:
//   niah_single_1     noise haystack, word key, 7-digit number value
//   niah_single_2     essay haystack, word key, number value
//   niah_single_3     essay haystack, word key, uuid value
//   niah_multikey_1   essay, 4 needles with different keys, one queried
//   niah_multikey_2   haystack made of needles (word keys, number values), one real needle
//   niah_multikey_3   haystack of needles with uuid keys and uuid values
//   niah_multivalue   essay, 4 values for one key (all expected)
//   niah_multiquery   essay, 4 keys queried (all their values expected)
//   vt                variable tracking: noise haystack, 1 chain of 4 hops (5 variables)
//   cwe               common words extraction: 10 common words in a numbered list
//   fwe               frequent words extraction: Zipf(alpha 2) over random 6-letter codes
//
// Prompt = (chat template, when opts.chat is set, around) the task template
// filled with the context, followed by RULER's answer prefix. Word keys are
// adjective-noun pairs from a list in src/eval/ruler_words.c (in the manner of
// RULER's wonderwords lists). The essay haystack is the Jane Austen prose that
// launch/setup.sh extracts (RULER uses Paul Graham's essays), with every run
// of whitespace collapsed to one space, as RULER does.
//
// Where this differs from RULER (all documented in ruler_tasks.c and ruler.c):
//   * Needle depth is chosen, not sampled: needle 0 sits at `depth`, needle j
//     of k at frac(depth + j / k), so several needles spread evenly over the
//     whole haystack. A depth < 0 picks one of RULER's 40 depths from the seed.
//   * The length is fitted to target_tokens +-2% (RULER stops below a maximum).
//   * Line haystacks (noise, needles, vt) may begin with the tail of one line,
//     so the length can be set to a sentence or word rather than a whole line.
#ifndef RECALL_EVAL_RULER_H
#define RECALL_EVAL_RULER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

// Length tolerance of ruler_generate: |n_tokens - target_tokens| <= this * target_tokens.
#define RULER_LENGTH_TOLERANCE 0.02

typedef struct ruler_sample {
    char task[32];
    char *prompt;          // the full text fed to the model: chat template applied (when the model has one) + RULER's answer prefix
    char **answers;        // expected values (RULER string_match_all: each must appear in the output)
    int n_answers;
    int64_t n_tokens;      // token count of `prompt` as the tokenizer encodes it (with BOS if the model adds one)
    double depth;          // needle depth actually used, 0..1 (first needle for multi-needle tasks; -1 where N/A)
    int max_new_tokens;    // RULER's generation budget for the task (niah 128, vt 30, cwe 120, fwe 50)
    // How n_tokens was counted: tokenizer_encode(tok, prompt, len, add_bos, parse_special):
    // add_bos = tokenizer_add_bos(tok); parse_special = 1 exactly when the chat template was applied.
    int add_bos;
    int parse_special;
    // The task's context (haystack with needles, word list, coded text) is
    // prompt[context_begin, context_end). Depth = (byte offset of needle 0's
    // first byte - context_begin) / (context_end - context_begin).
    int64_t context_begin, context_end;
    // niah only (else NULL / 0): the needle sentences, needle 0 first (the one
    // at `depth`); each occurs exactly once in the prompt.
    char **needles;
    int n_needles;
} ruler_sample;

typedef struct ruler_gen_opts {
    const char *task;          // see ruler_task_names()
    int64_t target_tokens;     // total prompt length wanted, tokens
    uint64_t seed;             // the sample is a pure function of (task, target_tokens, seed, index, depth, tokenizer)
    int64_t index;             // sample number
    double depth;              // 0..1, or < 0: chosen from the seed
    const tokenizer *tok;      // src/tokenizer/tokenizer.h
    const gguf_file *chat;     // non-NULL: apply the model's chat template (src/tokenizer/chat.h chat_format), NULL: plain text
    const char *prose;         // essay haystack text (Austen), may be NULL for tasks that don't need it
    size_t prose_len;
} ruler_gen_opts;

// The task names, in the order listed above; *n (if non-NULL) receives the count.
const char *const *ruler_task_names(int *n);
int ruler_task_known(const char *name);
// 1 if the task needs opts.prose (the essay haystack).
int ruler_task_needs_prose(const char *name);

// Fills *out (zeroed first; free with ruler_sample_free). Keys, values and
// the choice of words depend on (task, seed, index) only, so the same sample
// at another length or depth asks the same question (fwe: its vocabulary
// size follows the target, as in RULER). 0 ok, -1 with err set:
// unknown task, missing prose, a target too small for the task's fixed parts
// or too large for its material (cwe runs out of distinct words), or an
// allocation failure.
int ruler_generate(const ruler_gen_opts *o, ruler_sample *out, rc_err *err);
void ruler_sample_free(ruler_sample *s);  // NULL-safe; leaves *s zeroed

// RULER's scoring (string_match_all): fraction of expected answers that
// appear, as case-insensitive (ASCII) substrings, in the output, 0..1. An
// answer that is a prefix of a longer number in the output counts, as in
// RULER. 0 for a NULL output or a sample without answers.
double ruler_score(const ruler_sample *s, const char *output);

// Loads the prose haystack file (e.g. ~/.cache/recall/prose/austen.txt) into
// a malloc'd NUL-terminated buffer; one clear error if it is missing or empty.
int ruler_load_prose(const char *path, char **text, size_t *len, rc_err *err);

#endif
