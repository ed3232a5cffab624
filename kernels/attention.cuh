// Attention kernels: split-K decode attention over a shard (optionally with the
// raw scores), the merge of attention states, and tiled causal prefill attention.
// K/V caches: row of KV head h, slot p at base + (h * head_stride + p * head_dim)
// elements; elem 0 = fp16, 1 = fp32 (enum kv_elem). head_dim: 1 to
// RK_ATTN_MAX_DIM (64 and 128 take the fast decode kernel); n_q_heads a
// multiple of n_kv_heads.
#ifndef RECALL_KERNELS_ATTENTION_CUH
#define RECALL_KERNELS_ATTENTION_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RK_ATTN_MAX_DIM 256

// Device scratch rk_attn_decode needs for these shapes (partial states of its splits).
size_t rk_attn_decode_scratch_bytes(int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim);

// o: (n_q_heads, head_dim), lse: (n_q_heads); scores (NULL: not written):
// (n_q_heads, n_keys) raw scaled scores; q: (n_q_heads, head_dim).
// scratch: rk_attn_decode_scratch_bytes of device memory.
cudaError_t rk_attn_decode(float *o, float *lse, float *scores, const float *q, const void *k, int64_t k_head_stride,
                           const void *v, int64_t v_head_stride, int elem, int64_t n_keys, int64_t n_q_heads,
                           int64_t n_kv_heads, int64_t head_dim, float scale, void *scratch, cudaStream_t stream);

// Merges n_parts states in order: o: (n_heads, head_dim), lse: (n_heads);
// o_parts: (n_parts, n_heads, head_dim), lse_parts: (n_parts, n_heads).
cudaError_t rk_attn_merge(float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                          int64_t n_heads, int64_t head_dim, cudaStream_t stream);

// Causal attention of n_tok queries at positions pos0.. over keys [0, pos0 + n_tok).
// q, o: (n_tok, n_q_heads, head_dim); lse: (n_tok, n_q_heads) or NULL.
cudaError_t rk_attn_prefill(float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0, const void *k,
                            int64_t k_head_stride, const void *v, int64_t v_head_stride, int elem, int64_t n_q_heads,
                            int64_t n_kv_heads, int64_t head_dim, float scale, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
