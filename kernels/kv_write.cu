// KV cache writes (see kv_write.cuh).
#include "kernels/common.cuh"
#include "kernels/ggml_blocks.cuh"
#include "kernels/kv_write.cuh"

#define KVW_THREADS 256
#define KVW_MAX_BLOCKS 65535

// Launch: grid min(ceil(n_rows * head_dim / KVW_THREADS), 65535), KVW_THREADS
// threads, grid-stride over (row, i); one thread writes element i of row r to
// both caches. Slots within a head are distinct (the caller's contract).
__global__ void __launch_bounds__(KVW_THREADS)
kv_write_kernel(void *k_dst, int64_t k_stride, int k_elem, void *v_dst, int64_t v_stride, int v_elem,
                const int64_t *slots, const float *k, const float *v, int64_t n_rows, int64_t n_kv_heads,
                int64_t head_dim) {
    const int64_t total = n_rows * head_dim;
    for (int64_t e = (int64_t)blockIdx.x * KVW_THREADS + threadIdx.x; e < total; e += (int64_t)gridDim.x * KVW_THREADS) {
        const int64_t r = e / head_dim, i = e % head_dim, h = r % n_kv_heads, s = slots[r];
        const int64_t ki = h * k_stride + s * head_dim + i, vi = h * v_stride + s * head_dim + i;
        if (k_elem == 0) ((uint16_t *)k_dst)[ki] = rk_fp32_to_fp16(k[e]);
        else ((float *)k_dst)[ki] = k[e];
        if (v_elem == 0) ((uint16_t *)v_dst)[vi] = rk_fp32_to_fp16(v[e]);
        else ((float *)v_dst)[vi] = v[e];
    }
}

extern "C" cudaError_t rk_kv_write(void *k_dst, int64_t k_stride, int k_elem, void *v_dst, int64_t v_stride, int v_elem,
                                   const int64_t *slots, const float *k, const float *v, int64_t n_tok,
                                   int64_t n_kv_heads, int64_t head_dim, cudaStream_t stream) {
    if (n_tok < 0 || n_kv_heads < 0 || head_dim < 0) return cudaErrorInvalidValue;
    const int64_t total = n_tok * n_kv_heads * head_dim;
    if (total == 0) return cudaSuccess;
    const int64_t blocks = (total + KVW_THREADS - 1) / KVW_THREADS;
    RC_LAUNCH(kv_write_kernel, dim3((unsigned)(blocks < KVW_MAX_BLOCKS ? blocks : KVW_MAX_BLOCKS)), dim3(KVW_THREADS), 0,
              stream, k_dst, k_stride, k_elem, v_dst, v_stride, v_elem, slots, k, v, n_tok * n_kv_heads, n_kv_heads,
              head_dim);
    return cudaGetLastError();
}
