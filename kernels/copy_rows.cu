// Indexed row copies (see copy_rows.cuh).
#include "kernels/common.cuh"
#include "kernels/copy_rows.cuh"

#define CR_THREADS 128
#define CR_MAX_BLOCKS 65535

// Launch: grid min(n_rows, 65535) (striding over rows), CR_THREADS threads;
// a block copies one row in `unit`-byte words (unit = 16, 4 or 1: the
// largest that divides row_bytes and both base addresses).
template <typename T>
__global__ void __launch_bounds__(CR_THREADS)
copy_rows_kernel(T *dst, const int64_t *dst_rows, const T *src, const int64_t *src_rows, int64_t n_rows,
                 int64_t row_words) {
    for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
        const int64_t d = dst_rows ? dst_rows[r] : r, s = src_rows ? src_rows[r] : r;
        T *out = dst + d * row_words;
        const T *in = src + s * row_words;
        for (int64_t i = threadIdx.x; i < row_words; i += CR_THREADS) out[i] = in[i];
    }
}

struct rk_u128 {
    uint32_t w[4];
};

extern "C" cudaError_t rk_copy_rows(void *dst, const int64_t *dst_rows, const void *src, const int64_t *src_rows,
                                    int64_t n_rows, size_t row_bytes, cudaStream_t stream) {
    if (n_rows < 0) return cudaErrorInvalidValue;
    if (n_rows == 0 || row_bytes == 0) return cudaSuccess;
    const dim3 grid((unsigned)(n_rows < CR_MAX_BLOCKS ? n_rows : CR_MAX_BLOCKS)), block(CR_THREADS);
    const size_t align = (size_t)dst | (size_t)src | row_bytes;
    if (align % 16 == 0) {
        RC_LAUNCH(copy_rows_kernel<rk_u128>, grid, block, 0, stream, (rk_u128 *)dst, dst_rows, (const rk_u128 *)src,
                  src_rows, n_rows, (int64_t)(row_bytes / 16));
    } else if (align % 4 == 0) {
        RC_LAUNCH(copy_rows_kernel<uint32_t>, grid, block, 0, stream, (uint32_t *)dst, dst_rows, (const uint32_t *)src,
                  src_rows, n_rows, (int64_t)(row_bytes / 4));
    } else {
        RC_LAUNCH(copy_rows_kernel<uint8_t>, grid, block, 0, stream, (uint8_t *)dst, dst_rows, (const uint8_t *)src,
                  src_rows, n_rows, (int64_t)row_bytes);
    }
    return cudaGetLastError();
}
