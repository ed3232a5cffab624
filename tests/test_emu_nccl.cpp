// The emulator's NCCL on 1..4 ranks that are threads: allgather (out of place
// and in place), broadcast from every root, grouped broadcasts as allgatherv
// with uneven and zero counts, each checked byte by byte against the closed
// form each rank wrote; the counters; and the failures a real job hangs on or
// corrupts with (a count that differs on one rank, a host pointer, an abort
// while others wait, a rank that leaves), which must fail on every rank, fast.
// Device memory stays poisoned between operations (RECALL_EMU_POISON=1).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "check.h"
#include "kernels/emu/emu_nccl.h"

static std::mutex g_check_mu;

// CHECK for rank threads: the condition runs unlocked (it may be a collective).
#define RCHECK(rank, cond)                                                                        \
    do {                                                                                          \
        const bool ok_ = (cond);                                                                  \
        std::lock_guard<std::mutex> l_(g_check_mu);                                               \
        g_checks_run++;                                                                           \
        if (!ok_) {                                                                               \
            g_checks_failed++;                                                                    \
            fprintf(stderr, "%s:%d: rank %d: CHECK failed: %s\n", __FILE__, __LINE__, rank, #cond); \
        }                                                                                         \
    } while (0)

// The byte rank `rank` writes at index i of its contribution `salt`.
static uint8_t pattern(int rank, size_t i, int salt) {
    uint32_t x = (uint32_t)(rank + 1) * 2654435761u ^ (uint32_t)(i * 40503u + (size_t)salt * 977u + 12345u);
    x ^= x >> 15;
    x *= 0x2c1b3c6dU;
    return (uint8_t)(x >> 24);
}

static const uint8_t SENTINEL = 0xA5;

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void *dev_alloc(size_t n_bytes) {
    void *p = nullptr;
    if (cudaMalloc(&p, n_bytes) != cudaSuccess) return nullptr;
    return p;
}

static void upload(void *d, const std::vector<uint8_t> &h) {
    if (!h.empty()) cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice);
}

static std::vector<uint8_t> download(const void *d, size_t n_bytes) {
    std::vector<uint8_t> h(n_bytes, 0);
    if (n_bytes) cudaMemcpy(h.data(), d, n_bytes, cudaMemcpyDeviceToHost);
    return h;
}

// This rank's contribution `salt`, n_bytes long.
static std::vector<uint8_t> contribution(int rank, size_t n_bytes, int salt) {
    std::vector<uint8_t> h(n_bytes);
    for (size_t i = 0; i < n_bytes; i++) h[i] = pattern(rank, i, salt);
    return h;
}

// How many bytes of got[off, off + n) differ from rank's contribution `salt`.
static size_t n_wrong(const std::vector<uint8_t> &got, size_t off, size_t n, int rank, int salt) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[off + i] != pattern(rank, i, salt);
    return bad;
}

typedef std::function<void(int rank, ncclComm_t &comm, cudaStream_t stream)> rank_fn;

// Runs fn on n rank threads, each with its communicator and stream; destroys
// the communicator afterwards unless fn cleared it (an abort frees it).
static void with_ranks(int n, const rank_fn &fn) {
    ncclUniqueId id;
    CHECK(ncclGetUniqueId(&id) == ncclSuccess);
    std::vector<std::thread> threads;
    for (int r = 0; r < n; r++)
        threads.emplace_back([&, r] {
            ncclComm_t comm = nullptr;
            const ncclResult_t ri = ncclCommInitRank(&comm, n, id, r);
            RCHECK(r, ri == ncclSuccess);
            if (ri != ncclSuccess) return;
            int count = -1, rank = -1;
            RCHECK(r, ncclCommCount(comm, &count) == ncclSuccess && count == n);
            RCHECK(r, ncclCommUserRank(comm, &rank) == ncclSuccess && rank == r);
            cudaStream_t s = nullptr;
            cudaStreamCreate(&s);
            fn(r, comm, s);
            cudaStreamDestroy(s);
            if (comm) {
                RCHECK(r, ncclCommFinalize(comm) == ncclSuccess);
                RCHECK(r, ncclCommDestroy(comm) == ncclSuccess);
            }
        });
    for (std::thread &t : threads) t.join();
}

