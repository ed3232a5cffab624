// recall generate: tokenize a prompt, prefill it, stream decoded tokens.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/attention_opts.h"
#include "backend/kv_format.h"
#include "cli/backend_opts.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "core/hash.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "eval/needle_trace.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_N_PREDICT 128
#define DEFAULT_TOP_P 0.95
#define DEFAULT_SEED 42

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall generate -m MODEL (-p TEXT | -f FILE) [options]\n"
            "\n"
            "Decodes text with a GGUF model (architectures llama, qwen2; weights F32, F16, BF16,\n"
            "Q8_0, Q4_0, Q4_1). Generated text streams to stdout; speed and memory go to stderr.\n"
            "\n"
            "  -m, --model FILE        GGUF model file (required)\n"
            "  -p, --prompt TEXT       prompt text\n"
            "  -f, --file FILE         read the prompt from FILE (at most 256 MiB)\n"
            "  -n, --n-predict N       tokens to generate, stops earlier at end of generation (default %d)\n"
            "      --chat              wrap the prompt in the model's chat template (off by default)\n"
            "      --system TEXT       system message for --chat (default: the template's own)\n"
            "      --temp T            sampling temperature; 0 = greedy (default 0)\n"
            "      --top-p P           nucleus sampling mass, used when --temp > 0 (default %.2f)\n"
            "      --seed S            sampling seed (default %d)\n"
            "      --ctx N             context size in tokens: prompt + generated (default: the model's\n"
            "                          trained length, capped at prompt + N)\n"
            "      --threads N         CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
            "      --kv-type TYPE      KV cache type: f16 (default), f32, q8_0 or q4_0 (GGML blocks;\n"
            "                          the block types need a head_dim that is a multiple of 32)\n"
            "      --prefill-block N   prompt tokens per prefill block (default 512)\n"
            "      --special           print control tokens such as <|im_end|> as text\n"
            "      --zigzag            multi-rank: give each rank two prompt chunks (early + late)\n"
            "                          instead of one contiguous range, balancing causal attention work\n",
            DEFAULT_N_PREDICT, DEFAULT_TOP_P, DEFAULT_SEED);
    cli_backend_usage(out);
    cli_attention_usage(out);
    fprintf(out,
            "      --stats             per-rank statistics on stderr: collective calls and bytes per\n"
            "                          phase, KV positions and bytes held, prefill scratch, peak RSS;\n"
            "                          with recycled attention also full/recycled steps per layer, K/V\n"
            "                          bytes read per step and the rebuilds' rows sent and reused\n"
            "      --trace FILE        JSON lines, one per decode step (time, full layers, K/V bytes read,\n"
            "                          collective calls and bytes, a hash of the recycled selections, and of\n"
            "                          the rows a --kv-budget policy holds, per layer);\n"
            "                          rank r > 0 writes FILE.rank<r>\n"
            "      --trace-needle FILE JSON lines: at every step, per layer and KV head, whether each token of\n"
            "                          --needle in the prompt is in the recycled cache (or the policy's kept\n"
            "                          set), its rank among the scores that chose it, and the attention full\n"
            "                          attention gives it (schema: README, 'Needle tracing'); rank 0 writes\n"
            "      --needle TEXT       the answer to trace: every prompt token overlapping an occurrence of\n"
            "                          TEXT (e.g. the expected answer '8353752'); needed by --trace-needle\n"
            "      --logits-out FILE   write every step's chosen token and logits (rank 0; int32 + float32\n"
            "                          x n_vocab per step) and check all ranks' logits are bitwise equal\n"
            "      --config FILE       read flags from FILE: 'key = value' lines whose keys are the long\n"
            "                          flags above (chat = true), optional [generate] section, # comments;\n"
            "                          flags on the command line win (see configs/generate-example.ini);\n"
            "                          at most 1 MiB\n"
            "  -h, --help              this help\n"
            "\n"
            "Under mpirun/srun (several ranks) the KV cache is sharded by position across ranks; every\n"
            "rank loads the model, rank 0 reads and tokenizes the prompt and prints. Every rank computes\n"
            "the same logits bit for bit and samples the same token with the same seed, so no token is\n"
            "broadcast: recycled steps exchange nothing at all. The logits are hashed and compared\n"
            "across ranks at the end. A failing rank ends the whole job and names itself. Test hook:\n"
            "RECALL_INJECT_FAILURE=R makes rank R fail after loading the model.\n");
}

