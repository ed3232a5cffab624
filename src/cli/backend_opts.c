#include "cli/backend_opts.h"

#include <stdlib.h>
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

// Under MPI every rank checks its own GPU, then all compare device models:
// ranks must compute bitwise alike (design.md §2), so mixed GPU models or MIG
// slices of different sizes are refused at start-up, in one line from rank 0.
static void check_same_device(const backend *b, comm *cm) {
    rc_err err = {{0}};
    backend_device_info info = {0};
    if (b->ops->device_info && b->ops->device_info(b, &info, &err)) cli_die_err(&err);
    char *all = calloc((size_t)cm->size, sizeof(info.name));
    if (!all) cli_die("out of memory");
    // Set-up traffic: not counted, so --stats reads the same on every backend.
    if (cm->ops->allgather(cm, info.name, sizeof(info.name), all, &err)) cli_die_err(&err);
    int bad = -1;
    for (int r = 1; r < cm->size && bad < 0; r++)
        if (strncmp(all + (size_t)r * sizeof(info.name), all, sizeof(info.name)) != 0) bad = r;
    if (bad >= 0) {
        if (cm->rank != 0) {  // rank 0 reports it and ends the job
            cm->ops->barrier(cm, &err);
            exit(1);
        }
        cli_die("--backend cuda: ranks run on different GPUs: rank 0 on '%.96s', rank %d on '%.96s'; every rank needs "
                "the same model of GPU (mixed models or MIG slices of different sizes are refused)", all, bad,
                all + (size_t)bad * sizeof(info.name));
    }
    free(all);
}

void cli_backend_check(cli_backend *cb, comm *cm) {
    if (cb->ops == &backend_cpu) return;
    const int several = cm && cm->size > 1;
    const int from_local_rank = several && cb->device < 0;
    if (from_local_rank) cb->device = cm->local_rank;  // one rank per GPU; --device N: every rank on N (shared)
    backend b;
    rc_err err = {{0}};
    if (backend_init(&b, cb->ops, 1, cb->device, &err)) {
        if (from_local_rank)
            cli_die("GPU %d for local rank %d of %d on this host: %s", cb->device, cm->local_rank, cm->local_size,
                    err.msg);
        cli_die_err(&err);
    }
    if (several) check_same_device(&b, cm);
    backend_shutdown(&b);
}

void cli_backend_usage(FILE *out) {
    fprintf(out,
            "      --backend cpu|cuda  where the model runs (default cpu); cuda: weights, KV cache and\n"
            "                          activations in GPU memory (a build with the CUDA toolkit)\n"
            "      --device N          GPU index for --backend cuda (default 0; under MPI the rank's local\n"
            "                          rank, one rank per GPU; with --device every rank shares GPU N)\n");
}
