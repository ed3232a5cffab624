// splitmix64: a tiny seedable generator that gives the same numbers on every
// platform, for sampling, task generators and synthetic test models.
#ifndef RECALL_CORE_RNG_H
#define RECALL_CORE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uint64_t splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#ifdef __cplusplus
}
#endif

#endif
