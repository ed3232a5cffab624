// Backends are function tables (one per device). The `cpu_ref` table is the
// specification: plain loops, no tricks. Every other backend (`cpu` with SIMD
// and BLAS, later `cuda`) is tested op by op against it.
//
// Memory conventions (design.md §7):
//  - backend buffers (weights, K/V, activations, scores, logits) come from
//    `alloc` or `weight_upload`; when `is_device` is set only the backend may
//    dereference them. Host code reaches their contents through `download`.
//  - host metadata (positions, slots, token ids, row indices, counts, k per
//    row) stays in host memory: arguments named *_host are host pointers.
//  - host results (argmax, top-K winners) are written to host memory; writing
//    one is a synchronization point.
// All work on one backend instance is ordered on its stream; `download`,
// `synchronize` and the ops with host results are where the host waits.
#ifndef RECALL_BACKEND_BACKEND_H
#define RECALL_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// A weight matrix: n_out rows of n_in elements, each row stored contiguously
// in the given ggml type. From the model it borrows the mmap'd file; after
// weight_upload its data belongs to the backend.
typedef struct weight {
    uint32_t type;
    const void *data;
    int64_t n_in;
    int64_t n_out;
    size_t row_bytes;
} weight;

// KV cache element formats. Q8_0 and Q4_0 are GGML's blocks of 32 elements
// (model/quant.h): a row of head_dim (a multiple of 32) is head_dim/32 blocks.
enum kv_elem { KV_F16 = 0, KV_F32 = 1, KV_Q8_0 = 2, KV_Q4_0 = 3 };

#define KV_QBLOCK 32

// Elements per storage unit: 32 for the block formats, 1 for the float ones.
static inline int64_t kv_elem_block(int elem) { return elem == KV_Q8_0 || elem == KV_Q4_0 ? KV_QBLOCK : 1; }

// Bytes of n_elems consecutive cache elements (n_elems a multiple of kv_elem_block).
static inline size_t kv_bytes(int elem, int64_t n_elems) {
    switch (elem) {
    case KV_F16: return (size_t)n_elems * 2;
    case KV_Q8_0: return (size_t)(n_elems / KV_QBLOCK) * 34;
    case KV_Q4_0: return (size_t)(n_elems / KV_QBLOCK) * 18;
    default: return (size_t)n_elems * 4;
    }
}

// Bytes of one K or V row of one head: the unit the cache, the stores and the exchange move.
static inline size_t kv_row_bytes(int elem, int64_t head_dim) { return kv_bytes(elem, head_dim); }

// One layer's K or V cache: for KV head h, slot p, the row starts
// kv_bytes(elem, h * head_stride + p * head_dim) bytes after data
// (kv_row_at). For the block formats head_stride and head_dim are multiples of 32.
typedef struct kv_view {
    const void *data;
    int elem;              // enum kv_elem
    int64_t head_stride;   // elements between consecutive KV heads
} kv_view;

static inline const uint8_t *kv_row_at(const kv_view *kv, int64_t head, int64_t pos, int64_t head_dim) {
    return (const uint8_t *)kv->data + kv_bytes(kv->elem, head * kv->head_stride + pos * head_dim);
}

// RoPE frequencies for one model: theta_i(pos) = pos * inv_freq[i], i < rot_dim/2.
typedef struct rope_table {
    const float *inv_freq;  // (rot_dim/2), a backend buffer
    int64_t rot_dim;
    int neox;               // 1: pairs (i, i + rot_dim/2) (qwen2); 0: adjacent pairs (2i, 2i+1) (llama)
} rope_table;

// A scored position: the unit of every selection (recycled cache, policies).
// The order is score descending, then position ascending (policy/select.h).
typedef struct scored_pos {
    float score;
    int64_t pos;   // absolute position in the sequence, in [0, 2^32)
} scored_pos;

enum backend_op {
    OP_RMSNORM, OP_MATMUL, OP_ROPE, OP_SWIGLU, OP_ATTN_DECODE, OP_ATTN_DECODE_SCORES, OP_ATTN_PREFILL, OP_MERGE, OP_ARGMAX,
    OP_ADD, OP_ADD_BIAS, OP_EMBED, OP_KV_WRITE, OP_COPY_ROWS, OP_COPY_2D, OP_MEAN_HEADS, OP_SCORE_REDUCE,
    OP_MAXPOOL_ROWS, OP_TOPK_ROWS,
    OP_COUNT
};

