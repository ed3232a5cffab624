// The user's own evaluation data for `recall eval custom`: JSON Lines, one
// sample per line, read and validated completely before any work starts.
//
// A line is a JSON object with
//   "prompt": string                  the whole prompt, or
//   "context": string, "question": string (LongBench's name "input" is taken
//                                     for "question"), joined by a template
//   "answers": string | [string, ...] expected answers (at least one, none empty)
//   "id": string | integer            optional (LongBench's "_id" also); unique
//   "max_new_tokens": integer >= 1    optional answer budget
//   "chat": true | false              optional: wrap the prompt in the model's chat template
// Other keys are ignored (LongBench's "length", "dataset", ...). Blank lines
// are skipped; a file without samples is an error. Every error is one line,
// "NAME:LINE: what is wrong".
#ifndef RECALL_EVAL_CUSTOM_DATA_H
#define RECALL_EVAL_CUSTOM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

// Longest line accepted by default: a prompt of a few million tokens.
#define CUSTOM_MAX_LINE_BYTES ((size_t)64 << 20)
#define CUSTOM_MAX_NEW_TOKENS ((int64_t)1 << 20)
#define CUSTOM_DEFAULT_TEMPLATE "{context}\n\n{question}"

typedef struct custom_sample {
    char *id;               // "id" / "_id" as text; NULL when absent
    int64_t line;           // 1-based line number in the file
    char *prompt;           // NULL when the sample gives context and question
    char *context, *question;
    char **answers;
    int n_answers;
    int64_t max_new_tokens; // 0: not given
    int chat;               // -1: not given, else 0 / 1
} custom_sample;

typedef struct custom_data {
    custom_sample *samples;
    int64_t n;
} custom_data;

// Parses buf[0, len) (need not be NUL-terminated) into *out (zeroed first;
// free with custom_data_free, also after a failure). name is the file name
// used in messages. Lines longer than max_line_bytes are refused. 0 or -1
// with err set.
int custom_data_parse(const char *buf, size_t len, const char *name, size_t max_line_bytes, custom_data *out,
                      rc_err *err);
// The same for a file (or pipe), read in chunks: a huge line is refused after
// max_line_bytes are read, without holding the rest.
int custom_data_load(const char *path, size_t max_line_bytes, custom_data *out, rc_err *err);
void custom_data_free(custom_data *d);  // NULL-safe; leaves *d zeroed

// -1 with err set unless the template holds both {context} and {question}.
int custom_template_check(const char *tmpl, rc_err *err);
// The sample's prompt text (before any chat template): "prompt", or the
// template with each {context} and {question} replaced. malloc'd.
char *custom_sample_text(const custom_sample *s, const char *tmpl);

#endif
