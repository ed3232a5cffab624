// The NCCL device data path (comm/comm.h): one NCCL communicator per rank
// over the control communicator's ranks; every transfer is queued on the
// calling backend's stream and completes by its next download or
// synchronize. NCCL has no allgatherv: uneven or small payloads go as grouped
// broadcasts (one per rank that has bytes, fused into one launch by
// ncclGroupStart/End), large nearly even ones as one padded ncclAllGather
// into scratch, then per-rank copies that compact it. In the emulator build
// the same calls reach kernels/emu/emu_nccl.cpp, whose ranks are threads.
#include "backend/cuda/cuda_comm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "kernels/nccl_api.h"

typedef struct nccl_path {
    ncclComm_t nc;            // NULL once aborted
    size_t padded_min;        // CUDA_COMM_PADDED_MIN_BYTES or rank 0's override
    void *scratch;            // padded allgather target: size * max(counts) bytes
    size_t scratch_bytes;
    const backend *scratch_be;
} nccl_path;

static nccl_path *path_of(comm_dev *d) { return d->impl; }

// One failed NCCL call: "<call> failed: <reason> (<detail>) at file:line [rank r @ host, GPU d]".
static int nccl_fail(comm_dev *d, const char *call, ncclResult_t r, const char *file, int line, rc_err *err) {
    nccl_path *p = path_of(d);
    const char *detail = p->nc ? ncclGetLastError(p->nc) : NULL;
    const char *base = strrchr(file, '/');
    return rc_fail(err, "%s failed: %s%s%s%s at %s:%d [rank %d @ %s, GPU %d]", call, ncclGetErrorString(r),
                   detail && *detail ? " (" : "", detail && *detail ? detail : "", detail && *detail ? ")" : "",
                   base ? base + 1 : file, line, d->ctl->rank, d->ctl->host, d->device);
}

