// The reference backend: the specification of every op, in plain loops with
// double accumulators. It is slow on purpose; tests compare other backends to it.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/quant.h"

static int ref_supports(int op, uint32_t weight_type) {
    if (op != OP_MATMUL) return 1;
    const ggml_type_info *ti = ggml_type_get(weight_type);
    return ti && ti->supported;
}

static void ref_rmsnorm(float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t i = 0; i < n; i++) out[r * n + i] = xr[i] * inv * w[i];
    }
}

static void ref_matmul(float *out, const float *x, const weight *w, int64_t n_tok) {
    float *row = malloc((size_t)w->n_in * sizeof(float));
    for (int64_t o = 0; o < w->n_out; o++) {
        dequantize_row(w->type, (const uint8_t *)w->data + (size_t)o * w->row_bytes, row, w->n_in);
        for (int64_t t = 0; t < n_tok; t++) {
            double acc = 0.0;
            for (int64_t i = 0; i < w->n_in; i++) acc += (double)row[i] * x[t * w->n_in + i];
            out[t * w->n_out + o] = (float)acc;
        }
    }
    free(row);
}

static void ref_rope(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos,
                     const rope_table *rt) {
    int64_t half = rt->rot_dim / 2;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                double theta = (double)pos[t] * rt->inv_freq[i];
                double c = cos(theta), s = sin(theta);
                int64_t a = rt->neox ? i : 2 * i;
                int64_t b = rt->neox ? i + half : 2 * i + 1;
                double x0 = v[a], x1 = v[b];
                v[a] = (float)(x0 * c - x1 * s);
                v[b] = (float)(x0 * s + x1 * c);
            }
        }
}

static void ref_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

static double kv_at(const kv_view *kv, int64_t head, int64_t pos, int64_t head_dim, int64_t i) {
    int64_t idx = head * kv->head_stride + pos * head_dim + i;
    if (kv->elem == KV_F16) return fp16_to_fp32(((const uint16_t *)kv->data)[idx]);
    return ((const float *)kv->data)[idx];
}

// Attention of one query head over keys [0, n_keys) of KV head kvh.
// raw (may be NULL) receives the n_keys scaled scores.
static void ref_attend_head(float *o, float *lse, float *raw, const float *q, const kv_view *k, const kv_view *v,
                            int64_t n_keys, int64_t kvh, int64_t head_dim, float scale) {
    if (n_keys == 0) {
        memset(o, 0, (size_t)head_dim * sizeof(float));
        *lse = -INFINITY;
        return;
    }
    double *s = malloc((size_t)n_keys * sizeof(double));
    double m = -INFINITY;
    for (int64_t j = 0; j < n_keys; j++) {
        double acc = 0.0;
        for (int64_t i = 0; i < head_dim; i++) acc += (double)q[i] * kv_at(k, kvh, j, head_dim, i);
        s[j] = acc * scale;
        if (raw) raw[j] = (float)s[j];
        if (s[j] > m) m = s[j];
    }
    double l = 0.0;
    for (int64_t j = 0; j < n_keys; j++) {
        s[j] = exp(s[j] - m);
        l += s[j];
    }
    for (int64_t i = 0; i < head_dim; i++) {
        double acc = 0.0;
        for (int64_t j = 0; j < n_keys; j++) acc += s[j] * kv_at(v, kvh, j, head_dim, i);
        o[i] = (float)(acc / l);
    }
    *lse = (float)(m + log(l));
    free(s);
}

static void ref_attn_decode(float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t n_keys,
                            int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    int64_t group = n_q_heads / n_kv_heads;
    for (int64_t h = 0; h < n_q_heads; h++)
        ref_attend_head(o + h * head_dim, &lse[h], NULL, q + h * head_dim, k, v, n_keys, h / group, head_dim, scale);
}

static void ref_attn_decode_scores(float *o, float *lse, float *scores, const float *q, const kv_view *k,
                                   const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                                   int64_t head_dim, float scale) {
    int64_t group = n_q_heads / n_kv_heads;
    for (int64_t h = 0; h < n_q_heads; h++)
        ref_attend_head(o + h * head_dim, &lse[h], scores + h * n_keys, q + h * head_dim, k, v, n_keys, h / group,
                        head_dim, scale);
}

static void ref_attn_prefill(float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0, const kv_view *k,
                             const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    int64_t group = n_q_heads / n_kv_heads;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < n_q_heads; h++) {
            float dummy;
            float *l = lse ? &lse[t * n_q_heads + h] : &dummy;
            int64_t off = (t * n_q_heads + h) * head_dim;
            ref_attend_head(o + off, l, NULL, q + off, k, v, pos0 + t + 1, h / group, head_dim, scale);
        }
}

static void ref_merge(float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                      int64_t n_heads, int64_t head_dim) {
    for (int64_t h = 0; h < n_heads; h++) {
        double m = -INFINITY;
        for (int64_t r = 0; r < n_parts; r++)
            if (lse_parts[r * n_heads + h] > m) m = lse_parts[r * n_heads + h];
        if (m == -INFINITY) {  // every part empty: the merged state is empty too
            memset(o + h * head_dim, 0, (size_t)head_dim * sizeof(float));
            lse[h] = -INFINITY;
            continue;
        }
        double wsum = 0.0;
        for (int64_t r = 0; r < n_parts; r++) wsum += exp(lse_parts[r * n_heads + h] - m);
        for (int64_t i = 0; i < head_dim; i++) {
            double acc = 0.0;
            for (int64_t r = 0; r < n_parts; r++) {
                double w = exp(lse_parts[r * n_heads + h] - m);
                if (w > 0) acc += w * o_parts[(r * n_heads + h) * head_dim + i];
            }
            o[h * head_dim + i] = (float)(acc / wsum);
        }
        lse[h] = (float)(m + log(wsum));
    }
}

static int64_t ref_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

const backend_ops backend_cpu_ref = {
    .name = "cpu_ref",
    .supports = ref_supports,
    .rmsnorm = ref_rmsnorm,
    .matmul = ref_matmul,
    .rope = ref_rope,
    .swiglu = ref_swiglu,
    .attn_decode = ref_attn_decode,
    .attn_decode_scores = ref_attn_decode_scores,
    .attn_prefill = ref_attn_prefill,
    .merge = ref_merge,
    .argmax = ref_argmax,
};
