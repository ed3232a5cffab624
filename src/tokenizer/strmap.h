// Byte string -> int32 hash map for the tokenizer's vocabulary and merges:
// open addressing, sized up front, keys copied into an arena.
#ifndef RECALL_TOKENIZER_STRMAP_H
#define RECALL_TOKENIZER_STRMAP_H

#include <stddef.h>
#include <stdint.h>


typedef struct strmap_slot {
    uint64_t hash;
    uint64_t key_off;
    uint32_t key_len;
    int32_t value;  // -1 = empty slot
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;
    size_t mask;  // capacity - 1, capacity a power of two >= 2 * expected entries
    size_t n;
    char *arena;
    size_t arena_len, arena_cap;
} strmap;

int strmap_init(strmap *m, size_t n_expected);  // -1 when out of memory
void strmap_free(strmap *m);
int32_t strmap_get(const strmap *m, const char *key, size_t n);  // -1 when absent
// Inserts key -> value unless the key is present. Returns 1 if inserted,
// 0 if it was already there (the old value is kept), -1 when out of memory.
int strmap_put(strmap *m, const char *key, size_t n, int32_t value);

#endif
