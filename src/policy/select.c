#include "policy/select.h"

#include <math.h>
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

// Min-heap on the selection order: the root is the worst of the kept k.
static void sift_down(scored_pos *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && scored_pos_before(&h[worst], &h[l])) worst = l;
        if (r < n && scored_pos_before(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        scored_pos t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

static int cmp_before(const void *a, const void *b) {
    const scored_pos *x = a, *y = b;
    if (scored_pos_before(x, y)) return -1;
    if (scored_pos_before(y, x)) return 1;
    return 0;
}

int64_t select_topk(const scored_pos *cand, int64_t n, int64_t k, scored_pos *out) {
    if (k <= 0 || n <= 0) return 0;
    int64_t m = n < k ? n : k;
    memcpy(out, cand, (size_t)m * sizeof(scored_pos));
    for (int64_t i = m / 2 - 1; i >= 0; i--) sift_down(out, m, i);
    for (int64_t i = m; i < n; i++)
        if (scored_pos_before(&cand[i], &out[0])) {
            out[0] = cand[i];
            sift_down(out, m, 0);
        }
    qsort(out, (size_t)m, sizeof(scored_pos), cmp_before);
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

void maxpool1d(const float *in, int64_t n, int64_t kernel, float *out) {
    const int64_t half = kernel / 2;
    for (int64_t i = 0; i < n; i++) {
        int64_t lo = i - half > 0 ? i - half : 0, hi = i + half < n - 1 ? i + half : n - 1;
        float m = in[lo];
        for (int64_t j = lo + 1; j <= hi; j++) m = in[j] > m ? in[j] : m;
        out[i] = m;
    }
}
