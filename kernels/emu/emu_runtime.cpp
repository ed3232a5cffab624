// The SIMT emulator's runtime: thread fibers and their seeded scheduler, warp
// collectives, device memory behind guard pages, and the CUDA runtime calls.
//
// A launch runs its blocks one after another on the calling OS thread; every
// thread of a block is a fiber that runs until it reaches __syncthreads, a
// warp collective or its end. When no fiber can run, the scheduler completes
// the warp collectives whose lanes have all arrived, or else releases the
// block barrier, and reshuffles the run order (seed, block, event count).
// Launches, copies and allocations hold one lock, so two host threads may
// use the emulator at once.
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "kernels/emu/emu_internal.h"
#include "kernels/emu/simt.h"

#if defined(__SANITIZE_ADDRESS__)
#define RC_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RC_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RC_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RC_EMU_TSAN 1
#endif
#endif
#ifdef RC_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef RC_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

// A hand-written context switch on x86-64 (callee-saved registers, MXCSR and
// the x87 control word): swapcontext's two signal-mask syscalls per switch
// made it about 10x slower (README, "The SIMT emulator").
#if defined(__x86_64__) && !defined(RC_EMU_UCONTEXT)
#define RC_EMU_ASM_SWITCH 1
extern "C" void rc_emu_switch(void **save_sp, void *to_sp);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl rc_emu_switch\n"
    ".hidden rc_emu_switch\n"
    ".type rc_emu_switch,@function\n"
    "rc_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size rc_emu_switch, .-rc_emu_switch\n");
#else
#include <ucontext.h>
#endif

namespace rc_emu {
uint3 cur_thread_idx, cur_block_idx;
dim3 cur_block_dim, cur_grid_dim;
}  // namespace rc_emu

using namespace rc_emu;

namespace {

const size_t PAGE = 4096;
const size_t MAX_THREADS = 1024;
const size_t SMEM_DEFAULT = 48 * 1024;   // dynamic shared memory without cudaFuncSetAttribute
const size_t SMEM_OPTIN = 232448;        // H100/H200 opt-in maximum per block
const unsigned long long DEFAULT_SEED = 1;

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// ---- errors
thread_local cudaError_t t_last = cudaSuccess;    // cudaGetLastError
thread_local cudaError_t t_sticky = cudaSuccess;  // a failed launch: every later call returns it
thread_local int t_depth = 0;                     // > 0 while this thread does device work
thread_local const char *t_what = nullptr;        // that work, for fault reports

cudaError_t set_err(cudaError_t e) {
    if (e != cudaSuccess) t_last = e;
    return e;
}

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "recall-emu: %s\n", line);
}

std::mutex g_mu;
unsigned long long g_seed = DEFAULT_SEED;
bool g_poison = true;
unsigned long long g_switches = 0, g_launches = 0;

void read_env() {
    static std::once_flag once;
    std::call_once(once, [] {
        const char *s = getenv("RECALL_EMU_SEED");
        if (s && *s) g_seed = strtoull(s, nullptr, 0);
        const char *p = getenv("RECALL_EMU_POISON");
        if (p && !strcmp(p, "0")) g_poison = false;
    });
}

// ---- device memory: [guard page][data pages, the buffer flush at their end][guard page]
struct dev_alloc {
    char *user;
    size_t n_bytes;
    char *map;
    size_t map_len;
    char *data;
    size_t data_len;
    bool open;
};
std::vector<dev_alloc> g_allocs;  // sorted by address; changed only under g_mu
size_t g_alloc_bytes = 0;

// The allocation whose mapping (guards included) holds p, or NULL. Safe in the
// fault handler: no allocation, and the table changes only under g_mu.
dev_alloc *find_map(const void *p) {
    const char *c = static_cast<const char *>(p);
    size_t lo = 0, hi = g_allocs.size();
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (g_allocs[mid].map + g_allocs[mid].map_len <= c) lo = mid + 1;
        else hi = mid;
    }
    if (lo < g_allocs.size() && g_allocs[lo].map <= c) return &g_allocs[lo];
    return nullptr;
}

// The allocation holding all of [p, p + n) as user bytes; NULL if p is not
// device memory; *past = 1 if p is but the range runs outside the buffer.
dev_alloc *find_range(const void *p, size_t n, int *past) {
    *past = 0;
    dev_alloc *a = find_map(p);
    if (!a) return nullptr;
    const char *c = static_cast<const char *>(p);
    if (c < a->user || n > a->n_bytes || (size_t)(c - a->user) > a->n_bytes - n) *past = 1;
    return a;
}

void open_alloc(dev_alloc *a) {
    if (a->open) return;
    if (g_poison) mprotect(a->data, a->data_len, PROT_READ | PROT_WRITE);
    a->open = true;
}

void close_all() {
    if (!g_poison) return;
    for (dev_alloc &a : g_allocs)
        if (a.open) {
            mprotect(a.data, a.data_len, PROT_NONE);
            a.open = false;
        }
}

