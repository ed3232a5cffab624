// Indexed row gather/scatter between device buffers.
#ifndef RECALL_KERNELS_COPY_ROWS_CUH
#define RECALL_KERNELS_COPY_ROWS_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// For i < n_rows: row dst_rows[i] of dst <- row src_rows[i] of src (rows of
// row_bytes; device int64 index arrays, NULL = identity). Destination rows
// distinct and not overlapping any source row.
cudaError_t rk_copy_rows(void *dst, const int64_t *dst_rows, const void *src, const int64_t *src_rows, int64_t n_rows,
                         size_t row_bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
