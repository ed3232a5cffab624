// recall bench: prefill and decode speed on a model, with the achieved memory
// bandwidth of decode and a correctness check in the same run.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/cuda/backend_cuda.h"
#include "cli/attention_opts.h"
#include "backend/kv_format.h"
#include "cli/backend_opts.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "cli/method_list.h"
#include "cli/run_dir.h"
#include "engine/engine.h"

#define MAX_LIST 16
#define MAX_METHODS METHOD_LIST_MAX
#define BENCH_SEED 1234

// A logit is wrong when it is not finite or differs from the reference by
// more than this times the reference's largest |logit|: the bound the tests
// hold full attention to across rank counts and paths (measured agreement
// ~1e-5 relative, from summation order alone).
#define BENCH_WRONG_RTOL 1e-4

static int64_t count_wrong(const float *x, const float *ref, int64_t n) {
    double scale = 0.0;
    for (int64_t v = 0; v < n; v++) scale = fmax(scale, fabs((double)ref[v]));
    int64_t wrong = 0;
    for (int64_t v = 0; v < n; v++)
        if (!isfinite(x[v]) || !(fabs((double)x[v] - ref[v]) <= BENCH_WRONG_RTOL * scale)) wrong++;
    return wrong;
}

// --backend cuda without --bandwidth-gbs: the H200's nominal HBM bandwidth (4.8 TB/s).
#define H200_HBM_GBS 4800.0

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall bench -m MODEL [options]\n"
            "\n"
            "Measures prefill tokens/s for each prompt length and decode tokens/s at each context\n"
            "depth, with the bytes read per decode token (weights + K/V) and the achieved fraction\n"
            "of the memory bandwidth. Prompts are random token ids (speed does not depend on them).\n"
            "Each method is checked at each depth (column #wrong; where depth <= --verify-max): its\n"
            "first decode step's logits against a one-shot prefill of the same tokens where the method\n"
            "must equal full attention (full; recycled, whose first step is full; a policy whose budget\n"
            "covers the prompt), else against the same method run from a fresh prefill.\n"
            "\n"
            "  -m, --model FILE          GGUF model (required)\n"
            "      --prefill LIST        prompt lengths (default 512,4096; none with --fill random), or none\n"
            "      --depths LIST         decode context depths (default 0,2048,8192); --ctx LIST is the same\n"
            "      --fill prefill|random how each depth's KV cache is made (default prefill): random holds\n"
            "                            synthetic K/V rows of a real model's scale instead of running the\n"
            "                            prompt, so decode at 128K-1M context is timed in seconds; the\n"
            "                            compression methods vote with 32 synthetic prompt queries (rows\n"
            "                            and CSV say 'synthetic fill'; not verified)\n"
            "      --decode-tokens N     timed decode steps per depth (default 64)\n"
            "      --reps N              prefill repetitions, best is reported (default 2)\n"
            "      --threads N           CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
            "      --kv-type TYPE        KV cache type: f16 (default), f32, q8_0 or q4_0 (GGML blocks;\n"
            "                            the block types need a head_dim that is a multiple of 32)\n"
            "      --backend cpu|cuda    where the model runs (default cpu; cuda: a build with the CUDA toolkit)\n"
            "      --device N            GPU index for --backend cuda (default 0)\n"
            "      --bandwidth-gbs X     machine read bandwidth for the roofline (default 31.6, the\n"
            "                            2-thread figure measured on the project's 2-core machines)\n"
            "      --verify-max N        largest depth to verify (default 2048)\n"
            "      --attention LIST      decode methods to time at every depth (default full), e.g.\n"
            "                            full,recycled:stride=10,recycled:stride=50,recycled:schedule=dynamic:qc=5\n"
            "                            recycled settings: k, stride, schedule, qc, s, agg, pool, budgets,\n"
            "                            query, qwin, qagg, span; the rest come from the --recycle-* flags\n"
            "                            below. K defaults to depth / 8; budgets default to HeadKV where\n"
            "                            scores are shipped for the model (a note says so), else uniform.\n"
            "                            Each depth is prefilled once; every method then decodes from it\n"
            "                            (its first step, which builds the recycled cache, is not timed)\n"
            "      --recycle-k K, --recycle-stride S, --recycle-schedule stride|dynamic,\n"
            "      --recycle-check-every QC, --recycle-similarity s, --recycle-agg max|mean|first,\n"
            "      --recycle-pool W, --recycle-budgets uniform|headkv, --head-scores FILE,\n"
            "      --recycle-query last|window, --recycle-query-window W, --recycle-query-agg mean|max,\n"
            "      --recycle-span R      defaults for the recycled methods (see 'recall generate --help')\n"
            "      --csv [FILE]          also write the results as CSV, one row per prefill length and per decode\n"
            "                            (method, depth): ranks, threads, tok/s, ms/full, ms/rec, K/V bytes read\n"
            "                            per token (all ranks), bytes received per token (per rank), KV MiB held\n"
            "                            and peak RSS (largest rank), #wrong, and the command line. Without\n"
            "                            FILE: a new directory per run, runs/bench-DATE-TIME/bench.csv\n"
            "      --json FILE           the same rows as one JSON document\n"
            "      --config FILE         read flags from FILE: 'key = value' lines whose keys are the\n"
            "                            long flags above, optional [bench] section, # comments;\n"
            "                            flags on the command line win; at most 1 MiB\n"
            "  -h, --help                this help\n");
}

