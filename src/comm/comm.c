// The counting wrappers shared by every communicator, their routing of
// backend buffers (the host collective, or the device data path attached to
// the communicator: comm.h), and the null communicator (rank 0 of 1).
//
// Counting rule, in c->counters[c->phase]: a call counts once it reaches the
// implementation (arguments valid), whatever its outcome; its bytes count
// only when it succeeds. bytes_sent is what this rank contributed (a bcast
// root contributes n_bytes, the other ranks 0); bytes_recv is what arrived
// from other ranks (never this rank's own contribution), so one process
// always reports 0 received.
#include "comm/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const phase_names[COMM_PHASE_COUNT] = {"setup", "prefill", "decode"};

// RECALL_COMM_FAIL (comm.h): 1 when this call (already counted) is the one to
// fail on this rank, 2 when it must fail between its chunks. A malformed
// value never matches.
static int inject_hit(const comm *c) {
    const char *env = getenv(COMM_FAIL_ENV);
    if (!env || !*env) return 0;
    int rank = -1, used = 0;
    long long n = 0;
    char phase[16] = "";
    if (sscanf(env, "%d:%15[a-z]:%lld%n", &rank, phase, &n, &used) != 3 || rank != c->rank) return 0;
    if (strcmp(phase, phase_names[c->phase]) != 0 || c->counters[c->phase].n_calls != n) return 0;
    return strcmp(env + used, ":mid") == 0 ? 2 : 1;
}

// Counts the call; then either fails it now (injected) or arms the mid-call failure.
static int begin_call(comm *c, const char *what, rc_err *err) {
    c->counters[c->phase].n_calls++;
    c->fail_mid = 0;
    const int hit = inject_hit(c);
    if (hit == 1)
        return rc_fail(err, "injected failure at %s collective %lld, %s (%s)", phase_names[c->phase],
                       (long long)c->counters[c->phase].n_calls, what, COMM_FAIL_ENV);
    c->fail_mid = hit == 2;
    return 0;
}

static int check_phase(const comm *c, rc_err *err) {
    if (!c) return rc_fail(err, "comm: NULL communicator");
    if (c->phase < 0 || c->phase >= COMM_PHASE_COUNT)
        return rc_fail(err, "comm: phase %d out of range [0, %d)", c->phase, COMM_PHASE_COUNT);
    return 0;
}

// ---- routing: the host collectives, or the device data path (comm.h)

// The device path for be's buffers: attached, and be a device backend whose
// buffers the host may not read (the strict test backend exposes its own).
static comm_dev *dev_for(const comm *c, const backend *be) {
    if (!c || !c->dev || !be || !be->ops->is_device || be->ops->expose) return NULL;
    return c->dev;
}

// Once one collective fails the job's sequence of collectives is broken:
// the device path is closed, and ranks waiting inside a device transfer are
// woken (they fail) instead of hanging.
static void dev_failed(comm_dev *d) {
    if (!d || d->failed) return;
    d->failed = 1;
    d->pending = NULL;
    if (d->ops->cancel) d->ops->cancel(d);
}

// A blocking host collective must never start while device transfers are
// still in flight (design.md §2): the engine's host collectives follow a
// download or a synchronize anyway; this makes it a guarantee.
static int drain_dev(comm *c, rc_err *err) {
    comm_dev *d = c->dev;
    if (!d || !d->pending) return 0;
    const backend *be = d->pending;
    d->pending = NULL;
    return d->ops->drain ? d->ops->drain(d, be, err) : 0;
}

static int dev_usable(const comm *c, const comm_dev *d, rc_err *err) {
    if (!d->failed) return 0;
    return rc_fail(err, "[rank %d @ %s] the %s device data path failed earlier: no further transfers", c->rank,
                   c->host, d->kind);
}

static int run_allgather(comm *c, comm_dev *d, const backend *be, const void *send, size_t n_bytes, void *recv,
                         rc_err *err) {
    if (!d) return drain_dev(c, err) || c->ops->allgather(c, send, n_bytes, recv, err) ? -1 : 0;
    if (dev_usable(c, d, err)) return -1;
    if (n_bytes == 0) return 0;  // every rank passes the same size: all skip
    return d->ops->allgather(d, be, send, n_bytes, recv, err);
}