// ---- fibers
enum { F_RUN, F_BAR, F_WARP, F_DONE };
struct fiber {
    void *sp;
#ifndef RC_EMU_ASM_SWITCH
    ucontext_t uc;
#endif
    char *stack;  // lowest usable byte; a guard page lies below
    void *asan_fake;
    void *tsan;
    bool dirty;   // abandoned mid-kernel: its stack's ASan poison is stale
    int state;
    int linear, lane, warp;
    uint3 tid;
    const char *file;  // where it waits
    int line;
    int kind;
    int pred;
    unsigned mask;
    int wsize, warg, wwidth;
    uint64_t wvalue, wresult;
};

#if defined(RC_EMU_ASAN) || defined(RC_EMU_TSAN)
const size_t STACK_BYTES = 512 * 1024;  // instrumented frames are several times larger
#else
const size_t STACK_BYTES = 128 * 1024;
#endif

fiber *g_fib[MAX_THREADS];
size_t g_n_fib = 0;
fiber *g_cur = nullptr;
#ifdef RC_EMU_ASM_SWITCH
void *g_sched_sp;
#else
ucontext_t g_sched_uc;
#endif
[[maybe_unused]] void *g_sched_tsan = nullptr;
[[maybe_unused]] const void *g_sched_stack = nullptr;
[[maybe_unused]] size_t g_sched_stack_size = 0;

// The launch in progress.
const launch_cfg *g_cfg = nullptr;
void (*g_body)(void *) = nullptr;
void *g_ctx = nullptr;
unsigned long long g_block_linear = 0;
bool g_failed = false;

// Dynamic shared memory: one mapping, the block's bytes flush against its top guard.
char *g_smem_map = nullptr;
size_t g_smem_map_len = 0;
char *g_smem = nullptr;
size_t g_smem_bytes = 0;

struct func_attr {
    const void *func;
    int max_dyn_smem;
};
std::vector<func_attr> g_func_attrs;

void fiber_entry();

fiber *new_fiber() {
    size_t len = STACK_BYTES + PAGE;
    void *m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mprotect(m, PAGE, PROT_NONE);  // overflow guard
    fiber *f = new fiber();
    f->stack = static_cast<char *>(m) + PAGE;
#ifdef RC_EMU_TSAN
    f->tsan = __tsan_create_fiber(0);
#endif
    return f;
}

void init_fiber(fiber *f) {
#ifdef RC_EMU_ASAN
    if (f->dirty) __asan_unpoison_memory_region(f->stack, STACK_BYTES);
#endif
    f->dirty = false;
    f->asan_fake = nullptr;
#ifdef RC_EMU_ASM_SWITCH
    uint64_t *p = reinterpret_cast<uint64_t *>(f->stack + STACK_BYTES);
    *--p = 0;                                              // fiber_entry's return address (never used)
    *--p = reinterpret_cast<uint64_t>(&fiber_entry);       // rc_emu_switch returns here
    for (int i = 0; i < 6; i++) *--p = 0;                  // rbp rbx r12-r15
    *--p = 0x1F80ull | (0x037Full << 32);                  // default MXCSR, x87 control word
    f->sp = p;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = STACK_BYTES;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_entry, 0);
#endif
}

// Scheduler -> fiber f, until f yields.
void resume(fiber *f) {
    g_cur = f;
    cur_thread_idx = f->tid;
    g_switches += 2;
#ifdef RC_EMU_TSAN
    __tsan_switch_to_fiber(f->tsan, 0);
#endif
#ifdef RC_EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, STACK_BYTES);
#endif
#ifdef RC_EMU_ASM_SWITCH
    rc_emu_switch(&g_sched_sp, f->sp);
#else
    swapcontext(&g_sched_uc, &f->uc);
#endif
#ifdef RC_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    g_cur = nullptr;
}

// Fiber f -> scheduler; returns when f is resumed (never if finished).
void yield_to_sched(fiber *f, bool finished) {
#ifdef RC_EMU_TSAN
    __tsan_switch_to_fiber(g_sched_tsan, 0);
#endif
#ifdef RC_EMU_ASAN
    __sanitizer_start_switch_fiber(finished ? nullptr : &f->asan_fake, g_sched_stack, g_sched_stack_size);
#endif
#ifdef RC_EMU_ASM_SWITCH
    rc_emu_switch(&f->sp, g_sched_sp);
#else
    swapcontext(&f->uc, &g_sched_uc);
#endif
#ifdef RC_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, &g_sched_stack, &g_sched_stack_size);
#endif
}

void fiber_entry() {
#ifdef RC_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack, &g_sched_stack_size);
#endif
    fiber *f = g_cur;
    g_body(g_ctx);
    f->state = F_DONE;
    yield_to_sched(f, true);
    abort();  // a finished fiber is never resumed
}

// splitmix64
uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void shuffle(std::vector<int> &ord, uint64_t event) {
    uint64_t s = mix(g_seed ^ mix(g_block_linear ^ mix(event)));
    for (size_t i = ord.size(); i > 1; i--) {
        s = mix(s);
        size_t j = (size_t)(s % i);
        std::swap(ord[i - 1], ord[j]);
    }
}