typedef struct progress_state {
    int tty;
    double t0;
    int64_t last_reported;
} progress_state;

static void on_progress(void *user, int64_t done, int64_t total) {
    progress_state *p = user;
    double el = cli_now() - p->t0;
    double rate = el > 0 ? (double)done / el : 0.0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0.0;
    if (p->tty) {
        fprintf(stderr, "\rprefill %lld/%lld tokens (%3.0f%%, %.0f tok/s, ETA %.0f s)   ", (long long)done,
                (long long)total, 100.0 * (double)done / (double)total, rate, eta);
        if (done == total) fprintf(stderr, "\r%*s\r", 70, "");
    } else if (done - p->last_reported >= total / 10 && done < total) {
        fprintf(stderr, "prefill %lld/%lld tokens (%.0f tok/s, ETA %.0f s)\n", (long long)done, (long long)total, rate,
                eta);
        p->last_reported = done;
    }
}

// One line per rank on stderr (rank 0 prints what it gathers).
typedef struct rank_stats {
    comm_counters counters[COMM_PHASE_COUNT];
    int64_t n_local;
    double kv_mib, prefill_scratch_mib, peak_rss_mib, recycled_mib;
    int64_t kv_bytes_read, rows_evicted;
    recycle_stats rs;
} rank_stats;

