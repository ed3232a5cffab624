// The op-level test harness shared by test_ops (the CPU backends) and
// test_kernels (the CUDA backend): tolerances and the NMSE comparison, a
// fixed-seed random source, NaN-prefilled outputs with guard words, KV caches
// with NaN outside the valid rows and an oversized head stride, test weights
// in every ggml type with a naive decoder, and helpers that move them through
// any backend table (upload inputs, download outputs, check the guards).
#ifndef RECALL_TESTS_OPCHECK_H
#define RECALL_TESTS_OPCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

// ---- tolerances ----
//
// A comparison passes when no element is NaN, infinities agree exactly, the
// normalized error NMSE = sum (a-b)^2 / sum b^2 is at most `nmse`, and every
// element has |a - b| <= atol + rtol * |b|.
typedef struct tol {
    double nmse, atol, rtol;
} tol;

// cpu_ref against the naive double math: both compute in double and round
// once to float, so they agree to a few float ulps.
extern const tol TOL_SPEC;
// Fast fp32 kernels (rmsnorm, rope, swiglu, merge) against the double
// reference: the style guide's NMSE <= 1e-7, elementwise a few hundred ulps.
extern const tol TOL_FP32;
// Attention (o and lse). Both backends read the same stored (fp16 or fp32)
// keys and values, so the difference is only fp32 accumulation and the fast
// exp polynomial (rel. error ~2e-7). The style guide's ceiling NMSE <= 5e-4
// is met by a wide margin; the elementwise bound is what catches a dropped or
// duplicated key (one key of n typically moves lse by ~1/n: 3e-4 at 3000).
extern const tol TOL_ATTN;
extern const tol TOL_LSE;
// Matmul: NMSE <= 1e-7; elementwise the bound scales with the condition of
// each dot product, |d_i| <= MATMUL_ABS_REL * sum_k |w_ik x_k| (set per element).
#define MATMUL_ABS_REL 2e-6

typedef struct cmp_result {
    int ok;
    double nmse, ratio;
    int64_t worst_i;  // element with the largest ratio (or the first mismatch of NaN/inf)
} cmp_result;

// got vs ref under t; atol_vec (optional) replaces t.atol per element.
cmp_result compare_quiet(const float *got, const float *ref, int64_t n, tol t, const double *atol_vec);

// Worst errors seen per op, printed at the end so tolerance margins are visible.
typedef struct op_stats {
    const char *name;
    int cases;
    double worst_nmse;   // largest NMSE seen
    double worst_ratio;  // largest |a-b| / (atol + rtol |b|): below 1 passes
} op_stats;

// compare_quiet, recorded in s (may be NULL); on failure prints one line
// naming `what`. Returns ok (the caller CHECKs it).
int compare_report(op_stats *s, const char *what, const float *got, const float *ref, int64_t n, tol t,
                   const double *atol_vec);
void op_stats_print(const op_stats *s, int n);

// ---- random numbers (fixed seed; rand_seed restarts the sequence) ----

void rand_seed(uint64_t seed);
uint32_t rand_u32(void);
double rand_unit(void);  // (0, 1)
float rand_uniform(float lo, float hi);
float rand_normal(void);
int64_t rand_below(int64_t n);

float *floats_new(int64_t n);
float *normal_new(int64_t n, float sigma);
float *to_floats(const double *x, int64_t n);
uint32_t f32_bits(float f);
int same_bits(const float *a, const float *b, int64_t n);

// ---- guarded host outputs ----

#define GUARD_ELEMS 16
// n floats pre-filled with NaN, then GUARD_ELEMS guard words.
float *out_new(int64_t n);
int guard_intact(const float *p, int64_t n);
int all_finite(const float *p, int64_t n);

// ---- KV caches ----

