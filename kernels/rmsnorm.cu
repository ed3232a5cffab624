// RMS normalization (see rmsnorm.cuh).
#include "kernels/common.cuh"
#include "kernels/rmsnorm.cuh"

#define RMS_THREADS 256
#define RMS_MAX_BLOCKS 65535

// Launch: grid min(n_rows, 65535) (striding over rows), RMS_THREADS threads.
// Thread t sums x[i]^2 in double over i = t, t + RMS_THREADS, ... (in order),
// then a shared-memory tree over the threads (fixed order): like the
// reference's double sum up to the order, then one fp32 scale per element.
__global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_kernel(float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps) {
    __shared__ double part[RMS_THREADS];
    __shared__ float inv_s;
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const float *xr = x + r * n;
        double ss = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += RMS_THREADS) ss += (double)xr[i] * xr[i];
        part[threadIdx.x] = ss;
        __syncthreads();
        for (int s = RMS_THREADS / 2; s > 0; s >>= 1) {
            if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) inv_s = (float)(1.0 / sqrt(part[0] / (double)n + eps));
        __syncthreads();
        const float inv = inv_s;
        for (int64_t i = threadIdx.x; i < n; i += RMS_THREADS) out[r * n + i] = xr[i] * inv * w[i];
        __syncthreads();  // part and inv_s are rewritten for the next row
    }
}

extern "C" cudaError_t rk_rmsnorm(float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps,
                                  cudaStream_t stream) {
    if (n_rows < 0 || n < 0) return cudaErrorInvalidValue;
    if (n_rows == 0 || n == 0) return cudaSuccess;
    RC_LAUNCH(rmsnorm_kernel, dim3((unsigned)(n_rows < RMS_MAX_BLOCKS ? n_rows : RMS_MAX_BLOCKS)), dim3(RMS_THREADS), 0,
              stream, out, x, w, n_rows, n, eps);
    return cudaGetLastError();
}
