// Host launchers of the emulator's test kernels (tests/emu_proofs/*.cu): the
// correct reductions and deliberately broken ones that the emulator must catch.
#ifndef RECALL_TESTS_EMU_PROOFS_H
#define RECALL_TESTS_EMU_PROOFS_H

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// out[b] = sum of x[b*n .. b*n+n), one block of `threads` (a power of two) per row.
// block_sum: tree reduction in dynamic shared memory; warp_sum: shuffles, then
// one warp over the warp partials (static shared memory).
cudaError_t proof_block_sum(float *out, const float *x, int n_rows, int n, int threads, cudaStream_t stream);
cudaError_t proof_warp_sum(float *out, const float *x, int n_rows, int n, int threads, cudaStream_t stream);
// (a) block_sum with the __syncthreads after the shared-memory store removed.
cudaError_t proof_block_sum_nosync(float *out, const float *x, int n_rows, int n, int threads, cudaStream_t stream);
// (b) the final warp of a 64-thread reduction in "implicit lock-step" over
// volatile shared memory (bad), and the same with __syncwarp (good).
cudaError_t proof_lockstep_sum(float *out, const float *x, int n_rows, cudaStream_t stream);
cudaError_t proof_syncwarp_sum(float *out, const float *x, int n_rows, cudaStream_t stream);
// (c) y[i] = 2 x[i] for i in [0, n]: one element past the output.
cudaError_t proof_overrun(float *y, const float *x, int n, cudaStream_t stream);

// Emulator checks: warp collectives with results per lane (32 threads, one block).
// out: (WOPS, 32) ints, see test_emu.cpp for the rows.
cudaError_t proof_warp_ops(int *out, cudaStream_t stream);
// misuse: 1 divergent __syncthreads, 2 shuffle naming an exited lane,
// 3 mismatched masks, 4 a dynamic shared memory overrun, 5 a mask without the
// caller, 6 half a warp at __syncthreads while the other half waits in a shuffle
cudaError_t proof_misuse(int which, float *out, cudaStream_t stream);
// __syncthreads_count/and/or (100 threads): out[0..4] = 34, 1, 1, 0, 90.
cudaError_t proof_block_votes(int *out, cudaStream_t stream);
// 1024 threads with 16 KB of locals each: out[t] = sum_{i<4096} (t + i) % 7.
cudaError_t proof_big_locals(int *out, cudaStream_t stream);
// blockDim/threadIdx/blockIdx in 3D: out[linear global id] = encoded ids.
cudaError_t proof_ids(int *out, unsigned gx, unsigned gy, unsigned bx, unsigned by, unsigned bz, cudaStream_t stream);
// a launch with `smem` bytes of dynamic shared memory (0: cudaFuncSetAttribute not called first)
cudaError_t proof_big_smem(float *out, int smem_bytes, int set_attribute, cudaStream_t stream);

// The emulator's speed benchmark: out[b*threads + t] after `rounds` barrier
// rounds of s[t] += s[(t + 1) % threads] in shared memory (x: one value per thread).
cudaError_t proof_bench_rounds(float *out, const float *x, int n_blocks, int threads, int rounds, cudaStream_t stream);
// out[i] += 1 for i < n over `n_bufs` buffers (one thread per element, one block per buffer; n <= 1024).
cudaError_t proof_bench_touch(float **bufs, int n_bufs, int n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
