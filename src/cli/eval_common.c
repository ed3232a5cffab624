#include "cli/eval_common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/attention_opts.h"
#include "cli/cli.h"
#include "cli/run_dir.h"
#include "core/hash.h"

void eval_common_init(eval_common_opts *o) {
    memset(o, 0, sizeof(*o));
    o->methods_arg = "full";
    o->n_threads = cli_default_threads();
    o->kv_elem = KV_F16;
    o->prefill_block = 512;
    o->base = engine_default_opts();
}

static int parse_budget_list(const char *flag, const char *arg, eval_budgets *b, int absolute) {
    char *copy = strdup(arg), *save = NULL;
    b->n = 0;
    b->absolute = absolute;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (b->n == EVAL_MAX_BUDGETS) cli_die("%s: more than %d values", flag, EVAL_MAX_BUDGETS);
        double v;
        if (absolute) {
            v = (double)cli_parse_int(flag, tok, 1, INT32_MAX);
        } else {
            v = cli_parse_double(flag, tok, 0.0, 1.0);
            if (!(v > 0.0)) cli_die("%s: %s is not above 0 (a fraction of the context, in (0, 1])", flag, tok);
        }
        for (int i = 0; i < b->n; i++)
            if (b->value[i] == v) cli_die("%s: %s is listed twice", flag, tok);
        b->value[b->n++] = v;
    }
    free(copy);
    if (b->n == 0) cli_die("%s: expected a comma-separated list", flag);
    return 1;
}

int eval_common_option(int c, const char *arg, eval_common_opts *o) {
    switch (c) {
    case 'm': o->model_path = arg; return 1;
    case EVAL_OPT_CTX: o->n_ctx = cli_parse_int_list("--ctx", arg, o->ctx, EVAL_MAX_CTX, 16, (int64_t)1 << 24); return 1;
    case EVAL_OPT_BUDGET_RATIO: o->ratio_given = 1; return parse_budget_list("--budget-ratio", arg, &o->budgets, 0);
    case CLI_OPT_KV_BUDGET: o->abs_given = 1; return parse_budget_list("--kv-budget", arg, &o->budgets, 1);
    case EVAL_OPT_THREADS: o->n_threads = (int)cli_parse_int("--threads", arg, 1, 1024); return 1;
    case EVAL_OPT_KV_TYPE: o->kv_elem = cli_parse_kv_type(arg); return 1;
    case EVAL_OPT_PREFILL_BLOCK: o->prefill_block = cli_parse_int("--prefill-block", arg, 1, 1 << 16); return 1;
    case EVAL_OPT_ZIGZAG: o->zigzag = 1; return 1;
    case EVAL_OPT_PROGRESS: o->progress = 1; return 1;
    case EVAL_OPT_OUT:
        if (!*arg) cli_die("--out: expected a path prefix");
        o->out_prefix = arg;
        return 1;
    case EVAL_OPT_CONFIG: return 1;  // read by cli_config_merge
    case CLI_OPT_ATTENTION: o->methods_arg = arg; return 1;
    default:
        if (c == CLI_OPT_RECYCLE_K) o->recycle_k_given = 1;
        return cli_attention_option(c, arg, &o->base);
    }
}

void eval_common_finish(eval_common_opts *o, const char *command, int64_t default_ctx, const char *default_name) {
    if (!o->model_path) cli_die("missing --model (see '%s --help')", command);
    if (o->ratio_given && o->abs_given) cli_die("give --kv-budget or --budget-ratio, not both");
    if (!o->ratio_given && !o->abs_given) {
        o->budgets.n = 1;
        o->budgets.absolute = 0;
        o->budgets.value[0] = EVAL_DEFAULT_BUDGET_RATIO;
    }
    if (o->n_ctx == 0) {
        o->n_ctx = 1;
        o->ctx[0] = default_ctx;
    }
    for (int i = 0; i < o->n_ctx; i++)
        for (int j = 0; j < i; j++)
            if (o->ctx[i] == o->ctx[j]) cli_die("--ctx: %lld is listed twice", (long long)o->ctx[i]);
    if (!o->out_prefix) {
        o->out_auto = 1;
        o->out_name = default_name;
        // "recall eval ruler" -> "eval-ruler"
        const char *s = strncmp(command, "recall ", 7) ? command : command + 7;
        snprintf(o->out_slug, sizeof(o->out_slug), "%s", s);
        for (char *p = o->out_slug; *p; p++)
            if (*p == ' ') *p = '-';
    }
}

