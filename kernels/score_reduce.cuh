// Position scores from raw attention scores (backend_ops.score_reduce): each
// output row combines one group of query heads by enum score_mode.
#ifndef RECALL_KERNELS_SCORE_REDUCE_CUH
#define RECALL_KERNELS_SCORE_REDUCE_CUH

#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// raw: (n_q_heads, ld), n valid columns; lse: (n_q_heads); out: (n_out_rows, n).
// mode: 0 max log p, 1 first head's log p, 2 mean p, 3 out += mean p on columns < n_acc.
cudaError_t rk_score_reduce(float *out, const float *raw, const float *lse, int64_t n_q_heads, int64_t n_out_rows,
                            int64_t n, int64_t ld, int64_t n_acc, int mode, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
