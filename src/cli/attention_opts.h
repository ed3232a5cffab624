// The attention flags shared by `generate`, `bench` and `eval`: --attention,
// the --recycle-* settings of recycled attention and the KV budget of the
// compression policies. Keys of a config file are the same long flags.
#ifndef RECALL_CLI_ATTENTION_OPTS_H
#define RECALL_CLI_ATTENTION_OPTS_H

#include <getopt.h>
#include <stdio.h>

#include "engine/engine.h"

enum {
    CLI_OPT_ATTENTION = 512, CLI_OPT_RECYCLE_K, CLI_OPT_RECYCLE_STRIDE, CLI_OPT_RECYCLE_SCHEDULE,
    CLI_OPT_RECYCLE_CHECK_EVERY, CLI_OPT_RECYCLE_SIMILARITY, CLI_OPT_RECYCLE_AGG, CLI_OPT_RECYCLE_POOL,
    CLI_OPT_RECYCLE_BUDGETS, CLI_OPT_KV_BUDGET, CLI_OPT_BUDGET_PER_QUERY_HEAD, CLI_OPT_KV_WINDOW, CLI_OPT_KV_SINKS,
    CLI_OPT_KV_POOL, CLI_OPT_HEADKV_BETA, CLI_OPT_PYRAMID_BETA, CLI_OPT_ADA_FLOOR, CLI_OPT_HEAD_SCORES,
    CLI_OPT_RECYCLE_QUERY, CLI_OPT_RECYCLE_QUERY_WINDOW, CLI_OPT_RECYCLE_QUERY_AGG, CLI_OPT_RECYCLE_SPAN
};

#define CLI_ATTENTION_OPTIONS                                                                              \
    {"attention", required_argument, 0, CLI_OPT_ATTENTION},                                                \
    {"recycle-k", required_argument, 0, CLI_OPT_RECYCLE_K},                                                \
    {"recycle-stride", required_argument, 0, CLI_OPT_RECYCLE_STRIDE},                                      \
    {"recycle-schedule", required_argument, 0, CLI_OPT_RECYCLE_SCHEDULE},                                  \
    {"recycle-check-every", required_argument, 0, CLI_OPT_RECYCLE_CHECK_EVERY},                            \
    {"recycle-similarity", required_argument, 0, CLI_OPT_RECYCLE_SIMILARITY},                              \
    {"recycle-agg", required_argument, 0, CLI_OPT_RECYCLE_AGG},                                            \
    {"recycle-pool", required_argument, 0, CLI_OPT_RECYCLE_POOL},                                          \
    {"recycle-budgets", required_argument, 0, CLI_OPT_RECYCLE_BUDGETS},                                    \
    {"recycle-query", required_argument, 0, CLI_OPT_RECYCLE_QUERY},                                        \
    {"recycle-query-window", required_argument, 0, CLI_OPT_RECYCLE_QUERY_WINDOW},                          \
    {"recycle-query-agg", required_argument, 0, CLI_OPT_RECYCLE_QUERY_AGG},                                \
    {"recycle-span", required_argument, 0, CLI_OPT_RECYCLE_SPAN},                                          \
    {"kv-budget", required_argument, 0, CLI_OPT_KV_BUDGET},                                                \
    {"budget-per-query-head", no_argument, 0, CLI_OPT_BUDGET_PER_QUERY_HEAD},                              \
    {"kv-window", required_argument, 0, CLI_OPT_KV_WINDOW},                                                \
    {"kv-sinks", required_argument, 0, CLI_OPT_KV_SINKS},                                                  \
    {"kv-pool", required_argument, 0, CLI_OPT_KV_POOL},                                                    \
    {"headkv-beta", required_argument, 0, CLI_OPT_HEADKV_BETA},                                            \
    {"pyramid-beta", required_argument, 0, CLI_OPT_PYRAMID_BETA},                                          \
    {"ada-floor", required_argument, 0, CLI_OPT_ADA_FLOOR},                                                \
    {"head-scores", required_argument, 0, CLI_OPT_HEAD_SCORES}

// Applies option c (a CLI_OPT_* value) to eo; returns 0 when c is not one of
// them. Dies with one clear line on a bad value.
int cli_attention_option(int c, const char *arg, engine_opts *eo);

// After parsing, once the model and the context size are known: an unset
// --recycle-k falls to the context size when the default exceeds it; the
// --head-scores file is loaded (and checked against the model) when a method
// needs it; dies on settings that cannot work together (--recycle-k above the
// context, recycle flags without --attention recycled, policy flags without
// a policy).
void cli_attention_check(engine_opts *eo, int64_t n_ctx, const model_config *c);

// Head scores shipped with recall: DIR/index.json (policy/head_index.h), DIR
// being $RECALL_HEADS_DIR or else the source tree's configs/heads, maps a
// model file's content fingerprint (model/fingerprint.h) to a scores file.
const char *cli_heads_dir(void);
const char *cli_model_fingerprint(const model *m);  // 16 hex digits, computed once
// The shipped scores file of this model, or NULL (dies on a malformed index).
const char *cli_shipped_head_scores(const model *m);
// 1 when --recycle-budgets was given on the command line or in a config.
int cli_recycle_budgets_given(void);
// 1 when --recycle-span was given on the command line or in a config.
int cli_recycle_span_given(void);

// The span that HeadKV budgets bring when none is given: on the eight RULER
// niah tasks HeadKV budgets alone held 0.94 of full attention at 4K, with
// span 2 0.95 (0.98 at 8K); wider selections answer as well but cost
// perplexity (span 8: +3.4% after 8K tokens, span 2: +0.96%; README, "The
// default"). Uniform budgets, the paper's method, keep span 0. Never at or
// above the context size.
#define CLI_RECYCLE_HEADKV_SPAN 2
int64_t cli_recycle_default_span(const recycle_opts *r, int64_t n_ctx);

// Before cli_attention_check, once the model is loaded: --attention recycled
// without --recycle-budgets uses HeadKV budgets when scores are shipped for
// this model file (cli_attention_describe then says so), else uniform budgets
// (cli_attention_budgets_note gives the line that says how to get scores).
// headkv and --recycle-budgets headkv without --head-scores use the shipped
// scores when there are some.
void cli_attention_defaults(engine_opts *eo, const model *m);
// The note for a recycled run that fell back to uniform budgets because no
// scores are shipped for the model (into buf), or NULL.
const char *cli_attention_budgets_note(char *buf, size_t cap);

// The head scores for headkv and --recycle-budgets headkv: loaded from the
// --head-scores path (dies on a bad file). NULL when no path was given.
const head_scores *cli_head_scores(const model_config *c);

// "--attention full | recycled | K=1024 stride 10 ..." for headers.
void cli_attention_describe(const engine_opts *eo, char *buf, size_t cap);

void cli_attention_usage(FILE *out);

#endif
