// Selection kernels of the CPU backends: top-K in the (score desc, position
// asc, NaN last) order through unique 64-bit order keys (quickselect + radix
// sort), and van Herk max-pooling. The scratch variants allocate nothing, so
// the backend can size scratch once per call and fail with a status.
#ifndef RECALL_BACKEND_CPU_SELECT_H
#define RECALL_BACKEND_CPU_SELECT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// The selection order as one integer: high word = the score mapped to an
// unsigned word that falls as the score rises (rises, when ascending; NaN:
// all ones, last either way), low word = the position. Keys are unique and
// ascend in the selection order. -0 maps like +0 and every NaN like one NaN
// (from_key gives +0 and NAN back). No finite or infinite score maps to all ones.
static inline uint64_t sel_order_key(float score, int64_t pos, int ascending) {
    uint32_t hi;
    if (isnan(score)) {
        hi = 0xffffffffu;
    } else {
        if (score == 0.0f) score = 0.0f;  // -0 and +0 are the same score
        uint32_t b;
        memcpy(&b, &score, 4);
        uint32_t o = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // ascending with the float
        hi = ascending ? o : ~o;
    }
    return ((uint64_t)hi << 32) | (uint64_t)(uint32_t)pos;
}

static inline scored_pos sel_from_key(uint64_t key, int ascending) {
    uint32_t hi = (uint32_t)(key >> 32);
    float score;
    if (hi == 0xffffffffu) {
        score = NAN;
    } else {
        uint32_t o = ascending ? hi : ~hi, b = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
        memcpy(&score, &b, 4);
    }
    return (scored_pos){.score = score, .pos = (int64_t)(uint32_t)key};
}

// The min(k, n) smallest of n order keys (made with `ascending`), in order,
// to out as scored positions (keys is rearranged; tmp: min(k, n) scratch).
// Returns the count.
int64_t sel_topk_keys(uint64_t *keys, uint64_t *tmp, int64_t n, int64_t k, int ascending, scored_pos *out);

// The min(k, n) best of row s (n scores, pos[j] the position of s[j]) in the
// order above, into out; the same result as keying all n for sel_topk_keys,
// but a long row is first cut down to the scores that can win. keys, tmp: n
// each. Returns the count.
int64_t sel_topk_row(const float *s, const int64_t *pos, int64_t n, int64_t k, int ascending, uint64_t *keys,
                     uint64_t *tmp, scored_pos *out);

// Van Herk max-pool of one row (see maxpool1d); pre, suf: n + 2 * (kernel / 2) scratch each.
void sel_maxpool_row(const float *in, int64_t n, int64_t kernel, float *out, float *pre, float *suf);

// The min(k, n) best of n candidates, best first, into out. NaN scores rank
// below every number. Returns the count written, or -1 when its scratch
// (16 bytes per candidate) cannot be allocated.
int64_t select_topk(const scored_pos *cand, int64_t n, int64_t k, scored_pos *out);

// out[i] = max of in[j] for |j - i| <= kernel / 2, over consecutive
// positions; the window is cut at the ends (like max_pool1d with -inf
// padding). kernel must be odd; 1 copies. in and out must not overlap.
// Returns 0, or -1 when its scratch cannot be allocated (out untouched).
int maxpool1d(const float *in, int64_t n, int64_t kernel, float *out);

#ifdef __cplusplus
}
#endif

#endif
