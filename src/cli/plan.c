// recall plan: the cost model's prediction (eval/costmodel.h) for a model
// shape, context lengths, rank counts, devices and methods. The "cpu" device
// is this machine, probed at run time with the engine's own kernels.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/kv_format.h"
#include "cli/cli.h"
#include "cli/config.h"
#include "eval/costmodel.h"
#include "model/model.h"
#include "model/quant.h"
#include "policy/dist_select.h"

#define MAX_LIST 16
// Shared-memory Open MPI between processes of one host: a small all-gather
// costs a few microseconds; its bandwidth is a memory copy. Assumed, not probed.
#define CPU_LINK_LATENCY 20e-6
#define CPU_LINK_BW 5e9

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall plan (-m MODEL | --shape NAME) [options]\n"
            "\n"
            "Predicts, per device, method, context and rank count: bytes read, FLOPs, collective calls and\n"
            "bytes per decode step (per rank, the largest shard), memory per rank, and the latency of a full\n"
            "step, of a recycled step and per prefill token. Model-free: only the shape is used.\n"
            "\n"
            "  -m, --model FILE        take the shape and the weight bytes from a GGUF file\n"
            "      --shape NAME        llama-3.1-8b, llama-3.1-70b, qwen2-7b or smollm2-135m (weights Q4_1)\n"
            "      --weight-type T     q4_1 (default), q8_0, f16 or bf16, for --shape\n"
            "      --ctx LIST          context lengths (default 2048,8192,32768)\n"
            "      --ranks LIST        rank counts (default 1,2,4)\n"
            "      --device LIST       cpu (this machine, probed now), h100, h200 (datasheet figures)\n"
            "                          (default cpu)\n"
            "      --attention LIST    full and/or recycled (default full,recycled)\n"
            "      --recycle-k K       recycled rows per layer and KV head (default: ctx / 8, as bench)\n"
            "      --recycle-stride S  a full step every S steps (default 10)\n"
            "      --kv-type TYPE      KV cache type: f16 (default), f32, q8_0 or q4_0 (GGML blocks;\n"
            "                          the block types need a head_dim that is a multiple of 32)\n"
            "      --threads N         cpu: threads per rank (default 1); the probe measures the node on all\n"
            "                          cores and one rank on N threads, and a rank gets the smaller share\n"
            "      --csv FILE          also write the rows as CSV\n"
            "      --config FILE       read flags from FILE ('key = value', keys = the long flags, [plan])\n"
            "  -h, --help              this help\n");
}

