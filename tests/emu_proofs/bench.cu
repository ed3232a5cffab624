// Kernels for the emulator's speed benchmark (tests/bench_emu.cpp).
#include "kernels/common.cuh"
#include "proofs.h"

// Launch: grid n_blocks, block threads, smem threads floats.
__global__ void bench_rounds_kernel(float *out, const float *x, int rounds) {
    RC_DYN_SHARED(float, s);
    const int t = threadIdx.x, n = blockDim.x;
    const size_t i = (size_t)blockIdx.x * n + t;
    s[t] = x[i];
    for (int r = 0; r < rounds; r++) {
        __syncthreads();
        float v = s[t] + s[(t + 1) % n];
        __syncthreads();
        s[t] = v;
    }
    out[i] = s[t];
}

struct bench_bufs {
    float *p[64];
};

// Launch: grid n_bufs, block n.
__global__ void bench_touch_kernel(bench_bufs b) { b.p[blockIdx.x][threadIdx.x] += 1.0f; }

extern "C" cudaError_t proof_bench_rounds(float *out, const float *x, int n_blocks, int threads, int rounds,
                                          cudaStream_t stream) {
    RC_LAUNCH(bench_rounds_kernel, dim3(n_blocks), dim3(threads), threads * sizeof(float), stream, out, x,
              rounds / 2);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_bench_touch(float **bufs, int n_bufs, int n, cudaStream_t stream) {
    bench_bufs b;
    for (int i = 0; i < n_bufs && i < 64; i++) b.p[i] = bufs[i];
    RC_LAUNCH(bench_touch_kernel, dim3(n_bufs), dim3(n), 0, stream, b);
    return cudaGetLastError();
}
