// Element-wise fp32 ops of the decoder: swiglu, add, add_bias.
#ifndef RECALL_KERNELS_ELEMENTWISE_CUH
#define RECALL_KERNELS_ELEMENTWISE_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// out: (n) = silu(gate) * up (computed in double, rounded once, like the reference).
cudaError_t rk_swiglu(float *out, const float *gate, const float *up, int64_t n, cudaStream_t stream);
// x: (n) += y: (n)
cudaError_t rk_add(float *x, const float *y, int64_t n, cudaStream_t stream);
// x: (n_rows, n) += bias: (n) on every row
cudaError_t rk_add_bias(float *x, const float *bias, int64_t n_rows, int64_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
