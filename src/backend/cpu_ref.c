// The reference backend: the specification of every op, in plain loops with
// double accumulators. It is slow on purpose; tests compare other backends to it.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/kv_format.h"
#include "model/quant.h"

// ---- memory: host memory; the CPU keeps weights where the model has them

static void *ref_alloc(const backend *b, size_t n_bytes) { return calloc(n_bytes > 0 ? n_bytes : 1, 1); }

static void ref_free(const backend *b, void *p) { free(p); }

static void ref_memcpy(const backend *b, void *dst, const void *src, size_t n_bytes) {
    if (dst != src && n_bytes) memcpy(dst, src, n_bytes);
}

static int ref_weight_upload(const backend *b, weight *dst, const weight *src, rc_err *err) {
    *dst = *src;
    return 0;
}

static void ref_weight_free(const backend *b, weight *w) { *w = (weight){0}; }

// ---- math

static int ref_supports(int op, uint32_t weight_type) {
    if (op != OP_MATMUL) return 1;
    const ggml_type_info *ti = ggml_type_get(weight_type);
    return ti && ti->supported;
}

static void ref_rmsnorm(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t i = 0; i < n; i++) out[r * n + i] = xr[i] * inv * w[i];
    }
}

static void ref_matmul(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok) {
    float *row = malloc((size_t)(w->n_in > 0 ? w->n_in : 1) * sizeof(float));
    if (!row) return;  // the specification runs in tests only, on small shapes
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

static void ref_rope(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos,
                     const rope_table *rt) {
    int64_t half = rt->rot_dim / 2;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * head_dim;
            for (int64_t i = 0; i < half; i++) {
                double theta = (double)pos[t] * rt->inv_freq[i];
                double c = cos(theta), s = sin(theta);
                int64_t i0 = rt->neox ? i : 2 * i;
                int64_t i1 = rt->neox ? i + half : 2 * i + 1;
                double x0 = v[i0], x1 = v[i1];
                v[i0] = (float)(x0 * c - x1 * s);
                v[i1] = (float)(x0 * s + x1 * c);
            }
        }
}

static void ref_swiglu(const backend *b, float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double g = gate[i];
        out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
    }
}

// Element i of (head, pos)'s row, dequantized (the block formats: d * q).
static double kv_at(const kv_view *kv, int64_t head, int64_t pos, int64_t head_dim, int64_t i) {
    return kv_decode_at(kv->elem, kv_row_at(kv, head, pos, head_dim), i);
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
    if (!s) return;
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

static void ref_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t n_keys,
                            int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    int64_t group = n_q_heads / n_kv_heads;
    for (int64_t h = 0; h < n_q_heads; h++)
        ref_attend_head(o + h * head_dim, &lse[h], NULL, q + h * head_dim, k, v, n_keys, h / group, head_dim, scale);
}

static void ref_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                                   const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                                   int64_t head_dim, float scale) {
    int64_t group = n_q_heads / n_kv_heads;
    for (int64_t h = 0; h < n_q_heads; h++)
        ref_attend_head(o + h * head_dim, &lse[h], scores + h * n_keys, q + h * head_dim, k, v, n_keys, h / group,
                        head_dim, scale);
}

static void ref_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0, const kv_view *k,
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

static void ref_merge(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
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

static int64_t ref_argmax(const backend *b, const float *x, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;  // all NaN (or n == 0): the first index
}

// x: (n) += y: (n)
static void ref_add(const backend *b, float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

// x: (n_rows, n) += bias: (n)
static void ref_add_bias(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n) {
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) x[r * n + i] += bias[i];
}

// x: (n, n_in) = rows tokens[0..n) of the table, dequantized
static void ref_embed(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        dequantize_row(tok_embd->type, (const uint8_t *)tok_embd->data + (size_t)tokens_host[t] * tok_embd->row_bytes,
                       x + t * tok_embd->n_in, tok_embd->n_in);
}

// k, v: (n_tok, n_kv_heads, head_dim); row (t, h) -> head h, slot slot_host[t * n_kv_heads + h],
// converted (f16) or quantized (q8_0, q4_0) row by row.
static void ref_kv_write(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                         const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim) {
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < n_kv_heads; h++) {
            const int64_t row = t * n_kv_heads + h, slot = slot_host[row];
            kv_encode_row(k_dst->elem, (void *)kv_row_at(k_dst, h, slot, head_dim), k + row * head_dim, head_dim);
            kv_encode_row(v_dst->elem, (void *)kv_row_at(v_dst, h, slot, head_dim), v + row * head_dim, head_dim);
        }
}

static void ref_copy_rows(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                          const int64_t *src_row_host, int64_t n_rows, size_t row_bytes) {
    for (int64_t i = 0; i < n_rows; i++) {
        const int64_t d = dst_row_host ? dst_row_host[i] : i, s = src_row_host ? src_row_host[i] : i;
        memcpy((uint8_t *)dst + (size_t)d * row_bytes, (const uint8_t *)src + (size_t)s * row_bytes, row_bytes);
    }
}

static void ref_copy_2d(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                        size_t width_bytes, int64_t n_rows) {
    for (int64_t r = 0; r < n_rows; r++)
        memcpy((uint8_t *)dst + (size_t)r * dst_pitch, (const uint8_t *)src + (size_t)r * src_pitch, width_bytes);
}

