// The KV cache's element formats (enum kv_elem, backend.h) on the host side:
// names, shape checks, and the plain row conversions the reference backend is
// written with (the fast backend has its own SIMD loads; both agree with these).
#ifndef RECALL_BACKEND_KV_FORMAT_H
#define RECALL_BACKEND_KV_FORMAT_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/status.h"

// "f16", "f32", "q8_0", "q4_0"; "?" for anything else.
const char *kv_elem_name(int elem);
// The enum kv_elem named by s, or -1.
int kv_elem_parse(const char *s);
// 0 when a cache of this format can hold rows of head_dim elements; else a
// status naming the problem (the block formats need a multiple of 32).
int kv_elem_check(int elem, int64_t head_dim, rc_err *err);

// dst: one row in the format <- src: (n_elems) fp32, rounded (f16) or
// quantized the way GGML's reference quantizer does (q8_0, q4_0).
void kv_encode_row(int elem, void *dst, const float *src, int64_t n_elems);
// dst: (n_elems) fp32 <- one row in the format.
void kv_decode_row(int elem, const void *src, float *dst, int64_t n_elems);
// Element i of a row in the format, as fp32.
float kv_decode_at(int elem, const void *row, int64_t i);

#endif
