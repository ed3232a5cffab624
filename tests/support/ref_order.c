#include "ref_order.h"

int ref_cmp(const void *a, const void *b) {
    const ref_entry *x = a, *y = b;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}
