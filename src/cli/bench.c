// recall bench: prefill and decode speed on a model, with the achieved memory
// bandwidth of decode and a correctness check in the same run.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/config.h"
#include "engine/engine.h"

#define MAX_LIST 16
#define BENCH_SEED 1234

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall bench -m MODEL [options]\n"
            "\n"
            "Measures prefill tokens/s for each prompt length and decode tokens/s at each context\n"
            "depth, with the bytes read per decode token (weights + K/V) and the achieved fraction\n"
            "of the memory bandwidth. Prompts are random token ids (speed does not depend on them).\n"
            "Each decode depth is checked: the first decode step's logits must match a one-shot\n"
            "prefill of the same tokens (column #wrong; checked where depth <= --verify-max).\n"
            "\n"
            "  -m, --model FILE          GGUF model (required)\n"
            "      --prefill LIST        prompt lengths (default 512,4096)\n"
            "      --depths LIST         decode context depths (default 0,2048,8192)\n"
            "      --decode-tokens N     timed decode steps per depth (default 64)\n"
            "      --reps N              prefill repetitions, best is reported (default 2)\n"
            "      --threads N           CPU threads (default: OMP_NUM_THREADS, else all cores)\n"
            "      --kv-type f16|f32     KV cache type (default f16)\n"
            "      --bandwidth-gbs X     machine read bandwidth for the roofline (default 31.6, the\n"
            "                            2-thread figure measured on the project's 2-core machines)\n"
            "      --verify-max N        largest depth to verify (default 2048)\n"
            "      --config FILE         read flags from FILE: 'key = value' lines whose keys are the\n"
            "                            long flags above, optional [bench] section, # comments;\n"
            "                            flags on the command line win\n"
            "  -h, --help                this help\n");
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
    enum { OPT_PREFILL = 256, OPT_DEPTHS, OPT_DECODE, OPT_REPS, OPT_THREADS, OPT_KV, OPT_BW, OPT_VERIFY, OPT_CONFIG };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"prefill", required_argument, 0, OPT_PREFILL},
        {"depths", required_argument, 0, OPT_DEPTHS},  {"decode-tokens", required_argument, 0, OPT_DECODE},
        {"reps", required_argument, 0, OPT_REPS},      {"threads", required_argument, 0, OPT_THREADS},
        {"kv-type", required_argument, 0, OPT_KV},     {"bandwidth-gbs", required_argument, 0, OPT_BW},
        {"verify-max", required_argument, 0, OPT_VERIFY}, {"config", required_argument, 0, OPT_CONFIG},
        {"help", no_argument, 0, 'h'},                 {0, 0, 0, 0}};
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    static const char optstring[] = ":m:h";
    cli_config_merge("bench", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case OPT_PREFILL: n_prefill = cli_parse_int_list("--prefill", optarg, prefill_lens, MAX_LIST, 1, 1 << 22); break;
        case OPT_DEPTHS: n_depths = cli_parse_int_list("--depths", optarg, depths, MAX_LIST, 0, 1 << 22); break;
        case OPT_DECODE: decode_tokens = cli_parse_int("--decode-tokens", optarg, 1, 1 << 20); break;
        case OPT_REPS: reps = cli_parse_int("--reps", optarg, 1, 1000); break;
        case OPT_THREADS: n_threads = (int)cli_parse_int("--threads", optarg, 1, 1024); break;
        case OPT_KV:
            kv_elem = cli_parse_kv_type(optarg);
            break;
        case OPT_BW: bandwidth_gbs = cli_parse_double("--bandwidth-gbs", optarg, 0.001, 1e6); break;
        case OPT_VERIFY: verify_max = cli_parse_int("--verify-max", optarg, -1, 1 << 22); break;
        case OPT_CONFIG: break;  // read by cli_config_merge
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall bench --help')", argv[optind - 1]);
        default: cli_die("unknown option '%s' (see 'recall bench --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s'", argv[optind]);
    if (!model_path) cli_die("missing --model (see 'recall bench --help')");

    model m;
    if (model_load(&m, model_path, &err)) cli_die_err(&err);
    const int64_t V = m.cfg.n_vocab;
    int64_t n_ctx = 1;
    for (int i = 0; i < n_prefill; i++) n_ctx = prefill_lens[i] > n_ctx ? prefill_lens[i] : n_ctx;
    for (int i = 0; i < n_depths; i++) n_ctx = depths[i] + decode_tokens + 2 > n_ctx ? depths[i] + decode_tokens + 2 : n_ctx;
    engine_opts eo = engine_default_opts();
    eo.n_ctx = n_ctx;
    eo.n_threads = n_threads;
    eo.kv_elem = kv_elem;
    eo.comm = cm;
    engine e;
    if (engine_init(&e, &m, &eo, &err)) cli_die_err(&err);
    int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
    random_tokens(ids, n_ctx, V, BENCH_SEED);
    const double weight_bytes = (double)model_weight_bytes_per_token(&m);
    const double kv_bytes_per_pos =
        2.0 * (double)(m.cfg.n_layer * m.cfg.n_head_kv * m.cfg.head_dim) * (kv_elem == KV_F16 ? 2.0 : 4.0);

    // Only rank 0 prints; under several ranks each holds ~1/N of the K/V, so
    // the bandwidth columns count the whole machine's traffic (all ranks).
    FILE *out = rank0 ? stdout : fopen("/dev/null", "w");
    fprintf(out, "# recall bench: %s, %s, %d rank%s x %d threads, KV %s, %lld-token context buffer\n", model_path,
            m.cfg.arch_name, cm->size, cm->size > 1 ? "s" : "", n_threads, kv_elem == KV_F16 ? "f16" : "f32",
            (long long)n_ctx);
    fprintf(out, "# weights read per decode token: %.1f MB per rank; K/V bytes per context token: %.0f; bandwidth %.1f GB/s\n",
            weight_bytes / 1e6, kv_bytes_per_pos, bandwidth_gbs);
    fprintf(out, "#\n# %-8s %8s %10s %12s\n", "test", "tokens", "seconds", "tok/s");
    for (int i = 0; i < n_prefill; i++) {
        double best = 1e30;
        for (int64_t r = 0; r < reps + 1; r++) {  // one untimed warm-up
            engine_reset(&e);
            double t0 = cli_now();
            if (engine_prefill(&e, ids, prefill_lens[i], NULL, NULL, NULL, &err)) cli_die_err(&err);
            double dt = cli_now() - t0;
            if (r > 0 && dt < best) best = dt;
        }
        fprintf(out, "  %-8s %8lld %10.3f %12.1f\n", "prefill", (long long)prefill_lens[i], best,
                (double)prefill_lens[i] / best);
        fflush(out);
    }

    float *first_logits = malloc((size_t)V * sizeof(float));
    fprintf(out, "#\n# %-8s %8s %8s %10s %12s %12s %10s %8s %12s %7s\n", "test", "depth", "tokens", "seconds", "tok/s",
            "MB/token", "GB/s", "%peak", "comm B/step", "#wrong");
    int64_t total_wrong = 0;
    for (int i = 0; i < n_depths; i++) {
        const int64_t D = depths[i];
        engine_reset(&e);
        if (D > 0 && engine_prefill(&e, ids, D, NULL, NULL, NULL, &err)) cli_die_err(&err);
        // Step 1 (untimed) doubles as the correctness probe.
        if (engine_decode(&e, ids[D], &err)) cli_die_err(&err);
        memcpy(first_logits, e.logits, (size_t)V * sizeof(float));
        comm_counters before = cm->counters[COMM_PHASE_DECODE];
        double t0 = cli_now();
        for (int64_t t = 0; t < decode_tokens; t++)
            if (engine_decode(&e, ids[D + 1 + t], &err)) cli_die_err(&err);
        double dt = cli_now() - t0;
        // Every rank's clock ends when its last step ends; report the slowest.
        double dts[64];
        if (cm->size <= 64 && comm_allgather(cm, &dt, sizeof(dt), dts, &err) == 0)
            for (int r = 0; r < cm->size; r++) dt = dts[r] > dt ? dts[r] : dt;
        double comm_per_step =
            (double)(cm->counters[COMM_PHASE_DECODE].bytes_recv - before.bytes_recv) / (double)decode_tokens;
        int64_t wrong = -1;  // -1: not verified
        if (D <= verify_max) {
            // Independent path: prefill D+1 tokens at once (tiled GEMM attention).
            engine_reset(&e);
            if (engine_prefill(&e, ids, D + 1, NULL, NULL, NULL, &err)) cli_die_err(&err);
            wrong = 0;
            for (int64_t v = 0; v < V; v++)
                if (!isfinite(first_logits[v]) || fabsf(first_logits[v] - e.logits[v]) > 1e-2f + 1e-3f * fabsf(e.logits[v]))
                    wrong++;
        }
        total_wrong += wrong > 0 ? wrong : 0;
        double tps = (double)decode_tokens / dt;
        double bytes = weight_bytes * cm->size + kv_bytes_per_pos * ((double)D + 1.0 + (double)decode_tokens / 2.0);
        double gbs = bytes * tps / 1e9;
        char wrong_s[24];
        if (wrong < 0) snprintf(wrong_s, sizeof(wrong_s), "n/a");
        else snprintf(wrong_s, sizeof(wrong_s), "%lld", (long long)wrong);
        fprintf(out, "  %-8s %8lld %8lld %10.3f %12.1f %12.1f %10.2f %7.1f%% %12.0f %7s\n", "decode", (long long)D,
                (long long)decode_tokens, dt, tps, bytes / 1e6, gbs, 100.0 * gbs / bandwidth_gbs, comm_per_step, wrong_s);
        fflush(out);
    }
    const model_config *mc = &m.cfg;
    fprintf(out, "#\n# comm B/step: bytes each rank receives per decode step; expected n_layer x (n_ranks - 1) x n_head x\n"
            "# (head_dim + 1) x 4 = %lld (the (o, lse) states of the other ranks)\n",
            (long long)(mc->n_layer * (cm->size - 1) * mc->n_head * (mc->head_dim + 1) * 4));
    fprintf(out, "# peak RSS %.1f MiB (rank 0); #wrong counts logits of the first decode step that differ from a\n"
            "# one-shot prefill by more than 1e-2 + 1e-3*|x| (n/a: depth above --verify-max)\n", cli_peak_rss_mib());
    fprintf(out, "# reproduce: %srecall bench -m %s --threads %d\n", cm->size > 1 ? "launch/mpirun.sh -np N -- " : "",
            model_path, n_threads);
    if (!rank0) fclose(out);
    free(first_logits);
    free(ids);
    engine_free(&e);
    model_free(&m);
    comm_destroy(cm);
    return total_wrong ? 1 : 0;
}
