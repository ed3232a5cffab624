// Dequantization of GGML weight rows to fp32 on the device: the GEMM path
// (chunks of rows into a scratch buffer before cuBLAS) and embed (rows picked
// by token id). Weights stay in their GGML blocks on the device.
#ifndef RECALL_KERNELS_DEQUANT_CUH
#define RECALL_KERNELS_DEQUANT_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 for the types the device kernels decode: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
int rk_weight_type_ok(uint32_t type);

// out: (n_rows, n_in) fp32 = rows of the weight w (rows of row_bytes bytes of
// `type`); row r of out is row rows[r] of w (rows: a device array, NULL: row0 + r).
cudaError_t rk_dequant_rows(float *out, const void *w, uint32_t type, size_t row_bytes, int64_t n_in,
                            const int32_t *rows, int64_t row0, int64_t n_rows, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
