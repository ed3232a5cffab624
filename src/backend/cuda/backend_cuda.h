// The CUDA backend's table (src/backend/cuda/ in a CUDA or emulated build;
// src/backend/cuda_stub/ otherwise, whose init fails with one line).
#ifndef RECALL_BACKEND_CUDA_BACKEND_CUDA_H
#define RECALL_BACKEND_CUDA_BACKEND_CUDA_H

#include <stddef.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const backend_ops backend_cuda;

// One line describing device `device` (< 0: 0) for `recall info`: name,
// memory, compute capability. -1 + the same error as init when none is usable.
int backend_cuda_describe(int device, char *buf, size_t n_bytes, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