// One result row of --csv / --json: a prefill length or a decode (method, depth).
typedef struct bench_row {
    const char *test;            // "prefill" | "decode"
    char method[64];             // the --attention entry as written ("" for prefill)
    int64_t budget;              // recycled K or policy KV budget used; -1: none (full, prefill)
    int64_t depth;               // decode: context depth; prefill: -1
    int64_t tokens;              // prompt tokens, or timed decode steps
    double seconds, tok_s, vs_full;  // vs_full: 0 when not applicable
    double n_full, ms_full, ms_rec;  // decode only
    double kv_read_per_token;    // K/V bytes attention read per decode step, all ranks together
    double comm_per_token;       // bytes each rank receives per decode step
    double kv_mib;               // K/V held, largest rank
    double peak_rss_mib;         // peak RSS so far, largest rank
    int64_t wrong;               // check count of the depth; -1: not verified / not applicable
    int synthetic;               // decode from a synthetic fill (engine_fill_synthetic), not a prefill
} bench_row;

static void csv_header(FILE *f) {
    fprintf(f, "test,method,budget,depth,tokens,ranks,threads,kv_type,seconds,tok_s,vs_full,n_full,ms_full,ms_rec,"
               "kv_bytes_read_per_token,comm_bytes_per_token,kv_mib,peak_rss_mib,wrong,fill,command\n");
}

// Empty fields where a column does not apply (prefill rows have no method or depth).
static void csv_row(FILE *f, const bench_row *r, int ranks, int threads, const char *kv_type, const char *command) {
    const int dec = !strcmp(r->test, "decode");
    fprintf(f, "%s,", r->test);
    cli_csv_field(f, r->method);
    fputc(',', f);
    if (r->budget >= 0) fprintf(f, "%lld", (long long)r->budget);
    fputc(',', f);
    if (r->depth >= 0) fprintf(f, "%lld", (long long)r->depth);
    fprintf(f, ",%lld,%d,%d,%s,%.6f,%.3f,", (long long)r->tokens, ranks, threads, kv_type, r->seconds, r->tok_s);
    if (r->vs_full > 0) fprintf(f, "%.4f", r->vs_full);
    if (dec)
        fprintf(f, ",%.0f,%.4f,%.4f,%.0f,%.0f,", r->n_full, r->ms_full, r->ms_rec, r->kv_read_per_token,
                r->comm_per_token);
    else
        fprintf(f, ",,,,,,");
    fprintf(f, "%.3f,%.1f,", r->kv_mib, r->peak_rss_mib);
    if (r->wrong >= 0) fprintf(f, "%lld", (long long)r->wrong);
    fprintf(f, ",%s,", dec ? (r->synthetic ? "synthetic fill" : "prefill") : "");
    cli_csv_field(f, command);
    fputc('\n', f);
}

