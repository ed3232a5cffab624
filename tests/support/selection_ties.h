// Judging a kept set that differs between two runs (one process vs several
// ranks) from their `generate --trace` step lines: each layer whose
// "policy_layers" hash differs must show a near-tie at a ranked cut of that
// step ("policy_cuts": gap <= factor x the measured rounding), or it is a
// selection bug.
//
// The rounding is measured on the same step: over the layers whose kept sets
// agree and whose narrowest cut is the same row in both runs, the largest
// |score_ref - score_run| / max(|score_ref|, |score_run|). A layer that
// differs is a near-tie when the smaller of its two gaps is at most
// factor * rounding * max(|its cut scores|). Without such layers the rounding
// is unknown and nothing can be called a tie.
#ifndef RECALL_TESTS_SELECTION_TIES_H
#define RECALL_TESTS_SELECTION_TIES_H

#include <stddef.h>

// The factor the policy tests use: a swap needs each score's rounding to
// reach about half the gap, and the flipped layer's rounding may exceed the
// largest seen on the agreeing ones; 4 leaves room for both while a real
// selection bug (a gap of ordinary size) stays orders of magnitude above.
#define SELECTION_TIE_FACTOR 4.0

// Returns 0 when every differing layer is a near-tie (or none differs), 1
// when some layer differs without one, -1 when a line cannot be read. report
// (cap bytes) receives one line per differing layer and the rounding.
int selection_ties_judge(const char *ref_line, const char *run_line, double factor, char *report, size_t cap);

#endif