const char *warp_name(int kind) {
    static const char *names[WOP_COUNT] = {"__syncwarp",       "__shfl_sync",       "__shfl_up_sync",
                                           "__shfl_down_sync", "__shfl_xor_sync",   "__ballot_sync",
                                           "__any_sync",       "__all_sync",        "__reduce_add_sync",
                                           "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync",
                                           "__reduce_max_sync"};
    return kind >= 0 && kind < WOP_COUNT ? names[kind] : "?";
}

// One line naming kernel, block and thread; the launch then fails (sticky).
void kernel_error(const fiber *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kernel_error(const fiber *f, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char who[160] = "";
    if (f)
        snprintf(who, sizeof who, ", thread (%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
    say("kernel %s, block (%u,%u,%u)%s: %s [RECALL_EMU_SEED=%llu]", g_cfg->name, cur_block_idx.x, cur_block_idx.y,
        cur_block_idx.z, who, msg, g_seed);
    g_failed = true;
}

uint64_t poison_bits(int size) {
    return size == 8 ? 0x7ff8dead7ff8deadull : size == 4 ? 0x7fc0deadull : 0x7e01ull;
}

// Completes the warp collectives whose lanes have all arrived; appends the
// released fibers to `ord`. Returns -1 on a misuse (reported).
int resolve_warps(size_t n_thr, std::vector<int> &ord) {
    for (size_t base = 0; base < n_thr; base += 32) {
        int nl = (int)std::min<size_t>(32, n_thr - base);
        for (int l = 0; l < nl; l++) {
            fiber *f = g_fib[base + l];
            if (f->state != F_WARP) continue;
            unsigned m = f->mask;
            if (!((m >> l) & 1u)) {
                kernel_error(f, "%s at %s:%d: mask 0x%08x leaves out the calling lane %d", warp_name(f->kind),
                             f->file, f->line, m, l);
                return -1;
            }
            if (nl < 32 && (m >> nl)) {
                kernel_error(f, "%s at %s:%d: mask 0x%08x names lanes this warp does not have (%d threads)",
                             warp_name(f->kind), f->file, f->line, m, nl);
                return -1;
            }
            bool ready = true;
            for (int j = 0; j < nl; j++) {
                if (!((m >> j) & 1u)) continue;
                fiber *g = g_fib[base + j];
                if (g->state == F_DONE) {
                    kernel_error(f, "%s at %s:%d: mask 0x%08x names lane %d, which has exited", warp_name(f->kind),
                                 f->file, f->line, m, j);
                    return -1;
                }
                if (g->state != F_WARP) {
                    ready = false;
                    continue;
                }
                if (g->mask != m || g->kind != f->kind) {
                    kernel_error(f, "lane %d is in %s at %s:%d with mask 0x%08x, lane %d in %s at %s:%d with mask 0x%08x",
                                 l, warp_name(f->kind), f->file, f->line, m, j, warp_name(g->kind), g->file, g->line,
                                 g->mask);
                    return -1;
                }
            }
            if (!ready) continue;
            uint64_t val[32], res[32];
            for (int j = 0; j < nl; j++) val[j] = g_fib[base + j]->wvalue;
            uint64_t acc = 0;
            int kind = f->kind;
            if (kind == WOP_MIN_U || kind == WOP_MIN_I) acc = kind == WOP_MIN_U ? 0xffffffffull : 0x7fffffffull;
            if (kind == WOP_MAX_I) acc = 0x80000000ull;
            bool all = true, any = false;
            unsigned ballot = 0;
            for (int j = 0; j < nl; j++) {
                if (!((m >> j) & 1u)) continue;
                uint32_t v = (uint32_t)val[j];
                if (val[j]) ballot |= 1u << j;
                any = any || val[j];
                all = all && val[j];
                switch (kind) {
                case WOP_ADD: acc = (uint32_t)(acc + v); break;
                case WOP_MIN_U: acc = std::min<uint32_t>((uint32_t)acc, v); break;
                case WOP_MAX_U: acc = std::max<uint32_t>((uint32_t)acc, v); break;
                case WOP_MIN_I: acc = (uint32_t)std::min<int32_t>((int32_t)(uint32_t)acc, (int32_t)v); break;
                case WOP_MAX_I: acc = (uint32_t)std::max<int32_t>((int32_t)(uint32_t)acc, (int32_t)v); break;
                default: break;
                }
            }
            for (int j = 0; j < nl; j++) {
                if (!((m >> j) & 1u)) continue;
                fiber *g = g_fib[base + j];
                int w = g->wwidth, seg = j & ~(w - 1), src = j;
                switch (kind) {
                case WOP_SHFL_IDX: src = seg + (g->warg & (w - 1)); break;
                case WOP_SHFL_UP: src = j - g->warg < seg ? j : j - g->warg; break;
                case WOP_SHFL_DOWN: src = j + g->warg >= seg + w ? j : j + g->warg; break;
                case WOP_SHFL_XOR: src = (j ^ g->warg) >= seg + w ? j : (j ^ g->warg); break;
                default: break;
                }
                switch (kind) {
                case WOP_SHFL_IDX: case WOP_SHFL_UP: case WOP_SHFL_DOWN: case WOP_SHFL_XOR:
                    // a lane outside the mask has no defined value: poison (NaN for floats)
                    res[j] = src >= 0 && src < nl && ((m >> src) & 1u) ? val[src] : poison_bits(g->wsize);
                    break;
                case WOP_BALLOT: res[j] = ballot; break;
                case WOP_ANY: res[j] = any; break;
                case WOP_ALL: res[j] = all; break;
                case WOP_SYNC: res[j] = 0; break;
                default: res[j] = acc; break;
                }
            }
            for (int j = 0; j < nl; j++) {
                if (!((m >> j) & 1u)) continue;
                fiber *g = g_fib[base + j];
                g->wresult = res[j];
                g->state = F_RUN;
                ord.push_back((int)(base + j));
            }
        }
    }
    return 0;
}

bool run_block(size_t n_thr) {
    static std::vector<int> ord;
    ord.clear();
    const dim3 bd = cur_block_dim;
    for (size_t i = 0; i < n_thr; i++) {
        fiber *f = g_fib[i];
        init_fiber(f);
        f->state = F_RUN;
        f->linear = (int)i;
        f->lane = (int)(i % 32);
        f->warp = (int)(i / 32);
        f->tid = uint3{(unsigned)(i % bd.x), (unsigned)(i / bd.x % bd.y), (unsigned)(i / ((size_t)bd.x * bd.y))};
        ord.push_back((int)i);
    }
    uint64_t event = 0;
    shuffle(ord, event);
    for (;;) {
        for (size_t k = 0; k < ord.size(); k++) {
            fiber *f = g_fib[ord[k]];
            if (f->state == F_RUN) resume(f);
        }
        ord.clear();
        if (resolve_warps(n_thr, ord) < 0) break;
        if (!ord.empty()) {
            shuffle(ord, ++event);
            continue;
        }
        fiber *bar = nullptr;
        size_t live = 0;
        for (size_t i = 0; i < n_thr; i++) {
            fiber *f = g_fib[i];
            if (f->state == F_DONE) continue;
            live++;
            if (f->state == F_WARP) {
                // which lane of its mask keeps it waiting
                int wait = -1;
                for (int j = 0; j < 32 && wait < 0; j++)
                    if (((f->mask >> j) & 1u) && g_fib[f->warp * 32 + j]->state == F_BAR) wait = j;
                const fiber *g = wait >= 0 ? g_fib[f->warp * 32 + wait] : f;
                kernel_error(f, "deadlock: waits in %s at %s:%d (mask 0x%08x) for lane %d, which waits at "
                                "__syncthreads at %s:%d",
                             warp_name(f->kind), f->file, f->line, f->mask, wait, g->file, g->line);
                break;
            }
            if (!bar) bar = f;
            else if (f->file != bar->file || f->line != bar->line || f->kind != bar->kind) {
                kernel_error(f, "divergent __syncthreads: this thread waits at %s:%d, thread (%u,%u,%u) at %s:%d",
                             f->file, f->line, bar->tid.x, bar->tid.y, bar->tid.z, bar->file, bar->line);
                break;
            }
        }
        if (g_failed) break;
        if (live == 0) break;
        // release the barrier (threads that exited do not count, as on the GPU)
        int count = 0;
        for (size_t i = 0; i < n_thr; i++)
            if (g_fib[i]->state == F_BAR && g_fib[i]->pred) count++;
        int result = bar->kind == 1 ? count : bar->kind == 2 ? (size_t)count == live : bar->kind == 3 ? count > 0 : 0;
        for (size_t i = 0; i < n_thr; i++)
            if (g_fib[i]->state == F_BAR) {
                g_fib[i]->state = F_RUN;
                g_fib[i]->wresult = (uint64_t)result;
                ord.push_back((int)i);
            }
        shuffle(ord, ++event);
    }
    if (g_failed)
        for (size_t i = 0; i < n_thr; i++)
            if (g_fib[i]->state != F_DONE) g_fib[i]->dirty = true;
    return !g_failed;
}

// ---- faults: open device buffers lazily during device work; report the rest
struct sigaction g_old_segv, g_old_bus;

void fault_report(int sig, char *addr) {
    char msg[640];
    int k = 0;
    if (g_cur && g_cfg)
        k = snprintf(msg, sizeof msg, "recall-emu: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", g_cfg->name,
                     cur_block_idx.x, cur_block_idx.y, cur_block_idx.z, g_cur->tid.x, g_cur->tid.y, g_cur->tid.z);
    else if (t_depth > 0 && t_what)
        k = snprintf(msg, sizeof msg, "recall-emu: %s: ", t_what);
    else
        k = snprintf(msg, sizeof msg, "recall-emu: ");
    size_t rest = sizeof msg - (size_t)k;
    dev_alloc *a = find_map(addr);
    if (a && addr >= a->data && addr < a->data + a->data_len && t_depth == 0)
        snprintf(msg + k, rest, "host code dereferenced device memory at %p (a %zu-byte cudaMalloc buffer at %p)\n",
                 (void *)addr, a->n_bytes, (void *)a->user);
    else if (a && addr >= a->data + a->data_len)
        snprintf(msg + k, rest, "access at %p, %zu bytes past the end of a %zu-byte device buffer at %p\n",
                 (void *)addr, (size_t)(addr - (a->user + a->n_bytes)), a->n_bytes, (void *)a->user);
    else if (a && addr < a->user)
        snprintf(msg + k, rest, "access at %p, %zu bytes before a %zu-byte device buffer at %p\n", (void *)addr,
                 (size_t)(a->user - addr), a->n_bytes, (void *)a->user);
    else if (g_smem_map && addr >= g_smem_map && addr < g_smem_map + g_smem_map_len)
        snprintf(msg + k, rest, "access at %p outside the block's %zu bytes of dynamic shared memory (%+td bytes)\n",
                 (void *)addr, g_smem_bytes, addr - g_smem);
    else {
        bool stack = false;
        for (size_t i = 0; i < g_n_fib && !stack; i++)
            stack = addr >= g_fib[i]->stack - PAGE && addr < g_fib[i]->stack;
        snprintf(msg + k, rest, "%s at %p%s\n", sig == SIGBUS ? "bus error" : "segmentation fault", (void *)addr,
                 stack ? ": a device thread overflowed its stack" : "");
    }
    ssize_t w = write(2, msg, strlen(msg));
    // where: "binary(+offset)" lines for addr2line -f -C -e binary offset
    static const char head[] = "recall-emu: backtrace (addr2line -f -C -e <binary> <+offset>):\n";
    w = write(2, head, sizeof head - 1);
    (void)w;
    void *frames[32];
    int n = backtrace(frames, 32);
    backtrace_symbols_fd(frames, n, 2);
}

void on_fault(int sig, siginfo_t *si, void *uc) {
    char *addr = static_cast<char *>(si->si_addr);
    if (t_depth > 0 && g_poison) {
        dev_alloc *a = find_map(addr);
        if (a && !a->open && addr >= a->data && addr < a->data + a->data_len) {
            open_alloc(a);
            return;  // retry the access
        }
    }
    fault_report(sig, addr);
    // re-raise through the previous handler (the sanitizer's, or the default)
    sigaction(sig, sig == SIGBUS ? &g_old_bus : &g_old_segv, nullptr);
}

void install_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        void *warm[2];
        backtrace(warm, 2);  // loads libgcc now: the fault handler must not
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
    // An alternate signal stack, so a fiber's stack overflow is reported too.
    thread_local bool have_alt = false;
    if (!have_alt) {
        stack_t cur;
        if (sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
            stack_t ss;
            ss.ss_size = 64 * 1024;
            ss.ss_sp = malloc(ss.ss_size);
            ss.ss_flags = 0;
            if (ss.ss_sp) sigaltstack(&ss, nullptr);
        }
        have_alt = true;
    }
}

#ifdef RC_EMU_TSAN
// ThreadSanitizer counts fibers as threads, and a forked child has lost every
// thread but the caller: the child starts a new pool (the old one leaks).
void drop_fibers_in_child() { g_n_fib = 0; }
#endif

bool ensure_fibers(size_t n) {
#ifdef RC_EMU_TSAN
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, drop_fibers_in_child); });
#endif
    while (g_n_fib < n) {
        fiber *f = new_fiber();
        if (!f) return false;
        g_fib[g_n_fib++] = f;
    }
    return true;
}

