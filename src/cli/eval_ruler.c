// recall eval ruler: RULER-style synthetic tasks (src/eval/ruler.h) answered
// greedily by every attention method from one prefill per sample.
//
// Per sample, every rank: prefill the prompt with full attention (the prompt
// cache is retained), keep the logits (the first answer token comes from them,
// so it is the same for every method), then for each method x budget: truncate
// to the prompt, switch the method, and decode greedily until end of
// generation or the task's token budget. A KV-compression policy compresses
// the prompt at the first decode step. All ranks compute the same logits bit
// for bit, so they choose the same tokens without talking; a fingerprint of
// every run's logits is compared across ranks. Rank 0 generates the samples,
// scores the answers and writes the files.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backend/kv_format.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "cli/eval_common.h"
#include "core/hash.h"
#include "eval/needle_trace.h"
#include "eval/ruler.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_SAMPLES 25
#define DEFAULT_SEED 42
#define DEFAULT_CTX 4096
#define DEFAULT_OUT "ruler"  // file stem in the run's own directory (eval_claim_out)
#define MAX_TASKS 32
#define JSONL_FORMAT "recall-eval-ruler-1"

static void usage(FILE *out) {
    int n_tasks = 0;
    const char *const *names = ruler_task_names(&n_tasks);
    fprintf(out,
            "usage: recall eval ruler -m MODEL [options]\n"
            "\n"
            "RULER-style long-context tasks (needle in a haystack, variable tracking, common/frequent\n"
            "word extraction), generated with fixed seeds and the model's own tokenizer, answered\n"
            "greedily by each --attention method and scored as RULER does (the fraction of expected\n"
            "answers found in the output). Each sample is prefilled once; every method decodes from\n"
            "that prefill. The prompt plus the task's answer budget fill --ctx (RULER's convention).\n"
            "\n");
    eval_common_usage(out, "4096", "eval-ruler", DEFAULT_OUT);
    fprintf(out,
            "      --tasks LIST        tasks, comma-separated (default: all):\n"
            "                          ");
    for (int i = 0; i < n_tasks; i++) fprintf(out, "%s%s", names[i], i + 1 < n_tasks ? (i % 4 == 3 ? ",\n                          " : ", ") : "\n");
    fprintf(out,
            "      --samples N         samples per task and context length (default %d)\n"
            "      --seed S            sample seed: a sample is a function of (task, length, seed, index)\n"
            "                          (default %d)\n"
            "      --prose FILE        essay haystack (default $RECALL_CACHE/prose/austen.txt, RECALL_CACHE\n"
            "                          defaulting to ~/.cache/recall; launch/setup.sh extracts it)\n"
            "      --no-chat           plain prompts; by default the model's chat template wraps each one\n"
            "                          when the model has one\n"
            "      --max-new-tokens N  cap on the answer length (default: the task's RULER budget: niah 128,\n"
            "                          vt 30, cwe 120, fwe 50)\n"
            "      --resume            skip the (ctx, task, sample, method, budget) results already in\n"
            "                          PREFIX.jsonl (the default)\n"
            "      --fresh             start PREFIX.jsonl over instead\n"
            "      --trace-needle FILE JSON lines of every run this invocation decodes: at every step, per\n"
            "                          layer and KV head, whether each answer token in the prompt (niah: inside\n"
            "                          its needle; other tasks: every occurrence) is in the recycled cache or\n"
            "                          the policy's kept set, its rank among the scores that chose it, and\n"
            "                          the attention full attention gives it (schema: README, 'Needle\n"
            "                          tracing'); runs resumed from PREFIX.jsonl are not decoded, not traced\n"
            "  -h, --help              this help\n"
            "\n"
            "Output (rank 0): a table on stdout of accuracy %% per task, the mean over tasks and the mean\n"
            "relative to full attention, per context length, method and budget; PREFIX.jsonl, one line\n"
            "per (ctx, task, sample, method, budget) written as soon as it is done (prompt tokens,\n"
            "answers, output, score, decode seconds, KV bytes held on the largest rank); PREFIX.csv\n"
            "(ctx, method, budget, task, n, accuracy; task \"mean\" is the mean over tasks) and\n"
            "PREFIX.json (the summary). Progress goes to stderr.\n",
            DEFAULT_SAMPLES, DEFAULT_SEED);
}

static void default_prose_path(char *buf, size_t cap) {
    const char *cache = getenv("RECALL_CACHE"), *home = getenv("HOME");
    if (cache && *cache) snprintf(buf, cap, "%s/prose/austen.txt", cache);
    else snprintf(buf, cap, "%s/.cache/recall/prose/austen.txt", home && *home ? home : ".");
}

