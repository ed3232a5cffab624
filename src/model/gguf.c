#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/quant.h"

// Sanity caps: far above any real model, low enough that a corrupt count
// cannot make us allocate terabytes before the bounds checks catch it.
#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_KV (1u << 20)

// Names are printed with %.*s; cap the precision so a huge length cannot go negative.
#define NAME_LEN(s) ((int)((s).n_bytes < 256 ? (s).n_bytes : 256))

typedef struct cursor {
    const uint8_t *base;
    size_t n_bytes;
    size_t pos;
    const char *name;
    rc_err *err;
} cursor;

static int need(cursor *c, uint64_t n_bytes, const char *what) {
    if (n_bytes > c->n_bytes - c->pos)
        return rc_fail(c->err, "%s: truncated file: %s at offset %zu needs %llu bytes, only %zu left",
                       c->name, what, c->pos, (unsigned long long)n_bytes, c->n_bytes - c->pos);
    return 0;
}

static int read_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    memcpy(v, c->base + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    memcpy(v, c->base + c->pos, 8);
    c->pos += 8;
    return 0;
}

static int read_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t n;
    if (read_u64(c, &n, what)) return -1;
    if (need(c, n, what)) return -1;
    s->ptr = (const char *)c->base + c->pos;
    s->n_bytes = n;
    c->pos += n;
    return 0;
}

