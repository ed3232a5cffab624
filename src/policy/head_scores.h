// Per-(layer, query head) importance scores measured by the HeadKV probes
// (design.md §4), stored per model under configs/ as JSON:
//
//   {"format": "recall-head-scores-1", "model": "...", "probe": "r",
//    "n_layer": 30, "n_head": 9, "n_examples": 40,
//    "scores": [[...n_head numbers...], ... n_layer rows], ...meta}
//
// Scores are finite and non-negative; they are written with 17 significant
// digits, so a save/load round trip is exact. Any other top-level members
// (lengths, depths, the command that measured them) are informational.
#ifndef RECALL_POLICY_HEAD_SCORES_H
#define RECALL_POLICY_HEAD_SCORES_H

#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HEAD_SCORES_FORMAT "recall-head-scores-1"

typedef struct head_scores {
    int64_t n_layer, n_head;
    double *score;       // (n_layer, n_head), row-major by layer; owned
    char model[128];     // model name/architecture it was measured on (informational)
    char probe[8];       // "r", "r2", or "r+r2" for a combined file
    int64_t n_examples;  // examples that counted (F1 > 0.5)
} head_scores;

// Reads and validates the whole file; every error is one line naming the
// file ("configs/heads/x.json: 28 layers, the model has 30"). n_layer and
// n_head are the model's shape; pass 0 for either to accept the file's.
int head_scores_load(const char *path, int64_t n_layer, int64_t n_head, head_scores *out, rc_err *err);

// Writes hs (one row of scores per line) to path via a temporary file and a
// rename, so readers never see half a file. extra_json_meta may be NULL or
// the text of a JSON object whose members are copied in after the standard
// ones (e.g. {"lengths": [...], "depths": [...], "command": "..."}); it may
// not redefine a standard member. Rejects NaN, infinite or negative scores.
int head_scores_save(const char *path, const head_scores *hs, const char *extra_json_meta, rc_err *err);

// Frees the scores; leaves hs->score NULL and the counts 0.
void head_scores_free(head_scores *hs);

#ifdef __cplusplus
}
#endif

#endif
