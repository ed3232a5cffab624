// The SIMT emulator itself: real .cu kernels (tests/emu_proofs/) run through
// RC_LAUNCH, against sums computed here in double (inputs are small integers,
// so every correct summation order gives the exact value); warp collectives
// lane by lane against their CUDA definitions; the misuses it must report;
// the runtime's argument checks.
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "check.h"
#include "emu_proofs/proofs.h"

typedef cudaError_t (*sum_fn)(float *, const float *, int, int, int, cudaStream_t);

// Row sums of small integers: exact in fp32 whatever the order. Returns the
// number of wrong rows, -1 when a call failed (no CHECK: threads call it).
static int sum_errors(sum_fn fn, int n_rows, int n, int threads) {
    std::vector<float> x((size_t)n_rows * n);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 7919u) % 17) - 8.0f;
    float *dx = nullptr, *dout = nullptr;
    if (cudaMalloc((void **)&dx, x.size() * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&dout, n_rows * sizeof(float)) != cudaSuccess)
        return -1;
    std::vector<float> out(n_rows);
    int bad = 0;
    if (cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess ||
        fn(dout, dx, n_rows, n, threads, nullptr) != cudaSuccess ||
        cudaMemcpy(out.data(), dout, n_rows * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess)
        bad = -1;
    for (int r = 0; r < n_rows && bad >= 0; r++) {
        double ref = 0.0;
        for (int i = 0; i < n; i++) ref += x[(size_t)r * n + i];
        if (out[r] != (float)ref) bad++;
    }
    cudaFree(dx);
    cudaFree(dout);
    return bad;
}

static void check_sums(const char *what, sum_fn fn, int n_rows, int n, int threads) {
    int bad = sum_errors(fn, n_rows, n, threads);
    CHECK_MSG(bad == 0, "%s rows %d n %d threads %d: %d wrong sums (-1: a call failed)", what, n_rows, n, threads, bad);
}

static void test_reductions(void) {
    const int shapes[][3] = {{1, 1, 32}, {3, 7, 64}, {5, 1000, 256}, {2, 4097, 1024}, {4, 33, 128}};
    for (unsigned long long seed = 1; seed <= 3; seed++) {
        rc_emu_set_seed(seed);
        for (auto &s : shapes) {
            check_sums("block_sum", proof_block_sum, s[0], s[1], s[2]);
            check_sums("warp_sum", proof_warp_sum, s[0], s[1], s[2]);
        }
    }
}

static int lane_bits(int pred_mod3) {
    unsigned b = 0;
    for (int l = 0; l < 32; l++)
        if (l % 3 == pred_mod3) b |= 1u << l;
    return (int)b;
}

