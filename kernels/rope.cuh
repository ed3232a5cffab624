// Rotary position embedding, in place, both pair layouts (rope_table in
// src/backend/backend.h): theta_i = pos * inv_freq[i], i < rot_dim / 2.
#ifndef RECALL_KERNELS_ROPE_CUH
#define RECALL_KERNELS_ROPE_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// x: (n_tok, n_heads, head_dim) rotated in place; pos: (n_tok) device int64;
// inv_freq: (rot_dim / 2) device; neox: pairs (i, i + rot_dim/2), else (2i, 2i+1).
cudaError_t rk_rope(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos,
                    const float *inv_freq, int64_t rot_dim, int neox, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
