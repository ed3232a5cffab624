#include "cli/method_list.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/attention_opts.h"
#include "cli/cli.h"
#include "core/array.h"

static const struct method_key { const char *key; int opt; int policy; } method_keys[] = {
    {"k", CLI_OPT_RECYCLE_K, 0},        {"stride", CLI_OPT_RECYCLE_STRIDE, 0}, {"schedule", CLI_OPT_RECYCLE_SCHEDULE, 0},
    {"qc", CLI_OPT_RECYCLE_CHECK_EVERY, 0}, {"s", CLI_OPT_RECYCLE_SIMILARITY, 0}, {"agg", CLI_OPT_RECYCLE_AGG, 0},
    {"pool", CLI_OPT_RECYCLE_POOL, 0},  {"budgets", CLI_OPT_RECYCLE_BUDGETS, 0},
    {"query", CLI_OPT_RECYCLE_QUERY, 0}, {"qwin", CLI_OPT_RECYCLE_QUERY_WINDOW, 0}, {"qagg", CLI_OPT_RECYCLE_QUERY_AGG, 0},
    {"span", CLI_OPT_RECYCLE_SPAN, 0},
    {"budget", CLI_OPT_KV_BUDGET, 1},   {"window", CLI_OPT_KV_WINDOW, 1},     {"sinks", CLI_OPT_KV_SINKS, 1},
    {"kvpool", CLI_OPT_KV_POOL, 1},     {"beta", CLI_OPT_HEADKV_BETA, 1},     {"pbeta", CLI_OPT_PYRAMID_BETA, 1},
    {"floor", CLI_OPT_ADA_FLOOR, 1}};

int method_list_parse(const char *list, const engine_opts *base, int k_explicit, int budget_explicit,
                      method_spec *out, int max_n) {
    int n = 0;
    // A method's own budgets= goes through the flag parser, which marks
    // --recycle-budgets as given; read the command line's answer first, so
    // one method's setting never leaks into the methods after it.
    const int budgets_flag = cli_recycle_budgets_given(), span_flag = cli_recycle_span_given();
    char *copy = strdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max_n) cli_die("--attention: at most %d methods", max_n);
        for (int i = 0; i < n; i++)
            if (!strcmp(out[i].name, tok)) cli_die("--attention: '%s' is listed twice", tok);
        method_spec *m = &out[n++];
        memset(m, 0, sizeof(*m));
        snprintf(m->name, sizeof(m->name), "%s", tok);
        m->ro = base->recycle;
        m->po = base->policy;
        char *save2 = NULL, *part = strtok_r(tok, ":", &save2);
        m->attention = attention_kind_from_name(part);
        if (m->attention < 0)
            cli_die("--attention: unknown method '%s' (expected full, recycled, streaming, h2o, snapkv, pyramidkv, "
                    "adakv or headkv, each with optional :key=value settings)", part);
        const int policy = attention_kind_is_policy(m->attention);
        m->k_explicit = policy ? budget_explicit : k_explicit;
        m->budgets_explicit = budgets_flag;
        m->span_explicit = span_flag;
        // key=value settings map onto the flags and their checks.
        const size_t n_keys = ARRAY_LEN(method_keys);
        for (part = strtok_r(NULL, ":", &save2); part; part = strtok_r(NULL, ":", &save2)) {
            char *eq = strchr(part, '=');
            if (!eq || m->attention == ATTENTION_FULL)
                cli_die("--attention: '%s' in '%s' is not a key=value setting of the method", part, m->name);
            *eq = '\0';
            size_t i = 0;
            while (i < n_keys && (strcmp(method_keys[i].key, part) || method_keys[i].policy != policy)) i++;
            if (i == n_keys)
                cli_die("--attention: unknown %s setting '%s' (recycled: k, stride, schedule, qc, s, agg, pool, "
                        "budgets, query, qwin, qagg, span; policies: budget, window, sinks, kvpool, beta, pbeta, floor)",
                        policy ? "policy" : "recycled", part);
            engine_opts eo = {.recycle = m->ro, .policy = m->po};
            cli_attention_option(method_keys[i].opt, eq + 1, &eo);
            m->ro = eo.recycle;
            m->po = eo.policy;
            if (method_keys[i].opt == CLI_OPT_RECYCLE_K || method_keys[i].opt == CLI_OPT_KV_BUDGET) m->k_explicit = 1;
            if (method_keys[i].opt == CLI_OPT_RECYCLE_BUDGETS) m->budgets_explicit = 1;
            if (method_keys[i].opt == CLI_OPT_RECYCLE_SPAN) m->span_explicit = 1;
        }
    }
    free(copy);
    if (n == 0) cli_die("--attention: expected a comma-separated list of methods");
    return n;
}

static const head_scores *shipped_scores(const model *md) {
    static head_scores hs;
    static int loaded;
    if (!loaded) {
        rc_err err = {{0}};
        const char *path = cli_shipped_head_scores(md);
        if (!path) return NULL;
        if (head_scores_load(path, md->cfg.n_layer, md->cfg.n_head, &hs, &err)) cli_die_err(&err);
        loaded = 1;
    }
    return &hs;
}

int method_list_head_scores(method_spec *ms, int n, const model *md) {
    const model_config *c = &md->cfg;
    int n_shipped = 0;
    for (int i = 0; i < n; i++) {
        method_spec *m = &ms[i];
        if (m->attention == ATTENTION_RECYCLED && !m->budgets_explicit) {
            const head_scores *hs = shipped_scores(md);
            if (hs) {
                m->ro.budgets = RECYCLE_BUDGETS_HEADKV;
                m->ro.head_scores = hs;
                m->budgets_shipped = 1;
                n_shipped++;
            }
            continue;
        }
        if (m->attention == ATTENTION_HEADKV ||
            (m->attention == ATTENTION_RECYCLED && m->ro.budgets == RECYCLE_BUDGETS_HEADKV)) {
            const head_scores *hs = cli_head_scores(c);
            if (!hs) hs = shipped_scores(md);
            if (!hs)
                cli_die("--attention %s needs head-importance scores: --head-scores FILE (e.g. configs/heads/*.json, "
                        "made by 'recall profile-heads')", m->name);
            m->po.scores = m->ro.head_scores = hs;
        }
    }
    return n_shipped;
}

void method_list_budgets_note(const method_spec *ms, int n, const model *md) {
    int n_shipped = 0, n_uniform = 0;
    for (int i = 0; i < n; i++)
        if (ms[i].attention == ATTENTION_RECYCLED && !ms[i].budgets_explicit) {
            n_shipped += ms[i].budgets_shipped;
            n_uniform += !ms[i].budgets_shipped;
        }
    if (n_shipped)
        fprintf(stderr, "recall: note: recycled attention uses HeadKV budgets and span %d by default (scores shipped "
                "for this model: %s); budgets=uniform or --recycle-budgets uniform gives the paper's uniform K\n",
                CLI_RECYCLE_HEADKV_SPAN, cli_shipped_head_scores(md));
    if (n_uniform)
        fprintf(stderr, "recall: note: uniform recycled budgets: no head scores are shipped for this model "
                "(fingerprint %s); 'recall profile-heads' measures them, then budgets=headkv with --head-scores "
                "FILE uses them\n", cli_model_fingerprint(md));
}
