// --attention LIST for the commands that compare methods (bench, eval): a
// comma-separated list of "method[:key=value...]" entries, each a method with
// its own settings on top of the --recycle-* / --kv-* flags.
#ifndef RECALL_CLI_METHOD_LIST_H
#define RECALL_CLI_METHOD_LIST_H

#include "engine/engine.h"
#include "model/model.h"

#define METHOD_LIST_MAX 16

typedef struct method_spec {
    char name[64];       // the entry as written, e.g. "recycled:stride=50"
    int attention;       // enum attention_kind
    recycle_opts ro;     // the flags' values with the entry's settings applied
    kvpolicy_opts po;
    int k_explicit;      // K (recycled) or the KV budget (policies) was given; else the caller derives it
    int budgets_explicit;  // recycled: --recycle-budgets or budgets= was given
    int budgets_shipped;   // recycled: HeadKV budgets by default, from the scores shipped for the model
    int span_explicit;     // recycled: --recycle-span or span= was given; else cli_recycle_default_span
} method_spec;

// Keys: recycled k, stride, schedule, qc, s, agg, pool, budgets, query, qwin,
// qagg, span (--recycle-query, -query-window, -query-agg, -span); policies
// budget, window, sinks, kvpool, beta, pbeta, floor. Each value goes through
// the --recycle-* / --kv-* option parser, so its errors name the flag.
// k_explicit / budget_explicit: --recycle-k / --kv-budget was given (then
// every recycled / policy entry counts as explicit). Dies with one line on an
// unknown method or setting, a duplicate entry, or more than max_n entries.
// Returns the number of entries.
int method_list_parse(const char *list, const engine_opts *base, int k_explicit, int budget_explicit,
                      method_spec *out, int max_n);

// Attaches the --head-scores file to the entries that need it (headkv,
// recycled with budgets=headkv), or the scores shipped for the model file
// when none was given (attention_opts.h); dies if one needs scores and there
// are none. A recycled entry without budgets= or --recycle-budgets uses HeadKV
// budgets when scores are shipped for the model (budgets_shipped), as
// `generate` does. Returns the number of such entries.
int method_list_head_scores(method_spec *ms, int n, const model *m);
// One line on stderr for the recycled entries whose budgets were chosen by
// default: HeadKV from the shipped scores, or uniform because none are
// shipped (pointing to `recall profile-heads`). Nothing when there are none.
void method_list_budgets_note(const method_spec *ms, int n, const model *m);

#endif
