// The communicator: how ranks exchange data. One interface, three
// implementations: null (one process), MPI (CPU data path) and a threaded
// simulation (N ranks as threads of one process, for tests). Buffers of a
// device backend move over the communicator's device data path (comm_dev
// below: NCCL, or host-staged). Every call is counted per phase so tests can
// assert, for instance, that a step made no collective call at all.
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
typedef struct comm_dev comm_dev;

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
    comm_dev *dev;               // the data path for device buffers (NULL: the host collectives above)
    void *impl;
};

// ---- the device data path (comm_dev.c, comm_staged.c; NCCL in src/backend/cuda/cuda_comm.c)
//
// Buffers of a device backend (is_device, no `expose`) cannot go through the
// host collectives. With several ranks the engine attaches a device
// communicator to its control communicator (comm->dev) and comm_*_buf route
// through it, counted in the control communicator's counters exactly like the
// host calls. Two kinds:
//   "nccl":   the backend's own (backend_ops.comm_dev_create; CUDA: NCCL on the
//             backend's stream): one rank per device;
//   "staged": download -> host collective -> upload through the backend's ops,
//             for ranks that share a device (NCCL refuses two ranks on one GPU).
// RECALL_DEVICE_COMM=auto (default) picks staged when two ranks run on the same
// device of the same host (found by all-gathering host name and PCI address at
// attach), else nccl where the backend has it; =nccl or =host force one.
#define COMM_DEVICE_ENV "RECALL_DEVICE_COMM"

typedef struct comm_dev_ops {
    // The collectives of comm_ops on buffers of `be`, already validated and
    // counted by comm_*_buf. Stream-ordered: they may return once the
    // transfer is queued on be's stream; it completes before be's next
    // download or synchronize.
    int (*allgather)(comm_dev *d, const backend *be, const void *send, size_t n_bytes, void *recv, rc_err *err);
    int (*allgatherv)(comm_dev *d, const backend *be, const void *send, const size_t *counts, void *recv, rc_err *err);
    int (*bcast)(comm_dev *d, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err);
    // Waits until nothing this rank queued on be is in flight (comm.c calls
    // it before any blocking host collective); reports asynchronous errors.
    int (*drain)(comm_dev *d, const backend *be, rc_err *err);
    // After a failure on this rank: makes the other ranks' transfers in
    // flight fail instead of hang (NCCL: ncclCommAbort). NULL: nothing to wake.
    void (*cancel)(comm_dev *d);
    // Frees what the path allocated through be (be is being shut down).
    void (*release)(comm_dev *d, const backend *be);
    void (*destroy)(comm_dev *d);
} comm_dev_ops;

struct comm_dev {
    const comm_dev_ops *ops;
    const char *kind;         // "nccl" or "staged"
    comm *ctl;                // the control communicator it belongs to
    int device;               // this rank's device index (messages)
    int n_users;              // engines attached (comm_dev_attach / comm_dev_detach)
    int failed;               // a transfer failed or was cancelled: later calls fail at once
    const backend *pending;   // a backend whose stream may hold queued transfers, or NULL
    void *impl;
};

// Attaches the device data path be's buffers need to c (shared by every
// engine on c: the first attach creates it, collectively, so every rank must
// attach in the same order). Returns 1 when attached (call comm_dev_detach
// with the same be later), 0 when be needs none (a host backend, one rank),
// -1 with err (RECALL_DEVICE_COMM malformed or different across ranks, ranks
// on different models of device, NCCL set-up failed).
int comm_dev_attach(comm *c, const backend *be, rc_err *err);
// Drops one attachment; the last one destroys the path. failed: this rank
// gives up after an error, so the path is cancelled first (ranks waiting for
// it inside a transfer fail instead of hanging).
void comm_dev_detach(comm *c, const backend *be, int failed);
// The host-staged path over ctl (also what `auto` picks for a shared device).
comm_dev *comm_dev_staged_create(comm *ctl, int device, rc_err *err);
// Ends the whole job (every rank) with `code`: first cancels the device data
// path, so no rank stays blocked in a device transfer, then c->ops->abort.
_Noreturn void comm_abort(comm *c, int code);

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