static int parse_tasks(const char *arg, const char **out) {
    int n_all = 0, n = 0;
    const char *const *all = ruler_task_names(&n_all);
    char *copy = strdup(arg), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!ruler_task_known(tok)) {
            char valid[512] = "";
            for (int i = 0; i < n_all; i++) {
                size_t len = strlen(valid);
                snprintf(valid + len, sizeof(valid) - len, "%s%s", i ? ", " : "", all[i]);
            }
            cli_die("--tasks: unknown task '%s' (valid: %s)", tok, valid);
        }
        int i = 0;
        while (strcmp(all[i], tok)) i++;  // the library's own copy of the name
        for (int j = 0; j < n; j++)
            if (out[j] == all[i]) cli_die("--tasks: '%s' is listed twice", tok);
        if (n == MAX_TASKS) cli_die("--tasks: more than %d tasks", MAX_TASKS);
        out[n++] = all[i];
    }
    free(copy);
    if (n == 0) cli_die("--tasks: expected a comma-separated list of tasks");
    return n;
}

static void result_key(char *buf, size_t cap, uint64_t seed, int64_t ctx, const char *task, int64_t sample,
                       const char *method, int64_t budget) {
    snprintf(buf, cap, "%llu|%lld|%s|%lld|%s|%lld", (unsigned long long)seed, (long long)ctx, task, (long long)sample,
             method, (long long)budget);
}

static int json_int(const cJSON *o, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return 0;
    *out = (int64_t)v->valuedouble;
    return 1;
}

static int json_num(const cJSON *o, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return 0;
    *out = v->valuedouble;
    return 1;
}

typedef struct load_ctx {
    const char *path, *model_name, *settings;
    eval_index *ix;
} load_ctx;

static void load_line(const cJSON *o, int64_t lineno, void *user) {
    const load_ctx *lc = user;
    const char *path = lc->path;
    const cJSON *task = o ? cJSON_GetObjectItemCaseSensitive(o, "task") : NULL;
    const cJSON *method = o ? cJSON_GetObjectItemCaseSensitive(o, "method") : NULL;
    const cJSON *model = o ? cJSON_GetObjectItemCaseSensitive(o, "model") : NULL;
    const cJSON *sets = o ? cJSON_GetObjectItemCaseSensitive(o, "settings") : NULL;
    int64_t seed, ctx, sample, budget, new_tokens = 0;
    eval_result r = {0};
    if (!o || !cJSON_IsString(task) || !cJSON_IsString(method) || !cJSON_IsString(model) || !cJSON_IsString(sets) ||
        !json_int(o, "seed", &seed) || !json_int(o, "ctx", &ctx) || !json_int(o, "sample", &sample) ||
        !json_int(o, "budget", &budget) || !json_num(o, "score", &r.score))
        cli_die("%s:%lld: not a result line of 'recall eval ruler' (--fresh starts the file over)", path,
                (long long)lineno);
    if (strcmp(model->valuestring, lc->model_name))
        cli_die("%s:%lld: results of another model (%s, not %s): use --fresh or another --out", path,
                (long long)lineno, model->valuestring, lc->model_name);
    if (strcmp(sets->valuestring, lc->settings))
        cli_die("%s:%lld: results made with other settings (%s, not %s): use --fresh or another --out", path,
                (long long)lineno, sets->valuestring, lc->settings);
    json_num(o, "kv_bytes", &r.kv_bytes);
    json_num(o, "decode_seconds", &r.seconds);
    json_int(o, "new_tokens", &new_tokens);
    r.new_tokens = new_tokens;
    char key[512];
    result_key(key, sizeof(key), (uint64_t)seed, ctx, task->valuestring, sample, method->valuestring, budget);
    eval_index_put(lc->ix, key, &r);
}

