// The attention flags shared by `generate` and `bench`: --attention and the
// --recycle-* settings of recycled attention. Keys of a config file are the
// same long flags.
#ifndef RECALL_CLI_ATTENTION_OPTS_H
#define RECALL_CLI_ATTENTION_OPTS_H

#include <getopt.h>
#include <stdio.h>

#include "engine/engine.h"

enum {
    CLI_OPT_ATTENTION = 512, CLI_OPT_RECYCLE_K, CLI_OPT_RECYCLE_STRIDE, CLI_OPT_RECYCLE_SCHEDULE,
    CLI_OPT_RECYCLE_CHECK_EVERY, CLI_OPT_RECYCLE_SIMILARITY, CLI_OPT_RECYCLE_AGG, CLI_OPT_RECYCLE_POOL
};

#define CLI_ATTENTION_OPTIONS                                                                              \
    {"attention", required_argument, 0, CLI_OPT_ATTENTION},                                                \
    {"recycle-k", required_argument, 0, CLI_OPT_RECYCLE_K},                                                \
    {"recycle-stride", required_argument, 0, CLI_OPT_RECYCLE_STRIDE},                                      \
    {"recycle-schedule", required_argument, 0, CLI_OPT_RECYCLE_SCHEDULE},                                  \
    {"recycle-check-every", required_argument, 0, CLI_OPT_RECYCLE_CHECK_EVERY},                            \
    {"recycle-similarity", required_argument, 0, CLI_OPT_RECYCLE_SIMILARITY},                              \
    {"recycle-agg", required_argument, 0, CLI_OPT_RECYCLE_AGG},                                            \
    {"recycle-pool", required_argument, 0, CLI_OPT_RECYCLE_POOL}

// Applies option c (a CLI_OPT_* value) to eo; returns 0 when c is not one of
// them. Dies with one clear line on a bad value.
int cli_attention_option(int c, const char *arg, engine_opts *eo);

// After parsing, once the context size is known: an unset --recycle-k falls
// to the context size when the default exceeds it; dies on settings that
// cannot work together (--recycle-k above the context, recycle flags without
// --attention recycled).
void cli_attention_check(engine_opts *eo, int64_t n_ctx);

// "--attention full | recycled | K=1024 stride 10 ..." for headers.
void cli_attention_describe(const engine_opts *eo, char *buf, size_t cap);

void cli_attention_usage(FILE *out);

#endif