static void test_warp_ops(void) {
    const int WOPS = 14;
    int *d = nullptr;
    CHECK(cudaMalloc((void **)&d, WOPS * 32 * sizeof(int)) == cudaSuccess);
    CHECK(proof_warp_ops(d, nullptr) == cudaSuccess);
    std::vector<int> o(WOPS * 32);
    CHECK(cudaMemcpy(o.data(), d, o.size() * sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    int bad = 0;
    for (int l = 0; l < 32; l++) {
        const int want[WOPS] = {
            50,                                  // shfl idx 5
            (l & ~7) + 3,                        // shfl idx 3, width 8
            l >= 3 ? l - 3 : l,                  // shfl up 3
            (l % 16) + 3 < 16 ? l + 3 : l,       // shfl down 3, width 16
            l ^ 5,                               // shfl xor 5
            lane_bits(0),                        // ballot
            1,                                   // any
            0,                                   // all
            496,                                 // reduce add 0..31
            69,                                  // reduce min 100-l (unsigned)
            21,                                  // reduce max l-10 (int)
            l < 16 ? l ^ 1 : -1,                 // xor within a half-warp mask
            31,                                  // shfl of a double
            (l + 1) % 32,                        // shared memory after __syncwarp
        };
        for (int k = 0; k < WOPS; k++)
            if (o[k * 32 + l] != want[k]) {
                if (bad++ < 10) fprintf(stderr, "warp op %d lane %d: got %d, want %d\n", k, l, o[k * 32 + l], want[k]);
            }
    }
    CHECK(bad == 0);
    cudaFree(d);
}

static void test_big_locals(void) {
    int *d = nullptr;
    CHECK(cudaMalloc((void **)&d, 1024 * sizeof(int)) == cudaSuccess);
    CHECK(proof_big_locals(d, nullptr) == cudaSuccess);
    std::vector<int> h(1024);
    CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    int bad = 0;
    for (int t = 0; t < 1024; t++) {
        int want = 0;
        for (int i = 0; i < 4096; i++) want += (t + i) % 7;
        bad += h[t] != want;
    }
    CHECK(bad == 0);
    cudaFree(d);
}

static void test_block_votes(void) {
    int *d = nullptr, h[5] = {0};
    CHECK(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    CHECK(proof_block_votes(d, nullptr) == cudaSuccess);
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_MSG(h[0] == 34 && h[1] == 1 && h[2] == 1 && h[3] == 0 && h[4] == 90, "%d %d %d %d %d", h[0], h[1], h[2],
              h[3], h[4]);
    cudaFree(d);
}

// Two host threads launching at once (simulated ranks do): each gets its own exact sums.
static void test_two_threads(void) {
    int bad_a = 0, bad_b = 0;
    std::thread a([&] { for (int i = 0; i < 20; i++) bad_a += sum_errors(proof_block_sum, 3, 300, 128) != 0; });
    std::thread b([&] { for (int i = 0; i < 20; i++) bad_b += sum_errors(proof_warp_sum, 2, 500, 64) != 0; });
    a.join();
    b.join();
    CHECK(bad_a == 0 && bad_b == 0);
}

static void test_ids(void) {
    const unsigned gx = 3, gy = 2, bx = 5, by = 3, bz = 2, n_thr = bx * by * bz;
    int *d = nullptr;
    CHECK(cudaMalloc((void **)&d, gx * gy * n_thr * sizeof(int)) == cudaSuccess);
    CHECK(proof_ids(d, gx, gy, bx, by, bz, nullptr) == cudaSuccess);
    std::vector<int> o(gx * gy * n_thr);
    CHECK(cudaMemcpy(o.data(), d, o.size() * sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
    int bad = 0;
    for (unsigned b1 = 0; b1 < gy; b1++)
        for (unsigned b0 = 0; b0 < gx; b0++)
            for (unsigned z = 0; z < bz; z++)
                for (unsigned y = 0; y < by; y++)
                    for (unsigned x = 0; x < bx; x++) {
                        size_t i = (size_t)(b1 * gx + b0) * n_thr + (z * by + y) * bx + x;
                        int want = (int)(x | y << 6 | z << 12 | b0 << 16 | b1 << 22);
                        bad += o[i] != want;
                    }
    CHECK(bad == 0);
    cudaFree(d);
}

// Each misuse fails the launch with a sticky error that later calls report too.
static void test_misuse(void) {
    float *d = nullptr;
    CHECK(cudaMalloc((void **)&d, 32 * sizeof(float)) == cudaSuccess);
    const int cases[] = {1, 2, 3, 5, 6};
    for (int which : cases) {
        fprintf(stderr, "(misuse %d: the emulator should report it below)\n", which);
        cudaError_t e = proof_misuse(which, d, nullptr);
        CHECK_MSG(e == cudaErrorLaunchFailure, "misuse %d: %s", which, cudaGetErrorName(e));
        CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
        float h[32];
        CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaErrorLaunchFailure);
        CHECK(cudaDeviceReset() == cudaSuccess);
        CHECK(cudaGetLastError() == cudaSuccess);
    }
    cudaFree(d);
}

// Runs fn in a child; 1 when it died of SIGSEGV (or, under a sanitizer,
// which reports the re-raised fault itself, exited non-zero).
static int child_faults(void (*fn)(void)) {
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
}

static void smem_overrun(void) {
    float *d = nullptr;
    cudaMalloc((void **)&d, 32 * sizeof(float));
    proof_misuse(4, d, nullptr);
}

static void test_launch_config(void) {
    float *d = nullptr;
    CHECK(cudaMalloc((void **)&d, sizeof(float)) == cudaSuccess);
    CHECK(cudaGetLastError() == cudaSuccess);
    // block of 2048 threads, grid of 0 blocks
    CHECK(proof_block_sum(d, d, 1, 1, 2048, nullptr) == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess);  // not sticky
    CHECK(proof_warp_sum(d, d, 0, 1, 32, nullptr) == cudaErrorInvalidConfiguration);
    // over 48 KB of dynamic shared memory needs cudaFuncSetAttribute, and the opt-in maximum caps it
    CHECK(proof_big_smem(d, 64 * 1024, 0, nullptr) == cudaErrorInvalidValue);
    CHECK(proof_big_smem(d, 64 * 1024, 1, nullptr) == cudaSuccess);
    float h = 0.0f;
    CHECK(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(h == 16384.0f);
    CHECK(proof_big_smem(d, 240 * 1024, 1, nullptr) == cudaErrorInvalidValue);
    cudaGetLastError();
    cudaFree(d);
}

static void test_runtime(void) {
    int n = 0;
    CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n == 1);
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0) == cudaSuccess);
    CHECK(!strcmp(p.name, "SIMT emulator"));
    CHECK(cudaGetDeviceProperties(&p, 1) == cudaErrorInvalidDevice);
    CHECK(cudaSetDevice(1) == cudaErrorInvalidDevice);
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    CHECK(cudaMemGetInfo(&fr, &tot) == cudaSuccess && fr > 0 && fr <= tot);
    float *d = nullptr;
    float h[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[9];
    CHECK(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    CHECK((uintptr_t)d % 16 == 0);
    // wrong kinds and ranges past the buffer are refused
    CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(d, h, sizeof h + 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(d + 1, h, sizeof h, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemcpy(g, d + 2, 6 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(g[0] == 3 && g[5] == 8);
    CHECK(cudaMemsetAsync(d, 0, sizeof h, nullptr) == cudaSuccess);
    CHECK(cudaMemcpy(g, d, sizeof h, cudaMemcpyDefault) == cudaSuccess);
    CHECK(g[0] == 0 && g[7] == 0);
    CHECK(cudaFree(h) == cudaErrorInvalidValue);
    cudaGetLastError();
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    CHECK(cudaMemcpyAsync(d, h, sizeof h, cudaMemcpyHostToDevice, s) == cudaSuccess);
    CHECK(cudaStreamSynchronize(s) == cudaSuccess);
    CHECK(cudaStreamDestroy(s) == cudaSuccess);
    cudaEvent_t a, b;
    float ms = -1.0f;
    CHECK(cudaEventCreate(&a) == cudaSuccess && cudaEventCreate(&b) == cudaSuccess);
    CHECK(cudaEventRecord(a, nullptr) == cudaSuccess && cudaEventRecord(b, nullptr) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaSuccess && ms >= 0.0f);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    CHECK(cudaFree(d) == cudaSuccess);
}

int main(void) {
    test_runtime();
    test_reductions();
    test_warp_ops();
    test_ids();
    test_block_votes();
    test_big_locals();
    test_two_threads();
    test_launch_config();
    test_misuse();
    fprintf(stderr, "(a shared-memory overrun: the emulator should report it below)\n");
    CHECK(child_faults(smem_overrun));
    TEST_MAIN_END();
}
