// Index of the largest element of a vector (greedy sampling).
#ifndef RECALL_KERNELS_ARGMAX_CUH
#define RECALL_KERNELS_ARGMAX_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// *result (device int64) = the index of the largest x[i], i < n: lowest index
// on ties; NaN never wins unless every element is NaN (then 0); n == 0 gives 0.
cudaError_t rk_argmax(int64_t *result, const float *x, int64_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