static int run_allgatherv(comm *c, comm_dev *d, const backend *be, const void *send, const size_t *counts, size_t total,
                          void *recv, rc_err *err) {
    if (!d) return drain_dev(c, err) || c->ops->allgatherv(c, send, counts, recv, err) ? -1 : 0;
    if (dev_usable(c, d, err)) return -1;
    if (total == 0) return 0;
    return d->ops->allgatherv(d, be, send, counts, recv, err);
}

static int run_bcast(comm *c, comm_dev *d, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err) {
    if (!d) return drain_dev(c, err) || c->ops->bcast(c, buf, n_bytes, root, err) ? -1 : 0;
    if (dev_usable(c, d, err)) return -1;
    if (n_bytes == 0) return 0;
    return d->ops->bcast(d, be, buf, n_bytes, root, err);
}

// A counted call failed on this rank.
static int call_failed(comm *c) {
    dev_failed(c->dev);
    return -1;
}

// ---- the counted collectives; d: the device path for backend buffers, or NULL

static int allgather_on(comm *c, comm_dev *d, const backend *be, const void *send, size_t n_bytes, void *recv,
                        rc_err *err) {
    if (check_phase(c, err)) return -1;
    if (n_bytes > 0 && (!send || !recv)) return rc_fail(err, "comm allgather: NULL buffer for %zu bytes", n_bytes);
    if (n_bytes > SIZE_MAX / (size_t)c->size)
        return rc_fail(err, "comm allgather: %d ranks x %zu bytes overflows size_t", c->size, n_bytes);
    comm_counters *k = &c->counters[c->phase];
    if (begin_call(c, "allgather", err) || run_allgather(c, d, be, send, n_bytes, recv, err)) return call_failed(c);
    if (d && n_bytes) d->pending = be;
    k->bytes_sent += (int64_t)n_bytes;
    k->bytes_recv += (int64_t)(n_bytes * (size_t)(c->size - 1));
    return 0;
}

static int allgatherv_on(comm *c, comm_dev *d, const backend *be, const void *send, const size_t *counts, void *recv,
                         rc_err *err) {
    if (check_phase(c, err)) return -1;
    if (!counts) return rc_fail(err, "comm allgatherv: NULL counts");
    size_t total = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] > SIZE_MAX - total) return rc_fail(err, "comm allgatherv: total byte count overflows size_t");
        total += counts[r];
    }
    const size_t mine = counts[c->rank];
    if ((mine > 0 && !send) || (total > 0 && !recv))
        return rc_fail(err, "comm allgatherv: NULL buffer (this rank %zu bytes, total %zu)", mine, total);
    comm_counters *k = &c->counters[c->phase];
    if (begin_call(c, "allgatherv", err) || run_allgatherv(c, d, be, send, counts, total, recv, err))
        return call_failed(c);
    if (d && total) d->pending = be;
    k->bytes_sent += (int64_t)mine;
    k->bytes_recv += (int64_t)(total - mine);
    return 0;
}

static int bcast_on(comm *c, comm_dev *d, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err) {
    if (check_phase(c, err)) return -1;
    if (root < 0 || root >= c->size) return rc_fail(err, "comm bcast: root %d out of range [0, %d)", root, c->size);
    if (n_bytes > 0 && !buf) return rc_fail(err, "comm bcast: NULL buffer for %zu bytes", n_bytes);
    comm_counters *k = &c->counters[c->phase];
    if (begin_call(c, "bcast", err) || run_bcast(c, d, be, buf, n_bytes, root, err)) return call_failed(c);
    if (d && n_bytes) d->pending = be;
    if (c->rank == root) k->bytes_sent += (int64_t)n_bytes;
    else k->bytes_recv += (int64_t)n_bytes;
    return 0;
}

