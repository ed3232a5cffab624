// GGUF v2/v3 reader over a read-only mmap. Every count, offset and size in the
// file is validated against the file length before it is used, so a hostile or
// truncated file produces an error, never an out-of-bounds read.
#ifndef RECALL_MODEL_GGUF_H
#define RECALL_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum gguf_value_type {
    GGUF_VAL_UINT8 = 0, GGUF_VAL_INT8 = 1, GGUF_VAL_UINT16 = 2, GGUF_VAL_INT16 = 3,
    GGUF_VAL_UINT32 = 4, GGUF_VAL_INT32 = 5, GGUF_VAL_FLOAT32 = 6, GGUF_VAL_BOOL = 7,
    GGUF_VAL_STRING = 8, GGUF_VAL_ARRAY = 9, GGUF_VAL_UINT64 = 10, GGUF_VAL_INT64 = 11,
    GGUF_VAL_FLOAT64 = 12,
    GGUF_VAL_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
// general.alignment must be a power of two >= this (writers use 32).
#define GGUF_MIN_ALIGNMENT 8

// A string inside the mapping: not NUL-terminated.
typedef struct gguf_str {
    const char *ptr;
    uint64_t n_bytes;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;           // enum gguf_value_type
    uint32_t arr_type;       // element type when type == GGUF_VAL_ARRAY
    uint64_t arr_len;        // element count when type == GGUF_VAL_ARRAY
    const uint8_t *data;     // scalar value, or the first array element
    uint64_t *str_offsets;   // string arrays: byte offset of each element from data (owned)
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];  // ne[0] is the contiguous (row) dimension; unused dims are 1
    uint32_t type;              // enum ggml_type (model/quant.h)
    uint64_t offset;            // relative to the data section
    const void *data;           // borrowed view into the mapping
    size_t n_bytes;
    int64_t n_elems;
} gguf_tensor;

typedef struct gguf_file {
    const char *path;           // borrowed from the caller
    const uint8_t *map;
    size_t n_bytes;
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kvs;               // owned
    uint64_t n_tensors;
    gguf_tensor *tensors;       // owned
    uint64_t alignment;
    uint64_t data_offset;       // start of the tensor data section
    int owns_map;               // opened by gguf_open: munmap on close
} gguf_file;

// Maps and validates the whole file. On failure everything is released and
// err says what is wrong, starting with the path.
int gguf_open(gguf_file *f, const char *path, rc_err *err);
// Parses an in-memory image (not copied; must outlive f). Used by tests.
int gguf_open_memory(gguf_file *f, const void *data, size_t n_bytes, const char *name, rc_err *err);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
int gguf_str_eq(gguf_str s, const char *cstr);

// Typed getters: return 0 and write *out, or -1 with err when the key is
// missing or has an incompatible type. Integer getters accept any integer type
// whose value fits.
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, rc_err *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, rc_err *err);
int gguf_get_bool(const gguf_file *f, const char *key, int *out, rc_err *err);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, rc_err *err);
// Optional variants: a missing key leaves *out untouched and returns 0.
int gguf_opt_u32(const gguf_file *f, const char *key, uint32_t *out, rc_err *err);
int gguf_opt_f32(const gguf_file *f, const char *key, float *out, rc_err *err);
int gguf_opt_bool(const gguf_file *f, const char *key, int *out, rc_err *err);

// Array element access (caller checks i < kv->arr_len and the element type).
gguf_str gguf_arr_str(const gguf_kv *kv, uint64_t i);
double gguf_arr_num(const gguf_kv *kv, uint64_t i);  // any numeric element type
const char *gguf_value_type_name(uint32_t type);

#ifdef __cplusplus
}
#endif

#endif
