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

