// A small GGUF v3 writer for tests: metadata of every value type, tensors of
// any (even invalid) type and shape, written to a file or a memory buffer.
//
// It writes what it is told, unvalidated, so tests can also produce broken
// files: override a header count, the magic, the version, a tensor's offset,
// truncate the output, or append raw bytes as a metadata entry.
//
// Builder calls never fail individually: an allocation failure is remembered
// (w->oom) and reported by the write functions, like a stream's error flag.
#ifndef RECALL_TESTS_GGUF_WRITER_H
#define RECALL_TESTS_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define GGUF_WRITER_NO_OVERRIDE UINT64_MAX

typedef struct gguf_writer_tensor {
    char *name;               // owned, NUL-terminated
    uint32_t n_dims;          // written as is (may be 0 or > 4 for tests)
    uint64_t ne[8];           // ne[0] is the row (contiguous) dimension
    uint32_t type;            // ggml type id, written as is
    uint8_t *data;            // owned copy of the raw bytes
    size_t n_bytes;
    // Knob: write this offset (relative to the data section) instead of the
    // real one; the data bytes are still placed where they would normally go.
    uint64_t offset_override; // GGUF_WRITER_NO_OVERRIDE = none
} gguf_writer_tensor;

typedef struct gguf_writer {
    // Serialized metadata entries (key, type, value), back to back.
    uint8_t *kv_bytes;
    size_t kv_n_bytes, kv_cap;
    uint64_t n_kv;
    gguf_writer_tensor *tensors;
    size_t n_tensors, tensors_cap;
    uint64_t alignment;       // from general.alignment when set as uint32, else 32
    int oom;                  // sticky allocation failure

    // Knobs for broken files (defaults from gguf_writer_init write a valid file).
    char magic[4];            // "GGUF"
    uint32_t version;         // 3
    uint64_t n_kv_override;       // header count written instead of n_kv
    uint64_t n_tensors_override;  // header count written instead of n_tensors
    uint64_t truncate_at;         // keep only this many bytes of the output
} gguf_writer;

// Byte positions of the sections of the written image (before truncation).
typedef struct gguf_writer_layout {
    size_t header_bytes;   // magic .. end of the last tensor info
    size_t data_offset;    // start of the (aligned) tensor data section
    size_t data_end;       // end of the last tensor's bytes (the minimum valid file size)
    size_t total_bytes;    // everything, including padding after the last tensor
    size_t *tensor_offsets;  // real offset of each tensor from data_offset (owned)
} gguf_writer_layout;

void gguf_writer_layout_free(gguf_writer_layout *layout);

void gguf_writer_init(gguf_writer *w);
void gguf_writer_free(gguf_writer *w);

// Scalars. Keys are NUL-terminated; duplicates are written as given.
void gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);  // "general.alignment" also sets w->alignment
void gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
void gguf_writer_add_bool(gguf_writer *w, const char *key, int v);
void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v);
void gguf_writer_add_strn(gguf_writer *w, const char *key, const char *v, size_t n_bytes);  // may hold NULs

// Array of n_elems numeric elements of elem_type (enum gguf_value_type, not
// string/array), packed little-endian at `elems` (elem_type's size each).
void gguf_writer_add_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *elems, uint64_t n_elems);
void gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n_elems);

// Knob: appends n_bytes as one metadata entry verbatim (the caller writes key,
// type and value), to produce lengths, types or counts a reader must reject.
void gguf_writer_add_raw_kv(gguf_writer *w, const void *bytes, size_t n_bytes);

// Adds a tensor (data copied; n_bytes is not checked against type and dims).
// Returns its index, for knobs such as w->tensors[i].offset_override.
size_t gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                              const void *data, size_t n_bytes);
// Index of the first tensor with this name, or -1.
int64_t gguf_writer_find_tensor(const gguf_writer *w, const char *name);

// Serializes into a malloc'd buffer (*out, caller frees). layout may be NULL.
int gguf_writer_write_memory(const gguf_writer *w, uint8_t **out, size_t *n_bytes, gguf_writer_layout *layout,
                             rc_err *err);
int gguf_writer_write_file(const gguf_writer *w, const char *path, gguf_writer_layout *layout, rc_err *err);

// Knob: the value bytes of the first entry named key (for an array, its
// element type, then its length, then the elements), to patch in place; NULL
// if there is none. *type gets the entry's value type.
uint8_t *gguf_writer_find_value(gguf_writer *w, const char *key, uint32_t *type);

// Little helpers for raw entries: append a u32/u64/string to a byte buffer.
size_t gguf_raw_put_u32(uint8_t *dst, uint32_t v);
size_t gguf_raw_put_u64(uint8_t *dst, uint64_t v);
size_t gguf_raw_put_str(uint8_t *dst, const char *s);  // u64 length + bytes

#endif