static void json_write(const char *path, const bench_row *rows, int n, const char *model_path, int ranks, int threads,
                       const char *kv_type, double bandwidth_gbs, const char *command) {
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "format", "recall-bench-1");
    cJSON_AddStringToObject(root, "command", command);
    cJSON_AddStringToObject(root, "model", model_path);
    cJSON_AddNumberToObject(root, "ranks", ranks);
    cJSON_AddNumberToObject(root, "threads", threads);
    cJSON_AddStringToObject(root, "kv_type", kv_type);
    cJSON_AddNumberToObject(root, "bandwidth_gbs", bandwidth_gbs);
    for (int i = 0; i < n; i++) {
        const bench_row *r = &rows[i];
        const int dec = !strcmp(r->test, "decode");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "test", r->test);
        if (dec) {
            cJSON_AddStringToObject(o, "method", r->method);
            if (r->budget >= 0) cJSON_AddNumberToObject(o, "budget", (double)r->budget);
            cJSON_AddNumberToObject(o, "depth", (double)r->depth);
        }
        cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
        cJSON_AddNumberToObject(o, "seconds", r->seconds);
        cJSON_AddNumberToObject(o, "tok_s", r->tok_s);
        if (dec) {
            if (r->vs_full > 0) cJSON_AddNumberToObject(o, "vs_full", r->vs_full);
            cJSON_AddNumberToObject(o, "n_full", r->n_full);
            cJSON_AddNumberToObject(o, "ms_full", r->ms_full);
            cJSON_AddNumberToObject(o, "ms_rec", r->ms_rec);
            cJSON_AddNumberToObject(o, "kv_bytes_read_per_token", r->kv_read_per_token);
            cJSON_AddNumberToObject(o, "comm_bytes_per_token", r->comm_per_token);
        }
        cJSON_AddNumberToObject(o, "kv_mib", r->kv_mib);
        cJSON_AddNumberToObject(o, "peak_rss_mib", r->peak_rss_mib);
        if (r->wrong >= 0) cJSON_AddNumberToObject(o, "wrong", (double)r->wrong);
        if (dec) cJSON_AddStringToObject(o, "fill", r->synthetic ? "synthetic fill" : "prefill");
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddItemToObject(root, "rows", arr);
    char *text = cJSON_Print(root);
    FILE *f = fopen(path, "w");
    if (!f) cli_die("--json %s: cannot open for writing", path);
    fprintf(f, "%s\n", text);
    if (fclose(f)) cli_die("--json %s: write error", path);
    free(text);
    cJSON_Delete(root);
}

// The largest value over the ranks (every rank calls it).
static double max_over_ranks(comm *cm, double mine) {
    rc_err err = {{0}};
    double *all = malloc((size_t)cm->size * sizeof(double)), best = mine;
    if (comm_allgather(cm, &mine, sizeof(mine), all, &err)) cli_die_err(&err);
    for (int r = 0; r < cm->size; r++) best = all[r] > best ? all[r] : best;
    free(all);
    return best;
}

static void random_tokens(int32_t *ids, int64_t n, int64_t n_vocab, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(100 + (s >> 33) % (uint64_t)(n_vocab - 100));
    }
}