// Times fn(arg) (best of reps after a warm-up).
static double best_time(void (*fn)(void *), void *arg, int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = cli_now();
        fn(arg);
        double dt = cli_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

typedef struct probe_args {
    backend be;  // a CPU instance with the probe's thread count
    weight w;
    float *x, *y;
    int64_t n_tok;
    kv_view k, v;
    float *q, *o, *lse;
    int64_t n_keys, n_q, n_kv, hd;
    // the rebuild's selection: raw scores (n_q, n_keys) -> (n_kv, n_keys) -> top n_keys / 8
    float *raw, *agg, *pooled;
    int64_t *pos, *k_of, *n_sel, *idx_dst, *idx_src;
    scored_pos *sel;
    uint8_t *cache_k, *cache_v;  // the recycled cache's rows: (n_kv * n_keys / 8) rows of hd f16
} probe_args;

static void run_gemv(void *p) {
    probe_args *a = p;
    backend_cpu.matmul(&a->be, a->y, a->x, &a->w, a->n_tok);
}

static void run_attn(void *p) {
    probe_args *a = p;
    backend_cpu.attn_decode(&a->be, a->o, a->lse, a->q, &a->k, &a->v, a->n_keys, a->n_q, a->n_kv, a->hd, 0.125f);
}

// The recycled rebuild's selection of one layer (recycle.c select_rows on
// one rank, default settings: GQA max, pool 7), with K = positions / 8 as
// plan's default.
static void run_select(void *p) {
    probe_args *a = p;
    backend_cpu.score_reduce(&a->be, a->agg, a->raw, a->lse, a->n_q, a->n_kv, a->n_keys, a->n_keys, a->n_keys,
                             SCORE_MAX_LOGP);
    backend_cpu.maxpool_rows(&a->be, a->pooled, a->agg, a->n_kv, a->n_keys, 7);
    backend_cpu.topk_rows(&a->be, a->sel, a->n_sel, a->pooled, a->pos, a->n_kv, a->n_keys, a->n_keys, a->k_of,
                          a->n_keys / 8, 0);
}

// Its gather: each selected position's slot in the shard, then its K and V
// rows copied into the cache (recycle.c fetch_rows on one rank).
static void run_gather(void *p) {
    probe_args *a = p;
    const int64_t K = a->n_keys / 8;
    int64_t m = 0;
    for (int64_t h = 0; h < a->n_kv; h++)
        for (int64_t i = 0; i < a->n_sel[h]; i++) {
            const int64_t j = dist_find_pos(a->pos, a->n_keys, a->sel[h * K + i].pos);
            a->idx_dst[m] = h * K + i;
            a->idx_src[m++] = h * a->n_keys + (j < 0 ? 0 : j);
        }
    const size_t row = (size_t)a->hd * 2;
    backend_cpu.copy_rows(&a->be, a->cache_k, a->idx_dst, a->k.data, a->idx_src, m, row);
    backend_cpu.copy_rows(&a->be, a->cache_v, a->idx_dst, a->v.data, a->idx_src, m, row);
}

// This machine, measured with the kernels decode runs: a Q4_1 GEMV over
// 64 MiB of weights (the weight read rate), f16 decode attention over 64 MiB
// of K/V (the K/V read rate), and a 512-token GEMM (prefill FLOP/s).
static cm_device probe_cpu_threads(int n_threads) {
    probe_args a = {0};
    rc_err err = {{0}};
    if (backend_init(&a.be, &backend_cpu, n_threads, -1, &err)) cli_die_err(&err);
    const int64_t n_in = 4096, n_out = 16384, n_tok = 512;  // a prefill block: the BLAS path
    a.w = (weight){.type = GGML_TYPE_Q4_1, .n_in = n_in, .n_out = n_out, .row_bytes = ggml_row_bytes(GGML_TYPE_Q4_1, n_in)};
    uint8_t *wd = malloc(a.w.row_bytes * (size_t)n_out);
    a.x = malloc((size_t)(n_in * n_tok) * sizeof(float));
    a.y = malloc((size_t)(n_out * n_tok) * sizeof(float));
    a.n_q = 12, a.n_kv = 4, a.hd = 64, a.n_keys = 65536;
    const size_t kv_elems = (size_t)(a.n_kv * a.n_keys * a.hd);
    uint16_t *kd = malloc(kv_elems * 2), *vd = malloc(kv_elems * 2);
    a.q = malloc((size_t)(a.n_q * a.hd) * sizeof(float));
    a.o = malloc((size_t)(a.n_q * a.hd) * sizeof(float));
    a.lse = malloc((size_t)a.n_q * sizeof(float));
    if (!wd || !a.x || !a.y || !kd || !vd || !a.q || !a.o || !a.lse) cli_die("out of memory for the cpu probe");
    for (size_t i = 0; i < a.w.row_bytes * (size_t)n_out; i++) wd[i] = (uint8_t)(i * 2654435761u >> 24);
    for (size_t i = 0; i < a.w.row_bytes * (size_t)n_out; i += 20) wd[i] = 0, wd[i + 1] = 0x20, wd[i + 2] = 0, wd[i + 3] = 0;
    for (int64_t i = 0; i < n_in * n_tok; i++) a.x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < kv_elems; i++) kd[i] = vd[i] = (uint16_t)(0x3000 + (i * 40503u) % 0x1000);  // f16 ~0.1-1
    for (int64_t i = 0; i < a.n_q * a.hd; i++) a.q[i] = (float)(i % 5) * 0.2f;
    a.w.data = wd;
    a.k = (kv_view){.data = kd, .elem = KV_F16, .head_stride = a.n_keys * a.hd};
    a.v = (kv_view){.data = vd, .elem = KV_F16, .head_stride = a.n_keys * a.hd};
    cm_device d = {.shared = 1, .link_latency = CPU_LINK_LATENCY, .link_bw = CPU_LINK_BW};
    snprintf(d.name, sizeof(d.name), "cpu");
    a.n_tok = 1;
    d.mem_bw = (double)(a.w.row_bytes * (size_t)n_out) / best_time(run_gemv, &a, 5);
    d.kv_bw = (double)(kv_elems * 2 * 2) / best_time(run_attn, &a, 5);
    a.n_tok = n_tok;
    d.prefill_flops = 2.0 * (double)(n_in * n_out * n_tok) / best_time(run_gemv, &a, 2);
    d.mem_capacity = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    d.source = "probed now: Q4_1 GEMV (weights), f16 decode attention (K/V), 512-token GEMM (prefill), "
               "the recycled rebuild (selection: GQA max, pool 7, top 1/8; gather of the selected rows)";
    free(wd); free(a.x); free(a.y); free(kd); free(vd); free(a.q); free(a.o); free(a.lse);
    backend_shutdown(&a.be);
    return d;
}

