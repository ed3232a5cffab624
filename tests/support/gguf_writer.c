#include "gguf_writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

#define MAX_STORED_DIMS 8

size_t gguf_raw_put_u32(uint8_t *dst, uint32_t v) {
    for (int i = 0; i < 4; i++) dst[i] = (uint8_t)(v >> (8 * i));  // GGUF is little-endian
    return 4;
}

size_t gguf_raw_put_u64(uint8_t *dst, uint64_t v) {
    for (int i = 0; i < 8; i++) dst[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

size_t gguf_raw_put_str(uint8_t *dst, const char *s) {
    size_t n = strlen(s);
    gguf_raw_put_u64(dst, n);
    memcpy(dst + 8, s, n);
    return 8 + n;
}

void gguf_writer_init(gguf_writer *w) {
    memset(w, 0, sizeof(*w));
    memcpy(w->magic, "GGUF", 4);
    w->version = 3;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->n_kv_override = GGUF_WRITER_NO_OVERRIDE;
    w->n_tensors_override = GGUF_WRITER_NO_OVERRIDE;
    w->truncate_at = GGUF_WRITER_NO_OVERRIDE;
}

void gguf_writer_free(gguf_writer *w) {
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w->kv_bytes);
    memset(w, 0, sizeof(*w));
}

// Reserves n_bytes at the end of the metadata buffer; NULL after OOM.
static uint8_t *kv_grow(gguf_writer *w, size_t n_bytes) {
    if (w->oom) return NULL;
    if (w->kv_n_bytes + n_bytes > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 256;
        while (cap < w->kv_n_bytes + n_bytes) cap *= 2;
        uint8_t *p = realloc(w->kv_bytes, cap);
        if (!p) {
            w->oom = 1;
            return NULL;
        }
        w->kv_bytes = p;
        w->kv_cap = cap;
    }
    uint8_t *dst = w->kv_bytes + w->kv_n_bytes;
    w->kv_n_bytes += n_bytes;
    return dst;
}

static void put_bytes(gguf_writer *w, const void *src, size_t n) {
    uint8_t *dst = kv_grow(w, n);
    if (dst && n) memcpy(dst, src, n);
}

static void put_u32(gguf_writer *w, uint32_t v) {
    uint8_t b[4];
    gguf_raw_put_u32(b, v);
    put_bytes(w, b, 4);
}

static void put_u64(gguf_writer *w, uint64_t v) {
    uint8_t b[8];
    gguf_raw_put_u64(b, v);
    put_bytes(w, b, 8);
}

static void put_strn(gguf_writer *w, const char *s, size_t n) {
    put_u64(w, n);
    put_bytes(w, s, n);
}

static size_t value_bytes(uint32_t type) {
    switch (type) {
    case GGUF_VAL_UINT8: case GGUF_VAL_INT8: case GGUF_VAL_BOOL: return 1;
    case GGUF_VAL_UINT16: case GGUF_VAL_INT16: return 2;
    case GGUF_VAL_UINT32: case GGUF_VAL_INT32: case GGUF_VAL_FLOAT32: return 4;
    case GGUF_VAL_UINT64: case GGUF_VAL_INT64: case GGUF_VAL_FLOAT64: return 8;
    default: return 0;
    }
}

// Writes a scalar of `type` whose bytes are the low value_bytes(type) bytes of
// `bits`, little-endian.
static void add_scalar(gguf_writer *w, const char *key, uint32_t type, uint64_t bits) {
    put_strn(w, key, strlen(key));
    put_u32(w, type);
    uint8_t b[8];
    gguf_raw_put_u64(b, bits);
    put_bytes(w, b, value_bytes(type));
    w->n_kv++;
}

void gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v) { add_scalar(w, key, GGUF_VAL_UINT8, v); }
void gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v) { add_scalar(w, key, GGUF_VAL_INT8, (uint8_t)v); }
void gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v) { add_scalar(w, key, GGUF_VAL_UINT16, v); }
void gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v) { add_scalar(w, key, GGUF_VAL_INT16, (uint16_t)v); }
void gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v) { add_scalar(w, key, GGUF_VAL_INT32, (uint32_t)v); }
void gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v) { add_scalar(w, key, GGUF_VAL_UINT64, v); }
void gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v) { add_scalar(w, key, GGUF_VAL_INT64, (uint64_t)v); }
void gguf_writer_add_bool(gguf_writer *w, const char *key, int v) { add_scalar(w, key, GGUF_VAL_BOOL, v != 0); }

void gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v) {
    add_scalar(w, key, GGUF_VAL_UINT32, v);
    // The data section follows the alignment the file declares; a bad value
    // (0, not a power of two) is still written, for the reader's tests.
    if (strcmp(key, "general.alignment") == 0 && v != 0 && (v & (v - 1)) == 0) w->alignment = v;
}

void gguf_writer_add_f32(gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    add_scalar(w, key, GGUF_VAL_FLOAT32, bits);
}

void gguf_writer_add_f64(gguf_writer *w, const char *key, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    add_scalar(w, key, GGUF_VAL_FLOAT64, bits);
}

void gguf_writer_add_strn(gguf_writer *w, const char *key, const char *v, size_t n_bytes) {
    put_strn(w, key, strlen(key));
    put_u32(w, GGUF_VAL_STRING);
    put_strn(w, v, n_bytes);
    w->n_kv++;
}

void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v) { gguf_writer_add_strn(w, key, v, strlen(v)); }

void gguf_writer_add_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *elems, uint64_t n_elems) {
    put_strn(w, key, strlen(key));
    put_u32(w, GGUF_VAL_ARRAY);
    put_u32(w, elem_type);
    put_u64(w, n_elems);
    // Element bytes are copied as the host stores them: tests run on
    // little-endian hosts, which is what GGUF stores.
    put_bytes(w, elems, (size_t)n_elems * value_bytes(elem_type));
    w->n_kv++;
}

void gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n_elems) {
    put_strn(w, key, strlen(key));
    put_u32(w, GGUF_VAL_ARRAY);
    put_u32(w, GGUF_VAL_STRING);
    put_u64(w, n_elems);
    for (uint64_t i = 0; i < n_elems; i++) put_strn(w, strs[i], strlen(strs[i]));
    w->n_kv++;
}

void gguf_writer_add_raw_kv(gguf_writer *w, const void *bytes, size_t n_bytes) {
    put_bytes(w, bytes, n_bytes);
    w->n_kv++;
}

size_t gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                              const void *data, size_t n_bytes) {
    if (w->oom) return 0;
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 16;
        gguf_writer_tensor *p = realloc(w->tensors, cap * sizeof(*p));
        if (!p) {
            w->oom = 1;
            return 0;
        }
        w->tensors = p;
        w->tensors_cap = cap;
    }
    gguf_writer_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof(*t));
    size_t name_len = strlen(name);
    t->name = malloc(name_len + 1);
    t->data = malloc(n_bytes ? n_bytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        w->oom = 1;
        return 0;
    }
    memcpy(t->name, name, name_len + 1);
    if (n_bytes) memcpy(t->data, data, n_bytes);
    t->n_bytes = n_bytes;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims && d < MAX_STORED_DIMS; d++) t->ne[d] = (uint64_t)ne[d];
    t->type = type;
    t->offset_override = GGUF_WRITER_NO_OVERRIDE;
    return w->n_tensors++;
}

int64_t gguf_writer_find_tensor(const gguf_writer *w, const char *name) {
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return (int64_t)i;
    return -1;
}

static size_t align_up(size_t x, uint64_t a) { return (size_t)((x + a - 1) / a * a); }

static size_t tensor_info_bytes(const gguf_writer_tensor *t) {
    uint32_t n_dims = t->n_dims < MAX_STORED_DIMS ? t->n_dims : MAX_STORED_DIMS;
    return 8 + strlen(t->name) + 4 + 8 * (size_t)n_dims + 4 + 8;
}

