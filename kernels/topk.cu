// Radix-select top-K: 8-bit digits from the most significant end of the
// 64-bit order key. Per digit: a histogram of the candidates still matching the
// selected prefix (block histograms in shared memory, added into the row's
// global histogram with integer atomics: the sums do not depend on the order),
// then one thread per row picks the digit holding the K-th key. A row stops
// early when its remaining K equals its bucket count (no ties to break), so
// positions are read only when scores tie at the threshold. A final pass
// collects the winners; their slots come from an integer counter, so the set is
// deterministic and the host sorts it.
#include "kernels/common.cuh"
#include "kernels/topk.cuh"

#define TOPK_THREADS 256
#define TOPK_BINS 256
#define TOPK_PER_THREAD 16   // candidates per thread before another block is worth it
#define TOPK_MAX_BLOCKS 1024 // blocks of one pass over all rows

struct topk_row {
    unsigned long long prefix;  // the selected high digits
    int bits;                   // how many high bits of the key prefix fixes
    int k_rem;                  // winners still to take among the keys matching prefix
    int done;                   // 1: every key matching prefix, up to k_rem of them, wins
    int count;                  // winners written
    int tie;                    // keys matching prefix seen by the collect pass
    int pad;
};

__device__ __forceinline__ unsigned order_hi(float s, int ascending) {
    if (isnan(s)) return 0xffffffffu;
    const unsigned b = __float_as_uint(s == 0.0f ? 0.0f : s);
    const unsigned o = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ascending ? o : ~o;
}

// Launch: grid (n_rows), 1 thread. k per row clamped to [0, n]; k = 0 or k = n needs no pass.
__global__ void topk_init_kernel(topk_row *st, int *hist, const int64_t *k_rows, int64_t n) {
    const int64_t r = blockIdx.x;
    int64_t k = k_rows[r];
    k = k < 0 ? 0 : k > n ? n : k;
    topk_row s = {};
    s.k_rem = (int)k;
    s.done = k == 0 || k == n;
    st[r] = s;
    for (int i = 0; i < TOPK_BINS; i++) hist[r * TOPK_BINS + i] = 0;
}

// Launch: grid (blocks per row, n_rows), TOPK_THREADS threads; block b of a row
// takes candidates b*T + tid, stepping by gridDim.x * T (coalesced). Returns at
// once for rows already decided.
__global__ void __launch_bounds__(TOPK_THREADS)
topk_hist_kernel(const topk_row *st, int *hist, const float *scores, int64_t ld, const int64_t *pos, int64_t n,
                 int shift, int ascending) {
    __shared__ int sh[TOPK_BINS];
    const int64_t r = blockIdx.y;
    const topk_row s = st[r];
    if (s.done) return;
    for (int i = threadIdx.x; i < TOPK_BINS; i += blockDim.x) sh[i] = 0;
    __syncthreads();
    const float *row = scores + r * ld;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
        const unsigned hi = order_hi(row[j], ascending);
        unsigned digit;
        if (shift >= 32) {  // only the score's word matters yet
            if (s.bits > 0 && (unsigned long long)(hi >> (32 - s.bits)) != s.prefix) continue;
            digit = (hi >> (shift - 32)) & 0xffu;
        } else {            // the high word is fixed: ties broken by position
            if ((unsigned long long)hi != (s.prefix >> (s.bits - 32))) continue;
            const unsigned long long key = ((unsigned long long)hi << 32) | (unsigned)pos[j];
            if ((key >> (64 - s.bits)) != s.prefix) continue;
            digit = (unsigned)(key >> shift) & 0xffu;
        }
        atomicAdd(&sh[digit], 1);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TOPK_BINS; i += blockDim.x)
        if (sh[i]) atomicAdd(&hist[r * TOPK_BINS + i], sh[i]);
}

// Launch: grid (n_rows), TOPK_BINS threads. Thread 0 walks the bins in order to
// the one that holds the k_rem-th key; all threads then clear the histogram.
__global__ void __launch_bounds__(TOPK_BINS) topk_pick_kernel(topk_row *st, int *hist) {
    const int64_t r = blockIdx.x;
    int *h = hist + r * TOPK_BINS;
    if (threadIdx.x == 0 && !st[r].done) {
        topk_row s = st[r];
        int below = 0, d = 0;
        for (; d < TOPK_BINS - 1; d++) {
            if (below + h[d] >= s.k_rem) break;
            below += h[d];
        }
        s.prefix = (s.prefix << 8) | (unsigned)d;
        s.bits += 8;
        s.k_rem -= below;
        s.done = h[d] == s.k_rem || s.bits == 64;
        st[r] = s;
    }
    __syncthreads();
    h[threadIdx.x] = 0;
}

