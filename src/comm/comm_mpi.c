// The MPI communicator: the CPU data path between processes, and the control
// path (bootstrap, local rank, abort) of every multi-process run.
//
// MPI counts are ints, recall's sizes are size_t. No single MPI call here
// moves more than max_call_bytes (1 GiB, summed over all ranks), so every
// count and displacement fits an int; bigger transfers are split:
//  - allgather: per-rank chunks of max_call_bytes / size bytes, received
//    through a datatype resized to an extent of n_bytes, so chunk k of every
//    rank lands at its place in the rank-ordered result;
//  - allgatherv: one MPI_Allgatherv when the total fits, otherwise each
//    rank's part is broadcast from its owner in chunks (MPI_Allgatherv's int
//    displacements cannot address past 2 GiB);
//  - bcast: chunks.
// Every rank takes the same path because the decision depends only on sizes
// every rank passes identically, and on max_call_bytes, which rank 0 decides.
//
// Errors: MPI_COMM_WORLD gets MPI_ERRORS_RETURN, so a failing call comes back
// as an rc_err "[rank r @ host] <call> failed: <MPI's message>" instead of
// killing the job from inside MPI. A rank that cannot go on must call
// c->ops->abort, which ends every rank promptly (MPI_Abort); a rank that just
// exits would leave the others waiting in their next collective.
#include "comm/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/array.h"

int comm_launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};
    for (size_t i = 0; i < ARRAY_LEN(vars); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return 1;
    }
    // Slurm sets these for every job step, even one task: only more than one
    // task means we were started as ranks.
    const char *procid = getenv("SLURM_PROCID"), *ntasks = getenv("SLURM_NTASKS");
    return procid && *procid && ntasks && atol(ntasks) > 1;
}

#ifndef RECALL_HAVE_MPI

int comm_mpi_available(void) { return 0; }

comm *comm_mpi_create(int *argc, char ***argv, rc_err *err) {
    rc_fail(err, "recall was built without MPI (install an MPI, e.g. Debian's libopenmpi-dev, and reconfigure)");
    return NULL;
}

#else

#include <mpi.h>
#include <signal.h>
#include <unistd.h>

// The most bytes one MPI call moves (all ranks together). Tests lower it with
// the environment variable below to exercise the chunked paths on small data.
#define COMM_MPI_MAX_CALL_BYTES ((size_t)1 << 30)
#define COMM_MPI_MAX_CALL_ENV "RECALL_COMM_MPI_MAX_CALL_BYTES"

typedef struct mpi_impl {
    MPI_Comm world;         // our duplicate of MPI_COMM_WORLD: no tag clash with other MPI users
    int initialized_here;   // we called MPI_Init_thread, so destroy finalizes
    size_t max_call_bytes;  // see above; the same on every rank (rank 0's)
    int *icounts, *idispls; // (size,) scratch for MPI_Allgatherv
} mpi_impl;

static int mpi_fail(const comm *c, rc_err *err, int code, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) == MPI_SUCCESS && len >= 0 && len <= MPI_MAX_ERROR_STRING) msg[len] = '\0';
    else snprintf(msg, sizeof(msg), "MPI error code %d", code);
    return rc_fail(err, "[rank %d @ %s] %s failed: %s", c->rank, c->host, what, msg);
}

