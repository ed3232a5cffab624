// The CUDA device language for the SIMT emulator: kernels/*.cu compile as
// host C++17 against this header (through kernels/common.cuh with
// RC_SIMT_EMU). Each thread of a block runs as a fiber; __syncthreads and the
// warp collectives are fiber barriers, and the run order between barriers is
// reshuffled from RECALL_EMU_SEED (kernels/emu/emu_runtime.cpp).
#ifndef RC_KERNELS_EMU_SIMT_H
#define RC_KERNELS_EMU_SIMT_H

#ifndef __cplusplus
#error "kernels/emu/simt.h is C++ (it is included by .cu files compiled as C++17)"
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/emu/emu_runtime.h"

// ---- qualifiers
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time and launches are serialized, so a block's shared
// arrays are plain statics (ASan puts redzones around them).
#define __shared__ static

// ---- vector types
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct int2 { int x, y; };
struct uint2 { unsigned x, y; };
struct float2 { float x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
struct __align__(16) float4 { float x, y, z, w; };
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

constexpr int warpSize = 32;

namespace rc_emu {

// The running fiber's coordinates (valid inside a kernel).
extern uint3 cur_thread_idx, cur_block_idx;
extern dim3 cur_block_dim, cur_grid_dim;

// Dynamic shared memory of the running block: flush against a guard page.
void *dyn_smem();

// Block barrier. kind: 0 plain, 1 count, 2 and, 3 or (of pred over the block).
int block_sync(int kind, int pred, const char *file, int line);

enum warp_kind {
    WOP_SYNC, WOP_SHFL_IDX, WOP_SHFL_UP, WOP_SHFL_DOWN, WOP_SHFL_XOR, WOP_BALLOT, WOP_ANY, WOP_ALL,
    WOP_ADD, WOP_MIN_U, WOP_MAX_U, WOP_MIN_I, WOP_MAX_I, WOP_COUNT
};
// A warp collective among the lanes of `mask`; returns this lane's result bits.
uint64_t warp_op(int kind, unsigned mask, uint64_t value, int size, int arg, int width, const char *file, int line);
unsigned active_mask();

struct launch_cfg {
    const char *name;
    const void *func;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
void launch_impl(const launch_cfg *cfg, void (*body)(void *), void *ctx);

template <typename... P>
struct launch_ctx {
    void (*kernel)(P...);
    std::tuple<P...> *args;
    static void run(void *p) {
        launch_ctx *c = static_cast<launch_ctx *>(p);
        std::apply(c->kernel, *c->args);  // each thread gets its own copy of the parameters
    }
};

template <typename... P, typename... A>
void launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            A &&...a) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
    std::tuple<P...> args(static_cast<P>(std::forward<A>(a))...);
    launch_ctx<P...> ctx{kernel, &args};
    launch_cfg cfg{name, reinterpret_cast<const void *>(kernel), grid, block, smem, stream};
    launch_impl(&cfg, &launch_ctx<P...>::run, &ctx);
}

template <typename T>
static inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "warp collectives take 2-, 4- or 8-byte values");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
static inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
template <int K, typename T>
static inline T shfl_at(const char *file, int line, unsigned mask, T var, int arg, int width = 32) {
    return from_bits<T>(warp_op(K, mask, to_bits(var), (int)sizeof(T), arg, width, file, line));
}
static inline void syncwarp_at(const char *file, int line, unsigned mask = 0xffffffffu) {
    warp_op(WOP_SYNC, mask, 0, 4, 0, 32, file, line);
}
static inline unsigned vote_at(int kind, const char *file, int line, unsigned mask, int pred) {
    return (unsigned)warp_op(kind, mask, pred != 0, 4, 0, 32, file, line);
}
static inline unsigned reduce_at(int kind, const char *file, int line, unsigned mask, unsigned v) {
    return (unsigned)warp_op(kind, mask, v, 4, 0, 32, file, line);
}
static inline int reduce_at(int kind, const char *file, int line, unsigned mask, int v) {
    if (kind == WOP_MIN_U) kind = WOP_MIN_I;
    if (kind == WOP_MAX_U) kind = WOP_MAX_I;
    return (int)(unsigned)warp_op(kind, mask, (unsigned)v, 4, 0, 32, file, line);
}

}  // namespace rc_emu

#define threadIdx (static_cast<const uint3 &>(rc_emu::cur_thread_idx))
#define blockIdx (static_cast<const uint3 &>(rc_emu::cur_block_idx))
#define blockDim (static_cast<const dim3 &>(rc_emu::cur_block_dim))
#define gridDim (static_cast<const dim3 &>(rc_emu::cur_grid_dim))

