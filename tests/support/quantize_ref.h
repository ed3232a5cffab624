// Reference quantizers for tests: float -> Q4_0 / Q4_1 / Q8_0 blocks computed
// exactly as ggml's quantize_row_*_ref (ggml-quants.c) does, and float ->
// F16 / BF16 by an implementation independent of src/model/quant.c (double
// arithmetic with round-to-nearest-even), so the two can check each other.
#ifndef RECALL_TESTS_QUANTIZE_REF_H
#define RECALL_TESTS_QUANTIZE_REF_H

#include <stddef.h>
#include <stdint.h>

#include "model/quant.h"

uint16_t qref_fp32_to_fp16(float f);   // round to nearest even; NaN -> quiet NaN with the sign
float qref_fp16_to_fp32(uint16_t h);   // exact
uint16_t qref_fp32_to_bf16(float f);   // round to nearest even; NaN -> quiet NaN with the sign
float qref_bf16_to_fp32(uint16_t h);   // exact

// x: (n_elems) floats, n_elems a multiple of 32; y: n_elems / 32 blocks.
void qref_quantize_row_q4_0(const float *x, block_q4_0 *y, int64_t n_elems);
void qref_quantize_row_q4_1(const float *x, block_q4_1 *y, int64_t n_elems);
void qref_quantize_row_q8_0(const float *x, block_q8_0 *y, int64_t n_elems);

// Stores n_elems floats as `type` (F32, F16, BF16, Q4_0, Q4_1, Q8_0) at dst,
// which holds ggml_row_bytes(type, n_elems) bytes. Returns the bytes written,
// or 0 for another type or a length that is not a whole number of blocks.
size_t qref_quantize(uint32_t type, const float *x, void *dst, int64_t n_elems);

#endif
