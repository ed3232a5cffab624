// The attention and selection ops of the CUDA backend. Each op checks the
// shapes its kernels support, takes scratch through cuda_scratch and launches
// the kernels; failures are sticky (cuda_fail) and surface at synchronize.
#include "backend/cuda/cuda_attn.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "kernels/attention.cuh"
#include "kernels/maxpool.cuh"
#include "kernels/score_reduce.cuh"
#include "kernels/topk.cuh"

#define ALIGN16(n) (((n) + 15) / 16 * 16)

static cudaStream_t stream_of(const backend *b) { return cuda_state_of(b)->stream; }

static void fail_shape(const backend *b, const char *op, const char *what) {
    cuda_fail(b, op, (int)cudaErrorInvalidValue, what, __FILE__, __LINE__);
}

// The shapes the attention kernels take; anything else fails with one line.
static int attn_shape_ok(const backend *b, const char *op, const kv_view *k, const kv_view *v, int64_t n_q_heads,
                         int64_t n_kv_heads, int64_t head_dim) {
    if (head_dim <= 0 || head_dim > RK_ATTN_MAX_DIM) {
        fail_shape(b, op, "unsupported head_dim (the CUDA kernels take 1 to 256)");
        return 0;
    }
    if (n_kv_heads <= 0 || n_q_heads <= 0 || n_q_heads % n_kv_heads != 0) {
        fail_shape(b, op, "n_q_heads must be a positive multiple of n_kv_heads");
        return 0;
    }
    if (k->elem != v->elem || (k->elem != KV_F16 && k->elem != KV_F32)) {
        fail_shape(b, op, "K and V caches must both be F16 or both F32");
        return 0;
    }
    return 1;
}

static void decode(const backend *b, const char *op, float *o, float *lse, float *scores, const float *q,
                   const kv_view *k, const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                   int64_t head_dim, float scale) {
    if (!attn_shape_ok(b, op, k, v, n_q_heads, n_kv_heads, head_dim)) return;
    const size_t n_bytes = rk_attn_decode_scratch_bytes(n_keys, n_q_heads, n_kv_heads, head_dim);
    void *scratch = n_bytes ? cuda_scratch(b, CUDA_SCRATCH_ATTN, n_bytes) : NULL;
    if (n_bytes && !scratch) return;
    CUDA_CHECK(b, rk_attn_decode(o, lse, scores, q, k->data, k->head_stride, v->data, v->head_stride, k->elem, n_keys,
                                 n_q_heads, n_kv_heads, head_dim, scale, scratch, stream_of(b)));
}

void cuda_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v,
                      int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    decode(b, "attn_decode", o, lse, NULL, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim, scale);
}

void cuda_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                             const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale) {
    decode(b, "attn_decode_scores", o, lse, scores, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim, scale);
}

void cuda_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                       const kv_view *k, const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                       float scale) {
    if (!attn_shape_ok(b, "attn_prefill", k, v, n_q_heads, n_kv_heads, head_dim)) return;
    CUDA_CHECK(b, rk_attn_prefill(o, lse, q, n_tok, pos0, k->data, k->head_stride, v->data, v->head_stride, k->elem,
                                  n_q_heads, n_kv_heads, head_dim, scale, stream_of(b)));
}

void cuda_merge(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                int64_t n_heads, int64_t head_dim) {
    CUDA_CHECK(b, rk_attn_merge(o, lse, o_parts, lse_parts, n_parts, n_heads, head_dim, stream_of(b)));
}

void cuda_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                       int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode) {
    CUDA_CHECK(b, rk_score_reduce(out, raw, lse, n_q_heads, n_out_rows, n, ld, n_acc, mode, stream_of(b)));
}

void cuda_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel) {
    const size_t n_bytes = rk_maxpool_scratch_bytes(n_rows, n, kernel);
    void *scratch = n_bytes ? cuda_scratch(b, CUDA_SCRATCH_MISC, n_bytes) : NULL;
    if (n_bytes && !scratch) return;
    CUDA_CHECK(b, rk_maxpool_rows(out, in, n_rows, n, kernel, scratch, stream_of(b)));
}