#define RC_EMU_LAUNCH(kernel, grid, block, smem, stream, ...) \
    rc_emu::launch(#kernel, kernel, grid, block, smem, stream, ##__VA_ARGS__)
#define RC_EMU_DYN_SHARED(type, name) type *name = reinterpret_cast<type *>(rc_emu::dyn_smem())

#define __syncthreads() ((void)rc_emu::block_sync(0, 1, __FILE__, __LINE__))
#define __syncthreads_count(p) rc_emu::block_sync(1, (p), __FILE__, __LINE__)
#define __syncthreads_and(p) rc_emu::block_sync(2, (p), __FILE__, __LINE__)
#define __syncthreads_or(p) rc_emu::block_sync(3, (p), __FILE__, __LINE__)
#define __syncwarp(...) rc_emu::syncwarp_at(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(...) rc_emu::shfl_at<rc_emu::WOP_SHFL_IDX>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) rc_emu::shfl_at<rc_emu::WOP_SHFL_UP>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) rc_emu::shfl_at<rc_emu::WOP_SHFL_DOWN>(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) rc_emu::shfl_at<rc_emu::WOP_SHFL_XOR>(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) rc_emu::vote_at(rc_emu::WOP_BALLOT, __FILE__, __LINE__, (mask), (pred))
#define __any_sync(mask, pred) ((int)rc_emu::vote_at(rc_emu::WOP_ANY, __FILE__, __LINE__, (mask), (pred)))
#define __all_sync(mask, pred) ((int)rc_emu::vote_at(rc_emu::WOP_ALL, __FILE__, __LINE__, (mask), (pred)))
#define __reduce_add_sync(mask, v) rc_emu::reduce_at(rc_emu::WOP_ADD, __FILE__, __LINE__, (mask), (v))
#define __reduce_min_sync(mask, v) rc_emu::reduce_at(rc_emu::WOP_MIN_U, __FILE__, __LINE__, (mask), (v))
#define __reduce_max_sync(mask, v) rc_emu::reduce_at(rc_emu::WOP_MAX_U, __FILE__, __LINE__, (mask), (v))
static inline unsigned __activemask() { return rc_emu::active_mask(); }

// Fibers switch only at barriers, so these are plain read-modify-writes.
static inline void __threadfence() {}
static inline void __threadfence_block() {}
template <typename T> static inline T __ldg(const T *p) { return *p; }

#define RC_EMU_ATOMIC(name, expr)                                  \
    template <typename T, typename U>                              \
    static inline T name(T *addr, U val) {                         \
        T old = *addr;                                             \
        T v = (T)val;                                              \
        *addr = (expr);                                            \
        return old;                                                \
    }
RC_EMU_ATOMIC(atomicAdd, old + v)
RC_EMU_ATOMIC(atomicSub, old - v)
RC_EMU_ATOMIC(atomicExch, v)
RC_EMU_ATOMIC(atomicMax, old < v ? v : old)
RC_EMU_ATOMIC(atomicMin, v < old ? v : old)
RC_EMU_ATOMIC(atomicAnd, old & v)
RC_EMU_ATOMIC(atomicOr, old | v)
RC_EMU_ATOMIC(atomicXor, old ^ v)
#undef RC_EMU_ATOMIC
template <typename T, typename U, typename V>
static inline T atomicCAS(T *addr, U compare, V val) {
    T old = *addr;
    if (old == (T)compare) *addr = (T)val;
    return old;
}

// ---- integer and float intrinsics
template <typename A, typename B>
static inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <typename A, typename B>
static inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)b : (C)a;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline unsigned __float_as_uint(float f) { return rc_emu::from_bits<unsigned>(rc_emu::to_bits(f)); }
static inline int __float_as_int(float f) { return rc_emu::from_bits<int>(rc_emu::to_bits(f)); }
static inline float __uint_as_float(unsigned u) { return rc_emu::from_bits<float>(rc_emu::to_bits(u)); }
static inline float __int_as_float(int i) { return rc_emu::from_bits<float>(rc_emu::to_bits(i)); }
static inline long long __double_as_longlong(double d) { return rc_emu::from_bits<long long>(rc_emu::to_bits(d)); }
static inline double __longlong_as_double(long long i) { return rc_emu::from_bits<double>(rc_emu::to_bits(i)); }
// glibc declares these names itself, so they are macros (the exact functions
// stand for the GPU's approximate ones).
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __exp2f(x) exp2f(x)
#define __powf(x, y) powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __sincosf(x, s, c) (*(s) = sinf(x), *(c) = cosf(x), (void)0)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }

// ---- half and bfloat16 (storage types with round-to-nearest-even conversions)
namespace rc_emu {
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
// IEEE binary16 <-> binary32 (the FP16 library's branch-free forms).
static inline uint16_t f32_to_f16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bits_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
static inline float f16_to_f32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    const float normalized = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_f32(sign | (two_w < (1u << 27) ? f32_bits(denormalized) : f32_bits(normalized)));
}
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet NaN
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }
}  // namespace rc_emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(rc_emu::f32_to_f16(f)) {}
    __half(double d) : __x(rc_emu::f32_to_f16((float)d)) {}
    operator float() const { return rc_emu::f16_to_f32(__x); }
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(rc_emu::f32_to_bf16(f)) {}
    __nv_bfloat16(double d) : __x(rc_emu::f32_to_bf16((float)d)) {}
    operator float() const { return rc_emu::bf16_to_f32(__x); }
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;
struct __align__(4) __half2 { __half x, y; };
struct __align__(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __half2 half2;

static inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __half __float2half(float f) { return __ushort_as_half(rc_emu::f32_to_f16(f)); }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __half2float(__half h) { return rc_emu::f16_to_f32(h.__x); }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(rc_emu::f32_to_bf16(f)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return rc_emu::bf16_to_f32(h.__x); }
static inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
static inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
static inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }

// C++ form of cudaFuncSetAttribute (the kernel itself).
template <typename... P>
static inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}

#endif