// A layer's K or V for n_kv_heads heads: rows [0, n_valid) hold values, every
// other element (rows beyond, and the gap up to the head stride) holds NaN.
typedef struct test_kv {
    void *data;
    int elem;
    int64_t n_kv_heads, n_valid, head_dim, head_stride;
    double *vals;  // (n_kv_heads, n_valid, head_dim): the stored values, exactly
} test_kv;

test_kv kv_new(int elem, int64_t n_kv_heads, int64_t n_valid, int64_t head_dim, float lo, float hi);
void kv_set(test_kv *kv, int64_t h, int64_t p, int64_t i, float x);  // overwrites one element (keeps vals in step)
double kv_val(const test_kv *kv, int64_t h, int64_t p, int64_t i);
// View of rows [first, ...) of the host cache: position p of the view is row first + p.
kv_view kv_view_at(const test_kv *kv, int64_t first);
void kv_free(test_kv *kv);
const char *kv_name(int elem);
int is_block_kv(int elem);  // q8_0 / q4_0: GGML blocks of 32
// Element i of a q8_0 / q4_0 row, decoded here from GGML's block layouts.
double naive_kv_block(int elem, const uint8_t *row, int64_t i);
size_t test_kv_bytes(const test_kv *kv);  // the whole allocation (n_kv_heads * head_stride elements)

// Explicit softmax of one query over keys [0, n) of KV head h (double):
// lse = ln sum_j exp(s_j), o = sum_j exp(s_j - lse) v_j.
void naive_attention(double *o, double *lse, const float *q, const test_kv *k, const test_kv *v, int64_t h, int64_t n,
                     double scale);
void rope_freqs(float *inv_freq, int64_t rot_dim, double theta);

// ---- test weights ----

typedef struct test_weight {
    weight w;
    void *buf;
} test_weight;

// n_out rows of n_in values ~ N(0, s_row^2) with a per-row scale, stored as
// `type` by the reference quantizers; row o = 1 is all zeros and row 2 constant
// (Q4_1 then has d = 0). row_pad extra bytes per row (filled with 0xff, NaN
// for float types) test that kernels step rows by row_bytes.
test_weight weight_new(uint32_t type, int64_t n_in, int64_t n_out, size_t row_pad);
void weight_free(test_weight *tw);
uint16_t load_u16(const uint8_t *p);
// Element i of a stored row, decoded from the GGUF block layouts directly.
double naive_weight(uint32_t type, const uint8_t *row, int64_t i);
// out: (n_tok, n_out) in double; abs_sum: sum_k |w_ok x_tk| for error bounds.
void naive_matmul(double *out, double *abs_sum, const float *x, const weight *w, int64_t n_tok);

#define N_WEIGHT_TYPES 6
extern const uint32_t WEIGHT_TYPES[N_WEIGHT_TYPES];  // F32, F16, BF16, Q8_0, Q4_0, Q4_1
int is_float_type(uint32_t t);

// ---- through a backend (any table: host pointers for the CPU ones) ----
//
// dev_*: buffers of backend b. Outputs are allocated with GUARD_ELEMS guard
// words after them, NaN-prefilled, so a kernel that forgets an element or
// writes past the end is seen when the buffer comes back.

void *dev_upload(const backend *b, const void *host, size_t n_bytes);   // alloc + upload
float *dev_floats(const backend *b, const float *host, int64_t n);      // n floats (input)
float *dev_out(const backend *b, int64_t n);                            // n NaN floats + guards
// Downloads n floats (+ the guards) of an output into a new host array (to
// free()); *guards_ok = whether the guard words are intact.
float *dev_fetch(const backend *b, const float *dev, int64_t n, int *guards_ok);
// The whole cache on backend b, NaN outside the valid rows like the host one;
// the view starts at row `first`. Free *buf with b->ops->free.
kv_view dev_kv(const backend *b, const test_kv *kv, int64_t first, void **buf);
// The weight on backend b through weight_upload; 0 on success.
int dev_weight(const backend *b, weight *dst, const weight *src);

#endif