// The selection order as one integer (as the kernels build it): the score word
// rising as the order falls, then the position.
static uint64_t order_key(float score, uint32_t pos, int ascending) {
    uint32_t hi;
    if (score != score) {
        hi = 0xffffffffu;
    } else {
        if (score == 0.0f) score = 0.0f;
        uint32_t bits;
        memcpy(&bits, &score, 4);
        const uint32_t o = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
        hi = ascending ? o : ~o;
    }
    return ((uint64_t)hi << 32) | pos;
}

typedef struct keyed_win {
    uint64_t key;
    float score;
} keyed_win;

static int keyed_cmp(const void *pa, const void *pb) {
    const keyed_win *a = pa, *c = pb;
    return a->key < c->key ? -1 : a->key > c->key;
}

// The kernels pick each row's winners on the device; the host sorts those
// min(k, n) winners (it must wait for them anyway, and k is small next to n).
void cuda_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                    const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                    int64_t k_stride, int ascending) {
    if (n_rows <= 0) return;
    int64_t k_cap = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t k = k_host[r] < 0 ? 0 : k_host[r] < n ? k_host[r] : n;
        n_out_host[r] = 0;
        if (k > k_cap) k_cap = k;
    }
    if (k_cap == 0) return;
    if (n > (int64_t)UINT32_MAX) {
        fail_shape(b, "topk_rows", "more than 2^32 candidates per row");
        return;
    }
    // k first: it sits at the larger offset, so staging pos after it cannot grow (and drop) the buffer
    const size_t pos_bytes = ALIGN16((size_t)n * sizeof(int64_t));
    const int64_t *k_dev = cuda_stage(b, k_host, (size_t)n_rows * sizeof(int64_t), pos_bytes);
    const int64_t *pos_dev = cuda_stage(b, pos_host, (size_t)n * sizeof(int64_t), 0);
    const size_t st_bytes = ALIGN16(rk_topk_scratch_bytes(n_rows));
    const size_t win_bytes = (size_t)n_rows * (size_t)k_cap * sizeof(rk_topk_win);
    const size_t cnt_bytes = (size_t)n_rows * sizeof(int32_t);
    char *scratch = cuda_scratch(b, CUDA_SCRATCH_TOPK, st_bytes + ALIGN16(win_bytes) + cnt_bytes);
    char *result = cuda_result_buffer(b, ALIGN16(win_bytes) + cnt_bytes);
    keyed_win *sorted = malloc((size_t)k_cap * sizeof(keyed_win));
    if (!k_dev || !pos_dev || !scratch || !result || !sorted) {
        if (!sorted) cuda_fail(b, "malloc (topk_rows)", 0, "out of host memory", __FILE__, __LINE__);
        free(sorted);
        return;
    }
    rk_topk_win *win = (rk_topk_win *)(scratch + st_bytes);
    int32_t *cnt = (int32_t *)(scratch + st_bytes + ALIGN16(win_bytes));
    cudaStream_t stream = stream_of(b);
    CUDA_CHECK(b, rk_topk_select(win, cnt, scores, ld, pos_dev, k_dev, n_rows, n, k_cap, ascending, scratch, stream));
    CUDA_CHECK(b, cudaMemcpyAsync(result, win, ALIGN16(win_bytes) + cnt_bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(b, cudaStreamSynchronize(stream));
    if (cuda_state_of(b)->failed) {
        free(sorted);
        return;
    }
    const rk_topk_win *win_host = (const rk_topk_win *)result;
    const int32_t *cnt_host = (const int32_t *)(result + ALIGN16(win_bytes));
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t k = k_host[r] < 0 ? 0 : k_host[r] < n ? k_host[r] : n;
        if (cnt_host[r] != k) {
            cuda_fail(b, "topk_rows", cnt_host[r], "the selection found a wrong number of winners", __FILE__, __LINE__);
            return (void)free(sorted);
        }
        for (int64_t i = 0; i < k; i++) {
            const rk_topk_win w = win_host[r * k_cap + i];
            sorted[i] = (keyed_win){.key = order_key(w.score, w.pos, ascending), .score = w.score};
        }
        qsort(sorted, (size_t)k, sizeof(keyed_win), keyed_cmp);
        for (int64_t i = 0; i < k; i++)
            out_host[r * k_stride + i] = (scored_pos){.score = sorted[i].score, .pos = (int64_t)(uint32_t)sorted[i].key};
        n_out_host[r] = k;
    }
    free(sorted);
}
