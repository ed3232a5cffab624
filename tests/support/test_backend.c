#include "test_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_strict.h"

backend g_cpu;

// The emulated CUDA backend (recall_cuda_emu), in the test binaries that link
// it (tests/CMakeLists.txt forces it in with --undefined=backend_cuda); a weak
// reference elsewhere, where it stays NULL and the choice is refused.
extern const backend_ops backend_cuda __attribute__((weak));

void test_backend_setup(void) {
    rc_err err = {{0}};
    if (backend_init(&g_cpu, &backend_cpu, 1, -1, &err)) {
        fprintf(stderr, "backend_init: %s\n", err.msg);
        exit(1);
    }
    const char *want = getenv("RECALL_TEST_BACKEND");
    if (want && *want && strcmp(want, "cpu") != 0 && strcmp(want, "strict") != 0 && strcmp(want, "cuda_emu") != 0) {
        fprintf(stderr, "RECALL_TEST_BACKEND=%s: expected cpu, strict or cuda_emu\n", want);
        exit(1);
    }
    if (want && strcmp(want, "cuda_emu") == 0 && !&backend_cuda) {
        fprintf(stderr, "RECALL_TEST_BACKEND=cuda_emu: this test binary does not link recall_cuda_emu\n");
        exit(1);
    }
    fprintf(stderr, "engine tests on the %s backend\n", test_backend_name());
}

const backend_ops *test_backend(void) {
    const char *want = getenv("RECALL_TEST_BACKEND");
    if (want && strcmp(want, "strict") == 0) return &backend_cpu_strict;
    if (want && strcmp(want, "cuda_emu") == 0 && &backend_cuda) return &backend_cuda;
    return &backend_cpu;
}

const char *test_backend_name(void) { return test_backend()->name; }

const char *test_device_path(int n_ranks) {
    const backend_ops *b = test_backend();
    if (n_ranks <= 1 || !b->is_device || b->expose) return "none";
    const char *v = getenv("RECALL_DEVICE_COMM");
    return v && strcmp(v, "nccl") == 0 ? "nccl" : "staged";
}
