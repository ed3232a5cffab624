// Writes fp32 K and V rows into cache slots, converted to the cache type
// (fp16 rounded to nearest even, exactly like fp32_to_fp16 on the host).
#ifndef RECALL_KERNELS_KV_WRITE_CUH
#define RECALL_KERNELS_KV_WRITE_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// k, v: (n_tok * n_kv_heads, head_dim) fp32; row r = t * n_kv_heads + h goes to
// head h, slot slots[r] (device int64) of k_dst / v_dst: element (h, s, i) at
// h * *_stride + s * head_dim + i, of kv_elem *_elem (0: fp16, 1: fp32).
cudaError_t rk_kv_write(void *k_dst, int64_t k_stride, int k_elem, void *v_dst, int64_t v_stride, int v_elem,
                        const int64_t *slots, const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads,
                        int64_t head_dim, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
