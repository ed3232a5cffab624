// recall eval custom: the user's own JSONL samples (src/eval/custom_data.h)
// answered greedily by every attention method from one prefill per sample,
// and scored against their expected answers (src/eval/score.h).
//
// Rank 0 reads and validates the whole file first (nothing is written before
// it passes), builds each prompt (template, chat template), tokenizes it and
// fits it to --ctx (skip, or cut the middle). The per-sample protocol is eval
// ruler's: every rank prefills with full attention, then per method x budget
// truncates back to the prompt, switches the method and decodes; the logits
// are compared across ranks; rank 0 scores and writes.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/kv_format.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "cli/eval_common.h"
#include "core/hash.h"
#include "eval/custom_data.h"
#include "eval/score.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_OUT "custom"  // file stem in the run's own directory (eval_claim_out)
#define DEFAULT_MAX_NEW 128
#define JSONL_FORMAT "recall-eval-custom-1"
#define MIN_KEPT_TOKENS 16  // --truncate middle keeps at least this much of a prompt

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall eval custom -m MODEL --data FILE.jsonl [options]\n"
            "\n"
            "Your own long-context samples, answered greedily by each --attention method and scored\n"
            "against their expected answers. Each sample is prefilled once; every method decodes from\n"
            "that prefill.\n"
            "\n"
            "FILE.jsonl holds one JSON object per line:\n"
            "  \"prompt\": \"...\"                 the whole prompt, or\n"
            "  \"context\": \"...\", \"question\": \"...\"\n"
            "                                  joined by --template (\"input\" is taken for \"question\")\n"
            "  \"answers\": \"...\" or [\"...\", ...]  expected answers (required)\n"
            "  \"id\": \"...\" or 123              optional, unique (\"_id\" is taken too); default: the line\n"
            "  \"max_new_tokens\": N             optional answer budget (default --max-new-tokens)\n"
            "  \"chat\": true|false              optional: wrap the prompt in the model's chat template\n"
            "                                  (default: as --chat / --no-chat)\n"
            "Other keys are ignored. The file is checked completely before anything runs: a line that\n"
            "is not JSON, lacks a field or has a field of the wrong type stops with FILE:LINE.\n"
            "\n"
            "      --data FILE         the samples (required)\n"
            "                          --ctx takes one value here: each prompt + its answer budget must fit\n"
            "                          it, and --budget-ratio is a fraction of it (not of each prompt)\n");
    eval_common_usage(out, "the trained length", "eval-custom", DEFAULT_OUT);
    fprintf(out,
            "      --template TEXT     how \"context\" and \"question\" are joined; \\n is a line break (default\n"
            "                          \"{context}\\n\\n{question}\")\n"
            "      --chat, --no-chat   wrap prompts in the model's chat template, or not (default: when the\n"
            "                          model has one, as eval ruler does); a sample's \"chat\" wins\n"
            "      --max-new-tokens N  answer budget of samples without their own (default %d)\n"
            "      --metric M          contains: the answer occurs in the output, ignoring case (RULER's\n"
            "                          string match; the default); exact: equal after normalization\n"
            "                          (lower case, no punctuation or articles); f1: token F1 (SQuAD,\n"
            "                          LongBench)\n"
            "      --score any|all     several answers: the best one counts (any, the default) or the\n"
            "                          mean over all of them (all: RULER's string_match_all)\n"
            "      --truncate skip|middle\n"
            "                          a sample whose prompt + answer budget exceeds --ctx: skipped with a\n"
            "                          warning naming its line (skip, the default), or the middle of its\n"
            "                          prompt tokens cut out, keeping the start and the end (LongBench's\n"
            "                          convention)\n"
            "      --resume            skip the (sample, method, budget) results already in PREFIX.jsonl\n"
            "                          (the default with --out); a changed sample is run again\n"
            "      --fresh             start PREFIX.jsonl over instead\n"
            "  -h, --help              this help\n"
            "\n"
            "Output (rank 0): a table on stdout of the mean score %% per method and budget and the mean\n"
            "relative to full attention; PREFIX.jsonl, one line per (sample, method, budget) written as\n"
            "soon as it is done (the model's full answer, the score, prompt tokens, decode seconds, KV\n"
            "bytes held on the largest rank); PREFIX.csv (ctx, method, budget, metric, n, score) and\n"
            "PREFIX.json (the summary). Progress goes to stderr.\n",
            DEFAULT_MAX_NEW);
}

