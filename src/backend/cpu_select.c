#include "backend/cpu_select.h"

#include <stdlib.h>

// Rearranges a so that its m smallest keys come first (quickselect).
static void select_smallest(uint64_t *a, int64_t n, int64_t m) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;  // median of three as the pivot
        uint64_t x = a[lo], y = a[mid], z = a[hi];
        uint64_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                uint64_t t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else return;
    }
}

// LSD radix sort, 8 bits per pass; passes whose digit is the same in every
// key are skipped.
static void radix_sort(uint64_t *a, uint64_t *tmp, int64_t n) {
    for (int shift = 0; shift < 64; shift += 8) {
        int64_t count[257] = {0};
        for (int64_t i = 0; i < n; i++) count[((a[i] >> shift) & 0xff) + 1]++;
        if (count[((a[0] >> shift) & 0xff) + 1] == n) continue;
        for (int d = 0; d < 256; d++) count[d + 1] += count[d];
        for (int64_t i = 0; i < n; i++) tmp[count[(a[i] >> shift) & 0xff]++] = a[i];
        memcpy(a, tmp, (size_t)n * sizeof(uint64_t));
    }
}

int64_t sel_topk_keys(uint64_t *keys, uint64_t *tmp, int64_t n, int64_t k, int ascending, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    int64_t m = n < k ? n : k;
    if (m < n) select_smallest(keys, n, m);
    radix_sort(keys, tmp, m);
    for (int64_t i = 0; i < m; i++) out[i] = sel_from_key(keys[i], ascending);
    return m;
}

int64_t select_topk(const scored_pos *cand, int64_t n, int64_t k, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    int64_t m = n < k ? n : k;
    uint64_t *keys = malloc((size_t)(n + m) * sizeof(uint64_t));
    if (!keys) return -1;
    for (int64_t i = 0; i < n; i++) keys[i] = sel_order_key(cand[i].score, cand[i].pos, 0);
    sel_topk_keys(keys, keys + n, n, k, 0, out);
    free(keys);
    return m;
}

// Van Herk / Gil-Werman: with the input padded by kernel/2 -inf on each
// side and cut into blocks of `kernel`, the window max at i is
// max(suffix max from i within its block, prefix max to i + kernel - 1 within
// the next): about three comparisons per element whatever the kernel.
void sel_maxpool_row(const float *in, int64_t n, int64_t kernel, float *out, float *pre, float *suf) {
    if (n <= 0) return;
    if (kernel <= 1) {
        memcpy(out, in, (size_t)n * sizeof(float));
        return;
    }
    const int64_t half = kernel / 2, np = n + 2 * half;
    for (int64_t b0 = 0; b0 < np; b0 += kernel) {  // block by block: no division per element
        const int64_t b1 = b0 + kernel < np ? b0 + kernel : np;
        for (int64_t i = b0; i < b1; i++) {
            const int64_t j = i - half;
            const float x = j >= 0 && j < n ? in[j] : -INFINITY;
            pre[i] = i == b0 || x > pre[i - 1] ? x : pre[i - 1];
        }
        for (int64_t i = b1 - 1; i >= b0; i--) {
            const int64_t j = i - half;
            const float x = j >= 0 && j < n ? in[j] : -INFINITY;
            suf[i] = i == b1 - 1 || x > suf[i + 1] ? x : suf[i + 1];
        }
    }
    for (int64_t i = 0; i < n; i++) {  // window [i, i + kernel) of the padded row
        const float a = suf[i], b = pre[i + kernel - 1];
        out[i] = a > b ? a : b;
    }
}

int maxpool1d(const float *in, int64_t n, int64_t kernel, float *out) {
    if (n <= 0) return 0;
    if (kernel <= 1) {
        memcpy(out, in, (size_t)n * sizeof(float));
        return 0;
    }
    const int64_t np = n + 2 * (kernel / 2);
    float *pre = malloc((size_t)np * 2 * sizeof(float));
    if (!pre) return -1;
    sel_maxpool_row(in, n, kernel, out, pre, pre + np);
    free(pre);
    return 0;
}
