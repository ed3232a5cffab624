// StreamingLLM (Xiao et al. 2023): the first `sinks` positions plus the most
// recent ones, budget - sinks of them; each new token pushes out the oldest
// non-sink row.
#include "policy/kvpolicy.h"

static int streaming_validate(const kvpolicy_opts *o, int64_t n_layer, int64_t n_head, rc_err *err) {
    if (o->budget <= o->sinks)
        return rc_fail(err, "streaming: --kv-budget %lld leaves no room beside the %lld sink tokens (--kv-sinks)",
                       (long long)o->budget, (long long)o->sinks);
    return 0;
}

static int streaming_select(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh,
                            comm *cm, prompt_keep *keep, rc_err *err) {
    keep->sinks = ps->o.sinks;
    keep->tail = ps->o.budget - ps->o.sinks;
    return 0;
}

static int streaming_after_step(kvpolicy_state *ps, int64_t layer, const float *lse, int64_t n_total, comm *cm,
                                rc_err *err) {
    const int64_t S = ps->n_store, B = ps->o.budget;
    for (int64_t s = 0; s < S; s++) {
        if (ps->held[layer * S + s] <= B) continue;
        const int64_t gone = n_total - 1 - (B - ps->o.sinks);  // the oldest row outside the sinks
        kv_store_head *h = kv_store_head_at(&ps->store, layer, s);
        const int64_t i = dist_find_pos(h->pos, h->count, gone);
        if (i >= 0 && kvpolicy_evict(ps, layer, s, i, err)) return -1;
        ps->held[layer * S + s]--;
    }
    return 0;
}

const kv_policy_ops kvp_streaming = {
    .name = "streaming",
    .validate = streaming_validate,
    .select_prompt = streaming_select,
    .after_step = streaming_after_step,
};
