#include "model/fingerprint.h"

#include <stdio.h>

#include "core/hash.h"

uint64_t model_fingerprint(const gguf_file *f) {
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)((uint64_t)f->n_bytes >> (8 * i));
    uint64_t h = fnv1a(FNV1A_INIT, size_le, sizeof(size_le));
    // gguf_open checked data_offset <= n_bytes; clamp anyway for in-memory images.
    const uint64_t n = f->n_bytes, data = f->data_offset < n ? f->data_offset : n, n_data = n - data;
    h = fnv1a(h, f->map, (size_t)data);
    if (n_data <= 2 * MODEL_FP_DATA_BYTES) return fnv1a(h, f->map + data, (size_t)n_data);
    h = fnv1a(h, f->map + data, (size_t)MODEL_FP_DATA_BYTES);
    return fnv1a(h, f->map + n - MODEL_FP_DATA_BYTES, (size_t)MODEL_FP_DATA_BYTES);
}

void model_fingerprint_hex(const gguf_file *f, char *buf) {
    snprintf(buf, 17, "%016llx", (unsigned long long)model_fingerprint(f));
}
