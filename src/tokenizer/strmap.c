#include "tokenizer/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

static uint64_t hash_bytes(const char *p, size_t n) {
    const uint64_t h = fnv1a(FNV1A_INIT, p, n);
    return h ^ (h >> 29);
}

int strmap_init(strmap *m, size_t n_expected) {
    memset(m, 0, sizeof(*m));
    size_t cap = 16;
    while (cap < 2 * n_expected + 1) cap *= 2;
    m->slots = malloc(cap * sizeof(strmap_slot));
    if (!m->slots) return -1;
    for (size_t i = 0; i < cap; i++) m->slots[i].value = -1;
    m->mask = cap - 1;
    return 0;
}

void strmap_free(strmap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

int32_t strmap_get(const strmap *m, const char *key, size_t n) {
    if (!m->slots) return -1;
    uint64_t h = hash_bytes(key, n);
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        const strmap_slot *s = &m->slots[i];
        if (s->value < 0) return -1;
        if (s->hash == h && s->key_len == n && memcmp(m->arena + s->key_off, key, n) == 0) return s->value;
    }
}

int strmap_put(strmap *m, const char *key, size_t n, int32_t value) {
    if (m->n + 1 > (m->mask + 1) / 2) return -1;  // sized up front; never expected
    uint64_t h = hash_bytes(key, n);
    size_t i = (size_t)h & m->mask;
    for (;; i = (i + 1) & m->mask) {
        strmap_slot *s = &m->slots[i];
        if (s->value < 0) break;
        if (s->hash == h && s->key_len == n && memcmp(m->arena + s->key_off, key, n) == 0) return 0;
    }
    if (m->arena_len + n > m->arena_cap) {
        size_t cap = m->arena_cap ? m->arena_cap : 4096;
        while (cap < m->arena_len + n) cap *= 2;
        char *a = realloc(m->arena, cap);
        if (!a) return -1;
        m->arena = a;
        m->arena_cap = cap;
    }
    if (n) memcpy(m->arena + m->arena_len, key, n);
    m->slots[i] = (strmap_slot){.hash = h, .key_off = m->arena_len, .key_len = (uint32_t)n, .value = value};
    m->arena_len += n;
    m->n++;
    return 1;
}