// Reads the finished runs of PREFIX.jsonl into ix (eval_jsonl_each cuts off
// an unfinished last line); any other bad line stops with its line number,
// and so does a line made with another model or other settings (those change
// the answers, not the key).
static int64_t load_jsonl(const char *path, const char *model_name, const char *settings, eval_index *ix) {
    load_ctx lc = {.path = path, .model_name = model_name, .settings = settings, .ix = ix};
    return eval_jsonl_each(path, load_line, &lc);
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

typedef struct ruler_args {
    eval_common_opts c;
    const char *tasks[MAX_TASKS];
    int n_tasks;
    int64_t samples, max_new_override;
    uint64_t seed;
    const char *prose_path;
    int no_chat, fresh;
    const char *trace_needle;
} ruler_args;

// Builds sample s of task t fitted to ctx minus its answer budget (*budget:
// the task's budget once known, 0 before; RULER's own, learned from the first
// sample). Dies when the context has no room for it.
static void fit_sample(const ruler_args *a, int t, int64_t ctx, int64_t s, int64_t *budget, const tokenizer *tok,
                       const gguf_file *chat, const char *prose, size_t prose_len, ruler_sample *sample) {
    rc_err err = {{0}};
    for (int attempt = 0; attempt < 2; attempt++) {
        const int64_t b = *budget ? *budget : 128;
        ruler_gen_opts go = {.task = a->tasks[t], .target_tokens = ctx - b, .seed = a->seed, .index = s,
                             .depth = -1.0, .tok = tok, .chat = chat, .prose = prose, .prose_len = prose_len};
        if (go.target_tokens < 1 || ruler_generate(&go, sample, &err))
            cli_die("%s at --ctx %lld: %s", a->tasks[t], (long long)ctx,
                    go.target_tokens < 1 ? "no room for the prompt beside the answer" : err.msg);
        if (sample->max_new_tokens == b) break;
        *budget = sample->max_new_tokens;  // first sample of the task: fit it again
        ruler_sample_free(sample);
    }
    *budget = sample->max_new_tokens;
}

// Aggregates the results of the requested grid: prints the table, writes
// PREFIX.csv and PREFIX.json.
static void report(const ruler_args *a, const eval_index *ix, eval_run *const *runs, const int *n_runs,
                   const char *model_path, int n_ranks, const char *command) {
    const eval_common_opts *c = &a->c;
    char path[4096];
    FILE *csv = eval_open_output(c->out_prefix, ".csv", "w", path, sizeof(path));
    fprintf(csv, "ctx,method,budget,task,n,accuracy\n");
    cJSON *root = cJSON_CreateObject(), *results = cJSON_CreateArray(), *tasks = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "format", "recall-eval-ruler-summary-1");
    cJSON_AddStringToObject(root, "command", command);
    cJSON_AddStringToObject(root, "model", model_path);
    cJSON_AddNumberToObject(root, "ranks", n_ranks);
    cJSON_AddNumberToObject(root, "seed", (double)a->seed);
    cJSON_AddNumberToObject(root, "samples", (double)a->samples);
    for (int t = 0; t < a->n_tasks; t++) cJSON_AddItemToArray(tasks, cJSON_CreateString(a->tasks[t]));
    cJSON_AddItemToObject(root, "tasks", tasks);

    printf("# recall eval ruler: %s, %d rank%s, seed %llu, %lld sample%s per task\n", model_path, n_ranks,
           n_ranks > 1 ? "s" : "", (unsigned long long)a->seed, (long long)a->samples, a->samples > 1 ? "s" : "");
    int width[MAX_TASKS];
    for (int t = 0; t < a->n_tasks; t++) width[t] = strlen(a->tasks[t]) > 6 ? (int)strlen(a->tasks[t]) : 6;
    char key[512];
    for (int ci = 0; ci < c->n_ctx; ci++) {
        const int64_t ctx = c->ctx[ci];
        printf("#\n# ctx %lld: accuracy %% (mean over samples); mean: over tasks; rel: mean / full's mean\n# %-30s %7s",
               (long long)ctx, "method", "budget");
        for (int t = 0; t < a->n_tasks; t++) printf(" %*s", width[t], a->tasks[t]);
        printf(" %7s %7s %8s %9s\n", "mean", "rel", "KV MiB", "s/answer");
        double full_mean = -1.0;
        for (int ri = 0; ri < n_runs[ci]; ri++) {
            const eval_run *r = &runs[ci][ri];
            double acc[MAX_TASKS], sum_mean = 0.0, kv = 0.0, secs = 0.0;
            int64_t n_task[MAX_TASKS], n_all = 0, n_with = 0;
            for (int t = 0; t < a->n_tasks; t++) {
                double sum = 0.0;
                n_task[t] = 0;
                for (int64_t s = 0; s < a->samples; s++) {
                    result_key(key, sizeof(key), a->seed, ctx, a->tasks[t], s, r->label, r->budget);
                    const eval_result *res = eval_index_get(ix, key);
                    if (!res) continue;
                    sum += res->score;
                    kv += res->kv_bytes;
                    secs += res->seconds;
                    n_task[t]++;
                }
                acc[t] = n_task[t] ? 100.0 * sum / (double)n_task[t] : 0.0;
                n_all += n_task[t];
                if (n_task[t]) {
                    sum_mean += acc[t];
                    n_with++;
                }
            }
            const double mean = n_with ? sum_mean / (double)n_with : 0.0;
            if (r->attention == ATTENTION_FULL && full_mean < 0 && n_with) full_mean = mean;
            const double kv_mib = n_all ? kv / (double)n_all / (1024.0 * 1024.0) : 0.0;
            const double sec_mean = n_all ? secs / (double)n_all : 0.0;
            printf("  %-30s %7lld", r->label, (long long)r->budget);
            for (int t = 0; t < a->n_tasks; t++) {
                if (n_task[t]) printf(" %*.1f", width[t], acc[t]);
                else printf(" %*s", width[t], "-");
            }
            char rel[16] = "-";
            if (r->attention != ATTENTION_FULL && full_mean > 0 && n_with)
                snprintf(rel, sizeof(rel), "%.1f%%", 100.0 * mean / full_mean);
            if (n_with) printf(" %7.1f %7s %8.1f %9.2f\n", mean, rel, kv_mib, sec_mean);
            else printf(" %7s %7s %8s %9s\n", "-", "-", "-", "-");

            cJSON *o = cJSON_CreateObject(), *acc_o = cJSON_CreateObject(), *n_o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "ctx", (double)ctx);
            cJSON_AddStringToObject(o, "method", r->label);
            cJSON_AddStringToObject(o, "attention", attention_kind_name(r->attention));
            cJSON_AddNumberToObject(o, "budget", (double)r->budget);
            for (int t = 0; t < a->n_tasks; t++) {
                if (n_task[t]) cJSON_AddNumberToObject(acc_o, a->tasks[t], acc[t]);
                cJSON_AddNumberToObject(n_o, a->tasks[t], (double)n_task[t]);
                if (!n_task[t]) continue;
                fprintf(csv, "%lld,", (long long)ctx);
                cli_csv_field(csv, r->label);
                fprintf(csv, ",%lld,%s,%lld,%.4f\n", (long long)r->budget, a->tasks[t], (long long)n_task[t], acc[t]);
            }
            cJSON_AddItemToObject(o, "accuracy", acc_o);
            cJSON_AddItemToObject(o, "n", n_o);
            if (n_with) {
                fprintf(csv, "%lld,", (long long)ctx);
                cli_csv_field(csv, r->label);
                fprintf(csv, ",%lld,mean,%lld,%.4f\n", (long long)r->budget, (long long)n_all, mean);
                cJSON_AddNumberToObject(o, "mean", mean);
                if (r->attention != ATTENTION_FULL && full_mean > 0)
                    cJSON_AddNumberToObject(o, "relative_to_full", mean / full_mean);
                cJSON_AddNumberToObject(o, "kv_mib_mean", kv_mib);
                cJSON_AddNumberToObject(o, "decode_seconds_mean", sec_mean);
            }
            cJSON_AddItemToArray(results, o);
        }
    }
    eval_finish_outputs(c->out_prefix, csv, path, root, results, command, n_ranks);
}