int comm_allgather(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    return allgather_on(c, NULL, NULL, send, n_bytes, recv, err);
}

int comm_allgatherv(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err) {
    return allgatherv_on(c, NULL, NULL, send, counts, recv, err);
}

int comm_bcast(comm *c, void *buf, size_t n_bytes, int root, rc_err *err) {
    return bcast_on(c, NULL, NULL, buf, n_bytes, root, err);
}

int comm_barrier(comm *c, rc_err *err) {
    if (check_phase(c, err)) return -1;
    if (begin_call(c, "barrier", err) || drain_dev(c, err) || c->ops->barrier(c, err)) return call_failed(c);
    return 0;
}

_Noreturn void comm_abort(comm *c, int code) {
    comm_dev *d = c->dev;
    if (d && d->ops->cancel) d->ops->cancel(d);  // idempotent: also after a failure already cancelled it
    c->ops->abort(c, code);
    exit(code);  // not reached: abort ends the job
}

void comm_destroy(comm *c) {
    if (c) c->ops->destroy(c);
}

// ---- the null communicator: rank 0 of 1 ----

static int null_allgather(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    if (n_bytes > 0) memmove(recv, send, n_bytes);
    return 0;
}

static int null_allgatherv(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err) {
    if (counts[0] > 0) memmove(recv, send, counts[0]);
    return 0;
}

static int null_bcast(comm *c, void *buf, size_t n_bytes, int root, rc_err *err) {
    if (root != 0) return rc_fail(err, "comm bcast: root %d out of range [0, 1)", root);
    return 0;
}

static int null_barrier(comm *c, rc_err *err) { return 0; }

static _Noreturn void null_abort(comm *c, int code) { exit(code); }

static void null_destroy(comm *c) { free(c); }

static const comm_ops null_ops = {
    .allgather = null_allgather,
    .allgatherv = null_allgatherv,
    .bcast = null_bcast,
    .barrier = null_barrier,
    .abort = null_abort,
    .destroy = null_destroy,
};

// Opens (on = 1) or closes the backend buffers a collective reads and writes.
static void expose(const backend *be, const void *send, const void *recv, int on) {
    if (!be || !be->ops->expose) return;
    if (send) be->ops->expose(be, send, on);
    if (recv && recv != send) be->ops->expose(be, recv, on);
}

int comm_allgather_buf(comm *c, const backend *be, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    comm_dev *d = dev_for(c, be);
    if (d || n_bytes == 0) return allgather_on(c, d, be, send, n_bytes, recv, err);
    expose(be, send, recv, 1);
    int rc = comm_allgather(c, send, n_bytes, recv, err);
    expose(be, send, recv, 0);
    return rc;
}

int comm_allgatherv_buf(comm *c, const backend *be, const void *send, const size_t *counts, void *recv, rc_err *err) {
    comm_dev *d = dev_for(c, be);
    if (d) return allgatherv_on(c, d, be, send, counts, recv, err);
    const int mine = counts && c && counts[c->rank] > 0;
    size_t total = 0;
    for (int r = 0; counts && c && r < c->size; r++) total += counts[r];
    expose(be, mine ? send : NULL, total ? recv : NULL, 1);
    int rc = comm_allgatherv(c, send, counts, recv, err);
    expose(be, mine ? send : NULL, total ? recv : NULL, 0);
    return rc;
}

int comm_bcast_buf(comm *c, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err) {
    comm_dev *d = dev_for(c, be);
    if (d || n_bytes == 0) return bcast_on(c, d, be, buf, n_bytes, root, err);
    expose(be, buf, NULL, 1);
    int rc = comm_bcast(c, buf, n_bytes, root, err);
    expose(be, buf, NULL, 0);
    return rc;
}

comm *comm_null_create(void) {
    comm *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->ops = &null_ops;
    c->kind = "null";
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    if (gethostname(c->host, sizeof(c->host)) != 0) strcpy(c->host, "localhost");
    c->host[sizeof(c->host) - 1] = '\0';
    c->phase = COMM_PHASE_SETUP;
    return c;
}
