// The communicator: how ranks exchange data. One interface, three
// implementations: null (one process), MPI (CPU data path) and a threaded
// simulation (N ranks as threads of one process, for tests). NCCL will fill
// the GPU data path. Every call is counted per phase so tests can assert, for
// instance, that a step made no collective call at all.
#ifndef RECALL_COMM_COMM_H
#define RECALL_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum comm_phase { COMM_PHASE_SETUP = 0, COMM_PHASE_PREFILL, COMM_PHASE_DECODE, COMM_PHASE_COUNT };

typedef struct comm_counters {
    int64_t n_calls;       // collective calls
    int64_t bytes_sent;    // payload bytes this rank contributed
    int64_t bytes_recv;    // payload bytes this rank received from other ranks
} comm_counters;

typedef struct comm comm;

typedef struct comm_ops {
    // Every rank contributes n_bytes; recv receives size * n_bytes in rank order.
    int (*allgather)(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err);
    // Rank r contributes counts[r] bytes; recv holds them back to back in rank order.
    int (*allgatherv)(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err);
    int (*bcast)(comm *c, void *buf, size_t n_bytes, int root, rc_err *err);
    int (*barrier)(comm *c, rc_err *err);
    // Ends the whole job now (every rank), with the given exit code. Does not return.
    void (*abort)(comm *c, int code);  // implementations never return (C11 cannot mark a pointer _Noreturn)
    void (*destroy)(comm *c);
} comm_ops;

struct comm {
    const comm_ops *ops;
    const char *kind;      // "null", "mpi", "sim"
    int rank, size;
    int local_rank, local_size;  // within this host
    char host[64];
    int phase;                   // enum comm_phase: where counters accrue
    comm_counters counters[COMM_PHASE_COUNT];
    int fail_mid;                // fault injection: the collective in progress fails after its first chunk
    void *impl;
};

// Fault injection for tests: RECALL_COMM_FAIL=RANK:PHASE:N[:mid] (PHASE one
// of setup, prefill, decode) makes rank RANK's N-th collective of that phase
// (1-based) fail with an rc_err "injected failure ...": before it starts, or
// with ":mid" between two chunks of it (MPI only; lower
// RECALL_COMM_MPI_MAX_CALL_BYTES so the call is chunked), while the other
// ranks are inside it.
#define COMM_FAIL_ENV "RECALL_COMM_FAIL"

// Convenience wrappers (count calls and bytes in c->counters[c->phase]).
int comm_allgather(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err);
int comm_allgatherv(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err);
int comm_bcast(comm *c, void *buf, size_t n_bytes, int root, rc_err *err);
int comm_barrier(comm *c, rc_err *err);
void comm_destroy(comm *c);

// The same collectives on backend buffers: the communicator's data path,
// the one place besides the backend that touches them (as NCCL reads device
// memory). Counted like the host calls. be: the backend that owns the buffers.
int comm_allgather_buf(comm *c, const backend *be, const void *send, size_t n_bytes, void *recv, rc_err *err);
int comm_allgatherv_buf(comm *c, const backend *be, const void *send, const size_t *counts, void *recv, rc_err *err);
int comm_bcast_buf(comm *c, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err);

comm *comm_null_create(void);

// MPI: initializes MPI (MPI_Init_thread, FUNNELED) if needed, sets
// MPI_ERRORS_RETURN, finds the local rank with MPI_Comm_split_type. Returns
// NULL with err when recall was built without MPI.
comm *comm_mpi_create(int *argc, char ***argv, rc_err *err);
int comm_mpi_available(void);
// True when this process was started by mpirun/srun (env vars), so the CLI can
// pick MPI automatically.
int comm_launched_by_mpi(void);

// Threaded simulation: creates `size` communicators sharing one in-process
// exchange; comms[r] must be used by exactly one thread each, all calling the
// same collectives in the same order (like real ranks).
int comm_sim_create(int size, comm **comms, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