void eval_claim_out(eval_common_opts *o) {
    if (!o->out_auto || o->out_prefix) return;
    char dir[4096 - 64];
    run_dir_create(o->out_slug, dir, sizeof(dir));
    snprintf(o->out_buf, sizeof(o->out_buf), "%s/%s", dir, o->out_name);
    o->out_prefix = o->out_buf;
}

void eval_common_usage(FILE *out, const char *default_ctx, const char *slug, const char *default_name) {
    fprintf(out,
            "  -m, --model FILE        GGUF model file (required)\n"
            "      --ctx LIST          context lengths in tokens, comma-separated (default %s); each must fit\n"
            "                          the model's trained context\n"
            "      --attention LIST    methods to compare (default full): full, recycled, streaming, h2o,\n"
            "                          snapkv, pyramidkv, adakv, headkv, each with optional :key=value\n"
            "                          settings as in 'recall bench' (recycled: k, stride, schedule, qc, s,\n"
            "                          agg, pool, budgets, query, qwin, qagg, span; policies: budget,\n"
            "                          window, sinks, kvpool, beta, pbeta, floor), e.g.\n"
            "                          full,recycled:stride=20,recycled:query=window:span=8,snapkv,headkv\n"
            "      --budget-ratio LIST KV budgets as fractions of each context length, in (0, 1]: the\n"
            "                          policies' rows per head and recycled's K; one run per value\n"
            "                          (default %g, i.e. ctx / 8)\n"
            "      --kv-budget LIST    absolute KV budgets in rows per head, instead of --budget-ratio.\n"
            "                          A method's own k= / budget= (and --recycle-k for recycled) fixes its\n"
            "                          budget: it runs once, as full does\n"
            "      --threads N         CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
            "      --kv-type TYPE      KV cache type: f16 (default), f32, q8_0 or q4_0 (GGML blocks;\n"
            "                          the block types need a head_dim that is a multiple of 32)\n"
            "      --prefill-block N   prompt tokens per prefill block (default 512)\n"
            "      --zigzag            several ranks: two prompt chunks per rank (see 'recall generate --help')\n"
            "      --out PREFIX        write PREFIX.csv, PREFIX.json (and more, below); the directory is\n"
            "                          created when missing. Default: a new directory per run,\n"
            "                          " RUN_DIR_ROOT "/%s-DATE-TIME/%s.*, so that no run overwrites another's\n"
            "                          files; to resume a run, name its PREFIX with --out\n"
            "      --progress          progress bar on stderr even when it is not a terminal (on a terminal\n"
            "                          it is the default; otherwise one line per finished item)\n"
            "      --config FILE       read flags from FILE: 'key = value' lines whose keys are the long flags\n"
            "                          (flags on the command line win; at most 1 MiB)\n"
            "      --recycle-*, --kv-window, --kv-sinks, --kv-pool, --headkv-beta, --pyramid-beta,\n"
            "      --ada-floor, --budget-per-query-head, --head-scores FILE\n"
            "                          defaults for the methods, as in 'recall generate --help'; headkv and\n"
            "                          recycled:budgets=headkv need --head-scores\n",
            default_ctx, EVAL_DEFAULT_BUDGET_RATIO, slug, default_name);
}

void eval_check_ctx(const eval_common_opts *o, const model_config *c) {
    for (int i = 0; i < o->n_ctx; i++)
        if (o->ctx[i] > c->n_ctx_train)
            cli_die("--ctx %lld is larger than the model's trained context (%lld tokens)", (long long)o->ctx[i],
                    (long long)c->n_ctx_train);
}

int64_t eval_max_ctx(const eval_common_opts *o) {
    int64_t m = 0;
    for (int i = 0; i < o->n_ctx; i++) m = o->ctx[i] > m ? o->ctx[i] : m;
    return m;
}

