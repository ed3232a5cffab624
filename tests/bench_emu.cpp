// The SIMT emulator's speed: fiber switches per second on a launch of
// 1024 blocks x 256 threads with 4 barriers (checked against the same rounds
// on the host: #wrong), and what device-memory poisoning costs per launch and
// per copy (run once with RECALL_EMU_POISON=0 and once without).
//   bench_emu [n_blocks threads barriers]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <vector>

#include "emu_proofs/proofs.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const int n_blocks = argc > 1 ? atoi(argv[1]) : 1024, threads = argc > 2 ? atoi(argv[2]) : 256;
    const int barriers = argc > 3 ? atoi(argv[3]) : 4;
    const size_t n = (size_t)n_blocks * threads;
    std::vector<float> x(n), ref(n), out(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 7);
    // host reference of the rounds
    for (int b = 0; b < n_blocks; b++) {
        std::vector<float> s(x.begin() + (size_t)b * threads, x.begin() + (size_t)(b + 1) * threads), t(threads);
        for (int r = 0; r < barriers / 2; r++) {
            for (int i = 0; i < threads; i++) t[i] = s[i] + s[(i + 1) % threads];
            s = t;
        }
        std::copy(s.begin(), s.end(), ref.begin() + (size_t)b * threads);
    }
    float *dx, *dout;
    cudaMalloc((void **)&dx, n * sizeof(float));
    cudaMalloc((void **)&dout, n * sizeof(float));
    cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    std::vector<double> times;
    unsigned long long sw0, sw1;
    for (int run = 0; run < 3; run++) {
        rc_emu_stats(&sw0, nullptr);
        double t0 = now_s();
        if (proof_bench_rounds(dout, dx, n_blocks, threads, barriers, nullptr) != cudaSuccess) return 1;
        times.push_back(now_s() - t0);
        rc_emu_stats(&sw1, nullptr);
    }
    cudaMemcpy(out.data(), dout, n * sizeof(float), cudaMemcpyDeviceToHost);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += out[i] != ref[i];
    std::sort(times.begin(), times.end());
    printf("launch %d blocks x %d threads, %d barriers: %.3f s (best of 3), %.2f M fiber switches/s, #wrong %zu\n",
           n_blocks, threads, barriers, times[0], (double)(sw1 - sw0) / times[0] / 1e6, wrong);

    // poisoning: 16 buffers touched per launch among 256 allocations; small copies
    const int n_bufs = 16, n_idle = 240, iters = 2000;
    std::vector<float *> bufs(n_bufs), idle(n_idle);
    for (float *&p : bufs) cudaMalloc((void **)&p, 256 * sizeof(float));
    for (float *&p : idle) cudaMalloc((void **)&p, 4096);
    double t0 = now_s();
    for (int i = 0; i < iters; i++) proof_bench_touch(bufs.data(), n_bufs, 256, nullptr);
    double t_launch = (now_s() - t0) / iters;
    std::vector<float> h(1024);
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        cudaMemcpy(idle[i % n_idle], h.data(), 4096, cudaMemcpyHostToDevice);
        cudaMemcpy(h.data(), idle[i % n_idle], 4096, cudaMemcpyDeviceToHost);
    }
    double t_copy = (now_s() - t0) / (2.0 * iters);
    const char *poison = getenv("RECALL_EMU_POISON");
    printf("poisoning %s: %.1f us per launch of 16 x 256 threads touching 16 of 256 buffers, %.2f us per 4 KB copy\n",
           poison && !strcmp(poison, "0") ? "off" : "on", t_launch * 1e6, t_copy * 1e6);
    for (float *p : bufs) cudaFree(p);
    for (float *p : idle) cudaFree(p);
    cudaFree(dx);
    cudaFree(dout);
    return wrong != 0;
}
