// recall profile-heads: option parsing and output around HeadKV's
// head-importance probes (eval/head_probe.h runs them): for every length x
// depth x seed one example, a progress line, and the mean scores of the
// examples that count (policy/head_scores.h); --merge combines r and r2 files.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/hash.h"
#include "engine/engine.h"
#include "eval/head_probe.h"
#include "eval/probe.h"
#include "policy/head_scores.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_MAX_NEW_TOKENS 24
#define DEFAULT_SEEDS 1
#define MAX_LENGTHS 16
#define MAX_DEPTHS 64

static const int64_t k_default_lengths[] = {1024, 2048, 4096};
static const double k_default_depths[] = {0.1, 0.3, 0.5, 0.7, 0.9};

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall profile-heads -m MODEL --probe r|r2 -o FILE.json [options]\n"
            "       recall profile-heads --merge R.json,R2.json -o FILE.json\n"
            "\n"
            "Measures per-(layer, query head) importance with HeadKV's probes: needle-in-a-haystack\n"
            "prompts are prefilled with full attention and answered greedily; at each answer step\n"
            "  r:  a head gets +1/N when its most-attended position lies in the needle's answer span\n"
            "      and holds the token just generated (retrieval heads, Wu et al. 2024);\n"
            "  r2: for each of its top-N attended positions inside the correct name of an\n"
            "      \"X is older than Y\" needle (a distractor pair sits elsewhere), a head gets its\n"
            "      attention there / N (retrieval-reasoning heads, HeadKV);\n"
            "N = the answer span's token count. Only examples answered with F1 > %.1f count; the\n"
            "scores written are their mean. Runs on one process (no mpirun); the KV cache is fp32.\n"
            "\n"
            "  -m, --model FILE        GGUF model file (required)\n"
            "      --probe r|r2        which probe (required)\n"
            "  -o, --output FILE       scores as JSON (required), e.g. configs/heads/NAME.r.json\n"
            "      --lengths LIST      prompt lengths in tokens, chat template included (default 1024,2048,4096;\n"
            "                          at most the model's trained context)\n"
            "      --depths LIST       needle depths in [0, 1] (default 0.1,0.3,0.5,0.7,0.9)\n"
            "      --seeds N           examples per length x depth, each with other needle words (default %d)\n"
            "      --haystack FILE     prose the needle hides in (default $RECALL_CACHE/prose/austen.txt,\n"
            "                          RECALL_CACHE defaulting to ~/.cache/recall; made by launch/setup.sh;\n"
            "                          at most 256 MiB)\n"
            "      --max-new-tokens N  answer tokens decoded at most; decoding also stops at end of\n"
            "                          generation, at a newline after some text and, for r2, after as\n"
            "                          many tokens as the expected name has (as HeadKV does) (default %d)\n"
            "      --no-chat           use the probe text as is even when the model has a chat template\n"
            "      --threads N         CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
            "      --progress          also show each prompt's prefill progress on stderr\n"
            "      --merge A,B         combine an r and an r2 file into one (probe \"r+r2\"): each file's\n"
            "                          scores normalized to sum 1, then added\n"
            "  -h, --help              this help\n"
            "\n"
            "One line per example goes to stderr (length, depth, F1, counted or not, answer, ETA).\n",
            PROBE_F1_MIN, DEFAULT_SEEDS, DEFAULT_MAX_NEW_TOKENS);
}

// ---------------------------------------------------------------- attention

// ---------------------------------------------------------------- helpers

static void parse_depths(const char *value, double *out, int *n_out) {
    char *copy = strdup(value);
    int n = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MAX_DEPTHS) cli_die("--depths: more than %d values", MAX_DEPTHS);
        out[n++] = cli_parse_double("--depths", tok, 0.0, 1.0);
    }
    free(copy);
    if (n == 0) cli_die("--depths: expected a comma-separated list of numbers in [0, 1]");
    *n_out = n;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

// Relative cost of an example of `length` tokens for the ETA: prefill is
// linear plus the causal attention's quadratic part (measured on SmolLM2-135M:
// 1K, 2K, 4K, 8K prompts cost about 1 : 2.3 : 6.7 : 27).
static double example_work(int64_t length) { return (double)length * (1.0 + (double)length / 2048.0); }

