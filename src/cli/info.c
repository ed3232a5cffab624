// recall info: what a GGUF model file holds.
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/kv_format.h"
#include "backend/cuda/backend_cuda.h"
#include "cli/backend_opts.h"
#include "cli/attention_opts.h"
#include "cli/cli.h"
#include "model/model.h"
#include "model/quant.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall info [--tensors] MODEL\n"
            "       recall info --backend cuda [--device N] [MODEL]\n"
            "\n"
            "Prints the architecture, shapes, tokenizer, tensor types and sizes of a GGUF model.\n"
            "  --tensors         list every tensor (name, type, shape, bytes)\n"
            "  --backend cpu|cuda  cuda: first the GPU (name, memory, compute capability), or why none\n"
            "                    is usable (one line, exit 1); MODEL is then optional\n"
            "  --device N        GPU index for --backend cuda (default 0)\n"
            "  -h, --help        this help\n");
}

int cmd_info(int argc, char **argv) {
    int list_tensors = 0;
    cli_backend cbk = cli_backend_default();
    static const struct option opts[] = {{"tensors", no_argument, 0, 't'}, CLI_BACKEND_OPTIONS,
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 't') list_tensors = 1;
        else if (c == 'h') { usage(stdout); return 0; }
        else if (cli_backend_option(c, optarg, &cbk)) continue;
        else cli_die("unknown option '%s' (see 'recall info --help')", argv[optind - 1]);
    }
    rc_err err = {{0}};
    if (cbk.ops != &backend_cpu) {
        char dev[512];
        if (backend_cuda_describe(cbk.device, dev, sizeof dev, &err)) cli_die_err(&err);
        printf("backend       %s: %s\n", cbk.ops->name, dev);
        if (optind == argc) return 0;
    }
    if (optind != argc - 1) cli_die("expected exactly one MODEL argument (see 'recall info --help')");
    const char *path = argv[optind];
    model m;
    if (model_load(&m, path, &err)) cli_die_err(&err);
    tokenizer *tok = NULL;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);
    const model_config *cfg = &m.cfg;

    printf("file          %s (%.1f MiB, GGUF v%u, %llu tensors, %llu metadata keys)\n", path,
           (double)m.file.n_bytes / (1024.0 * 1024.0), m.file.version, (unsigned long long)m.file.n_tensors,
           (unsigned long long)m.file.n_kv);
    printf("name          %s\n", cfg->name[0] ? cfg->name : "(none)");
    printf("architecture  %s\n", cfg->arch_name);
    printf("layers        %lld\n", (long long)cfg->n_layer);
    printf("d_model       %lld\n", (long long)cfg->d_model);
    printf("heads         %lld query, %lld KV (GQA group %lld), head_dim %lld\n", (long long)cfg->n_head,
           (long long)cfg->n_head_kv, (long long)(cfg->n_head / cfg->n_head_kv), (long long)cfg->head_dim);
    printf("ffn           %lld (SwiGLU)\n", (long long)cfg->ffn_dim);
    printf("vocab         %lld (tokenizer: %d tokens, bos %d, eos %d, add_bos %d)\n", (long long)cfg->n_vocab,
           tokenizer_n_vocab(tok), tokenizer_bos(tok), tokenizer_eos(tok), tokenizer_add_bos(tok));
    printf("context       %lld trained\n", (long long)cfg->n_ctx_train);
    printf("rope          base %g, %lld dims, %s pairs%s%s\n", cfg->rope_base, (long long)cfg->rope_dim,
           m.rope.neox ? "NeoX (i, i+d/2)" : "adjacent (2i, 2i+1)",
           cfg->rope_linear_scale != 1.0f ? ", linear scaling" : "", cfg->rope_has_freq_factors ? ", frequency factors" : "");
    printf("rms_eps       %g\n", cfg->rms_eps);
    printf("output        %s\n", cfg->tied_output ? "tied to token_embd" : "separate output.weight");

    int64_t count[GGML_TYPE_COUNT] = {0};
    size_t bytes[GGML_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < m.file.n_tensors; i++) {
        const gguf_tensor *t = &m.file.tensors[i];
        if (t->type < GGML_TYPE_COUNT) {
            count[t->type]++;
            bytes[t->type] += t->n_bytes;
        }
    }
    printf("tensor types ");
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (count[t]) printf(" %s x%lld (%.1f MiB)", ggml_type_name((uint32_t)t), (long long)count[t],
                             (double)bytes[t] / (1024.0 * 1024.0));
    printf("\n");
    printf("decode reads  %.1f MiB of weights per token\n", (double)model_weight_bytes_per_token(&m) / (1024.0 * 1024.0));
    printf("cpu kernels   %s\n", backend_cpu_kernel_path());
    // The key of the shipped head scores (configs/heads/index.json): the file's content, not its path.
    const char *shipped = cli_shipped_head_scores(&m);
    printf("fingerprint   %s (head scores: %s)\n", cli_model_fingerprint(&m), shipped ? shipped : "none shipped");
    printf("KV per token ");  // the bytes one position costs in each cache type the model allows
    for (int elem = 0; elem <= KV_Q4_0; elem++)
        if (kv_elem_check(elem, cfg->head_dim, NULL) == 0)
            printf(" %s %zu", kv_elem_name(elem), 2 * (size_t)(cfg->n_layer * cfg->n_head_kv) * kv_row_bytes(elem, cfg->head_dim));
    printf(" bytes\n");
    if (list_tensors)
        for (uint64_t i = 0; i < m.file.n_tensors; i++) {
            const gguf_tensor *t = &m.file.tensors[i];
            printf("  %-32.*s %-5s [%lld", (int)t->name.n_bytes, t->name.ptr, ggml_type_name(t->type), (long long)t->ne[0]);
            for (uint32_t d = 1; d < t->n_dims; d++) printf(", %lld", (long long)t->ne[d]);
            printf("] %zu bytes\n", t->n_bytes);
        }
    tokenizer_free(tok);
    model_free(&m);
    return 0;
}
