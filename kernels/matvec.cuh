// The decode matmul: out = x w^T for up to RK_MATVEC_MAX_TOK tokens, reading
// the weight in its stored GGML blocks (dequantized in registers). Decode is
// bandwidth-bound: one pass over the weight bytes per call is the cost, and a
// Q4_1 weight is 5 bits per element (20-byte blocks of 32) against bf16's 16,
// so keeping the blocks beats converting them to bf16 at load by ~3.2x bytes.
#ifndef RECALL_KERNELS_MATVEC_CUH
#define RECALL_KERNELS_MATVEC_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RK_MATVEC_MAX_TOK 8

// out: (n_tok, n_out) = x: (n_tok, n_in) times w^T, w: n_out rows of row_bytes
// bytes of `type` (rk_weight_type_ok). fp32 accumulation in a fixed order.
// 1 <= n_tok <= RK_MATVEC_MAX_TOK.
cudaError_t rk_matvec(float *out, const float *x, const void *w, uint32_t type, size_t row_bytes, int64_t n_in,
                      int64_t n_out, int64_t n_tok, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
