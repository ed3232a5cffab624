// RMS normalization of rows: out = x / sqrt(mean(x^2) + eps) * w.
#ifndef RECALL_KERNELS_RMSNORM_CUH
#define RECALL_KERNELS_RMSNORM_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// out, x: (n_rows, n) (may alias); w: (n).
cudaError_t rk_rmsnorm(float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps,
                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
