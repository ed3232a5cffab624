// AVX-512 (F/BW/VL) kernels of the fast CPU backend: the decode matvec of the
// common weight types and the decode attention's two products. Compiled with
// per-function target attributes; cpu.c calls them only when cpuid has
// AVX-512 F/BW/VL and no override asks for another path. Exact fp32 math like
// the AVX2 kernels (no 8-bit activations, no bf16 rounding): only the order
// of the additions differs.
#ifndef RECALL_BACKEND_CPU_AVX512_H
#define RECALL_BACKEND_CPU_AVX512_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

// Whether cpu512_matvec_rows has a kernel for weights of this type.
int cpu512_matvec_has(uint32_t type);

// out[o] = row o of w . x for o in [o0, o1). x: (n_in); xsum: (n_in / 32) block
// sums of x (read for Q4_0 and Q4_1 only).
void cpu512_matvec_rows(float *out, const weight *w, const float *x, const float *xsum, int64_t o0, int64_t o1);

// Whether the two attention kernels below take this head_dim (a multiple of 16, at most 256).
int cpu512_attn_has(int64_t head_dim);

// s_out[g * s_ld + j] = scale * q_g . K_j for the n rows K_j of `elem`, rb
// bytes apart from k_rows, and the group's query heads g < group.
// q: (group, head_dim). v_rows: the matching V rows, v_rb bytes apart,
// prefetched for cpu512_pv, never read here.
void cpu512_scores(int elem, float *s_out, int64_t s_ld, const float *q, const uint8_t *k_rows, size_t rb,
                   const uint8_t *v_rows, size_t v_rb, int64_t n, int64_t group, int64_t head_dim, float scale);

// o (group, head_dim) = sum_j p[g * n + j] * V_j over the n rows V_j of
// `elem`, rb bytes apart from v_rows. p: (group, n).
void cpu512_pv(int elem, float *o, const float *p, int64_t group, const uint8_t *v_rows, size_t rb, int64_t n,
               int64_t head_dim);

#endif