typedef struct custom_args {
    eval_common_opts c;
    const char *data_path;
    char *tmpl;
    int chat;  // -1: the model's template when it has one
    int64_t max_new;
    score_metric metric;
    score_combine combine;
    int truncate_middle, fresh;
} custom_args;

// A sample ready to run (rank 0).
typedef struct item {
    const custom_sample *s;
    const char *key_id;  // the sample's id, or line_id
    char line_id[24];    // "#LINE" for a sample without an id
    int32_t *ids;
    int64_t n_ids, max_new, cut;  // cut: prompt tokens removed by --truncate middle
    char hash[17];     // of the tokens and the answer budget: a changed sample is not resumed
} item;

// "\n", "\t" and "\\" in --template, so that it can be given on a command line.
static char *unescape(const char *s) {
    char *out = malloc(strlen(s) + 1), *w = out;
    for (; *s; s++) {
        if (s[0] == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            s++;
            *w++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : '\\';
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
    return out;
}

// An id of any length enters the key as its hash, so that the key stays short.
static void result_key(char *buf, size_t cap, const char *id, const char *hash, const char *method, int64_t budget) {
    snprintf(buf, cap, "%016llx|%s|%s|%lld", (unsigned long long)fnv1a(FNV1A_INIT, id, strlen(id)), hash, method,
             (long long)budget);
}

typedef struct load_ctx {
    const char *path, *model_name, *settings;
    eval_index *ix;
} load_ctx;

static int json_num(const cJSON *o, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return 0;
    *out = v->valuedouble;
    return 1;
}

// One line of an earlier PREFIX.jsonl into the index; a line of another
// model or other settings stops (they change the answers, not the key).
static void load_line(const cJSON *o, int64_t lineno, void *user) {
    load_ctx *lc = user;
    const cJSON *id = o ? cJSON_GetObjectItemCaseSensitive(o, "id") : NULL;
    const cJSON *hash = o ? cJSON_GetObjectItemCaseSensitive(o, "sample_hash") : NULL;
    const cJSON *method = o ? cJSON_GetObjectItemCaseSensitive(o, "method") : NULL;
    const cJSON *model = o ? cJSON_GetObjectItemCaseSensitive(o, "model") : NULL;
    const cJSON *sets = o ? cJSON_GetObjectItemCaseSensitive(o, "settings") : NULL;
    double budget, new_tokens = 0;
    eval_result r = {0};
    if (!o || !cJSON_IsString(id) || !cJSON_IsString(hash) || !cJSON_IsString(method) || !cJSON_IsString(model) ||
        !cJSON_IsString(sets) || !json_num(o, "budget", &budget) || !json_num(o, "score", &r.score))
        cli_die("%s:%lld: not a result line of 'recall eval custom' (--fresh starts the file over)", lc->path,
                (long long)lineno);
    if (strcmp(model->valuestring, lc->model_name))
        cli_die("%s:%lld: results of another model (%s, not %s): use --fresh or another --out", lc->path,
                (long long)lineno, model->valuestring, lc->model_name);
    if (strcmp(sets->valuestring, lc->settings))
        cli_die("%s:%lld: results made with other settings (%s, not %s): use --fresh or another --out", lc->path,
                (long long)lineno, sets->valuestring, lc->settings);
    json_num(o, "kv_bytes", &r.kv_bytes);
    json_num(o, "decode_seconds", &r.seconds);
    json_num(o, "new_tokens", &new_tokens);
    r.new_tokens = (int64_t)new_tokens;
    char key[512];
    result_key(key, sizeof(key), id->valuestring, hash->valuestring, method->valuestring, (int64_t)budget);
    eval_index_put(lc->ix, key, &r);
}

// Rank 0: every sample's prompt tokens, fitted to ctx. Returns the number of
// items; skipped samples are left out, each with a line in *warnings (printed
// by the caller only when some sample is left, so that an error stays one line).
static int64_t prepare(const custom_args *a, const custom_data *d, const tokenizer *tok, const gguf_file *file,
                       int64_t ctx, item *items, int64_t *n_skipped, char **warnings) {
    size_t w_len = 0, w_cap = 0;
    *warnings = NULL;
    rc_err err = {{0}};
    const int has_template = gguf_find(file, "tokenizer.chat_template") != NULL;
    const int default_chat = a->chat >= 0 ? a->chat : has_template;
    int64_t n = 0;
    *n_skipped = 0;
    for (int64_t i = 0; i < d->n; i++) {
        const custom_sample *s = &d->samples[i];
        const int chat = s->chat >= 0 ? s->chat : default_chat;
        if (chat && !has_template)
            cli_die("%s:%lld: the sample asks for the chat template (\"chat\": true), but %s has none", a->data_path,
                    (long long)s->line, eval_basename(a->c.model_path));
        char *text = custom_sample_text(s, a->tmpl), *full = NULL;
        if (!text) cli_die("out of memory");
        if (chat && chat_format(file, NULL, text, &full, &err)) cli_die("%s:%lld: %s", a->data_path, (long long)s->line, err.msg);
        const char *prompt = chat ? full : text;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (tokenizer_encode(tok, prompt, strlen(prompt), tokenizer_add_bos(tok), chat, &ids, &n_ids, &err))
            cli_die("%s:%lld: %s", a->data_path, (long long)s->line, err.msg);
        free(text);
        free(full);
        item *it = &items[n];
        *it = (item){.s = s, .ids = ids, .n_ids = (int64_t)n_ids, .max_new = s->max_new_tokens ? s->max_new_tokens : a->max_new};
        snprintf(it->line_id, sizeof(it->line_id), "#%lld", (long long)s->line);
        it->key_id = s->id ? s->id : it->line_id;
        const int64_t room = ctx - it->max_new;  // prompt tokens that fit beside the answer
        if (it->n_ids > room) {
            if (!a->truncate_middle || room < MIN_KEPT_TOKENS) {
                char w[4096 + 256];
                const int n_w = snprintf(w, sizeof(w), "recall: warning: %s:%lld: %lld prompt tokens + %lld answer "
                                         "tokens exceed --ctx %lld: skipped%s\n", a->data_path, (long long)s->line,
                                         (long long)it->n_ids, (long long)it->max_new, (long long)ctx,
                                         a->truncate_middle ? " (too little room to cut it)"
                                                            : " (--truncate middle cuts it instead)");
                if (w_len + (size_t)n_w + 1 > w_cap) {
                    while (w_len + (size_t)n_w + 1 > w_cap) w_cap = w_cap ? 2 * w_cap : 4096;
                    if (!(*warnings = realloc(*warnings, w_cap))) cli_die("out of memory");
                }
                memcpy(*warnings + w_len, w, (size_t)n_w + 1);
                w_len += (size_t)n_w;
                free(ids);
                (*n_skipped)++;
                continue;
            }
            // LongBench: keep the first and the last half of what fits.
            const int64_t head = room / 2, tail = room - head;
            memmove(ids + head, ids + it->n_ids - tail, (size_t)tail * sizeof(int32_t));
            it->cut = it->n_ids - room;
            it->n_ids = room;
        }
        uint64_t h = fnv1a(FNV1A_INIT, it->ids, (size_t)it->n_ids * sizeof(int32_t));
        h = fnv1a(h, &it->max_new, sizeof(it->max_new));
        snprintf(it->hash, sizeof(it->hash), "%016llx", (unsigned long long)h);
        n++;
    }
    return n;
}

typedef struct prefill_status {
    eval_progress *prog;
    char what[120];
} prefill_status;

static void on_prefill(void *user, int64_t done, int64_t total) {
    prefill_status *ps = user;
    char s[160];
    snprintf(s, sizeof(s), "%s: prefill %.0f%%", ps->what, total ? 100.0 * (double)done / (double)total : 100.0);
    eval_progress_status(ps->prog, s);
}

// Prints the table, writes PREFIX.csv and PREFIX.json.
static void report(const custom_args *a, const eval_index *ix, const eval_run *runs, int n_runs, const item *items,
                   int64_t n_items, int64_t n_skipped, int64_t ctx, int n_ranks, const char *command) {
    const eval_common_opts *c = &a->c;
    char path[4096], key[512];
    FILE *csv = eval_open_output(c->out_prefix, ".csv", "w", path, sizeof(path));
    fprintf(csv, "ctx,method,budget,metric,n,score\n");
    cJSON *root = cJSON_CreateObject(), *results = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "format", "recall-eval-custom-summary-1");
    cJSON_AddStringToObject(root, "command", command);
    cJSON_AddStringToObject(root, "model", c->model_path);
    cJSON_AddStringToObject(root, "data", a->data_path);
    cJSON_AddNumberToObject(root, "ranks", n_ranks);
    cJSON_AddNumberToObject(root, "ctx", (double)ctx);
    cJSON_AddStringToObject(root, "metric", score_metric_name(a->metric));
    cJSON_AddStringToObject(root, "score", score_combine_name(a->combine));
    cJSON_AddNumberToObject(root, "samples", (double)n_items);
    cJSON_AddNumberToObject(root, "skipped", (double)n_skipped);

    const char *mname = a->metric == SCORE_CONTAINS ? "string match" : a->metric == SCORE_EXACT ? "exact match" : "token F1";
    printf("# recall eval custom: %s, %s, %d rank%s, ctx %lld\n# %lld sample%s scored", c->model_path,
           eval_basename(a->data_path), n_ranks, n_ranks > 1 ? "s" : "", (long long)ctx, (long long)n_items,
           n_items == 1 ? "" : "s");
    if (n_skipped) printf(", %lld skipped (longer than --ctx)", (long long)n_skipped);
    printf("; score: %s (%s answer%s), %% mean over samples; rel: score / full's\n", mname,
           a->combine == SCORE_ALL ? "all" : "any", a->combine == SCORE_ALL ? "s" : "");
    printf("# %-34s %7s %6s %7s %7s %8s %9s\n", "method", "budget", "n", "score", "rel", "KV MiB", "s/answer");
    double full_mean = -1.0;
    for (int ri = 0; ri < n_runs; ri++) {
        const eval_run *r = &runs[ri];
        double sum = 0.0, kv = 0.0, secs = 0.0;
        int64_t n = 0;
        for (int64_t i = 0; i < n_items; i++) {
            result_key(key, sizeof(key), items[i].key_id, items[i].hash, r->label, r->budget);
            const eval_result *res = eval_index_get(ix, key);
            if (!res) continue;
            sum += res->score;
            kv += res->kv_bytes;
            secs += res->seconds;
            n++;
        }
        const double mean = n ? 100.0 * sum / (double)n : 0.0;
        if (r->attention == ATTENTION_FULL && full_mean < 0 && n) full_mean = mean;
        const double kv_mib = n ? kv / (double)n / (1024.0 * 1024.0) : 0.0, sec_mean = n ? secs / (double)n : 0.0;
        char rel[16] = "-";
        if (r->attention != ATTENTION_FULL && full_mean > 0 && n) snprintf(rel, sizeof(rel), "%.1f%%", 100.0 * mean / full_mean);
        if (n) printf("  %-34s %7lld %6lld %7.1f %7s %8.1f %9.2f\n", r->label, (long long)r->budget, (long long)n, mean, rel, kv_mib, sec_mean);
        else printf("  %-34s %7lld %6d %7s %7s %8s %9s\n", r->label, (long long)r->budget, 0, "-", "-", "-", "-");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "method", r->label);
        cJSON_AddStringToObject(o, "attention", attention_kind_name(r->attention));
        cJSON_AddNumberToObject(o, "budget", (double)r->budget);
        cJSON_AddNumberToObject(o, "n", (double)n);
        if (n) {
            fprintf(csv, "%lld,", (long long)ctx);
            cli_csv_field(csv, r->label);
            fprintf(csv, ",%lld,%s,%lld,%.4f\n", (long long)r->budget, score_metric_name(a->metric), (long long)n, mean);
            cJSON_AddNumberToObject(o, "score", mean);
            if (r->attention != ATTENTION_FULL && full_mean > 0) cJSON_AddNumberToObject(o, "relative_to_full", mean / full_mean);
            cJSON_AddNumberToObject(o, "kv_mib_mean", kv_mib);
            cJSON_AddNumberToObject(o, "decode_seconds_mean", sec_mean);
        }
        cJSON_AddItemToArray(results, o);
    }
    eval_finish_outputs(c->out_prefix, csv, path, root, results, command, n_ranks);
}

