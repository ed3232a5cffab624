// Attention: split-K decode, state merge, tiled causal prefill.
// Decode (attn_decode_kernel): per (KV head, split), K and V stream once per
// GQA group through shared memory; partial states per split, then the merge
// kernel in split order. The tile kernel (attn_rows_kernel) does prefill and
// the decode shapes the decode kernel does not take: a block owns up to
// ATT_ROWS query rows that see the same KV head (prefill: consecutive tokens
// of one head), streams the keys in tiles of ATT_TILE and keeps an online
// softmax in fp32 per row.
#include "kernels/common.cuh"
#include "kernels/attention.cuh"

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_TILE 32    // keys per tile: one lane per key in the softmax step
#define ATT_ROWS 16    // query rows per block
#define ATT_PAD 4      // floats of padding per shared row: 16-byte reads of 8 rows hit distinct banks
#define ATT_DIMP(dim) (((dim) + 3) / 4 * 4)  // head_dim rounded up to whole float4s
#define ATT_ACC4 (ATT_ROWS * RK_ATTN_MAX_DIM / 4 / ATT_THREADS)  // float4 accumulators per thread
// Decode splits: enough blocks to keep every SM of an H200 (132) busy with
// about 4 resident blocks, never fewer than ATT_MIN_CHUNK keys per split. A
// constant, so the split count (and the rounding) depends on the shapes only.
#define ATT_TARGET_BLOCKS 512
#define ATT_MIN_CHUNK 256
#define MERGE_THREADS 128

struct __align__(16) rk_f4 { float x, y, z, w; };
struct __align__(16) rk_u4 { unsigned x, y, z, w; };

struct attn_args {
    const float *q;
    float *o, *lse, *scores;
    const void *k, *v;
    int64_t k_hs, v_hs;
    int64_t n_keys;  // decode: keys of the shard; prefill: pos0
    int64_t n_tok;   // prefill: queries
    int64_t n_q, group, chunk;
    int dim, vec, prefill, sep;  // sep: K and V tiles in separate buffers (else V reuses K's)
    float scale;
};

__device__ __forceinline__ void cvt_store(float *d, rk_u4 u, const float *) {
    *reinterpret_cast<rk_f4 *>(d) = *reinterpret_cast<const rk_f4 *>(&u);
}

