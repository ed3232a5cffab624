#include "eval/costmodel.h"

#include <stdio.h>
#include <string.h>

// scored_pos on the wire (policy/select.h): float score, padding, int64 pos.
#define CM_CANDIDATE_BYTES 16
// Floats after each rank's (o, lse) in a recycled-mode state (engine.c STATE_HASH_FLOATS).
#define CM_STATE_HASH_FLOATS 2

int64_t cm_params_per_token(const cm_shape *s) {
    const int64_t q = s->n_head * s->head_dim, kv = s->n_head_kv * s->head_dim;
    const int64_t per_layer = s->d_model * (q + 2 * kv) + q * s->d_model + 3 * s->d_model * s->d_ff;
    return s->n_layer * per_layer + s->d_model * s->n_vocab;  // + the output projection (tied or not)
}

static double dmax(double a, double b) { return a > b ? a : b; }

// Memory and compute overlap (roofline); collectives and the rebuild's
// selection (serial host work between the collectives) do not.
static void step_time(cm_step *st, const cm_device *d, int64_t sharing) {
    const double kv_bw = d->kv_bw > 0 ? d->kv_bw : d->mem_bw;
    double t_mem = (st->weight_bytes / d->mem_bw + st->kv_bytes / kv_bw) * (double)sharing;
    if (d->rank_mem_bw > 0 && d->rank_kv_bw > 0)
        t_mem = dmax(t_mem, st->weight_bytes / d->rank_mem_bw + st->kv_bytes / d->rank_kv_bw);
    const double t_flop = d->flops > 0 ? st->flops * (double)sharing / d->flops : 0.0;
    double t_sel = 0.0;
    if (st->select_candidates > 0 && d->select_rate > 0) {
        t_sel = st->select_candidates * (double)sharing / d->select_rate;
        if (d->rank_select_rate > 0) t_sel = dmax(t_sel, st->select_candidates / d->rank_select_rate);
    }
    if (st->gather_rows > 0 && d->gather_rate > 0) {
        double t = st->gather_rows * (double)sharing / d->gather_rate;
        if (d->rank_gather_rate > 0) t = dmax(t, st->gather_rows / d->rank_gather_rate);
        t_sel += t;
    }
    st->seconds = dmax(t_mem, t_flop) + t_sel + (double)st->calls * d->link_latency +
                  (d->link_bw > 0 ? st->comm_bytes / d->link_bw : 0.0);
}

int cm_predict(const cm_shape *s, const cm_device *d, const cm_method_opts *m, int64_t n_ctx, int64_t n_ranks,
               cm_result *out, rc_err *err) {
    if (n_ctx < 1 || n_ranks < 1) return rc_fail(err, "plan: context and ranks must be positive");
    if (s->n_layer < 1 || s->n_head < 1 || s->n_head_kv < 1 || s->head_dim < 1 || s->n_head % s->n_head_kv)
        return rc_fail(err, "plan: shape %s is not a valid GQA shape", s->name);
    if (m->method == CM_RECYCLED && (m->k < 1 || m->stride < 1))
        return rc_fail(err, "plan: recycled needs k >= 1 and stride >= 1");
    if (d->mem_bw <= 0 || d->prefill_flops <= 0)
        return rc_fail(err, "plan: device %s has no bandwidth or FLOP/s", d->name);
    memset(out, 0, sizeof(*out));
    const int64_t R = n_ranks, L = s->n_layer, H = s->n_head, KV = s->n_head_kv, hd = s->head_dim;
    const int64_t n_loc = (n_ctx + R - 1) / R;  // the largest shard
    const double eb = s->kv_elem_bytes, row = (double)(hd)*eb;  // one K or V row of one head
    const double kv_per_pos = (double)(L * 2 * KV) * row;
    const double P = (double)cm_params_per_token(s);
    const double W = s->weight_bytes > 0 ? (double)s->weight_bytes : P * s->weight_bytes_per_param;
    const int64_t sharing = d->shared ? R : 1;
    const int rec = m->method == CM_RECYCLED;
    out->n_ctx = n_ctx;
    out->n_ranks = R;
    out->local_positions = n_loc;

    // Full step: every layer attends over the shard, the ranks all-gather (o, lse).
    cm_step *f = &out->full;
    f->weight_bytes = W;
    f->kv_bytes = (double)n_loc * kv_per_pos;
    if (rec) {
        f->kv_bytes += (double)(L * H * n_loc) * 4.0;  // the raw scores kept for the rebuild
        f->select_candidates = (double)(L * KV * n_loc);  // each KV head ranks the shard's positions
        f->gather_rows = (double)(L * KV * (m->k < n_ctx ? m->k : n_ctx));  // every rank's cache takes all K rows
    }
    f->flops = 2.0 * P + (double)(L * 4 * H * hd) * (double)n_loc;
    if (R > 1) {
        const double state = (double)(H * hd + H + (rec ? CM_STATE_HASH_FLOATS : 0)) * 4.0;
        f->calls = L * (rec ? 3 : 1);  // + the rebuild's candidate lists and rows
        f->comm_bytes = (double)(L * (R - 1)) * state;
        if (rec) {
            const double cand = (double)(KV * (m->k < n_loc ? m->k : n_loc)) * CM_CANDIDATE_BYTES;
            // Rows: an upper bound, every selected row fetched ((R-1)/R of them live elsewhere).
            const double rows = (double)(L * KV * m->k) * 2.0 * row * (double)(R - 1) / (double)R;
            f->comm_bytes += (double)(L * (R - 1)) * cand + rows;
        }
    }
    step_time(f, d, sharing);
    out->mean_step_seconds = f->seconds;

    if (rec) {  // all-recycled step: K rows plus the tokens appended since the last rebuild (stride/2 on average)
        cm_step *r = &out->recycled;
        const double rows = (double)(m->k < n_ctx ? m->k : n_ctx) + (double)(m->stride - 1) / 2.0;
        r->weight_bytes = W;
        r->kv_bytes = (double)(L * 2 * KV) * rows * row;
        r->flops = 2.0 * P + (double)(L * 4 * H * hd) * rows;
        step_time(r, d, sharing);
        out->mean_step_seconds = (f->seconds + (double)(m->stride - 1) * r->seconds) / (double)m->stride;
        out->recycled_mem = (double)(L * 2 * KV) * ((double)m->k + (double)m->stride) * row;
    }

    // Prefill: GEMMs over each rank's share of the prompt, causal attention
    // (n/2 keys per query on average), and the K/V all-gather of every layer.
    {
        // Logits are computed for the last prompt token only.
        const double tok_flops = 2.0 * (P - (double)(s->d_model * s->n_vocab)) + (double)(L * 4 * H * hd) * (double)n_ctx / 2.0;
        double t = tok_flops * (double)n_ctx / (double)R * (double)sharing / d->prefill_flops;
        if (R > 1)
            t += (double)L * d->link_latency +
                 (d->link_bw > 0 ? (double)n_ctx * kv_per_pos * (double)(R - 1) / (double)R / d->link_bw : 0.0);
        out->prefill_token_seconds = t / (double)n_ctx;
    }
    out->weight_mem = W;
    out->kv_mem = (double)n_loc * kv_per_pos;
    out->total_mem = out->weight_mem + out->kv_mem + out->recycled_mem;
    out->fits = d->mem_capacity <= 0 || out->total_mem * (double)sharing <= d->mem_capacity;
    return 0;
}