int cmd_bench(int argc, char **argv) {
    const char *model_path = NULL;
    int64_t prefill_lens[MAX_LIST] = {512, 4096}, depths[MAX_LIST] = {0, 2048, 8192};
    int n_prefill = 2, n_depths = 3;
    int64_t decode_tokens = 64, reps = 2, verify_max = 2048;
    int n_threads = cli_default_threads(), kv_elem = KV_F16;
    double bandwidth_gbs = 31.6;
    enum { OPT_PREFILL = 256, OPT_DEPTHS, OPT_DECODE, OPT_REPS, OPT_THREADS, OPT_KV, OPT_BW, OPT_VERIFY, OPT_CONFIG,
           OPT_CSV, OPT_JSON, OPT_FILL };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"prefill", required_argument, 0, OPT_PREFILL},
        {"depths", required_argument, 0, OPT_DEPTHS},  {"decode-tokens", required_argument, 0, OPT_DECODE},
        {"reps", required_argument, 0, OPT_REPS},      {"threads", required_argument, 0, OPT_THREADS},
        {"kv-type", required_argument, 0, OPT_KV},     {"bandwidth-gbs", required_argument, 0, OPT_BW},
        {"verify-max", required_argument, 0, OPT_VERIFY}, {"config", required_argument, 0, OPT_CONFIG},
        {"ctx", required_argument, 0, OPT_DEPTHS},     {"csv", optional_argument, 0, OPT_CSV},
        {"json", required_argument, 0, OPT_JSON},     {"fill", required_argument, 0, OPT_FILL},
        CLI_ATTENTION_OPTIONS, CLI_BACKEND_OPTIONS,
        {"help", no_argument, 0, 'h'},                 {0, 0, 0, 0}};
    engine_opts base = engine_default_opts();
    cli_backend cbk = cli_backend_default();
    const char *methods_arg = "full", *csv_path = NULL, *json_path = NULL;
    int bw_explicit = 0, k_explicit = 0, budget_explicit = 0, synthetic = 0, prefill_explicit = 0;
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    static const char optstring[] = ":m:h";
    // --csv's FILE is optional, so getopt would take "--csv FILE" as a bare --csv and
    // an operand: join them into "--csv=FILE" before any getopt pass.
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--csv") && argv[i + 1][0] != '-') {
            const size_t n = strlen(argv[i + 1]) + 7;
            char *joined = malloc(n);
            snprintf(joined, n, "--csv=%s", argv[i + 1]);
            argv[i] = joined;  // stays reachable through argv until exit
            memmove(&argv[i + 1], &argv[i + 2], (size_t)(argc - i - 1) * sizeof(char *));  // with the NULL
            argc--;
        }
    cli_config_merge("bench", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case OPT_PREFILL:
            prefill_explicit = 1;
            n_prefill = strcmp(optarg, "none") == 0 ? 0
                                                    : cli_parse_int_list("--prefill", optarg, prefill_lens, MAX_LIST, 1, 1 << 22);
            break;
        case OPT_FILL:
            if (strcmp(optarg, "random") && strcmp(optarg, "prefill"))
                cli_die("--fill: expected prefill or random, got '%s'", optarg);
            synthetic = strcmp(optarg, "random") == 0;
            break;
        case OPT_DEPTHS: n_depths = cli_parse_int_list("--depths", optarg, depths, MAX_LIST, 0, 1 << 26); break;  // or --ctx
        case OPT_DECODE: decode_tokens = cli_parse_int("--decode-tokens", optarg, 1, 1 << 20); break;
        case OPT_REPS: reps = cli_parse_int("--reps", optarg, 1, 1000); break;
        case OPT_THREADS: n_threads = (int)cli_parse_int("--threads", optarg, 1, 1024); break;
        case OPT_KV:
            kv_elem = cli_parse_kv_type(optarg);
            break;
        case OPT_BW:
            bandwidth_gbs = cli_parse_double("--bandwidth-gbs", optarg, 0.001, 1e6);
            bw_explicit = 1;
            break;
        case OPT_VERIFY: verify_max = cli_parse_int("--verify-max", optarg, -1, 1 << 22); break;
        case OPT_CONFIG: break;  // read by cli_config_merge
        case OPT_CSV: csv_path = optarg ? optarg : ""; break;  // "": the run's own directory
        case OPT_JSON: json_path = optarg; break;
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall bench --help')", argv[optind - 1]);
        case CLI_OPT_ATTENTION: methods_arg = optarg; break;
        default:
            if (c == CLI_OPT_RECYCLE_K) k_explicit = 1;
            if (c == CLI_OPT_KV_BUDGET) budget_explicit = 1;
            if (cli_attention_option(c, optarg, &base) || cli_backend_option(c, optarg, &cbk)) break;
            cli_die("unknown option '%s' (see 'recall bench --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s'", argv[optind]);
    if (!model_path) cli_die("missing --model (see 'recall bench --help')");
    cli_backend_check(&cbk, cm);
    if (cbk.ops != &backend_cpu && !bw_explicit) bandwidth_gbs = H200_HBM_GBS;
    method_spec methods[MAX_METHODS];
    const int n_methods = method_list_parse(methods_arg, &base, k_explicit, budget_explicit, methods, MAX_METHODS);
    if (synthetic && !prefill_explicit) n_prefill = 0;
    char command[4096];
    cli_command_line("recall bench", argc, argv, command, sizeof(command));
    const char *kv_name = kv_elem_name(kv_elem);
    FILE *csv = NULL;  // rank 0; open before any work so a bad path fails at once
    char csv_default[4096];
    if (rank0 && csv_path && !*csv_path) {
        run_dir_create("bench", csv_default, sizeof(csv_default) - 16);
        strcat(csv_default, "/bench.csv");
        csv_path = csv_default;
        fprintf(stderr, "recall: bench: writing %s\n", csv_path);
    }
    if (rank0 && csv_path) {
        if (!(csv = fopen(csv_path, "w"))) cli_die("--csv %s: cannot open for writing", csv_path);
        csv_header(csv);
    }
    if (rank0 && json_path) {
        FILE *jf = fopen(json_path, "a");
        if (!jf) cli_die("--json %s: cannot open for writing", json_path);
        fclose(jf);
    }
    bench_row *rows = calloc((size_t)(n_prefill + n_depths * n_methods), sizeof(bench_row));
    int n_rows = 0;

    model m;
    cli_load_model(cm, &m, model_path);
    method_list_head_scores(methods, n_methods, &m);  // headkv and --recycle-budgets headkv
    if (rank0) method_list_budgets_note(methods, n_methods, &m);
    const int64_t V = m.cfg.n_vocab;
    int64_t n_ctx = 1;
    for (int i = 0; i < n_prefill; i++) n_ctx = prefill_lens[i] > n_ctx ? prefill_lens[i] : n_ctx;
    for (int i = 0; i < n_depths; i++) n_ctx = depths[i] + decode_tokens + 2 > n_ctx ? depths[i] + decode_tokens + 2 : n_ctx;
    engine_opts eo = engine_default_opts();
    eo.n_ctx = n_ctx;
    eo.n_threads = n_threads;
    eo.kv_elem = kv_elem;
    eo.comm = cm;
    eo.retain_prompt_cache = 1;  // every method starts from the same prefill
    eo.backend = cbk.ops;
    eo.device = cbk.device;
    engine *e = engine_create(&m, &eo, &err);
    if (!e) cli_die_err(&err);
    int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
    random_tokens(ids, n_ctx, V, BENCH_SEED);
    const double weight_bytes = (double)model_weight_bytes_per_token(&m);
    const double kv_bytes_per_pos =
        2.0 * (double)(m.cfg.n_layer * m.cfg.n_head_kv) * (double)kv_row_bytes(kv_elem, m.cfg.head_dim);

    // Only rank 0 prints; under several ranks each holds ~1/N of the K/V, so
    // the bandwidth columns count the whole machine's traffic (all ranks).
    FILE *out = rank0 ? stdout : fopen("/dev/null", "w");
    fprintf(out, "# recall bench: %s, %s, %d rank%s x %d threads, KV %s, %lld-token context buffer\n", model_path,
            m.cfg.arch_name, cm->size, cm->size > 1 ? "s" : "", n_threads, kv_name,
            (long long)n_ctx);
    fprintf(out, "# weights read per decode token: %.1f MB per rank; K/V bytes per context token: %.0f; bandwidth %.1f GB/s\n",
            weight_bytes / 1e6, kv_bytes_per_pos, bandwidth_gbs);
    if (cbk.ops != &backend_cpu) {
        char dev[512];
        if (backend_cuda_describe(cbk.device, dev, sizeof dev, &err)) cli_die_err(&err);
        fprintf(out, "# backend %s: %s\n", cbk.ops->name, dev);
    }
    fprintf(out, "#\n# %-8s %8s %10s %12s\n", "test", "tokens", "seconds", "tok/s");
    for (int i = 0; i < n_prefill; i++) {
        double best = 1e30;
        for (int64_t r = 0; r < reps + 1; r++) {  // one untimed warm-up
            engine_reset(e);
            double t0 = cli_now();
            if (engine_prefill(e, ids, prefill_lens[i], NULL, NULL, NULL, &err)) cli_die_err(&err);
            double dt = cli_now() - t0;
            cli_check_logits(engine_logits(e), m.cfg.n_vocab, "the prefill of %lld tokens", (long long)prefill_lens[i]);
            if (r > 0 && dt < best) best = dt;
        }
        fprintf(out, "  %-8s %8lld %10.3f %12.1f\n", "prefill", (long long)prefill_lens[i], best,
                (double)prefill_lens[i] / best);
        fflush(out);
        bench_row *row = &rows[n_rows++];
        *row = (bench_row){.test = "prefill", .budget = -1, .depth = -1, .tokens = prefill_lens[i], .seconds = best,
                           .tok_s = (double)prefill_lens[i] / best, .wrong = -1,
                           .kv_mib = max_over_ranks(cm, (double)engine_kv_bytes_used(e) / (1 << 20)),
                           .peak_rss_mib = max_over_ranks(cm, cli_peak_rss_mib())};
        if (csv) {
            csv_row(csv, row, cm->size, n_threads, kv_name, command);
            fflush(csv);
        }
    }

    float *first_logits = malloc((size_t)(n_methods * V) * sizeof(float));  // (n_methods, V): each method's first step
    float *ref_logits = malloc((size_t)V * sizeof(float));
    uint8_t *have_first = malloc((size_t)n_methods);
    if (!first_logits || !ref_logits || !have_first) cli_die("out of memory");
    fprintf(out, "#\n# %-8s %-44s %6s %6s %8s %7s %6s %8s %8s %7s %7s %11s %8s\n", "test", "method", "depth", "tokens",
            "tok/s", "vs full", "n_full", "ms/full", "ms/rec", "%bw_f", "%bw_r", "comm B/step", "KV MiB");
    int64_t total_wrong = 0;
    for (int i = 0; i < n_depths; i++) {
        const int64_t D = depths[i];
        engine_reset(e);
        if (engine_set_attention(e, ATTENTION_FULL, NULL, NULL, &err)) cli_die_err(&err);
        if (D > 0 && synthetic && engine_fill_synthetic(e, D, BENCH_SEED, &err)) cli_die_err(&err);
        if (D > 0 && !synthetic && engine_prefill(e, ids, D, NULL, NULL, NULL, &err)) cli_die_err(&err);
        double full_tps = 0.0;
        const int depth_rows = n_rows;
        int *row_method = malloc((size_t)n_methods * sizeof(int));  // row depth_rows + i is method row_method[i]
        if (!row_method) cli_die("out of memory");
        memset(have_first, 0, (size_t)n_methods);
        for (int mi = 0; mi < n_methods; mi++) {
            const method_spec *bm = &methods[mi];
            recycle_opts ro = bm->ro;
            kvpolicy_opts po = bm->po;
            const int policy = attention_kind_is_policy(bm->attention);
            if (bm->attention == ATTENTION_RECYCLED && !bm->k_explicit) ro.k = D / 8 > 0 ? D / 8 : 1;
            if (bm->attention == ATTENTION_RECYCLED && !bm->span_explicit) ro.span = cli_recycle_default_span(&ro, n_ctx);
            if (bm->attention == ATTENTION_RECYCLED && recycle_opts_validate(&ro, n_ctx, &err)) cli_die_err(&err);
            if (policy) {
                if (D == 0) {
                    fprintf(out, "  %-8s %-44s %6lld   (no prompt to compress)\n", "decode", bm->name, (long long)D);
                    continue;
                }
                if (!bm->k_explicit) po.budget = D / 8 > po.window ? D / 8 : po.window;
                if (kvpolicy_opts_validate(bm->attention - ATTENTION_STREAMING, &po, m.cfg.n_layer, m.cfg.n_head, &err))
                    cli_die_err(&err);
            }
            if (engine_truncate(e, D, &err) || engine_set_attention(e, bm->attention, &ro, &po, &err))
                cli_die_err(&err);
            // Step 1 (untimed) builds the recycled cache or compresses the
            // prompt; it doubles as the method's correctness probe.
            if (engine_decode(e, ids[D], &err)) cli_die_err(&err);
            cli_check_logits(engine_logits(e), V, "the first decode step at depth %lld (%s)", (long long)D, bm->name);
            memcpy(first_logits + (size_t)mi * (size_t)V, engine_logits(e), (size_t)V * sizeof(float));
            have_first[mi] = 1;
            comm_counters before = cm->counters[COMM_PHASE_DECODE];
            // Per step kind: seconds, steps, K/V bytes read (this rank).
            double acc[6] = {0};  // full: s, n, kv; recycled: s, n, kv
            double t0 = cli_now();
            for (int64_t t = 0; t < decode_tokens; t++) {
                double ts = cli_now();
                if (engine_decode(e, ids[D + 1 + t], &err)) cli_die_err(&err);
                int kind = engine_last_step(e)->n_full_layers > 0 ? 0 : 3;
                acc[kind] += cli_now() - ts;
                acc[kind + 1] += 1;
                acc[kind + 2] += (double)engine_last_step(e)->kv_bytes_read;
            }
            double dt = cli_now() - t0;
            double comm_per_step =
                (double)(cm->counters[COMM_PHASE_DECODE].bytes_recv - before.bytes_recv) / (double)decode_tokens;
            // Every rank's clock ends when its last step ends: report the slowest
            // rank's times and the whole machine's K/V reads.
            double kv_mib = (double)engine_kv_bytes_used(e) / (1 << 20), peak_rss = cli_peak_rss_mib();
            double mine[9] = {dt, acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], kv_mib, peak_rss}, all[64 * 9];
            if (cm->size <= 64 && comm_allgather(cm, mine, sizeof(mine), all, &err) == 0) {
                for (int r = 1; r < cm->size; r++) {
                    const double *o = all + r * 9;
                    kv_mib = o[7] > kv_mib ? o[7] : kv_mib;
                    peak_rss = o[8] > peak_rss ? o[8] : peak_rss;
                    dt = o[0] > dt ? o[0] : dt;
                    acc[0] = o[1] > acc[0] ? o[1] : acc[0];
                    acc[3] = o[4] > acc[3] ? o[4] : acc[3];
                    acc[2] += o[3];
                    acc[5] += o[6];
                }
            }
            double tps = (double)decode_tokens / dt;
            if (bm->attention == ATTENTION_FULL && full_tps == 0.0) full_tps = tps;
            // Achieved bandwidth per step kind: every rank's weights + K/V reads.
            double pct[2] = {0, 0}, ms[2] = {0, 0};
            for (int k = 0; k < 2; k++) {
                const double *a = acc + 3 * k;
                if (a[1] == 0) continue;
                ms[k] = 1e3 * a[0] / a[1];
                double bytes = weight_bytes * cm->size + a[2] / a[1];
                pct[k] = 100.0 * bytes / (a[0] / a[1]) / 1e9 / bandwidth_gbs;
            }
            char vs[16] = "-", name[64];
            if (full_tps > 0 && bm->attention != ATTENTION_FULL) snprintf(vs, sizeof(vs), "%.2fx", tps / full_tps);
            if (bm->attention == ATTENTION_RECYCLED && !bm->k_explicit)
                snprintf(name, sizeof(name), "%.52s:k=%lld", bm->name, (long long)ro.k);
            else if (policy && !bm->k_explicit)
                snprintf(name, sizeof(name), "%.47s:budget=%lld", bm->name, (long long)po.budget);
            else
                snprintf(name, sizeof(name), "%.63s", bm->name);
            fprintf(out, "  %-8s %-44s %6lld %6lld %8.1f %7s %6.0f %8.1f %8.1f %6.1f%% %6.1f%% %11.0f %8.1f%s\n",
                    "decode", name, (long long)D, (long long)decode_tokens, tps, vs, acc[1], ms[0], ms[1], pct[0],
                    pct[1], comm_per_step, kv_mib, synthetic && D > 0 ? "  synthetic fill" : "");
            fflush(out);
            bench_row *row = &rows[n_rows++];
            *row = (bench_row){.test = "decode", .depth = D, .tokens = decode_tokens, .seconds = dt, .tok_s = tps,
                               .vs_full = full_tps > 0 && bm->attention != ATTENTION_FULL ? tps / full_tps : 0.0,
                               .n_full = acc[1], .ms_full = ms[0], .ms_rec = ms[1],
                               .kv_read_per_token = (acc[2] + acc[5]) / (double)decode_tokens,
                               .comm_per_token = comm_per_step, .kv_mib = kv_mib, .peak_rss_mib = peak_rss,
                               .budget = bm->attention == ATTENTION_RECYCLED ? ro.k : policy ? po.budget : -1,
                               .wrong = -1, .synthetic = synthetic && D > 0};
            snprintf(row->method, sizeof(row->method), "%.63s", bm->name);
            row_method[n_rows - 1 - depth_rows] = mi;
        }
        if (D <= verify_max && !(synthetic && D > 0)) {  // a synthetic cache is no model's: nothing to check against
            // Independent path: prefill D+1 tokens at once (tiled GEMM attention).
            engine_reset(e);
            if (engine_set_attention(e, ATTENTION_FULL, NULL, NULL, &err)) cli_die_err(&err);
            if (engine_prefill(e, ids, D + 1, NULL, NULL, NULL, &err)) cli_die_err(&err);
            memcpy(ref_logits, engine_logits(e), (size_t)V * sizeof(float));
        }
        for (int r = depth_rows; r < n_rows; r++) {
            const int mi = row_method[r - depth_rows];
            const method_spec *bm = &methods[mi];
            const int policy = attention_kind_is_policy(bm->attention);
            const char *against = "n/a";
            if (have_first[mi] && D <= verify_max && !(synthetic && D > 0)) {
                const float *ref = ref_logits;
                against = "one-shot full-attention prefill";
                if (policy && rows[r].budget < D) {
                    // The same method from a fresh prefill: compression from a
                    // prompt of its own instead of a truncated, switched cache.
                    kvpolicy_opts po = bm->po;
                    po.budget = rows[r].budget;
                    engine_reset(e);
                    if (engine_set_attention(e, bm->attention, NULL, &po, &err) ||
                        engine_prefill(e, ids, D, NULL, NULL, NULL, &err) || engine_decode(e, ids[D], &err))
                        cli_die_err(&err);
                    ref = engine_logits(e);
                    against = "the same method from a fresh prefill";
                }
                rows[r].wrong = count_wrong(first_logits + (size_t)mi * (size_t)V, ref, V);
                total_wrong += rows[r].wrong;
            }
            char wrong_s[24] = "n/a";
            if (rows[r].wrong >= 0) snprintf(wrong_s, sizeof(wrong_s), "%lld", (long long)rows[r].wrong);
            fprintf(out, "  %-8s %-44s %6lld: %s logits of the first step differ from %s\n", "check", bm->name,
                    (long long)D, wrong_s, against);
            if (csv) csv_row(csv, &rows[r], cm->size, n_threads, kv_name, command);
        }
        if (csv) fflush(csv);
        free(row_method);
    }
    const model_config *mc = &m.cfg;
    fprintf(out, "#\n# n_full: timed steps with full attention in some layer; ms/full, ms/rec: mean time of those\n"
            "# steps and of all-recycled steps; %%bw_f, %%bw_r: their bytes read (weights on every rank + K/V\n"
            "# read) per second as a fraction of --bandwidth-gbs\n");
    fprintf(out, "# comm B/step: bytes each rank receives per decode step; for full attention n_layer x (n_ranks - 1)\n"
            "# x n_head x (head_dim + 1) x 4 = %lld (the (o, lse) states of the other ranks); recycled steps: 0\n",
            (long long)(mc->n_layer * (cm->size - 1) * mc->n_head * (mc->head_dim + 1) * 4));
    fprintf(out, "# peak RSS %.1f MiB (rank 0); check lines count logits of each method's first decode step that\n"
            "# differ from its reference by more than %.0e x the reference's largest |logit| (n/a: not checked)\n",
            cli_peak_rss_mib(), BENCH_WRONG_RTOL);
    fprintf(out, "# reproduce: %s%s\n", cm->size > 1 ? "launch/mpirun.sh -np N -- " : "", command);
    if (csv && fclose(csv)) cli_die("--csv %s: write error", csv_path);
    if (rank0 && json_path)
        json_write(json_path, rows, n_rows, model_path, cm->size, n_threads, kv_name, bandwidth_gbs, command);
    free(rows);
    if (!rank0) fclose(out);
    free(first_logits);
    free(ref_logits);
    free(have_first);
    free(ids);
    engine_destroy(e);
    model_free(&m);
    comm_destroy(cm);
    return total_wrong ? 1 : 0;
}
