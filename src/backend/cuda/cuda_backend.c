// The CUDA backend: one device, one non-blocking stream and one cuBLAS handle
// per instance; every op is queued on the stream and failures are sticky
// (the first one is kept and reported by synchronize). This file holds the
// table, the instance's lifetime, memory and the helpers of cuda_internal.h.
#include "backend/cuda/backend_cuda.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cuda/cuda_attn.h"
#include "backend/cuda/cuda_comm.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/cuda_ops.h"

#define CUDA_PINNED_SEG_MIN ((size_t)64 << 10)   // bytes per staging segment at first
#define CUDA_STAGE_ALIGN 16

cuda_state *cuda_state_of(const backend *b) { return (cuda_state *)b->impl; }

void cuda_fail(const backend *b, const char *call, int code, const char *what, const char *file, int line) {
    cuda_state *s = cuda_state_of(b);
    if (!s || s->failed) return;
    s->failed = 1;
    const char *base = strrchr(file, '/');
    snprintf(s->err, sizeof(s->err), "%s failed: %s (%d) at %s:%d [rank %d @ %s]", call, what ? what : "?", code,
             base ? base + 1 : file, line, s->rank, s->host);
}

// The rank for messages: the launcher's environment (no MPI call here).
static int env_rank(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

static int device_open(int device, rc_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return rc_fail(err, "--backend cuda: no usable GPU (%s)", cudaGetErrorString(e));
    if (n <= 0) return rc_fail(err, "--backend cuda: no usable GPU (no CUDA device found)");
    if (device >= n)
        return rc_fail(err, "--backend cuda: no usable GPU (--device %d, but %d device%s found)", device, n,
                       n == 1 ? "" : "s");
    e = cudaSetDevice(device);
    if (e != cudaSuccess) return rc_fail(err, "--backend cuda: no usable GPU (%s)", cudaGetErrorString(e));
    return 0;
}

int backend_cuda_describe(int device, char *buf, size_t n_bytes, rc_err *err) {
    if (device < 0) device = 0;
    if (device_open(device, err)) return -1;
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return rc_fail(err, "--backend cuda: no usable GPU (%s)", cudaGetErrorString(e));
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(buf, n_bytes, "device %d: %s, %.1f GiB, compute capability %d.%d, %d SMs (driver %d.%d, runtime %d.%d)",
             device, p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor, p.multiProcessorCount,
             drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    return 0;
}

static void cuda_shutdown(backend *b);

static int cuda_init(backend *b, int device, rc_err *err) {
    if (device < 0) device = 0;
    if (device_open(device, err)) return -1;
    cuda_state *s = calloc(1, sizeof(*s));
    if (!s) return rc_fail(err, "out of memory");
    b->impl = s;
    s->device = device;
    s->rank = env_rank();
    if (gethostname(s->host, sizeof(s->host) - 1)) snprintf(s->host, sizeof(s->host), "?");
    cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        rc_fail(err, "--backend cuda: no usable GPU (cudaStreamCreateWithFlags: %s)", cudaGetErrorString(e));
        goto fail;
    }
    for (int i = 0; i < CUDA_PINNED_SEGS; i++)
        if ((e = cudaEventCreate(&s->seg_done[i])) != cudaSuccess) {
            rc_fail(err, "--backend cuda: cudaEventCreate: %s", cudaGetErrorString(e));
            goto fail;
        }
    cublasStatus_t st = cublasCreate(&s->blas);
    if (st != CUBLAS_STATUS_SUCCESS) {
        rc_fail(err, "--backend cuda: cublasCreate: %s", cublasGetStatusString(st));
        s->blas = NULL;
        goto fail;
    }
    // Pedantic fp32: no TF32 and no reduced-precision reductions, so a GEMM
    // matches cpu_ref to fp32 rounding and gives the same bits on every run.
    if ((st = cublasSetStream(s->blas, s->stream)) != CUBLAS_STATUS_SUCCESS ||
        (st = cublasSetMathMode(s->blas, CUBLAS_PEDANTIC_MATH)) != CUBLAS_STATUS_SUCCESS) {
        rc_fail(err, "--backend cuda: cuBLAS set-up: %s", cublasGetStatusString(st));
        goto fail;
    }
    return 0;
fail:
    cuda_shutdown(b);
    return -1;
}

static void cuda_shutdown(backend *b) {
    cuda_state *s = cuda_state_of(b);
    if (!s) return;
    if (s->stream) cudaStreamSynchronize(s->stream);
    if (s->blas) cublasDestroy(s->blas);
    for (int i = 0; i < CUDA_SCRATCH_SLOTS; i++)
        if (s->scratch[i]) cudaFree(s->scratch[i]);
    for (int i = 0; i < CUDA_PINNED_SEGS; i++)
        if (s->seg_done[i]) cudaEventDestroy(s->seg_done[i]);
    if (s->pinned) cudaFreeHost(s->pinned);
    if (s->result) cudaFreeHost(s->result);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
    b->impl = NULL;
}

static void *cuda_stream(const backend *b) { return cuda_state_of(b)->stream; }

static int cuda_synchronize(const backend *b, rc_err *err) {
    cuda_state *s = cuda_state_of(b);
    CUDA_CHECK(b, cudaStreamSynchronize(s->stream));
    CUDA_CHECK(b, cudaGetLastError());
    if (s->failed) return rc_fail(err, "%s", s->err);
    return 0;
}

void *cuda_scratch(const backend *b, int slot, size_t n_bytes) {
    cuda_state *s = cuda_state_of(b);
    if (n_bytes <= s->scratch_bytes[slot] && s->scratch[slot]) return s->scratch[slot];
    size_t want = s->scratch_bytes[slot] * 2 > n_bytes ? s->scratch_bytes[slot] * 2 : n_bytes;
    if (want < 256) want = 256;
    // Work already queued may still use the old buffer.
    CUDA_CHECK(b, cudaStreamSynchronize(s->stream));
    if (s->scratch[slot]) cudaFree(s->scratch[slot]);
    s->scratch[slot] = NULL;
    s->scratch_bytes[slot] = 0;
    cudaError_t e = cudaMalloc(&s->scratch[slot], want);
    if (e != cudaSuccess) {
        s->scratch[slot] = NULL;
        cuda_fail(b, "cudaMalloc (scratch)", (int)e, cudaGetErrorString(e), __FILE__, __LINE__);
        return NULL;
    }
    s->scratch_bytes[slot] = want;
    return s->scratch[slot];
}

// A piece of pinned memory for n_bytes of staged metadata: a ring of
// CUDA_PINNED_SEGS segments; entering a segment waits for the copies queued
// from it last time round, so host writes never race a pending copy.
static void *pinned_take(const backend *b, size_t n_bytes) {
    cuda_state *s = cuda_state_of(b);
    size_t seg_bytes = s->pinned_bytes / CUDA_PINNED_SEGS;
    n_bytes = (n_bytes + CUDA_STAGE_ALIGN - 1) / CUDA_STAGE_ALIGN * CUDA_STAGE_ALIGN;
    if (n_bytes > seg_bytes) {  // grow: nothing may be pending from the old buffer
        CUDA_CHECK(b, cudaStreamSynchronize(s->stream));
        if (s->pinned) cudaFreeHost(s->pinned);
        s->pinned = NULL;
        s->pinned_bytes = 0;
        seg_bytes = n_bytes > CUDA_PINNED_SEG_MIN ? n_bytes * 2 : CUDA_PINNED_SEG_MIN;
        cudaError_t e = cudaMallocHost(&s->pinned, seg_bytes * CUDA_PINNED_SEGS);
        if (e != cudaSuccess) {
            s->pinned = NULL;
            cuda_fail(b, "cudaMallocHost (staging)", (int)e, cudaGetErrorString(e), __FILE__, __LINE__);
            return NULL;
        }
        s->pinned_bytes = seg_bytes * CUDA_PINNED_SEGS;
        s->pinned_seg = 0;
        s->pinned_head = 0;
        memset(s->seg_used, 0, sizeof(s->seg_used));
    }
    if (s->pinned_head + n_bytes > seg_bytes) {  // next segment: mark this one's last copy
        CUDA_CHECK(b, cudaEventRecord(s->seg_done[s->pinned_seg], s->stream));
        s->seg_used[s->pinned_seg] = 1;
        s->pinned_seg = (s->pinned_seg + 1) % CUDA_PINNED_SEGS;
        s->pinned_head = 0;
        if (s->seg_used[s->pinned_seg]) CUDA_CHECK(b, cudaEventSynchronize(s->seg_done[s->pinned_seg]));
    }
    void *p = (char *)s->pinned + (size_t)s->pinned_seg * seg_bytes + s->pinned_head;
    s->pinned_head += n_bytes;
    return p;
}

const void *cuda_stage(const backend *b, const void *host, size_t n_bytes, size_t offset) {
    cuda_state *s = cuda_state_of(b);
    if (n_bytes == 0) n_bytes = 1;  // a valid pointer for empty lists
    char *dev = cuda_scratch(b, CUDA_SCRATCH_META, offset + n_bytes);
    if (!dev) return NULL;
    void *pin = pinned_take(b, n_bytes);
    if (!pin) return NULL;
    if (host) memcpy(pin, host, n_bytes);
    CUDA_CHECK(b, cudaMemcpyAsync(dev + offset, pin, n_bytes, cudaMemcpyHostToDevice, s->stream));
    return dev + offset;
}

void *cuda_result_buffer(const backend *b, size_t n_bytes) {
    cuda_state *s = cuda_state_of(b);
    if (n_bytes <= s->result_bytes && s->result) return s->result;
    // The previous user synchronized after its copy: nothing is pending here.
    if (s->result) cudaFreeHost(s->result);
    s->result = NULL;
    s->result_bytes = 0;
    size_t want = n_bytes < 4096 ? 4096 : n_bytes;
    cudaError_t e = cudaMallocHost(&s->result, want);
    if (e != cudaSuccess) {
        s->result = NULL;
        cuda_fail(b, "cudaMallocHost (results)", (int)e, cudaGetErrorString(e), __FILE__, __LINE__);
        return NULL;
    }
    s->result_bytes = want;
    return s->result;
}

// ---- memory

static void *cuda_alloc(const backend *b, size_t n_bytes) {
    cuda_state *s = cuda_state_of(b);
    void *p = NULL;
    if (cudaMalloc(&p, n_bytes > 0 ? n_bytes : 1) != cudaSuccess) {
        cudaGetLastError();  // an allocation failure is the caller's to report (NULL), not sticky
        return NULL;
    }
    if (cudaMemsetAsync(p, 0, n_bytes > 0 ? n_bytes : 1, s->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(const backend *b, void *p) {
    if (!p) return;
    // cudaFree waits for the device, so queued work reading p finishes first.
    CUDA_CHECK(b, cudaFree(p));
}

static void cuda_upload(const backend *b, void *dst, const void *src_host, size_t n_bytes) {
    if (n_bytes) CUDA_CHECK(b, cudaMemcpyAsync(dst, src_host, n_bytes, cudaMemcpyHostToDevice, cuda_state_of(b)->stream));
}

static void cuda_download(const backend *b, void *dst_host, const void *src, size_t n_bytes) {
    cuda_state *s = cuda_state_of(b);
    if (n_bytes) CUDA_CHECK(b, cudaMemcpyAsync(dst_host, src, n_bytes, cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(b, cudaStreamSynchronize(s->stream));
}

static void cuda_copy(const backend *b, void *dst, const void *src, size_t n_bytes) {
    if (n_bytes && dst != src)
        CUDA_CHECK(b, cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, cuda_state_of(b)->stream));
}

const backend_ops backend_cuda = {
    .name = "cuda",
    .is_device = 1,
    .supports = cuda_supports,
    .init = cuda_init,
    .shutdown = cuda_shutdown,
    .stream = cuda_stream,
    .synchronize = cuda_synchronize,
    .device_info = cuda_device_info,
    .comm_dev_create = cuda_comm_dev_create,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .weight_upload = cuda_weight_upload,
    .weight_free = cuda_weight_free,
    .rmsnorm = cuda_rmsnorm,
    .matmul = cuda_matmul,
    .rope = cuda_rope,
    .swiglu = cuda_swiglu,
    .attn_decode = cuda_attn_decode,
    .attn_decode_scores = cuda_attn_decode_scores,
    .attn_prefill = cuda_attn_prefill,
    .merge = cuda_merge,
    .argmax = cuda_argmax,
    .add = cuda_add,
    .add_bias = cuda_add_bias,
    .embed = cuda_embed,
    .kv_write = cuda_kv_write,
    .copy_rows = cuda_copy_rows,
    .copy_2d = cuda_copy_2d,
    .mean_heads = cuda_mean_heads,
    .score_reduce = cuda_score_reduce,
    .maxpool_rows = cuda_maxpool_rows,
    .topk_rows = cuda_topk_rows,
};
