#include "backend/cpu_select.h"

#include <stdlib.h>

// Rearranges a so that its m smallest keys come first (quickselect).
static void quickselect(uint64_t *a, int64_t n, int64_t m) {
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

// The same by MSD radix select, 11-bit digits from the top: each level counts
// the candidates' digits, takes the buckets below the one holding the m-th
// smallest and keeps that bucket as the candidates. Two passes over n keys
// where quickselect makes several with a mispredicted branch per key.
static void select_smallest(uint64_t *a, int64_t n, int64_t m) {
    int64_t lo = 0, hi = n;  // a[0, lo): taken; a[lo, hi): candidates; a[hi, n): out
    for (int shift = 53;; shift = shift > 11 ? shift - 11 : 0) {
        const int64_t need = m - lo;
        if (need <= 0 || hi - lo <= need) return;
        if (hi - lo <= 64) {
            quickselect(a + lo, hi - lo, need);
            return;
        }
        int64_t count[2048] = {0};
        for (int64_t i = lo; i < hi; i++) count[(a[i] >> shift) & 0x7ff]++;
        uint64_t b = 0;
        for (int64_t below = 0; below + count[b] < need; b++) below += count[b];
        int64_t lt = lo, i = lo, gt = hi;  // three ways: digit < b, == b, > b
        while (i < gt) {
            const uint64_t x = a[i], d = (x >> shift) & 0x7ff;
            if (d < b) {
                a[i++] = a[lt];
                a[lt++] = x;
            } else if (d > b) {
                a[i] = a[--gt];
                a[gt] = x;
            } else {
                i++;
            }
        }
        lo = lt;
        hi = gt;
        if (shift == 0) return;  // the candidates are equal keys: any of them will do
    }
}

// LSD radix sort, 8 bits per pass, all digits counted in one read; passes
// whose digit is the same in every key are skipped; a and tmp swap roles
// instead of copying back after every pass.
// Digits from first_digit up only: with first_digit 4 a stable sort by the
// score word, which keeps keys already in position order in full key order.
static void radix_sort_from(uint64_t *a, uint64_t *tmp, int64_t n, int first_digit) {
    if (n < 2) return;
    static const int n_digits = 8;
    int64_t count[8][256];
    memset(count, 0, sizeof count);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t x = a[i];
        for (int d = first_digit; d < n_digits; d++) count[d][(x >> (8 * d)) & 0xff]++;
    }
    uint64_t *src = a, *dst = tmp;
    for (int d = first_digit; d < n_digits; d++) {
        const int shift = 8 * d;
        int64_t *c = count[d];
        if (c[(src[0] >> shift) & 0xff] == n) continue;
        int64_t sum = 0;
        for (int v = 0; v < 256; v++) {
            const int64_t t = c[v];
            c[v] = sum;
            sum += t;
        }
        for (int64_t i = 0; i < n; i++) dst[c[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(uint64_t));
}

static void radix_sort(uint64_t *a, uint64_t *tmp, int64_t n) { radix_sort_from(a, tmp, n, 0); }

int64_t sel_topk_keys(uint64_t *keys, uint64_t *tmp, int64_t n, int64_t k, int ascending, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    int64_t m = n < k ? n : k;
    if (m < n) select_smallest(keys, n, m);
    radix_sort(keys, tmp, m);
    for (int64_t i = 0; i < m; i++) out[i] = sel_from_key(keys[i], ascending);
    return m;
}

// Rows this long or longer, with k at most half of them, go through a
// threshold first: most keys can be ruled out by one comparison each.
#define FILTER_MIN_N 2048
#define FILTER_SAMPLE_STEP 16

// The same selection as sel_topk_keys on (s[j], pos[j]) for all j, found by
// ruling out most of the row first. A strided sample's r-th best score, r a
// little above the share of k the sample should hold, is a threshold t; when
// at least k scores are at least as good as t, the k best are all among them
// (every other score is worse than t, or NaN, which ranks last), so only those
// candidates are keyed and selected. Otherwise (ties, NaN, a skewed sample)
// the whole row is. Returns the count; keys and tmp as sel_topk_keys, n each.
int64_t sel_topk_row(const float *s, const int64_t *pos, int64_t n, int64_t k, int ascending, uint64_t *keys,
                     uint64_t *tmp, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    if (n >= FILTER_MIN_N && k <= n / 2) {
        const int64_t ns = n / FILTER_SAMPLE_STEP, share = k / FILTER_SAMPLE_STEP;
        const int64_t r = share + 2 * (int64_t)sqrt((double)share) + 4;
        if (r < ns) {
            for (int64_t i = 0; i < ns; i++) keys[i] = sel_order_key(s[i * FILTER_SAMPLE_STEP], i, ascending);
            select_smallest(keys, ns, r);
            uint64_t worst = keys[0];  // the r-th best: the largest key of the first r
            for (int64_t i = 1; i < r; i++) worst = keys[i] > worst ? keys[i] : worst;
            const float t = sel_from_key(worst, ascending).score;
            if (!isnan(t)) {
                int64_t c = 0;  // the candidates, in row order
                for (int64_t j = 0; j < n; j++)
                    if (ascending ? s[j] <= t : s[j] >= t) keys[c++] = sel_order_key(s[j], pos[j], ascending);
                if (c >= k) {
                    int sorted = 1;  // positions ascending: a stable sort by score alone is the full order
                    for (int64_t i = 1; i < c && sorted; i++) sorted = (uint32_t)keys[i] > (uint32_t)keys[i - 1];
                    if (!sorted) return sel_topk_keys(keys, tmp, c, k, ascending, out);
                    radix_sort_from(keys, tmp, c, 4);
                    for (int64_t i = 0; i < k; i++) out[i] = sel_from_key(keys[i], ascending);
                    return k;
                }
            }
        }
    }
    for (int64_t j = 0; j < n; j++) keys[j] = sel_order_key(s[j], pos[j], ascending);
    return sel_topk_keys(keys, tmp, n, k, ascending, out);
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
