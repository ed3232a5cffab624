// The one common include of every kernels/*.cu: the real CUDA headers under
// nvcc, the SIMT emulator's (kernels/emu/simt.h) with RC_SIMT_EMU. Kernels
// written against it are plain CUDA, except for two macros:
//   RC_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)  a <<<>>> launch
//   RC_DYN_SHARED(type, name)  the block's dynamic shared memory as `type *name`
// A templated kernel with several template arguments needs parentheses-free
// naming: take a pointer first (`auto *k = kern<a, b>; RC_LAUNCH(k, ...)`).
#ifndef RC_KERNELS_COMMON_CUH
#define RC_KERNELS_COMMON_CUH

#if defined(RC_SIMT_EMU)
#include "kernels/emu/simt.h"
#define RC_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
    RC_EMU_LAUNCH(kernel, grid, block, smem_bytes, stream, ##__VA_ARGS__)
#define RC_DYN_SHARED(type, name) RC_EMU_DYN_SHARED(type, name)
#elif defined(__CUDACC__)
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#define RC_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
    kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
// One raw byte array per translation unit, so kernels of different element
// types can share the name.
#define RC_DYN_SHARED(type, name)                               \
    extern __shared__ __align__(16) unsigned char rc_dyn_smem_[]; \
    type *name = reinterpret_cast<type *>(rc_dyn_smem_)
#else
#error "kernels/common.cuh: compile with nvcc, or as C++ with -DRC_SIMT_EMU"
#endif

#endif
