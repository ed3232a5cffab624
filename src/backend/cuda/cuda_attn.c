// The attention and selection ops of the CUDA backend. Each op checks its
// arguments, takes scratch through cuda_scratch and launches the kernels;
// failures are sticky (cuda_fail) and surface at synchronize.
#include "backend/cuda/cuda_attn.h"

#include "backend/cuda/cuda_internal.h"

#define NOT_YET(b) cuda_fail((b), __func__, 1, "not implemented yet", __FILE__, __LINE__)

void cuda_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v,
                      int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    NOT_YET(b);
}

void cuda_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                             const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale) {
    NOT_YET(b);
}

void cuda_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                       const kv_view *k, const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                       float scale) {
    NOT_YET(b);
}

void cuda_merge(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                int64_t n_heads, int64_t head_dim) {
    NOT_YET(b);
}

void cuda_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                       int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode) {
    NOT_YET(b);
}

void cuda_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel) {
    NOT_YET(b);
}

void cuda_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                    const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                    int64_t k_stride, int ascending) {
    NOT_YET(b);
}
