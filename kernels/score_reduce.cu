// Score reduction over the query heads of a group, one column per thread; the
// heads are combined in head order, so the result is deterministic.
#include "kernels/common.cuh"
#include "kernels/score_reduce.cuh"

#define SR_THREADS 256

// log p = s - lse; an lse of -inf (no keys anywhere) gives -inf.
__device__ __forceinline__ float logp(float s, float lse) { return lse == -INFINITY ? -INFINITY : s - lse; }

// Launch: grid (ceil(n_cols / SR_THREADS), n_out_rows), SR_THREADS threads;
// thread = column j of row g; G heads per row.
__global__ void __launch_bounds__(SR_THREADS)
score_reduce_kernel(float *out, const float *raw, const float *lse, int64_t G, int64_t n, int64_t ld,
                    int64_t n_cols, int mode) {
    const int64_t g = blockIdx.y, j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_cols) return;
    const int64_t h0 = g * G;
    float *o = &out[g * n + j];
    if (mode == 1) {
        *o = logp(raw[h0 * ld + j], lse[h0]);
    } else if (mode == 0) {
        float m = logp(raw[h0 * ld + j], lse[h0]);
        for (int64_t h = h0 + 1; h < h0 + G; h++) {
            const float x = logp(raw[h * ld + j], lse[h]);
            if (x > m) m = x;
        }
        *o = m;
    } else {
        float acc = 0.0f;
        for (int64_t h = h0; h < h0 + G; h++)
            if (lse[h] != -INFINITY) acc += expf(raw[h * ld + j] - lse[h]);
        const float mean = acc / (float)G;
        *o = mode == 3 ? *o + mean : mean;
    }
}

extern "C" cudaError_t rk_score_reduce(float *out, const float *raw, const float *lse, int64_t n_q_heads,
                                       int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode,
                                       cudaStream_t stream) {
    if (n_out_rows <= 0) return cudaSuccess;
    if (mode < 0 || mode > 3 || n < 0) return cudaErrorInvalidValue;
    const int64_t n_cols = mode == 3 ? (n_acc < n ? (n_acc > 0 ? n_acc : 0) : n) : n;
    if (n_cols == 0) return cudaSuccess;
    RC_LAUNCH(score_reduce_kernel, dim3((unsigned)((n_cols + SR_THREADS - 1) / SR_THREADS), (unsigned)n_out_rows),
              dim3(SR_THREADS), 0, stream, out, raw, lse, n_q_heads / n_out_rows, n, ld, n_cols, mode);
    return cudaGetLastError();
}