bool ensure_smem() {
    if (g_smem_map) return true;
    g_smem_map_len = PAGE + round_up(SMEM_OPTIN, PAGE) + PAGE;
    void *m = mmap(nullptr, g_smem_map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return false;
    g_smem_map = static_cast<char *>(m);
    mprotect(g_smem_map + PAGE, round_up(SMEM_OPTIN, PAGE), PROT_READ | PROT_WRITE);
    return true;
}

int max_dyn_smem(const void *func) {
    for (const func_attr &a : g_func_attrs)
        if (a.func == func) return a.max_dyn_smem;
    return (int)SMEM_DEFAULT;
}

}  // namespace

struct CUstream_st {
    unsigned magic;
};
struct CUevent_st {
    unsigned magic;
    double t_ms;
    int recorded;
};
static const unsigned STREAM_MAGIC = 0x5eea3u, EVENT_MAGIC = 0xe7e47u;

namespace rc_emu {

void *dyn_smem() { return g_smem; }

int block_sync(int kind, int pred, const char *file, int line) {
    fiber *f = g_cur;
    if (!f) {
        say("__syncthreads at %s:%d called outside a kernel", file, line);
        abort();
    }
    f->state = F_BAR;
    f->kind = kind;
    f->pred = pred != 0;
    f->file = file;
    f->line = line;
    yield_to_sched(f, false);
    cur_thread_idx = f->tid;
    return (int)f->wresult;
}

uint64_t warp_op(int kind, unsigned mask, uint64_t value, int size, int arg, int width, const char *file, int line) {
    fiber *f = g_cur;
    if (!f) {
        say("%s at %s:%d called outside a kernel", warp_name(kind), file, line);
        abort();
    }
    if (width < 1 || width > 32 || (width & (width - 1))) {
        say("kernel %s: %s at %s:%d: width %d is not a power of two in [1, 32]", g_cfg->name, warp_name(kind), file,
            line, width);
        width = 32;
    }
    f->state = F_WARP;
    f->kind = kind;
    f->mask = mask;
    f->wvalue = value;
    f->wsize = size;
    f->warg = arg;
    f->wwidth = width;
    f->file = file;
    f->line = line;
    yield_to_sched(f, false);
    cur_thread_idx = f->tid;
    return f->wresult;
}

unsigned active_mask() {
    fiber *f = g_cur;
    if (!f) return 0;
    unsigned m = 0;
    size_t n_thr = (size_t)cur_block_dim.x * cur_block_dim.y * cur_block_dim.z;
    for (int j = 0; j < 32; j++) {
        size_t i = (size_t)f->warp * 32 + j;
        if (i < n_thr && g_fib[i]->state != F_DONE) m |= 1u << j;
    }
    return m;
}

void launch_impl(const launch_cfg *cfg, void (*body)(void *), void *ctx) {
    read_env();
    std::lock_guard<std::mutex> lock(g_mu);
    if (t_sticky != cudaSuccess) {
        t_last = t_sticky;
        return;
    }
    const dim3 g = cfg->grid, b = cfg->block;
    size_t n_thr = (size_t)b.x * b.y * b.z;
    if (n_thr == 0 || n_thr > MAX_THREADS || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 ||
        g.z > 65535 || g.x > 0x7fffffffu) {
        say("kernel %s: invalid launch configuration: grid (%u,%u,%u), block (%u,%u,%u)", cfg->name, g.x, g.y, g.z,
            b.x, b.y, b.z);
        t_last = cudaErrorInvalidConfiguration;
        return;
    }
    size_t limit = (size_t)max_dyn_smem(cfg->func);
    if (cfg->smem > limit) {
        say("kernel %s: %zu bytes of dynamic shared memory exceed the kernel's limit of %zu%s", cfg->name, cfg->smem,
            limit, limit == SMEM_DEFAULT ? " (raise it with cudaFuncSetAttribute)" : "");
        t_last = cudaErrorInvalidValue;
        return;
    }
    if (!ensure_fibers(n_thr) || !ensure_smem()) {
        say("kernel %s: cannot map fiber stacks or shared memory", cfg->name);
        t_last = cudaErrorLaunchOutOfResources;
        return;
    }
    install_handler();
    g_cfg = cfg;
    g_body = body;
    g_ctx = ctx;
    g_failed = false;
    g_smem_bytes = cfg->smem;
    g_smem = g_smem_map + PAGE + round_up(SMEM_OPTIN, PAGE) - round_up(cfg->smem, 16);
    cur_block_dim = b;
    cur_grid_dim = g;
#ifdef RC_EMU_TSAN
    g_sched_tsan = __tsan_get_current_fiber();
#endif
    t_depth++;
    t_what = cfg->name;
    for (unsigned bz = 0; bz < g.z && !g_failed; bz++)
        for (unsigned by = 0; by < g.y && !g_failed; by++)
            for (unsigned bx = 0; bx < g.x && !g_failed; bx++) {
                cur_block_idx = uint3{bx, by, bz};
                g_block_linear = bx + (unsigned long long)g.x * (by + (unsigned long long)g.y * bz);
                // uninitialized shared memory reads as NaN
                if (cfg->smem) memset(g_smem, 0xff, cfg->smem);
                run_block(n_thr);
            }
    t_depth--;
    t_what = nullptr;
    close_all();
    g_cfg = nullptr;
    g_launches++;
    if (g_failed) t_sticky = t_last = cudaErrorLaunchFailure;
}

cudaError_t device_begin(const char *what) {
    read_env();
    g_mu.lock();
    if (t_sticky != cudaSuccess) {
        g_mu.unlock();
        return t_sticky;
    }
    install_handler();
    t_depth++;
    t_what = what;
    return cudaSuccess;
}

void device_end() {
    t_depth--;
    t_what = nullptr;
    close_all();
    g_mu.unlock();
}

int is_device_range(const void *p, size_t n_bytes) {
    int past = 0;
    return find_range(p, n_bytes, &past) && !past;
}

int classify_device_range(const void *p, size_t n_bytes, const void **base, size_t *size) {
    int past = 0;
    const dev_alloc *a = find_range(p, n_bytes, &past);
    if (!a) return 0;
    *base = a->user;
    *size = a->n_bytes;
    return past ? 1 : 2;
}

int open_device_range(const void *p, size_t n_bytes) {
    int past = 0;
    dev_alloc *a = find_range(p, n_bytes, &past);
    if (!a || past) return 0;
    open_alloc(a);
    return 1;
}

int is_valid_stream(cudaStream_t stream) { return !stream || stream->magic == STREAM_MAGIC; }

void fail_sticky(const char *what, const char *msg) {
    say("%s: %s", what, msg);
    t_sticky = t_last = cudaErrorLaunchFailure;
}

}  // namespace rc_emu

