// Max-pooling along rows: out[r, i] = max of in[r, j] for |j - i| <= kernel / 2,
// cut at the row ends; NaN never wins (a window of NaN only gives -inf).
#ifndef RECALL_KERNELS_MAXPOOL_CUH
#define RECALL_KERNELS_MAXPOOL_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// Device scratch rk_maxpool_rows needs (0 for small kernels).
size_t rk_maxpool_scratch_bytes(int64_t n_rows, int64_t n, int64_t kernel);

// in, out: (n_rows, n), no overlap; kernel odd.
cudaError_t rk_maxpool_rows(float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel, void *scratch,
                            cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