// How score_reduce combines the query heads of one output row (a KV group).
// LOGP modes work on log-probabilities s - lse (monotone in p, so max, first,
// pooling and ranking commute with exp); P modes on probabilities exp(s - lse).
enum score_mode {
    SCORE_MAX_LOGP = 0,    // out = max over the group of s - lse
    SCORE_FIRST_LOGP = 1,  // out = s - lse of the group's first head
    SCORE_MEAN_P = 2,      // out = mean over the group of exp(s - lse)
    SCORE_ACC_MEAN_P = 3,  // out += mean over the group of exp(s - lse) (SnapKV votes, H2O)
};

typedef struct backend backend;
struct comm;
struct comm_dev;

// Which device an instance runs on, for the multi-rank start-up checks: ranks
// must run on the same model of device, and ranks that share one device
// cannot use NCCL between them (comm/comm.h, the device data path).
typedef struct backend_device_info {
    int index;          // device index on its host
    char name[96];      // model name ("NVIDIA H200", a MIG profile's name on a MIG slice)
    char pci_id[32];    // the device's PCI address: the same device under every index mapping
} backend_device_info;

typedef struct backend_ops {
    const char *name;
    int is_device;   // 1: buffers live where the host must not dereference them
    int (*supports)(int op, uint32_t weight_type);

    // ---- lifetime (NULL: nothing to do). init runs once per instance, before
    // any allocation (CUDA: select the device, create the stream).
    int (*init)(backend *b, int device, rc_err *err);
    void (*shutdown)(backend *b);
    void *(*stream)(const backend *b);                 // cudaStream_t for NCCL; NULL on the CPU
    int (*synchronize)(const backend *b, rc_err *err);  // where asynchronous device errors surface
    // The communicator's data path reads and writes backend buffers directly
    // (as NCCL does on a GPU): it brackets its access to the buffer holding p
    // with expose(b, p, 1) and expose(b, p, 0). Only the strict test backend
    // needs it; NULL elsewhere.
    void (*expose)(const backend *b, const void *p, int on);
    // Device backends: the device this instance runs on (NULL on the host).
    int (*device_info)(const backend *b, backend_device_info *info, rc_err *err);
    // Device backends with a collective library (CUDA: NCCL): the device
    // communicator for this backend's buffers over ctl's ranks, created
    // collectively (every rank of ctl calls it). NULL elsewhere: such a
    // backend's buffers move host-staged (comm/comm.h).
    struct comm_dev *(*comm_dev_create)(const backend *b, struct comm *ctl, rc_err *err);

    // ---- memory. alloc: zero-filled, NULL on failure (n_bytes 0 gives a valid
    // minimal buffer). upload/copy are ordered on the stream; download returns
    // when the bytes are on the host. copy: the regions must not overlap.
    void *(*alloc)(const backend *b, size_t n_bytes);
    void (*free)(const backend *b, void *p);
    void (*upload)(const backend *b, void *dst, const void *src_host, size_t n_bytes);
    void (*download)(const backend *b, void *dst_host, const void *src, size_t n_bytes);
    void (*copy)(const backend *b, void *dst, const void *src, size_t n_bytes);
    // Weights at load time: dst becomes the backend's copy of src (CPU: the
    // same view, nothing allocated). weight_free releases what upload made.
    int (*weight_upload)(const backend *b, weight *dst, const weight *src, rc_err *err);
    void (*weight_free)(const backend *b, weight *w);

    // ---- math. Shapes are row-major; every pointer is a backend buffer unless named *_host.
    // out, x: (n_rows, n); w: (n)
    void (*rmsnorm)(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n, float eps);

    // out: (n_tok, w->n_out) = x: (n_tok, w->n_in) times w^T, fp32 accumulation.
    void (*matmul)(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok);

    // x: (n_tok, n_heads, head_dim), rotated in place; token t sits at position pos_host[t].
    void (*rope)(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos_host,
                 const rope_table *rt);

    // out: (n) = silu(gate) * up
    void (*swiglu)(const backend *b, float *out, const float *gate, const float *up, int64_t n);

    // One query token against keys [0, n_keys) of a layer's cache.
    // q: (n_q_heads, head_dim); o: (n_q_heads, head_dim), normalized; lse: (n_q_heads),
    // natural log of the softmax denominator including the max. n_keys == 0 gives
    // o = 0 and lse = -inf (an empty state).
    void (*attn_decode)(const backend *b, float *o, float *lse, const float *q, const kv_view *k, const kv_view *v,
                        int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale);

    // attn_decode that also writes the raw scaled scores s_hj = scale * q_h . k_j to
    // scores: (n_q_heads, n_keys), so a full step can rank positions by their exact
    // probability exp(s_hj - lse_h) without reading K twice.
    void (*attn_decode_scores)(const backend *b, float *o, float *lse, float *scores, const float *q, const kv_view *k,
                               const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                               int64_t head_dim, float scale);

    // Causal attention for n_tok queries at positions pos0 .. pos0+n_tok-1 over
    // keys [0, pos0 + n_tok) (query t sees keys 0..pos0+t).
    // q, o: (n_tok, n_q_heads, head_dim); lse: (n_tok, n_q_heads) or NULL.
    void (*attn_prefill)(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                         const kv_view *k, const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                         float scale);

    // Merges n_parts attention states in order: o: (n_heads, head_dim), lse: (n_heads);
    // o_parts: (n_parts, n_heads, head_dim), lse_parts: (n_parts, n_heads).
    void (*merge)(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts,
                  int64_t n_parts, int64_t n_heads, int64_t head_dim);

    // Index of the largest value (lowest index on ties; NaN never wins unless all are NaN). A host result.
    int64_t (*argmax)(const backend *b, const float *x, int64_t n);

    // x: (n) += y: (n)
    void (*add)(const backend *b, float *x, const float *y, int64_t n);
    // x: (n_rows, n) += bias: (n) on every row
    void (*add_bias)(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n);
    // x: (n, tok_embd->n_in) = rows tokens_host[0..n) of the embedding table, dequantized to fp32.
    void (*embed)(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n);

    // Writes fp32 rows into a K and a V cache view, converted to the view's type:
    // k, v: (n_tok, n_kv_heads, head_dim); row (t, h) goes to head h, slot
    // slot_host[t * n_kv_heads + h] of k_dst / v_dst.
    void (*kv_write)(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                     const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim);

    // Indexed row gather/scatter: for i < n_rows, row dst_row_host[i] of dst
    // <- row src_row_host[i] of src (rows of row_bytes; a NULL index list is
    // the identity). Destination rows must be distinct and must not overlap a source row.
    void (*copy_rows)(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                      const int64_t *src_row_host, int64_t n_rows, size_t row_bytes);

    // Strided copy (like cudaMemcpy2D): n_rows rows of width_bytes, from src
    // rows src_pitch bytes apart to dst rows dst_pitch bytes apart; no overlap.
    void (*copy_2d)(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                    size_t width_bytes, int64_t n_rows);

    // out: (head_dim) = mean over heads of q: (n_heads, head_dim), accumulated in double.
    void (*mean_heads)(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim);

    // Scores of positions from raw attention scores. raw: (n_q_heads, ld) with
    // n valid columns; lse: (n_q_heads), the global lse of each head; out:
    // (n_out_rows, n), row g combining query heads [g*G, (g+1)*G), G =
    // n_q_heads / n_out_rows, per enum score_mode. An lse of -inf (no keys
    // anywhere) gives probability 0 (log-probability -inf). ACC mode adds into
    // out and touches only columns j < n_acc (a causal prefix; the rest are unchanged).
    void (*score_reduce)(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                         int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode);

    // out[r, i] = max of in[r, j] for |j - i| <= kernel/2, within each row of
    // n (cut at the row ends). in, out: (n_rows, n); kernel odd; no overlap.
    void (*maxpool_rows)(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n, int64_t kernel);

    // Per row r < n_rows: the first min(k_host[r], n) of (scores[r*ld + j],
    // pos_host[j]), j < n, in the order (score desc, position asc; NaN last),
    // or with `ascending` (score asc, position asc; NaN last: H2O's eviction
    // looks for the lowest), to out_host + r * k_stride; n_out_host[r] = the count. Host results.
    void (*topk_rows)(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                      const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                      int64_t k_stride, int ascending);
} backend_ops;

