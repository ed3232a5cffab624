// Argmax of a vector (see argmax.cuh).
#include "kernels/common.cuh"
#include "kernels/argmax.cuh"

#define AM_THREADS 1024

// (v, i) beats (bv, bi): a valid index (i >= 0, v not NaN) beats none; a
// larger value wins; equal values go to the lower index.
__device__ __forceinline__ int am_better(float v, int64_t i, float bv, int64_t bi) {
    if (i < 0) return 0;
    if (bi < 0) return 1;
    return v > bv || (v == bv && i < bi);
}

// Launch: 1 block of AM_THREADS threads (one pass over the vector; greedy
// sampling reads it once per token). Thread t scans t, t + AM_THREADS, ...
// keeping its best, then a shared-memory tree combines them: the winner does
// not depend on the order, since the rule is a total order on (value, index).
__global__ void __launch_bounds__(AM_THREADS) argmax_kernel(int64_t *result, const float *x, int64_t n) {
    __shared__ float best_v[AM_THREADS];
    __shared__ int64_t best_i[AM_THREADS];
    float bv = 0.0f;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < n; i += AM_THREADS) {
        const float v = x[i];
        if (!isnan(v) && am_better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int s = AM_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && am_better(best_v[threadIdx.x + s], best_i[threadIdx.x + s], best_v[threadIdx.x],
                                              best_i[threadIdx.x])) {
            best_v[threadIdx.x] = best_v[threadIdx.x + s];
            best_i[threadIdx.x] = best_i[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *result = best_i[0] < 0 ? 0 : best_i[0];
}

extern "C" cudaError_t rk_argmax(int64_t *result, const float *x, int64_t n, cudaStream_t stream) {
    if (n < 0) return cudaErrorInvalidValue;
    RC_LAUNCH(argmax_kernel, dim3(1), dim3(AM_THREADS), 0, stream, result, x, n);
    return cudaGetLastError();
}
