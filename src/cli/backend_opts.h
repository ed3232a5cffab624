// --backend cpu|cuda and --device N, shared by `generate`, `bench` and `info`.
#ifndef RECALL_CLI_BACKEND_OPTS_H
#define RECALL_CLI_BACKEND_OPTS_H

#include <getopt.h>
#include <stdio.h>

#include "backend/backend.h"
#include "comm/comm.h"

enum { CLI_OPT_BACKEND = 640, CLI_OPT_DEVICE_INDEX };

#define CLI_BACKEND_OPTIONS                                 \
    {"backend", required_argument, 0, CLI_OPT_BACKEND},     \
    {"device", required_argument, 0, CLI_OPT_DEVICE_INDEX}

typedef struct cli_backend {
    const backend_ops *ops;  // &backend_cpu or &backend_cuda
    int device;              // -1: the backend's default (GPU 0)
} cli_backend;

cli_backend cli_backend_default(void);
// Applies option c (a CLI_OPT_* value above) to cb; returns 0 when c is not
// one of them. Dies with one line on a bad value
// ("--backend nonsense: expected cpu or cuda").
int cli_backend_option(int c, const char *arg, cli_backend *cb);
// Before any work: starts and stops one instance, so that a missing GPU or a
// build without CUDA is one line and exit 1 ("recall: --backend cuda: no usable GPU (...)").
// Under MPI (cm->size > 1) a GPU backend runs on GPU <local rank> unless
// --device was given (cb->device is set to it), a rank without its GPU ends
// the job naming rank, host and GPU, and ranks on different GPU models end
// it with one line from rank 0.
void cli_backend_check(cli_backend *cb, comm *cm);
void cli_backend_usage(FILE *out);

#endif
