// swiglu, add, add_bias (see elementwise.cuh).
#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"

#define EW_THREADS 256
#define EW_MAX_BLOCKS 65535

static unsigned ew_blocks(int64_t n) {
    const int64_t b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b < EW_MAX_BLOCKS ? b : EW_MAX_BLOCKS);
}

// Launch (all three): grid ew_blocks(n elements), EW_THREADS threads, grid-stride.
__global__ void swiglu_kernel(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n; i += (int64_t)gridDim.x * EW_THREADS) {
        const double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

__global__ void add_kernel(float *x, const float *y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * EW_THREADS + threadIdx.x; i < n; i += (int64_t)gridDim.x * EW_THREADS)
        x[i] += y[i];
}

__global__ void add_bias_kernel(float *x, const float *bias, int64_t n_rows, int64_t n) {
    const int64_t total = n_rows * n;
    for (int64_t i = (int64_t)blockIdx.x * EW_THREADS + threadIdx.x; i < total; i += (int64_t)gridDim.x * EW_THREADS)
        x[i] += bias[i % n];
}

extern "C" cudaError_t rk_swiglu(float *out, const float *gate, const float *up, int64_t n, cudaStream_t stream) {
    if (n < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    RC_LAUNCH(swiglu_kernel, dim3(ew_blocks(n)), dim3(EW_THREADS), 0, stream, out, gate, up, n);
    return cudaGetLastError();
}

extern "C" cudaError_t rk_add(float *x, const float *y, int64_t n, cudaStream_t stream) {
    if (n < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    RC_LAUNCH(add_kernel, dim3(ew_blocks(n)), dim3(EW_THREADS), 0, stream, x, y, n);
    return cudaGetLastError();
}

extern "C" cudaError_t rk_add_bias(float *x, const float *bias, int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (n < 0 || n_rows < 0) return cudaErrorInvalidValue;
    if (n == 0 || n_rows == 0) return cudaSuccess;
    RC_LAUNCH(add_bias_kernel, dim3(ew_blocks(n_rows * n)), dim3(EW_THREADS), 0, stream, x, bias, n_rows, n);
    return cudaGetLastError();
}