// One instance of a backend: its table plus what travels with it (threads,
// device, private state). Each engine owns one; two instances in one process
// never share mutable state.
struct backend {
    const backend_ops *ops;
    int n_threads;   // CPU: threads of the parallel kernels (OpenMP regions and BLAS)
    int device;      // device index (CUDA); -1 on the host
    void *impl;      // the backend's private state
};

extern const backend_ops backend_cpu_ref;
extern const backend_ops backend_cpu;

// The kernel path backend_cpu takes on this CPU: "avx512" (AVX-512 F/BW/VL on
// top of AVX2), "avx2" (AVX2 + FMA + F16C) or "portable". RECALL_CPU_KERNELS=
// portable|avx2|avx512 caps it (RECALL_CPU_PORTABLE=1 = portable). Tests and
// `recall info` report it, so a forced run can show which path ran.
const char *backend_cpu_kernel_path(void);

// Sets up an instance (ops->init when present). n_threads <= 0 means 1.
int backend_init(backend *b, const backend_ops *ops, int n_threads, int device, rc_err *err);
void backend_shutdown(backend *b);

// A backend buffer holding a copy of n_bytes of host data (alloc + upload);
// NULL on failure. Freed with b->ops->free.
void *backend_upload_new(const backend *b, const void *src_host, size_t n_bytes);

#ifdef __cplusplus
}
#endif

#endif