// ---- the runtime API
namespace {

// Checks one side of a copy: device side (want_dev) or host side.
cudaError_t check_side(const char *call, const char *side, const void *p, size_t n, int want_dev, dev_alloc **out) {
    int past = 0;
    dev_alloc *a = find_range(p, n, &past);
    *out = a;
    if (want_dev == 1 && !a) {
        say("%s: %s %p is not device memory", call, side, p);
        return cudaErrorInvalidValue;
    }
    if (want_dev == 0 && a) {
        say("%s: %s %p is device memory, but the copy kind says host", call, side, p);
        return cudaErrorInvalidValue;
    }
    if (a && past) {
        say("%s: %s range [%p, +%zu) runs outside its %zu-byte device buffer at %p", call, side, p, n, a->n_bytes,
            (void *)a->user);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

// want: 1 device, 0 host, -1 either (cudaMemcpyDefault)
cudaError_t copy_locked(const char *call, void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    int want_dst, want_src;
    switch (kind) {
    case cudaMemcpyHostToHost: want_dst = 0, want_src = 0; break;
    case cudaMemcpyHostToDevice: want_dst = 1, want_src = 0; break;
    case cudaMemcpyDeviceToHost: want_dst = 0, want_src = 1; break;
    case cudaMemcpyDeviceToDevice: want_dst = 1, want_src = 1; break;
    case cudaMemcpyDefault: want_dst = -1, want_src = -1; break;
    default: return cudaErrorInvalidMemcpyDirection;
    }
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    dev_alloc *ad, *as;
    cudaError_t e = check_side(call, "destination", dst, n, want_dst, &ad);
    if (e == cudaSuccess) e = check_side(call, "source", src, n, want_src, &as);
    if (e != cudaSuccess) return e;
    if (ad) open_alloc(ad);
    if (as) open_alloc(as);
    memmove(dst, src, n);
    return cudaSuccess;
}

}  // namespace

extern "C" {

int rc_emu_active(void) { return 1; }

void rc_emu_set_seed(unsigned long long seed) {
    read_env();
    std::lock_guard<std::mutex> lock(g_mu);
    g_seed = seed;
}

unsigned long long rc_emu_get_seed(void) {
    read_env();
    std::lock_guard<std::mutex> lock(g_mu);
    return g_seed;
}

void rc_emu_stats(unsigned long long *n_switches, unsigned long long *n_launches) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (n_switches) *n_switches = g_switches;
    if (n_launches) *n_launches = g_launches;
}

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return set_err(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (t_sticky) return t_sticky;
    return set_err(device == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return set_err(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

static size_t host_ram_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)16 << 30;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return set_err(cudaErrorInvalidValue);
    if (device != 0) return set_err(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "SIMT emulator");
    prop->totalGlobalMem = host_ram_bytes();
    prop->sharedMemPerBlock = SMEM_DEFAULT;
    prop->sharedMemPerBlockOptin = SMEM_OPTIN;
    prop->sharedMemPerMultiprocessor = 233472;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = (int)MAX_THREADS;
    prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff, prop->maxGridSize[1] = 65535, prop->maxGridSize[2] = 65535;
    prop->totalConstMem = 65536;
    prop->major = 9, prop->minor = 0;
    prop->multiProcessorCount = 132;  // an H100/H200's, so size-dependent choices match one
    prop->maxThreadsPerMultiProcessor = 2048;
    prop->l2CacheSize = 50 << 20;
    prop->memoryBusWidth = 5120;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version) {
    if (!version) return set_err(cudaErrorInvalidValue);
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    if (!version) return set_err(cudaErrorInvalidValue);
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return t_sticky; }

cudaError_t cudaDeviceReset(void) {
    t_sticky = cudaSuccess;
    t_last = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = t_last;
    t_last = t_sticky;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return t_last; }

const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorNotPermitted: return "cudaErrorNotPermitted";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorUnknown: return "cudaErrorUnknown";
    }
    return "unrecognized error code";
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorNotPermitted: return "operation not permitted";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorUnknown: return "unknown error";
    }
    return "unrecognized error code";
}

