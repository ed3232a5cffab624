// The SnapKV family: the prompt's last `window` positions vote (summed
// attention probabilities), the votes are max-pooled over neighbouring
// positions, each head keeps its top entries plus the window itself. The
// members differ only in how many entries each head keeps:
//   snapkv    the budget less the window, every head;
//   pyramidkv falls linearly over the layers (KVCache-Factory's rule, beta);
//   headkv    by head importance (HeadKV: b - b/beta each, the pool by score);
//   adakv     a floor per head, the rest of the layer's total to its best entries anywhere.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy/budget.h"
#include "policy/kvpolicy.h"

// Per-head prompt budgets (window excluded), (n_layer, n_store), into ps->base.
static int uniform_budgets(kvpolicy_state *ps, int64_t b, rc_err *err) {
    for (int64_t i = 0; i < ps->n_layer * ps->n_store; i++) ps->base[i] = b;
    return 0;
}

static int pyramid_budgets(kvpolicy_state *ps, int64_t b, rc_err *err) {
    const int64_t L = ps->n_layer, S = ps->n_store;
    int64_t *per_layer = malloc((size_t)L * sizeof(int64_t));
    if (!per_layer) return rc_fail(err, "out of memory");
    int rc = budget_pyramid(L, b, ps->o.pyramid_beta, per_layer, err);
    for (int64_t l = 0; rc == 0 && l < L; l++)
        for (int64_t s = 0; s < S; s++) ps->base[l * S + s] = per_layer[l];
    free(per_layer);
    return rc;
}

static int headkv_budgets(kvpolicy_state *ps, int64_t b, rc_err *err) {
    const int64_t L = ps->n_layer, S = ps->n_store;
    double *sc = malloc((size_t)(L * S) * sizeof(double));
    if (!sc) return rc_fail(err, "out of memory");
    if (S == ps->n_head) memcpy(sc, ps->o.scores->score, (size_t)(L * S) * sizeof(double));
    else budget_group_scores(ps->o.scores->score, L, ps->n_head, S, sc);
    int rc = budget_headkv(sc, L * S, b, ps->o.headkv_beta, ps->base, err);
    free(sc);
    return rc;
}

static int snap_begin(kvpolicy_state *ps, int64_t n_prompt, int64_t n_window, rc_err *err) {
    return uniform_budgets(ps, ps->o.budget - n_window, err);
}
static int pyramid_begin(kvpolicy_state *ps, int64_t n_prompt, int64_t n_window, rc_err *err) {
    return pyramid_budgets(ps, ps->o.budget - n_window, err);
}
static int headkv_begin(kvpolicy_state *ps, int64_t n_prompt, int64_t n_window, rc_err *err) {
    return headkv_budgets(ps, ps->o.budget - n_window, err);
}

typedef struct ada_entry {
    float score;
    int64_t head, pos;
} ada_entry;

static int cmp_ada(const void *a, const void *b) {
    const ada_entry *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->head != y->head) return x->head < y->head ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

// Ada-KV: every head keeps its best `floor` entries; the rest of the layer's
// S * b go to the best remaining entries of any head. lists: (S, k_max) best
// first; each head's count lands in n_list. The pool's cut (the last entry
// taken and the first left) is noted on `layer`.
static int ada_allocate(kvpolicy_state *ps, int64_t layer, int64_t S, int64_t b, double floor_frac,
                        const scored_pos *lists, int64_t k_max, int64_t *n_list, rc_err *err) {
    const int64_t fl = (int64_t)floor(floor_frac * (double)b);
    int64_t pool = S * b, n_rest = 0;
    int64_t *k = malloc((size_t)S * sizeof(int64_t));
    if (!k) return rc_fail(err, "out of memory");
    for (int64_t s = 0; s < S; s++) {
        k[s] = n_list[s] < fl ? n_list[s] : fl;
        pool -= k[s];
        n_rest += n_list[s] - k[s];
    }
    ada_entry *rest = malloc((size_t)(n_rest + 1) * sizeof(ada_entry));
    if (!rest) {
        free(k);
        return rc_fail(err, "out of memory");
    }
    int64_t t = 0;
    for (int64_t s = 0; s < S; s++)
        for (int64_t i = k[s]; i < n_list[s]; i++)
            rest[t++] = (ada_entry){lists[s * k_max + i].score, s, lists[s * k_max + i].pos};
    qsort(rest, (size_t)n_rest, sizeof(ada_entry), cmp_ada);
    // Each head's list is best first, so taking the best entries overall takes
    // a prefix of every list.
    for (int64_t i = 0; i < n_rest && i < pool; i++) k[rest[i].head]++;
    if (pool > 0 && pool < n_rest)
        kvpolicy_note_cut(ps, layer, (scored_pos){rest[pool - 1].score, rest[pool - 1].pos},
                          (scored_pos){rest[pool].score, rest[pool].pos});
    // Within a head, its last entry taken against its first left.
    for (int64_t s = 0; s < S; s++)
        if (k[s] > 0 && k[s] < n_list[s]) kvpolicy_note_cut(ps, layer, lists[s * k_max + k[s] - 1], lists[s * k_max + k[s]]);
    memcpy(n_list, k, (size_t)S * sizeof(int64_t));
    free(rest);
    free(k);
    return 0;
}