int eval_custom_main(int argc, char **argv) {
    custom_args a = {.chat = -1, .max_new = DEFAULT_MAX_NEW, .metric = SCORE_CONTAINS, .combine = SCORE_ANY};
    eval_common_init(&a.c);
    const char *tmpl_arg = CUSTOM_DEFAULT_TEMPLATE;
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    enum { OPT_DATA = EVAL_OPT_FIRST_COMMAND, OPT_TEMPLATE, OPT_CHAT, OPT_NO_CHAT, OPT_MAX_NEW, OPT_METRIC, OPT_SCORE,
           OPT_TRUNCATE, OPT_RESUME, OPT_FRESH };
    static const struct option opts[] = {
        EVAL_COMMON_OPTIONS,
        {"data", required_argument, 0, OPT_DATA},         {"template", required_argument, 0, OPT_TEMPLATE},
        {"chat", no_argument, 0, OPT_CHAT},               {"no-chat", no_argument, 0, OPT_NO_CHAT},
        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW}, {"metric", required_argument, 0, OPT_METRIC},
        {"score", required_argument, 0, OPT_SCORE},       {"truncate", required_argument, 0, OPT_TRUNCATE},
        {"resume", no_argument, 0, OPT_RESUME},           {"fresh", no_argument, 0, OPT_FRESH},
        {"help", no_argument, 0, 'h'},                    {0, 0, 0, 0}};
    static const char optstring[] = ":m:h";
    cli_config_merge("eval custom", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA: a.data_path = optarg; break;
        case OPT_TEMPLATE: tmpl_arg = optarg; break;
        case OPT_CHAT: a.chat = 1; break;
        case OPT_NO_CHAT: a.chat = 0; break;
        case OPT_MAX_NEW: a.max_new = cli_parse_int("--max-new-tokens", optarg, 1, CUSTOM_MAX_NEW_TOKENS); break;
        case OPT_METRIC:
            if (score_metric_parse(optarg, &a.metric)) cli_die("--metric: '%s' is not contains, exact or f1", optarg);
            break;
        case OPT_SCORE:
            if (score_combine_parse(optarg, &a.combine)) cli_die("--score: '%s' is not any or all", optarg);
            break;
        case OPT_TRUNCATE:
            if (strcmp(optarg, "skip") && strcmp(optarg, "middle")) cli_die("--truncate: '%s' is not skip or middle", optarg);
            a.truncate_middle = !strcmp(optarg, "middle");
            break;
        case OPT_RESUME: a.fresh = 0; break;
        case OPT_FRESH: a.fresh = 1; break;
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall eval custom --help')", argv[optind - 1]);
        default:
            if (eval_common_option(c, optarg, &a.c)) break;
            cli_die("unknown option '%s' (see 'recall eval custom --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s' (see 'recall eval custom --help')", argv[optind]);
    if (a.c.n_ctx > 1) cli_die("--ctx: eval custom takes one context length, not %d", a.c.n_ctx);
    eval_common_finish(&a.c, "recall eval custom", 0, DEFAULT_OUT);  // ctx 0: the model's, below
    if (!a.data_path) cli_die("missing --data FILE.jsonl (see 'recall eval custom --help')");
    a.tmpl = unescape(tmpl_arg);
    if (custom_template_check(a.tmpl, &err)) cli_die_err(&err);
    method_spec methods[METHOD_LIST_MAX];
    const int n_methods = method_list_parse(a.c.methods_arg, &a.c.base, a.c.recycle_k_given, 0, methods, METHOD_LIST_MAX);
    char command[4096];
    cli_command_line("recall eval custom", argc, argv, command, sizeof(command));

    // The data first: a bad file stops before the model is even loaded.
    custom_data data = {0};
    if (rank0 && custom_data_load(a.data_path, CUSTOM_MAX_LINE_BYTES, &data, &err)) cli_die_err(&err);

    model m;
    if (model_load(&m, a.c.model_path, &err)) cli_die_err(&err);
    if (a.c.ctx[0] == 0) a.c.ctx[0] = m.cfg.n_ctx_train;
    eval_check_ctx(&a.c, &m.cfg);
    const int64_t ctx = a.c.ctx[0];
    method_list_head_scores(methods, n_methods, &m);
    if (rank0) method_list_budgets_note(methods, n_methods, &m);
    eval_run *runs = malloc(EVAL_MAX_RUNS * sizeof(eval_run));
    const int n_runs = eval_runs_for_ctx(methods, n_methods, &a.c.budgets, ctx, ctx, &m.cfg, runs);
    tokenizer *tok = NULL;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);

    // Rank 0 prepares the samples and decides what is left to do; every rank gets the list.
    const char *model_name = eval_basename(a.c.model_path);
    char settings[256];  // what shapes an answer or a score besides the result key
    snprintf(settings, sizeof(settings), "kv=%s metric=%s score=%s", kv_elem_name(a.c.kv_elem),
             score_metric_name(a.metric), score_combine_name(a.combine));
    item *items = rank0 ? calloc((size_t)data.n, sizeof(item)) : NULL;
    int64_t n_items = 0, n_skipped = 0;
    eval_index ix;
    eval_index_init(&ix);
    char jsonl_path[4096];
    if (rank0) {
        char *warnings = NULL;
        n_items = prepare(&a, &data, tok, &m.file, ctx, items, &n_skipped, &warnings);
        if (n_items == 0)
            cli_die("%s: none of its %lld samples fits --ctx %lld (raise --ctx, or --truncate middle)", a.data_path,
                    (long long)data.n, (long long)ctx);
        if (warnings) fputs(warnings, stderr);
        free(warnings);
        if (!a.c.out_auto && !a.fresh) {  // without --out the run's directory is new: nothing to resume
            snprintf(jsonl_path, sizeof(jsonl_path), "%s.jsonl", a.c.out_prefix);
            load_ctx lc = {.path = jsonl_path, .model_name = model_name, .settings = settings, .ix = &ix};
            eval_jsonl_each(jsonl_path, load_line, &lc);
        }
    }
    if (comm_bcast(cm, &n_items, sizeof(n_items), 0, &err)) cli_die_err(&err);
    uint8_t *todo = calloc((size_t)(n_items * n_runs), 1);
    int64_t n_todo = 0;
    double work_total = 0.0;
    if (rank0) {
        char key[512];
        for (int64_t i = 0; i < n_items; i++)
            for (int ri = 0; ri < n_runs; ri++) {
                result_key(key, sizeof(key), items[i].key_id, items[i].hash, runs[ri].label, runs[ri].budget);
                todo[i * n_runs + ri] = eval_index_get(&ix, key) == NULL;
                if (todo[i * n_runs + ri]) work_total += (double)items[i].n_ids;
            }
    }
    if (comm_bcast(cm, todo, (size_t)(n_items * n_runs), 0, &err)) cli_die_err(&err);
    if (comm_bcast(cm, &work_total, sizeof(work_total), 0, &err)) cli_die_err(&err);
    for (int64_t k = 0; k < n_items * n_runs; k++) n_todo += todo[k];
    FILE *jsonl = NULL;
    if (rank0) {
        eval_claim_out(&a.c);
        snprintf(jsonl_path, sizeof(jsonl_path), "%s.jsonl", a.c.out_prefix);
        fprintf(stderr, "recall: eval: %lld run%s (%lld sample%s x %d method/budget%s), %lld already in %s, %lld to run\n",
                (long long)(n_items * n_runs), n_items * n_runs == 1 ? "" : "s", (long long)n_items,
                n_items == 1 ? "" : "s", n_runs, n_runs == 1 ? "" : "s", (long long)(n_items * n_runs - n_todo),
                jsonl_path, (long long)n_todo);
        jsonl = eval_open_output(a.c.out_prefix, ".jsonl", a.fresh ? "w" : "a", jsonl_path, sizeof(jsonl_path));
    }

    uint64_t all_hash = FNV1A_INIT;
    int64_t n_steps = 0;
    eval_progress prog;
    eval_progress_init(&prog, rank0, a.c.progress, n_todo, work_total);
    if (n_todo > 0) {
        engine *e = eval_engine_create(&a.c, &m, cm, ctx);
        const int64_t V = m.cfg.n_vocab;
        float *prompt_logits = malloc((size_t)V * sizeof(float));
        int32_t *answer = malloc((size_t)ctx * sizeof(int32_t));
        for (int64_t i = 0; i < n_items; i++) {
            const uint8_t *row = todo + i * n_runs;
            int any = 0;
            for (int ri = 0; ri < n_runs; ri++) any |= row[ri];
            if (!any) continue;
            int64_t hdr[3] = {0, 0, 0};  // prompt tokens, answer budget, line
            if (rank0) {
                hdr[0] = items[i].n_ids;
                hdr[1] = items[i].max_new;
                hdr[2] = items[i].s->line;
            }
            if (comm_bcast(cm, hdr, sizeof(hdr), 0, &err)) cli_die_err(&err);
            const int64_t n_prompt = hdr[0], max_new = hdr[1], line = hdr[2];
            int32_t *ids = rank0 ? items[i].ids : malloc((size_t)n_prompt * sizeof(int32_t));
            if (comm_bcast(cm, ids, (size_t)n_prompt * sizeof(int32_t), 0, &err)) cli_die_err(&err);

            prefill_status ps = {.prog = &prog};
            snprintf(ps.what, sizeof(ps.what), "line %lld", (long long)line);
            engine_reset(e);
            if (engine_set_attention(e, ATTENTION_FULL, NULL, NULL, &err)) cli_die_err(&err);
            if (engine_prefill(e, ids, n_prompt, NULL, prog.bar ? on_prefill : NULL, &ps, &err)) cli_die_err(&err);
            memcpy(prompt_logits, engine_logits(e), (size_t)V * sizeof(float));
            const uint64_t hash = fnv1a(FNV1A_INIT, prompt_logits, (size_t)V * sizeof(float));
            const int32_t first = eval_argmax(prompt_logits, V);
            char text_line[1024];
            int line_len = snprintf(text_line, sizeof(text_line), "%s:%lld (%lld tokens):", eval_basename(a.data_path),
                                    (long long)line, (long long)n_prompt);
            for (int ri = 0; ri < n_runs; ri++) {
                if (!row[ri]) continue;
                const eval_run *r = &runs[ri];
                char status[160];
                snprintf(status, sizeof(status), "%s: %s budget %lld", ps.what, r->label, (long long)r->budget);
                eval_progress_status(&prog, status);
                const double t0 = cli_now();
                if (engine_truncate(e, n_prompt, &err) || eval_set_run(e, r, &err)) cli_die_err(&err);
                uint64_t run_hash = hash;
                const int64_t n_new = eval_decode_greedy(e, tok, first, max_new, answer, &run_hash);
                const double secs = cli_now() - t0;
                n_steps += n_new;
                all_hash = fnv1a(all_hash, &run_hash, sizeof(run_hash));
                double kv_max, sec_max;
                char what[256];
                snprintf(what, sizeof(what), "%s:%lld %s", a.data_path, (long long)line, r->label);
                eval_gather_run(cm, run_hash, (double)engine_kv_bytes_used(e), secs, &kv_max, &sec_max, what);
                if (rank0) {
                    const item *it = &items[i];
                    char *output = eval_detokenize(tok, answer, n_new);
                    const double score = score_output(a.metric, a.combine, output, (const char *const *)it->s->answers,
                                                      it->s->n_answers);
                    cJSON *o = cJSON_CreateObject(), *ans = cJSON_CreateArray();
                    cJSON_AddStringToObject(o, "format", JSONL_FORMAT);
                    cJSON_AddStringToObject(o, "model", model_name);
                    cJSON_AddStringToObject(o, "settings", settings);
                    cJSON_AddStringToObject(o, "data", eval_basename(a.data_path));
                    cJSON_AddStringToObject(o, "id", it->key_id);
                    cJSON_AddNumberToObject(o, "line", (double)line);
                    cJSON_AddStringToObject(o, "sample_hash", it->hash);
                    cJSON_AddNumberToObject(o, "ctx", (double)ctx);
                    cJSON_AddStringToObject(o, "method", r->label);
                    cJSON_AddStringToObject(o, "attention", attention_kind_name(r->attention));
                    cJSON_AddNumberToObject(o, "budget", (double)r->budget);
                    cJSON_AddNumberToObject(o, "prompt_tokens", (double)n_prompt);
                    cJSON_AddNumberToObject(o, "cut_tokens", (double)it->cut);
                    cJSON_AddNumberToObject(o, "max_new_tokens", (double)max_new);
                    for (int k = 0; k < it->s->n_answers; k++) cJSON_AddItemToArray(ans, cJSON_CreateString(it->s->answers[k]));
                    cJSON_AddItemToObject(o, "answers", ans);
                    cJSON_AddStringToObject(o, "output", output);
                    cJSON_AddNumberToObject(o, "score", score);
                    cJSON_AddNumberToObject(o, "new_tokens", (double)n_new);
                    cJSON_AddNumberToObject(o, "decode_seconds", sec_max);
                    cJSON_AddNumberToObject(o, "kv_bytes", kv_max);
                    cJSON_AddNumberToObject(o, "ranks", cm->size);
                    char *text = cJSON_PrintUnformatted(o);
                    // One line per run, flushed at once: a killed run loses at most the one in flight.
                    fprintf(jsonl, "%s\n", text);
                    if (fflush(jsonl)) cli_die("%s: write error: %s", jsonl_path, strerror(errno));
                    free(text);
                    cJSON_Delete(o);
                    char key[512];
                    result_key(key, sizeof(key), it->key_id, it->hash, r->label, r->budget);
                    const eval_result res = {.score = score, .kv_bytes = kv_max, .seconds = sec_max, .new_tokens = n_new};
                    eval_index_put(&ix, key, &res);
                    if (line_len < (int)sizeof(text_line))
                        line_len += snprintf(text_line + line_len, sizeof(text_line) - (size_t)line_len, " %s@%lld %.2f",
                                             r->label, (long long)r->budget, score);
                    free(output);
                }
                eval_progress_step(&prog, 1, (double)n_prompt, status);
            }
            eval_progress_line(&prog, text_line);
            if (!rank0) free(ids);
        }
        eval_progress_end(&prog);
        free(answer);
        free(prompt_logits);
        engine_destroy(e);
    }
    if (rank0)
        fprintf(stderr, "recall: eval: %lld decode steps, logits bitwise identical on all ranks (%d rank%s, hash %016llx)\n",
                (long long)n_steps, cm->size, cm->size > 1 ? "s" : "", (unsigned long long)all_hash);
    if (rank0) {
        if (fclose(jsonl)) cli_die("%s: write error", jsonl_path);
        report(&a, &ix, runs, n_runs, items, n_items, n_skipped, ctx, cm->size, command);
        fprintf(stderr, "recall: eval: results in %s.{jsonl,csv,json}\n", a.c.out_prefix);
    }
    for (int64_t i = 0; rank0 && i < n_items; i++) free(items[i].ids);
    free(items);
    free(todo);
    free(runs);
    free(a.tmpl);
    custom_data_free(&data);
    eval_index_free(&ix);
    tokenizer_free(tok);
    model_free(&m);
    comm_destroy(cm);
    return 0;
}
