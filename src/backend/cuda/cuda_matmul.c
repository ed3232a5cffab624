// Weights on the device and the ops that read them: matmul and embed.
// Weights keep their GGML blocks (F32/F16/BF16/Q8_0/Q4_0/Q4_1). Decode
// (n_tok <= RK_MATVEC_MAX_TOK) runs the matvec kernel, which dequantizes in
// registers: one pass over the stored bytes, and decode is bandwidth-bound,
// so Q4_1's 5 bits per weight beat bf16's 16. Larger n_tok (prefill)
// dequantizes chunks of rows to fp32 in CUDA_SCRATCH_GEMM and multiplies them
// with cublasSgemm in pedantic fp32 (no TF32): the same weights as cpu_ref,
// to fp32 rounding.
#include <stdio.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/cuda_ops.h"
#include "kernels/dequant.cuh"
#include "kernels/matvec.cuh"
#include "model/quant.h"

#define GEMM_SCRATCH_MAX ((size_t)64 << 20)  // bytes of dequantized rows per GEMM chunk

int cuda_supports(int op, uint32_t weight_type) {
    if (op == OP_MATMUL || op == OP_EMBED) return rk_weight_type_ok(weight_type);
    return op >= 0 && op < OP_COUNT;
}

int cuda_weight_upload(const backend *b, weight *dst, const weight *src, rc_err *err) {
    *dst = (weight){0};
    if (!rk_weight_type_ok(src->type))
        return rc_fail(err, "the cuda backend does not support %s weights", ggml_type_name(src->type));
    const size_t n_bytes = (size_t)src->n_out * src->row_bytes;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n_bytes > 0 ? n_bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return rc_fail(err, "cudaMalloc of %zu bytes for weights: %s", n_bytes, cudaGetErrorString(e));
    }
    cuda_state *s = cuda_state_of(b);
    if (n_bytes && (e = cudaMemcpyAsync(p, src->data, n_bytes, cudaMemcpyHostToDevice, s->stream)) != cudaSuccess) {
        cudaFree(p);
        return rc_fail(err, "uploading %zu bytes of weights: %s", n_bytes, cudaGetErrorString(e));
    }
    *dst = *src;
    dst->data = p;
    return 0;
}

void cuda_weight_free(const backend *b, weight *w) {
    if (w->data) CUDA_CHECK(b, cudaFree((void *)w->data));
    *w = (weight){0};
}

// out: (n_tok, n_out) = x: (n_tok, n_in) w^T. In cuBLAS's column-major terms
// out^T (n_out x n_tok, ld n_out) = W (n_out x n_in) x^T, where the row-major
// chunk of dequantized rows is a column-major (n_in x rows) matrix: op T.
static void gemm_path(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok) {
    cuda_state *s = cuda_state_of(b);
    const int64_t n_in = w->n_in, n_out = w->n_out;
    int64_t chunk = (int64_t)(GEMM_SCRATCH_MAX / ((size_t)n_in * sizeof(float)));
    if (chunk < 1) chunk = 1;
    if (chunk > n_out) chunk = n_out;
    float *wf = cuda_scratch(b, CUDA_SCRATCH_GEMM, (size_t)chunk * (size_t)n_in * sizeof(float));
    if (!wf) return;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t r0 = 0; r0 < n_out; r0 += chunk) {
        const int64_t rows = n_out - r0 < chunk ? n_out - r0 : chunk;
        CUDA_CHECK(b, rk_dequant_rows(wf, w->data, w->type, w->row_bytes, n_in, NULL, r0, rows, s->stream));
        CUBLAS_CHECK(b, cublasSgemm(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n_tok, (int)n_in, &one, wf,
                                    (int)n_in, x, (int)n_in, &zero, out + r0, (int)n_out));
    }
}

void cuda_matmul(const backend *b, float *out, const float *x, const weight *w, int64_t n_tok) {
    if (n_tok <= 0 || w->n_out <= 0) return;
    if (w->n_in <= 0) {  // an empty dot product is 0
        CUDA_CHECK(b, cudaMemsetAsync(out, 0, (size_t)(n_tok * w->n_out) * sizeof(float), cuda_state_of(b)->stream));
        return;
    }
    if (!rk_weight_type_ok(w->type)) {
        cuda_fail(b, "cuda_matmul", 0, ggml_type_name(w->type), __FILE__, __LINE__);
        return;
    }
    if (w->n_in > 0x7fffffff || w->n_out > 0x7fffffff || n_tok > 0x7fffffff) {  // cuBLAS takes int
        cuda_fail(b, "cuda_matmul", 0, "shape beyond cuBLAS's int range", __FILE__, __LINE__);
        return;
    }
    if (n_tok <= RK_MATVEC_MAX_TOK)
        CUDA_CHECK(b, rk_matvec(out, x, w->data, w->type, w->row_bytes, w->n_in, w->n_out, n_tok,
                                cuda_state_of(b)->stream));
    else
        gemm_path(b, out, x, w, n_tok);
}

void cuda_embed(const backend *b, float *x, const weight *tok_embd, const int32_t *tokens_host, int64_t n) {
    if (n <= 0) return;
    for (int64_t t = 0; t < n; t++)
        if (tokens_host[t] < 0 || tokens_host[t] >= tok_embd->n_out) {
            char what[96];
            snprintf(what, sizeof what, "token id %d outside the vocabulary (%lld)", (int)tokens_host[t],
                     (long long)tok_embd->n_out);
            cuda_fail(b, "cuda_embed", 0, what, __FILE__, __LINE__);
            return;
        }
    const int32_t *rows = cuda_stage(b, tokens_host, (size_t)n * sizeof(int32_t), 0);
    if (!rows) return;
    CUDA_CHECK(b, rk_dequant_rows(x, tok_embd->data, tok_embd->type, tok_embd->row_bytes, tok_embd->n_in, rows, 0, n,
                                  cuda_state_of(b)->stream));
}