// The window is always kept, so it takes no part in the ranking: scores and
// pooling see the prompt cut before it, exactly as if its scores were -inf.
static int select_common(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh,
                         comm *cm, prompt_keep *keep, int ada, rc_err *err) {
    const backend *be = ps->be;
    const int64_t S = ps->n_store, nl = sh->n_local, limit = sh->n_total - n_window;
    int64_t n_cand = 0;  // positions ascend: the candidates are a prefix
    while (n_cand < nl && sh->slot_pos[n_cand] < limit) n_cand++;
    const shard_ctx cut = {.kv = sh->kv, .slot_pos = sh->slot_pos, .n_local = n_cand, .plan = sh->plan,
                           .n_total = limit};
    keep->tail = n_window;
    int rc = -1;
    float *scores = NULL, *pooled = NULL;
    const float *ranked = votes;
    int64_t ld = nl;
    if (ps->o.pool_kernel > 1) {
        scores = be->ops->alloc(be, (size_t)(S * n_cand) * sizeof(float));
        pooled = be->ops->alloc(be, (size_t)(S * n_cand) * sizeof(float));
        if (!scores || !pooled) {
            rc_fail(err, "out of memory pooling votes");
            goto done;
        }
        be->ops->copy_2d(be, scores, (size_t)n_cand * sizeof(float), votes, (size_t)nl * sizeof(float),
                         (size_t)n_cand * sizeof(float), S);
        if (dist_maxpool(&ps->ds, scores, pooled, S, ps->o.pool_kernel, &cut, cm, err)) goto done;
        ranked = pooled;
        ld = n_cand;
    }
    // Ada-KV ranks every head up to the layer's whole pool; a head whose
    // budget exceeds the candidates keeps them all. The others rank one entry
    // past their budget, for the gap at the cut (kvpolicy_trim_cuts).
    for (int64_t s = 0; s < S; s++) {
        const int64_t k = ps->base[layer * S + s];
        ps->k_tmp[s] = ada || k >= keep->k_max ? keep->k_max : k + 1;
    }
    if (dist_topk(&ps->ds, ranked, ld, S, ps->k_tmp, keep->k_max, limit, &cut, cm, keep->sel, keep->n_sel, err))
        goto done;
    if (ada) {
        if (ada_allocate(ps, layer, S, ps->o.budget - n_window, ps->o.ada_floor, keep->sel, keep->k_max, keep->n_sel,
                         err))
            goto done;
    } else {
        for (int64_t s = 0; s < S; s++) {
            const int64_t k = ps->base[layer * S + s];
            ps->k_tmp[s] = k > keep->k_max ? keep->k_max : k;
        }
        kvpolicy_trim_cuts(ps, layer, keep->sel, keep->k_max, keep->n_sel, ps->k_tmp);
    }
    rc = 0;
done:
    if (scores) be->ops->free(be, scores);
    if (pooled) be->ops->free(be, pooled);
    return rc;
}

static int snap_select(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh,
                       comm *cm, prompt_keep *keep, rc_err *err) {
    return select_common(ps, layer, votes, n_window, sh, cm, keep, 0, err);
}

static int ada_select(kvpolicy_state *ps, int64_t layer, float *votes, int64_t n_window, const shard_ctx *sh,
                      comm *cm, prompt_keep *keep, rc_err *err) {
    return select_common(ps, layer, votes, n_window, sh, cm, keep, 1, err);
}

#define SNAP_FAMILY(var, nm, begin, select, scores)                                                          \
    const kv_policy_ops var = {.name = nm, .votes = 1, .keeps_window = 1, .head_scores = scores, .begin_prompt = begin, \
                               .select_prompt = select}

SNAP_FAMILY(kvp_snapkv, "snapkv", snap_begin, snap_select, 0);
SNAP_FAMILY(kvp_pyramidkv, "pyramidkv", pyramid_begin, snap_select, 0);
SNAP_FAMILY(kvp_headkv, "headkv", headkv_begin, snap_select, 1);
SNAP_FAMILY(kvp_adakv, "adakv", NULL, ada_select, 0);
