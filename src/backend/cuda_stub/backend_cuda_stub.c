// The CUDA backend of a build without the CUDA toolkit: a table whose init
// fails with one line, so `--backend cuda` says why before any work.
#include "backend/cuda/backend_cuda.h"

#define STUB_MSG "--backend cuda: this build has no CUDA support"

static int stub_supports(int op, uint32_t weight_type) { return 0; }

static int stub_init(backend *b, int device, rc_err *err) { return rc_fail(err, STUB_MSG); }

int backend_cuda_describe(int device, char *buf, size_t n_bytes, rc_err *err) { return rc_fail(err, STUB_MSG); }

const backend_ops backend_cuda = {
    .name = "cuda",
    .is_device = 1,
    .supports = stub_supports,
    .init = stub_init,
};