static void format_seconds(double s, char *buf, size_t cap) {
    long t = lround(s);
    if (t < 60) snprintf(buf, cap, "%lds", t);
    else if (t < 3600) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
}

// The answer for the progress line: one line, at most ~60 bytes.
static void answer_excerpt(const char *answer, char *buf, size_t cap) {
    size_t n = 0;
    for (const char *p = answer; *p && n + 4 < cap && n < 80; p++) {
        char c = *p;
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
        if (c == '"') buf[n++] = '\\';
        buf[n++] = c;
    }
    while (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0x80) n--;  // a cut UTF-8 character
    if (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0xc0) n--;
    buf[n] = '\0';
}

typedef struct prefill_meter {
    int tty;
    double t0;
} prefill_meter;

static void on_prefill(void *user, int64_t done, int64_t total) {
    prefill_meter *pm = user;
    double el = cli_now() - pm->t0;
    if (pm->tty) {
        fprintf(stderr, "\r  prefill %lld/%lld tokens (%.0f tok/s)\033[K", (long long)done, (long long)total,
                el > 0 ? (double)done / el : 0.0);
        if (done == total) fprintf(stderr, "\r\033[K");
    } else if (done == total) {
        fprintf(stderr, "  prefill %lld tokens in %.1f s\n", (long long)total, el);
    }
    fflush(stderr);
}

// --------------------------------------------------------------- --merge

static int merge_files(const char *list, const char *out_path, int argc, char **argv) {
    char *copy = strdup(list);
    const char *paths[3] = {0};
    int n = 0;
    for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
        if (n == 2) cli_die("--merge: give exactly two files, an r and an r2 one");
        paths[n++] = t;
    }
    if (n != 2) cli_die("--merge: give exactly two files, an r and an r2 one");
    head_scores hs[2];
    rc_err err = {{0}};
    for (int i = 0; i < 2; i++)
        if (head_scores_load(paths[i], 0, 0, &hs[i], &err)) cli_die_err(&err);
    if (!((strcmp(hs[0].probe, "r") == 0 && strcmp(hs[1].probe, "r2") == 0) ||
          (strcmp(hs[0].probe, "r2") == 0 && strcmp(hs[1].probe, "r") == 0)))
        cli_die("--merge: %s has probe \"%s\" and %s \"%s\"; expected one r and one r2 file", paths[0], hs[0].probe,
                paths[1], hs[1].probe);
    if (hs[0].n_layer != hs[1].n_layer || hs[0].n_head != hs[1].n_head)
        cli_die("--merge: %s is %lld x %lld heads, %s is %lld x %lld", paths[0], (long long)hs[0].n_layer,
                (long long)hs[0].n_head, paths[1], (long long)hs[1].n_layer, (long long)hs[1].n_head);
    if (strcmp(hs[0].model, hs[1].model) != 0)
        fprintf(stderr, "recall: warning: --merge: the files name different models (\"%s\", \"%s\")\n", hs[0].model,
                hs[1].model);
    const int64_t n_total = hs[0].n_layer * hs[0].n_head;
    head_scores out = {.n_layer = hs[0].n_layer, .n_head = hs[0].n_head, .n_examples = hs[0].n_examples + hs[1].n_examples};
    snprintf(out.model, sizeof(out.model), "%s", hs[0].model);
    snprintf(out.probe, sizeof(out.probe), "r+r2");
    out.score = calloc((size_t)n_total, sizeof(double));
    cJSON *meta = cJSON_CreateObject(), *from = cJSON_AddArrayToObject(meta, "merged_from");
    for (int i = 0; i < 2; i++) {
        double sum = 0.0;
        for (int64_t j = 0; j < n_total; j++) sum += hs[i].score[j];
        if (sum <= 0.0)
            fprintf(stderr, "recall: warning: --merge: %s has all-zero scores; it adds nothing\n", paths[i]);
        else
            for (int64_t j = 0; j < n_total; j++) out.score[j] += hs[i].score[j] / sum;
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "file", base_name(paths[i]));
        cJSON_AddStringToObject(f, "probe", hs[i].probe);
        cJSON_AddNumberToObject(f, "n_examples", (double)hs[i].n_examples);
        cJSON_AddItemToArray(from, f);
    }
    char cmd[4096];
    cli_command_line("recall profile-heads", argc, argv, cmd, sizeof(cmd));
    cJSON_AddStringToObject(meta, "combine", "sum of each file's scores normalized to sum 1");
    cJSON_AddStringToObject(meta, "command", cmd);
    char *meta_text = cJSON_PrintUnformatted(meta);
    if (head_scores_save(out_path, &out, meta_text, &err)) cli_die_err(&err);
    fprintf(stderr, "recall: profile-heads: wrote %s (r+r2 of %s and %s)\n", out_path, paths[0], paths[1]);
    free(meta_text);
    cJSON_Delete(meta);
    head_scores_free(&out);
    for (int i = 0; i < 2; i++) head_scores_free(&hs[i]);
    free(copy);
    return 0;
}