static const struct {
    ncclDataType_t type;
    size_t elem_bytes;
    size_t count;
} GATHER_CASES[] = {{ncclFloat32, 4, 1}, {ncclUint8, 1, 13}, {ncclBfloat16, 2, 33}, {ncclInt64, 8, 7}, {ncclInt32, 4, 1000}};

// Out of place: rank s's bytes land at s * n in every rank's recvbuff.
static void test_allgather(int n_ranks) {
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        unsigned long long c0, b0, c1, b1;
        rc_emu_nccl_stats(&c0, &b0);
        unsigned long long want_bytes = 0;
        int salt = 0;
        for (const auto &k : GATHER_CASES) {
            const size_t n = k.count * k.elem_bytes;
            void *send = dev_alloc(n), *recv = dev_alloc(n * (size_t)n_ranks);
            upload(send, contribution(r, n, salt));
            upload(recv, std::vector<uint8_t>(n * (size_t)n_ranks, SENTINEL));
            RCHECK(r, ncclAllGather(send, recv, k.count, k.type, comm, s) == ncclSuccess);
            const std::vector<uint8_t> got = download(recv, n * (size_t)n_ranks);
            for (int src = 0; src < n_ranks; src++) RCHECK(r, n_wrong(got, (size_t)src * n, n, src, salt) == 0);
            RCHECK(r, download(send, n) == contribution(r, n, salt));  // the send buffer is untouched
            want_bytes += n * (size_t)(n_ranks - 1);
            cudaFree(send);
            cudaFree(recv);
            salt++;
        }
        rc_emu_nccl_stats(&c1, &b1);
        RCHECK(r, c1 - c0 == sizeof GATHER_CASES / sizeof GATHER_CASES[0]);
        RCHECK(r, b1 - b0 == want_bytes);
    });
}

// In place: sendbuff is this rank's slot of recvbuff.
static void test_allgather_in_place(int n_ranks) {
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t count = 129, n = count * 4;
        char *recv = static_cast<char *>(dev_alloc(n * (size_t)n_ranks));
        std::vector<uint8_t> h(n * (size_t)n_ranks, SENTINEL);
        const std::vector<uint8_t> mine = contribution(r, n, 40);
        std::copy(mine.begin(), mine.end(), h.begin() + (ptrdiff_t)((size_t)r * n));
        upload(recv, h);
        RCHECK(r, ncclAllGather(recv + (size_t)r * n, recv, count, ncclFloat32, comm, s) == ncclSuccess);
        const std::vector<uint8_t> got = download(recv, n * (size_t)n_ranks);
        for (int src = 0; src < n_ranks; src++) RCHECK(r, n_wrong(got, (size_t)src * n, n, src, 40) == 0);
        cudaFree(recv);
    });
}

// Every root in turn; non-roots pass a NULL or a junk sendbuff (NCCL ignores
// it), the root sends out of place, then in place.
static void test_broadcast(int n_ranks) {
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t count = 77, n = count * 2;
        void *send = dev_alloc(n), *recv = dev_alloc(n);
        unsigned long long c0, b0, c1, b1;
        rc_emu_nccl_stats(&c0, &b0);
        for (int root = 0; root < n_ranks; root++)
            for (int in_place = 0; in_place < 2; in_place++) {
                const int salt = 50 + root * 2 + in_place;
                upload(send, contribution(r, n, salt));
                upload(recv, r == root && in_place ? contribution(r, n, salt) : std::vector<uint8_t>(n, SENTINEL));
                const void *sb = r == root ? (in_place ? recv : send) : (r % 2 ? nullptr : send);
                RCHECK(r, ncclBroadcast(sb, recv, count, ncclFloat16, root, comm, s) == ncclSuccess);
                RCHECK(r, n_wrong(download(recv, n), 0, n, root, salt) == 0);
            }
        rc_emu_nccl_stats(&c1, &b1);
        RCHECK(r, c1 - c0 == 2ull * (unsigned long long)n_ranks);
        RCHECK(r, b1 - b0 == 2ull * (unsigned long long)(n_ranks - 1) * n);  // the root receives nothing
        cudaFree(send);
        cudaFree(recv);
    });
}

