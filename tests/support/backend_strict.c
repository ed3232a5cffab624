#include "backend_strict.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// One mapping: data pages, then one guard page; the buffer ends at the guard.
typedef struct strict_buf {
    uint8_t *map;      // start of the mapping (page aligned)
    size_t data_len;   // bytes before the guard page
    uint8_t *ptr;      // what alloc returned: map + data_len - n_bytes
    size_t n_bytes;
    int n_open;        // ops currently working on it
} strict_buf;

typedef struct strict_state {
    backend inner;           // the CPU instance that does the work
    pthread_mutex_t mu;
    strict_buf *bufs;        // sorted by map
    size_t n_bufs, cap;
    size_t page;
} strict_state;

static void strict_die(const char *what, const void *p) {
    fprintf(stderr, "recall: strict backend: %s (%p)\n", what, p);
    abort();
}

static void protect(const strict_buf *bf, int on) {
    if (mprotect(bf->map, bf->data_len, on ? PROT_READ | PROT_WRITE : PROT_NONE))
        strict_die("mprotect failed", bf->map);
}

// The buffer holding p (p may be one past its end), or NULL.
static strict_buf *find(strict_state *s, const void *p) {
    const uint8_t *q = p;
    size_t lo = 0, hi = s->n_bufs;  // first buffer whose map is above q
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->bufs[mid].map <= q) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return NULL;
    strict_buf *bf = &s->bufs[lo - 1];
    return q >= bf->ptr && q <= bf->ptr + bf->n_bytes ? bf : NULL;
}

#define MAX_ARGS 6

// Opens the buffers an op works on (NULL entries: absent arguments).
static void enter(const backend *b, const char *op, const void *const *ptrs, int n) {
    strict_state *s = b->impl;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) {
        if (!ptrs[i]) continue;
        strict_buf *bf = find(s, ptrs[i]);
        if (!bf) {
            fprintf(stderr, "recall: strict backend: %s got %p, which is not one of this backend's buffers\n", op,
                    ptrs[i]);
            abort();
        }
        if (bf->n_open++ == 0) protect(bf, 1);
    }
    s->inner.n_threads = b->n_threads;
    pthread_mutex_unlock(&s->mu);
}

static void leave(const backend *b, const void *const *ptrs, int n) {
    strict_state *s = b->impl;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) {
        if (!ptrs[i]) continue;
        strict_buf *bf = find(s, ptrs[i]);
        if (--bf->n_open == 0) protect(bf, 0);
    }
    pthread_mutex_unlock(&s->mu);
}

// Runs `call` on the CPU instance with the listed buffers open.
#define STRICT_RUN(op, call, ...)                                \
    do {                                                         \
        const void *const ptrs_[] = {__VA_ARGS__};               \
        const int n_ = (int)(sizeof(ptrs_) / sizeof(ptrs_[0]));  \
        enter(b, op, ptrs_, n_);                                 \
        call;                                                    \
        leave(b, ptrs_, n_);                                     \
    } while (0)

#define INNER (&((strict_state *)b->impl)->inner)

// ---- lifetime

