// Host copies of backend data, for tests that check what the engine stored.
// Every read goes through the backend's download, so the tests run
// unchanged on backends whose buffers the host may not touch.
#ifndef RECALL_TESTS_PEEK_H
#define RECALL_TESTS_PEEK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "kv/kv_store.h"
#include "kv/recycle_cache.h"

// A malloc'd host copy of n_bytes at src (free it); NULL when out of memory.
void *peek_copy(const backend *be, const void *src, size_t n_bytes);
// One K (which 0) or V (which 1) row into out (kv_cache_row_bytes bytes).
void peek_kv_row(const kv_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot, void *out);
void peek_recycle_row(const recycle_cache *c, int which, int64_t layer, int64_t kv_head, int64_t slot, void *out);
// Row i of a store head (which 0: K, 1: V), and its score.
void peek_store_row(const kv_store *s, int which, int64_t layer, int64_t head, int64_t i, void *out);
float peek_store_score(const kv_store *s, int64_t layer, int64_t head, int64_t i);
// Whether two backend rows (of two caches) hold the same bytes.
int peek_rows_equal(const backend *be, const void *a, const void *b, size_t n_bytes);

#endif
