// The emulator's cuBLAS against a naive row-major product computed here:
// every transpose combination, odd sizes and leading dimensions (padding
// filled with NaN, which must never be read), fp32/fp16/bf16 inputs, strided
// batches, alpha/beta (beta 0 must not read C), and the argument checks the
// real library makes.
#include <math.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "check.h"
#include "kernels/blas.h"
#include "kernels/emu/simt.h"  // __half / __nv_bfloat16 conversions for the inputs

static const float QNAN = NAN;

// Input values exact in fp16 and bf16 (multiples of 1/8 up to 2), so every type sees the same matrix.
static float val(int i, int salt) { return (float)((i * 37 + salt * 11) % 33 - 16) / 8.0f; }

struct case_t {
    cublasOperation_t ta, tb;
    int m, n, k, pad_a, pad_b, pad_c, batch;
    cudaDataType type;
    float alpha, beta;
};

static void store(void *base, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F) static_cast<float *>(base)[i] = v;
    else if (t == CUDA_R_16F) static_cast<__half *>(base)[i] = __float2half(v);
    else static_cast<__nv_bfloat16 *>(base)[i] = __float2bfloat16(v);
}

static void *dev_copy(const std::vector<unsigned char> &h) {
    void *d = nullptr;
    cudaMalloc(&d, h.size());
    cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice);
    return d;
}

static void run_case(cublasHandle_t h, const case_t &c) {
    const int a_rows = c.ta == CUBLAS_OP_N ? c.m : c.k, a_cols = c.ta == CUBLAS_OP_N ? c.k : c.m;
    const int b_rows = c.tb == CUBLAS_OP_N ? c.k : c.n, b_cols = c.tb == CUBLAS_OP_N ? c.n : c.k;
    const int lda = std::max(1, a_rows + c.pad_a), ldb = std::max(1, b_rows + c.pad_b), ldc = std::max(1, c.m + c.pad_c);
    const long long sa = (long long)lda * a_cols + 5, sb = (long long)ldb * b_cols + 3, sc = (long long)ldc * c.n + 7;
    const size_t es = c.type == CUDA_R_32F ? 4 : 2;
    std::vector<unsigned char> ha(sa * c.batch * es), hb(sb * c.batch * es);
    std::vector<float> hc(sc * c.batch, QNAN);
    for (size_t i = 0; i < (size_t)sa * c.batch; i++) store(ha.data(), c.type, i, QNAN);
    for (size_t i = 0; i < (size_t)sb * c.batch; i++) store(hb.data(), c.type, i, QNAN);
    // logical row-major op(A) (m x k), op(B) (k x n), C (m x n)
    std::vector<double> ar((size_t)c.batch * c.m * c.k), br((size_t)c.batch * c.k * c.n), c0((size_t)c.batch * c.m * c.n);
    for (int b = 0; b < c.batch; b++) {
        for (int i = 0; i < c.m; i++)
            for (int l = 0; l < c.k; l++) {
                float v = val(i * c.k + l, b);
                ar[((size_t)b * c.m + i) * c.k + l] = v;
                size_t idx = c.ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda;
                store(ha.data(), c.type, b * sa + idx, v);
            }
        for (int l = 0; l < c.k; l++)
            for (int j = 0; j < c.n; j++) {
                float v = val(l * c.n + j, b + 7);
                br[((size_t)b * c.k + l) * c.n + j] = v;
                size_t idx = c.tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb;
                store(hb.data(), c.type, b * sb + idx, v);
            }
        for (int i = 0; i < c.m; i++)
            for (int j = 0; j < c.n; j++) {
                float v = c.beta == 0.0f ? QNAN : val(i + j * 3, b + 2);  // beta 0: C must not be read
                c0[((size_t)b * c.m + i) * c.n + j] = v;
                hc[b * sc + i + (size_t)j * ldc] = v;
            }
    }
    void *da = dev_copy(ha), *db = dev_copy(hb);
    float *dc = nullptr;
    cudaMalloc((void **)&dc, hc.size() * sizeof(float));
    cudaMemcpy(dc, hc.data(), hc.size() * sizeof(float), cudaMemcpyHostToDevice);
    cublasStatus_t st;
    if (c.batch > 1)
        st = cublasGemmStridedBatchedEx(h, c.ta, c.tb, c.m, c.n, c.k, &c.alpha, da, c.type, lda, sa, db, c.type, ldb,
                                        sb, &c.beta, dc, CUDA_R_32F, ldc, sc, c.batch, CUBLAS_COMPUTE_32F_PEDANTIC,
                                        CUBLAS_GEMM_DEFAULT);
    else if (c.type == CUDA_R_32F && c.m % 2)
        st = cublasSgemm(h, c.ta, c.tb, c.m, c.n, c.k, &c.alpha, (const float *)da, lda, (const float *)db, ldb,
                         &c.beta, dc, ldc);
    else
        st = cublasGemmEx(h, c.ta, c.tb, c.m, c.n, c.k, &c.alpha, da, c.type, lda, db, c.type, ldb, &c.beta, dc,
                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    CHECK_MSG(st == CUBLAS_STATUS_SUCCESS, "%s", cublasGetStatusName(st));
    std::vector<float> out(hc.size());
    cudaMemcpy(out.data(), dc, out.size() * sizeof(float), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int b = 0; b < c.batch; b++) {
        for (int i = 0; i < c.m; i++)
            for (int j = 0; j < c.n; j++) {
                double ref = 0.0;
                for (int l = 0; l < c.k; l++)
                    ref += ar[((size_t)b * c.m + i) * c.k + l] * br[((size_t)b * c.k + l) * c.n + j];
                ref *= c.alpha;
                if (c.beta != 0.0f) ref += c.beta * c0[((size_t)b * c.m + i) * c.n + j];
                float got = out[b * sc + i + (size_t)j * ldc];
                if (!(fabs(got - ref) <= 1e-6 * (1.0 + fabs(ref)))) bad++;
            }
        // the padding rows of C are untouched (still NaN)
        for (int j = 0; j < c.n; j++)
            for (int i = c.m; i < ldc; i++) bad += !isnan(out[b * sc + i + (size_t)j * ldc]);
    }
    CHECK_MSG(bad == 0, "ta %d tb %d m %d n %d k %d pads %d/%d/%d batch %d type %d: %d wrong", c.ta, c.tb, c.m, c.n,
              c.k, c.pad_a, c.pad_b, c.pad_c, c.batch, (int)c.type, bad);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
}

static void test_products(cublasHandle_t h) {
    const cublasOperation_t ops[2] = {CUBLAS_OP_N, CUBLAS_OP_T};
    const cudaDataType types[3] = {CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF};
    const int shapes[][3] = {{5, 7, 3}, {1, 1, 1}, {8, 3, 33}, {17, 4, 0}, {4, 9, 6}};
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops)
            for (cudaDataType t : types)
                for (auto &s : shapes)
                    for (int batch : {1, 3}) {
                        case_t c = {ta, tb, s[0], s[1], s[2], 3, 1, 2, batch, t, 1.5f, (s[0] + batch) % 2 ? 0.0f : -0.5f};
                        run_case(h, c);
                        c.pad_a = c.pad_b = c.pad_c = 0;  // tight leading dimensions
                        run_case(h, c);
                    }
}