static size_t scalar_bytes(uint32_t type) {
    switch (type) {
    case GGUF_VAL_UINT8: case GGUF_VAL_INT8: case GGUF_VAL_BOOL: return 1;
    case GGUF_VAL_UINT16: case GGUF_VAL_INT16: return 2;
    case GGUF_VAL_UINT32: case GGUF_VAL_INT32: case GGUF_VAL_FLOAT32: return 4;
    case GGUF_VAL_UINT64: case GGUF_VAL_INT64: case GGUF_VAL_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_value_type_name(uint32_t type) {
    static const char *names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                  "bool", "string", "array", "uint64", "int64", "float64"};
    return type < GGUF_VAL_COUNT ? names[type] : "unknown";
}

static int parse_kv(cursor *c, gguf_kv *kv) {
    if (read_str(c, &kv->key, "metadata key")) return -1;
    if (read_u32(c, &kv->type, "metadata value type")) return -1;
    if (kv->type == GGUF_VAL_ARRAY) {
        if (read_u32(c, &kv->arr_type, "array element type")) return -1;
        if (read_u64(c, &kv->arr_len, "array length")) return -1;
        kv->data = c->base + c->pos;
        if (kv->arr_type == GGUF_VAL_STRING) {
            // Strings are variable length: index them once so lookups are O(1).
            if (kv->arr_len > (c->n_bytes - c->pos) / 8)
                return rc_fail(c->err, "%s: metadata '%.*s': string array length %llu exceeds the file",
                               c->name, NAME_LEN(kv->key), kv->key.ptr, (unsigned long long)kv->arr_len);
            kv->str_offsets = malloc((size_t)(kv->arr_len ? kv->arr_len : 1) * sizeof(uint64_t));
            if (!kv->str_offsets) return rc_fail(c->err, "%s: out of memory", c->name);
            for (uint64_t i = 0; i < kv->arr_len; i++) {
                kv->str_offsets[i] = (uint64_t)(c->base + c->pos - kv->data);
                gguf_str s;
                if (read_str(c, &s, "string array element")) return -1;
            }
        } else {
            size_t elem = scalar_bytes(kv->arr_type);
            if (elem == 0)
                return rc_fail(c->err, "%s: metadata '%.*s': unsupported array element type %u", c->name,
                               NAME_LEN(kv->key), kv->key.ptr, kv->arr_type);
            if (kv->arr_len > (c->n_bytes - c->pos) / elem)
                return rc_fail(c->err, "%s: truncated file: metadata '%.*s' array of %llu elements", c->name,
                               NAME_LEN(kv->key), kv->key.ptr, (unsigned long long)kv->arr_len);
            c->pos += (size_t)kv->arr_len * elem;
        }
        return 0;
    }
    kv->data = c->base + c->pos;
    if (kv->type == GGUF_VAL_STRING) {
        gguf_str s;
        return read_str(c, &s, "metadata string");
    }
    size_t n = scalar_bytes(kv->type);
    if (n == 0)
        return rc_fail(c->err, "%s: metadata '%.*s': unknown value type %u", c->name, (int)kv->key.n_bytes,
                       kv->key.ptr, kv->type);
    if (need(c, n, "metadata value")) return -1;
    c->pos += n;
    return 0;
}

static int parse_tensor_info(cursor *c, gguf_tensor *t) {
    if (read_str(c, &t->name, "tensor name")) return -1;
    if (read_u32(c, &t->n_dims, "tensor dimension count")) return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return rc_fail(c->err, "%s: tensor '%.*s' has %u dimensions (1..%d allowed)", c->name,
                       NAME_LEN(t->name), t->name.ptr, t->n_dims, GGUF_MAX_DIMS);
    int64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (read_u64(c, &ne, "tensor dimension")) return -1;
        if (ne == 0 || ne > (uint64_t)INT64_MAX / (uint64_t)n_elems)
            return rc_fail(c->err, "%s: tensor '%.*s' has invalid dimension %llu", c->name,
                           NAME_LEN(t->name), t->name.ptr, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        n_elems *= (int64_t)ne;
    }
    t->n_elems = n_elems;
    if (read_u32(c, &t->type, "tensor type")) return -1;
    if (read_u64(c, &t->offset, "tensor offset")) return -1;
    const ggml_type_info *ti = ggml_type_get(t->type);
    if (!ti)
        return rc_fail(c->err, "%s: tensor '%.*s' has unknown tensor type %u", c->name, NAME_LEN(t->name),
                       t->name.ptr, t->type);
    if (t->ne[0] % ti->block_elems != 0)
        return rc_fail(c->err, "%s: tensor '%.*s': row length %lld is not a multiple of the %s block size %lld",
                       c->name, NAME_LEN(t->name), t->name.ptr, (long long)t->ne[0], ti->name,
                       (long long)ti->block_elems);
    uint64_t n_blocks = (uint64_t)n_elems / (uint64_t)ti->block_elems;
    if (n_blocks > UINT64_MAX / ti->block_bytes)
        return rc_fail(c->err, "%s: tensor '%.*s' is impossibly large", c->name, NAME_LEN(t->name), t->name.ptr);
    t->n_bytes = (size_t)(n_blocks * ti->block_bytes);
    return 0;
}


static int cmp_str(const gguf_str *a, const gguf_str *b) {
    if (a->n_bytes != b->n_bytes) return a->n_bytes < b->n_bytes ? -1 : 1;
    return memcmp(a->ptr, b->ptr, a->n_bytes);
}
static int cmp_str_ptr(const void *a, const void *b) { return cmp_str(*(const gguf_str *const *)a, *(const gguf_str *const *)b); }

// Duplicate metadata keys or tensor names make lookups ambiguous: reject them.
// Sorting pointers keeps this O(n log n) for files with many tensors.
static int check_unique(const gguf_file *f, rc_err *err) {
    uint64_t n_max = f->n_kv > f->n_tensors ? f->n_kv : f->n_tensors;
    const gguf_str **v = malloc((size_t)(n_max ? n_max : 1) * sizeof(*v));
    if (!v) return rc_fail(err, "%s: out of memory", f->path);
    for (int pass = 0; pass < 2; pass++) {
        uint64_t n = pass == 0 ? f->n_kv : f->n_tensors;
        for (uint64_t i = 0; i < n; i++) v[i] = pass == 0 ? &f->kvs[i].key : &f->tensors[i].name;
        qsort(v, (size_t)n, sizeof(*v), cmp_str_ptr);
        for (uint64_t i = 1; i < n; i++)
            if (cmp_str(v[i - 1], v[i]) == 0) {
                rc_fail(err, "%s: duplicate %s '%.*s'", f->path, pass == 0 ? "metadata key" : "tensor name",
                        NAME_LEN(*v[i]), v[i]->ptr);
                free(v);
                return -1;
            }
    }
    free(v);
    return 0;
}

static int parse(gguf_file *f, rc_err *err) {
    cursor c = {.base = f->map, .n_bytes = f->n_bytes, .pos = 0, .name = f->path, .err = err};
    if (f->n_bytes < 4 || memcmp(f->map, "GGUF", 4) != 0) return rc_fail(err, "%s: not a GGUF file (bad magic)", f->path);
    c.pos = 4;
    if (read_u32(&c, &f->version, "header version")) return -1;
    if (f->version != 2 && f->version != 3)
        return rc_fail(err, "%s: unsupported GGUF version %u (2 and 3 are supported)", f->path, f->version);
    if (read_u64(&c, &f->n_tensors, "header tensor count")) return -1;
    if (read_u64(&c, &f->n_kv, "header metadata count")) return -1;
    if (f->n_tensors > GGUF_MAX_TENSORS || f->n_kv > GGUF_MAX_KV)
        return rc_fail(err, "%s: implausible header (%llu tensors, %llu metadata entries)", f->path,
                       (unsigned long long)f->n_tensors, (unsigned long long)f->n_kv);
    f->kvs = calloc((size_t)f->n_kv + 1, sizeof(gguf_kv));
    f->tensors = calloc((size_t)f->n_tensors + 1, sizeof(gguf_tensor));
    if (!f->kvs || !f->tensors) return rc_fail(err, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (parse_kv(&c, &f->kvs[i])) return -1;

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_VAL_UINT32) return rc_fail(err, "%s: general.alignment must be uint32", f->path);
        uint32_t a;
        memcpy(&a, al->data, 4);
        // The kernels read F32 values and F16 scales through typed pointers, so
        // tensor data must be at least GGUF_MIN_ALIGNMENT-aligned.
        if (a < GGUF_MIN_ALIGNMENT || (a & (a - 1)) != 0)
            return rc_fail(err, "%s: general.alignment %u is not a power of two of at least %d", f->path, a,
                           GGUF_MIN_ALIGNMENT);
        f->alignment = a;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (parse_tensor_info(&c, &f->tensors[i])) return -1;

    uint64_t data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (data_offset > f->n_bytes && f->n_tensors > 0)
        return rc_fail(err, "%s: truncated file: tensor data section would start at offset %llu past the end (%zu bytes)",
                       f->path, (unsigned long long)data_offset, f->n_bytes);
    f->data_offset = data_offset;
    uint64_t data_bytes = f->n_bytes > data_offset ? f->n_bytes - data_offset : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return rc_fail(err, "%s: tensor '%.*s' offset %llu is not aligned to %llu", f->path, NAME_LEN(t->name),
                           t->name.ptr, (unsigned long long)t->offset, (unsigned long long)f->alignment);
        if (t->offset > data_bytes || t->n_bytes > data_bytes - t->offset)
            return rc_fail(err, "%s: truncated tensor data: tensor '%.*s' spans bytes %llu..%llu of the data section, "
                           "which ends at %llu (file offset %llu)", f->path, NAME_LEN(t->name), t->name.ptr,
                           (unsigned long long)t->offset, (unsigned long long)(t->offset + t->n_bytes),
                           (unsigned long long)data_bytes, (unsigned long long)(data_offset + t->offset));
        t->data = f->map + data_offset + t->offset;
    }
    if (check_unique(f, err)) return -1;
    return 0;
}