// The recycled rebuild of one layer on n_threads, as the engine runs it:
// candidates ranked per second and selected rows gathered per second.
static void probe_rebuild(int n_threads, double *select_rate, double *gather_rate) {
    probe_args a = {0};
    rc_err err = {{0}};
    if (backend_init(&a.be, &backend_cpu, n_threads, -1, &err)) cli_die_err(&err);
    a.n_q = 12, a.n_kv = 4, a.hd = 64, a.n_keys = 32768;
    const int64_t K = a.n_keys / 8;
    const size_t kv_elems = (size_t)(a.n_kv * a.n_keys * a.hd);
    uint16_t *kd = malloc(kv_elems * 2), *vd = malloc(kv_elems * 2);
    a.lse = malloc((size_t)a.n_q * sizeof(float));
    a.raw = malloc((size_t)(a.n_q * a.n_keys) * sizeof(float));
    a.agg = malloc((size_t)(a.n_kv * a.n_keys) * sizeof(float));
    a.pooled = malloc((size_t)(a.n_kv * a.n_keys) * sizeof(float));
    a.pos = malloc((size_t)a.n_keys * sizeof(int64_t));
    a.k_of = malloc((size_t)a.n_kv * sizeof(int64_t));
    a.n_sel = malloc((size_t)a.n_kv * sizeof(int64_t));
    a.sel = malloc((size_t)(a.n_kv * K) * sizeof(scored_pos));
    a.idx_dst = malloc((size_t)(a.n_kv * K) * sizeof(int64_t));
    a.idx_src = malloc((size_t)(a.n_kv * K) * sizeof(int64_t));
    a.cache_k = malloc((size_t)(a.n_kv * K * a.hd) * 2);
    a.cache_v = malloc((size_t)(a.n_kv * K * a.hd) * 2);
    if (!kd || !vd || !a.lse || !a.raw || !a.agg || !a.pooled || !a.pos || !a.k_of || !a.n_sel || !a.sel ||
        !a.idx_dst || !a.idx_src || !a.cache_k || !a.cache_v)
        cli_die("out of memory for the cpu probe");
    for (size_t i = 0; i < kv_elems; i++) kd[i] = vd[i] = (uint16_t)(0x3000 + (i * 40503u) % 0x1000);
    a.k = (kv_view){.data = kd, .elem = KV_F16, .head_stride = a.n_keys * a.hd};
    a.v = (kv_view){.data = vd, .elem = KV_F16, .head_stride = a.n_keys * a.hd};
    // Scores without structure, like bench --fill random's (the validation's).
    for (int64_t i = 0; i < a.n_q * a.n_keys; i++) a.raw[i] = (float)((i * 2654435761u) >> 20 & 0xfff) / 512.0f;
    for (int64_t h = 0; h < a.n_q; h++) a.lse[h] = 8.0f;
    for (int64_t i = 0; i < a.n_keys; i++) a.pos[i] = i;
    for (int64_t h = 0; h < a.n_kv; h++) a.k_of[h] = K;
    *select_rate = (double)(a.n_kv * a.n_keys) / best_time(run_select, &a, 5);
    *gather_rate = (double)(a.n_kv * K) / best_time(run_gather, &a, 5);
    free(kd); free(vd); free(a.lse); free(a.raw); free(a.agg); free(a.pooled); free(a.pos); free(a.k_of);
    free(a.n_sel); free(a.sel); free(a.idx_dst); free(a.idx_src); free(a.cache_k); free(a.cache_v);
    backend_shutdown(&a.be);
}

