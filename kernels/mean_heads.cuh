// Mean over heads (the query summary of recycled attention).
#ifndef RECALL_KERNELS_MEAN_HEADS_CUH
#define RECALL_KERNELS_MEAN_HEADS_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// out: (head_dim) = mean over h of q: (n_heads, head_dim); summed in double in
// head order and divided once, like the reference (bitwise equal to it).
cudaError_t rk_mean_heads(float *out, const float *q, int64_t n_heads, int64_t head_dim, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
