// Dequantization of weight rows to fp32 (see dequant.cuh).
#include "kernels/common.cuh"
#include "kernels/dequant.cuh"
#include "kernels/ggml_blocks.cuh"

#define DQ_THREADS 256
#define DQ_MAX_BLOCKS_X 65535

// Launch: grid (min(ceil(n_in / DQ_THREADS), 65535), min(n_rows, 65535)),
// DQ_THREADS threads; both dimensions stride, so any n_rows and n_in fit.
// One thread per output element; reads each block's scale once per element
// (the GEMM that follows dominates).
__global__ void __launch_bounds__(DQ_THREADS)
dequant_rows_kernel(float *out, const uint8_t *w, uint32_t type, size_t row_bytes, int64_t n_in, const int32_t *rows,
                    int64_t row0, int64_t n_rows) {
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        const int64_t src = rows ? (int64_t)rows[r] : row0 + r;
        const uint8_t *row = w + (size_t)src * row_bytes;
        for (int64_t i = (int64_t)blockIdx.x * DQ_THREADS + threadIdx.x; i < n_in; i += (int64_t)gridDim.x * DQ_THREADS)
            out[r * n_in + i] = rk_weight_elem(row, type, i);
    }
}

extern "C" int rk_weight_type_ok(uint32_t type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || type == GGML_TYPE_Q8_0 ||
           type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1;
}

extern "C" cudaError_t rk_dequant_rows(float *out, const void *w, uint32_t type, size_t row_bytes, int64_t n_in,
                                       const int32_t *rows, int64_t row0, int64_t n_rows, cudaStream_t stream) {
    if (!rk_weight_type_ok(type) || n_in < 0 || n_rows < 0) return cudaErrorInvalidValue;
    if (n_in == 0 || n_rows == 0) return cudaSuccess;
    const int64_t bx = (n_in + DQ_THREADS - 1) / DQ_THREADS;
    const dim3 grid((unsigned)(bx < DQ_MAX_BLOCKS_X ? bx : DQ_MAX_BLOCKS_X),
                    (unsigned)(n_rows < DQ_MAX_BLOCKS_X ? n_rows : DQ_MAX_BLOCKS_X));
    RC_LAUNCH(dequant_rows_kernel, grid, dim3(DQ_THREADS), 0, stream, out, (const uint8_t *)w, type, row_bytes, n_in,
              rows, row0, n_rows);
    return cudaGetLastError();
}