// Runs an MPI call; on failure returns -1 from the enclosing function with an
// rc_err naming the call.
#define MPI_TRY(c, err, call)                                           \
    do {                                                                \
        const int mpi_rc_ = (call);                                     \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail((c), (err), mpi_rc_, #call); \
    } while (0)

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

// RECALL_COMM_FAIL=...:mid (comm.h): this rank leaves the collective after
// its first chunk, the others are left inside it.
static int mid_call_failure(comm *c, size_t off, rc_err *err) {
    if (!c->fail_mid || off == 0) return 0;
    c->fail_mid = 0;
    return rc_fail(err, "injected failure between two chunks of a collective (%s)", COMM_FAIL_ENV);
}

static int bcast_chunked(comm *c, unsigned char *buf, size_t n_bytes, int root, rc_err *err) {
    const mpi_impl *m = c->impl;
    for (size_t off = 0; off < n_bytes; off += m->max_call_bytes) {
        if (mid_call_failure(c, off, err)) return -1;
        const int n = (int)min_size(m->max_call_bytes, n_bytes - off);
        MPI_TRY(c, err, MPI_Bcast(buf + off, n, MPI_BYTE, root, m->world));
    }
    return 0;
}

// One chunk of a big allgather: every rank sends n_chunk bytes; rank r's land
// at recv + r * stride (recv already points at the chunk's offset).
static int allgather_chunk(comm *c, const unsigned char *send, size_t n_chunk, unsigned char *recv, size_t stride,
                           rc_err *err) {
    const mpi_impl *m = c->impl;
    MPI_Datatype bytes, strided;
    MPI_TRY(c, err, MPI_Type_contiguous((int)n_chunk, MPI_BYTE, &bytes));
    int rc = MPI_Type_create_resized(bytes, 0, (MPI_Aint)stride, &strided);
    MPI_Type_free(&bytes);
    if (rc != MPI_SUCCESS) return mpi_fail(c, err, rc, "MPI_Type_create_resized(allgather chunk)");
    rc = MPI_Type_commit(&strided);
    if (rc == MPI_SUCCESS) {
        rc = MPI_Allgather(send, (int)n_chunk, MPI_BYTE, recv, 1, strided, m->world);
        if (rc != MPI_SUCCESS) {
            MPI_Type_free(&strided);
            return mpi_fail(c, err, rc, "MPI_Allgather(chunk, MPI_BYTE, recv, 1, strided, world)");
        }
    }
    MPI_Type_free(&strided);
    if (rc != MPI_SUCCESS) return mpi_fail(c, err, rc, "MPI_Type_commit(allgather chunk)");
    return 0;
}

static int mpi_allgather(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    const mpi_impl *m = c->impl;
    if (n_bytes == 0) return 0;  // every rank passes the same n_bytes, so every rank skips
    size_t per_rank = m->max_call_bytes / (size_t)c->size;
    if (per_rank == 0) per_rank = 1;
    if (n_bytes <= per_rank) {
        MPI_TRY(c, err, MPI_Allgather(send, (int)n_bytes, MPI_BYTE, recv, (int)n_bytes, MPI_BYTE, m->world));
        return 0;
    }
    const unsigned char *s = send;
    unsigned char *r = recv;
    for (size_t off = 0; off < n_bytes; off += per_rank)
        if (mid_call_failure(c, off, err) ||
            allgather_chunk(c, s + off, min_size(per_rank, n_bytes - off), r + off, n_bytes, err))
            return -1;
    return 0;
}

static int mpi_allgatherv(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err) {
    mpi_impl *m = c->impl;
    size_t total = 0;
    for (int r = 0; r < c->size; r++) total += counts[r];  // the wrapper checked it does not overflow
    if (total == 0) return 0;
    if (total <= m->max_call_bytes) {
        size_t off = 0;
        for (int r = 0; r < c->size; r++) {
            m->icounts[r] = (int)counts[r];
            m->idispls[r] = (int)off;
            off += counts[r];
        }
        MPI_TRY(c, err, MPI_Allgatherv(send, m->icounts[c->rank], MPI_BYTE, recv, m->icounts, m->idispls, MPI_BYTE,
                                       m->world));
        return 0;
    }
    unsigned char *out = recv;
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] > 0) {
            if (r == c->rank) memmove(out + off, send, counts[r]);
            if (bcast_chunked(c, out + off, counts[r], r, err)) return -1;
        }
        off += counts[r];
    }
    return 0;
}

static int mpi_bcast(comm *c, void *buf, size_t n_bytes, int root, rc_err *err) {
    return bcast_chunked(c, buf, n_bytes, root, err);
}

static int mpi_barrier(comm *c, rc_err *err) {
    const mpi_impl *m = c->impl;
    MPI_TRY(c, err, MPI_Barrier(m->world));
    return 0;
}

static _Noreturn void mpi_abort(comm *c, int code) {
    // A second abort (say, from a signal handler while the first one is
    // inside MPI) must not re-enter MPI: it just ends this process.
    static volatile sig_atomic_t entered = 0;
    fflush(NULL);
    if (!entered) {
        entered = 1;
        int init = 0, fin = 0;
        MPI_Initialized(&init);
        MPI_Finalized(&fin);
        // Kills every rank of the job, including those blocked in a collective.
        if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
    }
    _exit(code);  // MPI_Abort does not return; if it ever does, still end this rank now
}

static void mpi_impl_free(mpi_impl *m) {
    if (!m) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
    free(m->icounts);
    free(m->idispls);
    free(m);
}

static void mpi_destroy(comm *c) {
    mpi_impl *m = c->impl;
    const int finalize = m->initialized_here;
    mpi_impl_free(m);
    free(c);
    int fin = 0;
    MPI_Finalized(&fin);
    if (finalize && !fin) MPI_Finalize();
}

