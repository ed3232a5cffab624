// The MPI communicator under a real mpirun (tests/cli/mpi_comm.cmake runs it
// with -np 3 on one host):
//   mpi_comm_check                 checks; exits non-zero on any mismatch
//   mpi_comm_check --fail-rank R   rank R reports an injected failure and
//                                  aborts (exit code 3) while the others wait
//                                  in a collective: the job must end promptly
// The checks run twice: on a communicator with the default 1 GiB per-call
// limit (whole transfers in one MPI call), and on a second one limited to
// 1000 bytes per call, so the same data goes through the chunked paths
// (strided-datatype allgather chunks, allgatherv as per-owner chunked bcasts,
// chunked bcast). Each: rank/size/host and local rank consistency (one host
// => local_size == size and local_rank == rank), allgather / allgatherv (with
// zero-byte contributions) / bcast from every root compared byte by byte with
// the senders' patterns, guard bytes after every receive buffer, exact
// counters per phase, and an MPI error (bad root, bypassing the wrapper's
// check) that must come back as an rc_err naming MPI_Bcast and
// "[rank r @ host]" rather than killing the job.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

#define GUARD_BYTES 16
#define GUARD_VALUE 0xCD
#define SMALL_CALL_BYTES "1000"

static int g_rank = -1;
static int g_failed = 0;

#define EXPECT(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            g_failed++;                                                                  \
            fprintf(stderr, "[rank %d] %s:%d: FAILED %s: ", g_rank, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                \
            fprintf(stderr, "\n");                                                       \
        }                                                                                \
    } while (0)

static _Noreturn void die(comm *c, const rc_err *err, const char *what) {
    fprintf(stderr, "recall: %s: %s\n", what, err->msg);
    c->ops->abort(c, 2);
    exit(2);  // not reached: abort does not return (the function pointer cannot say so)
}

static uint8_t pattern(int step, int src, size_t i) {
    return (uint8_t)((unsigned)step * 197u ^ (unsigned)src * 59u ^ (unsigned)i * 13u ^ (unsigned)(i >> 8) ^ 0x5Au);
}

static size_t counts_of(int id, int r, int size) {
    switch (id) {
    case 0: return (size_t)r * 5;                  // rank 0 contributes nothing
    case 1: return r % 2 ? 0 : (size_t)(17 + r);  // odd ranks contribute nothing
    case 2: return 0;                             // nobody
    case 3: return r == size - 1 ? 1000 : 0;      // only the last rank
    default: return (size_t)(3000 + 11 * r);      // everyone, several KiB
    }
}

typedef struct host_info {
    int32_t rank, local_rank, local_size;
    char host[sizeof(((comm *)0)->host)];
} host_info;

static void check_topology(comm *c, const char *label) {
    rc_err err = {{0}};
    EXPECT(strcmp(c->kind, "mpi") == 0, "%s: kind %s", label, c->kind);
    EXPECT(c->size >= 1 && c->rank >= 0 && c->rank < c->size, "%s: rank %d size %d", label, c->rank, c->size);
    EXPECT(c->local_size >= 1 && c->local_rank >= 0 && c->local_rank < c->local_size, "%s: local %d of %d", label,
           c->local_rank, c->local_size);
    EXPECT(c->host[0] != '\0' && strcmp(c->host, "?") != 0, "%s: host '%s'", label, c->host);
    host_info mine = {.rank = c->rank, .local_rank = c->local_rank, .local_size = c->local_size};
    memcpy(mine.host, c->host, sizeof(mine.host));
    host_info *all = calloc((size_t)c->size, sizeof(host_info));
    if (!all) exit(2);
    c->phase = COMM_PHASE_SETUP;
    if (comm_allgather(c, &mine, sizeof(mine), all, &err)) die(c, &err, "allgather(host_info)");
    int same_host = 0, all_one_host = 1;
    unsigned long long seen = 0;  // local ranks on this host (this test runs <= 64 ranks per host)
    for (int r = 0; r < c->size; r++) {
        EXPECT(all[r].rank == r, "%s: slot %d holds rank %d", label, r, all[r].rank);
        if (strcmp(all[r].host, c->host) != 0) {
            all_one_host = 0;
            continue;
        }
        same_host++;
        EXPECT(all[r].local_size == c->local_size, "%s: rank %d local_size %d, mine %d", label, r, all[r].local_size,
               c->local_size);
        const int lr = all[r].local_rank;
        if (lr >= 0 && lr < 64) {
            EXPECT(!(seen & (1ull << lr)), "%s: local rank %d used twice on %s", label, lr, c->host);
            seen |= 1ull << lr;
        }
    }
    EXPECT(same_host == c->local_size, "%s: %d ranks on %s but local_size %d", label, same_host, c->host,
           c->local_size);
    if (all_one_host) {
        EXPECT(c->local_size == c->size, "%s: one host but local_size %d of %d", label, c->local_size, c->size);
        EXPECT(c->local_rank == c->rank, "%s: one host but local_rank %d != rank %d", label, c->local_rank, c->rank);
    }
    free(all);
}

