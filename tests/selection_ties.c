#define _POSIX_C_SOURCE 200809L  // getline, strdup
// selection_ties REF_TRACE TRACE STEP: where two runs' kept sets differ at
// STEP (their rank-0 `generate --trace` step lines), says per layer whether
// it is a near-tie at a ranked cut or a selection bug (support/selection_ties.h).
// Exit 0: all near-ties; 1: a selection bug; 2: usage or unreadable traces.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selection_ties.h"

// The step line of `step` (rank 0), malloc'd, or NULL.
static char *step_line(const char *path, long step) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char want[64];
    snprintf(want, sizeof(want), "\"step\":%ld,", step);
    char *line = NULL, *found = NULL;
    size_t cap = 0;
    while (!found && getline(&line, &cap, f) > 0)
        if (strstr(line, "\"event\":\"step\"") && strstr(line, "\"rank\":0,") && strstr(line, want)) found = strdup(line);
    free(line);
    fclose(f);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: selection_ties REF_TRACE TRACE STEP\n");
        return 2;
    }
    const long step = atol(argv[3]);
    char *a = step_line(argv[1], step), *b = step_line(argv[2], step);
    if (!a || !b) {
        fprintf(stderr, "selection_ties: no step %ld line in %s\n", step, !a ? argv[1] : argv[2]);
        return 2;
    }
    char report[8192];
    const int rc = selection_ties_judge(a, b, SELECTION_TIE_FACTOR, report, sizeof(report));
    printf("%s", report);
    free(a);
    free(b);
    return rc < 0 ? 2 : rc;
}
