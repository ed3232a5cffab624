#include "cli/attention_opts.h"

#include <string.h>

#include "cli/cli.h"

// Recycle flags given explicitly, so they can be refused with full attention.
static int g_recycle_flags_seen, g_recycle_k_seen;

int cli_attention_option(int c, const char *arg, engine_opts *eo) {
    recycle_opts *r = &eo->recycle;
    switch (c) {
    case CLI_OPT_ATTENTION:
        if (!strcmp(arg, "full")) eo->attention = ATTENTION_FULL;
        else if (!strcmp(arg, "recycled")) eo->attention = ATTENTION_RECYCLED;
        else cli_die("--attention: unknown method '%s' (expected full or recycled)", arg);
        return 1;
    case CLI_OPT_RECYCLE_K:
        r->k = cli_parse_int("--recycle-k", arg, 1, INT32_MAX);
        g_recycle_k_seen = 1;
        break;
    case CLI_OPT_RECYCLE_STRIDE: r->stride = cli_parse_int("--recycle-stride", arg, 1, INT32_MAX); break;
    case CLI_OPT_RECYCLE_SCHEDULE:
        if (!strcmp(arg, "stride")) r->schedule = RECYCLE_STRIDE;
        else if (!strcmp(arg, "dynamic")) r->schedule = RECYCLE_DYNAMIC;
        else cli_die("--recycle-schedule: unknown schedule '%s' (expected stride or dynamic)", arg);
        break;
    case CLI_OPT_RECYCLE_CHECK_EVERY:
        r->check_every = cli_parse_int("--recycle-check-every", arg, 1, INT32_MAX);
        break;
    case CLI_OPT_RECYCLE_SIMILARITY: r->similarity = cli_parse_double("--recycle-similarity", arg, -1.0, 1.0); break;
    case CLI_OPT_RECYCLE_AGG:
        if (!strcmp(arg, "max")) r->group_agg = GROUP_AGG_MAX;
        else if (!strcmp(arg, "mean")) r->group_agg = GROUP_AGG_MEAN;
        else if (!strcmp(arg, "first")) r->group_agg = GROUP_AGG_FIRST;
        else cli_die("--recycle-agg: unknown aggregation '%s' (expected max, mean or first)", arg);
        break;
    case CLI_OPT_RECYCLE_POOL:
        r->pool_kernel = cli_parse_int("--recycle-pool", arg, 1, 1023);
        if (r->pool_kernel % 2 == 0) cli_die("--recycle-pool: the kernel must be odd (got %lld)", (long long)r->pool_kernel);
        break;
    default: return 0;
    }
    g_recycle_flags_seen = 1;
    return 1;
}

void cli_attention_check(engine_opts *eo, int64_t n_ctx) {
    if (eo->attention != ATTENTION_RECYCLED) {
        if (g_recycle_flags_seen) cli_die("--recycle-* settings need --attention recycled");
        return;
    }
    if (!g_recycle_k_seen && eo->recycle.k > n_ctx) eo->recycle.k = n_ctx;  // a short context keeps everything
    rc_err err = {{0}};
    if (recycle_opts_validate(&eo->recycle, n_ctx, &err)) cli_die_err(&err);
}

void cli_attention_describe(const engine_opts *eo, char *buf, size_t cap) {
    const recycle_opts *r = &eo->recycle;
    if (eo->attention != ATTENTION_RECYCLED) {
        snprintf(buf, cap, "full attention");
    } else if (r->schedule == RECYCLE_STRIDE) {
        snprintf(buf, cap, "recycled attention (K %lld, stride %lld, GQA %s, pool %lld)", (long long)r->k,
                 (long long)r->stride, group_agg_name(r->group_agg), (long long)r->pool_kernel);
    } else {
        snprintf(buf, cap, "recycled attention (K %lld, dynamic: every %lld steps, full at cosine <= %g, GQA %s, pool %lld)",
                 (long long)r->k, (long long)r->check_every, r->similarity, group_agg_name(r->group_agg),
                 (long long)r->pool_kernel);
    }
}

void cli_attention_usage(FILE *out) {
    const recycle_opts d = recycle_default_opts();
    fprintf(out,
            "      --attention full|recycled\n"
            "                          attention method (default full). recycled: most steps attend only\n"
            "                          to a top-K cache that every rank holds a copy of (no communication);\n"
            "                          full steps attend to everything and rebuild that cache\n"
            "      --recycle-k K       recycled-cache entries per layer and KV head (default %lld, or the\n"
            "                          context size when smaller; a K given here must not exceed it)\n"
            "      --recycle-schedule stride|dynamic\n"
            "                          when a layer runs full attention (default stride)\n"
            "      --recycle-stride S  stride: every layer full every S steps (default %lld; 1 = always)\n"
            "      --recycle-check-every QC\n"
            "                          dynamic: compare queries every QC steps (default %lld)\n"
            "      --recycle-similarity s\n"
            "                          dynamic: a layer whose mean query (before RoPE) has cosine <= s with\n"
            "                          the one of its last full step runs full (default %g; in [-1, 1];\n"
            "                          1 = every check is full)\n"
            "      --recycle-agg max|mean|first\n"
            "                          combine the query heads of a KV group (default max)\n"
            "      --recycle-pool W    max-pool scores over W neighbouring positions (odd; default %lld;\n"
            "                          1 = off)\n",
            (long long)d.k, (long long)d.stride, (long long)d.check_every, d.similarity, (long long)d.pool_kernel);
}
