// The host-staged device data path (comm.h): download -> the control
// communicator's host collective -> upload, through the backend's own ops.
// Two copies across the host link per call, but it works wherever the host
// collective does, including ranks that share one GPU (which NCCL refuses).
// The download waits for the stream, so no transfer is ever in flight when
// the host collective starts, and the upload is queued like any other op.
#include <stdint.h>
#include <stdlib.h>

#include "comm/comm.h"

typedef struct staged {
    unsigned char *buf;   // host staging: this rank's contribution, then what it receives
    size_t cap;
} staged;

// Waits for the stream; device errors surface here rather than at the next step.
static int synced(const backend *be, rc_err *err) {
    return be->ops->synchronize ? be->ops->synchronize(be, err) : 0;
}

static unsigned char *room(comm_dev *d, const backend *be, size_t n_bytes, rc_err *err) {
    staged *s = d->impl;
    if (n_bytes <= s->cap) return s->buf;
    if (synced(be, err)) return NULL;  // the last call's upload may still read the old buffer
    unsigned char *p = realloc(s->buf, n_bytes);
    if (!p) {
        rc_fail(err, "[rank %d @ %s] out of memory staging %zu bytes of device data", d->ctl->rank, d->ctl->host,
                n_bytes);
        return NULL;
    }
    s->buf = p;
    s->cap = n_bytes;
    return p;
}

static int staged_allgather(comm_dev *d, const backend *be, const void *send, size_t n_bytes, void *recv,
                            rc_err *err) {
    comm *c = d->ctl;
    const size_t total = n_bytes * (size_t)c->size;  // comm_allgather_buf checked the product
    if (total > SIZE_MAX - n_bytes) return rc_fail(err, "comm allgather: %zu bytes overflow size_t", total);
    unsigned char *h = room(d, be, n_bytes + total, err);
    if (!h) return -1;
    be->ops->download(be, h, send, n_bytes);
    if (synced(be, err) || c->ops->allgather(c, h, n_bytes, h + n_bytes, err)) return -1;
    be->ops->upload(be, recv, h + n_bytes, total);
    return 0;
}

static int staged_allgatherv(comm_dev *d, const backend *be, const void *send, const size_t *counts, void *recv,
                             rc_err *err) {
    comm *c = d->ctl;
    size_t total = 0;
    for (int r = 0; r < c->size; r++) total += counts[r];  // comm_allgatherv_buf checked the sum
    const size_t mine = counts[c->rank];
    if (total > SIZE_MAX - mine) return rc_fail(err, "comm allgatherv: %zu bytes overflow size_t", total);
    unsigned char *h = room(d, be, mine + total, err);
    if (!h) return -1;
    if (mine) be->ops->download(be, h, send, mine);
    if (synced(be, err) || c->ops->allgatherv(c, h, counts, h + mine, err)) return -1;
    if (total) be->ops->upload(be, recv, h + mine, total);
    return 0;
}

static int staged_bcast(comm_dev *d, const backend *be, void *buf, size_t n_bytes, int root, rc_err *err) {
    comm *c = d->ctl;
    unsigned char *h = room(d, be, n_bytes, err);
    if (!h) return -1;
    if (c->rank == root) be->ops->download(be, h, buf, n_bytes);
    if (synced(be, err) || c->ops->bcast(c, h, n_bytes, root, err)) return -1;
    if (c->rank != root) be->ops->upload(be, buf, h, n_bytes);
    return 0;
}

static void staged_destroy(comm_dev *d) {
    staged *s = d->impl;
    free(s->buf);
    free(s);
    free(d);
}

// Uploads are queued from the staging buffer, which stays untouched until the
// next call's download has waited for them: nothing to drain or release.
static const comm_dev_ops staged_ops = {
    .allgather = staged_allgather,
    .allgatherv = staged_allgatherv,
    .bcast = staged_bcast,
    .destroy = staged_destroy,
};

comm_dev *comm_dev_staged_create(comm *ctl, int device, rc_err *err) {
    comm_dev *d = calloc(1, sizeof(*d));
    staged *s = calloc(1, sizeof(*s));
    if (!d || !s) {
        free(d);
        free(s);
        rc_fail(err, "out of memory");
        return NULL;
    }
    *d = (comm_dev){.ops = &staged_ops, .kind = "staged", .ctl = ctl, .device = device, .impl = s};
    return d;
}
