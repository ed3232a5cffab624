// HeadKV's head-importance probes run on a model (design.md §4): the
// algorithm of `recall profile-heads`, which keeps only option parsing and
// output. For one (length, depth, seed): a needle-in-a-haystack prompt
// (eval/probe.h) sized to the length in the model's tokens, prefilled with
// full attention, its answer decoded greedily; at every answer step each
// (layer, query head)'s attention over the sequence comes from the engine's
// on_attention_scores hook (head_probe_capture) and is scored by
// probe_r_step / probe_r2_step. An example counts when F1 > PROBE_F1_MIN.
//
// Which attention belongs to which answer step follows the reference code
// (Wu et al.'s retrieval_head_detection.py, HeadKV's _r2 variant): the prompt
// minus its last token is prefilled, then the last prompt token is decoded;
// the attention of the step that processes token t_i is the one that chose
// t_{i+1}, so it is scored with t_{i+1} as the generated token. Rows cover
// every cached position (prompt and the answer so far), as in the reference;
// the needle spans lie in the prompt.
#ifndef RECALL_EVAL_HEAD_PROBE_H
#define RECALL_EVAL_HEAD_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "engine/engine.h"
#include "eval/probe.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define HEAD_PROBE_ROW_SUM_TOLERANCE 1e-3  // attention rows from the engine's scores must sum to 1

// The attention of the last decode step, layer by layer: p_hj = exp(s_hj -
// lse_h) (lse: natural log), written at each key's position.
typedef struct head_probe_capture {
    int64_t n_layer, n_head;
    int n_threads;
    float *attn;            // (n_layer * n_head, n_total) of the last step, row stride n_total
    int64_t cap;            // positions a row can hold
    int64_t n_total;        // positions of the last step
    int64_t n_layers_seen;  // hook calls since the last reset
    double worst_row_sum_error;
} head_probe_capture;

// Allocates attn for cap positions; returns -1 with a message when out of memory.
int head_probe_capture_init(head_probe_capture *c, int64_t n_layer, int64_t n_head, int64_t cap, int n_threads,
                            rc_err *err);
void head_probe_capture_free(head_probe_capture *c);
// The engine's on_attention_scores hook (user: the capture); scores: (n_head, n_keys), key_pos: (n_keys).
void head_probe_on_attention(void *user, int64_t layer, int64_t n_total, const float *scores, const int64_t *key_pos,
                             int64_t n_keys, const float *lse);

// What every prompt is built from.
typedef struct head_probe_setup {
    const model *m;
    const tokenizer *tok;
    int kind;       // enum probe_kind
    int chat;       // apply the model's chat template
    const char *hay;
    size_t hay_len;
} head_probe_setup;

typedef struct head_probe_prompt {
    probe_example ex;
    int32_t *ids;          // (n_ids) the templated prompt's tokens
    int64_t n_ids;
    probe_span needle;     // R: the activity; R2: the correct name (token positions)
    int64_t n_answer;      // N: the needle span's token count
    int64_t n_expected;    // tokens of the expected answer written alone (HeadKV's answer length)
} head_probe_prompt;

void head_probe_prompt_free(head_probe_prompt *p);

// The example with n_hay_bytes of haystack, templated and tokenized, with the needle's token span.
int head_probe_make_prompt(const head_probe_setup *ps, int64_t n_hay_bytes, double depth, uint64_t seed,
                           head_probe_prompt *out, rc_err *err);

// Haystack bytes per token, measured once on the haystack's opening (the
// part every prompt uses); max_len: the longest prompt wanted, in tokens.
int head_probe_bytes_per_token(const tokenizer *tok, const char *hay, size_t hay_len, int64_t max_len,
                               double *out, rc_err *err);

// The prompt for (length, depth, seed): at most `length` tokens and at
// least HEAD_PROBE_SIZE_MIN_FRACTION of it where the haystack allows.
#define HEAD_PROBE_SIZE_MIN_FRACTION 0.97
#define HEAD_PROBE_MIN_HAYSTACK_TOKENS 32  // a length must leave room for at least this much haystack
int head_probe_sized_prompt(const head_probe_setup *ps, double bytes_per_token, int64_t length, double depth,
                            uint64_t seed, head_probe_prompt *out, rc_err *err);

// One example's outcome.
typedef struct head_probe_outcome {
    char *answer;      // the decoded answer (malloc'd; free it)
    int64_t n_gen;     // answer tokens scored
    double f1;         // probe_f1(answer, expected)
    int counted;       // f1 > PROBE_F1_MIN
} head_probe_outcome;

// Runs one example on e (full attention, built with head_probe_on_attention
// on cap as its hook): prefill, greedy answer of at most max_new tokens (R2:
// the expected answer's length), each step scored into ex_score:
// (n_layer * n_head), zeroed first. on_prefill / user: the prefill's progress
// callback (may be NULL).
int head_probe_run_example(engine *e, head_probe_capture *cap, const head_probe_setup *ps,
                           const head_probe_prompt *pp, int64_t max_new, double *ex_score,
                           engine_progress_fn on_prefill, void *user, head_probe_outcome *out,
                           rc_err *err);

#endif
