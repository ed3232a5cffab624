// H2O (Zhang et al. 2023): budget/2 recent rows plus budget/2 "heavy
// hitters" by accumulated attention. The prompt's window votes for the first
// heavy hitters; every decode step adds its attention to each row's score and,
// where a head holds more than its budget, evicts the lowest-scoring row
// outside the recent half (over all ranks: one all-gather of each rank's candidate).
#include "policy/kvpolicy.h"

#include <math.h>
#include <stdint.h>

static int h2o_validate(const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err) {
    if (o->budget < 2) return rc_fail(err, "h2o: --kv-budget must be at least 2 (half heavy hitters, half recent)");
    return 0;
}

static int h2o_select(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh, comm *cm,
                      prompt_keep *keep, rc_err *err) {
    const int64_t S = ps->n_store, B = ps->o.budget, recent = B / 2, heavy = B - recent;
    // One entry past the budget, for the gap at the cut (kvpolicy_trim_cuts).
    for (int64_t s = 0; s < S; s++) ps->k_tmp[s] = heavy < keep->k_max ? heavy + 1 : heavy;
    keep->tail = recent;
    if (dist_topk(&ps->ds, votes, sh->n_local, S, ps->k_tmp, keep->k_max, sh->n_total - recent, sh, cm, keep->sel,
                  keep->n_sel, err))
        return -1;
    for (int64_t s = 0; s < S; s++) ps->k_tmp[s] = heavy;
    kvpolicy_trim_cuts(ps, layer, keep->sel, keep->k_max, keep->n_sel, ps->k_tmp);
    return 0;
}

static int h2o_after_step(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm,
                          rc_err *err) {
    const backend *be = ps->be;
    const int64_t S = ps->n_store, qps = ps->q_per_store, B = ps->o.budget, limit = n_total - B / 2;
    const int R = cm->size, C = KVPOLICY_EVICT_CANDIDATES;
    int over = 0;
    int64_t off = 0;
    scored_pos *mine = ps->cand + R * S * C;  // this rank's candidates, after room for the gathered ones
    for (int64_t s = 0; s < S; s++) {
        kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
        // The step's attention joins each row's score (mean over the head's queries).
        be->ops->score_reduce(be, h->score, ps->raw + off, lse + s * qps, qps, 1, h->count, h->count, h->count,
                              SCORE_ACC_MEAN_P);
        off += qps * h->count;
        int64_t n_old = 0;  // rows outside the recent half: a prefix
        while (n_old < h->count && h->pos[n_old] < limit) n_old++;
        const int64_t want = C;
        int64_t got = 0;
        for (int c = 0; c < C; c++) mine[s * C + c] = (scored_pos){INFINITY, INT64_MAX};
        if (n_old > 0) be->ops->topk_rows(be, &mine[s * C], &got, h->score, h->pos, 1, n_old, n_old, &want, C, 1);
        over |= ps->held[layer * S + s] > B;
    }
    if (!over) return 0;  // held is replicated, so every rank agrees on whether to talk
    const scored_pos *all = mine;
    if (R > 1) {
        if (comm_allgather(cm, mine, (size_t)(S * C) * sizeof(scored_pos), ps->cand, err)) return -1;
        all = ps->cand;
    }
    for (int64_t s = 0; s < S; s++) {
        if (ps->held[layer * S + s] <= B) continue;
        // The lowest (evicted) and the next lowest (kept) over every rank's two.
        scored_pos best = {INFINITY, INT64_MAX}, next = best;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                const scored_pos *x = &all[(r * S + s) * C + c];
                if (x->score < best.score || (x->score == best.score && x->pos < best.pos)) next = best, best = *x;
                else if (x->score < next.score || (x->score == next.score && x->pos < next.pos)) next = *x;
            }
        if (best.pos == INT64_MAX) continue;  // nothing outside the recent half
        if (next.pos != INT64_MAX) kvpolicy_note_cut(ps, layer, next, best);
        kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
        const int64_t i = dist_find_pos(h->pos, h->count, best.pos);
        if (i >= 0 && kvpolicy_evict(ps, layer, s, i, err)) return -1;
        ps->held[layer * S + s]--;
    }
    return 0;
}

const kv_policy_ops kvp_h2o = {
    .name = "h2o",
    .votes = 1,
    .decode_scores = 1,
    .validate = h2o_validate,
    .select_prompt = h2o_select,
    .after_step = h2o_after_step,
};
