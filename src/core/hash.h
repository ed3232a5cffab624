// FNV-1a, 64 bits: the fingerprints ranks compare to prove they hold the same
// bytes (logits, schedule decisions, selections) without sending the bytes,
// the tokenizer's hash map, and the model-file fingerprints of the goldens.
// The project's only FNV-1a.
#ifndef RECALL_CORE_HASH_H
#define RECALL_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FNV1A_INIT 0xcbf29ce484222325ull  // the 64-bit offset basis

static inline uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *b = (const uint8_t *)data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

// The hash of one element of a set (splitmix64's finalizer over its words):
// XOR over the elements is a fingerprint of the set that does not depend on
// the order they are added or on how the set is split between ranks (XOR the
// ranks' parts). Elements must be distinct.
static inline uint64_t hash_set_elem(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t z = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull ^ c;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif

#endif
