// Mean over heads (see mean_heads.cuh).
#include "kernels/common.cuh"
#include "kernels/mean_heads.cuh"

#define MH_THREADS 128

// Launch: grid ceil(head_dim / MH_THREADS), MH_THREADS threads; thread i sums
// column i over the heads in order (double) and divides once.
__global__ void mean_heads_kernel(float *out, const float *q, int64_t n_heads, int64_t head_dim) {
    const int64_t i = (int64_t)blockIdx.x * MH_THREADS + threadIdx.x;
    if (i >= head_dim) return;
    double acc = 0.0;
    for (int64_t h = 0; h < n_heads; h++) acc += q[h * head_dim + i];
    out[i] = (float)(acc / (double)n_heads);
}

extern "C" cudaError_t rk_mean_heads(float *out, const float *q, int64_t n_heads, int64_t head_dim,
                                     cudaStream_t stream) {
    if (n_heads < 0 || head_dim < 0) return cudaErrorInvalidValue;
    if (head_dim == 0) return cudaSuccess;
    RC_LAUNCH(mean_heads_kernel, dim3((unsigned)((head_dim + MH_THREADS - 1) / MH_THREADS)), dim3(MH_THREADS), 0,
              stream, out, q, n_heads, head_dim);
    return cudaGetLastError();
}
