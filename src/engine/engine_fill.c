// Synthetic fill: the KV cache of a sequence of n positions without running
// the model over them, so that decode at 128K-1M context can be timed in
// seconds. The bookkeeping is engine_prefill's (shard plan, slot_pos,
// n_local, n_past, n_prompt_end); a recycled cache is built by the first
// decode step, which runs full attention in every layer, and a KV-compression
// policy votes with a synthetic prompt window (fill_window).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "engine/engine_internal.h"

// Per-element RMS of the K (after RoPE) and V rows of SmolLM2-135M-Instruct
// over 2048 tokens of Austen prose, averaged over its 30 layers (per layer:
// K 1.33-2.76, V 0.05-1.89; means within 0.32 of zero). Rows drawn at this
// scale give attention scores that are neither flat nor one-hot.
#define FILL_K_RMS 2.18f
#define FILL_V_RMS 0.97f
#define FILL_CHUNK 1024  // rows generated per kv_cache_store call
// The window queries are drawn at K's scale (an assumption, not a measurement):
// scores scale * q.k then have a standard deviation of about 4.8.
#define FILL_Q_RMS FILL_K_RMS
#define FILL_WINDOW_SALT 0x5851f42d4c957f2dull  // window queries' seeds never meet a K/V row's

// A near-Gaussian value of unit variance: the sum of four 16-bit uniforms
// (Irwin-Hall), one splitmix64 draw per value.
static inline float unit_normal(uint64_t *s) {
    const uint64_t r = splitmix64_next(s);
    const float sum = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                      (float)(r >> 48);
    return (sum / 65536.0f - 2.0f) * 1.7320508f;  // var of a sum of 4 U(0,1) = 1/3
}

// The row of (layer, pos) depends only on the seed, so every rank count and
// shard layout holds the same global cache.
static void fill_row(float *k, float *v, int64_t kv_dim, uint64_t seed, int64_t layer, int64_t pos) {
    uint64_t s = seed ^ ((uint64_t)layer * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)pos * 0xd1b54a32d192ed03ull);
    splitmix64_next(&s);
    for (int64_t i = 0; i < kv_dim; i++) k[i] = FILL_K_RMS * unit_normal(&s);
    for (int64_t i = 0; i < kv_dim; i++) v[i] = FILL_V_RMS * unit_normal(&s);
}

// The policies vote with the prompt's last W = min(n, 32) queries and their
// exact lse (prefill.c keeps both). No model ran, so the queries are drawn
// (seeded by layer and position: the same on every rank) and each one's lse
// is computed over the keys it sees (causal), merged across ranks: what a
// prefill ending in these queries would have kept.
static int fill_window(engine *e, int64_t n, uint64_t seed, rc_err *err) {
    const model_config *c = &e->m->cfg;
    const backend *be = e->be;
    const int64_t H = c->n_head, hd = c->head_dim, q_dim = H * hd, L = c->n_layer;
    const int64_t W = n < KVPOLICY_WINDOW_MAX ? n : KVPOLICY_WINDOW_MAX, R = e->comm->size;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = malloc((size_t)q_dim * sizeof(float));
    float *mine = malloc((size_t)(L * W * H) * sizeof(float));       // this rank's lse per (layer, w, head)
    float *all = malloc((size_t)(R * L * W * H) * sizeof(float));    // every rank's
    float *o = be->ops->alloc(be, (size_t)q_dim * sizeof(float)), *lse = be->ops->alloc(be, (size_t)H * sizeof(float));
    int rc = q && mine && all && o && lse ? 0 : rc_fail(err, "out of memory for the synthetic prompt window");
    for (int64_t l = 0; rc == 0 && l < L; l++) {
        const kv_view kk = kv_cache_k(&e->kv, l), vv = kv_cache_v(&e->kv, l);
        int64_t n_seen = 0;  // this rank's keys at or before the query: a prefix (positions ascend)
        for (int64_t w = 0; w < W; w++) {
            const int64_t pos = n - W + w, row = l * KVPOLICY_WINDOW_MAX + w;
            uint64_t st = seed ^ FILL_WINDOW_SALT ^ ((uint64_t)l * 0x9e3779b97f4a7c15ull) ^
                          ((uint64_t)pos * 0xd1b54a32d192ed03ull);
            splitmix64_next(&st);
            for (int64_t i = 0; i < q_dim; i++) q[i] = FILL_Q_RMS * unit_normal(&st);
            be->ops->upload(be, e->win_q + row * q_dim, q, (size_t)q_dim * sizeof(float));
            while (n_seen < e->n_local && e->slot_pos[n_seen] <= pos) n_seen++;
            // n_seen 0 gives lse -inf: this rank adds nothing to the merge.
            be->ops->attn_decode(be, o, lse, e->win_q + row * q_dim, &kk, &vv, n_seen, H, c->n_head_kv, hd, scale);
            be->ops->download(be, mine + (l * W + w) * H, lse, (size_t)H * sizeof(float));
        }
    }
    if (rc == 0 && R > 1) rc = comm_allgather(e->comm, mine, (size_t)(L * W * H) * sizeof(float), all, err);
    if (rc == 0 && R == 1) memcpy(all, mine, (size_t)(L * W * H) * sizeof(float));
    for (int64_t l = 0; rc == 0 && l < L; l++)
        for (int64_t i = 0; i < W * H; i++) {  // log of the sum of the ranks' softmax denominators
            float mx = -INFINITY;
            for (int64_t r = 0; r < R; r++) mx = fmaxf(mx, all[(r * L + l) * W * H + i]);
            double sum = 0;
            for (int64_t r = 0; r < R; r++) sum += exp((double)all[(r * L + l) * W * H + i] - mx);
            mine[l * W * H + i] = mx + (float)log(sum);
        }
    for (int64_t l = 0; rc == 0 && l < L; l++)
        be->ops->upload(be, e->win_lse + l * KVPOLICY_WINDOW_MAX * H, mine + l * W * H, (size_t)(W * H) * sizeof(float));
    free(q);
    free(mine);
    free(all);
    if (o) be->ops->free(be, o);
    if (lse) be->ops->free(be, lse);
    if (rc == 0) e->win_n = W;
    return rc;
}

