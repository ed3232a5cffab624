#define _GNU_SOURCE  // memfd_create
#include "fuzz_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/quant.h"

_Noreturn void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz: property violated: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

const char *fuzz_scratch_file(const uint8_t *data, size_t n_bytes) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("recall-fuzz", 0);
        if (fd < 0) fuzz_fail("memfd_create failed");
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) fuzz_fail("ftruncate failed");
    size_t done = 0;
    while (done < n_bytes) {
        ssize_t got = pwrite(fd, data + done, n_bytes - done, (off_t)done);
        if (got <= 0) fuzz_fail("pwrite failed");
        done += (size_t)got;
    }
    return path;
}

uint8_t *fuzz_aligned_copy(const uint8_t *data, size_t n_bytes) {
    uint8_t *p = aligned_alloc(64, (n_bytes + 63) / 64 * 64 + 64);
    if (!p) fuzz_fail("out of memory");
    if (n_bytes) memcpy(p, data, n_bytes);
    return p;
}

static void check_weight(const model *m, const weight *w, const char *what) {
    const gguf_file *f = &m->file;
    const uint8_t *lo = f->map, *hi = f->map + f->n_bytes, *p = w->data;
    if (w->n_in < 1 || w->n_out < 1) fuzz_fail("%s: empty shape", what);
    if (w->row_bytes != ggml_row_bytes(w->type, w->n_in)) fuzz_fail("%s: row bytes", what);
    if (p < lo || p > hi || w->row_bytes * (size_t)w->n_out > (size_t)(hi - p)) fuzz_fail("%s: outside the file", what);
    float *row = malloc((size_t)w->n_in * sizeof(float));
    if (!row) fuzz_fail("out of memory");
    dequantize_row(w->type, p, row, w->n_in);
    dequantize_row(w->type, p + w->row_bytes * (size_t)(w->n_out - 1), row, w->n_in);
    free(row);
}

void fuzz_check_model(const model *m) {
    const model_config *c = &m->cfg;
    if (c->n_layer < 1 || c->n_layer > MODEL_MAX_LAYERS || c->d_model < 1 || c->d_model > MODEL_MAX_DIM ||
        c->ffn_dim < 1 || c->ffn_dim > MODEL_MAX_DIM || c->n_head < 1 || c->n_head > MODEL_MAX_HEADS ||
        c->n_head_kv < 1 || c->n_head % c->n_head_kv != 0 || c->head_dim < 2 || c->head_dim > MODEL_MAX_DIM ||
        c->n_vocab < 1 || c->n_vocab > MODEL_MAX_VOCAB || c->rope_dim < 2 || c->rope_dim > c->head_dim)
        fuzz_fail("model dimensions out of bounds");
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps)) fuzz_fail("rms_eps %g", c->rms_eps);
    if (!(c->rope_base > 0.0f) || !isfinite(c->rope_base)) fuzz_fail("rope_base %g", c->rope_base);
    for (int64_t i = 0; i < c->rope_dim / 2; i++)
        if (!isfinite(m->rope_inv_freq[i]) || m->rope_inv_freq[i] < 0.0f)
            fuzz_fail("rope_inv_freq[%lld] = %g", (long long)i, m->rope_inv_freq[i]);
    check_weight(m, &m->tok_embd, "token_embd");
    check_weight(m, &m->output, "output");
    for (int64_t l = 0; l < c->n_layer; l++) {
        const layer_weights *L = &m->layers[l];
        const weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) check_weight(m, ws[i], "layer weight");
    }
}

const char *fuzz_model_path(void) {
    const char *env = getenv("RECALL_MODEL");
    return env && *env ? env : RECALL_MODEL_PATH;
}
