// Internal to the RULER generator (ruler_tasks.c builds samples, ruler.c
// fits their length): the generator state and each task's two parts.
//   fixed   from (task, seed, index): keys, values, needles, the question,
//           the answer prefix, the in-context examples (vt, cwe), the word
//           choice (cwe) and code vocabulary (fwe), the essay start;
//   sized   from the fixed part and a size n (words, sentences, list entries,
//           ...): the haystack with the needles placed at their depths.
#ifndef RECALL_EVAL_RULER_GEN_H
#define RECALL_EVAL_RULER_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/strbuf.h"
#include "eval/ruler.h"

#define VT_NUM_HOPS 4                // chain of 5 variables

#define MAX_NEEDLES 4

typedef struct rng {
    uint64_t s;
} rng;

enum { STREAM_FIXED = 1, STREAM_SIZED = 2, STREAM_DEPTH = 3, STREAM_ICL = 4 };

typedef enum task_kind { KIND_NIAH, KIND_VT, KIND_CWE, KIND_FWE } task_kind;
typedef enum hay_kind { HAY_NONE, HAY_NOISE, HAY_ESSAY, HAY_NEEDLE } hay_kind;
typedef enum value_kind { VAL_WORDS, VAL_NUMBERS, VAL_UUIDS } value_kind;

typedef struct task_spec {
    const char *name;
    task_kind kind;
    hay_kind hay;
    value_kind key_type, value_type;
    int num_k, num_v, num_q;
    int max_new_tokens;
} task_spec;

typedef struct hay {
    const char **p;      // (n) unit text, not NUL-terminated
    size_t *len;         // (n)
    size_t *pool_off;    // (n) offset into pool, or SIZE_MAX when p[u] points elsewhere
    unsigned char *cls;  // (n + 1)
    int64_t *prefix;     // (n + 1) bytes before unit u in the joined haystack: sum_{i<u} len_i + sep_len
    int64_t n, cap;
    strbuf pool;
    const char *sep;
    int oom;
} hay;

typedef struct essay {
    const char *text;
    size_t len, cursor;
    size_t *off;          // (n)
    uint32_t *wlen;       // (n)
    int64_t n, cap;
} essay;

typedef struct gen {
    const ruler_gen_opts *o;
    const task_spec *t;
    uint64_t base;  // seeds every stream
    double depth;   // requested depth of needle 0 (after choosing one for depth < 0)
    // Fixed part. User text = head + context + tail; prompt = chat_pre + user + chat_post + answer_prefix.
    char *head, *tail, *answer_prefix, *chat_pre, *chat_post;
    char *answers[16];  // niah: at most MAX_NEEDLES; vt 5; cwe 10; fwe 3
    int n_answers;
    char *needles[MAX_NEEDLES];  // niah, needle 0 first
    int n_needles;
    char *keys[MAX_NEEDLES];  // niah: real keys (distractors must differ)
    int n_keys;
    char *chain[VT_NUM_HOPS + 1];     // vt statements, in chain order
    const char **words;  // cwe: vocabulary, permuted
    int n_words, cwe_freq_common, cwe_freq_uncommon, cwe_n_example, cwe_max_uncommon;
    char **codes;  // fwe: vocabulary by rank, codes[0] = "..."
    int n_codes;
    essay es;
    int64_t n_min, n_max;  // range of the size variable
    // Scratch for the sized part.
    hay h;
    strbuf ctx, line;
    int32_t *order;  // cwe / fwe shuffles
    size_t order_cap;
} gen;

char *ruler_strdup(const char *s);
uint64_t ruler_rng_below(rng *r, uint64_t n);  // uniform in [0, n), n > 0
rng ruler_rng_stream(uint64_t base, uint64_t stream, uint64_t a, uint64_t b);
const task_spec *ruler_find_task(const char *name);  // NULL when unknown
void ruler_gen_free(gen *g);
int ruler_oom(rc_err *err);  // "ruler: out of memory"

// The fixed part of each task (sets g->n_min, and g->n_max when the task
// bounds its size), then the sized part: the context for size n into ctx
// (niah also gives each needle's byte offset in it). variant: another draw
// of the sized randomness. The context functions return -1 on out of memory.
int niah_fixed(gen *g, rc_err *err);
int niah_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx, size_t *needle_off);
int vt_fixed(gen *g, rc_err *err);
int vt_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx);
int cwe_fixed(gen *g, rc_err *err);
int cwe_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx);
int fwe_fixed(gen *g, rc_err *err);
int fwe_context(gen *g, int64_t n, uint64_t variant, strbuf *ctx);

#endif
