// Host buffers for the CPU backend: large ones on transparent huge pages.
#ifndef RECALL_BACKEND_HOST_MEM_H
#define RECALL_BACKEND_HOST_MEM_H

#include <stddef.h>

// n_bytes of zeroed memory (at least 1 byte), or NULL. Buffers of
// HOST_HUGE_MIN bytes and more are mapped 2 MiB-aligned and asked for huge
// pages (madvise; the kernel may decline), still zeroed lazily like calloc.
void *host_alloc(size_t n_bytes);
// Frees what host_alloc returned (NULL is a no-op).
void host_free(void *p);

#define HOST_HUGE_MIN ((size_t)8 << 20)

#endif