int engine_fill_synthetic(engine *e, int64_t n_positions, uint64_t seed, rc_err *err) {
    const model_config *c = &e->m->cfg;
    if (n_positions <= 0) return rc_fail(err, "synthetic fill: nothing to fill (%lld positions)", (long long)n_positions);
    if (e->n_past != 0) return rc_fail(err, "synthetic fill: the sequence must be empty (reset the engine first)");
    if (n_positions > e->opts.n_ctx)
        return rc_fail(err, "synthetic fill of %lld positions exceeds the context size %lld (raise --ctx)",
                       (long long)n_positions, (long long)e->opts.n_ctx);
    if (engine_begin_sequence(e, n_positions, err)) return -1;
    shard_ranges mine = {.n = 1, .start = {0}, .end = {n_positions}};
    if (e->comm->size > 1) mine = shard_prompt_ranges(&e->plan, e->comm->rank);
    int64_t n_loc = 0;
    for (int s = 0; s < mine.n; s++)
        for (int64_t p = mine.start[s]; p < mine.end[s]; p++) e->slot_pos[n_loc++] = p;
    if (n_loc > e->kv.capacity)
        return rc_fail(err, "KV shard full: %lld positions exceed its capacity %lld", (long long)n_loc,
                       (long long)e->kv.capacity);
    const backend *be = e->be;
    const int64_t kv_dim = c->n_head_kv * c->head_dim;
    const size_t chunk_bytes = (size_t)FILL_CHUNK * (size_t)kv_dim * sizeof(float);
    float *k = malloc(chunk_bytes), *v = malloc(chunk_bytes);
    float *kb = be->ops->alloc(be, chunk_bytes), *vb = be->ops->alloc(be, chunk_bytes);  // rows on their way in
    int rc = k && v && kb && vb ? 0 : rc_fail(err, "out of memory for the synthetic fill");
    for (int64_t l = 0; rc == 0 && l < c->n_layer; l++)
        for (int64_t s0 = 0; rc == 0 && s0 < n_loc; s0 += FILL_CHUNK) {
            const int64_t nb = n_loc - s0 < FILL_CHUNK ? n_loc - s0 : FILL_CHUNK;
#pragma omp parallel for num_threads(e->opts.n_threads) schedule(static)
            for (int64_t i = 0; i < nb; i++)
                fill_row(k + i * kv_dim, v + i * kv_dim, kv_dim, seed, l, e->slot_pos[s0 + i]);
            be->ops->upload(be, kb, k, (size_t)(nb * kv_dim) * sizeof(float));
            be->ops->upload(be, vb, v, (size_t)(nb * kv_dim) * sizeof(float));
            rc = kv_cache_store(&e->kv, l, s0, nb, kb, vb, err);
        }
    free(k);
    free(v);
    if (kb) be->ops->free(be, kb);
    if (vb) be->ops->free(be, vb);
    if (rc) return rc;
    e->n_local = n_loc;
    e->n_past = n_positions;
    e->n_prompt_end = n_positions;
    e->win_n = 0;
    float *zeros = calloc((size_t)c->n_vocab, sizeof(float));  // no model ran: no logits
    if (!zeros) return rc_fail(err, "out of memory");
    be->ops->upload(be, e->logits, zeros, (size_t)c->n_vocab * sizeof(float));
    be->ops->download(be, e->logits_host, e->logits, (size_t)c->n_vocab * sizeof(float));
    free(zeros);
    if (e->recycle) recycle_reset(e->recycle);
    const int prev_phase = e->comm->phase;
    e->comm->phase = COMM_PHASE_PREFILL;
    rc = fill_window(e, n_positions, seed, err);
    e->comm->phase = prev_phase;
    if (rc) return rc;
    if (e->policy && engine_compress_prompt(e, err)) return -1;
    return 0;
}