__device__ __forceinline__ void cvt_store(float *d, rk_u4 u, const __half *) {
    const __half *h = reinterpret_cast<const __half *>(&u);
    rk_f4 a = {__half2float(h[0]), __half2float(h[1]), __half2float(h[2]), __half2float(h[3])};
    rk_f4 b = {__half2float(h[4]), __half2float(h[5]), __half2float(h[6]), __half2float(h[7])};
    reinterpret_cast<rk_f4 *>(d)[0] = a;
    reinterpret_cast<rk_f4 *>(d)[1] = b;
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

// nk rows of dim contiguous elements -> dst rows of dim + ATT_PAD floats.
// vec: src is 16-byte aligned, so each thread moves 16 bytes at a time.
template <typename T>
__device__ __forceinline__ void load_tile(float *dst, const T *src, int nk, int dim, int vec) {
    const int ld = ATT_DIMP(dim) + ATT_PAD;
    if (vec) {
        const int per = 16 / (int)sizeof(T), n_vec = nk * dim / per;
        const rk_u4 *s4 = reinterpret_cast<const rk_u4 *>(src);
        for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
            const int e = i * per;
            cvt_store(dst + (e / dim) * ld + e % dim, s4[i], src);
        }
    } else {
        for (int e = threadIdx.x; e < nk * dim; e += blockDim.x) dst[(e / dim) * ld + e % dim] = to_f32(src[e]);
    }
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Launch: ATT_THREADS threads, dynamic shared memory attn_smem_bytes(dim, sep).
// Decode grid (n_kv_heads, n_split, ceil(group / ATT_ROWS)): block = one split's
// key range for up to ATT_ROWS heads of one group, so K and V are read once per
// group; its state goes to split row `split` of o/lse (the partials).
// Prefill grid (ceil(n_tok / ATT_ROWS), n_q_heads): block = ATT_ROWS tokens of
// one head over keys [0, pos0 + last token], masked causally per row.
// Fixed orders everywhere (tile order, shuffle trees), no atomics.
template <typename T>
__global__ void __launch_bounds__(ATT_THREADS) attn_rows_kernel(attn_args a) {
    RC_DYN_SHARED(float, smem);
    const int dim = a.dim, dimp = ATT_DIMP(dim), ld = dimp + ATT_PAD, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int64_t kvh, q_row0, q_step, lim0, lim_step, j_begin, j_end, sc_row0 = 0;
    int n_rows;
    if (!a.prefill) {
        kvh = blockIdx.x;
        const int64_t split = blockIdx.y, g0 = (int64_t)blockIdx.z * ATT_ROWS;
        n_rows = (int)(a.group - g0 < ATT_ROWS ? a.group - g0 : ATT_ROWS);
        sc_row0 = kvh * a.group + g0;
        j_begin = split * a.chunk;
        j_end = j_begin + a.chunk < a.n_keys ? j_begin + a.chunk : a.n_keys;
        q_row0 = sc_row0;
        q_step = 1;
        lim0 = j_end - 1;
        lim_step = 0;
    } else {
        const int64_t h = blockIdx.y, t0 = (int64_t)blockIdx.x * ATT_ROWS;
        kvh = h / a.group;
        n_rows = (int)(a.n_tok - t0 < ATT_ROWS ? a.n_tok - t0 : ATT_ROWS);
        q_row0 = t0 * a.n_q + h;
        q_step = a.n_q;
        lim0 = a.n_keys + t0;
        lim_step = 1;
        j_begin = 0;
        j_end = a.n_keys + t0 + n_rows;
    }
    const int64_t o_row0 = a.prefill ? q_row0 : (int64_t)blockIdx.y * a.n_q + q_row0;

    float *sK = smem;
    float *sV = a.sep ? sK + ATT_TILE * ld : sK;
    float *sQ = sV + ATT_TILE * ld;
    float *sS = sQ + ATT_ROWS * ld;          // (ATT_ROWS, ATT_TILE) scores of the tile
    float *sP = sS + ATT_ROWS * ATT_TILE;    // (ATT_ROWS, ATT_TILE) exp(s - m)
    float *sM = sP + ATT_ROWS * ATT_TILE;    // running max per row
    float *sL = sM + ATT_ROWS;               // running denominator per row
    float *sA = sL + ATT_ROWS;               // rescale factor of the tile per row

    for (int e = tid; e < n_rows * dim; e += ATT_THREADS)
        sQ[(e / dim) * ld + e % dim] = a.q[(q_row0 + (e / dim) * q_step) * dim + e % dim];
    if (tid < ATT_ROWS) {
        sM[tid] = -INFINITY;
        sL[tid] = 0.0f;
    }
    rk_f4 acc[ATT_ACC4];
#pragma unroll
    for (int i = 0; i < ATT_ACC4; i++) acc[i] = rk_f4{0.0f, 0.0f, 0.0f, 0.0f};
    __syncthreads();

    const T *kbase = (const T *)a.k + kvh * a.k_hs, *vbase = (const T *)a.v + kvh * a.v_hs;
    for (int64_t j0 = j_begin; j0 < j_end; j0 += ATT_TILE) {
        const int nk = (int)(j_end - j0 < ATT_TILE ? j_end - j0 : ATT_TILE);
        load_tile(sK, kbase + j0 * dim, nk, dim, a.vec);
        if (a.sep) load_tile(sV, vbase + j0 * dim, nk, dim, a.vec);
        __syncthreads();

        // scores: pair p = (row p / ATT_TILE, key p % ATT_TILE); a warp shares one row
        for (int p = tid; p < n_rows * ATT_TILE; p += ATT_THREADS) {
            const int key = p % ATT_TILE, r = p / ATT_TILE;
            const int64_t j = j0 + key;
            float s = -INFINITY;
            if (key < nk && j <= lim0 + r * lim_step) {
                const rk_f4 *q4 = reinterpret_cast<const rk_f4 *>(sQ + r * ld);
                const rk_f4 *k4 = reinterpret_cast<const rk_f4 *>(sK + key * ld);
                float d0 = 0.0f, d1 = 0.0f;
                for (int c = 0; c < dim / 4; c++) {
                    const rk_f4 x = q4[c], y = k4[c];
                    d0 += x.x * y.x + x.y * y.y;
                    d1 += x.z * y.z + x.w * y.w;
                }
                for (int c = dim / 4 * 4; c < dim; c++) d0 += sQ[r * ld + c] * sK[key * ld + c];  // odd head_dim
                s = (d0 + d1) * a.scale;
                if (a.scores) a.scores[(sc_row0 + r) * a.n_keys + j] = s;
            }
            sS[p] = s;
        }
        __syncthreads();
        if (!a.sep) load_tile(sV, vbase + j0 * dim, nk, dim, a.vec);  // K's buffer is free now

        // online softmax: warp w owns rows w, w + ATT_WARPS, ...; lane = key
        for (int r = warp; r < n_rows; r += ATT_WARPS) {
            const float s = sS[r * ATT_TILE + lane], m_old = sM[r], l_old = sL[r];
            const float m_new = fmaxf(m_old, warp_max(s));
            const float pj = s == -INFINITY ? 0.0f : expf(s - m_new);
            const float psum = warp_sum(pj);
            sP[r * ATT_TILE + lane] = pj;
            __syncwarp();
            if (lane == 0) {
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                sM[r] = m_new;
                sL[r] = l_old * alpha + psum;
                sA[r] = alpha;
            }
        }
        __syncthreads();

        // o += P V: thread owns 4 consecutive outputs of a row per accumulator
#pragma unroll
        for (int i = 0; i < ATT_ACC4; i++) {
            const int e = (tid + i * ATT_THREADS) * 4;  // padded columns: garbage there is never written out
            if (e < n_rows * dimp) {
                const int r = e / dimp, c = e % dimp;
                const float alpha = sA[r];
                rk_f4 x = acc[i];
                x.x *= alpha; x.y *= alpha; x.z *= alpha; x.w *= alpha;
                for (int j = 0; j < nk; j++) {
                    const float pj = sP[r * ATT_TILE + j];
                    const rk_f4 y = *reinterpret_cast<const rk_f4 *>(sV + j * ld + c);
                    x.x += pj * y.x; x.y += pj * y.y; x.z += pj * y.z; x.w += pj * y.w;
                }
                acc[i] = x;
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < ATT_ACC4; i++) {
        const int e = (tid + i * ATT_THREADS) * 4;
        if (e < n_rows * dimp) {
            const int r = e / dimp, c = e % dimp;
            const float l = sL[r], inv = l > 0.0f ? 1.0f / l : 0.0f;
            float *dst = a.o + (o_row0 + r * q_step) * dim + c;
            const float v[4] = {acc[i].x * inv, acc[i].y * inv, acc[i].z * inv, acc[i].w * inv};
            for (int t = 0; t < 4 && c + t < dim; t++) dst[t] = v[t];
        }
    }
    if (a.lse && tid < n_rows) {
        const float l = sL[tid];
        a.lse[o_row0 + tid * q_step] = l > 0.0f ? sM[tid] + logf(l) : -INFINITY;
    }
}

// ---- the decode kernel proper (fp16 caches, head_dim 64 or 128; fp32 with 64)
#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_TILE 128   // keys per tile: one per thread in the score step
#define DEC_ROWS 8     // query heads of a group per block (grid.z covers wider groups)
#define DEC_MAX_SMEM (100 * 1024)  // else the tile kernel: keep >= 2 resident blocks per SM

// 8 consecutive elements (16-byte aligned) as floats.
__device__ __forceinline__ void ld8(const __half *p, float *f) {
    const rk_u4 u = *reinterpret_cast<const rk_u4 *>(p);
    const __half *h = reinterpret_cast<const __half *>(&u);
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = __half2float(h[i]);
}
__device__ __forceinline__ void ld8(const float *p, float *f) {
    const rk_f4 a = reinterpret_cast<const rk_f4 *>(p)[0], b = reinterpret_cast<const rk_f4 *>(p)[1];
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

// nk rows of dim contiguous elements -> dst rows of ld elements, in the cache's type.
template <typename T>
__device__ __forceinline__ void load_raw(T *dst, const T *src, int nk, int dim, int ld, int vec) {
    if (vec) {
        const int per = 16 / (int)sizeof(T), n_vec = nk * dim / per;
        const rk_u4 *s4 = reinterpret_cast<const rk_u4 *>(src);
        for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
            const int e = i * per;
            *reinterpret_cast<rk_u4 *>(dst + (e / dim) * ld + e % dim) = s4[i];
        }
    } else {
        for (int e = threadIdx.x; e < nk * dim; e += blockDim.x) dst[(e / dim) * ld + e % dim] = src[e];
    }
}

template <typename T, int CPL>
static size_t decode_smem_bytes() {
    const size_t ld = CPL * 32 + 16 / sizeof(T);
    return 2 * DEC_TILE * ld * sizeof(T) + sizeof(float) * (DEC_ROWS * CPL * 32 + DEC_WARPS * DEC_ROWS * 32);
}

// Launch: grid (n_kv_heads, n_split, ceil(group / DEC_ROWS)), DEC_THREADS
// threads, dynamic shared memory decode_smem_bytes<T, CPL>() (> 48 KB: opt-in).
// head_dim = 32 * CPL. A block takes one split's key range for up to DEC_ROWS
// heads of one group: K and V are read from memory once per group, in tiles
// of DEC_TILE rows (16-byte loads when aligned) kept in the cache's type in
// shared memory. Score step: thread = key, all rows, so each K element is read
// from shared memory once. Each warp keeps its own online softmax over its 32
// keys of every tile (per-lane partial denominators, summed at the end), then
// P V with lane = CPL output columns, so each V element is read once too. The
// four warp states merge in warp order at the end: fixed orders, no atomics.
template <typename T, int CPL>
__global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(attn_args a) {
    constexpr int D = CPL * 32, LD = D + 16 / (int)sizeof(T);
    RC_DYN_SHARED(float, smem);
    T *sK = reinterpret_cast<T *>(smem);
    T *sV = sK + DEC_TILE * LD;
    float *sQ = reinterpret_cast<float *>(sV + DEC_TILE * LD);  // (DEC_ROWS, D)
    float *sP = sQ + DEC_ROWS * D;                               // (DEC_WARPS, DEC_ROWS, 32)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t kvh = blockIdx.x, split = blockIdx.y, g0 = (int64_t)blockIdx.z * DEC_ROWS;
    const int n_rows = (int)(a.group - g0 < DEC_ROWS ? a.group - g0 : DEC_ROWS);
    const int64_t h0 = kvh * a.group + g0, j_begin = split * a.chunk;
    const int64_t j_end = j_begin + a.chunk < a.n_keys ? j_begin + a.chunk : a.n_keys;

    for (int e = tid; e < n_rows * D; e += DEC_THREADS) sQ[e] = a.q[h0 * D + e];
    float m[DEC_ROWS], l[DEC_ROWS], acc[DEC_ROWS][CPL];
#pragma unroll
    for (int r = 0; r < DEC_ROWS; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < CPL; c++) acc[r][c] = 0.0f;
    }
    const T *kb = (const T *)a.k + kvh * a.k_hs, *vb = (const T *)a.v + kvh * a.v_hs;
    for (int64_t j0 = j_begin; j0 < j_end; j0 += DEC_TILE) {
        const int nk = (int)(j_end - j0 < DEC_TILE ? j_end - j0 : DEC_TILE);
        __syncthreads();  // the previous tile's readers are done
        load_raw(sK, kb + j0 * D, nk, D, LD, a.vec);
        load_raw(sV, vb + j0 * D, nk, D, LD, a.vec);
        __syncthreads();

        const int valid = tid < nk;
        float s[DEC_ROWS];
#pragma unroll
        for (int r = 0; r < DEC_ROWS; r++) s[r] = 0.0f;
        if (valid) {
            const T *kr = sK + tid * LD;
            for (int c = 0; c < D; c += 8) {
                float kf[8];
                ld8(kr + c, kf);
#pragma unroll
                for (int r = 0; r < DEC_ROWS; r++)
                    if (r < n_rows) {
                        const rk_f4 q0 = *reinterpret_cast<const rk_f4 *>(sQ + r * D + c);
                        const rk_f4 q1 = *reinterpret_cast<const rk_f4 *>(sQ + r * D + c + 4);
                        s[r] += (q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3]) +
                                (q1.x * kf[4] + q1.y * kf[5] + q1.z * kf[6] + q1.w * kf[7]);
                    }
            }
        }
#pragma unroll
        for (int r = 0; r < DEC_ROWS; r++)
            if (r < n_rows) {  // the same for the whole warp
                const float sc = valid ? s[r] * a.scale : -INFINITY;
                if (valid && a.scores) a.scores[(h0 + r) * a.n_keys + j0 + tid] = sc;
                const float m_new = fmaxf(m[r], warp_max(sc));
                const float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - m_new);
                const float p = sc == -INFINITY ? 0.0f : expf(sc - m_new);
                l[r] = l[r] * alpha + p;
#pragma unroll
                for (int c = 0; c < CPL; c++) acc[r][c] *= alpha;
                m[r] = m_new;
                sP[(warp * DEC_ROWS + r) * 32 + lane] = p;
            }
        __syncwarp();
        const int kw = nk - warp * 32 < 32 ? nk - warp * 32 : 32;  // this warp's keys in the tile
        for (int jj = 0; jj < kw; jj++) {
            const T *vr = sV + (warp * 32 + jj) * LD + lane * CPL;
            float vf[CPL];
#pragma unroll
            for (int c = 0; c < CPL; c++) vf[c] = to_f32(vr[c]);
#pragma unroll
            for (int r = 0; r < DEC_ROWS; r++)
                if (r < n_rows) {
                    const float p = sP[(warp * DEC_ROWS + r) * 32 + jj];
#pragma unroll
                    for (int c = 0; c < CPL; c++) acc[r][c] += p * vf[c];
                }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < DEC_ROWS; r++)
        if (r < n_rows) l[r] = warp_sum(l[r]);

    // the warps' states, merged in warp order (the tiles' shared memory is free now)
    __syncthreads();
    float *sM = smem, *sL = sM + DEC_WARPS * DEC_ROWS, *sO = sL + DEC_WARPS * DEC_ROWS;  // sO: (warps, rows, D)
#pragma unroll
    for (int r = 0; r < DEC_ROWS; r++)
        if (r < n_rows) {
            if (lane == 0) {
                sM[warp * DEC_ROWS + r] = m[r];
                sL[warp * DEC_ROWS + r] = l[r];
            }
#pragma unroll
            for (int c = 0; c < CPL; c++) sO[(warp * DEC_ROWS + r) * D + lane * CPL + c] = acc[r][c];
        }
    __syncthreads();
    const int64_t o_row0 = split * a.n_q + h0;
    for (int e = tid; e < n_rows * D + n_rows; e += DEC_THREADS) {
        const int r = e < n_rows * D ? e / D : e - n_rows * D, c = e % D;
        float mx = -INFINITY;
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, sM[w * DEC_ROWS + r]);
        float lsum = 0.0f, o = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) {
            const float mw = sM[w * DEC_ROWS + r], wt = mw == -INFINITY ? 0.0f : expf(mw - mx);
            lsum += sL[w * DEC_ROWS + r] * wt;
            if (e < n_rows * D) o += sO[(w * DEC_ROWS + r) * D + c] * wt;
        }
        if (e < n_rows * D) a.o[(o_row0 + r) * D + c] = lsum > 0.0f ? o / lsum : 0.0f;
        else a.lse[o_row0 + r] = lsum > 0.0f ? mx + logf(lsum) : -INFINITY;
    }
}