int eval_runs_for_ctx(const method_spec *ms, int n_methods, const eval_budgets *b, int64_t ctx, int64_t engine_n_ctx,
                      const model_config *c, eval_run *out) {
    int n = 0;
    rc_err err = {{0}};
    for (int mi = 0; mi < n_methods; mi++) {
        const method_spec *m = &ms[mi];
        const int policy = attention_kind_is_policy(m->attention);
        const int once = m->attention == ATTENTION_FULL || m->k_explicit;
        for (int bi = 0; bi < (once ? 1 : b->n); bi++) {
            eval_run *r = &out[n];
            *r = (eval_run){.spec = m, .attention = m->attention, .ro = m->ro, .po = m->po, .label = m->name};
            char from[96] = "";
            if (m->attention == ATTENTION_FULL) {
                r->budget = ctx;
            } else if (m->k_explicit) {
                r->budget = policy ? r->po.budget : r->ro.k;
            } else {
                r->budget = b->absolute ? (int64_t)b->value[bi] : llround(b->value[bi] * (double)ctx);
                if (r->budget < 1) r->budget = 1;
                if (policy) r->po.budget = r->budget;
                else r->ro.k = r->budget;
                snprintf(from, sizeof(from), " (%s %g)", b->absolute ? "--kv-budget" : "--budget-ratio", b->value[bi]);
            }
            int bad = 0;
            if (policy)
                bad = kvpolicy_opts_validate(m->attention - ATTENTION_STREAMING, &r->po, c->n_layer, c->n_head, &err);
            else if (m->attention == ATTENTION_RECYCLED) {
                if (!m->span_explicit) r->ro.span = cli_recycle_default_span(&r->ro, engine_n_ctx);
                bad = recycle_opts_validate(&r->ro, engine_n_ctx, &err);
            }
            if (bad) cli_die("--attention %s at --ctx %lld, budget %lld%s: %s", m->name, (long long)ctx,
                             (long long)r->budget, from, err.msg);
            int dup = 0;  // two budget values that round to the same rows run once
            for (int i = 0; i < n; i++) dup |= out[i].spec == m && out[i].budget == r->budget;
            if (!dup) n++;
        }
    }
    return n;
}

int eval_set_run(engine *e, const eval_run *r, rc_err *err) {
    return engine_set_attention(e, r->attention, &r->ro, &r->po, err);
}

int64_t eval_decode_greedy_steps(engine *e, const tokenizer *tok, int32_t first, int64_t max_new, int32_t *out,
                                 uint64_t *hash, void (*on_step)(void *user, int64_t step, int32_t token), void *user) {
    rc_err err = {{0}};
    const int64_t V = engine_model(e)->cfg.n_vocab;
    int64_t n = 0;
    int32_t next = first;
    if (on_step) on_step(user, 0, next);
    while (!tokenizer_is_eog(tok, next)) {
        out[n++] = next;
        if (n == max_new) break;  // the last token needs no forward pass
        if (engine_decode(e, next, &err)) cli_die_err(&err);
        cli_check_logits(engine_logits(e), V, "answer decode step %lld", (long long)n);
        *hash = fnv1a(*hash, engine_logits(e), (size_t)V * sizeof(float));
        next = eval_argmax(engine_logits(e), V);
        if (on_step) on_step(user, n, next);
    }
    return n;
}

int64_t eval_decode_greedy(engine *e, const tokenizer *tok, int32_t first, int64_t max_new, int32_t *out,
                           uint64_t *hash) {
    return eval_decode_greedy_steps(e, tok, first, max_new, out, hash, NULL, NULL);
}

char *eval_detokenize(const tokenizer *tok, const int32_t *ids, int64_t n) {
    size_t piece_cap = tokenizer_decode_cap(tok), cap = 256, len = 0;
    char *text = malloc(cap), *piece = malloc(piece_cap + 1);
    tokenizer_stream st = {0};
    for (int64_t i = 0; i <= n; i++) {
        size_t got = i < n ? tokenizer_decode_stream(tok, &st, ids[i], piece, piece_cap)
                           : tokenizer_stream_flush(tok, &st, piece, piece_cap);
        if (len + got + 1 > cap) {
            while (len + got + 1 > cap) cap *= 2;
            text = realloc(text, cap);
        }
        memcpy(text + len, piece, got);
        len += got;
    }
    text[len] = '\0';
    free(piece);
    return text;
}

