// Instances of a backend table: what every backend shares at init and shutdown.
#include "backend/backend.h"

int backend_init(backend *b, const backend_ops *ops, int n_threads, int device, rc_err *err) {
    *b = (backend){.ops = ops, .n_threads = n_threads > 0 ? n_threads : 1, .device = device};
    if (ops->init && ops->init(b, device, err)) {
        *b = (backend){0};
        return -1;
    }
    return 0;
}

void backend_shutdown(backend *b) {
    if (b->ops && b->ops->shutdown) b->ops->shutdown(b);
    *b = (backend){0};
}

void *backend_upload_new(const backend *b, const void *src_host, size_t n_bytes) {
    void *p = b->ops->alloc(b, n_bytes);
    if (p && n_bytes) b->ops->upload(b, p, src_host, n_bytes);
    return p;
}
