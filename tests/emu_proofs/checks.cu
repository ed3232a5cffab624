// Kernels that check the emulator itself: warp collectives lane by lane, the
// misuses it must report, thread/block ids, dynamic shared memory limits.
// Compiled in the emulator only (tests/CMakeLists.txt).
#include "kernels/common.cuh"
#include "proofs.h"

#define WOPS 14

// Launch: 1 block of 32 threads. out: (WOPS, 32).
__global__ void warp_ops_kernel(int *out) {
    __shared__ int s[32];
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x;
    int r = 0;
    out[0 * 32 + lane] = __shfl_sync(full, lane * 10, 5);
    out[1 * 32 + lane] = __shfl_sync(full, lane, 3, 8);
    out[2 * 32 + lane] = __shfl_up_sync(full, lane, 3);
    out[3 * 32 + lane] = __shfl_down_sync(full, lane, 3, 16);
    out[4 * 32 + lane] = __shfl_xor_sync(full, lane, 5);
    out[5 * 32 + lane] = (int)__ballot_sync(full, lane % 3 == 0);
    out[6 * 32 + lane] = __any_sync(full, lane == 7);
    out[7 * 32 + lane] = __all_sync(full, lane < 31);
    out[8 * 32 + lane] = (int)__reduce_add_sync(full, (unsigned)lane);
    out[9 * 32 + lane] = (int)__reduce_min_sync(full, (unsigned)(100 - lane));
    out[10 * 32 + lane] = __reduce_max_sync(full, lane - 10);
    r = -1;
    if (lane < 16) r = __shfl_xor_sync(0x0000ffffu, lane, 1);
    out[11 * 32 + lane] = r;
    double d = __shfl_sync(full, lane * 0.5, 31);
    out[12 * 32 + lane] = (int)(d * 2.0);
    s[lane] = lane;
    __syncwarp();
    out[13 * 32 + lane] = s[(lane + 1) % 32];
}

// Launch: 1 block of 32 threads (which 4: 64 floats of dynamic shared memory).
__global__ void misuse_kernel(int which, float *out) {
    const int lane = threadIdx.x;
    float v = (float)lane;
    if (which == 1) {
        if (lane < 16) {
            __syncthreads();
        } else {
            __syncthreads();
        }
    } else if (which == 2) {
        if (lane >= 16) return;
        v = __shfl_sync(0xffffffffu, v, 0);
    } else if (which == 3) {
        v = __shfl_xor_sync(lane < 16 ? 0xffffffffu : 0xffff0000u, v, 1);
    } else if (which == 4) {
        RC_DYN_SHARED(float, s);
        s[lane * 2 + 1] = v;  // lane 31 writes s[63]: in bounds
        __syncthreads();
        if (lane == 31) s[64] = v;  // one past the end
    } else if (which == 5) {
        __syncwarp(0xfffffffeu);
    } else if (which == 6) {
        if (lane < 16) __syncthreads();
        else v = __shfl_sync(0xffffffffu, v, 0);
    }
    out[lane] = v;
}

// Launch: 1 block of 100 threads; out: 5 ints. Threads 90..99 exit before
// the last barrier, which then counts the 90 that remain (as on the GPU).
__global__ void block_votes_kernel(int *out) {
    const int t = threadIdx.x;
    int c = __syncthreads_count(t % 3 == 0);
    int a = __syncthreads_and(t < 100);
    int o = __syncthreads_or(t == 99);
    int a2 = __syncthreads_and(t < 99);
    if (t >= 90) return;
    int c2 = __syncthreads_count(1);
    if (t == 0) {
        out[0] = c;
        out[1] = a;
        out[2] = o;
        out[3] = a2;
        out[4] = c2;
    }
}

// Launch: 1 block of 1024 threads, each with 16 KB of locals; out[t] = sum
// over i of (t + i) % 7 for i < 4096.
__global__ void big_locals_kernel(int *out) {
    volatile int loc[4096];
    const int t = threadIdx.x;
    for (int i = 0; i < 4096; i++) loc[i] = (t + i) % 7;
    __syncthreads();  // every thread's frame is live at once
    int acc = 0;
    for (int i = 0; i < 4096; i++) acc += loc[i];
    out[t] = acc;
}

// Launch: grid (gx, gy), block (bx, by, bz).
__global__ void ids_kernel(int *out) {
    const unsigned n_thr = blockDim.x * blockDim.y * blockDim.z;
    const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned b = blockIdx.y * gridDim.x + blockIdx.x;
    out[(size_t)b * n_thr + t] = (int)(threadIdx.x | threadIdx.y << 6 | threadIdx.z << 12 | blockIdx.x << 16 |
                                       blockIdx.y << 22);
}

// Launch: 1 block of 256 threads, smem_bytes of dynamic shared memory.
__global__ void big_smem_kernel(float *out, int n) {
    RC_DYN_SHARED(float, s);
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += s[i];
        out[0] = acc;
    }
}

extern "C" cudaError_t proof_warp_ops(int *out, cudaStream_t stream) {
    RC_LAUNCH(warp_ops_kernel, dim3(1), dim3(32), 0, stream, out);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_misuse(int which, float *out, cudaStream_t stream) {
    RC_LAUNCH(misuse_kernel, dim3(1), dim3(32), which == 4 ? 64 * sizeof(float) : 0, stream, which, out);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_block_votes(int *out, cudaStream_t stream) {
    RC_LAUNCH(block_votes_kernel, dim3(1), dim3(100), 0, stream, out);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_big_locals(int *out, cudaStream_t stream) {
    RC_LAUNCH(big_locals_kernel, dim3(1), dim3(1024), 0, stream, out);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_ids(int *out, unsigned gx, unsigned gy, unsigned bx, unsigned by, unsigned bz,
                                 cudaStream_t stream) {
    RC_LAUNCH(ids_kernel, dim3(gx, gy), dim3(bx, by, bz), 0, stream, out);
    return cudaGetLastError();
}

extern "C" cudaError_t proof_big_smem(float *out, int smem_bytes, int set_attribute, cudaStream_t stream) {
    if (set_attribute) {
        cudaError_t e = cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
        if (e != cudaSuccess) return e;
    }
    RC_LAUNCH(big_smem_kernel, dim3(1), dim3(256), (size_t)smem_bytes, stream, out, smem_bytes / 4);
    return cudaGetLastError();
}
