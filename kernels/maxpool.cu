// Max-pooling. Small windows (half <= POOL_MAX_HALF): one pass, a block stages
// its outputs' inputs with the halo in shared memory and each thread scans its
// window there. Large windows: sparse-table doubling on a -inf padded copy,
// P[x] = in[x - half] (NaN -> -inf), M_2w[x] = max(M_w[x], M_w[x + w]) until
// w = p, the largest power of two <= kernel; then out[i] = max(M_p[i],
// M_p[i + kernel - p]): log2(kernel) passes, O(n log kernel) instead of O(n kernel).
#include "kernels/common.cuh"
#include "kernels/maxpool.cuh"

#define POOL_THREADS 256
#define POOL_MAX_HALF 64

__device__ __forceinline__ float nan_low(float x) { return isnan(x) ? -INFINITY : x; }

// Launch: grid (ceil(n / POOL_THREADS), n_rows), POOL_THREADS threads,
// static shared memory POOL_THREADS + 2 * POOL_MAX_HALF floats.
__global__ void __launch_bounds__(POOL_THREADS)
maxpool_small_kernel(float *out, const float *in, int64_t n, int half) {
    __shared__ float tile[POOL_THREADS + 2 * POOL_MAX_HALF];
    const int64_t r = blockIdx.y, i0 = (int64_t)blockIdx.x * POOL_THREADS;
    const float *row = in + r * n;
    for (int t = threadIdx.x; t < POOL_THREADS + 2 * half; t += blockDim.x) {
        const int64_t j = i0 - half + t;
        tile[t] = j >= 0 && j < n ? nan_low(row[j]) : -INFINITY;
    }
    __syncthreads();
    const int64_t i = i0 + threadIdx.x;
    if (i >= n) return;
    float m = -INFINITY;
    for (int t = (int)threadIdx.x; t <= (int)threadIdx.x + 2 * half; t++) m = tile[t] > m ? tile[t] : m;
    out[r * n + i] = m;
}

// Launch: grid (ceil(len / POOL_THREADS), n_rows), POOL_THREADS threads; len = n + 2 * half.
__global__ void maxpool_pad_kernel(float *p, const float *in, int64_t n, int64_t half) {
    const int64_t r = blockIdx.y, len = n + 2 * half, x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= len) return;
    const int64_t j = x - half;
    p[r * len + x] = j >= 0 && j < n ? nan_low(in[r * n + j]) : -INFINITY;
}

// Launch: like maxpool_pad_kernel. dst[x] = max(src[x], src[x + w]) (beyond the row: -inf).
__global__ void maxpool_double_kernel(float *dst, const float *src, int64_t len, int64_t w) {
    const int64_t r = blockIdx.y, x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= len) return;
    const float a = src[r * len + x], b = x + w < len ? src[r * len + x + w] : -INFINITY;
    dst[r * len + x] = b > a ? b : a;
}

// Launch: grid (ceil(n / POOL_THREADS), n_rows), POOL_THREADS threads.
__global__ void maxpool_final_kernel(float *out, const float *m, int64_t n, int64_t len, int64_t off) {
    const int64_t r = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float a = m[r * len + i], b = m[r * len + i + off];
    out[r * n + i] = b > a ? b : a;
}

static int64_t pow2_floor(int64_t x) {
    int64_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

extern "C" size_t rk_maxpool_scratch_bytes(int64_t n_rows, int64_t n, int64_t kernel) {
    const int64_t half = kernel / 2;
    if (half <= POOL_MAX_HALF || n_rows <= 0 || n <= 0) return 0;
    return 2 * sizeof(float) * (size_t)(n_rows * (n + 2 * half));
}

extern "C" cudaError_t rk_maxpool_rows(float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel,
                                       void *scratch, cudaStream_t stream) {
    if (kernel < 1 || kernel % 2 == 0 || n_rows < 0 || n < 0) return cudaErrorInvalidValue;
    if (n_rows == 0 || n == 0) return cudaSuccess;
    const int64_t half = kernel / 2;
    const unsigned rows = (unsigned)n_rows;
    if (half <= POOL_MAX_HALF) {
        RC_LAUNCH(maxpool_small_kernel, dim3((unsigned)((n + POOL_THREADS - 1) / POOL_THREADS), rows),
                  dim3(POOL_THREADS), 0, stream, out, in, n, (int)half);
        return cudaGetLastError();
    }
    if (!scratch) return cudaErrorInvalidValue;
    const int64_t len = n + 2 * half, p = pow2_floor(kernel);
    float *a = (float *)scratch, *b = a + n_rows * len;
    const dim3 grid_len((unsigned)((len + POOL_THREADS - 1) / POOL_THREADS), rows);
    RC_LAUNCH(maxpool_pad_kernel, grid_len, dim3(POOL_THREADS), 0, stream, a, in, n, half);
    for (int64_t w = 1; w < p; w *= 2) {
        RC_LAUNCH(maxpool_double_kernel, grid_len, dim3(POOL_THREADS), 0, stream, b, a, len, w);
        float *t = a;
        a = b;
        b = t;
    }
    RC_LAUNCH(maxpool_final_kernel, dim3((unsigned)((n + POOL_THREADS - 1) / POOL_THREADS), rows),
              dim3(POOL_THREADS), 0, stream, out, a, n, len, kernel - p);
    return cudaGetLastError();
}