int32_t eval_argmax(const float *logits, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

void eval_gather_run(comm *cm, uint64_t hash, double a, double b, double *a_max, double *b_max, const char *what) {
    typedef struct { uint64_t hash; double a, b; } item;
    item mine = {hash, a, b};
    item *all = malloc((size_t)cm->size * sizeof(item));
    rc_err err = {{0}};
    if (comm_allgather(cm, &mine, sizeof(mine), all, &err)) cli_die_err(&err);
    *a_max = a;
    *b_max = b;
    for (int r = 0; r < cm->size; r++) {
        if (all[r].hash != all[0].hash)
            cli_die("%s: rank %d's logits differ from rank 0's (hash %016llx vs %016llx)", what, r,
                    (unsigned long long)all[r].hash, (unsigned long long)all[0].hash);
        *a_max = all[r].a > *a_max ? all[r].a : *a_max;
        *b_max = all[r].b > *b_max ? all[r].b : *b_max;
    }
    free(all);
}

void eval_format_seconds(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, cap, "?");
        return;
    }
    long t = lround(s);
    if (t < 60) snprintf(buf, cap, "%lds", t);
    else if (t < 3600) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

void eval_progress_init(eval_progress *p, int rank0, int force_bar, int64_t n_total, double work_total) {
    memset(p, 0, sizeof(*p));
    p->enabled = rank0 && n_total > 0;
    p->bar = p->enabled && (force_bar || isatty(STDERR_FILENO));
    p->t0 = cli_now();
    p->n_total = n_total;
    p->work_total = work_total;
}

static void progress_times(const eval_progress *p, char *el, char *eta, size_t cap) {
    double elapsed = cli_now() - p->t0;
    eval_format_seconds(elapsed, el, cap);
    if (p->work_done > 0) eval_format_seconds(elapsed * (p->work_total - p->work_done) / p->work_done, eta, cap);
    else snprintf(eta, cap, "?");
}

static void progress_draw(eval_progress *p) {
    enum { WIDTH = 24 };
    char el[32], eta[32], bar[WIDTH + 1];
    progress_times(p, el, eta, sizeof(el));
    int fill = p->n_total ? (int)(WIDTH * p->n_done / p->n_total) : WIDTH;
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    // \033[K clears the rest of the line: the status text changes length.
    fprintf(stderr, "\r[%s] %lld/%lld  %s elapsed  ETA %s  %.60s\033[K", bar, (long long)p->n_done,
            (long long)p->n_total, el, eta, p->status);
    fflush(stderr);
    p->last_draw = cli_now();
}

void eval_progress_status(eval_progress *p, const char *status) {
    if (!p->bar) return;
    snprintf(p->status, sizeof(p->status), "%s", status);
    if (cli_now() - p->last_draw >= 0.2) progress_draw(p);
}

void eval_progress_step(eval_progress *p, int64_t n, double work, const char *status) {
    if (!p->enabled) return;
    p->n_done += n;
    p->work_done += work;
    if (!p->bar) return;
    snprintf(p->status, sizeof(p->status), "%s", status ? status : "");
    progress_draw(p);
}

void eval_progress_line(eval_progress *p, const char *text) {
    if (!p->enabled || p->bar) return;
    char el[32], eta[32];
    progress_times(p, el, eta, sizeof(el));
    fprintf(stderr, "recall: eval: %lld/%lld, %s elapsed, ETA %s: %s\n", (long long)p->n_done, (long long)p->n_total,
            el, eta, text);
    fflush(stderr);
}

void eval_progress_end(eval_progress *p) {
    if (!p->bar) return;
    snprintf(p->status, sizeof(p->status), "done");
    progress_draw(p);
    fprintf(stderr, "\n");
}

static void make_parent_dirs(const char *path) {
    char *copy = strdup(path);
    for (char *s = copy + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) cli_die("%s: cannot create directory: %s", copy, strerror(errno));
        *s = '/';
    }
    free(copy);
}

FILE *eval_open_output(const char *prefix, const char *ext, const char *mode, char *path, size_t cap) {
    snprintf(path, cap, "%s%s", prefix, ext);
    make_parent_dirs(path);
    FILE *f = fopen(path, mode);
    if (!f) cli_die("%s: cannot open for writing: %s", path, strerror(errno));
    return f;
}

