// The CUDA backend's memory, element-wise and matmul ops (backend_ops
// signatures; the table in cuda_backend.c points at them).
#ifndef RECALL_BACKEND_CUDA_OPS_H
#define RECALL_BACKEND_CUDA_OPS_H

#include "backend/backend.h"

int cuda_supports(int op, uint32_t weight_type);
int cuda_weight_upload(const backend *b, weight *dst, const weight *src, rc_err *err);
void cuda_weight_free(const backend *b, weight *w);
void cuda_matmul(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok);
void cuda_embed(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n);

void cuda_rmsnorm(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps);
void cuda_rope(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos_host,
               const rope_table *rt);
void cuda_swiglu(const backend *b, float *out, const float *gate, const float *up, int64_t n);
void cuda_add(const backend *b, float *x, const float *y, int64_t n);
void cuda_add_bias(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n);
void cuda_kv_write(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                   const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim);
void cuda_copy_rows(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                    const int64_t *src_row_host, int64_t n_rows, size_t row_bytes);
void cuda_copy_2d(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width_bytes,
                  int64_t n_rows);
void cuda_mean_heads(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim);
int64_t cuda_argmax(const backend *b, const float *x, int64_t n);

#endif
