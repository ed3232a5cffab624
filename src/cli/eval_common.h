// What `recall eval ruler` and `recall eval ppl` share: their common flags,
// the runs (method x KV budget) each context length expands to, progress on
// rank 0, the cross-rank logits check, and small output helpers.
#ifndef RECALL_CLI_EVAL_COMMON_H
#define RECALL_CLI_EVAL_COMMON_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>

#include "cli/attention_opts.h"
#include "cli/method_list.h"
#include "comm/comm.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

#define EVAL_MAX_CTX 16
#define EVAL_MAX_BUDGETS 16
#define EVAL_MAX_RUNS (METHOD_LIST_MAX * EVAL_MAX_BUDGETS)
#define EVAL_DEFAULT_BUDGET_RATIO 0.125

// KV budgets of the compressing methods: absolute row counts (--kv-budget
// LIST) or fractions of each context length (--budget-ratio LIST).
typedef struct eval_budgets {
    int n;
    int absolute;
    double value[EVAL_MAX_BUDGETS];
} eval_budgets;

// The flags both subcommands take (parsed by eval_common_option).
typedef struct eval_common_opts {
    const char *model_path;
    const char *out_prefix;     // --out; NULL until eval_claim_out when it was not given
    int out_auto;               // no --out: eval_claim_out makes the run's own directory
    const char *out_name;       // file stem inside that directory, e.g. "ruler"
    char out_slug[64];          // its name's start, e.g. "eval-ruler"
    char out_buf[4096];
    const char *methods_arg;    // --attention LIST
    int64_t ctx[EVAL_MAX_CTX];
    int n_ctx;                  // 0: the command's default
    eval_budgets budgets;
    int ratio_given, abs_given;
    int n_threads, kv_elem, zigzag, progress;
    int64_t prefill_block;
    int recycle_k_given;
    engine_opts base;           // --recycle-* / --kv-* settings every method starts from
    // An analysis hook for eval_engine_create (needle tracing), or NULL.
    void (*on_attention_scores)(void *user, int64_t layer, int64_t n_total, const float *scores,
                                const int64_t *key_pos, int64_t n_keys, const float *lse);
    void *hook_user;
} eval_common_opts;

enum {
    EVAL_OPT_CTX = 256, EVAL_OPT_BUDGET_RATIO, EVAL_OPT_THREADS, EVAL_OPT_KV_TYPE, EVAL_OPT_PREFILL_BLOCK,
    EVAL_OPT_ZIGZAG, EVAL_OPT_PROGRESS, EVAL_OPT_OUT, EVAL_OPT_CONFIG,
    EVAL_OPT_FIRST_COMMAND = 300  // the subcommands' own flags start here
};

#define EVAL_COMMON_OPTIONS                                                       \
    {"model", required_argument, 0, 'm'},                                         \
    {"ctx", required_argument, 0, EVAL_OPT_CTX},                                  \
    {"budget-ratio", required_argument, 0, EVAL_OPT_BUDGET_RATIO},                \
    {"threads", required_argument, 0, EVAL_OPT_THREADS},                          \
    {"kv-type", required_argument, 0, EVAL_OPT_KV_TYPE},                          \
    {"prefill-block", required_argument, 0, EVAL_OPT_PREFILL_BLOCK},              \
    {"zigzag", no_argument, 0, EVAL_OPT_ZIGZAG},                                  \
    {"progress", no_argument, 0, EVAL_OPT_PROGRESS},                              \
    {"out", required_argument, 0, EVAL_OPT_OUT},                                  \
    {"config", required_argument, 0, EVAL_OPT_CONFIG},                            \
    CLI_ATTENTION_OPTIONS

void eval_common_init(eval_common_opts *o);
// Applies flag c; returns 0 when c is not a common flag. Dies on a bad value.
int eval_common_option(int c, const char *arg, eval_common_opts *o);
// After parsing: defaults, and the checks that need no model (one line each).
// command: "recall eval ruler"; default_name: the output files' stem when no
// --out is given ("ruler": runs/eval-ruler-DATE-TIME/ruler.csv, ...).
void eval_common_finish(eval_common_opts *o, const char *command, int64_t default_ctx, const char *default_name);
void eval_common_usage(FILE *out, const char *default_ctx, const char *slug, const char *default_name);
// Rank 0, once every input is validated and before the first output is
// opened: without --out, creates the run's own directory (cli/run_dir.h) and
// sets out_prefix inside it. A no-op with --out or when called again.
void eval_claim_out(eval_common_opts *o);
// Dies unless every context length fits the model's trained context.
void eval_check_ctx(const eval_common_opts *o, const model_config *c);
int64_t eval_max_ctx(const eval_common_opts *o);

// One decode configuration: a method with its KV budget at one context length.
typedef struct eval_run {
    const method_spec *spec;
    int attention;          // enum attention_kind
    recycle_opts ro;
    kvpolicy_opts po;
    int64_t budget;         // rows kept per head: recycled K or the policy budget; the context length for full
    const char *label;      // spec->name, e.g. "recycled:stride=50"
} eval_run;

