#include "cli/attention_opts.h"

#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/fingerprint.h"
#include "policy/head_index.h"

#ifndef RECALL_HEADS_DIR_DEFAULT
#define RECALL_HEADS_DIR_DEFAULT "configs/heads"
#endif

// Flags given explicitly, so they can be refused where they do nothing.
static int g_recycle_flags_seen, g_recycle_k_seen, g_policy_flags_seen, g_recycle_budgets_seen, g_recycle_span_seen;
static const char *g_head_scores_path;
static head_scores g_head_scores;
static int g_head_scores_loaded;
// The shipped scores of the model file (cli_shipped_head_scores), and how
// the recycled budgets were chosen when --recycle-budgets was not given.
static int g_shipped_looked, g_shipped_found;
static char g_shipped_path[4096], g_fingerprint[17];
enum { BUDGETS_GIVEN = 0, BUDGETS_SHIPPED, BUDGETS_NONE_SHIPPED };
static int g_budgets_how;

#define METHOD_LIST "full, recycled, streaming, h2o, snapkv, pyramidkv, adakv or headkv"

static int policy_option(int c, const char *arg, engine_opts *eo) {
    kvpolicy_opts *p = &eo->policy;
    switch (c) {
    case CLI_OPT_KV_BUDGET: p->budget = cli_parse_int("--kv-budget", arg, 1, INT32_MAX); break;
    case CLI_OPT_BUDGET_PER_QUERY_HEAD: p->per_query_head = 1; break;
    case CLI_OPT_KV_WINDOW: p->window = cli_parse_int("--kv-window", arg, 1, KVPOLICY_WINDOW_MAX); break;
    case CLI_OPT_KV_SINKS: p->sinks = cli_parse_int("--kv-sinks", arg, 0, INT32_MAX); break;
    case CLI_OPT_KV_POOL:
        p->pool_kernel = cli_parse_int("--kv-pool", arg, 1, 1023);
        if (p->pool_kernel % 2 == 0) cli_die("--kv-pool: the kernel must be odd (got %lld)", (long long)p->pool_kernel);
        break;
    case CLI_OPT_HEADKV_BETA:
        p->headkv_beta = eo->recycle.headkv_beta = cli_parse_double("--headkv-beta", arg, 1.0, 1e9);
        if (p->headkv_beta <= 1.0) cli_die("--headkv-beta must be greater than 1 (got %s)", arg);
        return 1;  // also used by --recycle-budgets headkv
    case CLI_OPT_PYRAMID_BETA: p->pyramid_beta = cli_parse_double("--pyramid-beta", arg, 1.0, 1e9); break;
    case CLI_OPT_ADA_FLOOR: p->ada_floor = cli_parse_double("--ada-floor", arg, 0.0, 1.0); break;
    case CLI_OPT_HEAD_SCORES: g_head_scores_path = arg; return 1;  // headkv or --recycle-budgets headkv
    default: return 0;
    }
    g_policy_flags_seen = 1;
    return 1;
}

int cli_attention_option(int c, const char *arg, engine_opts *eo) {
    recycle_opts *r = &eo->recycle;
    if (policy_option(c, arg, eo)) return 1;
    switch (c) {
    case CLI_OPT_ATTENTION:
        eo->attention = attention_kind_from_name(arg);
        if (eo->attention < 0) cli_die("--attention: unknown method '%s' (expected " METHOD_LIST ")", arg);
        return 1;
    case CLI_OPT_RECYCLE_BUDGETS:
        if (!strcmp(arg, "uniform")) r->budgets = RECYCLE_BUDGETS_UNIFORM;
        else if (!strcmp(arg, "headkv")) r->budgets = RECYCLE_BUDGETS_HEADKV;
        else cli_die("--recycle-budgets: unknown allocation '%s' (expected uniform or headkv)", arg);
        g_recycle_budgets_seen = 1;
        break;
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
    case CLI_OPT_RECYCLE_QUERY:
        if (!strcmp(arg, "last")) r->query = RECYCLE_QUERY_LAST;
        else if (!strcmp(arg, "window")) r->query = RECYCLE_QUERY_WINDOW;
        else cli_die("--recycle-query: unknown query '%s' (expected last or window)", arg);
        break;
    case CLI_OPT_RECYCLE_QUERY_WINDOW:
        r->query_window = cli_parse_int("--recycle-query-window", arg, 1, RECYCLE_QUERY_WINDOW_MAX);
        break;
    case CLI_OPT_RECYCLE_QUERY_AGG:
        if (!strcmp(arg, "mean")) r->query_agg = RECYCLE_QUERY_MEAN;
        else if (!strcmp(arg, "max")) r->query_agg = RECYCLE_QUERY_MAX;
        else cli_die("--recycle-query-agg: unknown combine '%s' (expected mean or max)", arg);
        break;
    case CLI_OPT_RECYCLE_SPAN:
        r->span = cli_parse_int("--recycle-span", arg, 0, INT32_MAX);
        g_recycle_span_seen = 1;
        break;
    default: return 0;
    }
    g_recycle_flags_seen = 1;
    return 1;
}