int cm_shape_by_name(const char *name, cm_shape *out) {
    // The models' config.json (Hugging Face), as launch/synth_model.py writes them.
    static const struct {
        const char *name;
        int64_t L, d, H, KV, hd, ff, V;
        int tied;
    } shapes[] = {
        {"llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 0},
        {"llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, 0},
        {"qwen2-7b", 28, 3584, 28, 4, 128, 18944, 152064, 0},
        {"smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 1},
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        if (strcmp(name, shapes[i].name)) continue;
        *out = (cm_shape){.n_layer = shapes[i].L, .d_model = shapes[i].d, .n_head = shapes[i].H,
                          .n_head_kv = shapes[i].KV, .head_dim = shapes[i].hd, .d_ff = shapes[i].ff,
                          .n_vocab = shapes[i].V, .tied_output = shapes[i].tied,
                          .weight_bytes_per_param = 20.0 / 32.0, .kv_elem_bytes = 2};
        snprintf(out->name, sizeof(out->name), "%s", name);
        return 0;
    }
    return -1;
}

int cm_device_by_name(const char *name, cm_device *out) {
    // Datasheet figures (NVIDIA H100 SXM5 and H200 SXM datasheets: 80 GB HBM3
    // at 3.35 TB/s, 141 GB HBM3e at 4.8 TB/s, dense BF16 989 TFLOP/s, NVLink
    // 900 GB/s per GPU).
    // Decode attention and GEMV are bandwidth-bound; their FLOP rate is taken
    // as the dense BF16 figure. Collective latency ~10 us per all-gather of a
    // few KiB over NVLink within a node, and the bus bandwidth ~360 GB/s,
    // from nccl-tests-style all_gather_perf figures reported for 8x H100 SXM.
    static const cm_device gpus[] = {
        {"h100", 3.35e12, 0, 989e12, 989e12, 0, 0, 10e-6, 360e9, 0, 80e9,
         "NVIDIA H100 SXM5 datasheet (HBM3 3.35 TB/s, BF16 989 TFLOP/s dense); NVLink all-gather ~10 us, ~360 GB/s", 0, 0, 0, 0},
        {"h200", 4.8e12, 0, 989e12, 989e12, 0, 0, 10e-6, 360e9, 0, 141e9,
         "NVIDIA H200 SXM datasheet (HBM3e 4.8 TB/s, BF16 989 TFLOP/s dense); NVLink all-gather ~10 us, ~360 GB/s", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(gpus) / sizeof(gpus[0]); i++)
        if (strcmp(name, gpus[i].name) == 0) {
            *out = gpus[i];
            return 0;
        }
    return -1;
}
