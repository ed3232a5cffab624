// Top-K per row by block radix-select on order keys (no CUB: the emulator must
// run it). The order key of a candidate is 64 bits: high word = the score as an
// unsigned word that rises as the selection order falls (score desc, or asc
// when `ascending`; NaN all ones: last either way; -0 like +0), low word = the
// position. Keys are unique for distinct positions, so the K smallest keys are
// exactly the K winners, ties at the threshold resolved by position.
#ifndef RECALL_KERNELS_TOPK_CUH
#define RECALL_KERNELS_TOPK_CUH

#include <stddef.h>
#include <stdint.h>

#include "kernels/launch_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// One winner as the kernel leaves it: the original score bits and the position.
typedef struct rk_topk_win {
    float score;
    uint32_t pos;
} rk_topk_win;

// Device scratch rk_topk_select needs: per-row state and histograms.
size_t rk_topk_scratch_bytes(int64_t n_rows);

// Per row r < n_rows: the min(k_rows[r], n) candidates (scores[r * ld + j],
// pos[j]), j < n, with the smallest order keys, in no particular order, to
// win + r * k_cap, and their count to n_win[r]. k_cap >= every min(k, n).
// scores, pos (n), k_rows (n_rows), win, n_win: device memory.
cudaError_t rk_topk_select(rk_topk_win *win, int32_t *n_win, const float *scores, int64_t ld, const int64_t *pos,
                           const int64_t *k_rows, int64_t n_rows, int64_t n, int64_t k_cap, int ascending,
                           void *scratch, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
