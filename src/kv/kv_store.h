// The compacted K/V of one rank under a KV-compression policy (StreamingLLM,
// H2O, SnapKV, PyramidKV, Ada-KV, HeadKV): for each layer and store head, the
// rows of the positions the policy keeps on this rank, in ascending position
// order. Heads keep different positions and different counts, so each has its
// own buffers; evicting rows frees memory (buffers shrink), so the bytes held
// follow the policy. Rows and scores are backend buffers; positions are host metadata.
#ifndef RECALL_KV_KV_STORE_H
#define RECALL_KV_KV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"
#include "kv/kv_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kv_store_head {
    int64_t count, cap;
    int64_t *pos;    // (cap) ascending absolute positions, host
    float *score;    // (cap) the policy's running score (H2O: accumulated attention), backend
    void *k, *v;     // (cap, head_dim) in the store's element type, backend
} kv_store_head;

typedef struct kv_store {
    const backend *be;
    int elem;            // enum kv_elem
    int64_t n_layer, n_heads, head_dim;
    kv_store_head *heads;  // (n_layer, n_heads)
    void *scratch;       // backend rows for shifting a head down after a removal
    int64_t scratch_rows;
    int64_t *index;      // host scratch for row index lists
    int64_t n_index;
} kv_store;

int kv_store_init(kv_store *s, const backend *be, int64_t n_layer, int64_t n_heads, int64_t head_dim, int elem,
                  rc_err *err);
void kv_store_free(kv_store *s);
void kv_store_clear(kv_store *s);  // drops every row and frees the buffers

kv_store_head *kv_store_head_at(const kv_store *s, int64_t layer, int64_t head);

// Appends one fp32 row pair (k, v: (head_dim) backend buffers, converted to
// the store's type) at a position above every position the head holds; its score starts at 0.
int kv_store_append(kv_store *s, int64_t layer, int64_t head, int64_t pos, const float *k, const float *v,
                    rc_err *err);
// Appends n rows copied from a full cache: row i is (src_layer, src_kv_head,
// slot src_slot_host[i]) of src at position pos_host[i] (ascending, above the
// head's last); its score is scores[score_col_host[i]] (a backend buffer) or 0 when scores is NULL.
int kv_store_append_from(kv_store *s, int64_t layer, int64_t head, int64_t n, const int64_t *pos_host,
                         const kv_cache *src, int64_t src_layer, int64_t src_kv_head, const int64_t *src_slot_host,
                         const float *scores, const int64_t *score_col_host, rc_err *err);
// Removes entry i, keeping the order; the buffers shrink when a quarter full.
int kv_store_remove(kv_store *s, int64_t layer, int64_t head, int64_t i, rc_err *err);

// One head's rows as a single-KV-head view for attn_decode.
kv_view kv_store_k(const kv_store *s, int64_t layer, int64_t head);
kv_view kv_store_v(const kv_store *s, int64_t layer, int64_t head);

size_t kv_store_row_bytes(const kv_store *s);   // one K (or V) row
int64_t kv_store_rows(const kv_store *s);       // rows held over all layers and heads
size_t kv_store_bytes_held(const kv_store *s);  // K and V of the rows held
size_t kv_store_bytes_allocated(const kv_store *s);

#ifdef __cplusplus
}
#endif

#endif
