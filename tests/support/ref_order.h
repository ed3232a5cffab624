// The selection order of the brute-force references (tests only): by score,
// descending, then by position, ascending — the order select_topk promises.
#ifndef RECALL_TESTS_REF_ORDER_H
#define RECALL_TESTS_REF_ORDER_H

#include <stdint.h>

typedef struct ref_entry {
    double score;
    int64_t pos;
} ref_entry;

// qsort comparator over ref_entry.
int ref_cmp(const void *a, const void *b);

#endif
