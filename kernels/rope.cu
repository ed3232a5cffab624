// Rotary position embedding (see rope.cuh).
#include "kernels/common.cuh"
#include "kernels/rope.cuh"

#define ROPE_THREADS 256
#define ROPE_MAX_BLOCKS 65535

// Launch: grid min(ceil(n_pairs / ROPE_THREADS), 65535), ROPE_THREADS threads,
// striding over n_pairs = n_tok * n_heads * rot_dim / 2; one thread per
// rotated pair. theta, cos and sin in double like the reference: at position
// 128K an fp32 theta would be off by ~1e-2 rad. Dims >= rot_dim are not touched.
__global__ void __launch_bounds__(ROPE_THREADS)
rope_kernel(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos, const float *inv_freq,
            int64_t half, int neox) {
    const int64_t n_pairs = n_tok * n_heads * half;
    for (int64_t p = (int64_t)blockIdx.x * ROPE_THREADS + threadIdx.x; p < n_pairs;
         p += (int64_t)gridDim.x * ROPE_THREADS) {
        const int64_t i = p % half, th = p / half, t = th / n_heads;
        float *v = x + th * head_dim;
        const double theta = (double)pos[t] * inv_freq[i];
        const double c = cos(theta), s = sin(theta);
        const int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const double x0 = v[i0], x1 = v[i1];
        v[i0] = (float)(x0 * c - x1 * s);
        v[i1] = (float)(x0 * s + x1 * c);
    }
}

extern "C" cudaError_t rk_rope(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, const int64_t *pos,
                               const float *inv_freq, int64_t rot_dim, int neox, cudaStream_t stream) {
    if (n_tok < 0 || n_heads < 0 || rot_dim < 0 || rot_dim > head_dim || rot_dim % 2) return cudaErrorInvalidValue;
    const int64_t n_pairs = n_tok * n_heads * (rot_dim / 2);
    if (n_pairs == 0) return cudaSuccess;
    const int64_t blocks = (n_pairs + ROPE_THREADS - 1) / ROPE_THREADS;
    RC_LAUNCH(rope_kernel, dim3((unsigned)(blocks < ROPE_MAX_BLOCKS ? blocks : ROPE_MAX_BLOCKS)), dim3(ROPE_THREADS), 0,
              stream, x, n_tok, n_heads, head_dim, pos, inv_freq, rot_dim / 2, neox);
    return cudaGetLastError();
}
