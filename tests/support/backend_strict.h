// A test backend that proves host code never dereferences backend memory.
// It runs every op on the CPU backend, but its buffers (alloc and
// weight_upload) are mmap'd pages that stay PROT_NONE except while one of its
// own ops, uploads, downloads or copies works on them, or inside an
// expose(b, 1) .. expose(b, 0) bracket (the communicator's data path). A host
// read or write of a buffer outside those faults at the line that does it.
// Each buffer ends flush against an inaccessible guard page, so overruns
// fault too, and ops that get a pointer which is not one of its buffers (a host
// array passed where the device needs its own memory) abort with one line.
//
// Every buffer sits on pages of its own and each instance tracks its own
// buffers, so simulated ranks (threads) with one instance each run
// concurrently: one rank's mprotect never touches another rank's pages.
#ifndef RECALL_TESTS_BACKEND_STRICT_H
#define RECALL_TESTS_BACKEND_STRICT_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const backend_ops backend_cpu_strict;

#ifdef __cplusplus
}
#endif

#endif
