#include "cli/backend_opts.h"

#include <string.h>

#include "backend/cuda/backend_cuda.h"
#include "cli/cli.h"

cli_backend cli_backend_default(void) { return (cli_backend){.ops = &backend_cpu, .device = -1}; }

int cli_backend_option(int c, const char *arg, cli_backend *cb) {
    switch (c) {
    case CLI_OPT_BACKEND:
        if (!strcmp(arg, "cpu")) cb->ops = &backend_cpu;
        else if (!strcmp(arg, "cuda")) cb->ops = &backend_cuda;
        else cli_die("--backend %s: expected cpu or cuda", arg);
        return 1;
    case CLI_OPT_DEVICE_INDEX: cb->device = (int)cli_parse_int("--device", arg, 0, 1023); return 1;
    default: return 0;
    }
}

void cli_backend_check(const cli_backend *cb) {
    if (cb->ops == &backend_cpu) return;
    backend b;
    rc_err err = {{0}};
    if (backend_init(&b, cb->ops, 1, cb->device, &err)) cli_die_err(&err);
    backend_shutdown(&b);
}

void cli_backend_usage(FILE *out) {
    fprintf(out,
            "      --backend cpu|cuda  where the model runs (default cpu); cuda: weights, KV cache and\n"
            "                          activations in GPU memory (a build with the CUDA toolkit)\n"
            "      --device N          GPU index for --backend cuda (default 0)\n");
}