// allgatherv as the device communicator builds it: one broadcast per root in
// a group, counts uneven and some zero (those calls are local no-ops).
static void test_grouped_allgatherv(int n_ranks, bool nested) {
    static const size_t COUNTS[] = {5, 0, 17, 1};
    size_t displ[5] = {0};
    for (int r = 0; r < n_ranks; r++) displ[r + 1] = displ[r] + COUNTS[r];
    const size_t total = displ[n_ranks];
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t es = 4;
        void *send = COUNTS[r] ? dev_alloc(COUNTS[r] * es) : nullptr;
        char *recv = static_cast<char *>(dev_alloc(total * es));
        if (send) upload(send, contribution(r, COUNTS[r] * es, 60));
        upload(recv, std::vector<uint8_t>(total * es, SENTINEL));
        unsigned long long c0, b0, c1, b1;
        rc_emu_nccl_stats(&c0, &b0);
        RCHECK(r, ncclGroupStart() == ncclSuccess);
        if (nested) RCHECK(r, ncclGroupStart() == ncclSuccess);
        for (int root = 0; root < n_ranks; root++) {
            char *dst = recv + displ[root] * es;
            RCHECK(r, ncclBroadcast(root == r ? send : dst, dst, COUNTS[root], ncclFloat32, root, comm, s) == ncclSuccess);
        }
        if (nested) {
            RCHECK(r, ncclGroupEnd() == ncclSuccess);
            // the outer group still holds the calls: nothing has moved yet
            RCHECK(r, download(recv, total * es) == std::vector<uint8_t>(total * es, SENTINEL));
        }
        RCHECK(r, ncclGroupEnd() == ncclSuccess);
        const std::vector<uint8_t> got = download(recv, total * es);
        for (int src = 0; src < n_ranks; src++)
            RCHECK(r, n_wrong(got, displ[src] * es, COUNTS[src] * es, src, 60) == 0);
        rc_emu_nccl_stats(&c1, &b1);
        unsigned long long want_calls = 0, want_bytes = 0;
        for (int src = 0; src < n_ranks; src++) {
            want_calls += COUNTS[src] > 0;
            if (src != r) want_bytes += COUNTS[src] * es;
        }
        RCHECK(r, c1 - c0 == want_calls);
        RCHECK(r, b1 - b0 == want_bytes);
        cudaFree(send);
        cudaFree(recv);
    });
}

// A count that differs on the last rank: ncclInvalidUsage on every rank (NCCL
// would hang), nothing counted, and the communicator still works afterwards.
static void test_mismatch(int n_ranks) {
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t count = 16, n = count * 4;
        void *send = dev_alloc(n + 4), *recv = dev_alloc((n + 4) * (size_t)n_ranks);
        unsigned long long c0, c1;
        rc_emu_nccl_stats(&c0, nullptr);
        const double t0 = now_s();
        const size_t mine = r == n_ranks - 1 ? count + 1 : count;
        RCHECK(r, ncclAllGather(send, recv, mine, ncclFloat32, comm, s) == ncclInvalidUsage);
        RCHECK(r, now_s() - t0 < 5.0);
        RCHECK(r, strstr(ncclGetLastError(comm), "count 16 on ") != nullptr);
        RCHECK(r, strstr(ncclGetLastError(comm), "17 on rank ") != nullptr);
        // a root that differs
        RCHECK(r, ncclBroadcast(send, recv, count, ncclFloat32, r == 0 ? 0 : n_ranks - 1, comm, s) == ncclInvalidUsage);
        RCHECK(r, strstr(ncclGetLastError(comm), "root") != nullptr);
        // an allgather on some ranks, a broadcast on the others
        const ncclResult_t e = r == 0 ? ncclAllGather(send, recv, count, ncclFloat32, comm, s)
                                      : ncclBroadcast(send, recv, count, ncclFloat32, 0, comm, s);
        RCHECK(r, e == ncclInvalidUsage);
        RCHECK(r, strstr(ncclGetLastError(comm), "op ncclAllGather on rank 0, ncclBroadcast on rank") != nullptr);
        rc_emu_nccl_stats(&c1, nullptr);
        RCHECK(r, c1 == c0);
        upload(send, contribution(r, n, 70));
        RCHECK(r, ncclAllGather(send, recv, count, ncclFloat32, comm, s) == ncclSuccess);
        const std::vector<uint8_t> got = download(recv, n * (size_t)n_ranks);
        for (int src = 0; src < n_ranks; src++) RCHECK(r, n_wrong(got, (size_t)src * n, n, src, 70) == 0);
        cudaFree(send);
        cudaFree(recv);
    });
}