// Launch: grid (n_heads), MERGE_THREADS threads. Every thread computes the
// part weights in part order (no shared state, no atomics); thread d writes
// dims d, d + MERGE_THREADS, ... An all-empty head gives o = 0, lse = -inf.
__global__ void __launch_bounds__(MERGE_THREADS)
attn_merge_kernel(float *o, float *lse, const float *o_parts, const float *lse_parts, int64_t n_parts,
                  int64_t n_heads, int dim) {
    const int64_t h = blockIdx.x;
    float m = -INFINITY;
    for (int64_t r = 0; r < n_parts; r++) m = fmaxf(m, lse_parts[r * n_heads + h]);
    if (m == -INFINITY) {
        for (int d = threadIdx.x; d < dim; d += blockDim.x) o[h * dim + d] = 0.0f;
        if (threadIdx.x == 0) lse[h] = -INFINITY;
        return;
    }
    float wsum = 0.0f;
    for (int64_t r = 0; r < n_parts; r++) wsum += expf(lse_parts[r * n_heads + h] - m);
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int64_t r = 0; r < n_parts; r++) {
            const float w = expf(lse_parts[r * n_heads + h] - m);
            if (w > 0.0f) acc += w * o_parts[(r * n_heads + h) * dim + d];
        }
        o[h * dim + d] = acc / wsum;
    }
    if (threadIdx.x == 0) lse[h] = m + logf(wsum);
}