// The runs of one context length, in --attention order: full and methods
// whose K / budget was given explicitly once, every other method once per
// budget. Checks each against the engine's context size and the model (dies
// with one line naming the context length and the budget). Returns the count.
int eval_runs_for_ctx(const method_spec *ms, int n_methods, const eval_budgets *b, int64_t ctx, int64_t engine_n_ctx,
                      const model_config *c, eval_run *out);
int eval_set_run(engine *e, const eval_run *r, rc_err *err);  // engine_set_attention with the run's settings

// Greedy choice: the highest logit, the lowest id on ties.
int32_t eval_argmax(const float *logits, int64_t n);
// Decodes greedily from `first` (chosen from the prefill's logits) until end
// of generation or max_new tokens; the tokens go to out (max_new). Folds every
// step's logits into *hash. Returns the token count.
int64_t eval_decode_greedy(engine *e, const tokenizer *tok, int32_t first, int64_t max_new, int32_t *out,
                           uint64_t *hash);
// The same, calling on_step(user, t, token) once token t is chosen from step
// t's logits (t = 0: the prefill's), before the end-of-generation check.
int64_t eval_decode_greedy_steps(engine *e, const tokenizer *tok, int32_t first, int64_t max_new, int32_t *out,
                                 uint64_t *hash, void (*on_step)(void *user, int64_t step, int32_t token), void *user);
char *eval_detokenize(const tokenizer *tok, const int32_t *ids, int64_t n);  // malloc'd text

// Every rank passes its fingerprint of the logits it computed and two values;
// dies (naming `what`) if any rank's fingerprint differs from rank 0's; returns
// the largest value of each over the ranks.
void eval_gather_run(comm *cm, uint64_t hash, double a, double b, double *a_max, double *b_max, const char *what);

// Progress on rank 0: a bar redrawn in place on stderr (a TTY, or --progress),
// else one line per finished item. Work units weight the ETA.
typedef struct eval_progress {
    int enabled, bar;
    double t0, last_draw;
    int64_t n_total, n_done;
    double work_total, work_done;
    char status[160];
} eval_progress;
void eval_progress_init(eval_progress *p, int rank0, int force_bar, int64_t n_total, double work_total);
// n runs and `work` units finished; status names what runs now (bar only).
void eval_progress_step(eval_progress *p, int64_t n, double work, const char *status);
void eval_progress_status(eval_progress *p, const char *status);  // redraws the bar (rate-limited)
void eval_progress_line(eval_progress *p, const char *text);      // one finished item (line mode)
void eval_progress_end(eval_progress *p);
void eval_format_seconds(double s, char *buf, size_t cap);        // "12s", "3m05s", "1h02m"

// PREFIX + ext, creating PREFIX's directory when missing; dies on failure.
FILE *eval_open_output(const char *prefix, const char *ext, const char *mode, char *path, size_t cap);
// The engine every eval command runs: n_ctx positions, the common flags'
// threads, KV type, prefill block and ownership, the prompt's full cache
// retained so that every method decodes from the same prefill. Dies on error.
engine *eval_engine_create(const eval_common_opts *c, const model *m, comm *cm, int64_t n_ctx);
// The end of an eval run on rank 0: the reproduce line on stdout, the CSV
// closed (csv_path names it in errors), and PREFIX.json written from root
// with `results` attached (root is freed).
void eval_finish_outputs(const char *prefix, FILE *csv, const char *csv_path, cJSON *root, cJSON *results,
                         const char *command, int n_ranks);
const char *eval_basename(const char *path);
// Reads the results file of an earlier run line by line: fn gets each
// complete line parsed (NULL when it is not JSON) and its number. A last line
// without its newline (a run killed while writing) is cut off the file, with
// a note. A missing file is no error. Returns the number of lines read.
struct cJSON;
int64_t eval_jsonl_each(const char *path, void (*fn)(const struct cJSON *o, int64_t lineno, void *user), void *user);

// Results keyed by a string (open addressing, FNV-1a).
typedef struct eval_result {
    double score;           // ruler: 0..1
    double kv_bytes;        // K/V bytes held at the end, largest rank
    double seconds;         // decode time
    int64_t new_tokens;
} eval_result;
typedef struct eval_index {
    char **keys;
    eval_result *vals;
    size_t cap, n;
} eval_index;
void eval_index_init(eval_index *ix);
void eval_index_free(eval_index *ix);
eval_result *eval_index_get(const eval_index *ix, const char *key);
void eval_index_put(eval_index *ix, const char *key, const eval_result *val);  // replaces an equal key

// The subcommands (argv[0] is "ruler" / "ppl" / "custom").
int eval_ruler_main(int argc, char **argv);
int eval_ppl_main(int argc, char **argv);
int eval_custom_main(int argc, char **argv);

#endif