// Buffers that are not device memory, or not enough of it: ncclInvalidArgument
// on the rank that passed them, ncclInvalidUsage on its peers, no hang; inside
// a group, both from the call and from ncclGroupEnd.
static void test_bad_arguments(int n_ranks) {
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t count = 8, n = count * 4;
        void *send = dev_alloc(n), *recv = dev_alloc(n * (size_t)n_ranks);
        void *short_recv = dev_alloc(n * (size_t)n_ranks - 1);
        std::vector<uint8_t> host(n * (size_t)n_ranks);
        const int bad = n_ranks - 1;
        const ncclResult_t want = r == bad ? ncclInvalidArgument : ncclInvalidUsage;
        RCHECK(r, ncclAllGather(r == bad ? host.data() : send, recv, count, ncclFloat32, comm, s) == want);
        if (r == bad) RCHECK(r, strstr(ncclGetLastError(comm), "is not device memory") != nullptr);
        RCHECK(r, ncclAllGather(send, r == bad ? short_recv : recv, count, ncclFloat32, comm, s) == want);
        if (r == bad) RCHECK(r, strstr(ncclGetLastError(comm), "runs outside its") != nullptr);
        RCHECK(r, ncclAllGather(send, recv, count, r == bad ? (ncclDataType_t)42 : ncclFloat32, comm, s) == want);
        RCHECK(r, ncclBroadcast(send, r == bad ? host.data() : recv, count, ncclFloat32, 0, comm, s) == want);
        // overlapping, but not in place
        RCHECK(r, ncclAllGather(r == bad ? static_cast<char *>(recv) + 4 : send, recv, count, ncclFloat32, comm, s) == want);
        RCHECK(r, ncclGroupStart() == ncclSuccess);
        RCHECK(r, ncclBroadcast(send, r == bad ? host.data() : recv, count, ncclFloat32, 0, comm, s) ==
                      (r == bad ? ncclInvalidArgument : ncclSuccess));
        RCHECK(r, ncclBroadcast(send, recv, count, ncclFloat32, 0, comm, s) == ncclSuccess);
        RCHECK(r, ncclGroupEnd() == want);
        // a bad stream; a root that is no rank (local, zero count or not)
        RCHECK(r, ncclAllGather(send, recv, count, ncclFloat32, comm, r == bad ? (cudaStream_t)host.data() : s) == want);
        RCHECK(r, ncclBroadcast(send, recv, 0, ncclFloat32, n_ranks, comm, s) == ncclInvalidArgument);
        // the communicator still works
        upload(send, contribution(r, n, 80));
        RCHECK(r, ncclAllGather(send, recv, count, ncclFloat32, comm, s) == ncclSuccess);
        const std::vector<uint8_t> got = download(recv, n * (size_t)n_ranks);
        for (int src = 0; src < n_ranks; src++) RCHECK(r, n_wrong(got, (size_t)src * n, n, src, 80) == 0);
        cudaFree(send);
        cudaFree(recv);
        cudaFree(short_recv);
    });
}

// Rank 0 aborts while the others wait in an allgather: they return
// ncclRemoteError within a bound, and so does every later call.
static void test_abort(int n_ranks) {
    std::atomic<double> t_abort{0.0};
    with_ranks(n_ranks, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        const size_t count = 4, n = count * 4;
        void *send = dev_alloc(n), *recv = dev_alloc(n * (size_t)n_ranks);
        if (r == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            t_abort.store(now_s());
            RCHECK(r, ncclCommAbort(comm) == ncclSuccess);
            comm = nullptr;
        } else {
            RCHECK(r, ncclAllGather(send, recv, count, ncclFloat32, comm, s) == ncclRemoteError);
            const double waited = now_s() - t_abort.load();
            RCHECK(r, t_abort.load() > 0.0 && waited < 2.0);
            ncclResult_t async = ncclSuccess;
            RCHECK(r, ncclCommGetAsyncError(comm, &async) == ncclSuccess && async == ncclRemoteError);
            const double t0 = now_s();
            RCHECK(r, ncclBroadcast(send, recv, count, ncclFloat32, 0, comm, s) == ncclRemoteError);
            RCHECK(r, now_s() - t0 < 1.0);
            RCHECK(r, strstr(ncclGetLastError(comm), "rank 0 aborted") != nullptr);
        }
        cudaFree(send);
        cudaFree(recv);
    });
}