// ------------------------------------------------------------------ main

static int output_dir_writable(const char *path) {
    char *dir = strdup(path);
    char *slash = strrchr(dir, '/');
    int ok;
    if (!slash) ok = access(".", W_OK) == 0;
    else if (slash == dir) ok = access("/", W_OK) == 0;
    else {
        *slash = '\0';
        ok = access(dir, W_OK) == 0;
    }
    free(dir);
    return ok;
}

typedef struct head_rank {
    double score;
    int64_t index;
} head_rank;

static int cmp_rank_desc(const void *a, const void *b) {
    const head_rank *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

int cmd_profile_heads(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *probe_name = NULL, *hay_path = NULL, *merge_list = NULL;
    int64_t lengths[MAX_LENGTHS], n_seeds = DEFAULT_SEEDS, max_new = DEFAULT_MAX_NEW_TOKENS;
    double depths[MAX_DEPTHS];
    int n_lengths = 0, n_depths = 0, n_threads = cli_default_threads(), no_chat = 0, show_prefill = 0;
    enum { OPT_PROBE = 256, OPT_LENGTHS, OPT_DEPTHS, OPT_SEEDS, OPT_HAYSTACK, OPT_THREADS, OPT_MAX_NEW, OPT_PROGRESS,
           OPT_MERGE, OPT_NO_CHAT };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},           {"output", required_argument, 0, 'o'},
        {"probe", required_argument, 0, OPT_PROBE},     {"lengths", required_argument, 0, OPT_LENGTHS},
        {"depths", required_argument, 0, OPT_DEPTHS},   {"seeds", required_argument, 0, OPT_SEEDS},
        {"haystack", required_argument, 0, OPT_HAYSTACK}, {"threads", required_argument, 0, OPT_THREADS},
        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW}, {"progress", no_argument, 0, OPT_PROGRESS},
        {"merge", required_argument, 0, OPT_MERGE},     {"no-chat", no_argument, 0, OPT_NO_CHAT},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0}};
    comm *cm = cli_comm_init();
    if (cm->size > 1)
        cli_die("profile-heads runs on one process (started with %d ranks): run it without mpirun/srun", cm->size);
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'o': out_path = optarg; break;
        case OPT_PROBE: probe_name = optarg; break;
        case OPT_LENGTHS: n_lengths = cli_parse_int_list("--lengths", optarg, lengths, MAX_LENGTHS, 1, INT32_MAX); break;
        case OPT_DEPTHS: parse_depths(optarg, depths, &n_depths); break;
        case OPT_SEEDS: n_seeds = cli_parse_int("--seeds", optarg, 1, 1 << 20); break;
        case OPT_HAYSTACK: hay_path = optarg; break;
        case OPT_THREADS: n_threads = (int)cli_parse_int("--threads", optarg, 1, 1024); break;
        case OPT_MAX_NEW: max_new = cli_parse_int("--max-new-tokens", optarg, 1, 4096); break;
        case OPT_PROGRESS: show_prefill = 1; break;
        case OPT_MERGE: merge_list = optarg; break;
        case OPT_NO_CHAT: no_chat = 1; break;
        case 'h':
            usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall profile-heads --help')", argv[optind - 1]);
        default: cli_die("unknown option '%s' (see 'recall profile-heads --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s' (see 'recall profile-heads --help')", argv[optind]);
    if (!out_path) cli_die("missing --output (-o FILE.json; see 'recall profile-heads --help')");
    if (!output_dir_writable(out_path)) cli_die("%s: its directory does not exist or is not writable", out_path);
    if (merge_list) {
        if (model_path || probe_name) cli_die("--merge combines existing files: drop --model and --probe");
        int rc = merge_files(merge_list, out_path, argc, argv);
        comm_destroy(cm);
        return rc;
    }
    if (!model_path) cli_die("missing --model (see 'recall profile-heads --help')");
    if (!probe_name) cli_die("missing --probe r|r2 (see 'recall profile-heads --help')");
    int kind;
    if (strcmp(probe_name, "r") == 0) kind = PROBE_R;
    else if (strcmp(probe_name, "r2") == 0) kind = PROBE_R2;
    else cli_die("unknown --probe '%s': expected r or r2", probe_name);
    if (n_lengths == 0) {
        n_lengths = (int)(sizeof(k_default_lengths) / sizeof(k_default_lengths[0]));
        memcpy(lengths, k_default_lengths, sizeof(k_default_lengths));
    }
    if (n_depths == 0) {
        n_depths = (int)(sizeof(k_default_depths) / sizeof(k_default_depths[0]));
        memcpy(depths, k_default_depths, sizeof(k_default_depths));
    }

    // The haystack: --haystack, else the Austen text launch/setup.sh extracts.
    char default_hay[4096];
    if (!hay_path) {
        const char *cache = getenv("RECALL_CACHE"), *home = getenv("HOME");
        if (cache && *cache) snprintf(default_hay, sizeof(default_hay), "%s/prose/austen.txt", cache);
        else snprintf(default_hay, sizeof(default_hay), "%s/.cache/recall/prose/austen.txt", home ? home : "");
        if (access(default_hay, R_OK) != 0)
            cli_die("no haystack at %s: run launch/setup.sh (it extracts the Austen novels there) or pass --haystack FILE",
                    default_hay);
        hay_path = default_hay;
    }
    size_t hay_len = 0;
    char *hay = cli_read_file(hay_path, "haystack", &hay_len);
    if (hay_len == 0) cli_die("%s: the haystack file is empty", hay_path);
    if (memchr(hay, '\0', hay_len)) cli_die("%s: the haystack file contains NUL bytes (not text)", hay_path);

    rc_err err = {{0}};
    model m;
    cli_load_model(cm, &m, model_path);
    const model_config *cfg = &m.cfg;
    int64_t max_len = 0;
    for (int i = 0; i < n_lengths; i++) {
        if (lengths[i] > cfg->n_ctx_train)
            cli_die("--lengths: %lld is above the model's context (%lld tokens)", (long long)lengths[i],
                    (long long)cfg->n_ctx_train);
        if (lengths[i] > max_len) max_len = lengths[i];
    }
    tokenizer *tok = NULL;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);
    int chat = !no_chat;
    if (chat) {  // does the model have a template we know?
        char *probe_text = NULL;
        if (chat_format(&m.file, NULL, "x", &probe_text, &err)) chat = 0;
        free(probe_text);
    }
    head_probe_setup ps = {.m = &m, .tok = tok, .kind = kind, .chat = chat, .hay = hay, .hay_len = hay_len};
    double bpt;
    if (head_probe_bytes_per_token(tok, hay, hay_len, max_len, &bpt, &err)) cli_die_err(&err);
    // The shortest length decides whether every length leaves room for haystack.
    {
        head_probe_prompt bare;
        if (head_probe_make_prompt(&ps, 0, depths[0], 0, &bare, &err)) cli_die_err(&err);
        for (int i = 0; i < n_lengths; i++)
            if (lengths[i] - bare.n_ids < HEAD_PROBE_MIN_HAYSTACK_TOKENS)
                cli_die("--lengths: %lld tokens leave no room for haystack (the probe prompt alone is %lld tokens)",
                        (long long)lengths[i], (long long)bare.n_ids);
        head_probe_prompt_free(&bare);
    }

    engine_opts eo = engine_default_opts();
    eo.n_ctx = max_len + max_new + 1;
    eo.n_threads = n_threads;
    // The shipped head scores (configs/heads/) were measured with an fp32
    // cache; the probes read the engine's own scores, so any cache type works.
    eo.kv_elem = KV_F32;
    eo.comm = cm;
    eo.attention = ATTENTION_FULL;
    const int64_t n_heads_total = cfg->n_layer * cfg->n_head;
    head_probe_capture cap;
    if (head_probe_capture_init(&cap, cfg->n_layer, cfg->n_head, eo.n_ctx, n_threads, &err)) cli_die_err(&err);
    eo.on_attention_scores = head_probe_on_attention;
    eo.hook_user = &cap;
    engine *e = engine_create(&m, &eo, &err);
    if (!e) cli_die_err(&err);

    double *totals = calloc((size_t)n_heads_total, sizeof(double));
    double *ex_score = malloc((size_t)n_heads_total * sizeof(double));
    if (!totals || !ex_score) cli_die("out of memory for the head scores");
    int64_t counted_by_length[MAX_LENGTHS] = {0}, tokens_by_length[MAX_LENGTHS] = {0};
    double f1_by_length[MAX_LENGTHS] = {0};
    const int64_t n_examples = (int64_t)n_lengths * n_depths * n_seeds;
    double work_total = 0.0, work_done = 0.0;
    for (int li = 0; li < n_lengths; li++) work_total += example_work(lengths[li]) * (double)n_depths * (double)n_seeds;
    int64_t n_done = 0, n_counted = 0;
    const double t_start = cli_now();
    prefill_meter meter = {.tty = isatty(STDERR_FILENO)};
    fprintf(stderr, "recall: profile-heads: probe %s, %lld examples (%d lengths x %d depths x %lld seeds), %s, "
                    "haystack %s (%.2f bytes/token)\n",
            probe_name, (long long)n_examples, n_lengths, n_depths, (long long)n_seeds,
            chat ? "chat template" : "no chat template", base_name(hay_path), bpt);

    for (int li = 0; li < n_lengths; li++) {
        for (int di = 0; di < n_depths; di++) {
            for (int64_t s = 0; s < n_seeds; s++) {
                // Every (length, depth, seed) gets its own needle words.
                const int64_t key_words[2] = {lengths[li], s};
                uint64_t seed = fnv1a(fnv1a(FNV1A_INIT, key_words, sizeof(key_words)), &depths[di], sizeof(double));
                const double t0 = cli_now();
                head_probe_prompt pp;
                if (head_probe_sized_prompt(&ps, bpt, lengths[li], depths[di], seed, &pp, &err)) cli_die_err(&err);
                meter.t0 = cli_now();
                head_probe_outcome res;
                if (head_probe_run_example(e, &cap, &ps, &pp, max_new, ex_score, show_prefill ? on_prefill : NULL,
                                           &meter, &res, &err))
                    cli_die_err(&err);
                if (res.counted) {
                    for (int64_t i = 0; i < n_heads_total; i++) totals[i] += ex_score[i];
                    n_counted++;
                    counted_by_length[li]++;
                }
                f1_by_length[li] += res.f1;
                tokens_by_length[li] += pp.n_ids;
                n_done++;
                work_done += example_work(lengths[li]);
                char excerpt[112], eta[32], took[32];
                answer_excerpt(res.answer, excerpt, sizeof(excerpt));
                format_seconds((cli_now() - t_start) * (work_total - work_done) / work_done, eta, sizeof(eta));
                format_seconds(cli_now() - t0, took, sizeof(took));
                fprintf(stderr,
                        "recall: profile-heads: [%lld/%lld] %s len %lld (%lld tok) depth %.2f seed %lld: F1 %.2f %s, "
                        "%lld answer tokens \"%s\" (%s, ETA %s)\n",
                        (long long)n_done, (long long)n_examples, probe_name, (long long)lengths[li],
                        (long long)pp.n_ids, depths[di], (long long)s, res.f1, res.counted ? "counted" : "not counted",
                        (long long)res.n_gen, excerpt, took, eta);
                fflush(stderr);
                free(res.answer);
                head_probe_prompt_free(&pp);
            }
        }
    }

    head_scores hs = {.n_layer = cfg->n_layer, .n_head = cfg->n_head, .n_examples = n_counted};
    snprintf(hs.model, sizeof(hs.model), "%s", cfg->name[0] ? cfg->name : base_name(model_path));
    snprintf(hs.probe, sizeof(hs.probe), "%s", probe_name);
    hs.score = calloc((size_t)n_heads_total, sizeof(double));
    for (int64_t i = 0; i < n_heads_total; i++) hs.score[i] = n_counted ? totals[i] / (double)n_counted : 0.0;

    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "model_file", base_name(model_path));
    cJSON *jl = cJSON_AddArrayToObject(meta, "lengths"), *jd = cJSON_AddArrayToObject(meta, "depths");
    cJSON *jc = cJSON_AddArrayToObject(meta, "counted_by_length"), *jt = cJSON_AddArrayToObject(meta, "prompt_tokens_mean");
    cJSON *jf = cJSON_AddArrayToObject(meta, "f1_mean_by_length");
    const double per_length = (double)n_depths * (double)n_seeds;
    for (int i = 0; i < n_lengths; i++) {
        cJSON_AddItemToArray(jl, cJSON_CreateNumber((double)lengths[i]));
        cJSON_AddItemToArray(jc, cJSON_CreateNumber((double)counted_by_length[i]));
        cJSON_AddItemToArray(jt, cJSON_CreateNumber(round((double)tokens_by_length[i] / per_length)));
        cJSON_AddItemToArray(jf, cJSON_CreateNumber(round(1000.0 * f1_by_length[i] / per_length) / 1000.0));
    }
    for (int i = 0; i < n_depths; i++) cJSON_AddItemToArray(jd, cJSON_CreateNumber(depths[i]));
    cJSON_AddNumberToObject(meta, "seeds", (double)n_seeds);
    cJSON_AddNumberToObject(meta, "examples_tried", (double)n_examples);
    cJSON_AddNumberToObject(meta, "examples_counted", (double)n_counted);
    cJSON_AddNumberToObject(meta, "f1_min", PROBE_F1_MIN);
    cJSON_AddNumberToObject(meta, "max_new_tokens", (double)max_new);
    cJSON_AddBoolToObject(meta, "chat_template", chat);
    cJSON_AddStringToObject(meta, "haystack", base_name(hay_path));
    cJSON_AddNumberToObject(meta, "seconds", round(cli_now() - t_start));
    char cmd[4096];
    cli_command_line("recall profile-heads", argc, argv, cmd, sizeof(cmd));
    cJSON_AddStringToObject(meta, "command", cmd);
    char *meta_text = cJSON_PrintUnformatted(meta);
    if (head_scores_save(out_path, &hs, meta_text, &err)) cli_die_err(&err);

    char total_time[32];
    format_seconds(cli_now() - t_start, total_time, sizeof(total_time));
    fprintf(stderr, "recall: profile-heads: %lld of %lld examples counted (F1 > %.1f) in %s; wrote %s\n",
            (long long)n_counted, (long long)n_examples, PROBE_F1_MIN, total_time, out_path);
    if (n_counted == 0) {
        fprintf(stderr, "recall: warning: profile-heads: no example was answered with F1 > %.1f, so every score in %s "
                        "is 0 (try shorter --lengths, more --seeds or a stronger model)\n",
                PROBE_F1_MIN, out_path);
    } else {
        head_rank *rank = malloc((size_t)n_heads_total * sizeof(head_rank));
        for (int64_t i = 0; i < n_heads_total; i++) rank[i] = (head_rank){hs.score[i], i};
        qsort(rank, (size_t)n_heads_total, sizeof(head_rank), cmp_rank_desc);
        fprintf(stderr, "recall: profile-heads: top heads (layer.head score):");
        for (int64_t i = 0; i < n_heads_total && i < 10; i++)
            fprintf(stderr, " %lld.%lld %.3g", (long long)(rank[i].index / cfg->n_head),
                    (long long)(rank[i].index % cfg->n_head), rank[i].score);
        fprintf(stderr, "\n");
        free(rank);
    }

    free(meta_text);
    cJSON_Delete(meta);
    head_scores_free(&hs);
    free(ex_score);
    free(totals);
    engine_destroy(e);
    head_probe_capture_free(&cap);
    tokenizer_free(tok);
    model_free(&m);
    free(hay);
    comm_destroy(cm);
    return 0;
}