static const comm_ops mpi_ops = {
    .allgather = mpi_allgather,
    .allgatherv = mpi_allgatherv,
    .bcast = mpi_bcast,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
    .destroy = mpi_destroy,
};

int comm_mpi_available(void) { return 1; }

// Everything after MPI_Init: ranks, host, our communicator, the local rank.
static int mpi_setup(comm *c, mpi_impl *m, rc_err *err) {
    MPI_TRY(c, err, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_TRY(c, err, MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    MPI_TRY(c, err, MPI_Comm_size(MPI_COMM_WORLD, &c->size));
    char name[MPI_MAX_PROCESSOR_NAME + 1];
    int len = 0;
    MPI_TRY(c, err, MPI_Get_processor_name(name, &len));
    if (len <= 0 || len > MPI_MAX_PROCESSOR_NAME) {
        name[0] = '?';
        len = 1;
    }
    const size_t n_host = min_size((size_t)len, sizeof(c->host) - 1);  // a long FQDN is cut, not rejected
    memcpy(c->host, name, n_host);
    c->host[n_host] = '\0';

    MPI_TRY(c, err, MPI_Comm_dup(MPI_COMM_WORLD, &m->world));
    MPI_TRY(c, err, MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN));

    // Ranks that share memory share a host: that gives the local rank (which
    // GPU to use) and how many ranks split this host's cores.
    MPI_Comm local;
    MPI_TRY(c, err, MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    int rc = MPI_Comm_rank(local, &c->local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    if (rc != MPI_SUCCESS) return mpi_fail(c, err, rc, "MPI_Comm_rank/size(shared-memory communicator)");

    long long max_call = (long long)COMM_MPI_MAX_CALL_BYTES;
    const char *env = getenv(COMM_MPI_MAX_CALL_ENV);
    if (c->rank == 0 && env && *env) {
        char *end = NULL;
        const long long v = strtoll(env, &end, 10);
        if (*end != '\0' || v < 1 || v > (long long)COMM_MPI_MAX_CALL_BYTES) max_call = -1;
        else max_call = v;
    }
    MPI_TRY(c, err, MPI_Bcast(&max_call, 1, MPI_LONG_LONG, 0, m->world));
    if (max_call < 1)
        return rc_fail(err, "[rank %d @ %s] %s='%s' on rank 0: expected a byte count in [1, %zu]", c->rank, c->host,
                       COMM_MPI_MAX_CALL_ENV, c->rank == 0 ? env : "...", COMM_MPI_MAX_CALL_BYTES);
    m->max_call_bytes = (size_t)max_call;

    m->icounts = malloc((size_t)c->size * sizeof(int));
    m->idispls = malloc((size_t)c->size * sizeof(int));
    if (!m->icounts || !m->idispls) return rc_fail(err, "[rank %d @ %s] out of memory", c->rank, c->host);
    return 0;
}

comm *comm_mpi_create(int *argc, char ***argv, rc_err *err) {
    int init = 0, fin = 0, provided = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) {
        rc_fail(err, "comm_mpi_create: MPI was already finalized in this process");
        return NULL;
    }
    const int initialized_here = !init;
    if (!init) {
        // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            rc_fail(err, "MPI_Init_thread(MPI_THREAD_FUNNELED) failed");
            return NULL;
        }
    } else {
        MPI_Query_thread(&provided);
    }

    comm *c = calloc(1, sizeof(*c));
    mpi_impl *m = calloc(1, sizeof(*m));
    if (!c || !m) {
        free(c);
        free(m);
        rc_fail(err, "comm_mpi_create: out of memory");
        return NULL;
    }
    m->world = MPI_COMM_NULL;
    m->initialized_here = initialized_here;
    c->ops = &mpi_ops;
    c->kind = "mpi";
    c->rank = -1;
    snprintf(c->host, sizeof(c->host), "?");
    c->phase = COMM_PHASE_SETUP;
    c->impl = m;

    int rc = mpi_setup(c, m, err);
    if (rc == 0 && provided < MPI_THREAD_FUNNELED)
        rc = rc_fail(err, "[rank %d @ %s] MPI provides thread level %d; recall needs MPI_THREAD_FUNNELED (%d)", c->rank,
                     c->host, provided, MPI_THREAD_FUNNELED);
    if (rc != 0) {
        // MPI stays initialized: finalizing is collective and could hang when
        // only this rank failed. The caller reports the error and exits.
        mpi_impl_free(m);
        free(c);
        return NULL;
    }
    return c;
}

#endif  // RECALL_HAVE_MPI
