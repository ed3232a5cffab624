// The CUDA backend's element-wise and data-movement ops: host metadata goes
// through cuda_stage, each op launches one kernel on the instance's stream,
// and a launch failure is recorded (sticky) for synchronize to report.
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/cuda_ops.h"
#include "kernels/argmax.cuh"
#include "kernels/copy_rows.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/kv_write.cuh"
#include "kernels/mean_heads.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"

#define STAGE_ALIGN 16

static size_t align_up(size_t n) { return (n + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN; }

static cudaStream_t stream_of(const backend *b) { return cuda_state_of(b)->stream; }

void cuda_rmsnorm(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps) {
    CUDA_CHECK(b, rk_rmsnorm(out, x, w, n_rows, n, eps, stream_of(b)));
}

void cuda_rope(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos_host,
               const rope_table *rt) {
    if (n_tok <= 0 || n_heads <= 0 || rt->rot_dim <= 0) return;
    const int64_t *pos = cuda_stage(b, pos_host, (size_t)n_tok * sizeof(int64_t), 0);
    if (!pos) return;
    CUDA_CHECK(b, rk_rope(x, n_tok, n_heads, head_dim, pos, rt->inv_freq, rt->rot_dim, rt->neox, stream_of(b)));
}

void cuda_swiglu(const backend *b, float *out, const float *gate, const float *up, int64_t n) {
    CUDA_CHECK(b, rk_swiglu(out, gate, up, n, stream_of(b)));
}

void cuda_add(const backend *b, float *x, const float *y, int64_t n) { CUDA_CHECK(b, rk_add(x, y, n, stream_of(b))); }

void cuda_add_bias(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n) {
    CUDA_CHECK(b, rk_add_bias(x, bias, n_rows, n, stream_of(b)));
}

void cuda_kv_write(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                   const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim) {
    if (n_tok <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    // The kernel writes f16 or f32 elements; a block-format cache would be overrun.
    if ((k_dst->elem != KV_F16 && k_dst->elem != KV_F32) || v_dst->elem != k_dst->elem) {
        cuda_fail(b, "kv_write", 0, "the CUDA backend keeps f16 or f32 K/V only (q8_0/q4_0 caches run on --backend cpu)",
                  __FILE__, __LINE__);
        return;
    }
    const int64_t *slots = cuda_stage(b, slot_host, (size_t)(n_tok * n_kv_heads) * sizeof(int64_t), 0);
    if (!slots) return;
    CUDA_CHECK(b, rk_kv_write((void *)k_dst->data, k_dst->head_stride, k_dst->elem, (void *)v_dst->data,
                              v_dst->head_stride, v_dst->elem, slots, k, v, n_tok, n_kv_heads, head_dim, stream_of(b)));
}

void cuda_copy_rows(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                    const int64_t *src_row_host, int64_t n_rows, size_t row_bytes) {
    if (n_rows <= 0 || row_bytes == 0) return;
    if (!dst_row_host && !src_row_host) {  // identity: one contiguous copy
        CUDA_CHECK(b, cudaMemcpyAsync(dst, src, (size_t)n_rows * row_bytes, cudaMemcpyDeviceToDevice, stream_of(b)));
        return;
    }
    const size_t list_bytes = (size_t)n_rows * sizeof(int64_t);
    const int64_t *dl = NULL, *sl = NULL;
    if (!cuda_scratch(b, CUDA_SCRATCH_META, 2 * align_up(list_bytes))) return;  // both lists: no move in between
    if (dst_row_host && !(dl = cuda_stage(b, dst_row_host, list_bytes, 0))) return;
    if (src_row_host && !(sl = cuda_stage(b, src_row_host, list_bytes, align_up(list_bytes)))) return;
    CUDA_CHECK(b, rk_copy_rows(dst, dl, src, sl, n_rows, row_bytes, stream_of(b)));
}

void cuda_copy_2d(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width_bytes,
                  int64_t n_rows) {
    if (n_rows <= 0 || width_bytes == 0) return;
    CUDA_CHECK(b, cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, (size_t)n_rows,
                                    cudaMemcpyDeviceToDevice, stream_of(b)));
}

void cuda_mean_heads(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim) {
    CUDA_CHECK(b, rk_mean_heads(out, q, n_heads, head_dim, stream_of(b)));
}

int64_t cuda_argmax(const backend *b, const float *x, int64_t n) {
    int64_t *dev = cuda_scratch(b, CUDA_SCRATCH_MISC, sizeof(int64_t));
    int64_t *host = cuda_result_buffer(b, sizeof(int64_t));
    if (!dev || !host) return 0;
    CUDA_CHECK(b, rk_argmax(dev, x, n, stream_of(b)));
    CUDA_CHECK(b, cudaMemcpyAsync(host, dev, sizeof(int64_t), cudaMemcpyDeviceToHost, stream_of(b)));
    CUDA_CHECK(b, cudaStreamSynchronize(stream_of(b)));
    return cuda_state_of(b)->failed ? 0 : *host;
}
