// Private state of one CUDA backend instance and the helpers every CUDA op
// uses: growing scratch buffers, metadata staging and the sticky failure
// report behind CUDA_CHECK / CUBLAS_CHECK (style.md 7). Shared by the files
// of src/backend/cuda/ only.
#ifndef RECALL_BACKEND_CUDA_INTERNAL_H
#define RECALL_BACKEND_CUDA_INTERNAL_H

#include <stddef.h>

#include "backend/backend.h"
#include "kernels/blas.h"
#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CUDA_SCRATCH_META, CUDA_SCRATCH_ATTN, CUDA_SCRATCH_GEMM, CUDA_SCRATCH_TOPK, CUDA_SCRATCH_MISC, CUDA_SCRATCH_SLOTS };

typedef struct cuda_state {
    cudaStream_t stream;
    cublasHandle_t blas;
    int device;
    int rank;
    char host[64];
    // device scratch buffers that grow on demand, one per slot (never shrink; freed at shutdown)
    void *scratch[CUDA_SCRATCH_SLOTS];
    size_t scratch_bytes[CUDA_SCRATCH_SLOTS];
    void *pinned;            // host staging for metadata uploads and host results
    size_t pinned_bytes;
    int failed;              // sticky: first failure, reported by synchronize
    char err[256];
    // cuda_stage's ring over `pinned`: CUDA_PINNED_SEGS segments, each reused
    // only after the copies last queued from it completed (seg_done).
    size_t pinned_head;
    int pinned_seg;
    cudaEvent_t seg_done[4];
    int seg_used[4];
    void *result;            // pinned host memory for host results (cuda_result_buffer)
    size_t result_bytes;
} cuda_state;

#define CUDA_PINNED_SEGS 4

cuda_state *cuda_state_of(const backend *b);

// A device buffer of at least n_bytes for `slot`, valid until the next call
// for the same slot with a larger size; NULL + sticky error on failure. Growing
// synchronizes the stream first (work queued on the old buffer may still run).
void *cuda_scratch(const backend *b, int slot, size_t n_bytes);

// Copies n_bytes of host metadata (positions, slots, indices, k per row) to a
// device buffer of slot CUDA_SCRATCH_META at byte offset `offset` (so one op
// can stage several arrays; keep offsets 16-byte aligned) and returns it.
// NULL + sticky error on failure. Ordered on the stream. A call that needs a
// larger buffer moves it, so pointers from earlier calls go stale: stage the
// highest offset first, or reserve the total with cuda_scratch(b, CUDA_SCRATCH_META, n).
const void *cuda_stage(const backend *b, const void *host, size_t n_bytes, size_t offset);

// Pinned host memory of at least n_bytes for a host result: queue the
// device-to-host copy into it, synchronize the stream, then read it. Valid
// until the next call. NULL + sticky error on failure.
void *cuda_result_buffer(const backend *b, size_t n_bytes);

// Records the first failure (sticky): "<call> failed: <what> (code) at file:line [rank r @ host]".
void cuda_fail(const backend *b, const char *call, int code, const char *what, const char *file, int line);

#define CUDA_CHECK(b, call)                                                               \
    do {                                                                                  \
        cudaError_t cuda_check_err_ = (call);                                             \
        if (cuda_check_err_ != cudaSuccess)                                               \
            cuda_fail((b), #call, (int)cuda_check_err_, cudaGetErrorString(cuda_check_err_), \
                      __FILE__, __LINE__);                                                \
    } while (0)

#define CUBLAS_CHECK(b, call)                                                                  \
    do {                                                                                       \
        cublasStatus_t cublas_check_st_ = (call);                                              \
        if (cublas_check_st_ != CUBLAS_STATUS_SUCCESS)                                         \
            cuda_fail((b), #call, (int)cublas_check_st_, cublasGetStatusString(cublas_check_st_), \
                      __FILE__, __LINE__);                                                     \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