cudaError_t cudaMalloc(void **dev_ptr, size_t n_bytes) {
    if (!dev_ptr) return set_err(cudaErrorInvalidValue);
    read_env();
    if (t_sticky) return t_sticky;
    *dev_ptr = nullptr;
    if (n_bytes == 0) return cudaSuccess;
    install_handler();
    size_t data_len = round_up(n_bytes, PAGE);
    if (data_len < n_bytes) return set_err(cudaErrorMemoryAllocation);
    size_t map_len = data_len + 2 * PAGE;
    void *m = mmap(nullptr, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return set_err(cudaErrorMemoryAllocation);
    dev_alloc a;
    a.map = static_cast<char *>(m);
    a.map_len = map_len;
    a.data = a.map + PAGE;
    a.data_len = data_len;
    a.n_bytes = n_bytes;
    a.user = a.data + data_len - round_up(n_bytes, 16);  // 16-byte aligned, flush against the guard when n % 16 == 0
    a.open = !g_poison;
    if (!g_poison && mprotect(a.data, a.data_len, PROT_READ | PROT_WRITE)) {
        munmap(m, map_len);
        return set_err(cudaErrorMemoryAllocation);
    }
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = std::lower_bound(g_allocs.begin(), g_allocs.end(), a,
                               [](const dev_alloc &x, const dev_alloc &y) { return x.map < y.map; });
    g_allocs.insert(it, a);
    g_alloc_bytes += n_bytes;
    *dev_ptr = a.user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *dev_ptr) {
    if (!dev_ptr) return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mu);
    dev_alloc *a = find_map(dev_ptr);
    if (!a || a->user != dev_ptr) {
        say("cudaFree(%p): not a pointer cudaMalloc returned", dev_ptr);
        return set_err(cudaErrorInvalidValue);
    }
    munmap(a->map, a->map_len);
    g_alloc_bytes -= a->n_bytes;
    g_allocs.erase(g_allocs.begin() + (a - g_allocs.data()));
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t n_bytes) {
    if (!ptr) return set_err(cudaErrorInvalidValue);
    if (t_sticky) return t_sticky;
    *ptr = nullptr;
    if (posix_memalign(ptr, 64, n_bytes ? n_bytes : 1)) return set_err(cudaErrorMemoryAllocation);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t n_bytes, unsigned int flags) {
    (void)flags;
    return cudaMallocHost(ptr, n_bytes);
}

cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return set_err(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mu);
    *total_bytes = host_ram_bytes();
    *free_bytes = g_alloc_bytes < *total_bytes ? *total_bytes - g_alloc_bytes : 0;
    return cudaSuccess;
}

static int valid_stream(cudaStream_t s) { return !s || s->magic == STREAM_MAGIC; }

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n_bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    if (t_sticky) return t_sticky;
    if (!valid_stream(stream)) return set_err(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> lock(g_mu);
    t_depth++;
    t_what = "cudaMemcpy";
    cudaError_t e = copy_locked("cudaMemcpy", dst, src, n_bytes, kind);
    t_depth--;
    t_what = nullptr;
    close_all();
    return set_err(e);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n_bytes, cudaMemcpyKind kind) {
    return cudaMemcpyAsync(dst, src, n_bytes, kind, nullptr);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
    if (t_sticky) return t_sticky;
    if (!valid_stream(stream)) return set_err(cudaErrorInvalidResourceHandle);
    if (width > dpitch || width > spitch) return set_err(cudaErrorInvalidPitchValue);
    std::lock_guard<std::mutex> lock(g_mu);
    t_depth++;
    t_what = "cudaMemcpy2D";
    cudaError_t e = cudaSuccess;
    for (size_t r = 0; r < height && e == cudaSuccess; r++)
        e = copy_locked("cudaMemcpy2D", static_cast<char *>(dst) + r * dpitch,
                        static_cast<const char *>(src) + r * spitch, width, kind);
    t_depth--;
    t_what = nullptr;
    close_all();
    return set_err(e);
}