const head_scores *cli_head_scores(const model_config *c) {
    if (!g_head_scores_path) return NULL;
    if (!g_head_scores_loaded) {
        rc_err err = {{0}};
        if (head_scores_load(g_head_scores_path, c->n_layer, c->n_head, &g_head_scores, &err)) cli_die_err(&err);
        g_head_scores_loaded = 1;
    }
    return &g_head_scores;
}

int cli_recycle_budgets_given(void) { return g_recycle_budgets_seen; }
int cli_recycle_span_given(void) { return g_recycle_span_seen; }

int64_t cli_recycle_default_span(const recycle_opts *r, int64_t n_ctx) {
    if (r->budgets != RECYCLE_BUDGETS_HEADKV) return 0;
    return n_ctx > CLI_RECYCLE_HEADKV_SPAN ? CLI_RECYCLE_HEADKV_SPAN : (n_ctx > 1 ? n_ctx - 1 : 0);
}

const char *cli_heads_dir(void) {
    const char *env = getenv("RECALL_HEADS_DIR");
    return env && *env ? env : RECALL_HEADS_DIR_DEFAULT;
}

const char *cli_model_fingerprint(const model *m) {
    if (!g_fingerprint[0]) model_fingerprint_hex(&m->file, g_fingerprint);
    return g_fingerprint;
}

const char *cli_shipped_head_scores(const model *m) {
    if (!g_shipped_looked) {
        rc_err err = {{0}};
        const int rc = head_index_find(cli_heads_dir(), cli_model_fingerprint(m), g_shipped_path,
                                       sizeof(g_shipped_path), &err);
        if (rc < 0) cli_die_err(&err);
        g_shipped_found = rc == 1;
        g_shipped_looked = 1;
    }
    return g_shipped_found ? g_shipped_path : NULL;
}

void cli_attention_defaults(engine_opts *eo, const model *m) {
    const int recycled = eo->attention == ATTENTION_RECYCLED;
    if (recycled && !g_recycle_budgets_seen) {
        // The paper's uniform K loses needles that HeadKV budgets keep (README,
        // "Recycled attention"): with scores shipped for this very file, they
        // are the default; --recycle-budgets uniform asks for the paper's.
        if (!g_head_scores_path && cli_shipped_head_scores(m)) {
            eo->recycle.budgets = RECYCLE_BUDGETS_HEADKV;
            g_head_scores_path = g_shipped_path;
            g_budgets_how = BUDGETS_SHIPPED;
        } else if (!g_head_scores_path) {
            g_budgets_how = BUDGETS_NONE_SHIPPED;
        }
        return;
    }
    const int wants_scores = eo->attention == ATTENTION_HEADKV ||
                             (recycled && eo->recycle.budgets == RECYCLE_BUDGETS_HEADKV);
    if (wants_scores && !g_head_scores_path && cli_shipped_head_scores(m)) g_head_scores_path = g_shipped_path;
}