// The node's rates on all its cores, and one rank's on its own threads. The
// rebuild is host work of each rank process: the node's rebuild rate is one
// thread's times the cores (ranks side by side, not one process's threads).

static cm_device probe_cpu(int rank_threads) {
    const long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    const int cores = n_cpu > 0 ? (int)n_cpu : 1;
    cm_device node = probe_cpu_threads(cores);
    if (rank_threads < cores) {
        cm_device rank = probe_cpu_threads(rank_threads);
        node.rank_mem_bw = rank.mem_bw;
        node.rank_kv_bw = rank.kv_bw;
    } else {
        node.rank_mem_bw = node.mem_bw;
        node.rank_kv_bw = node.kv_bw;
    }
    double one_sel, one_gather;
    probe_rebuild(1, &one_sel, &one_gather);
    node.select_rate = one_sel * (double)cores;
    node.gather_rate = one_gather * (double)cores;
    if (rank_threads > 1) probe_rebuild(rank_threads, &node.rank_select_rate, &node.rank_gather_rate);
    else node.rank_select_rate = one_sel, node.rank_gather_rate = one_gather;
    snprintf(node.name, sizeof(node.name), "cpu");
    return node;
}

static double weight_type_bytes(const char *t) {
    if (!strcmp(t, "q4_1")) return 20.0 / 32.0;
    if (!strcmp(t, "q8_0")) return 34.0 / 32.0;
    if (!strcmp(t, "f16") || !strcmp(t, "bf16")) return 2.0;
    cli_die("--weight-type: expected q4_1, q8_0, f16 or bf16, got '%s'", t);
}