const char *eval_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int64_t eval_jsonl_each(const char *path, void (*fn)(const cJSON *o, int64_t lineno, void *user), void *user) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        cli_die("%s: cannot open: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t lineno = 0;
    long good_end = 0;
    int cut = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] != '\n') {  // an unfinished last line
            cut = 1;
            break;
        }
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
        fn(o, lineno, user);
        cJSON_Delete(o);
        good_end = ftell(f);
    }
    free(line);
    fclose(f);
    if (cut) {
        if (truncate(path, good_end) != 0) cli_die("%s: cannot cut off its unfinished last line: %s", path, strerror(errno));
        fprintf(stderr, "recall: note: %s:%lld was unfinished (a killed run); it was removed\n", path, (long long)lineno);
        lineno--;
    }
    return lineno;
}

void eval_index_init(eval_index *ix) { memset(ix, 0, sizeof(*ix)); }

void eval_index_free(eval_index *ix) {
    for (size_t i = 0; i < ix->cap; i++) free(ix->keys[i]);
    free(ix->keys);
    free(ix->vals);
    memset(ix, 0, sizeof(*ix));
}

static size_t index_slot(char *const *keys, size_t cap, const char *key) {  // cap: a power of two
    size_t i = (size_t)fnv1a(FNV1A_INIT, key, strlen(key)) & (cap - 1);
    while (keys[i] && strcmp(keys[i], key)) i = (i + 1) & (cap - 1);
    return i;
}

eval_result *eval_index_get(const eval_index *ix, const char *key) {
    if (!ix->cap) return NULL;
    size_t i = index_slot(ix->keys, ix->cap, key);
    return ix->keys[i] ? &ix->vals[i] : NULL;
}

void eval_index_put(eval_index *ix, const char *key, const eval_result *val) {
    if (2 * (ix->n + 1) > ix->cap) {  // keep the load at most 1/2
        size_t cap = ix->cap ? 2 * ix->cap : 64;
        char **keys = calloc(cap, sizeof(char *));
        eval_result *vals = calloc(cap, sizeof(eval_result));
        if (!keys || !vals) cli_die("out of memory");
        for (size_t i = 0; i < ix->cap; i++) {
            if (!ix->keys[i]) continue;
            size_t j = index_slot(keys, cap, ix->keys[i]);
            keys[j] = ix->keys[i];
            vals[j] = ix->vals[i];
        }
        free(ix->keys);
        free(ix->vals);
        ix->keys = keys;
        ix->vals = vals;
        ix->cap = cap;
    }
    size_t i = index_slot(ix->keys, ix->cap, key);
    if (!ix->keys[i]) {
        ix->keys[i] = strdup(key);
        ix->n++;
    }
    ix->vals[i] = *val;
}

void eval_finish_outputs(const char *prefix, FILE *csv, const char *csv_path, cJSON *root, cJSON *results,
                         const char *command, int n_ranks) {
    printf("#\n# reproduce: %s%s\n", n_ranks > 1 ? "launch/mpirun.sh -np N -- " : "", command);
    fflush(stdout);
    if (fclose(csv)) cli_die("%s: write error", csv_path);
    cJSON_AddItemToObject(root, "results", results);
    char *text = cJSON_Print(root);
    char json_path[4096];
    FILE *jf = eval_open_output(prefix, ".json", "w", json_path, sizeof(json_path));
    fprintf(jf, "%s\n", text);
    if (fclose(jf)) cli_die("%s: write error", json_path);
    free(text);
    cJSON_Delete(root);
}

engine *eval_engine_create(const eval_common_opts *c, const model *m, comm *cm, int64_t n_ctx) {
    engine_opts eo = engine_default_opts();
    eo.n_ctx = n_ctx;
    eo.n_threads = c->n_threads;
    eo.kv_elem = c->kv_elem;
    eo.prefill_block = c->prefill_block;
    eo.comm = cm;
    eo.zigzag = c->zigzag;
    eo.retain_prompt_cache = 1;  // every method decodes from the same prefill
    eo.on_attention_scores = c->on_attention_scores;
    eo.hook_user = c->hook_user;
    rc_err err = {{0}};
    engine *e = engine_create(m, &eo, &err);
    if (!e) cli_die_err(&err);
    return e;
}