static int guard_ok(const uint8_t *p) {
    for (int i = 0; i < GUARD_BYTES; i++)
        if (p[i] != GUARD_VALUE) return 0;
    return 1;
}

// Runs the data checks and returns; want[] accumulates the expected counters.
static void check_data(comm *c, const char *label, comm_counters want[COMM_PHASE_COUNT]) {
    rc_err err = {{0}};
    const int size = c->size, me = c->rank;
    const size_t cap = (size_t)size * 70000 + 8192;
    uint8_t *send = malloc(cap), *recv = malloc(cap + GUARD_BYTES);
    size_t *counts = malloc((size_t)size * sizeof(size_t));
    if (!send || !recv || !counts) exit(2);
    int step = 0;

    c->phase = COMM_PHASE_PREFILL;
    const size_t sizes[] = {0, 1, 7, 333, 334, 4099, 70000};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++, step++) {
        const size_t n = sizes[k];
        for (size_t i = 0; i < n; i++) send[i] = pattern(step, me, i);
        memset(recv, 0xEE, cap);
        memset(recv + cap, GUARD_VALUE, GUARD_BYTES);
        if (comm_allgather(c, send, n, recv, &err)) die(c, &err, "allgather");
        int bad = 0;
        for (int r = 0; r < size && !bad; r++)
            for (size_t i = 0; i < n && !bad; i++)
                if (recv[(size_t)r * n + i] != pattern(step, r, i)) {
                    EXPECT(0, "%s: allgather(%zu) byte %zu from rank %d", label, n, i, r);
                    bad = 1;
                }
        EXPECT(recv[(size_t)size * n] == 0xEE && guard_ok(recv + cap), "%s: allgather(%zu) wrote past its result",
               label, n);
        want[c->phase].n_calls++;
        want[c->phase].bytes_sent += (int64_t)n;
        want[c->phase].bytes_recv += (int64_t)n * (size - 1);
    }
    for (int id = 0; id < 5; id++, step++) {
        size_t total = 0;
        for (int r = 0; r < size; r++) total += counts[r] = counts_of(id, r, size);
        for (size_t i = 0; i < counts[me]; i++) send[i] = pattern(step, me, i);
        memset(recv, 0xEE, cap);
        memset(recv + cap, GUARD_VALUE, GUARD_BYTES);
        if (comm_allgatherv(c, counts[me] ? send : NULL, counts, recv, &err)) die(c, &err, "allgatherv");
        size_t off = 0;
        int bad = 0;
        for (int r = 0; r < size; r++) {
            for (size_t i = 0; i < counts[r] && !bad; i++)
                if (recv[off + i] != pattern(step, r, i)) {
                    EXPECT(0, "%s: allgatherv(pattern %d) byte %zu from rank %d", label, id, i, r);
                    bad = 1;
                }
            off += counts[r];
        }
        EXPECT(recv[total] == 0xEE && guard_ok(recv + cap), "%s: allgatherv(pattern %d) wrote past its result", label,
               id);
        want[c->phase].n_calls++;
        want[c->phase].bytes_sent += (int64_t)counts[me];
        want[c->phase].bytes_recv += (int64_t)(total - counts[me]);
    }

    c->phase = COMM_PHASE_DECODE;
    const size_t bsizes[] = {1, 4099};
    for (int root = 0; root < size; root++)
        for (size_t k = 0; k < 2; k++, step++) {
            const size_t n = bsizes[k];
            memset(recv, 0xEE, cap);
            memset(recv + cap, GUARD_VALUE, GUARD_BYTES);
            if (me == root)
                for (size_t i = 0; i < n; i++) recv[i] = pattern(step, root, i);
            if (comm_bcast(c, recv, n, root, &err)) die(c, &err, "bcast");
            for (size_t i = 0; i < n; i++)
                if (recv[i] != pattern(step, root, i)) {
                    EXPECT(0, "%s: bcast(%zu, root %d) byte %zu", label, n, root, i);
                    break;
                }
            EXPECT(recv[n] == 0xEE && guard_ok(recv + cap), "%s: bcast(%zu) wrote past its buffer", label, n);
            want[c->phase].n_calls++;
            if (me == root) want[c->phase].bytes_sent += (int64_t)n;
            else want[c->phase].bytes_recv += (int64_t)n;
        }
    if (comm_barrier(c, &err)) die(c, &err, "barrier");
    want[c->phase].n_calls++;

    // An MPI error comes back as a message (MPI_ERRORS_RETURN). The ops call
    // bypasses the wrapper, which would reject the root itself.
    const comm_counters before = c->counters[c->phase];
    err.msg[0] = '\0';
    const int rc = c->ops->bcast(c, recv, 4, size + 5, &err);
    char where[128];
    snprintf(where, sizeof(where), "[rank %d @ %s]", me, c->host);
    EXPECT(rc == -1 && strstr(err.msg, "MPI_Bcast") && strstr(err.msg, where), "%s: bad root gave rc %d, '%s'", label,
           rc, err.msg);
    EXPECT(memcmp(&before, &c->counters[c->phase], sizeof(before)) == 0, "%s: a direct ops call was counted", label);
    if (me == 0) fprintf(stderr, "%s: MPI error reported as: %s\n", label, err.msg);

    free(send);
    free(recv);
    free(counts);
}