#define NCCL_TRY(d, call, err)                                                       \
    do {                                                                             \
        ncclResult_t nccl_try_r_ = (call);                                           \
        if (nccl_try_r_ != ncclSuccess && nccl_try_r_ != ncclInProgress)             \
            return nccl_fail((d), #call, nccl_try_r_, __FILE__, __LINE__, (err));    \
    } while (0)

static cudaStream_t stream_of(const backend *be) { return (cudaStream_t)be->ops->stream(be); }

// The backend's own asynchronous failure (a kernel, a copy) comes first: a
// transfer of the buffers it wrote would move garbage.
static int backend_ok(comm_dev *d, const backend *be, rc_err *err) {
    cuda_state *s = cuda_state_of(be);
    if (s->failed) return rc_fail(err, "%s", s->err);
    if (!path_of(d)->nc) return rc_fail(err, "NCCL communicator already aborted [rank %d @ %s, GPU %d]", d->ctl->rank,
                                        d->ctl->host, d->device);
    return 0;
}

static int nccl_allgather(comm_dev *d, const backend *be, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    if (backend_ok(d, be, err)) return -1;
    NCCL_TRY(d, ncclAllGather(send, recv, n_bytes, ncclUint8, path_of(d)->nc, stream_of(be)), err);
    return 0;
}

static int nccl_bcast(comm_dev *d, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err) {
    if (backend_ok(d, be, err)) return -1;
    NCCL_TRY(d, ncclBroadcast(buf, buf, n_bytes, ncclUint8, root, path_of(d)->nc, stream_of(be)), err);
    return 0;
}

// Scratch for the padded form, from the calling backend (grown, never shrunk).
static void *scratch(comm_dev *d, const backend *be, size_t n_bytes) {
    nccl_path *p = path_of(d);
    if (p->scratch && p->scratch_be == be && p->scratch_bytes >= n_bytes) return p->scratch;
    if (p->scratch) p->scratch_be->ops->free(p->scratch_be, p->scratch);  // waits for queued work on it
    p->scratch = be->ops->alloc(be, n_bytes);
    p->scratch_bytes = p->scratch ? n_bytes : 0;
    p->scratch_be = p->scratch ? be : NULL;
    return p->scratch;
}

static int nccl_allgatherv(comm_dev *d, const backend *be, const void *send, const size_t *counts, void *recv,
                           rc_err *err) {
    if (backend_ok(d, be, err)) return -1;
    nccl_path *p = path_of(d);
    const int R = d->ctl->size, me = d->ctl->rank;
    size_t total = 0, most = 0;
    for (int r = 0; r < R; r++) {
        total += counts[r];
        most = counts[r] > most ? counts[r] : most;
    }
    // Every rank sees the same counts, so every rank picks the same form.
    const size_t padded = most * (size_t)R;  // <= R * total: no overflow past comm.c's checks
    if (total >= p->padded_min && padded - total <= total / CUDA_COMM_PADDED_SLACK) {
        unsigned char *buf = scratch(d, be, padded);
        if (!buf)
            return rc_fail(err, "out of device memory for a %zu-byte padded allgather [rank %d @ %s, GPU %d]", padded,
                           me, d->ctl->host, d->device);
        // In place: this rank's part sits at its own slot of the gathered buffer.
        if (counts[me]) be->ops->copy(be, buf + (size_t)me * most, send, counts[me]);
        NCCL_TRY(d, ncclAllGather(buf + (size_t)me * most, buf, most, ncclUint8, p->nc, stream_of(be)), err);
        // Compaction: one stream-ordered copy per rank (a handful of large copies).
        size_t off = 0;
        for (int r = 0; r < R; r++) {
            if (counts[r]) be->ops->copy(be, (unsigned char *)recv + off, buf + (size_t)r * most, counts[r]);
            off += counts[r];
        }
        return 0;
    }
    NCCL_TRY(d, ncclGroupStart(), err);
    size_t off = 0;
    for (int r = 0; r < R; r++) {
        if (counts[r] == 0) continue;
        unsigned char *dst = (unsigned char *)recv + off;
        const ncclResult_t res =
            ncclBroadcast(r == me ? send : dst, dst, counts[r], ncclUint8, r, p->nc, stream_of(be));
        if (res != ncclSuccess && res != ncclInProgress) {
            ncclGroupEnd();  // close the group before reporting
            return nccl_fail(d, "ncclBroadcast (grouped)", res, __FILE__, __LINE__, err);
        }
        off += counts[r];
    }
    NCCL_TRY(d, ncclGroupEnd(), err);
    return 0;
}

// Before a blocking host collective: this rank's transfers have completed.
static int nccl_drain(comm_dev *d, const backend *be, rc_err *err) {
    if (be->ops->synchronize(be, err)) return -1;
    nccl_path *p = path_of(d);
    ncclResult_t async = ncclSuccess;
    if (p->nc) NCCL_TRY(d, ncclCommGetAsyncError(p->nc, &async), err);
    if (async != ncclSuccess && async != ncclInProgress)
        return nccl_fail(d, "ncclCommGetAsyncError", async, __FILE__, __LINE__, err);
    return 0;
}

static void nccl_cancel(comm_dev *d) {
    nccl_path *p = path_of(d);
    if (!p->nc) return;
    ncclCommAbort(p->nc);  // peers waiting in a transfer with this rank fail (ncclRemoteError)
    p->nc = NULL;
}

static void nccl_release(comm_dev *d, const backend *be) {
    nccl_path *p = path_of(d);
    if (p->scratch && p->scratch_be == be) {
        be->ops->free(be, p->scratch);
        p->scratch = NULL;
        p->scratch_bytes = 0;
        p->scratch_be = NULL;
    }
}

static void nccl_destroy(comm_dev *d) {
    nccl_path *p = path_of(d);
    if (p->nc) ncclCommDestroy(p->nc);
    free(p);
    free(d);
}

static const comm_dev_ops nccl_ops = {
    .allgather = nccl_allgather,
    .allgatherv = nccl_allgatherv,
    .bcast = nccl_bcast,
    .drain = nccl_drain,
    .cancel = nccl_cancel,
    .release = nccl_release,
    .destroy = nccl_destroy,
};

// What rank 0 sends every rank at set-up.
typedef struct nccl_boot {
    ncclUniqueId id;
    uint64_t padded_min;
    int32_t ok;
    char why[200];
} nccl_boot;

comm_dev *cuda_comm_dev_create(const backend *b, comm *ctl, rc_err *err) {
    cuda_state *s = cuda_state_of(b);
    nccl_boot boot;
    memset(&boot, 0, sizeof(boot));
    if (ctl->rank == 0) {
        const ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
        if (!boot.ok) snprintf(boot.why, sizeof(boot.why), "%s", ncclGetErrorString(r));
        const char *v = getenv(CUDA_COMM_PADDED_ENV);
        boot.padded_min = v && *v ? strtoull(v, NULL, 10) : CUDA_COMM_PADDED_MIN_BYTES;
    }
    // Set-up traffic over the control communicator, not counted.
    if (ctl->ops->bcast(ctl, &boot, sizeof(boot), 0, err)) return NULL;
    if (!boot.ok) {
        rc_fail(err, "ncclGetUniqueId failed on rank 0: %s", boot.why);
        return NULL;
    }
    comm_dev *d = calloc(1, sizeof(*d));
    nccl_path *p = calloc(1, sizeof(*p));
    if (!d || !p) {
        free(d);
        free(p);
        rc_fail(err, "out of memory");
        return NULL;
    }
    *d = (comm_dev){.ops = &nccl_ops, .kind = "nccl", .ctl = ctl, .device = s->device, .impl = p};
    p->padded_min = (size_t)boot.padded_min;
    cudaError_t ce = cudaSetDevice(s->device);  // NCCL binds the communicator to the current device
    ncclResult_t r = ce == cudaSuccess ? ncclCommInitRank(&p->nc, ctl->size, boot.id, ctl->rank) : ncclUnhandledCudaError;
    if (r != ncclSuccess) {
        p->nc = NULL;
        if (ce != cudaSuccess)
            rc_fail(err, "cudaSetDevice(%d) failed: %s [rank %d @ %s]", s->device, cudaGetErrorString(ce), ctl->rank,
                    ctl->host);
        else
            nccl_fail(d, "ncclCommInitRank", r, __FILE__, __LINE__, err);
        nccl_destroy(d);
        return NULL;
    }
    return d;
}

int cuda_device_info(const backend *b, backend_device_info *info, rc_err *err) {
    cuda_state *s = cuda_state_of(b);
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, s->device);
    if (e != cudaSuccess) return rc_fail(err, "cudaGetDeviceProperties(%d): %s", s->device, cudaGetErrorString(e));
    memset(info, 0, sizeof(*info));
    info->index = s->device;
    // Name, memory and architecture: MIG slices of different sizes differ in memory.
    snprintf(info->name, sizeof(info->name), "%.60s, %.1f GiB, sm_%d%d", p.name,
             (double)p.totalGlobalMem / (double)(1u << 30), p.major, p.minor);
    snprintf(info->pci_id, sizeof(info->pci_id), "%04x:%02x:%02x", (unsigned)p.pciDomainID, (unsigned)p.pciBusID,
             (unsigned)p.pciDeviceID);
    return 0;
}