// A rank that destroys its communicator while others wait (or later come):
// they fail instead of hanging.
static void test_departed(void) {
    with_ranks(2, [&](int r, ncclComm_t &comm, cudaStream_t s) {
        void *buf = dev_alloc(64);
        if (r == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            RCHECK(r, ncclCommDestroy(comm) == ncclSuccess);
            comm = nullptr;
        } else {
            RCHECK(r, ncclBroadcast(buf, buf, 16, ncclFloat32, 1, comm, s) == ncclInvalidUsage);
            RCHECK(r, ncclBroadcast(buf, buf, 16, ncclFloat32, 1, comm, s) == ncclInvalidUsage);
        }
        cudaFree(buf);
    });
}

// ncclCommInitRank's checks; the ranks that did join learn of a bad joiner at once.
static void test_init(void) {
    ncclUniqueId id, zero;
    memset(&zero, 0, sizeof zero);
    ncclComm_t c = nullptr;
    CHECK(ncclGetUniqueId(&id) == ncclSuccess);
    CHECK(ncclCommInitRank(&c, 2, zero, 0) == ncclInvalidArgument && c == nullptr);
    CHECK(ncclCommInitRank(&c, 2, id, 2) == ncclInvalidArgument);
    CHECK(ncclCommInitRank(&c, 0, id, 0) == ncclInvalidArgument);
    CHECK(ncclCommInitRank(nullptr, 1, id, 0) == ncclInvalidArgument);
    for (int dup = 0; dup < 2; dup++) {
        ncclUniqueId id2;
        CHECK(ncclGetUniqueId(&id2) == ncclSuccess);
        CHECK(memcmp(&id, &id2, sizeof id) != 0);
        ncclResult_t got[2];
        const double t0 = now_s();
        std::thread a([&] {
            ncclComm_t x = nullptr;
            got[0] = ncclCommInitRank(&x, 2, id2, 0);
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        ncclComm_t y = nullptr;
        got[1] = dup ? ncclCommInitRank(&y, 2, id2, 0) : ncclCommInitRank(&y, 3, id2, 1);
        a.join();
        CHECK(got[0] == ncclInvalidArgument && got[1] == ncclInvalidArgument);
        CHECK(now_s() - t0 < 5.0);
    }
    CHECK(ncclCommInitRank(&c, 1, id, 0) == ncclSuccess);  // the id was not used up by the failures above
    int v = 0;
    CHECK(ncclCommCount(c, &v) == ncclSuccess && v == 1);
    CHECK(ncclCommDestroy(c) == ncclSuccess);
}

static void test_misc(void) {
    int v = 0;
    CHECK(ncclGetVersion(&v) == ncclSuccess && v == 22809);
    CHECK(strcmp(ncclGetErrorString(ncclSuccess), "no error") == 0);
    CHECK(strcmp(ncclGetErrorString(ncclRemoteError), "remote process exited or there was a network error") == 0);
    CHECK(strncmp(ncclGetErrorString(ncclInvalidUsage), "invalid usage", 13) == 0);
    CHECK(strcmp(ncclGetErrorString((ncclResult_t)99), "unknown result code") == 0);
    CHECK(ncclGroupEnd() == ncclInvalidUsage);
    CHECK(strstr(ncclGetLastError(nullptr), "without ncclGroupStart") != nullptr);
    CHECK(ncclAllGather(nullptr, nullptr, 1, ncclFloat32, nullptr, nullptr) == ncclInvalidArgument);
    CHECK(ncclCommDestroy(nullptr) == ncclSuccess);
    CHECK(ncclCommAbort(nullptr) == ncclSuccess);
}

int main(void) {
    setenv("RECALL_EMU_POISON", "1", 1);  // before the emulator reads it
    alarm(120);                           // a hang fails the test instead of holding CI
    const double t0 = now_s();
    test_misc();
    test_init();
    for (int n = 1; n <= 4; n++) {
        test_allgather(n);
        test_allgather_in_place(n);
        test_broadcast(n);
        test_grouped_allgatherv(n, n == 3);
        test_bad_arguments(n);
        if (n >= 2) test_mismatch(n);
        if (n >= 2) test_abort(n);
    }
    test_departed();
    printf("test_emu_nccl: %.2f s\n", now_s() - t0);
    TEST_MAIN_END();
}
