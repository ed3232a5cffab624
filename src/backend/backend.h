// Backends are function tables (one per device). The `cpu_ref` table is the
// specification: plain loops, no tricks. Every other backend (`cpu` with SIMD
// and BLAS, later `cuda`) is tested op by op against it.
#ifndef RECALL_BACKEND_BACKEND_H
#define RECALL_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

// A weight matrix borrowed from the model file: n_out rows of n_in elements,
// each row stored contiguously in the given ggml type.
typedef struct weight {
    uint32_t type;
    const void *data;
    int64_t n_in;
    int64_t n_out;
    size_t row_bytes;
} weight;

enum kv_elem { KV_F16 = 0, KV_F32 = 1 };

// One layer's K or V cache: for KV head h, position p, the row starts at
// data + (h * head_stride + p * head_dim) elements.
typedef struct kv_view {
    const void *data;
    int elem;              // enum kv_elem
    int64_t head_stride;   // elements between consecutive KV heads
} kv_view;

// RoPE frequencies for one model: theta_i(pos) = pos * inv_freq[i], i < rot_dim/2.
typedef struct rope_table {
    const float *inv_freq;  // (rot_dim/2)
    int64_t rot_dim;
    int neox;               // 1: pairs (i, i + rot_dim/2) (qwen2); 0: adjacent pairs (2i, 2i+1) (llama)
} rope_table;

enum backend_op {
    OP_RMSNORM, OP_MATMUL, OP_ROPE, OP_SWIGLU, OP_ATTN_DECODE, OP_ATTN_DECODE_SCORES, OP_ATTN_PREFILL, OP_MERGE, OP_ARGMAX,
    OP_COUNT
};

typedef struct backend_ops {
    const char *name;
    int (*supports)(int op, uint32_t weight_type);

    // out, x: (n_rows, n); w: (n)
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps);

    // out: (n_tok, w->n_out) = x: (n_tok, w->n_in) times w^T, fp32 accumulation.
    void (*matmul)(float *out, const float *x, const weight *w, int64_t n_tok);

    // x: (n_tok, n_heads, head_dim), rotated in place; token t sits at position pos[t].
    void (*rope)(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos,
                 const rope_table *rt);

    // out: (n) = silu(gate) * up
    void (*swiglu)(float *out, const float *gate, const float *up, int64_t n);

    // One query token against keys [0, n_keys) of a layer's cache.
    // q: (n_q_heads, head_dim); o: (n_q_heads, head_dim), normalized; lse: (n_q_heads),
    // natural log of the softmax denominator including the max. n_keys == 0 gives
    // o = 0 and lse = -inf (an empty state).
    void (*attn_decode)(float *o, float *lse, const float *q, const kv_view *k, const kv_view *v, int64_t n_keys,
                        int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale);

    // attn_decode that also writes the raw scaled scores s_hj = scale * q_h . k_j to
    // scores: (n_q_heads, n_keys), so a full step can rank positions by their exact
    // probability exp(s_hj - lse_h) without reading K twice.
    void (*attn_decode_scores)(float *o, float *lse, float *scores, const float *q, const kv_view *k, const kv_view *v,
                               int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale);

    // Causal attention for n_tok queries at positions pos0 .. pos0+n_tok-1 over
    // keys [0, pos0 + n_tok) (query t sees keys 0..pos0+t).
    // q, o: (n_tok, n_q_heads, head_dim); lse: (n_tok, n_q_heads) or NULL.
    void (*attn_prefill)(float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0, const kv_view *k,
                         const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale);

    // Merges n_parts attention states in order: o: (n_heads, head_dim), lse: (n_heads);
    // o_parts: (n_parts, n_heads, head_dim), lse_parts: (n_parts, n_heads).
    void (*merge)(float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                  int64_t n_heads, int64_t head_dim);

    // Index of the largest value (lowest index on ties).
    int64_t (*argmax)(const float *x, int64_t n);
} backend_ops;

extern const backend_ops backend_cpu_ref;
extern const backend_ops backend_cpu;

// Threads used by the `cpu` backend's parallel kernels (OpenMP and BLAS).
void backend_cpu_set_threads(int n_threads);

#endif
