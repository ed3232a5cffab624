#include "policy/select.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// NaN sorts last: it must never displace a real score, and every rank must
// treat it the same way.
int scored_pos_before(const scored_pos *a, const scored_pos *b) {
    int an = isnan(a->score), bn = isnan(b->score);
    if (an != bn) return bn;
    if (!an && a->score != b->score) return a->score > b->score;
    return a->pos < b->pos;
}

// The selection order as one integer: high word = the score mapped to an
// unsigned word that falls as the score rises (NaN: all ones, last), low
// word = the position. Keys are unique and compare like scored_pos_before.
static uint64_t order_key(float score, int64_t pos) {
    uint32_t hi;
    if (isnan(score)) {
        hi = 0xffffffffu;
    } else {
        if (score == 0.0f) score = 0.0f;  // -0 and +0 are the same score
        uint32_t b;
        memcpy(&b, &score, 4);
        uint32_t o = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // ascending with the float
        hi = ~o;
    }
    return ((uint64_t)hi << 32) | (uint64_t)(uint32_t)pos;
}

static scored_pos from_key(uint64_t key) {
    uint32_t hi = (uint32_t)(key >> 32);
    float score;
    if (hi == 0xffffffffu) {
        score = NAN;
    } else {
        uint32_t o = ~hi, b = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
        memcpy(&score, &b, 4);
    }
    return (scored_pos){.score = score, .pos = (int64_t)(uint32_t)key};
}

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

int64_t select_topk(const scored_pos *cand, int64_t n, int64_t k, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    int64_t m = n < k ? n : k;
    uint64_t *keys = malloc((size_t)(n + m) * sizeof(uint64_t));
    if (!keys) abort();  // a few bytes per candidate; callers size far larger buffers
    for (int64_t i = 0; i < n; i++) keys[i] = order_key(cand[i].score, cand[i].pos);
    if (m < n) select_smallest(keys, n, m);
    radix_sort(keys, keys + n, m);
    for (int64_t i = 0; i < m; i++) out[i] = from_key(keys[i]);
    free(keys);
    return m;
}

int64_t merge_topk(const scored_pos *lists, const int64_t *counts, int n_lists, int64_t k, scored_pos *out) {
    if (k <= 0 || n_lists <= 0) return 0;
    int64_t *head = calloc((size_t)n_lists, sizeof(int64_t));
    int64_t *start = malloc((size_t)n_lists * sizeof(int64_t));
    int64_t off = 0;
    for (int i = 0; i < n_lists; i++) {
        start[i] = off;
        off += counts[i];
    }
    int64_t n_out = 0;
    while (n_out < k) {  // k-way merge; the number of ranks is small
        int best = -1;
        for (int i = 0; i < n_lists; i++) {
            if (head[i] >= counts[i]) continue;
            if (best < 0 || scored_pos_before(&lists[start[i] + head[i]], &lists[start[best] + head[best]])) best = i;
        }
        if (best < 0) break;
        out[n_out++] = lists[start[best] + head[best]++];
    }
    free(head);
    free(start);
    return n_out;
}

void aggregate_group(const float *probs, int64_t group, int64_t n, int agg, float *out) {
    for (int64_t j = 0; j < n; j++) {
        if (agg == GROUP_AGG_FIRST || group == 1) {
            out[j] = probs[j];
            continue;
        }
        double acc = agg == GROUP_AGG_MAX ? -INFINITY : 0.0;
        for (int64_t g = 0; g < group; g++) {
            float p = probs[g * n + j];
            if (agg == GROUP_AGG_MAX) acc = p > acc ? p : acc;
            else acc += p;
        }
        out[j] = (float)(agg == GROUP_AGG_MEAN ? acc / (double)group : acc);
    }
}

// Van Herk / Gil-Werman: with the input padded by kernel/2 -inf on each
// side and cut into blocks of `kernel`, the window max at i is
// max(suffix max from i within its block, prefix max to i + kernel - 1 within
// the next): about three comparisons per element whatever the kernel.
void maxpool1d(const float *in, int64_t n, int64_t kernel, float *out) {
    if (n <= 0) return;
    if (kernel <= 1) {
        memcpy(out, in, (size_t)n * sizeof(float));
        return;
    }
    const int64_t half = kernel / 2, np = n + 2 * half;
    float *pre = malloc((size_t)np * sizeof(float)), *suf = malloc((size_t)np * sizeof(float));
    if (!pre || !suf) abort();  // two rows of floats; callers hold far larger buffers
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
    free(pre);
    free(suf);
}