// The trace would be interleaved with the results the run resumes from.
static void trace_not_an_output(const char *trace, const char *prefix) {
    static const char *const ext[] = {".jsonl", ".csv", ".json"};
    struct stat st_trace;
    const int trace_exists = stat(trace, &st_trace) == 0;
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s%s", prefix, ext[i]);
        struct stat st;
        if (!strcmp(path, trace) ||
            (trace_exists && stat(path, &st) == 0 && st.st_dev == st_trace.st_dev && st.st_ino == st_trace.st_ino))
            cli_die("--trace-needle %s is the run's own %s output (--out %s): give the trace another file", trace,
                    ext[i], prefix);
    }
}

// --trace-needle: the sample's answer tokens in the prompt. Rank 0 finds them
// (niah: each answer inside its needle; other tasks: every occurrence) and
// sends them to the other ranks, which hold only the token ids.
static void locate_needles(needle_trace *nt, comm *cm, const ruler_sample *sample, const tokenizer *tok,
                           const int32_t *ids, int64_t n_ids, const char *what) {
    rc_err err = {{0}};
    int64_t n = 0, buf[2 * NEEDLE_TRACE_MAX_POSITIONS];
    if (sample) {
        int truncated = 0;
        n = needle_trace_locate(nt, tok, ids, n_ids, (const char *const *)sample->answers, sample->n_answers,
                                (const char *const *)sample->needles, sample->n_needles, &truncated);
        if (n == 0) fprintf(stderr, "recall: note: %s: no answer found in the prompt; its trace has no positions\n", what);
        if (truncated)
            fprintf(stderr, "recall: note: %s: more than %d answer tokens in the prompt; tracing the first %d\n", what,
                    NEEDLE_TRACE_MAX_POSITIONS, NEEDLE_TRACE_MAX_POSITIONS);
    }
    if (cm->size == 1) return;
    if (comm_bcast(cm, &n, sizeof(n), 0, &err)) cli_die_err(&err);
    if (sample) n = needle_trace_positions(nt, buf, buf + NEEDLE_TRACE_MAX_POSITIONS);
    if (comm_bcast(cm, buf, sizeof(buf), 0, &err)) cli_die_err(&err);
    if (!sample) {
        int which[NEEDLE_TRACE_MAX_POSITIONS];
        for (int64_t i = 0; i < n; i++) which[i] = (int)buf[NEEDLE_TRACE_MAX_POSITIONS + i];
        if (needle_trace_set_positions(nt, buf, which, n, &err)) cli_die_err(&err);
    }
}

static void begin_trace(needle_trace *nt, const engine *e, const eval_run *r, int64_t ctx, const char *task,
                        int64_t sample, double depth, int64_t n_prompt) {
    engine_opts eo = {.attention = r->attention, .recycle = r->ro, .policy = r->po};
    char desc[256], extra[512];
    cli_attention_describe(&eo, desc, sizeof(desc));
    snprintf(extra, sizeof(extra), "{\"ctx\":%lld,\"task\":\"%s\",\"sample\":%lld,\"budget\":%lld,\"depth\":%.6g}",
             (long long)ctx, task, (long long)sample, (long long)r->budget, depth);
    needle_trace_begin(nt, e, n_prompt, r->label, desc, extra, r->ro.group_agg, r->ro.pool_kernel);
}

