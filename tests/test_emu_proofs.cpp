// Proofs that the SIMT emulator catches kernel bugs (tests/emu_proofs/):
// each case passes when the broken kernel IS caught.
//   missing_sync  (a) a block reduction without the __syncthreads after its
//                 shared-memory store gives a wrong sum for some seed in 0..19,
//                 while the correct one is exact for all 20
//   lockstep      (b) a warp reduction relying on implicit lock-step over
//                 volatile shared memory gives a wrong sum for some seed, the
//                 __syncwarp version is exact for all 20
//   overrun       (c) a kernel writing one element past its output faults on the
//                 guard page and the report names the kernel
//   host_deref    (d) a host dereference of a cudaMalloc'd pointer faults
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "check.h"
#include "emu_proofs/proofs.h"

static const int N_SEEDS = 20;

static float *upload(const std::vector<float> &h) {
    float *d = nullptr;
    if (cudaMalloc((void **)&d, h.size() * sizeof(float)) != cudaSuccess) return nullptr;
    cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
    return d;
}

// Rows of small integers (exact sums in any order); returns the number of
// rows whose device sum is not the exact one.
template <typename Launch>
static int wrong_rows(Launch launch, int n_rows, int n) {
    std::vector<float> x((size_t)n_rows * n);
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 40503u) % 13) + 1.0f;
    float *dx = upload(x), *dout = nullptr;
    cudaMalloc((void **)&dout, n_rows * sizeof(float));
    cudaError_t e = launch(dout, dx, n_rows, n);
    std::vector<float> out(n_rows);
    cudaMemcpy(out.data(), dout, n_rows * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(dx);
    cudaFree(dout);
    if (e != cudaSuccess) return -1;
    int bad = 0;
    for (int r = 0; r < n_rows; r++) {
        double ref = 0.0;
        for (int i = 0; i < n; i++) ref += x[(size_t)r * n + i];
        bad += out[r] != (float)ref;
    }
    return bad;
}

template <typename Bad, typename Good>
static void seeds_catch(const char *what, Bad bad, Good good, int n) {
    int caught = 0, good_wrong = 0;
    for (int seed = 0; seed < N_SEEDS; seed++) {
        rc_emu_set_seed((unsigned long long)seed);
        int wb = wrong_rows(bad, 8, n), wg = wrong_rows(good, 8, n);
        if (wb != 0) caught++;
        if (wg != 0) {
            good_wrong++;
            fprintf(stderr, "%s: the correct kernel gave %d wrong rows with seed %d\n", what, wg, seed);
        }
    }
    printf("%s: the broken kernel gave wrong sums under %d of %d seeds\n", what, caught, N_SEEDS);
    CHECK_MSG(caught > 0, "%s: the broken kernel was not caught under seeds 0..%d", what, N_SEEDS - 1);
    CHECK(good_wrong == 0);
}

// Runs fn in a child with stderr captured. Returns 0 when it finished
// normally, else the signal that ended it (SIGSEGV), or 1000 + its exit code
// (the sanitizers report the re-raised fault themselves and exit non-zero).
static int in_child(void (*fn)(void), std::string *err) {
    int p[2];
    if (pipe(p)) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        fn();
        _exit(0);
    }
    close(p[1]);
    char buf[512];
    ssize_t k;
    while ((k = read(p[0], buf, sizeof buf)) > 0) err->append(buf, (size_t)k);
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (!err->empty()) fprintf(stderr, "child's stderr: %s", err->c_str());
    if (WIFSIGNALED(st)) return WTERMSIG(st);
    return WEXITSTATUS(st) ? 1000 + WEXITSTATUS(st) : 0;
}

static bool faulted(int how) { return how == SIGSEGV || how > 1000; }

static void run_overrun(void) {
    const int n = 1000;  // 4000 bytes: the output ends flush against its guard page
    std::vector<float> x(n, 1.0f);
    float *dx = upload(x), *dy = nullptr;
    cudaMalloc((void **)&dy, n * sizeof(float));
    proof_overrun(dy, dx, n, nullptr);
}

static void run_host_deref(void) {
    float *d = nullptr;
    cudaMalloc((void **)&d, 64 * sizeof(float));
    volatile float *v = d;
    v[3] = 1.0f;
}

static void run_in_bounds(void) {
    const int n = 1000;
    std::vector<float> x(n, 1.0f);
    float *dx = upload(x), *dy = nullptr;
    cudaMalloc((void **)&dy, (n + 1) * sizeof(float));
    if (proof_overrun(dy, dx, n, nullptr) != cudaSuccess) _exit(3);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "all";
    bool all = !strcmp(which, "all");
    if (all || !strcmp(which, "missing_sync"))
        seeds_catch(
            "missing __syncthreads",
            [](float *o, const float *x, int r, int n) { return proof_block_sum_nosync(o, x, r, n, 256, nullptr); },
            [](float *o, const float *x, int r, int n) { return proof_block_sum(o, x, r, n, 256, nullptr); }, 256);
    if (all || !strcmp(which, "lockstep"))
        seeds_catch(
            "implicit warp lock-step",
            [](float *o, const float *x, int r, int n) { (void)n; return proof_lockstep_sum(o, x, r, nullptr); },
            [](float *o, const float *x, int r, int n) { (void)n; return proof_syncwarp_sum(o, x, r, nullptr); },
            64);
    if (all || !strcmp(which, "overrun")) {
        std::string err;
        int sig = in_child(run_overrun, &err);
        CHECK_MSG(faulted(sig), "the overrunning kernel ended with %d", sig);
        CHECK(err.find("kernel overrun_kernel") != std::string::npos);
        CHECK(err.find("0 bytes past the end of a 4000-byte device buffer") != std::string::npos);
        // the same kernel with room for the extra element runs clean: the guard, not the kernel, faulted
        std::string err2;
        CHECK(in_child(run_in_bounds, &err2) == 0);
    }
    if (all || !strcmp(which, "host_deref")) {
        std::string err;
        int sig = in_child(run_host_deref, &err);
        CHECK_MSG(faulted(sig), "the host dereference ended with %d", sig);
        CHECK(err.find("host code dereferenced device memory") != std::string::npos);
    }
    TEST_MAIN_END();
}