// out: (head_dim) = mean over heads of q: (n_heads, head_dim)
static void ref_mean_heads(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim) {
    for (int64_t i = 0; i < head_dim; i++) {
        double acc = 0.0;
        for (int64_t h = 0; h < n_heads; h++) acc += q[h * head_dim + i];
        out[i] = (float)(acc / (double)n_heads);
    }
}

// log p = s - lse; an lse of -inf (no keys anywhere) gives -inf.
static float ref_logp(float s, float lse) { return lse == -INFINITY ? -INFINITY : s - lse; }

// raw: (n_q_heads, ld), n valid columns; lse: (n_q_heads); out: (n_out_rows, n)
static void ref_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                             int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode) {
    if (n_out_rows <= 0) return;
    const int64_t G = n_q_heads / n_out_rows;
    const int64_t n_cols = mode == SCORE_ACC_MEAN_P ? (n_acc < n ? n_acc : n) : n;
    for (int64_t g = 0; g < n_out_rows; g++)
        for (int64_t j = 0; j < n_cols; j++) {
            const int64_t h0 = g * G;
            float *o = &out[g * n + j];
            if (mode == SCORE_FIRST_LOGP) {
                *o = ref_logp(raw[h0 * ld + j], lse[h0]);
            } else if (mode == SCORE_MAX_LOGP) {
                float m = ref_logp(raw[h0 * ld + j], lse[h0]);  // later heads replace it only when larger
                for (int64_t h = h0 + 1; h < h0 + G; h++) {
                    const float x = ref_logp(raw[h * ld + j], lse[h]);
                    if (x > m) m = x;
                }
                *o = m;
            } else {
                double acc = 0.0;
                for (int64_t h = h0; h < h0 + G; h++)
                    if (lse[h] != -INFINITY) acc += exp((double)raw[h * ld + j] - (double)lse[h]);
                const float mean = (float)(acc / (double)G);
                *o = mode == SCORE_ACC_MEAN_P ? *o + mean : mean;
            }
        }
}

// out[r, i] = max of in[r, j], |j - i| <= kernel / 2, within the row
static void ref_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel) {
    const int64_t half = kernel / 2;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            float m = -INFINITY;
            for (int64_t j = i - half; j <= i + half; j++)
                if (j >= 0 && j < n && in[r * n + j] > m) m = in[r * n + j];
            out[r * n + i] = m;
        }
}

// The selection order: score descending (ascending), then position ascending, NaN last.
static int ref_before(const scored_pos *a, const scored_pos *c, int ascending) {
    const int an = isnan(a->score), cn = isnan(c->score);
    if (an != cn) return cn;
    if (!an && a->score != c->score) return ascending ? a->score < c->score : a->score > c->score;
    return a->pos < c->pos;
}

static int ref_cmp_desc(const void *pa, const void *pb) {
    const scored_pos *a = pa, *c = pb;
    return ref_before(a, c, 0) ? -1 : ref_before(c, a, 0) ? 1 : 0;
}

static int ref_cmp_asc(const void *pa, const void *pb) {
    const scored_pos *a = pa, *c = pb;
    return ref_before(a, c, 1) ? -1 : ref_before(c, a, 1) ? 1 : 0;
}

// Per row: sort all n candidates, keep the first min(k, n).
static void ref_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                          const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                          int64_t k_stride, int ascending) {
    scored_pos *all = malloc((size_t)(n > 0 ? n : 1) * sizeof(scored_pos));
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t m = k_host[r] < n ? k_host[r] : n;
        if (m < 0 || !all) m = 0;
        for (int64_t j = 0; j < n; j++) all[j] = (scored_pos){.score = scores[r * ld + j], .pos = pos_host[j]};
        if (n > 0 && all) qsort(all, (size_t)n, sizeof(scored_pos), ascending ? ref_cmp_asc : ref_cmp_desc);
        if (m > 0) memcpy(out_host + r * k_stride, all, (size_t)m * sizeof(scored_pos));
        n_out_host[r] = m;
    }
    free(all);
}

const backend_ops backend_cpu_ref = {
    .name = "cpu_ref",
    .supports = ref_supports,
    .alloc = ref_alloc,
    .free = ref_free,
    .upload = ref_memcpy,
    .download = ref_memcpy,
    .copy = ref_memcpy,
    .weight_upload = ref_weight_upload,
    .weight_free = ref_weight_free,
    .rmsnorm = ref_rmsnorm,
    .matmul = ref_matmul,
    .rope = ref_rope,
    .swiglu = ref_swiglu,
    .attn_decode = ref_attn_decode,
    .attn_decode_scores = ref_attn_decode_scores,
    .attn_prefill = ref_attn_prefill,
    .merge = ref_merge,
    .argmax = ref_argmax,
    .add = ref_add,
    .add_bias = ref_add_bias,
    .embed = ref_embed,
    .kv_write = ref_kv_write,
    .copy_rows = ref_copy_rows,
    .copy_2d = ref_copy_2d,
    .mean_heads = ref_mean_heads,
    .score_reduce = ref_score_reduce,
    .maxpool_rows = ref_maxpool_rows,
    .topk_rows = ref_topk_rows,
};