int gguf_writer_write_memory(const gguf_writer *w, uint8_t **out, size_t *n_bytes, gguf_writer_layout *layout,
                             rc_err *err) {
    *out = NULL;
    *n_bytes = 0;
    if (layout) memset(layout, 0, sizeof(*layout));
    if (w->oom) return rc_fail(err, "gguf_writer: out of memory while building the file");

    // Layout first, so the buffer is allocated once.
    size_t header = 4 + 4 + 8 + 8 + w->kv_n_bytes;
    for (size_t i = 0; i < w->n_tensors; i++) header += tensor_info_bytes(&w->tensors[i]);
    size_t data_offset = align_up(header, w->alignment);
    size_t *offsets = calloc(w->n_tensors ? w->n_tensors : 1, sizeof(size_t));
    if (!offsets) return rc_fail(err, "gguf_writer: out of memory");
    size_t pos = 0, data_end = data_offset;
    for (size_t i = 0; i < w->n_tensors; i++) {
        offsets[i] = pos;
        data_end = data_offset + pos + w->tensors[i].n_bytes;
        pos = align_up(pos + w->tensors[i].n_bytes, w->alignment);  // ggml pads every tensor, the last one too
    }
    size_t total = data_offset + pos;

    uint8_t *buf = calloc(total ? total : 1, 1);  // zeroed: padding bytes are 0
    if (!buf) {
        free(offsets);
        return rc_fail(err, "gguf_writer: out of memory (%zu bytes)", total);
    }
    uint8_t *p = buf;
    memcpy(p, w->magic, 4);
    p += 4;
    p += gguf_raw_put_u32(p, w->version);
    p += gguf_raw_put_u64(p, w->n_tensors_override != GGUF_WRITER_NO_OVERRIDE ? w->n_tensors_override : w->n_tensors);
    p += gguf_raw_put_u64(p, w->n_kv_override != GGUF_WRITER_NO_OVERRIDE ? w->n_kv_override : w->n_kv);
    if (w->kv_n_bytes) memcpy(p, w->kv_bytes, w->kv_n_bytes);
    p += w->kv_n_bytes;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gguf_writer_tensor *t = &w->tensors[i];
        p += gguf_raw_put_str(p, t->name);
        p += gguf_raw_put_u32(p, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && d < MAX_STORED_DIMS; d++) p += gguf_raw_put_u64(p, t->ne[d]);
        p += gguf_raw_put_u32(p, t->type);
        p += gguf_raw_put_u64(p, t->offset_override != GGUF_WRITER_NO_OVERRIDE ? t->offset_override : offsets[i]);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        if (w->tensors[i].n_bytes) memcpy(buf + data_offset + offsets[i], w->tensors[i].data, w->tensors[i].n_bytes);

    if (layout) {
        layout->header_bytes = header;
        layout->data_offset = data_offset;
        layout->data_end = data_end;
        layout->total_bytes = total;
        layout->tensor_offsets = offsets;
    } else {
        free(offsets);
    }
    *out = buf;
    *n_bytes = w->truncate_at < total ? (size_t)w->truncate_at : total;
    return 0;
}

void gguf_writer_layout_free(gguf_writer_layout *layout) {
    free(layout->tensor_offsets);
    memset(layout, 0, sizeof(*layout));
}

int gguf_writer_write_file(const gguf_writer *w, const char *path, gguf_writer_layout *layout, rc_err *err) {
    uint8_t *buf;
    size_t n;
    if (gguf_writer_write_memory(w, &buf, &n, layout, err)) return -1;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        int e = errno;
        free(buf);
        if (layout) gguf_writer_layout_free(layout);
        return rc_fail(err, "%s: cannot create: %s", path, strerror(e));
    }
    size_t written = n ? fwrite(buf, 1, n, fp) : 0;
    int close_failed = fclose(fp) != 0;
    free(buf);
    if (written != n || close_failed) {
        if (layout) gguf_writer_layout_free(layout);
        return rc_fail(err, "%s: write failed", path);
    }
    return 0;
}

// Walks the serialized entries (all written by this writer, so well formed).
uint8_t *gguf_writer_find_value(gguf_writer *w, const char *key, uint32_t *type) {
    size_t pos = 0, key_len = strlen(key);
    for (uint64_t i = 0; i < w->n_kv && pos + 12 <= w->kv_n_bytes; i++) {
        uint64_t n;
        memcpy(&n, w->kv_bytes + pos, 8);
        const int match = n == key_len && memcmp(w->kv_bytes + pos + 8, key, key_len) == 0;
        pos += 8 + (size_t)n;
        uint32_t t;
        memcpy(&t, w->kv_bytes + pos, 4);
        pos += 4;
        if (match) {
            *type = t;
            return w->kv_bytes + pos;
        }
        if (t == GGUF_VAL_STRING) {
            memcpy(&n, w->kv_bytes + pos, 8);
            pos += 8 + (size_t)n;
        } else if (t == GGUF_VAL_ARRAY) {
            uint32_t et;
            memcpy(&et, w->kv_bytes + pos, 4);
            memcpy(&n, w->kv_bytes + pos + 4, 8);
            pos += 12;
            for (uint64_t j = 0; j < n; j++) {
                if (et == GGUF_VAL_STRING) {
                    uint64_t m;
                    memcpy(&m, w->kv_bytes + pos, 8);
                    pos += 8 + (size_t)m;
                } else {
                    pos += value_bytes(et);
                }
            }
        } else {
            pos += value_bytes(t);
        }
    }
    return NULL;
}
