// Decode matvec over GGML blocks (see matvec.cuh).
#include "kernels/common.cuh"
#include "kernels/dequant.cuh"
#include "kernels/ggml_blocks.cuh"
#include "kernels/matvec.cuh"

#define MV_WARPS 4
#define MV_MAX_BLOCKS 65535

// acc[t] += w * x[t][i] for the tokens in use (t is a compile-time index).
// (Constant trip counts: nvcc unrolls them, keeping acc in registers.)
#define MV_FMA(w, i)                                   \
    for (int t = 0; t < RK_MATVEC_MAX_TOK; t++)        \
        if (t < n_tok) acc[t] += (w) * x[(int64_t)t * n_in + (i)];

// Launch: grid min(ceil(n_out / MV_WARPS), 65535) (striding over rows),
// MV_WARPS * 32 threads; one warp per output row. Quantized types: lane l
// decodes blocks l, l + 32, ... of the row (a warp reads 32 consecutive
// blocks at once, so its loads cover one contiguous span); float types: lane
// l reads elements l, l + 32, ... (coalesced). Each lane accumulates its part
// in order, then a xor-butterfly sums the 32 lanes: the order is fixed by the
// shapes, so results are bitwise reproducible.
__global__ void __launch_bounds__(MV_WARPS * 32)
matvec_kernel(float *out, const float *__restrict__ x, const uint8_t *__restrict__ w, uint32_t type, size_t row_bytes,
              int64_t n_in, int64_t n_out, int n_tok) {
    const int lane = threadIdx.x % 32;
    for (int64_t o = (int64_t)blockIdx.x * MV_WARPS + threadIdx.x / 32; o < n_out; o += (int64_t)gridDim.x * MV_WARPS) {
        const uint8_t *row = w + (size_t)o * row_bytes;
        float acc[RK_MATVEC_MAX_TOK];
        for (int t = 0; t < RK_MATVEC_MAX_TOK; t++) acc[t] = 0.0f;
        if (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q8_0) {
            const int64_t n_blocks = n_in / 32;
            for (int64_t b = lane; b < n_blocks; b += 32) {
                const int64_t i0 = b * 32;
                if (type == GGML_TYPE_Q8_0) {
                    const uint8_t *blk = row + b * 34;
                    const float d = rk_fp16_to_fp32(rk_load_u16(blk));
                    for (int j = 0; j < 32; j++) {
                        const float wv = d * (float)(int8_t)blk[2 + j];
                        MV_FMA(wv, i0 + j)
                    }
                } else {
                    const int q1 = type == GGML_TYPE_Q4_1;
                    const uint8_t *blk = row + b * (q1 ? 20 : 18);
                    const uint8_t *qs = blk + (q1 ? 4 : 2);
                    const float d = rk_fp16_to_fp32(rk_load_u16(blk));
                    const float m = q1 ? rk_fp16_to_fp32(rk_load_u16(blk + 2)) : 0.0f;
                    const int off = q1 ? 0 : 8;
                    for (int j = 0; j < 16; j++) {
                        const uint32_t byte = qs[j];
                        const float lo = d * (float)((int)(byte & 0x0f) - off) + m;
                        const float hi = d * (float)((int)(byte >> 4) - off) + m;
                        MV_FMA(lo, i0 + j)
                        MV_FMA(hi, i0 + j + 16)
                    }
                }
            }
        } else {
            for (int64_t i = lane; i < n_in; i += 32) {
                const float wv = rk_weight_elem(row, type, i);
                MV_FMA(wv, i)
            }
        }
        for (int t = 0; t < RK_MATVEC_MAX_TOK; t++) {
            float v = acc[t];
            for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
            if (t < n_tok && lane == 0) out[(int64_t)t * n_out + o] = v;
        }
    }
}

extern "C" cudaError_t rk_matvec(float *out, const float *x, const void *w, uint32_t type, size_t row_bytes,
                                 int64_t n_in, int64_t n_out, int64_t n_tok, cudaStream_t stream) {
    if (!rk_weight_type_ok(type) || n_tok < 1 || n_tok > RK_MATVEC_MAX_TOK || n_in < 0 || n_out < 0)
        return cudaErrorInvalidValue;
    if (n_out == 0) return cudaSuccess;
    const int64_t blocks = (n_out + MV_WARPS - 1) / MV_WARPS;
    RC_LAUNCH(matvec_kernel, dim3((unsigned)(blocks < MV_MAX_BLOCKS ? blocks : MV_MAX_BLOCKS)), dim3(MV_WARPS * 32), 0,
              stream, out, x, (const uint8_t *)w, type, row_bytes, n_in, n_out, (int)n_tok);
    return cudaGetLastError();
}