static void check_counters(comm *c, const char *label, const comm_counters want[COMM_PHASE_COUNT]) {
    for (int p = 0; p < COMM_PHASE_COUNT; p++) {
        const comm_counters *got = &c->counters[p];
        EXPECT(got->n_calls == want[p].n_calls && got->bytes_sent == want[p].bytes_sent &&
                   got->bytes_recv == want[p].bytes_recv,
               "%s phase %d: calls %lld/%lld sent %lld/%lld recv %lld/%lld (got/want)", label, p,
               (long long)got->n_calls, (long long)want[p].n_calls, (long long)got->bytes_sent,
               (long long)want[p].bytes_sent, (long long)got->bytes_recv, (long long)want[p].bytes_recv);
    }
}

static void run_checks(comm *c, const char *label) {
    comm_counters want[COMM_PHASE_COUNT] = {{0}};
    check_topology(c, label);
    want[COMM_PHASE_SETUP].n_calls = 1;
    want[COMM_PHASE_SETUP].bytes_sent = (int64_t)sizeof(host_info);
    want[COMM_PHASE_SETUP].bytes_recv = (int64_t)sizeof(host_info) * (c->size - 1);
    check_data(c, label, want);
    check_counters(c, label, want);
}

int main(int argc, char **argv) {
    int fail_rank = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fail-rank") == 0 && i + 1 < argc) {
            fail_rank = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: mpi_comm_check [--fail-rank RANK]\n");
            return 2;
        }
    }
    rc_err err = {{0}};
    comm *c = comm_mpi_create(&argc, &argv, &err);
    if (!c) {
        fprintf(stderr, "recall: %s\n", err.msg);
        return 1;
    }
    g_rank = c->rank;
    EXPECT(comm_launched_by_mpi(), "not detected as launched by mpirun");

    if (fail_rank >= 0) {
        if (fail_rank >= c->size) {
            fprintf(stderr, "recall: --fail-rank %d but only %d ranks\n", fail_rank, c->size);
            c->ops->abort(c, 2);
        }
        if (comm_barrier(c, &err)) die(c, &err, "barrier");  // everyone is up
        if (c->rank == fail_rank) {
            fprintf(stderr, "recall: [rank %d @ %s] injected failure\n", c->rank, c->host);
            c->ops->abort(c, 3);
        }
        // The others block here until the abort ends them.
        uint64_t x = (uint64_t)c->rank, *all = calloc((size_t)c->size, sizeof(uint64_t));
        if (comm_allgather(c, &x, sizeof(x), all, &err)) die(c, &err, "allgather after the injected failure");
        fprintf(stderr, "recall: [rank %d @ %s] the collective completed although rank %d aborted\n", c->rank,
                c->host, fail_rank);
        free(all);
        return 1;
    }

    run_checks(c, "default limit");

    // A second communicator on the same MPI (so this one does not finalize),
    // with a 1000-byte limit per MPI call: the same checks, chunked.
    setenv("RECALL_COMM_MPI_MAX_CALL_BYTES", SMALL_CALL_BYTES, 1);
    comm *small = comm_mpi_create(&argc, &argv, &err);
    unsetenv("RECALL_COMM_MPI_MAX_CALL_BYTES");
    if (!small) die(c, &err, "second communicator");
    EXPECT(small->rank == c->rank && small->size == c->size && small->local_rank == c->local_rank,
           "second communicator disagrees");
    run_checks(small, "1000-byte calls");
    comm_destroy(small);

    // Every rank learns whether any rank failed, so all exit alike.
    int32_t mine = g_failed, *all = calloc((size_t)c->size, sizeof(int32_t));
    c->phase = COMM_PHASE_SETUP;
    if (!all || comm_allgather(c, &mine, sizeof(mine), all, &err)) die(c, &err, "allgather(failures)");
    int total = 0;
    for (int r = 0; r < c->size; r++) total += all[r];
    free(all);
    if (c->rank == 0) {
        if (total) fprintf(stderr, "mpi_comm_check: %d failures over %d ranks\n", total, c->size);
        else printf("mpi_comm_check: %d ranks on %s (local %d), all checks passed\n", c->size, c->host, c->local_size);
    }
    comm_destroy(c);  // finalizes MPI: this communicator initialized it
    return total ? 1 : 0;
}