cudaError_t cudaMemsetAsync(void *dev_ptr, int value, size_t n_bytes, cudaStream_t stream) {
    if (t_sticky) return t_sticky;
    if (!valid_stream(stream)) return set_err(cudaErrorInvalidResourceHandle);
    if (n_bytes == 0) return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mu);
    dev_alloc *a;
    cudaError_t e = check_side("cudaMemset", "destination", dev_ptr, n_bytes, 1, &a);
    if (e == cudaSuccess) {
        open_alloc(a);
        memset(dev_ptr, value, n_bytes);
        close_all();
    }
    return set_err(e);
}

cudaError_t cudaMemset(void *dev_ptr, int value, size_t n_bytes) {
    return cudaMemsetAsync(dev_ptr, value, n_bytes, nullptr);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    (void)flags;
    if (!stream) return set_err(cudaErrorInvalidValue);
    if (t_sticky) return t_sticky;
    *stream = new CUstream_st{STREAM_MAGIC};
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream || stream->magic != STREAM_MAGIC) return set_err(cudaErrorInvalidResourceHandle);
    stream->magic = 0;
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (!valid_stream(stream)) return set_err(cudaErrorInvalidResourceHandle);
    return t_sticky;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    (void)flags;
    if (!event) return set_err(cudaErrorInvalidValue);
    *event = new CUevent_st{EVENT_MAGIC, 0.0, 0};
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event || event->magic != EVENT_MAGIC || !valid_stream(stream))
        return set_err(cudaErrorInvalidResourceHandle);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    event->t_ms = ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    event->recorded = 1;
    return t_sticky;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    if (!event || event->magic != EVENT_MAGIC) return set_err(cudaErrorInvalidResourceHandle);
    return t_sticky;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms) return set_err(cudaErrorInvalidValue);
    if (!start || !end || start->magic != EVENT_MAGIC || end->magic != EVENT_MAGIC)
        return set_err(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded) return set_err(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->t_ms - start->t_ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event || event->magic != EVENT_MAGIC) return set_err(cudaErrorInvalidResourceHandle);
    event->magic = 0;
    delete event;
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value) {
    if (!func) return set_err(cudaErrorInvalidValue);
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > SMEM_OPTIN)
        return set_err(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mu);
    for (func_attr &a : g_func_attrs)
        if (a.func == func) {
            a.max_dyn_smem = value;
            return cudaSuccess;
        }
    g_func_attrs.push_back(func_attr{func, value});
    return cudaSuccess;
}

}  // extern "C"