const char *cli_attention_budgets_note(char *buf, size_t cap) {
    if (g_budgets_how != BUDGETS_NONE_SHIPPED) return NULL;
    snprintf(buf, cap,
             "uniform recycled budgets: no head scores are shipped for this model (fingerprint %s, index %s/%s); "
             "'recall profile-heads' measures them, then --recycle-budgets headkv --head-scores FILE uses them",
             g_fingerprint, cli_heads_dir(), HEAD_INDEX_FILE);
    return buf;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

void cli_attention_check(engine_opts *eo, int64_t n_ctx, const model_config *c) {
    rc_err err = {{0}};
    const int wants_scores = eo->attention == ATTENTION_HEADKV ||
                             (eo->attention == ATTENTION_RECYCLED && eo->recycle.budgets == RECYCLE_BUDGETS_HEADKV);
    if (g_head_scores_path && !wants_scores)
        cli_die("--head-scores is used by --attention headkv and --recycle-budgets headkv only");
    if (wants_scores) {
        if (!g_head_scores_path)
            cli_die("%s needs head-importance scores: --head-scores FILE (e.g. configs/heads/*.json, made by "
                    "'recall profile-heads')", eo->attention == ATTENTION_HEADKV ? "--attention headkv"
                                                                                  : "--recycle-budgets headkv");
        eo->policy.scores = eo->recycle.head_scores = cli_head_scores(c);
    }
    if (g_policy_flags_seen && !attention_kind_is_policy(eo->attention))
        cli_die("--kv-* budget settings need a KV-compression method (--attention streaming, h2o, snapkv, pyramidkv, "
                "adakv or headkv)");
    if (attention_kind_is_policy(eo->attention)) {
        if (kvpolicy_opts_validate(eo->attention - ATTENTION_STREAMING, &eo->policy, c->n_layer, c->n_head, &err))
            cli_die_err(&err);
    }
    if (eo->attention != ATTENTION_RECYCLED) {
        if (g_recycle_flags_seen) cli_die("--recycle-* settings need --attention recycled");
        return;
    }
    if (!g_recycle_k_seen && eo->recycle.k > n_ctx) eo->recycle.k = n_ctx;  // a short context keeps everything
    if (!g_recycle_span_seen) eo->recycle.span = cli_recycle_default_span(&eo->recycle, n_ctx);
    if (recycle_opts_validate(&eo->recycle, n_ctx, &err)) cli_die_err(&err);
}

void cli_attention_describe(const engine_opts *eo, char *buf, size_t cap) {
    const recycle_opts *r = &eo->recycle;
    char shipped[512] = "", sel[96] = "";
    // The paper's selection (last query, no span) adds nothing to the line.
    if (r->query == RECYCLE_QUERY_LAST && r->span > 0)
        snprintf(sel, sizeof(sel), ", first query last, span %lld", (long long)r->span);
    else if (r->query == RECYCLE_QUERY_WINDOW)
        snprintf(sel, sizeof(sel), ", first query window %lld %s, span %lld", (long long)r->query_window,
                 recycle_query_agg_name(r->query_agg), (long long)r->span);
    if (g_budgets_how == BUDGETS_SHIPPED && r->budgets == RECYCLE_BUDGETS_HEADKV)
        snprintf(shipped, sizeof(shipped), " by default (scores shipped for this model: %.400s)", base_name(g_shipped_path));
    if (attention_kind_is_policy(eo->attention)) {
        const kvpolicy_opts *p = &eo->policy;
        snprintf(buf, cap, "%s (KV budget %lld rows per %s head on average%s)", attention_kind_name(eo->attention),
                 (long long)p->budget, p->per_query_head ? "query" : "KV",
                 eo->attention == ATTENTION_STREAMING ? ", sinks" : eo->attention == ATTENTION_H2O ? ", half recent"
                                                                                                  : ", window kept");
    } else if (eo->attention != ATTENTION_RECYCLED) {
        snprintf(buf, cap, "full attention");
    } else if (r->schedule == RECYCLE_STRIDE) {
        snprintf(buf, cap, "recycled attention (K %lld%s%s, stride %lld, GQA %s, pool %lld%s)", (long long)r->k,
                 r->budgets == RECYCLE_BUDGETS_HEADKV ? " on average, HeadKV budgets" : "", shipped,
                 (long long)r->stride, group_agg_name(r->group_agg), (long long)r->pool_kernel, sel);
    } else {
        snprintf(buf, cap, "recycled attention (K %lld%s%s, dynamic: every %lld steps, full at cosine <= %g, GQA %s, pool %lld%s)",
                 (long long)r->k, r->budgets == RECYCLE_BUDGETS_HEADKV ? " on average, HeadKV budgets" : "", shipped,
                 (long long)r->check_every, r->similarity, group_agg_name(r->group_agg), (long long)r->pool_kernel, sel);
    }
}

void cli_attention_usage(FILE *out) {
    const recycle_opts d = recycle_default_opts();
    const kvpolicy_opts p = kvpolicy_default_opts();
    fprintf(out,
            "      --attention METHOD  full (default), recycled, streaming, h2o, snapkv, pyramidkv, adakv, headkv.\n"
            "                          recycled: most steps attend only to a top-K cache that every rank\n"
            "                          holds a copy of (no communication); full steps attend to everything\n"
            "                          and rebuild that cache. The others compress the KV cache to a budget\n"
            "                          and free the rest: streaming keeps sinks + the most recent; h2o half\n"
            "                          heavy hitters (accumulated attention) + half recent, evicting every\n"
            "                          step; snapkv keeps each head's top positions by the vote of the last\n"
            "                          prompt tokens (the window), pyramidkv the same with budgets falling\n"
            "                          over layers, adakv with budgets moving between the heads of a layer,\n"
            "                          headkv with per-head budgets from importance scores (--head-scores)\n"
            "      --kv-budget N       rows kept per head on average, window/sinks included (default %lld).\n"
            "                          Counted per KV head: that is what memory holds. A budget at least the\n"
            "                          prompt length compresses nothing\n"
            "      --budget-per-query-head\n"
            "                          count budgets per query head, each keeping its own rows (the HeadKV\n"
            "                          paper's accounting; n_head / n_kv times the memory)\n"
            "      --kv-window W       snapkv family and h2o: last prompt tokens that vote (default %lld)\n"
            "      --kv-sinks N        streaming: first tokens always kept (default %lld)\n"
            "      --kv-pool W         snapkv family: max-pool the vote over W positions (default %lld)\n"
            "      --headkv-beta B     headkv: each head gets b - b/B, the rest is shared by score (default %g)\n"
            "      --pyramid-beta B    pyramidkv: the last layer gets b/B, the first 2b - b/B (default %g)\n"
            "      --ada-floor F       adakv: every head keeps at least F x b (default %g)\n"
            "      --head-scores FILE  head importance (JSON from 'recall profile-heads', e.g.\n"
            "                          configs/heads/smollm2-135m-instruct.json) for headkv and\n"
            "                          --recycle-budgets headkv (default: the scores shipped for the model)\n"
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
            "                          1 = off)\n"
            "      --recycle-budgets uniform|headkv\n"
            "                          K per layer and KV head: all equal (the paper's method), or the HeadKV\n"
            "                          allocation of the same total by head importance (--head-scores, or the\n"
            "                          scores shipped for the model). Default: headkv when scores are shipped\n"
            "                          for this model file (configs/heads/index.json, matched by the file's\n"
            "                          content fingerprint, see 'recall info'; $RECALL_HEADS_DIR overrides\n"
            "                          the directory), else uniform. HeadKV budgets come with\n"
            "                          --recycle-span %d unless a span is given\n"
            "      --recycle-query last|window\n"
            "                          which prompt queries choose the first cache (built at the end of the\n"
            "                          prompt): the last token's (default, the paper's), or the last W\n"
            "                          tokens' (SnapKV's observation window; a chat template's last tokens\n"
            "                          are template, not question). Later rebuilds use their step's query\n"
            "      --recycle-query-window W\n"
            "                          window: how many of the last prompt tokens (default %lld; 1..%d; the\n"
            "                          prompt must have at least W tokens)\n"
            "      --recycle-query-agg mean|max\n"
            "                          window: combine their exact attention per query head and position\n"
            "                          (default mean), before --recycle-agg combines the heads\n"
            "      --recycle-span R    a selected position brings the next R positions into the cache, in\n"
            "                          score order, at every rebuild; K stays the total (default %d with\n"
            "                          HeadKV budgets, %lld = off with uniform budgets, the paper's method)\n",
            (long long)p.budget, (long long)p.window, (long long)p.sinks, (long long)p.pool_kernel, p.headkv_beta,
            p.pyramid_beta, p.ada_floor, (long long)d.k, (long long)d.stride, (long long)d.check_every, d.similarity, (long long)d.pool_kernel,
            CLI_RECYCLE_HEADKV_SPAN, (long long)d.query_window, RECYCLE_QUERY_WINDOW_MAX, CLI_RECYCLE_HEADKV_SPAN, (long long)d.span);
}