static size_t attn_smem_bytes(int dim, int sep) {
    const size_t ld = (size_t)ATT_DIMP(dim) + ATT_PAD;
    return sizeof(float) * ((sep ? 2 : 1) * ATT_TILE * ld + ATT_ROWS * ld + 2 * ATT_ROWS * ATT_TILE + 3 * ATT_ROWS);
}

// Separate K and V buffers when both fit the default 48 KB (head_dim <= 128).
static int attn_sep(int dim) { return attn_smem_bytes(dim, 1) <= 48 * 1024; }

static int attn_shape_ok(int64_t n_q, int64_t n_kv, int64_t dim, int elem) {
    return n_kv > 0 && n_q > 0 && n_q % n_kv == 0 && dim > 0 && dim <= RK_ATTN_MAX_DIM &&
           (elem == 0 || elem == 1);
}

static int64_t decode_chunk(int64_t n_keys, int64_t n_kv) {
    const int64_t want = (ATT_TARGET_BLOCKS + n_kv - 1) / n_kv;
    int64_t chunk = (n_keys + want - 1) / want;
    if (chunk < ATT_MIN_CHUNK) chunk = ATT_MIN_CHUNK;
    return (chunk + DEC_TILE - 1) / DEC_TILE * DEC_TILE;  // whole tiles of the decode kernel
}