typedef struct trace_step_ctx {
    needle_trace *nt;
    const engine *e;
} trace_step_ctx;

static void trace_step(void *user, int64_t step, int32_t token) {
    trace_step_ctx *c = user;
    needle_trace_step(c->nt, c->e, step, token);
}

int eval_ruler_main(int argc, char **argv) {
    ruler_args a = {.samples = DEFAULT_SAMPLES, .seed = DEFAULT_SEED};
    eval_common_init(&a.c);
    const char *tasks_arg = NULL;
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    enum { OPT_TASKS = EVAL_OPT_FIRST_COMMAND, OPT_SAMPLES, OPT_SEED, OPT_PROSE, OPT_NO_CHAT, OPT_MAX_NEW, OPT_RESUME,
           OPT_FRESH, OPT_TRACE_NEEDLE };
    static const struct option opts[] = {
        EVAL_COMMON_OPTIONS,
        {"tasks", required_argument, 0, OPT_TASKS},      {"samples", required_argument, 0, OPT_SAMPLES},
        {"seed", required_argument, 0, OPT_SEED},        {"prose", required_argument, 0, OPT_PROSE},
        {"no-chat", no_argument, 0, OPT_NO_CHAT},        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW},
        {"resume", no_argument, 0, OPT_RESUME},          {"fresh", no_argument, 0, OPT_FRESH},
        {"trace-needle", required_argument, 0, OPT_TRACE_NEEDLE},
        {"help", no_argument, 0, 'h'},                   {0, 0, 0, 0}};
    static const char optstring[] = ":m:h";
    cli_config_merge("eval ruler", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case OPT_TASKS: tasks_arg = optarg; break;
        case OPT_SAMPLES: a.samples = cli_parse_int("--samples", optarg, 1, 100000); break;
        case OPT_SEED: a.seed = (uint64_t)cli_parse_int("--seed", optarg, 0, (int64_t)1 << 52); break;
        case OPT_PROSE: a.prose_path = optarg; break;
        case OPT_NO_CHAT: a.no_chat = 1; break;
        case OPT_MAX_NEW: a.max_new_override = cli_parse_int("--max-new-tokens", optarg, 1, 1 << 20); break;
        case OPT_RESUME: a.fresh = 0; break;
        case OPT_FRESH: a.fresh = 1; break;
        case OPT_TRACE_NEEDLE: a.trace_needle = optarg; break;
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall eval ruler --help')", argv[optind - 1]);
        default:
            if (eval_common_option(c, optarg, &a.c)) break;
            cli_die("unknown option '%s' (see 'recall eval ruler --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s' (see 'recall eval ruler --help')", argv[optind]);
    if (tasks_arg) {
        a.n_tasks = parse_tasks(tasks_arg, a.tasks);
    } else {
        const char *const *all = ruler_task_names(&a.n_tasks);
        if (a.n_tasks > MAX_TASKS) a.n_tasks = MAX_TASKS;
        for (int t = 0; t < a.n_tasks; t++) a.tasks[t] = all[t];
    }
    eval_common_finish(&a.c, "recall eval ruler", DEFAULT_CTX, DEFAULT_OUT);
    method_spec methods[METHOD_LIST_MAX];
    const int n_methods = method_list_parse(a.c.methods_arg, &a.c.base, a.c.recycle_k_given, 0, methods, METHOD_LIST_MAX);
    char command[4096], prose_default[4096];
    cli_command_line("recall eval ruler", argc, argv, command, sizeof(command));
    if (!a.prose_path) {
        default_prose_path(prose_default, sizeof(prose_default));
        a.prose_path = prose_default;
    }

    model m;
    cli_load_model(cm, &m, a.c.model_path);
    eval_check_ctx(&a.c, &m.cfg);
    const int n_shipped_budgets = method_list_head_scores(methods, n_methods, &m);
    // The prompt is fitted to within RULER_LENGTH_TOLERANCE of ctx minus the answer budget.
    const int64_t max_ctx = eval_max_ctx(&a.c);
    const int64_t engine_n_ctx = max_ctx + (int64_t)(RULER_LENGTH_TOLERANCE * (double)max_ctx) + 8;
    eval_run *runs[EVAL_MAX_CTX];
    int n_runs[EVAL_MAX_CTX];
    for (int ci = 0; ci < a.c.n_ctx; ci++) {
        runs[ci] = malloc(EVAL_MAX_RUNS * sizeof(eval_run));
        n_runs[ci] = eval_runs_for_ctx(methods, n_methods, &a.c.budgets, a.c.ctx[ci], engine_n_ctx, &m.cfg, runs[ci]);
    }

    // Rank 0 decides what is left to do; every rank gets the same list.
    const int64_t n_cells = (int64_t)a.c.n_ctx * a.n_tasks * a.samples;
    int stride = 1;  // runs per cell in `todo`: the most any context length has
    for (int ci = 0; ci < a.c.n_ctx; ci++) stride = n_runs[ci] > stride ? n_runs[ci] : stride;
    uint8_t *todo = calloc((size_t)(n_cells * stride), 1);
    if (!todo) cli_die("out of memory for the list of %lld samples", (long long)n_cells);
    eval_index ix;
    eval_index_init(&ix);
    const char *model_name = eval_basename(a.c.model_path);
    // What else shapes an answer besides the result key (seed, ctx, task, sample, method, budget).
    // A recycled method's span by default (HeadKV budgets) is part of the
    // answer too: results from before that default must not be resumed as its.
    int64_t default_span = 0;
    for (int ci = 0; ci < a.c.n_ctx; ci++)
        for (int ri = 0; ri < n_runs[ci]; ri++)
            if (runs[ci][ri].attention == ATTENTION_RECYCLED && !runs[ci][ri].spec->span_explicit &&
                runs[ci][ri].ro.span > default_span)
                default_span = runs[ci][ri].ro.span;
    char settings[256], span_setting[48] = "";
    if (default_span > 0) snprintf(span_setting, sizeof(span_setting), " recycled_span=%lld", (long long)default_span);
    snprintf(settings, sizeof(settings), "kv=%s chat=%s prose=%s max_new=%lld%s%s",
             kv_elem_name(a.c.kv_elem), a.no_chat ? "off" : "model", eval_basename(a.prose_path),
             (long long)a.max_new_override, n_shipped_budgets ? " recycled_budgets=shipped_headkv" : "", span_setting);
    char jsonl_path[4096];
    FILE *jsonl = NULL;
    int64_t n_total = 0, n_todo = 0;
    double work_total = 0.0;
    if (rank0) {
        // Without --out the run gets a new directory (eval_claim_out, below): nothing to resume.
        if (!a.c.out_auto && !a.fresh) {
            snprintf(jsonl_path, sizeof(jsonl_path), "%s.jsonl", a.c.out_prefix);
            load_jsonl(jsonl_path, model_name, settings, &ix);
        }
        char key[512];
        for (int ci = 0; ci < a.c.n_ctx; ci++)
            for (int t = 0; t < a.n_tasks; t++)
                for (int64_t s = 0; s < a.samples; s++) {
                    const int64_t cell = ((int64_t)ci * a.n_tasks + t) * a.samples + s;
                    for (int ri = 0; ri < n_runs[ci]; ri++) {
                        const eval_run *r = &runs[ci][ri];
                        result_key(key, sizeof(key), a.seed, a.c.ctx[ci], a.tasks[t], s, r->label, r->budget);
                        todo[cell * stride + ri] = eval_index_get(&ix, key) == NULL;
                    }
                }
    }
    if (comm_bcast(cm, todo, (size_t)(n_cells * stride), 0, &err)) cli_die_err(&err);
    for (int ci = 0; ci < a.c.n_ctx; ci++)
        for (int64_t k = 0; k < (int64_t)a.n_tasks * a.samples; k++) {
            const uint8_t *row = todo + (((int64_t)ci * a.n_tasks * a.samples) + k) * stride;
            for (int ri = 0; ri < n_runs[ci]; ri++) {
                n_total++;
                n_todo += row[ri];
                work_total += row[ri] ? (double)a.c.ctx[ci] : 0.0;
            }
        }
    char *prose = NULL;
    size_t prose_len = 0;
    int needs_prose = 0;
    for (int t = 0; t < a.n_tasks; t++) needs_prose |= ruler_task_needs_prose(a.tasks[t]);
    if (rank0 && n_todo > 0 && needs_prose && ruler_load_prose(a.prose_path, &prose, &prose_len, &err))
        cli_die_err(&err);
    tokenizer *tok = NULL;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);
    const gguf_file *chat = !a.no_chat && gguf_find(&m.file, "tokenizer.chat_template") ? &m.file : NULL;
    // Before any output exists: every task's first sample must fit the
    // shortest context (a longer one has more room).
    if (rank0 && n_todo > 0) {
        int64_t min_ctx = a.c.ctx[0];
        for (int ci = 1; ci < a.c.n_ctx; ci++) min_ctx = a.c.ctx[ci] < min_ctx ? a.c.ctx[ci] : min_ctx;
        for (int t = 0; t < a.n_tasks; t++) {
            int64_t budget = 0;
            ruler_sample sample = {0};
            fit_sample(&a, t, min_ctx, 0, &budget, tok, chat, prose, prose_len, &sample);
            ruler_sample_free(&sample);
        }
    }
    if (rank0 && a.trace_needle && !a.c.out_auto) trace_not_an_output(a.trace_needle, a.c.out_prefix);
    if (rank0) {
        eval_claim_out(&a.c);
        snprintf(jsonl_path, sizeof(jsonl_path), "%s.jsonl", a.c.out_prefix);
    }
    if (rank0)
        fprintf(stderr, "recall: eval: %lld run%s (%d context%s x %d task%s x %lld sample%s x methods/budgets), %lld "
                "already in %s, %lld to run\n", (long long)n_total, n_total == 1 ? "" : "s", a.c.n_ctx,
                a.c.n_ctx > 1 ? "s" : "", a.n_tasks, a.n_tasks > 1 ? "s" : "", (long long)a.samples,
                a.samples > 1 ? "s" : "", (long long)(n_total - n_todo), jsonl_path, (long long)n_todo);
    if (rank0) method_list_budgets_note(methods, n_methods, &m);
    // Opened only now, so that no earlier error can empty the file (--fresh).
    if (rank0) jsonl = eval_open_output(a.c.out_prefix, ".jsonl", a.fresh ? "w" : "a", jsonl_path, sizeof(jsonl_path));

    uint64_t all_hash = FNV1A_INIT;
    int64_t n_steps = 0;
    eval_progress prog;
    eval_progress_init(&prog, rank0, a.c.progress, n_todo, work_total);
    needle_trace *nt = NULL;
    FILE *nf = NULL;
    if (a.trace_needle && n_todo > 0) {
        if (rank0 && !(nf = fopen(a.trace_needle, "w"))) cli_die("%s: cannot open for writing", a.trace_needle);
        if (!(nt = needle_trace_create(nf, cm, &m.cfg, &err))) cli_die_err(&err);
        a.c.on_attention_scores = needle_trace_on_scores;
        a.c.hook_user = nt;
    }
    if (n_todo > 0) {
        engine *e = eval_engine_create(&a.c, &m, cm, engine_n_ctx);
        const int64_t V = m.cfg.n_vocab;
        float *prompt_logits = malloc((size_t)V * sizeof(float));
        int32_t *answer = malloc((size_t)engine_n_ctx * sizeof(int32_t));
        int64_t gen_budget[MAX_TASKS] = {0};  // the task's answer budget, once known
        for (int ci = 0; ci < a.c.n_ctx; ci++) {
            const int64_t ctx = a.c.ctx[ci];
            for (int t = 0; t < a.n_tasks; t++) {
                for (int64_t s = 0; s < a.samples; s++) {
                    const uint8_t *cell_todo = todo + (((int64_t)ci * a.n_tasks + t) * a.samples + s) * stride;
                    int any = 0;
                    for (int ri = 0; ri < n_runs[ci]; ri++) any |= cell_todo[ri];
                    if (!any) continue;
                    // Rank 0 builds the sample and its tokens; the other ranks only need the ids.
                    ruler_sample sample = {0};
                    int32_t *ids = NULL;
                    int64_t hdr[2] = {0, 0};  // prompt tokens, answer budget
                    if (rank0) {
                        fit_sample(&a, t, ctx, s, &gen_budget[t], tok, chat, prose, prose_len, &sample);
                        size_t n_ids = 0;
                        if (tokenizer_encode(tok, sample.prompt, strlen(sample.prompt), sample.add_bos,
                                             sample.parse_special, &ids, &n_ids, &err))
                            cli_die_err(&err);
                        hdr[0] = (int64_t)n_ids;
                        hdr[1] = a.max_new_override ? a.max_new_override : sample.max_new_tokens;
                    }
                    if (comm_bcast(cm, hdr, sizeof(hdr), 0, &err)) cli_die_err(&err);
                    const int64_t n_prompt = hdr[0];
                    int64_t max_new = hdr[1];
                    if (n_prompt < 1 || n_prompt >= engine_n_ctx)
                        cli_die("%s at --ctx %lld: the prompt has %lld tokens, the context holds %lld", a.tasks[t],
                                (long long)ctx, (long long)n_prompt, (long long)engine_n_ctx);
                    if (n_prompt + max_new - 1 > engine_n_ctx) max_new = engine_n_ctx - n_prompt + 1;
                    if (!rank0) ids = malloc((size_t)n_prompt * sizeof(int32_t));
                    if (comm_bcast(cm, ids, (size_t)n_prompt * sizeof(int32_t), 0, &err)) cli_die_err(&err);

                    prefill_status ps = {.prog = &prog};
                    snprintf(ps.what, sizeof(ps.what), "ctx %lld %s #%lld", (long long)ctx, a.tasks[t], (long long)s);
                    engine_reset(e);
                    if (engine_set_attention(e, ATTENTION_FULL, NULL, NULL, &err)) cli_die_err(&err);
                    if (engine_prefill(e, ids, n_prompt, NULL, prog.bar ? on_prefill : NULL, &ps, &err))
                        cli_die_err(&err);
                    cli_check_logits(engine_logits(e), V, "the prefill of %s (%lld tokens)", ps.what, (long long)n_prompt);
                    memcpy(prompt_logits, engine_logits(e), (size_t)V * sizeof(float));
                    uint64_t hash = fnv1a(FNV1A_INIT, prompt_logits, (size_t)V * sizeof(float));
                    const int32_t first = eval_argmax(prompt_logits, V);
                    if (nt) locate_needles(nt, cm, rank0 ? &sample : NULL, tok, ids, n_prompt, ps.what);
                    char line[1024];
                    int line_len = snprintf(line, sizeof(line), "ctx %lld %s #%lld (%lld tokens):", (long long)ctx,
                                            a.tasks[t], (long long)s, (long long)n_prompt);
                    for (int ri = 0; ri < n_runs[ci]; ri++) {
                        if (!cell_todo[ri]) continue;
                        const eval_run *r = &runs[ci][ri];
                        char status[160];
                        snprintf(status, sizeof(status), "%s: %s budget %lld", ps.what, r->label, (long long)r->budget);
                        eval_progress_status(&prog, status);
                        const double t0 = cli_now();
                        if (engine_truncate(e, n_prompt, &err) || eval_set_run(e, r, &err)) cli_die_err(&err);
                        uint64_t run_hash = hash;
                        trace_step_ctx tsc = {.nt = nt, .e = e};
                        if (nt) begin_trace(nt, e, r, ctx, a.tasks[t], s, rank0 ? sample.depth : 0.0, n_prompt);
                        const int64_t n_new = eval_decode_greedy_steps(e, tok, first, max_new, answer, &run_hash,
                                                                       nt ? trace_step : NULL, &tsc);
                        if (nt) needle_trace_end(nt, tok, answer, n_new);
                        const double secs = cli_now() - t0;
                        n_steps += n_new;
                        all_hash = fnv1a(all_hash, &run_hash, sizeof(run_hash));
                        double kv_max, sec_max;
                        char what[256];
                        snprintf(what, sizeof(what), "ctx %lld %s sample %lld %s", (long long)ctx, a.tasks[t],
                                 (long long)s, r->label);
                        eval_gather_run(cm, run_hash, (double)engine_kv_bytes_used(e), secs, &kv_max, &sec_max, what);
                        if (rank0) {
                            char *output = eval_detokenize(tok, answer, n_new);
                            const double score = ruler_score(&sample, output);
                            cJSON *o = cJSON_CreateObject(), *ans = cJSON_CreateArray();
                            cJSON_AddStringToObject(o, "format", JSONL_FORMAT);
                            cJSON_AddStringToObject(o, "model", model_name);
                            cJSON_AddStringToObject(o, "settings", settings);
                            cJSON_AddNumberToObject(o, "seed", (double)a.seed);
                            cJSON_AddNumberToObject(o, "ctx", (double)ctx);
                            cJSON_AddStringToObject(o, "task", a.tasks[t]);
                            cJSON_AddNumberToObject(o, "sample", (double)s);
                            cJSON_AddStringToObject(o, "method", r->label);
                            cJSON_AddStringToObject(o, "attention", attention_kind_name(r->attention));
                            cJSON_AddNumberToObject(o, "budget", (double)r->budget);
                            cJSON_AddNumberToObject(o, "prompt_tokens", (double)n_prompt);
                            cJSON_AddNumberToObject(o, "depth", sample.depth);
                            cJSON_AddNumberToObject(o, "max_new_tokens", (double)max_new);
                            for (int i = 0; i < sample.n_answers; i++)
                                cJSON_AddItemToArray(ans, cJSON_CreateString(sample.answers[i]));
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
                            result_key(key, sizeof(key), a.seed, ctx, a.tasks[t], s, r->label, r->budget);
                            const eval_result res = {.score = score, .kv_bytes = kv_max, .seconds = sec_max,
                                                     .new_tokens = n_new};
                            eval_index_put(&ix, key, &res);
                            if (line_len < (int)sizeof(line))
                                line_len += snprintf(line + line_len, sizeof(line) - (size_t)line_len, " %s@%lld %.2f",
                                                     r->label, (long long)r->budget, score);
                            free(output);
                        }
                        eval_progress_step(&prog, 1, (double)ctx, status);
                    }
                    eval_progress_line(&prog, line);
                    free(ids);
                    ruler_sample_free(&sample);
                }
            }
        }
        eval_progress_end(&prog);
        needle_trace_free(nt);
        if (nf && fclose(nf)) cli_die("%s: write error", a.trace_needle);
        if (rank0 && nf) fprintf(stderr, "recall: eval: needle trace in %s\n", a.trace_needle);
        free(answer);
        free(prompt_logits);
        engine_destroy(e);
    }
    // Every run's logits were compared across ranks as it finished; this line
    // states it once for the whole evaluation.
    if (rank0)
        fprintf(stderr, "recall: eval: %lld decode steps, logits bitwise identical on all ranks (%d rank%s, hash %016llx)\n",
                (long long)n_steps, cm->size, cm->size > 1 ? "s" : "", (unsigned long long)all_hash);
    if (rank0) {
        if (fclose(jsonl)) cli_die("%s: write error", jsonl_path);
        report(&a, &ix, runs, n_runs, a.c.model_path, cm->size, command);
        fprintf(stderr, "recall: eval: results in %s.{jsonl,csv,json}\n", a.c.out_prefix);
    }
    for (int ci = 0; ci < a.c.n_ctx; ci++) free(runs[ci]);
    free(todo);
    free(prose);
    eval_index_free(&ix);
    tokenizer_free(tok);
    model_free(&m);
    comm_destroy(cm);
    return 0;
}
