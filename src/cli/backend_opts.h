// --backend cpu|cuda and --device N, shared by `generate`, `bench` and `info`.
#ifndef RECALL_CLI_BACKEND_OPTS_H
#define RECALL_CLI_BACKEND_OPTS_H

#include <getopt.h>
#include <stdio.h>

#include "backend/backend.h"

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
void cli_backend_check(const cli_backend *cb);
void cli_backend_usage(FILE *out);

#endif
