// FNV-1a, 64 bits: the fingerprints ranks compare to prove they hold the same
// bytes (logits, schedule decisions, selections) without sending the bytes.
#ifndef RECALL_CORE_HASH_H
#define RECALL_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FNV1A_INIT 1469598103934665603ull

static inline uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *b = (const uint8_t *)data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#ifdef __cplusplus
}
#endif

#endif