static int is_vec(const void *p, int64_t head_stride, int64_t dim, int elem) {
    const size_t eb = elem == 0 ? 2 : 4;
    return ((uintptr_t)p % 16 == 0) && ((size_t)head_stride * eb) % 16 == 0 && ((size_t)dim * eb) % 16 == 0;
}


// Launches the tile kernel, raising its dynamic shared memory limit past the
// default 48 KB when the shape needs it (head_dim > 128).
template <typename T>
static cudaError_t launch_rows(const attn_args &a, dim3 grid, cudaStream_t stream) {
    const size_t smem = attn_smem_bytes(a.dim, a.sep);
    if (smem > 48 * 1024) {
        cudaError_t err = cudaFuncSetAttribute(attn_rows_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return err;
    }
    RC_LAUNCH(attn_rows_kernel<T>, grid, dim3(ATT_THREADS), smem, stream, a);
    return cudaGetLastError();
}

// The decode kernel for this type and head_dim when it fits DEC_MAX_SMEM;
// cudaErrorNotSupported sends the caller to the tile kernel.
template <typename T, int CPL>
static cudaError_t launch_decode(const attn_args &a, dim3 grid, cudaStream_t stream) {
    const size_t smem = decode_smem_bytes<T, CPL>();
    if (smem > DEC_MAX_SMEM) return cudaErrorNotSupported;
    auto *kernel = attn_decode_kernel<T, CPL>;
    if (smem > 48 * 1024) {
        cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return err;
    }
    RC_LAUNCH(kernel, grid, dim3(DEC_THREADS), smem, stream, a);
    return cudaGetLastError();
}

static cudaError_t launch_decode_any(const attn_args &a, int elem, dim3 grid, cudaStream_t stream) {
    if (elem == 0 && a.dim == 64) return launch_decode<__half, 2>(a, grid, stream);
    if (elem == 0 && a.dim == 128) return launch_decode<__half, 4>(a, grid, stream);
    if (elem == 1 && a.dim == 64) return launch_decode<float, 2>(a, grid, stream);
    return cudaErrorNotSupported;
}

extern "C" size_t rk_attn_decode_scratch_bytes(int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads,
                                               int64_t head_dim) {
    if (n_keys <= 0 || n_kv_heads <= 0) return 0;
    const int64_t chunk = decode_chunk(n_keys, n_kv_heads), n_split = (n_keys + chunk - 1) / chunk;
    if (n_split <= 1) return 0;
    return sizeof(float) * (size_t)(n_split * n_q_heads * (head_dim + 1));
}

extern "C" cudaError_t rk_attn_merge(float *o, float *lse, const float *o_parts, const float *lse_parts,
                                     int64_t n_parts, int64_t n_heads, int64_t head_dim, cudaStream_t stream) {
    if (n_heads <= 0) return cudaSuccess;
    RC_LAUNCH(attn_merge_kernel, dim3((unsigned)n_heads), dim3(MERGE_THREADS), 0, stream, o, lse, o_parts, lse_parts,
              n_parts, n_heads, (int)head_dim);
    return cudaGetLastError();
}

extern "C" cudaError_t rk_attn_decode(float *o, float *lse, float *scores, const float *q, const void *k,
                                      int64_t k_head_stride, const void *v, int64_t v_head_stride, int elem,
                                      int64_t n_keys, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim,
                                      float scale, void *scratch, cudaStream_t stream) {
    if (!attn_shape_ok(n_q_heads, n_kv_heads, head_dim, elem) || n_keys < 0) return cudaErrorInvalidValue;
    if (n_keys == 0) return rk_attn_merge(o, lse, NULL, NULL, 0, n_q_heads, head_dim, stream);  // empty state
    const int64_t chunk = decode_chunk(n_keys, n_kv_heads), n_split = (n_keys + chunk - 1) / chunk;
    const int64_t group = n_q_heads / n_kv_heads;
    float *o_part = n_split > 1 ? (float *)scratch : o;
    float *lse_part = n_split > 1 ? o_part + n_split * n_q_heads * head_dim : lse;
    if (n_split > 1 && !scratch) return cudaErrorInvalidValue;
    attn_args a = {};
    a.q = q; a.o = o_part; a.lse = lse_part; a.scores = scores;
    a.k = k; a.v = v; a.k_hs = k_head_stride; a.v_hs = v_head_stride;
    a.n_keys = n_keys; a.n_q = n_q_heads; a.group = group; a.chunk = chunk;
    a.dim = (int)head_dim; a.vec = is_vec(k, k_head_stride, head_dim, elem) && is_vec(v, v_head_stride, head_dim, elem);
    a.prefill = 0; a.sep = attn_sep(a.dim); a.scale = scale;
    cudaError_t err = launch_decode_any(a, elem, dim3((unsigned)n_kv_heads, (unsigned)n_split,
                                                      (unsigned)((group + DEC_ROWS - 1) / DEC_ROWS)), stream);
    if (err == cudaErrorNotSupported) {  // other head dims and fp32 at 128+: the tile kernel
        const dim3 grid((unsigned)n_kv_heads, (unsigned)n_split, (unsigned)((group + ATT_ROWS - 1) / ATT_ROWS));
        err = elem == 0 ? launch_rows<__half>(a, grid, stream) : launch_rows<float>(a, grid, stream);
    }
    if (err != cudaSuccess || n_split == 1) return err;
    return rk_attn_merge(o, lse, o_part, lse_part, n_split, n_q_heads, head_dim, stream);
}

extern "C" cudaError_t rk_attn_prefill(float *o, float *lse, const float *q, int64_t n_tok, int64_t pos0,
                                       const void *k, int64_t k_head_stride, const void *v, int64_t v_head_stride,
                                       int elem, int64_t n_q_heads, int64_t n_kv_heads, int64_t head_dim, float scale,
                                       cudaStream_t stream) {
    if (!attn_shape_ok(n_q_heads, n_kv_heads, head_dim, elem) || n_tok < 0 || pos0 < 0) return cudaErrorInvalidValue;
    if (n_tok == 0) return cudaSuccess;
    attn_args a = {};
    a.q = q; a.o = o; a.lse = lse; a.scores = NULL;
    a.k = k; a.v = v; a.k_hs = k_head_stride; a.v_hs = v_head_stride;
    a.n_keys = pos0; a.n_tok = n_tok; a.n_q = n_q_heads; a.group = n_q_heads / n_kv_heads; a.chunk = 0;
    a.dim = (int)head_dim; a.vec = is_vec(k, k_head_stride, head_dim, elem) && is_vec(v, v_head_stride, head_dim, elem);
    a.prefill = 1; a.sep = attn_sep(a.dim); a.scale = scale;
    const dim3 grid((unsigned)((n_tok + ATT_ROWS - 1) / ATT_ROWS), (unsigned)n_q_heads);
    return elem == 0 ? launch_rows<__half>(a, grid, stream) : launch_rows<float>(a, grid, stream);
}
