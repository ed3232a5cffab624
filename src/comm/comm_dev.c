// Attaching the device data path (comm.h): every rank reports its host,
// device and requested path; all check the reports the same way, so all
// reach the same verdict, then create NCCL or the host-staged path together.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

enum { MODE_BAD = -1, MODE_AUTO = 0, MODE_HOST, MODE_NCCL };

// One rank's report, all-gathered at attach (fixed size, NUL-terminated strings).
typedef struct dev_report {
    char host[64];
    char pci_id[32];
    char name[96];
    char why[160];   // when this rank could not describe its device
    int32_t index;
    int32_t mode;    // RECALL_DEVICE_COMM as this rank read it
} dev_report;

static int read_mode(void) {
    const char *v = getenv(COMM_DEVICE_ENV);
    if (!v || !*v || !strcmp(v, "auto")) return MODE_AUTO;
    if (!strcmp(v, "host")) return MODE_HOST;
    if (!strcmp(v, "nccl")) return MODE_NCCL;
    return MODE_BAD;
}

static const char *mode_name(int mode) { return mode == MODE_HOST ? "host" : mode == MODE_NCCL ? "nccl" : "auto"; }

static void copy_str(char *dst, size_t cap, const char *src) {  // cut to fit
    const size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

// The checks every rank runs on the same reports: 0 or -1 with the same message everywhere.
static int check_reports(const comm *c, const dev_report *all, rc_err *err) {
    for (int r = 0; r < c->size; r++) {
        const dev_report *x = &all[r];
        if (x->index < 0) return rc_fail(err, "[rank %d @ %s] no usable device: %s", r, x->host, x->why);
        if (x->mode == MODE_BAD)
            return rc_fail(err, "[rank %d @ %s] %s=%s is not auto, host or nccl", r, x->host, COMM_DEVICE_ENV,
                           x->why);
        if (x->mode != all[0].mode)
            return rc_fail(err, "%s differs between ranks: %s on rank 0, %s on rank %d (%s); set it for every rank",
                           COMM_DEVICE_ENV, mode_name(all[0].mode), mode_name(x->mode), r, x->host);
        // Ranks must compute bitwise alike: mixed GPU models or MIG slices of different sizes are refused.
        if (strcmp(x->name, all[0].name) != 0)
            return rc_fail(err, "ranks run on different devices: rank 0 (%s) on '%s' (device %d), rank %d (%s) on "
                           "'%s' (device %d); every rank needs the same model of GPU (mixed models or MIG slices "
                           "of different sizes are refused)", all[0].host, all[0].name, all[0].index, r, x->host,
                           x->name, x->index);
    }
    return 0;
}

// Two ranks on one device of one host (NCCL refuses them: "Duplicate GPU").
static int device_shared(const comm *c, const dev_report *all) {
    for (int r = 0; r < c->size; r++)
        for (int q = r + 1; q < c->size; q++)
            if (!strcmp(all[r].host, all[q].host) && !strcmp(all[r].pci_id, all[q].pci_id)) return 1;
    return 0;
}

int comm_dev_attach(comm *c, const backend *be, rc_err *err) {
    if (!c || c->size <= 1 || !be->ops->is_device || be->ops->expose) return 0;
    if (c->dev) {  // another engine on this communicator made it
        c->dev->n_users++;
        return 1;
    }
    dev_report mine;
    memset(&mine, 0, sizeof(mine));
    copy_str(mine.host, sizeof(mine.host), c->host);
    mine.mode = read_mode();
    if (mine.mode == MODE_BAD) copy_str(mine.why, sizeof(mine.why), getenv(COMM_DEVICE_ENV));
    backend_device_info info = {.index = be->device >= 0 ? be->device : 0};
    rc_err dev_err = {{0}};
    if (be->ops->device_info && be->ops->device_info(be, &info, &dev_err)) {
        mine.index = -1;
        copy_str(mine.why, sizeof(mine.why), dev_err.msg);
    } else {
        mine.index = info.index;
        copy_str(mine.name, sizeof(mine.name), be->ops->device_info ? info.name : be->ops->name);
        if (be->ops->device_info) copy_str(mine.pci_id, sizeof(mine.pci_id), info.pci_id);
        else snprintf(mine.pci_id, sizeof(mine.pci_id), "index %d", info.index);
    }
    dev_report *all = calloc((size_t)c->size, sizeof(dev_report));
    if (!all) return rc_fail(err, "out of memory");
    // Set-up traffic, not counted (the counters describe the decode protocol).
    int rc = c->ops->allgather(c, &mine, sizeof(mine), all, err);
    if (rc == 0) rc = check_reports(c, all, err);
    const int shared = rc == 0 && device_shared(c, all);
    free(all);
    if (rc) return -1;
    int nccl = 0;
    switch (mine.mode) {
    case MODE_NCCL:
        if (!be->ops->comm_dev_create)
            return rc_fail(err, "%s=nccl: the %s backend has no device communicator", COMM_DEVICE_ENV, be->ops->name);
        nccl = 1;
        break;
    case MODE_AUTO: nccl = !shared && be->ops->comm_dev_create; break;
    default: break;
    }
    comm_dev *d = nccl ? be->ops->comm_dev_create(be, c, err) : comm_dev_staged_create(c, mine.index, err);
    if (!d) return -1;
    d->ctl = c;
    d->device = mine.index;
    d->n_users = 1;
    c->dev = d;
    return 1;
}

void comm_dev_detach(comm *c, const backend *be, int failed) {
    comm_dev *d = c ? c->dev : NULL;
    if (!d) return;
    if (failed && !d->failed) {  // wake ranks that wait for this one inside a transfer
        d->failed = 1;
        if (d->ops->cancel) d->ops->cancel(d);
    }
    if (d->pending == be) {  // nothing queued may outlive the backend
        rc_err ignored;
        if (!d->failed && d->ops->drain) d->ops->drain(d, be, &ignored);
        d->pending = NULL;
    }
    if (d->ops->release) d->ops->release(d, be);
    if (--d->n_users > 0) return;
    c->dev = NULL;
    d->ops->destroy(d);
}
