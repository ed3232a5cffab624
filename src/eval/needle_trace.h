// Needle tracing: for a prompt whose answer positions are known, what each
// layer and KV head holds of them at every decode step and how full attention
// weighs them (`generate --trace-needle`, `eval ruler --trace-needle`).
//
// JSON lines, rank 0 writes (every other rank sends what rank 0 needs; those
// exchanges are left out of the communication counters, so a traced run
// reports the traffic of an untraced one):
//
//   {"event":"needle_run","run":R,"method":M,"attention":A,"describe":D,
//    "answers":[text...],"positions":[pos...],"answer_of":[i...],"tokens":[id...],
//    "prompt_tokens":N,"n_layer":L,"kv_heads":KV,"group":G,"cache_heads":CH,
//    "cache_rows":[[rows per cache head] per layer] | null, ...caller's fields}
//   {"event":"needle_step","run":R,"step":t,"pos":P,"token":id,"layer":l,"full":0|1,
//    "held":[[0|1 per answer position] per cache head] | null,
//    "rank_step":s | -1,"rank":[[rank per answer position] per KV head] | null,
//    "mass":[[[p per query head of the group] per answer position] per KV head] | null}
//   {"event":"needle_end","run":R,"steps":n,"tokens":m,"output":text,"answer_step":t | -1,"answer_bytes":b}
//
// Steps: token t of the output is chosen from step t's logits. Step 0 is the
// prefill (full attention at the last prompt position); step t >= 1 is the
// decode step that appended token t-1 at position `pos`. One needle_step line
// per (step, layer).
//   full   the layer attended to every position at this step.
//   held   per cache head (KV heads; query heads under --budget-per-query-head),
//          whether each answer position is in what the method keeps after
//          the step: recycled: the recycled cache (for a recycled layer,
//          exactly what the step attended); a KV-compression policy: its
//          kept set (all ranks); full: everything. null where nothing is
//          kept yet (a policy before it compresses, a recycled cache not yet built).
//   rank   0-based rank of each answer position among the scores a recycled
//          rebuild ranks, from this layer's last full-attention scores (step
//          rank_step): exact probabilities exp(s - lse), combined over the KV
//          group (--recycle-agg), max-pooled (--recycle-pool), ordered by
//          (score desc, position asc); a position with rank < the head's rows
//          was selected. Under full attention: what a rebuild would rank
//          (recycled settings of the run). null for policies.
//   mass   exp(s - lse) of each answer position for each query head of the
//          KV group, when the layer ran full attention this step with its
//          scores seen (null otherwise).
// needle_end: the steps recorded, the output's tokens (end of generation
// not counted), the decoded output, the step whose token starts the answer
// in it (needle_answer_step; -1: none) and how many of its bytes matched.
#ifndef RECALL_EVAL_NEEDLE_TRACE_H
#define RECALL_EVAL_NEEDLE_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "comm/comm.h"
#include "core/status.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NEEDLE_TRACE_MAX_POSITIONS 256

typedef struct needle_trace needle_trace;

// out: the stream rank 0 writes (may be NULL on other ranks; not closed here).
needle_trace *needle_trace_create(FILE *out, comm *cm, const model_config *c, rc_err *err);
void needle_trace_free(needle_trace *t);  // NULL is fine
void needle_trace_set_output(needle_trace *t, FILE *out);  // rank 0's stream, when opened after create
// Sets the engine hook (on_attention_scores) and its user pointer; before engine_create.
void needle_trace_install(needle_trace *t, engine_opts *eo);
// The hook itself, for callers that chain their own (user = the trace).
void needle_trace_on_scores(void *user, int64_t layer, int64_t n_total, const float *scores, const int64_t *key_pos,
                            int64_t n_keys, const float *lse);

// The answer positions: prompt tokens whose bytes overlap an occurrence of
// one of `answers` in the detokenized prompt (token pieces concatenated).
// regions (n_regions > 0): search each answer only inside the first
// occurrence of each region text (RULER's needles, each placed once);
// else everywhere. At most NEEDLE_TRACE_MAX_POSITIONS positions (the first
// ones; *truncated set). Returns the count (0: none found). Same on every rank.
int64_t needle_trace_locate(needle_trace *t, const tokenizer *tok, const int32_t *ids, int64_t n_ids,
                            const char *const *answers, int n_answers, const char *const *regions, int n_regions,
                            int *truncated);
// Sets the positions directly (ascending or not; answer_of may be NULL: all answer 0).
int needle_trace_set_positions(needle_trace *t, const int64_t *pos, const int *answer_of, int64_t n, rc_err *err);

// The positions in use and their answer indices (each at most
// NEEDLE_TRACE_MAX_POSITIONS entries); returns the count.
int64_t needle_trace_positions(const needle_trace *t, int64_t *pos, int64_t *answer_of);

// Starts a run on the engine's current method (after engine_set_attention;
// before the prefill when it should see the prefill's scores): writes the
// needle_run line. n_prompt: the prompt's tokens. label: the method
// as the user named it; extra_json: NULL or the text of a JSON object whose
// members are added (e.g. {"ctx":4096,"task":"niah_single_1","sample":0}).
// run_agg/run_pool: the reduction `rank` uses (the run's recycled settings).
void needle_trace_begin(needle_trace *t, const engine *e, int64_t n_prompt, const char *label, const char *describe,
                        const char *extra_json, int group_agg, int64_t pool_kernel);
// After step t's logits (t = 0: the prefill) and the token chosen from them.
// Collective on several ranks (every rank calls it).
void needle_trace_step(needle_trace *t, const engine *e, int64_t step, int32_t token);
// The run's output tokens (token i chosen at step i): writes needle_end.
void needle_trace_end(needle_trace *t, const tokenizer *tok, const int32_t *tokens, int64_t n_tokens);

// The step whose token starts the answer in the decoded tokens: the earliest
// occurrence of the longest prefix of any answer that occurs, if that prefix
// is at least half the answer (the whole answer when it occurs; "8353" of
// "8353752" too: a model that starts the right value and loses it), else -1.
// *matched: the prefix's bytes (0 with -1).
int64_t needle_answer_step(const tokenizer *tok, const int32_t *tokens, int64_t n_tokens, const char *const *answers,
                           int n_answers, int64_t *matched);

#ifdef __cplusplus
}
#endif

#endif
