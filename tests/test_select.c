// Selection building blocks against brute force: a full sort of all
// candidates (with many ties and some NaNs) truncated to k, top-K of random
// splits merged equals top-K of the union (what ranks do), GQA aggregation
// and max-pooling against direct definitions.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "policy/select.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next_u64(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

// Brute-force reference order, written independently of scored_pos_before.
static int ref_cmp(const void *a, const void *b) {
    const scored_pos *x = a, *y = b;
    int xn = x->score != x->score, yn = y->score != y->score;
    if (xn != yn) return xn - yn;  // NaN last
    if (!xn && x->score > y->score) return -1;
    if (!xn && x->score < y->score) return 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static void random_candidates(scored_pos *c, int64_t n, int64_t pos0) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = next_u64();
        // Few distinct values: ties are the rule, not the exception.
        c[i].score = (r % 50 == 0) ? NAN : (float)((r >> 8) % 17) * 0.25f;
        c[i].pos = pos0 + i;
    }
    for (int64_t i = n - 1; i > 0; i--) {  // shuffle so input order is not position order
        int64_t j = (int64_t)(next_u64() % (uint64_t)(i + 1));
        scored_pos t = c[i];
        c[i] = c[j];
        c[j] = t;
    }
}

static int same_list(const scored_pos *a, const scored_pos *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (a[i].pos != b[i].pos) return 0;
        if (!(a[i].score == b[i].score || (isnan(a[i].score) && isnan(b[i].score)))) return 0;
    }
    return 1;
}

int main(void) {
    // select_topk == sort + truncate
    const int64_t sizes[] = {0, 1, 2, 7, 33, 100, 1000, 5000};
    const int64_t ks[] = {0, 1, 3, 32, 100, 999, 1000, 6000};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
        for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            int64_t n = sizes[si], k = ks[ki];
            scored_pos *c = malloc((size_t)(n + 1) * sizeof(scored_pos));
            scored_pos *ref = malloc((size_t)(n + 1) * sizeof(scored_pos));
            scored_pos *out = malloc((size_t)(n + 1) * sizeof(scored_pos));
            random_candidates(c, n, 1000);
            memcpy(ref, c, (size_t)n * sizeof(scored_pos));
            qsort(ref, (size_t)n, sizeof(scored_pos), ref_cmp);
            int64_t want = k < n ? k : n;
            int64_t got = select_topk(c, n, k, out);
            CHECK_MSG(got == want, "n=%lld k=%lld: %lld selected", (long long)n, (long long)k, (long long)got);
            CHECK_MSG(same_list(out, ref, want), "n=%lld k=%lld: selection differs from sort", (long long)n,
                      (long long)k);
            free(c);
            free(ref);
            free(out);
        }

    // merge of per-"rank" top-K lists == top-K of the union, for random splits
    for (int trial = 0; trial < 200; trial++) {
        int n_ranks = 1 + (int)(next_u64() % 6);
        int64_t k = 1 + (int64_t)(next_u64() % 64);
        int64_t counts_all[6], total = 0;
        for (int r = 0; r < n_ranks; r++) {
            counts_all[r] = (int64_t)(next_u64() % 80);  // some ranks hold nothing
            total += counts_all[r];
        }
        scored_pos *all = malloc((size_t)(total + 1) * sizeof(scored_pos));
        random_candidates(all, total, 0);
        for (int64_t i = 0; i < total; i++) all[i].pos = i;  // distinct positions across ranks
        scored_pos *lists = malloc((size_t)(total + 1) * sizeof(scored_pos));
        int64_t counts[6], off = 0, loff = 0;
        for (int r = 0; r < n_ranks; r++) {
            counts[r] = select_topk(all + off, counts_all[r], k, lists + loff);
            off += counts_all[r];
            loff += counts[r];
        }
        scored_pos *merged = malloc((size_t)(k + 1) * sizeof(scored_pos));
        scored_pos *ref = malloc((size_t)(total + 1) * sizeof(scored_pos));
        memcpy(ref, all, (size_t)total * sizeof(scored_pos));
        qsort(ref, (size_t)total, sizeof(scored_pos), ref_cmp);
        int64_t want = k < total ? k : total;
        int64_t got = merge_topk(lists, counts, n_ranks, k, merged);
        CHECK_MSG(got == want && same_list(merged, ref, want), "trial %d: merged top-%lld of %d ranks differs", trial,
                  (long long)k, n_ranks);
        free(all);
        free(lists);
        free(merged);
        free(ref);
    }

    // maxpool1d against the definition, kernels 1, 3, 7 and one wider than n
    const float x[9] = {1, 5, 2, 0, 0, 0, 0, 9, 3};
    float y[9];
    const float want7[9] = {5, 5, 5, 5, 9, 9, 9, 9, 9};
    maxpool1d(x, 9, 7, y);
    CHECK(memcmp(y, want7, sizeof(y)) == 0);
    const float want3[9] = {5, 5, 5, 2, 0, 0, 9, 9, 9};
    maxpool1d(x, 9, 3, y);
    CHECK(memcmp(y, want3, sizeof(y)) == 0);
    maxpool1d(x, 9, 1, y);
    CHECK(memcmp(y, x, sizeof(y)) == 0);
    maxpool1d(x, 9, 31, y);
    for (int i = 0; i < 9; i++) CHECK(y[i] == 9);
    // Random rows (with ties and negatives) against the window definition.
    uint64_t st = 99;
    for (int trial = 0; trial < 400; trial++) {
        float row[60], got[60];
        const int n = 1 + trial % 60, kernels[] = {1, 3, 5, 7, 9, 15, 31, 121};
        const int kernel = kernels[trial % 8];
        for (int i = 0; i < n; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((int)(st >> 59) - 16) * 0.25f;
        }
        maxpool1d(row, n, kernel, got);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            float m = -INFINITY;
            for (int j = i - kernel / 2; j <= i + kernel / 2; j++)
                if (j >= 0 && j < n && row[j] > m) m = row[j];
            bad += got[i] != m;
        }
        CHECK_MSG(bad == 0, "maxpool1d n=%d kernel=%d: %d wrong", n, kernel, bad);
    }
    TEST_MAIN_END();
}