static void test_arguments(cublasHandle_t h) {
    float *d = nullptr;
    cudaMalloc((void **)&d, 64 * sizeof(float));
    const float one = 1.0f, zero = 0.0f;
    // leading dimensions below the rows of the stored matrix
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d, 3, d, 3, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);  // lda 3 < m 4
    CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 2, 3, &one, d, 2, d, 3, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);  // op T: lda 2 < k 3
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, 4, 2, 3, &one, d, 4, d, 1, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);  // op T: ldb 1 < n 2
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d, 4, d, 3, &zero, d, 3) ==
          CUBLAS_STATUS_INVALID_VALUE);  // ldc 3 < m 4
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 3, &one, d, 4, d, 3, &zero, d, 4) ==
          CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d, 4, d, 3, &zero, d, 4) == CUBLAS_STATUS_SUCCESS);
    // fp16 output, fp16 compute: not what this reference serves
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, CUDA_R_16F, 2, d, CUDA_R_16F, 2, &zero, d,
                       CUDA_R_16F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, CUDA_R_16F, 2, d, CUDA_R_16F, 2, &zero, d,
                       CUDA_R_32F, 2, CUBLAS_COMPUTE_16F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, 1, d, 1, &zero, d, 1) ==
          CUBLAS_STATUS_NOT_INITIALIZED);
    // a matrix that runs past its device buffer (64 floats; 8 x 9 needs 72): the call fails, stickily
    fprintf(stderr, "(a matrix past its buffer: the emulator should report it below)\n");
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 9, 1, &one, d, 8, d, 1, &zero, d, 8) ==
          CUBLAS_STATUS_EXECUTION_FAILED);
    CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
    cudaDeviceReset();
    // TF32 math mode rounds fp32 inputs to 10 mantissa bits; pedantic does not
    float hx[2] = {1.0f + 0x1p-20f, 1.0f}, r = 0.0f;
    cudaMemcpy(d, hx, sizeof hx, cudaMemcpyHostToDevice);
    CHECK(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, CUDA_R_32F, 1, d + 1, CUDA_R_32F, 1, &zero, d + 2,
                 CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&r, d + 2, sizeof r, cudaMemcpyDeviceToHost);
    CHECK(r == 1.0f);
    CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH) == CUBLAS_STATUS_SUCCESS);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, d, CUDA_R_32F, 1, d + 1, CUDA_R_32F, 1, &zero, d + 2,
                 CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&r, d + 2, sizeof r, cudaMemcpyDeviceToHost);
    CHECK(r == 1.0f + 0x1p-20f);
    CHECK(strlen(cublasGetStatusString(CUBLAS_STATUS_INVALID_VALUE)) > 0);
    cudaFree(d);
}

int main(void) {
    cublasHandle_t h = nullptr;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    CHECK(cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS);
    CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH) == CUBLAS_STATUS_SUCCESS);
    test_products(h);
    test_arguments(h);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
    cudaStreamDestroy(s);
    TEST_MAIN_END();
}
