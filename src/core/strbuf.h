// A growable NUL-terminated string: the project's one string builder.
// Allocation failure is sticky (oom) and checked once where the text is used;
// p is NULL until something is added.
#ifndef RECALL_CORE_STRBUF_H
#define RECALL_CORE_STRBUF_H

#include <stddef.h>

typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

int sb_reserve(strbuf *b, size_t extra);  // room for extra more bytes; -1 (and oom) when it cannot grow
void sb_put(strbuf *b, const char *s, size_t n);
void sb_puts(strbuf *b, const char *s);
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_clear(strbuf *b);  // empty, keeping the memory
void sb_free(strbuf *b);

#endif
