// The attention and selection ops of the CUDA backend (backend_ops
// signatures; backend_cuda points at them). They wrap the launchers of
// kernels/attn_decode, attn_prefill, attn_merge, score_reduce, maxpool and topk.
#ifndef RECALL_BACKEND_CUDA_ATTN_H
#define RECALL_BACKEND_CUDA_ATTN_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuda_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v,
                      int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale);
void cuda_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                             const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale);
void cuda_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                       const kv_view *k, const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                       float scale);
void cuda_merge(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                int64_t n_heads, int64_t head_dim);
void cuda_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                       int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode);
void cuda_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel);
void cuda_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                    const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                    int64_t k_stride, int ascending);

#ifdef __cplusplus
}
#endif

#endif