// Launch: like topk_hist_kernel. Keys below the prefix win; keys matching it
// win while the row's tie counter stays below k_rem (all of them unless equal
// keys, i.e. repeated positions, straddle the threshold).
__global__ void __launch_bounds__(TOPK_THREADS)
topk_collect_kernel(topk_row *st, rk_topk_win *win, const float *scores, int64_t ld,
                    const int64_t *pos, int64_t n, int64_t k_cap, int ascending) {
    const int64_t r = blockIdx.y;
    topk_row *s = &st[r];
    const unsigned long long prefix = s->prefix;
    const int bits = s->bits, k_rem = s->k_rem;
    const float *row = scores + r * ld;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
        const float x = row[j];
        const unsigned hi = order_hi(x, ascending);
        int take;
        if (bits == 0) {
            take = 0;  // k == 0 or k == n
            if (k_rem > 0) take = 1;
        } else {
            const unsigned long long ph = bits <= 32 ? prefix : prefix >> (bits - 32);
            const unsigned hi_top = bits <= 32 ? hi >> (32 - bits) : hi;
            if (hi_top != ph) {
                take = hi_top < ph;  // decided by the score word: no position read
            } else if (bits <= 32) {
                take = 2;
            } else {
                const unsigned long long top = (((unsigned long long)hi << 32) | (unsigned)pos[j]) >> (64 - bits);
                take = top < prefix ? 1 : top == prefix ? 2 : 0;
            }
        }
        if (take == 2) take = atomicAdd(&s->tie, 1) < k_rem;
        if (take) {
            const int slot = atomicAdd(&s->count, 1);
            if (slot < k_cap) win[r * k_cap + slot] = rk_topk_win{x, (unsigned)pos[j]};
        }
    }
}

// Launch: grid (n_rows), 1 thread.
__global__ void topk_count_kernel(const topk_row *st, int32_t *n_win) { n_win[blockIdx.x] = st[blockIdx.x].count; }

extern "C" size_t rk_topk_scratch_bytes(int64_t n_rows) {
    return (size_t)(n_rows > 0 ? n_rows : 1) * (sizeof(topk_row) + TOPK_BINS * sizeof(int));
}

extern "C" cudaError_t rk_topk_select(rk_topk_win *win, int32_t *n_win, const float *scores, int64_t ld,
                                      const int64_t *pos, const int64_t *k_rows, int64_t n_rows, int64_t n,
                                      int64_t k_cap, int ascending, void *scratch, cudaStream_t stream) {
    if (n_rows <= 0) return cudaSuccess;
    if (n < 0 || n > 0xffffffffLL || !scratch) return cudaErrorInvalidValue;
    topk_row *st = (topk_row *)scratch;
    int *hist = (int *)(st + n_rows);
    int64_t per_row = (n + TOPK_THREADS * TOPK_PER_THREAD - 1) / (TOPK_THREADS * TOPK_PER_THREAD);
    int64_t cap = TOPK_MAX_BLOCKS / n_rows;
    if (per_row > cap) per_row = cap;
    if (per_row < 1) per_row = 1;
    const dim3 grid((unsigned)per_row, (unsigned)n_rows);
    RC_LAUNCH(topk_init_kernel, dim3((unsigned)n_rows), dim3(1), 0, stream, st, hist, k_rows, n);
    cudaError_t err = cudaGetLastError();
    for (int shift = 56; shift >= 0 && err == cudaSuccess; shift -= 8) {
        RC_LAUNCH(topk_hist_kernel, grid, dim3(TOPK_THREADS), 0, stream, st, hist, scores, ld, pos, n, shift,
                  ascending);
        RC_LAUNCH(topk_pick_kernel, dim3((unsigned)n_rows), dim3(TOPK_BINS), 0, stream, st, hist);
        err = cudaGetLastError();
    }
    if (err != cudaSuccess) return err;
    RC_LAUNCH(topk_collect_kernel, grid, dim3(TOPK_THREADS), 0, stream, st, win, scores, ld, pos, n, k_cap,
              ascending);
    RC_LAUNCH(topk_count_kernel, dim3((unsigned)n_rows), dim3(1), 0, stream, st, n_win);
    return cudaGetLastError();
}
