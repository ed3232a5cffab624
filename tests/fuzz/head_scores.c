// Head-score JSON (policy/head_scores.h): any bytes either fail with a
// message or load scores that are finite and >= 0 in a table of the declared
// shape, and a save/load round trip of a loaded file is exact.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "policy/head_scores.h"

static char g_saved[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char dir[] = "/tmp/recall-fuzz-XXXXXX";
    if (!mkdtemp(dir)) fuzz_fail("mkdtemp failed");
    snprintf(g_saved, sizeof(g_saved), "%s/saved.json", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rc_err err;
    head_scores hs, again;
    if (head_scores_load(fuzz_scratch_file(data, size), 0, 0, &hs, &err)) return 0;
    if (hs.n_layer < 1 || hs.n_head < 1 || hs.n_layer > 65536 || hs.n_head > 65536) fuzz_fail("shape");
    for (int64_t i = 0; i < hs.n_layer * hs.n_head; i++)
        if (!isfinite(hs.score[i]) || hs.score[i] < 0) fuzz_fail("score %lld is %g", (long long)i, hs.score[i]);
    if (head_scores_save(g_saved, &hs, NULL, &err)) fuzz_fail("a loaded file does not save: %s", err.msg);
    if (head_scores_load(g_saved, 0, 0, &again, &err)) fuzz_fail("a saved file does not load: %s", err.msg);
    if (again.n_layer != hs.n_layer || again.n_head != hs.n_head || strcmp(again.model, hs.model) ||
        strcmp(again.probe, hs.probe) || again.n_examples != hs.n_examples ||
        memcmp(again.score, hs.score, (size_t)(hs.n_layer * hs.n_head) * sizeof(double)))
        fuzz_fail("save/load round trip differs");
    head_scores_free(&again);
    head_scores_free(&hs);
    return 0;
}
