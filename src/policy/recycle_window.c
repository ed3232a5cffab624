// The first recycled cache chosen by the prompt's last W queries (SnapKV's
// observation window) instead of the last one alone (recycle.h).
//
// Per query head h and local key j: p_wj = exp(s_wj - lse_w), each window
// query w with its own global lse and only the keys it sees (position <=
// its own: causal), combined over the window by mean or max; then the GQA
// combine, pooling and top-K of an ordinary rebuild. Only backend ops:
//   mean: out += exp(s - lse) over a causal prefix (SCORE_ACC_MEAN_P), one
//         query at a time; with GQA mean the group's mean is taken in the same
//         call, else the per-head sums go through the group's max / first
//         with lse 0 (ranking a probability like a log-probability is the
//         same order: both are monotone).
//   max:  log max_w p = max over {running max, s_w - lse_w}: rows interleaved
//         in pairs (running, new) so SCORE_MAX_LOGP with a group of 2 is the
//         element-wise max; keys a query cannot see stay -inf. The result is
//         a log-probability per head: the ordinary rebuild with lse 0.
// Every rank scores its own keys with the replicated window, so the merged
// selection equals the one-process one.
#include <math.h>
#include <stdlib.h>

#include "policy/recycle.h"

typedef struct window_bufs {
    float *raw, *o, *lse, *zeros, *acc, *pair, *lse_pair, *neg;
} window_bufs;

static void free_bufs(const backend *be, window_bufs *b) {
    float *all[] = {b->raw, b->o, b->lse, b->zeros, b->acc, b->pair, b->lse_pair, b->neg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) be->ops->free(be, all[i]);
}

int recycle_rebuild_window(recycle_state *rs, int64_t layer, const float *win_q, const float *win_lse, int64_t W,
                           const kv_view *k, const kv_view *v, const float *query_mean, const shard_ctx *sh,
                           comm *cm, rc_err *err) {
    const backend *be = rs->be;
    const int64_t H = rs->n_head, KV = rs->n_kv, hd = rs->head_dim, nl = sh->n_local, n1 = nl > 0 ? nl : 1;
    const float scale = 1.0f / sqrtf((float)hd);
    const int use_max = rs->o.query_agg == RECYCLE_QUERY_MAX, gqa_mean = rs->o.group_agg == GROUP_AGG_MEAN;
    const int64_t q_dim = H * hd;
    int64_t n_seen = 0;  // keys at or before the query: a prefix (positions ascend)
    if (W < 1 || W > sh->n_total)
        return rc_fail(err, "--recycle-query-window %lld exceeds the prompt's %lld tokens", (long long)W,
                       (long long)sh->n_total);
    if (recycle_reserve(rs, n1, err)) return -1;
    window_bufs b = {0};
    const int64_t acc_rows = use_max ? H : gqa_mean ? KV : H;
    b.raw = be->ops->alloc(be, (size_t)(H * n1) * sizeof(float));
    b.o = be->ops->alloc(be, (size_t)(H * hd) * sizeof(float));
    b.lse = be->ops->alloc(be, (size_t)H * sizeof(float));
    b.zeros = be->ops->alloc(be, (size_t)H * sizeof(float));
    b.acc = be->ops->alloc(be, (size_t)(acc_rows * n1) * sizeof(float));  // zero-filled: the sums start at 0
    if (use_max) {
        b.pair = be->ops->alloc(be, (size_t)(2 * H * n1) * sizeof(float));
        b.lse_pair = be->ops->alloc(be, (size_t)(2 * H) * sizeof(float));  // (h, 0) stays 0
        b.neg = be->ops->alloc(be, (size_t)H * sizeof(float));
    }
    int rc = -1;
    if (!b.raw || !b.o || !b.lse || !b.zeros || !b.acc || (use_max && (!b.pair || !b.lse_pair || !b.neg))) {
        rc_fail(err, "out of memory scoring the prompt window (%lld keys)", (long long)nl);
        goto done;
    }
    if (use_max && nl > 0) {
        // Every pair row starts at -inf: an lse of -inf gives log-probability -inf.
        float *neg_host = malloc((size_t)H * sizeof(float));
        if (!neg_host) {
            rc_fail(err, "out of memory");
            goto done;
        }
        for (int64_t h = 0; h < H; h++) neg_host[h] = -INFINITY;
        be->ops->upload(be, b.neg, neg_host, (size_t)H * sizeof(float));
        free(neg_host);
        be->ops->score_reduce(be, b.pair, b.acc, b.neg, H, H, nl, nl, 0, SCORE_MAX_LOGP);
        be->ops->score_reduce(be, b.pair + H * nl, b.acc, b.neg, H, H, nl, nl, 0, SCORE_MAX_LOGP);
    }
    for (int64_t w = 0; w < W && nl > 0; w++) {
        const int64_t pw = sh->n_total - W + w;
        while (n_seen < nl && sh->slot_pos[n_seen] <= pw) n_seen++;
        if (n_seen == 0) continue;
        be->ops->attn_decode_scores(be, b.o, b.lse, b.raw, win_q + w * q_dim, k, v, nl, H, KV, hd, scale);
        if (!use_max) {
            be->ops->score_reduce(be, b.acc, b.raw, win_lse + w * H, H, acc_rows, nl, nl, n_seen, SCORE_ACC_MEAN_P);
            continue;
        }
        const size_t f = sizeof(float);
        be->ops->copy_2d(be, b.pair + nl, 2 * (size_t)nl * f, b.raw, (size_t)nl * f, (size_t)n_seen * f, H);
        be->ops->copy_2d(be, b.lse_pair + 1, 2 * f, win_lse + w * H, f, f, H);
        be->ops->score_reduce(be, b.acc, b.pair, b.lse_pair, 2 * H, H, nl, nl, 0, SCORE_MAX_LOGP);
        be->ops->copy_2d(be, b.pair, 2 * (size_t)nl * f, b.acc, (size_t)nl * f, (size_t)nl * f, H);
    }
    if (use_max) {  // acc: log max_w p per head; the ordinary rebuild with lse 0
        rc = recycle_rebuild(rs, layer, b.acc, b.zeros, query_mean, sh, cm, err);
    } else if (gqa_mean) {  // acc: sum_w of the group's mean p
        rc = recycle_rebuild_scored(rs, layer, b.acc, 0, 1.0 / (double)W, query_mean, sh, cm, err);
    } else {  // acc: sum_w p per head; the group's max or first head, still probabilities
        be->ops->score_reduce(be, rs->agg, b.acc, b.zeros, H, KV, nl, nl, nl,
                              rs->o.group_agg == GROUP_AGG_FIRST ? SCORE_FIRST_LOGP : SCORE_MAX_LOGP);
        rc = recycle_rebuild_scored(rs, layer, rs->agg, 0, 1.0 / (double)W, query_mean, sh, cm, err);
    }
done:
    free_bufs(be, &b);
    return rc;
}
