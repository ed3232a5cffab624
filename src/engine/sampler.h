// Token choice: greedy (temperature 0) or seeded temperature + top-p sampling.
#ifndef RECALL_ENGINE_SAMPLER_H
#define RECALL_ENGINE_SAMPLER_H

#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sampler {
    float temperature;   // 0: greedy
    float top_p;         // (0, 1]
    uint64_t rng_state;
    int64_t n_vocab;
    int32_t *order;      // (n_vocab) scratch
    float *probs;        // (n_vocab) scratch
} sampler;

int sampler_init(sampler *s, int64_t n_vocab, float temperature, float top_p, uint64_t seed, rc_err *err);
void sampler_free(sampler *s);
int32_t sampler_pick(sampler *s, const float *logits);
int32_t argmax_logits(const float *logits, int64_t n);  // lowest id on ties

#ifdef __cplusplus
}
#endif

#endif
