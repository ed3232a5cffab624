// Reductions for the emulator's tests: correct ones, and the broken ones of
// proofs (a)-(c). Compiled in the emulator only (tests/CMakeLists.txt).
#include "kernels/common.cuh"
#include "proofs.h"

// Launch: grid n_rows, block threads (power of two <= 1024), smem threads floats.
__global__ void block_sum_kernel(float *out, const float *x, int n, int drop_sync) {
    RC_DYN_SHARED(float, s);
    const float *row = x + (size_t)blockIdx.x * n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += row[i];
    s[threadIdx.x] = v;
    if (!drop_sync) __syncthreads();
    for (int off = blockDim.x / 2; off > 0; off >>= 1) {
        if ((int)threadIdx.x < off) s[threadIdx.x] += s[threadIdx.x + off];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

__device__ __forceinline__ float warp_reduce(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Launch: grid n_rows, block threads (multiple of 32, <= 1024).
__global__ void warp_sum_kernel(float *out, const float *x, int n) {
    __shared__ float part[32];
    const float *row = x + (size_t)blockIdx.x * n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += row[i];
    v = warp_reduce(v);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? part[lane] : 0.0f;
        v = warp_reduce(v);
        if (lane == 0) out[blockIdx.x] = v;
    }
}

// Launch: grid n_rows, block 64; each row has 64 elements.
__global__ void lockstep_sum_kernel(float *out, const float *x, int use_syncwarp) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = x[(size_t)blockIdx.x * 64 + t];
    __syncthreads();
    if (t < 32) {
        volatile float *vs = s;
        if (!use_syncwarp) {
            // pre-Volta idiom: assumes the 32 lanes run each line together
            vs[t] += vs[t + 32];
            vs[t] += vs[t + 16];
            vs[t] += vs[t + 8];
            vs[t] += vs[t + 4];
            vs[t] += vs[t + 2];
            vs[t] += vs[t + 1];
        } else {
            for (int o = 32; o > 0; o >>= 1) {
                float other = t < o ? vs[t + o] : 0.0f;
                __syncwarp();
                if (t < o) vs[t] += other;
                __syncwarp();
            }
        }
        if (t == 0) out[blockIdx.x] = vs[0];
    }
}

// Launch: grid ceil((n+1)/128), block 128.
__global__ void overrun_kernel(float *y, const float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 2.0f * (i < n ? x[i] : 1.0f);  // the bug: <= n
}

extern "C" cudaError_t proof_block_sum(float *out, const float *x, int n_rows, int n, int threads,
                                       cudaStream_t stream) {
    RC_LAUNCH(block_sum_kernel, dim3(n_rows), dim3(threads), threads * sizeof(float), stream, out, x, n, 0);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_block_sum_nosync(float *out, const float *x, int n_rows, int n, int threads,
                                              cudaStream_t stream) {
    RC_LAUNCH(block_sum_kernel, dim3(n_rows), dim3(threads), threads * sizeof(float), stream, out, x, n, 1);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_warp_sum(float *out, const float *x, int n_rows, int n, int threads,
                                      cudaStream_t stream) {
    RC_LAUNCH(warp_sum_kernel, dim3(n_rows), dim3(threads), 0, stream, out, x, n);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_lockstep_sum(float *out, const float *x, int n_rows, cudaStream_t stream) {
    RC_LAUNCH(lockstep_sum_kernel, dim3(n_rows), dim3(64), 0, stream, out, x, 0);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_syncwarp_sum(float *out, const float *x, int n_rows, cudaStream_t stream) {
    RC_LAUNCH(lockstep_sum_kernel, dim3(n_rows), dim3(64), 0, stream, out, x, 1);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_overrun(float *y, const float *x, int n, cudaStream_t stream) {
    RC_LAUNCH(overrun_kernel, dim3((n + 1 + 127) / 128), dim3(128), 0, stream, y, x, n);
    return cudaGetLastError();
}