static int strict_init(backend *b, int device, rc_err *err) {
    strict_state *s = calloc(1, sizeof(strict_state));
    if (!s) return rc_fail(err, "strict backend: out of memory at init");
    if (backend_init(&s->inner, &backend_cpu, b->n_threads, device, err)) {
        free(s);
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->page = (size_t)sysconf(_SC_PAGESIZE);
    b->impl = s;
    return 0;
}

static void strict_shutdown(backend *b) {
    strict_state *s = b->impl;
    if (!s) return;
    for (size_t i = 0; i < s->n_bufs; i++) munmap(s->bufs[i].map, s->bufs[i].data_len + s->page);
    free(s->bufs);
    backend_shutdown(&s->inner);
    pthread_mutex_destroy(&s->mu);
    free(s);
    b->impl = NULL;
}

static int strict_supports(int op, uint32_t weight_type) { return backend_cpu.supports(op, weight_type); }

static int strict_synchronize(const backend *b, rc_err *err) {
    return backend_cpu.synchronize(INNER, err);
}

// The communicator opens the buffers a collective reads or writes, one
// pointer at a time; guard pages stay closed.
static void strict_expose(const backend *b, const void *p, int on) {
    const void *const ptrs[1] = {p};
    if (on) enter(b, "a collective", ptrs, 1);
    else leave(b, ptrs, 1);
}

// ---- memory

static void *strict_alloc(const backend *b, size_t n_bytes) {
    strict_state *s = b->impl;
    if (n_bytes == 0) n_bytes = 1;
    const size_t data_len = (n_bytes + s->page - 1) / s->page * s->page;
    if (data_len < n_bytes || data_len + s->page < data_len) return NULL;  // size overflow
    uint8_t *map = mmap(NULL, data_len + s->page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    pthread_mutex_lock(&s->mu);
    if (s->n_bufs == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        strict_buf *nb = realloc(s->bufs, cap * sizeof(strict_buf));
        if (!nb) {
            pthread_mutex_unlock(&s->mu);
            munmap(map, data_len + s->page);
            return NULL;
        }
        s->bufs = nb;
        s->cap = cap;
    }
    size_t at = s->n_bufs;
    while (at > 0 && s->bufs[at - 1].map > map) at--;
    memmove(&s->bufs[at + 1], &s->bufs[at], (s->n_bufs - at) * sizeof(strict_buf));
    s->bufs[at] = (strict_buf){.map = map, .data_len = data_len, .ptr = map + data_len - n_bytes, .n_bytes = n_bytes};
    s->n_bufs++;
    uint8_t *p = s->bufs[at].ptr;
    pthread_mutex_unlock(&s->mu);
    return p;  // anonymous pages come zero-filled
}

static void strict_free(const backend *b, void *p) {
    if (!p) return;
    strict_state *s = b->impl;
    pthread_mutex_lock(&s->mu);
    strict_buf *bf = find(s, p);
    if (!bf || bf->ptr != p) strict_die("free of a pointer alloc did not return", p);
    munmap(bf->map, bf->data_len + s->page);
    size_t at = (size_t)(bf - s->bufs);
    memmove(&s->bufs[at], &s->bufs[at + 1], (s->n_bufs - at - 1) * sizeof(strict_buf));
    s->n_bufs--;
    pthread_mutex_unlock(&s->mu);
}

static void strict_upload(const backend *b, void *dst, const void *src_host, size_t n_bytes) {
    STRICT_RUN("upload", backend_cpu.upload(INNER, dst, src_host, n_bytes), dst);
}

static void strict_download(const backend *b, void *dst_host, const void *src, size_t n_bytes) {
    STRICT_RUN("download", backend_cpu.download(INNER, dst_host, src, n_bytes), src);
}

static void strict_copy(const backend *b, void *dst, const void *src, size_t n_bytes) {
    STRICT_RUN("copy", backend_cpu.copy(INNER, dst, src, n_bytes), dst, src);
}

// The weight moves into strict memory, so a host read of it faults as well.
static int strict_weight_upload(const backend *b, weight *dst, const weight *src, rc_err *err) {
    const size_t n_bytes = (size_t)src->n_out * src->row_bytes;
    void *p = strict_alloc(b, n_bytes);
    if (!p) return rc_fail(err, "strict backend: cannot map %zu bytes for a weight", n_bytes);
    strict_upload(b, p, src->data, n_bytes);
    *dst = *src;
    dst->data = p;
    return 0;
}

static void strict_weight_free(const backend *b, weight *w) {
    strict_free(b, (void *)w->data);
    *w = (weight){0};
}

// ---- math: the CPU kernels with their buffers open

static void strict_rmsnorm(const backend *b, float *out, const float *x, const float *w, int64_t n_rows, int64_t n,
                           float eps) {
    STRICT_RUN("rmsnorm", backend_cpu.rmsnorm(INNER, out, x, w, n_rows, n, eps), out, x, w);
}

static void strict_matmul(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok) {
    STRICT_RUN("matmul", backend_cpu.matmul(INNER, out, x, w, n_tok), out, x, w->data);
}

static void strict_rope(const backend *b, float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                        const int64_t *pos_host, const rope_table *rt) {
    STRICT_RUN("rope", backend_cpu.rope(INNER, x, n_tok, n_heads, head_dim, pos_host, rt), x, rt->inv_freq);
}

static void strict_swiglu(const backend *b, float *out, const float *gate, const float *up, int64_t n) {
    STRICT_RUN("swiglu", backend_cpu.swiglu(INNER, out, gate, up, n), out, gate, up);
}

static void strict_attn_decode(const backend *b, float *o, float *lse, const float *q, const kv_view *k,
                               const kv_view *v, int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                               int64_t head_dim, float scale) {
    STRICT_RUN("attn_decode",
               backend_cpu.attn_decode(INNER, o, lse, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim, scale), o, lse,
               q, k->data, v->data);
}

static void strict_attn_decode_scores(const backend *b, float *o, float *lse, float *scores, const float *q,
                                      const kv_view *k, const kv_view *v, int64_t n_keys, int64_t n_q_heads,
                                      int64_t n_kv_heads, int64_t head_dim, float scale) {
    STRICT_RUN("attn_decode_scores",
               backend_cpu.attn_decode_scores(INNER, o, lse, scores, q, k, v, n_keys, n_q_heads, n_kv_heads, head_dim,
                                              scale),
               o, lse, scores, q, k->data, v->data);
}

static void strict_attn_prefill(const backend *b, float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                                const kv_view *k, const kv_view *v, int64_t n_q_heads, int64_t n_kv_heads,
                                int64_t head_dim, float scale) {
    STRICT_RUN("attn_prefill",
               backend_cpu.attn_prefill(INNER, o, lse, q, n_tok, pos0, k, v, n_q_heads, n_kv_heads, head_dim, scale),
               o, lse, q, k->data, v->data);
}

static void strict_merge(const backend *b, float *o, float *lse, const float *o_parts, const float *lse_parts,
                         int64_t n_parts, int64_t n_heads, int64_t head_dim) {
    STRICT_RUN("merge", backend_cpu.merge(INNER, o, lse, o_parts, lse_parts, n_parts, n_heads, head_dim), o, lse,
               o_parts, lse_parts);
}

static int64_t strict_argmax(const backend *b, const float *x, int64_t n) {
    int64_t r = 0;
    STRICT_RUN("argmax", r = backend_cpu.argmax(INNER, x, n), x);
    return r;
}

static void strict_add(const backend *b, float *x, const float *y, int64_t n) {
    STRICT_RUN("add", backend_cpu.add(INNER, x, y, n), x, y);
}

static void strict_add_bias(const backend *b, float *x, const float *bias, int64_t n_rows, int64_t n) {
    STRICT_RUN("add_bias", backend_cpu.add_bias(INNER, x, bias, n_rows, n), x, bias);
}

static void strict_embed(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n) {
    STRICT_RUN("embed", backend_cpu.embed(INNER, x, tok_embd, tokens_host, n), x, tok_embd->data);
}

static void strict_kv_write(const backend *b, const kv_view *k_dst, const kv_view *v_dst, const int64_t *slot_host,
                            const float *k, const float *v, int64_t n_tok, int64_t n_kv_heads, int64_t head_dim) {
    STRICT_RUN("kv_write", backend_cpu.kv_write(INNER, k_dst, v_dst, slot_host, k, v, n_tok, n_kv_heads, head_dim),
               k_dst->data, v_dst->data, k, v);
}

static void strict_copy_rows(const backend *b, void *dst, const int64_t *dst_row_host, const void *src,
                             const int64_t *src_row_host, int64_t n_rows, size_t row_bytes) {
    STRICT_RUN("copy_rows", backend_cpu.copy_rows(INNER, dst, dst_row_host, src, src_row_host, n_rows, row_bytes), dst,
               src);
}

static void strict_copy_2d(const backend *b, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                           size_t width_bytes, int64_t n_rows) {
    STRICT_RUN("copy_2d", backend_cpu.copy_2d(INNER, dst, dst_pitch, src, src_pitch, width_bytes, n_rows), dst, src);
}

static void strict_mean_heads(const backend *b, float *out, const float *q, int64_t n_heads, int64_t head_dim) {
    STRICT_RUN("mean_heads", backend_cpu.mean_heads(INNER, out, q, n_heads, head_dim), out, q);
}

static void strict_score_reduce(const backend *b, float *out, const float *raw, const float *lse, int64_t n_q_heads,
                                int64_t n_out_rows, int64_t n, int64_t ld, int64_t n_acc, int mode) {
    STRICT_RUN("score_reduce", backend_cpu.score_reduce(INNER, out, raw, lse, n_q_heads, n_out_rows, n, ld, n_acc, mode),
               out, raw, lse);
}

static void strict_maxpool_rows(const backend *b, float *out, const float *in, int64_t n_rows, int64_t n,
                                int64_t kernel) {
    STRICT_RUN("maxpool_rows", backend_cpu.maxpool_rows(INNER, out, in, n_rows, n, kernel), out, in);
}

static void strict_topk_rows(const backend *b, scored_pos *out_host, int64_t *n_out_host, const float *scores,
                             const int64_t *pos_host, int64_t n_rows, int64_t n, int64_t ld, const int64_t *k_host,
                             int64_t k_stride, int ascending) {
    STRICT_RUN("topk_rows",
               backend_cpu.topk_rows(INNER, out_host, n_out_host, scores, pos_host, n_rows, n, ld, k_host, k_stride,
                                     ascending),
               scores);
}

const backend_ops backend_cpu_strict = {
    .name = "cpu_strict",
    .is_device = 1,
    .supports = strict_supports,
    .init = strict_init,
    .shutdown = strict_shutdown,
    .synchronize = strict_synchronize,
    .expose = strict_expose,
    .alloc = strict_alloc,
    .free = strict_free,
    .upload = strict_upload,
    .download = strict_download,
    .copy = strict_copy,
    .weight_upload = strict_weight_upload,
    .weight_free = strict_weight_free,
    .rmsnorm = strict_rmsnorm,
    .matmul = strict_matmul,
    .rope = strict_rope,
    .swiglu = strict_swiglu,
    .attn_decode = strict_attn_decode,
    .attn_decode_scores = strict_attn_decode_scores,
    .attn_prefill = strict_attn_prefill,
    .merge = strict_merge,
    .argmax = strict_argmax,
    .add = strict_add,
    .add_bias = strict_add_bias,
    .embed = strict_embed,
    .kv_write = strict_kv_write,
    .copy_rows = strict_copy_rows,
    .copy_2d = strict_copy_2d,
    .mean_heads = strict_mean_heads,
    .score_reduce = strict_score_reduce,
    .maxpool_rows = strict_maxpool_rows,
    .topk_rows = strict_topk_rows,
};