static void print_rank_stats(comm *cm, const engine *e, uint64_t hash) {
    rank_stats mine = {.n_local = engine_rows_held(e), .kv_mib = (double)engine_kv_bytes_used(e) / (1024.0 * 1024.0),
                       .prefill_scratch_mib = (double)engine_get_stats(e)->prefill_transient_bytes / (1024.0 * 1024.0),
                       .peak_rss_mib = cli_peak_rss_mib()};
    memcpy(mine.counters, cm->counters, sizeof(mine.counters));
    mine.kv_bytes_read = engine_get_stats(e)->kv_bytes_read;
    if (engine_policy(e)) {
        mine.n_local = kv_store_rows(&engine_policy(e)->store);
        mine.rows_evicted = engine_policy(e)->stats.rows_evicted;
    }
    if (engine_recycle(e)) {
        mine.rs = engine_recycle(e)->stats;
        mine.recycled_mib = (double)engine_recycle(e)->cache.rows.n_bytes / (1024.0 * 1024.0);
    }
    rank_stats *all = malloc((size_t)cm->size * sizeof(rank_stats));
    rc_err err = {{0}};
    if (comm_allgather(cm, &mine, sizeof(mine), all, &err)) cli_die_err(&err);
    if (cm->rank == 0) {
        const double steps = engine_get_stats(e)->n_decode_tokens > 0 ? (double)engine_get_stats(e)->n_decode_tokens : 1.0;
        fprintf(stderr, "recall: stats: %d rank%s, logits bitwise identical on all ranks (hash %016llx)\n", cm->size,
                cm->size > 1 ? "s" : "", (unsigned long long)hash);
        for (int r = 0; r < cm->size; r++) {
            const rank_stats *rs = &all[r];
            const comm_counters *p = &rs->counters[COMM_PHASE_PREFILL], *d = &rs->counters[COMM_PHASE_DECODE];
            fprintf(stderr,
                    "recall: stats: rank %d: KV %lld %s (%.1f MiB of %s) | prefill %lld calls, %.2f MB sent, %.2f MB "
                    "received, scratch %.1f MiB | decode %lld calls, %.0f bytes received per step | peak RSS %.1f MiB\n",
                    r, (long long)rs->n_local, engine_policy(e) ? "rows kept (all layers and heads)" : "positions", rs->kv_mib,
                    kv_elem_name(engine_get_opts(e)->kv_elem),
                    (long long)p->n_calls, (double)p->bytes_sent / 1e6,
                    (double)p->bytes_recv / 1e6, rs->prefill_scratch_mib, (long long)d->n_calls,
                    (double)d->bytes_recv / steps, rs->peak_rss_mib);
            fprintf(stderr, "recall: stats: rank %d: decode attention read %.2f MB of K/V per step\n", r,
                    (double)rs->kv_bytes_read / steps / 1e6);
            if (engine_policy(e))
                fprintf(stderr, "recall: stats: rank %d: %s evicted %lld rows while decoding%s\n", r,
                        attention_kind_name(engine_get_opts(e)->attention), (long long)rs->rows_evicted,
                        engine_get_opts(e)->retain_prompt_cache ? "" : "; the full cache was freed after the prompt");
            if (engine_recycle(e))
                fprintf(stderr,
                        "recall: stats: rank %d: recycled cache %.1f MiB | %lld layer rebuilds: %lld rows fetched, %lld "
                        "reused | rows sent %.3f MB, %.3f MB saved by not resending held rows\n",
                        r, rs->recycled_mib, (long long)rs->rs.n_rebuilds, (long long)rs->rs.rows_fetched,
                        (long long)rs->rs.rows_reused, (double)rs->rs.bytes_sent / 1e6, (double)rs->rs.bytes_saved / 1e6);
        }
        const engine_stats *s = engine_get_stats(e);
        const int64_t n_rec_steps = s->n_decode_tokens - s->n_full_steps;
        if (engine_policy(e))
            fprintf(stderr, "recall: stats: decode steps: %lld under %s (%.1f ms each)\n", (long long)s->n_decode_tokens,
                    attention_kind_name(engine_get_opts(e)->attention),
                    s->n_decode_tokens ? 1e3 * s->decode_seconds / (double)s->n_decode_tokens : 0.0);
        else
            fprintf(stderr, "recall: stats: decode steps: %lld with full attention (%.1f ms each), %lld all-recycled (%.1f ms each)\n",
                (long long)s->n_full_steps, s->n_full_steps ? 1e3 * s->full_step_seconds / (double)s->n_full_steps : 0.0,
                (long long)n_rec_steps,
                n_rec_steps ? 1e3 * (s->decode_seconds - s->full_step_seconds) / (double)n_rec_steps : 0.0);
        if (engine_recycle(e)) {
            fprintf(stderr, "recall: stats: full/recycled steps per layer:");
            for (int64_t l = 0; l < engine_model(e)->cfg.n_layer; l++)
                fprintf(stderr, " %lld/%lld", (long long)s->layer_full[l], (long long)s->layer_recycled[l]);
            fprintf(stderr, "\n");
        }
    }
    free(all);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// FNV-1a over the sorted position sets of the recycled cache of every layer
// that `rebuilt` marks (NULL: all layers): equal on every rank count exactly
// when the selections are. 0 when nothing was rebuilt. The step lines hash
// every layer at every step: between rebuilds each new token evicts the
// lowest-scored row of a full cache, and a near-tie there changes the rows
// attended without any rebuild.
static uint64_t selection_hash(const engine *e, const uint8_t *rebuilt) {
    if (!engine_recycle(e)) return 0;
    const recycle_cache *c = &engine_recycle(e)->cache;
    int64_t *pos = malloc((size_t)c->k * sizeof(int64_t));
    uint64_t h = FNV1A_INIT;
    int any = 0;
    for (int64_t l = 0; l < engine_model(e)->cfg.n_layer; l++) {
        if (rebuilt && !rebuilt[l]) continue;
        any = 1;
        for (int64_t kh = 0; kh < engine_model(e)->cfg.n_head_kv; kh++) {
            int64_t n = recycle_cache_positions(c, l, kh, pos);
            qsort(pos, (size_t)n, sizeof(int64_t), cmp_i64);
            const int64_t words[3] = {l, kh, n};
            h = fnv1a(fnv1a(h, words, sizeof(words)), pos, (size_t)n * sizeof(int64_t));
        }
    }
    free(pos);
    return any ? h : 0;
}

// The KV-compression policy's kept sets per layer, over all ranks (XOR of
// every rank's kvpolicy_state.sel_hash) into out: (n_layer). The exchange is
// the trace's own: it is left out of the counters, so a traced run reports
// the traffic of an untraced one.
static void policy_layer_hashes(comm *cm, const engine *e, uint64_t *out) {
    const int64_t L = engine_model(e)->cfg.n_layer;
    memcpy(out, engine_policy(e)->sel_hash, (size_t)L * sizeof(uint64_t));
    if (cm->size == 1) return;
    uint64_t *all = malloc((size_t)(L * cm->size) * sizeof(uint64_t));
    if (!all) cli_die("out of memory for the trace");
    const comm_counters saved = cm->counters[cm->phase];
    rc_err err = {{0}};
    if (comm_allgather(cm, engine_policy(e)->sel_hash, (size_t)L * sizeof(uint64_t), all, &err)) cli_die_err(&err);
    cm->counters[cm->phase] = saved;
    memset(out, 0, (size_t)L * sizeof(uint64_t));
    for (int r = 0; r < cm->size; r++)
        for (int64_t l = 0; l < L; l++) out[l] ^= all[r * L + l];
    free(all);
}

// ,"policy_layers":"h0,h1,...": the rows the policy holds, per layer (none
// without a policy).
static void write_policy_hashes(FILE *tf, comm *cm, const engine *e) {
    if (!engine_policy(e)) return;
    const int64_t L = engine_model(e)->cfg.n_layer;
    uint64_t *h = malloc((size_t)L * sizeof(uint64_t));
    if (!h) cli_die("out of memory for the trace");
    policy_layer_hashes(cm, e, h);
    fprintf(tf, ",\"policy_layers\":\"");
    for (int64_t l = 0; l < L; l++) fprintf(tf, "%s%016llx", l ? "," : "", (unsigned long long)h[l]);
    fprintf(tf, "\"");
    free(h);
    // ,"policy_cuts":"g:s:p,...": per layer the narrowest ranked cut of the
    // step (gap, score and position of the row kept there; "-": none), so a
    // kept set that differs between runs can be judged a near-tie or a bug.
    const kvpolicy_state *ps = engine_policy(e);
    fprintf(tf, ",\"policy_cuts\":\"");
    for (int64_t l = 0; l < L; l++) {
        if (l) fputc(',', tf);
        if (ps->cut_pos[l] < 0) fputc('-', tf);
        else fprintf(tf, "%.9g:%.9g:%lld", (double)ps->cut_gap[l], (double)ps->cut_score[l], (long long)ps->cut_pos[l]);
    }
    fprintf(tf, "\"");
}

static void write_trace_step(FILE *tf, const engine *e, comm *cm, int64_t step, int32_t token) {
    const engine_step *st = engine_last_step(e);
    const int64_t n_layer = engine_model(e)->cfg.n_layer;
    char layers[1024];
    int64_t n = n_layer < (int64_t)sizeof(layers) - 1 ? n_layer : (int64_t)sizeof(layers) - 1;
    for (int64_t l = 0; l < n; l++) layers[l] = st->layer_full[l] ? 'F' : 'R';
    layers[n] = '\0';
    fprintf(tf,
            "{\"event\":\"step\",\"rank\":%d,\"step\":%lld,\"pos\":%lld,\"token\":%d,\"seconds\":%.6f,"
            "\"full_layers\":%lld,\"layers\":\"%s\",\"kv_bytes_read\":%lld,\"comm_calls\":%lld,\"comm_bytes\":%lld,"
            "\"rows_reused\":%lld,\"rows_fetched\":%lld,\"selection\":\"%016llx\"",
            cm->rank, (long long)step, (long long)st->pos, token, st->seconds, (long long)st->n_full_layers, layers,
            (long long)st->kv_bytes_read, (long long)st->comm_calls, (long long)st->comm_bytes,
            (long long)st->rows_reused, (long long)st->rows_fetched,
            (unsigned long long)selection_hash(e, NULL));
    write_policy_hashes(tf, cm, e);
    fprintf(tf, "}\n");
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *system_msg = NULL;
    int64_t n_predict = DEFAULT_N_PREDICT, n_ctx = 0, prefill_block = 512, seed = DEFAULT_SEED;
    double temp = 0.0, top_p = DEFAULT_TOP_P;
    int chat = 0, show_special = 0, n_threads = cli_default_threads(), kv_elem = KV_F16;
    int zigzag = 0, want_stats = 0;
    const char *logits_out = NULL, *trace_path = NULL, *needle_path = NULL, *needle_text = NULL;
    engine_opts eo = engine_default_opts();
    cli_backend cbk = cli_backend_default();
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    enum { OPT_CHAT = 256, OPT_SYSTEM, OPT_TEMP, OPT_TOP_P, OPT_SEED, OPT_CTX, OPT_THREADS, OPT_KV, OPT_BLOCK, OPT_SPECIAL,
           OPT_ZIGZAG, OPT_STATS, OPT_LOGITS_OUT, OPT_CONFIG, OPT_TRACE, OPT_TRACE_NEEDLE, OPT_NEEDLE };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},     {"n-predict", required_argument, 0, 'n'},
        {"chat", no_argument, 0, OPT_CHAT},      {"system", required_argument, 0, OPT_SYSTEM},
        {"temp", required_argument, 0, OPT_TEMP}, {"top-p", required_argument, 0, OPT_TOP_P},
        {"seed", required_argument, 0, OPT_SEED}, {"ctx", required_argument, 0, OPT_CTX},
        {"threads", required_argument, 0, OPT_THREADS}, {"kv-type", required_argument, 0, OPT_KV},
        {"prefill-block", required_argument, 0, OPT_BLOCK}, {"special", no_argument, 0, OPT_SPECIAL},
        {"zigzag", no_argument, 0, OPT_ZIGZAG},  {"stats", no_argument, 0, OPT_STATS},
        {"logits-out", required_argument, 0, OPT_LOGITS_OUT}, {"config", required_argument, 0, OPT_CONFIG},
        {"trace", required_argument, 0, OPT_TRACE}, {"trace-needle", required_argument, 0, OPT_TRACE_NEEDLE},
        {"needle", required_argument, 0, OPT_NEEDLE}, CLI_ATTENTION_OPTIONS, CLI_BACKEND_OPTIONS,
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    static const char optstring[] = ":m:p:f:n:h";
    cli_config_merge("generate", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 'n': n_predict = cli_parse_int("--n-predict", optarg, 0, INT32_MAX); break;
        case OPT_CHAT: chat = 1; break;
        case OPT_SYSTEM: system_msg = optarg; break;
        case OPT_TEMP: temp = cli_parse_double("--temp", optarg, 0.0, 100.0); break;
        case OPT_TOP_P: top_p = cli_parse_double("--top-p", optarg, 1e-6, 1.0); break;
        case OPT_SEED: seed = cli_parse_int("--seed", optarg, 0, INT64_MAX); break;
        case OPT_CTX: n_ctx = cli_parse_int("--ctx", optarg, 1, (int64_t)1 << 24); break;
        case OPT_THREADS: n_threads = (int)cli_parse_int("--threads", optarg, 1, 1024); break;
        case OPT_KV:
            kv_elem = cli_parse_kv_type(optarg);
            break;
        case OPT_BLOCK: prefill_block = cli_parse_int("--prefill-block", optarg, 1, 1 << 16); break;
        case OPT_SPECIAL: show_special = 1; break;
        case OPT_ZIGZAG: zigzag = 1; break;
        case OPT_STATS: want_stats = 1; break;
        case OPT_LOGITS_OUT: logits_out = optarg; break;
        case OPT_CONFIG: break;  // read by cli_config_merge
        case OPT_TRACE: trace_path = optarg; break;
        case OPT_TRACE_NEEDLE: needle_path = optarg; break;
        case OPT_NEEDLE: needle_text = optarg; break;
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);  // under MPI: finalize, so mpirun sees a clean exit
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall generate --help')", argv[optind - 1]);
        default:
            if (cli_attention_option(c, optarg, &eo) || cli_backend_option(c, optarg, &cbk)) break;
            cli_die("unknown option '%s' (see 'recall generate --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s' (see 'recall generate --help')", argv[optind]);
    if (!model_path) cli_die("missing --model (see 'recall generate --help')");
    if (!prompt == !prompt_file) cli_die("give exactly one of --prompt and --file");
    if (system_msg && !chat) cli_die("--system needs --chat");
    if (!needle_path != !needle_text) cli_die("--trace-needle FILE and --needle TEXT go together");
    if (needle_text && !*needle_text) cli_die("--needle: the text is empty");
    cli_backend_check(&cbk, cm);

    model m;
    cli_load_model(cm, &m, model_path);
    const char *inject = getenv("RECALL_INJECT_FAILURE");
    if (inject && *inject && atoi(inject) == cm->rank) cli_die("injected failure (RECALL_INJECT_FAILURE=%s)", inject);

    // Rank 0 reads and tokenizes the prompt, then every rank gets the ids.
    // Every rank holds the tokenizer: each picks the next token itself and
    // must see the same end of generation.
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);
    if (rank0) {
        size_t prompt_bytes = 0;
        char *prompt_buf = prompt_file ? cli_read_file(prompt_file, "prompt file", &prompt_bytes) : NULL;
        if (prompt) prompt_bytes = strlen(prompt);
        const char *text = prompt ? prompt : prompt_buf;
        char *chat_text = NULL;
        if (chat) {
            char *user = strndup(text, prompt_bytes);
            if (chat_format(&m.file, system_msg, user, &chat_text, &err)) cli_die_err(&err);
            free(user);
            text = chat_text;
            prompt_bytes = strlen(chat_text);
        }
        size_t n = 0;
        if (tokenizer_encode(tok, text, prompt_bytes, tokenizer_add_bos(tok), chat, &ids, &n, &err)) cli_die_err(&err);
        n_ids = (int64_t)n;
        if (n_ids == 0) cli_die("the prompt is empty after tokenization");
        free(chat_text);
        free(prompt_buf);
    }
    if (comm_bcast(cm, &n_ids, sizeof(n_ids), 0, &err)) cli_die_err(&err);
    if (!rank0) ids = malloc((size_t)n_ids * sizeof(int32_t));
    if (comm_bcast(cm, ids, (size_t)n_ids * sizeof(int32_t), 0, &err)) cli_die_err(&err);

    if (n_ctx == 0) {
        n_ctx = m.cfg.n_ctx_train;
        if (n_ids + n_predict < n_ctx) n_ctx = n_ids + n_predict;
    }
    if (n_ids > n_ctx)
        cli_die("the prompt has %lld tokens, more than the context size %lld (--ctx)", (long long)n_ids,
                (long long)n_ctx);
    // The needle's prompt tokens, found the same way on every rank.
    needle_trace *nt = NULL;
    FILE *nf = NULL;
    if (needle_path) {
        if (!(nt = needle_trace_create(NULL, cm, &m.cfg, &err))) cli_die_err(&err);
        int truncated = 0;
        if (needle_trace_locate(nt, tok, ids, n_ids, &needle_text, 1, NULL, 0, &truncated) == 0)
            cli_die("--needle: '%s' does not occur in the prompt", needle_text);
        if (rank0 && !(nf = fopen(needle_path, "w"))) cli_die("%s: cannot open for writing", needle_path);
        needle_trace_set_output(nt, nf);
        if (truncated && rank0)
            fprintf(stderr, "recall: note: --needle occurs more than %d tokens' worth; tracing the first %d\n",
                    NEEDLE_TRACE_MAX_POSITIONS, NEEDLE_TRACE_MAX_POSITIONS);
        needle_trace_install(nt, &eo);
    }
    // Settings errors before any note, so that a failure stays one line on stderr.
    if (kv_elem_check(kv_elem, m.cfg.head_dim, &err)) cli_die_err(&err);
    cli_attention_defaults(&eo, &m);
    cli_attention_check(&eo, n_ctx, &m.cfg);
    if (n_ids + n_predict > n_ctx) {
        if (rank0) fprintf(stderr, "recall: note: generation will stop at the context size %lld\n", (long long)n_ctx);
        n_predict = n_ctx - n_ids;
    }

    eo.n_ctx = n_ctx;
    eo.n_threads = n_threads;
    eo.kv_elem = kv_elem;
    eo.prefill_block = prefill_block;
    eo.comm = cm;
    eo.zigzag = zigzag;
    eo.backend = cbk.ops;
    eo.device = cbk.device;
    engine *e = engine_create(&m, &eo, &err);
    if (!e) cli_die_err(&err);
    sampler smp;
    if (sampler_init(&smp, m.cfg.n_vocab, (float)temp, (float)top_p, (uint64_t)seed, &err)) cli_die_err(&err);

    int32_t *out_ids = NULL;
    int64_t n_out = 0;
    if (nt) {
        char desc[256];
        cli_attention_describe(&eo, desc, sizeof(desc));
        needle_trace_begin(nt, e, n_ids, attention_kind_name(eo.attention), desc, NULL, eo.recycle.group_agg,
                           eo.recycle.pool_kernel);
        if (!(out_ids = malloc((size_t)(n_predict > 0 ? n_predict : 1) * sizeof(int32_t)))) cli_die("out of memory");
    }
    progress_state prog = {.tty = isatty(STDERR_FILENO), .t0 = cli_now(), .last_reported = 0};
    int long_prompt = n_ids > prefill_block && rank0;
    if (engine_prefill(e, ids, n_ids, NULL, long_prompt ? on_progress : NULL, &prog, &err)) cli_die_err(&err);
    cli_check_logits(engine_logits(e), m.cfg.n_vocab, "the prefill of %lld prompt tokens", (long long)n_ids);

    FILE *lf = NULL, *tf = NULL;
    if (logits_out && rank0 && !(lf = fopen(logits_out, "wb"))) cli_die("%s: cannot open for writing", logits_out);
    if (trace_path) {
        char path[4096];
        if (cm->rank == 0) snprintf(path, sizeof(path), "%s", trace_path);
        else snprintf(path, sizeof(path), "%s.rank%d", trace_path, cm->rank);
        if (!(tf = fopen(path, "w"))) cli_die("%s: cannot open for writing", path);
        const comm_counters *pc = &cm->counters[COMM_PHASE_PREFILL];
        fprintf(tf, "{\"event\":\"prefill\",\"rank\":%d,\"ranks\":%d,\"tokens\":%lld,\"seconds\":%.6f,"
                "\"comm_calls\":%lld,\"comm_bytes\":%lld,\"selection\":\"%016llx\"}\n",
                cm->rank, cm->size, (long long)engine_get_stats(e)->n_prefill_tokens, engine_get_stats(e)->prefill_seconds,
                (long long)pc->n_calls, (long long)(pc->bytes_sent + pc->bytes_recv),
                (unsigned long long)selection_hash(e, NULL));
    }
    uint64_t logits_hash = FNV1A_INIT;  // over every step's logits
    tokenizer_stream st = {.show_special = show_special};
    size_t piece_cap = rank0 ? tokenizer_decode_cap(tok) : 1;
    char *piece = malloc(piece_cap + 1);
    for (int64_t i = 0; i < n_predict; i++) {
        logits_hash = fnv1a(logits_hash, engine_logits(e), (size_t)m.cfg.n_vocab * sizeof(float));
        // Every rank chooses from the same logits with the same sampler state.
        int32_t next = sampler_pick(&smp, engine_logits(e));
        if (nt) needle_trace_step(nt, e, i, next);
        if (lf) {
            fwrite(&next, sizeof(next), 1, lf);
            fwrite(engine_logits(e), sizeof(float), (size_t)m.cfg.n_vocab, lf);
        }
        if (tokenizer_is_eog(tok, next)) break;
        if (out_ids) out_ids[n_out++] = next;
        if (rank0) {
            size_t len = tokenizer_decode_stream(tok, &st, next, piece, piece_cap);
            fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
        if (i + 1 == n_predict) break;  // the last token needs no forward pass
        if (engine_decode(e, next, &err)) cli_die_err(&err);
        cli_check_logits(engine_logits(e), m.cfg.n_vocab, "decode step %lld (position %lld)", (long long)(i + 1),
                         (long long)(n_ids + i));
        if (tf) write_trace_step(tf, e, cm, i + 1, next);
    }
    if (lf) fclose(lf);
    if (tf) fclose(tf);
    if (nt) {
        needle_trace_end(nt, tok, out_ids, n_out);
        needle_trace_free(nt);
        free(out_ids);
        if (nf && fclose(nf)) cli_die("%s: write error", needle_path);
    }
    if (rank0) {
        size_t len = tokenizer_stream_flush(tok, &st, piece, piece_cap);
        fwrite(piece, 1, len, stdout);
        printf("\n");
        fflush(stdout);
    }
    free(piece);

    // Every rank's logits must be the same bits at every step.
    uint64_t *hashes = malloc((size_t)cm->size * sizeof(uint64_t));
    if (comm_allgather(cm, &logits_hash, sizeof(logits_hash), hashes, &err)) cli_die_err(&err);
    for (int r = 1; r < cm->size; r++)
        if (hashes[r] != hashes[0]) cli_die("rank %d's logits differ from rank 0's (hash %016llx vs %016llx)", r,
                                            (unsigned long long)hashes[r], (unsigned long long)hashes[0]);

    const engine_stats *s = engine_get_stats(e);
    if (rank0 && engine_recycle(e)) {
        char desc[256];
        cli_attention_describe(&eo, desc, sizeof(desc));
        fprintf(stderr, "recall: %s: %lld of %lld decode steps ran full attention in some layer\n", desc,
                (long long)s->n_full_steps, (long long)s->n_decode_tokens);
        char note[1024];
        if (cli_attention_budgets_note(note, sizeof(note))) fprintf(stderr, "recall: note: %s\n", note);
    }
    if (rank0)
        fprintf(stderr,
                "recall: prefill %lld tokens in %.2f s (%.1f tok/s) | decode %lld tokens in %.2f s (%.1f tok/s) | "
                "%d rank%s x %d threads | KV cache (%s) %.1f MiB%s | peak RSS %.1f MiB\n",
                (long long)s->n_prefill_tokens, s->prefill_seconds,
                s->prefill_seconds > 0 ? (double)s->n_prefill_tokens / s->prefill_seconds : 0.0,
                (long long)s->n_decode_tokens, s->decode_seconds,
                s->decode_seconds > 0 ? (double)s->n_decode_tokens / s->decode_seconds : 0.0, cm->size,
                cm->size > 1 ? "s" : "", n_threads, kv_elem_name(kv_elem), (double)engine_kv_bytes_used(e) / (1024.0 * 1024.0),
                cm->size > 1 ? " on rank 0" : "", cli_peak_rss_mib());
    if (want_stats) print_rank_stats(cm, e, hashes[0]);
    free(hashes);
    sampler_free(&smp);
    engine_destroy(e);
    free(ids);
    tokenizer_free(tok);
    model_free(&m);
    comm_destroy(cm);
    return 0;
}