static void free_tables(gguf_file *f) {
    if (f->kvs)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kvs[i].str_offsets);
    free(f->kvs);
    free(f->tensors);
    f->kvs = NULL;
    f->tensors = NULL;
}

int gguf_open_memory(gguf_file *f, const void *data, size_t n_bytes, const char *name, rc_err *err) {
    memset(f, 0, sizeof(*f));
    f->path = name;
    f->map = data;
    f->n_bytes = n_bytes;
    if (parse(f, err)) {
        free_tables(f);
        memset(f, 0, sizeof(*f));
        return -1;
    }
    return 0;
}

int gguf_open(gguf_file *f, const char *path, rc_err *err) {
    memset(f, 0, sizeof(*f));
    int fd = open(path, O_RDONLY);
    if (fd < 0) return rc_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return rc_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return rc_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return rc_fail(err, "%s: not a GGUF file (only %lld bytes)", path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return rc_fail(err, "%s: mmap failed: %s", path, strerror(errno));
    if (gguf_open_memory(f, map, (size_t)st.st_size, path, err)) {
        munmap(map, (size_t)st.st_size);
        return -1;
    }
    f->path = path;
    f->owns_map = 1;
    return 0;
}

void gguf_close(gguf_file *f) {
    free_tables(f);
    if (f->owns_map && f->map) munmap((void *)f->map, f->n_bytes);
    memset(f, 0, sizeof(*f));
}

int gguf_str_eq(gguf_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.n_bytes == n && memcmp(s.ptr, cstr, n) == 0;
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kvs[i].key, key)) return &f->kvs[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static double scalar_value(uint32_t type, const uint8_t *p) {
    switch (type) {
    case GGUF_VAL_UINT8: return *p;
    case GGUF_VAL_INT8: return (int8_t)*p;
    case GGUF_VAL_BOOL: return *p != 0;
    case GGUF_VAL_UINT16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_VAL_INT16: { int16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_VAL_UINT32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_VAL_INT32: { int32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_VAL_FLOAT32: { float v; memcpy(&v, p, 4); return v; }
    case GGUF_VAL_UINT64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case GGUF_VAL_INT64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case GGUF_VAL_FLOAT64: { double v; memcpy(&v, p, 8); return v; }
    default: return NAN;
    }
}

static int is_integer_type(uint32_t t) {
    return t == GGUF_VAL_UINT8 || t == GGUF_VAL_INT8 || t == GGUF_VAL_UINT16 || t == GGUF_VAL_INT16 ||
           t == GGUF_VAL_UINT32 || t == GGUF_VAL_INT32 || t == GGUF_VAL_UINT64 || t == GGUF_VAL_INT64;
}

static const gguf_kv *lookup(const gguf_file *f, const char *key, int optional, rc_err *err, int *missing) {
    const gguf_kv *kv = gguf_find(f, key);
    *missing = kv == NULL;
    if (!kv && !optional) rc_fail(err, "%s: missing metadata key '%s'", f->path, key);
    return kv;
}

static int get_u32(const gguf_file *f, const char *key, uint32_t *out, int optional, rc_err *err) {
    int missing;
    const gguf_kv *kv = lookup(f, key, optional, err, &missing);
    if (!kv) return missing && optional ? 0 : -1;
    if (!is_integer_type(kv->type))
        return rc_fail(err, "%s: metadata '%s' has type %s, expected an integer", f->path, key,
                       gguf_value_type_name(kv->type));
    double v = scalar_value(kv->type, kv->data);
    if (v < 0 || v > 4294967295.0) return rc_fail(err, "%s: metadata '%s' = %.0f is out of range", f->path, key, v);
    *out = (uint32_t)v;
    return 0;
}

static int get_f32(const gguf_file *f, const char *key, float *out, int optional, rc_err *err) {
    int missing;
    const gguf_kv *kv = lookup(f, key, optional, err, &missing);
    if (!kv) return missing && optional ? 0 : -1;
    if (kv->type != GGUF_VAL_FLOAT32 && kv->type != GGUF_VAL_FLOAT64 && !is_integer_type(kv->type))
        return rc_fail(err, "%s: metadata '%s' has type %s, expected a number", f->path, key,
                       gguf_value_type_name(kv->type));
    double v = scalar_value(kv->type, kv->data);
    if (!isfinite(v) || !isfinite((float)v))
        return rc_fail(err, "%s: metadata '%s' is not finite (as a float32)", f->path, key);
    *out = (float)v;
    return 0;
}

static int get_bool(const gguf_file *f, const char *key, int *out, int optional, rc_err *err) {
    int missing;
    const gguf_kv *kv = lookup(f, key, optional, err, &missing);
    if (!kv) return missing && optional ? 0 : -1;
    if (kv->type != GGUF_VAL_BOOL && !is_integer_type(kv->type))
        return rc_fail(err, "%s: metadata '%s' has type %s, expected bool", f->path, key,
                       gguf_value_type_name(kv->type));
    *out = scalar_value(kv->type, kv->data) != 0;
    return 0;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, rc_err *err) { return get_u32(f, key, out, 0, err); }
int gguf_opt_u32(const gguf_file *f, const char *key, uint32_t *out, rc_err *err) { return get_u32(f, key, out, 1, err); }
int gguf_get_f32(const gguf_file *f, const char *key, float *out, rc_err *err) { return get_f32(f, key, out, 0, err); }
int gguf_opt_f32(const gguf_file *f, const char *key, float *out, rc_err *err) { return get_f32(f, key, out, 1, err); }
int gguf_get_bool(const gguf_file *f, const char *key, int *out, rc_err *err) { return get_bool(f, key, out, 0, err); }
int gguf_opt_bool(const gguf_file *f, const char *key, int *out, rc_err *err) { return get_bool(f, key, out, 1, err); }

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, rc_err *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return rc_fail(err, "%s: missing metadata key '%s'", f->path, key);
    if (kv->type != GGUF_VAL_STRING)
        return rc_fail(err, "%s: metadata '%s' has type %s, expected string", f->path, key,
                       gguf_value_type_name(kv->type));
    uint64_t n;
    memcpy(&n, kv->data, 8);
    out->ptr = (const char *)kv->data + 8;
    out->n_bytes = n;
    return 0;
}

gguf_str gguf_arr_str(const gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->data + kv->str_offsets[i];
    uint64_t n;
    memcpy(&n, p, 8);
    return (gguf_str){.ptr = (const char *)p + 8, .n_bytes = n};
}

double gguf_arr_num(const gguf_kv *kv, uint64_t i) {
    return scalar_value(kv->arr_type, kv->data + i * scalar_bytes(kv->arr_type));
}