int cmd_plan(int argc, char **argv) {
    const char *model_path = NULL, *shape_name = NULL, *wtype = "q4_1", *devices_arg = "cpu";
    const char *methods_arg = "full,recycled", *csv_path = NULL;
    int64_t ctxs[MAX_LIST] = {2048, 8192, 32768}, ranks[MAX_LIST] = {1, 2, 4};
    int n_ctx = 3, n_ranks = 3, n_threads = 1, kv_elem = KV_F16;
    int64_t k_fixed = 0, stride = 10;
    enum { OPT_SHAPE = 256, OPT_WTYPE, OPT_CTX, OPT_RANKS, OPT_DEVICE, OPT_ATT, OPT_K, OPT_STRIDE, OPT_KV, OPT_THREADS,
           OPT_CSV, OPT_CONFIG };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"shape", required_argument, 0, OPT_SHAPE},
        {"weight-type", required_argument, 0, OPT_WTYPE}, {"ctx", required_argument, 0, OPT_CTX},
        {"ranks", required_argument, 0, OPT_RANKS}, {"device", required_argument, 0, OPT_DEVICE},
        {"attention", required_argument, 0, OPT_ATT}, {"recycle-k", required_argument, 0, OPT_K},
        {"recycle-stride", required_argument, 0, OPT_STRIDE}, {"kv-type", required_argument, 0, OPT_KV},
        {"threads", required_argument, 0, OPT_THREADS}, {"csv", required_argument, 0, OPT_CSV},
        {"config", required_argument, 0, OPT_CONFIG}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    static const char optstring[] = ":m:h";
    cli_config_merge("plan", optstring, opts, &argc, &argv);
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case OPT_SHAPE: shape_name = optarg; break;
        case OPT_WTYPE: wtype = optarg; break;
        case OPT_CTX: n_ctx = cli_parse_int_list("--ctx", optarg, ctxs, MAX_LIST, 1, (int64_t)1 << 40); break;
        case OPT_RANKS: n_ranks = cli_parse_int_list("--ranks", optarg, ranks, MAX_LIST, 1, 1 << 20); break;
        case OPT_DEVICE: devices_arg = optarg; break;
        case OPT_ATT: methods_arg = optarg; break;
        case OPT_K: k_fixed = cli_parse_int("--recycle-k", optarg, 1, (int64_t)1 << 40); break;
        case OPT_STRIDE: stride = cli_parse_int("--recycle-stride", optarg, 1, 1 << 20); break;
        case OPT_KV: kv_elem = cli_parse_kv_type(optarg); break;
        case OPT_THREADS: n_threads = (int)cli_parse_int("--threads", optarg, 1, 1024); break;
        case OPT_CSV: csv_path = optarg; break;
        case OPT_CONFIG: break;
        case 'h': usage(stdout); return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall plan --help')", argv[optind - 1]);
        default: cli_die("unknown option '%s' (see 'recall plan --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s'", argv[optind]);
    if (!model_path == !shape_name) cli_die("give exactly one of --model and --shape (see 'recall plan --help')");
    cm_shape s = {0};
    if (shape_name) {
        if (cm_shape_by_name(shape_name, &s))
            cli_die("--shape: unknown shape '%s' (llama-3.1-8b, llama-3.1-70b, qwen2-7b, smollm2-135m)", shape_name);
        s.weight_bytes_per_param = weight_type_bytes(wtype);
    } else {
        model m;
        rc_err err = {{0}};
        if (model_load(&m, model_path, &err)) cli_die_err(&err);
        const model_config *mc = &m.cfg;
        s = (cm_shape){.n_layer = mc->n_layer, .d_model = mc->d_model, .n_head = mc->n_head,
                       .n_head_kv = mc->n_head_kv, .head_dim = mc->head_dim, .d_ff = mc->ffn_dim,
                       .n_vocab = mc->n_vocab, .tied_output = mc->tied_output,
                       .weight_bytes = model_weight_bytes_per_token(&m)};
        const char *base = strrchr(model_path, '/');
        snprintf(s.name, sizeof(s.name), "%s", base ? base + 1 : model_path);
        model_free(&m);
    }
    s.kv_elem_bytes = (double)kv_row_bytes(kv_elem, s.head_dim) / (double)s.head_dim;

    // Methods and devices.
    int methods[2], n_methods = 0;
    {
        char *copy = strdup(methods_arg);
        for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
            if (n_methods == 2) cli_die("--attention: at most full and recycled");
            if (!strcmp(t, "full")) methods[n_methods++] = CM_FULL;
            else if (!strcmp(t, "recycled")) methods[n_methods++] = CM_RECYCLED;
            else cli_die("--attention: plan models full and recycled, not '%s'", t);
        }
        free(copy);
        if (!n_methods) cli_die("--attention: expected full and/or recycled");
    }
    cm_device devs[4];
    int n_devs = 0;
    {
        char *copy = strdup(devices_arg);
        for (char *t = strtok(copy, ","); t; t = strtok(NULL, ",")) {
            if (n_devs == 4) cli_die("--device: at most 4 devices");
            if (!strcmp(t, "cpu")) devs[n_devs++] = probe_cpu(n_threads);
            else if (cm_device_by_name(t, &devs[n_devs]) == 0) n_devs++;
            else cli_die("--device: unknown device '%s' (cpu, h100, h200)", t);
        }
        free(copy);
    }
    FILE *csv = NULL;
    if (csv_path) {
        if (!(csv = fopen(csv_path, "w"))) cli_die("--csv %s: cannot open for writing", csv_path);
        fprintf(csv, "shape,device,method,k,stride,ctx,ranks,weight_bytes,kv_bytes_full,flops_full,calls_full,"
                     "comm_bytes_full,kv_bytes_rec,mem_per_rank,ms_full,ms_rec,ms_mean,tok_s,prefill_us_per_token,fits\n");
    }
    printf("# recall plan: %s (%lld layers, d_model %lld, %lld/%lld heads x %lld, d_ff %lld, vocab %lld), KV %s\n",
           s.name, (long long)s.n_layer, (long long)s.d_model, (long long)s.n_head, (long long)s.n_head_kv,
           (long long)s.head_dim, (long long)s.d_ff, (long long)s.n_vocab, kv_elem_name(kv_elem));
    for (int di = 0; di < n_devs; di++) {
        const cm_device *d = &devs[di];
        if (d->rank_mem_bw > 0)
            printf("# device %s, one rank on %d thread(s): weights %.1f GB/s, K/V %.1f GB/s, rebuild: selection %.1f M "
                   "candidates/s, gather %.1f M rows/s\n", d->name, n_threads, d->rank_mem_bw / 1e9, d->rank_kv_bw / 1e9,
                   d->rank_select_rate / 1e6, d->rank_gather_rate / 1e6);
        if (d->select_rate > 0)
            printf("# device %s: the recycled rebuild's selection ranks %.1f M candidates/s, its gather %.1f M rows/s\n",
                   d->name, d->select_rate / 1e6, d->gather_rate / 1e6);
        printf("# device %s: weights %.1f GB/s, K/V %.1f GB/s, decode roof %s, prefill %.1f GFLOP/s, link %.0f us + "
               "%.0f GB/s, %s; %s\n",
               d->name, d->mem_bw / 1e9, (d->kv_bw > 0 ? d->kv_bw : d->mem_bw) / 1e9,
               d->flops > 0 ? "FLOP/s" : "none", d->prefill_flops / 1e9, d->link_latency * 1e6, d->link_bw / 1e9,
               d->shared ? "all ranks share it" : "one per rank", d->source);
    }
    printf("# per rank and decode step (the largest shard); recycled K = ctx / 8 unless --recycle-k\n");
    printf("# %-6s %-14s %8s %6s %10s %10s %9s %6s %10s %10s %9s %9s %9s %9s\n", "device", "method", "ctx", "ranks",
           "weight MB", "KV MB", "GFLOP", "calls", "comm KB", "mem GiB", "ms/full", "ms/rec", "tok/s", "us/pf-tok");
    for (int di = 0; di < n_devs; di++)
        for (int mi = 0; mi < n_methods; mi++)
            for (int ci = 0; ci < n_ctx; ci++)
                for (int ri = 0; ri < n_ranks; ri++) {
                    cm_method_opts mo = {.method = methods[mi], .stride = stride,
                                         .k = k_fixed ? k_fixed : (ctxs[ci] / 8 > 0 ? ctxs[ci] / 8 : 1)};
                    cm_result r;
                    rc_err err = {{0}};
                    if (cm_predict(&s, &devs[di], &mo, ctxs[ci], ranks[ri], &r, &err)) cli_die_err(&err);
                    char mname[32];
                    if (mo.method == CM_FULL) snprintf(mname, sizeof(mname), "full");
                    else snprintf(mname, sizeof(mname), "recycled:s=%lld", (long long)stride);
                    printf("  %-6s %-14s %8lld %6lld %10.1f %10.1f %9.2f %6lld %10.1f %9.2f%s %9.2f %9.2f %9.1f %9.1f\n",
                           devs[di].name, mname, (long long)ctxs[ci], (long long)ranks[ri], r.full.weight_bytes / 1e6,
                           r.full.kv_bytes / 1e6, r.full.flops / 1e9, (long long)r.full.calls,
                           r.full.comm_bytes / 1e3, r.total_mem / (1 << 30), r.fits ? " " : "!", r.full.seconds * 1e3,
                           r.recycled.seconds * 1e3, 1.0 / r.mean_step_seconds, r.prefill_token_seconds * 1e6);
                    if (csv)
                        fprintf(csv, "%s,%s,%s,%lld,%lld,%lld,%lld,%.0f,%.0f,%.0f,%lld,%.0f,%.0f,%.0f,%.4f,%.4f,%.4f,%.3f,%.3f,%d\n",
                                s.name, devs[di].name, mo.method == CM_FULL ? "full" : "recycled",
                                mo.method == CM_FULL ? 0LL : (long long)mo.k, mo.method == CM_FULL ? 0LL : (long long)stride,
                                (long long)ctxs[ci], (long long)ranks[ri], r.full.weight_bytes, r.full.kv_bytes,
                                r.full.flops, (long long)r.full.calls, r.full.comm_bytes, r.recycled.kv_bytes,
                                r.total_mem, r.full.seconds * 1e3, r.recycled.seconds * 1e3,
                                r.mean_step_seconds * 1e3, 1.0 / r.mean_step_seconds, r.prefill_token_seconds * 1e6, r.fits);
                }
    printf("# ms/full: a step with full attention in every layer; ms/rec: an all-recycled step; tok/s: the mean\n"
           "# over one stride; us/pf-tok: prefill time per prompt token; mem: weights + K/V shard + recycled cache\n"
           "# per rank, '!' where the ranks sharing a device do not fit its memory; recycled comm KB counts every\n"
           "# selected row as fetched at each rebuild (an upper bound: rows already held are not sent again)\n");
    if (csv && fclose(csv)) cli_die("--csv %s: write error", csv_path);
    return 0;
}
