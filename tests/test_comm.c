// Tests of the communicator layer (src/comm/):
//  1. The null communicator: rank 0 of 1, allgather/allgatherv copy, bcast is
//     a no-op, bad roots and NULL buffers are rejected without counting, and
//     the counters hold exactly the calls and bytes of each phase (zero
//     received: one process has nobody to receive from).
//  2. The threaded simulation with 1..5 ranks: a script of allgathers (0, 1,
//     7, 33, 4099 bytes), allgathervs (some ranks, all ranks or no rank
//     contributing zero bytes) and bcasts from every root, run by one thread
//     per rank reusing the same buffers. Every received byte is checked
//     against the sender's pattern, send buffers must stay untouched, guard
//     bytes after every receive buffer must survive, and each rank's counters
//     must equal the calls and bytes the script implies, phase by phase (the
//     decode phase makes no call and must count none).
//  3. The simulation's protocol checks: ranks calling different collectives,
//     sizes, counts or roots all get an error (and can go on), a rank that
//     leaves early makes the others fail instead of hang.
//  4. abort ends the process with the given code (null and sim, in a child).
//  5. comm_launched_by_mpi reads the launcher's environment variables.
//  6. The device data path (comm_dev.c, comm_staged.c) on 3 simulated ranks of
//     a fake device backend (host memory behind is_device): RECALL_DEVICE_COMM
//     auto picks the backend's path when every rank has its own device and
//     host-staged when two share one; host / nccl force one; a bad or
//     disagreeing value, ranks on different device models, nccl without a
//     backend path: the same one-line error on every rank. Through the
//     host-staged path allgather, allgatherv (empty parts) and bcast deliver
//     the host path's bytes, counted as calls and bytes exactly like it; the
//     path is shared by a second attach and destroyed by the last detach.
// The MPI communicator is tested under mpirun by mpi_comm_check.c.
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "comm/comm.h"

#define GUARD_BYTES 16
#define GUARD_VALUE 0xCD
#define MAX_RANKS 5

// The byte that rank `src` contributes at index i of script step `step`.
static uint8_t pattern(int step, int src, size_t i) {
    return (uint8_t)((unsigned)step * 197u ^ (unsigned)src * 59u ^ (unsigned)i * 13u ^ (unsigned)(i >> 8) ^ 0x5Au);
}

static void fill_pattern(uint8_t *buf, size_t n, int step, int src) {
    for (size_t i = 0; i < n; i++) buf[i] = pattern(step, src, i);
}

// ---- 1. null communicator ----

static void test_null(void) {
    rc_err err = {{0}};
    comm *c = comm_null_create();
    CHECK(c != NULL);
    if (!c) return;
    CHECK(strcmp(c->kind, "null") == 0);
    CHECK(c->rank == 0 && c->size == 1 && c->local_rank == 0 && c->local_size == 1);
    CHECK(c->host[0] != '\0');
    CHECK(c->phase == COMM_PHASE_SETUP);
    for (int p = 0; p < COMM_PHASE_COUNT; p++)
        CHECK(c->counters[p].n_calls == 0 && c->counters[p].bytes_sent == 0 && c->counters[p].bytes_recv == 0);

    uint8_t send[7], recv[7 + GUARD_BYTES];
    fill_pattern(send, sizeof(send), 1, 0);
    memset(recv, GUARD_VALUE, sizeof(recv));
    CHECK(comm_allgather(c, send, sizeof(send), recv, &err) == 0);
    CHECK(memcmp(recv, send, sizeof(send)) == 0);
    CHECK(recv[7] == GUARD_VALUE && recv[7 + GUARD_BYTES - 1] == GUARD_VALUE);
    CHECK(comm_allgather(c, NULL, 0, NULL, &err) == 0);  // zero bytes: NULL buffers are fine

    c->phase = COMM_PHASE_PREFILL;
    size_t counts[1] = {5};
    memset(recv, GUARD_VALUE, sizeof(recv));
    CHECK(comm_allgatherv(c, send, counts, recv, &err) == 0);
    CHECK(memcmp(recv, send, 5) == 0 && recv[5] == GUARD_VALUE);
    counts[0] = 0;
    CHECK(comm_allgatherv(c, NULL, counts, NULL, &err) == 0);

    uint8_t b[3] = {1, 2, 3};
    CHECK(comm_bcast(c, b, sizeof(b), 0, &err) == 0);
    CHECK(b[0] == 1 && b[1] == 2 && b[2] == 3);
    CHECK(comm_barrier(c, &err) == 0);

    // Rejected calls: an error naming the problem, nothing counted.
    err.msg[0] = '\0';
    CHECK(comm_bcast(c, b, sizeof(b), 1, &err) == -1);
    CHECK_MSG(strstr(err.msg, "root") != NULL, "%s", err.msg);
    CHECK(comm_bcast(c, b, sizeof(b), -1, &err) == -1);
    CHECK(comm_allgather(c, NULL, 4, recv, &err) == -1);
    CHECK(comm_allgatherv(c, send, NULL, recv, &err) == -1);
    counts[0] = 3;
    CHECK(comm_allgatherv(c, NULL, counts, recv, &err) == -1);
    c->phase = COMM_PHASE_COUNT;
    CHECK(comm_barrier(c, &err) == -1);
    CHECK_MSG(strstr(err.msg, "phase") != NULL, "%s", err.msg);
    c->phase = -1;
    CHECK(comm_allgather(c, send, 1, recv, &err) == -1);
    c->phase = COMM_PHASE_DECODE;

    const comm_counters *s = &c->counters[COMM_PHASE_SETUP], *p = &c->counters[COMM_PHASE_PREFILL],
                        *d = &c->counters[COMM_PHASE_DECODE];
    CHECK_MSG(s->n_calls == 2 && s->bytes_sent == 7 && s->bytes_recv == 0, "setup %lld %lld %lld",
              (long long)s->n_calls, (long long)s->bytes_sent, (long long)s->bytes_recv);
    // allgatherv 5 + 0, bcast 3 (root contributes), barrier
    CHECK_MSG(p->n_calls == 4 && p->bytes_sent == 8 && p->bytes_recv == 0, "prefill %lld %lld %lld",
              (long long)p->n_calls, (long long)p->bytes_sent, (long long)p->bytes_recv);
    CHECK(d->n_calls == 0 && d->bytes_sent == 0 && d->bytes_recv == 0);

    // Direct ops calls bypass the counters (the wrappers count).
    CHECK(c->ops->barrier(c, &err) == 0);
    CHECK(d->n_calls == 0);
    comm_destroy(c);
    comm_destroy(NULL);
}

// ---- 2. the simulation, driven by a script ----

enum { OP_ALLGATHER, OP_ALLGATHERV, OP_BCAST, OP_BARRIER };

typedef struct step {
    int phase;
    int op;
    size_t n_bytes;  // allgather, bcast
    int root;        // bcast
    int counts_id;   // allgatherv: which counts pattern
} step;

#define MAX_STEPS 64
#define N_COUNTS_PATTERNS 5

typedef struct script {
    int size;
    int n_steps;
    step steps[MAX_STEPS];
} script;

static size_t counts_of(int id, int r, int size) {
    switch (id) {
    case 0: return (size_t)r * 5;                    // rank 0 contributes nothing
    case 1: return r % 2 ? 0 : (size_t)(17 + r);    // odd ranks contribute nothing
    case 2: return 0;                               // nobody contributes
    case 3: return r == size - 1 ? 1000 : 0;        // only the last rank
    default: return (size_t)(3000 + 11 * r);        // everyone, several KiB
    }
}

static void add(script *s, step st) {
    if (s->n_steps < MAX_STEPS) s->steps[s->n_steps++] = st;
}

static void build_script(script *s, int size) {
    memset(s, 0, sizeof(*s));
    s->size = size;
    for (int root = 0; root < size; root++)
        add(s, (step){COMM_PHASE_SETUP, OP_BCAST, 1 + 13 * (size_t)root + (root == size - 1 ? 4096 : 0), root, 0});
    add(s, (step){COMM_PHASE_SETUP, OP_BCAST, 0, size - 1, 0});
    add(s, (step){COMM_PHASE_SETUP, OP_BARRIER, 0, 0, 0});
    const size_t sizes[] = {0, 1, 7, 33, 4099};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        add(s, (step){COMM_PHASE_PREFILL, OP_ALLGATHER, sizes[i], 0, 0});
    for (int id = 0; id < N_COUNTS_PATTERNS; id++) add(s, (step){COMM_PHASE_PREFILL, OP_ALLGATHERV, 0, 0, id});
    for (int root = size - 1; root >= 0; root--) add(s, (step){COMM_PHASE_PREFILL, OP_BCAST, 5000, root, 0});
    add(s, (step){COMM_PHASE_PREFILL, OP_ALLGATHER, 7, 0, 0});  // after bcasts: buffers are reused
    // COMM_PHASE_DECODE: no step, so every rank must count zero there.
}

static void expected_counters(const script *s, int rank, comm_counters out[COMM_PHASE_COUNT]) {
    memset(out, 0, sizeof(comm_counters) * COMM_PHASE_COUNT);
    for (int i = 0; i < s->n_steps; i++) {
        const step *st = &s->steps[i];
        comm_counters *k = &out[st->phase];
        k->n_calls++;
        if (st->op == OP_ALLGATHER) {
            k->bytes_sent += (int64_t)st->n_bytes;
            k->bytes_recv += (int64_t)st->n_bytes * (s->size - 1);
        } else if (st->op == OP_ALLGATHERV) {
            for (int r = 0; r < s->size; r++) {
                if (r == rank) k->bytes_sent += (int64_t)counts_of(st->counts_id, r, s->size);
                else k->bytes_recv += (int64_t)counts_of(st->counts_id, r, s->size);
            }
        } else if (st->op == OP_BCAST) {
            if (rank == st->root) k->bytes_sent += (int64_t)st->n_bytes;
            else k->bytes_recv += (int64_t)st->n_bytes;
        }
    }
}

// Each rank thread records its own failures (check.h's counters are not
// thread-safe); the main thread turns them into CHECKs.
typedef struct rank_run {
    comm *c;
    const script *s;
    int n_failed;
    char first_failure[512];
} rank_run;

static void failf(rank_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(rank_run *run, const char *fmt, ...) {
    if (run->n_failed++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(run->first_failure, sizeof(run->first_failure), fmt, ap);
        va_end(ap);
    }
}

static int guard_ok(const uint8_t *p) {
    for (int i = 0; i < GUARD_BYTES; i++)
        if (p[i] != GUARD_VALUE) return 0;
    return 1;
}

static void *rank_main(void *arg) {
    rank_run *run = arg;
    comm *c = run->c;
    const script *s = run->s;
    const int size = c->size, me = c->rank;
    // One send and one receive buffer for the whole script, as a caller
    // reusing its buffers would: a rank must not see stale data from a call
    // that others have not finished.
    const size_t cap = (size_t)size * 8192;
    uint8_t *send = malloc(cap), *recv = malloc(cap + GUARD_BYTES), *expect_send = malloc(cap);
    if (!send || !recv || !expect_send) {
        failf(run, "out of memory");
        free(send), free(recv), free(expect_send);
        return NULL;
    }
    rc_err err = {{0}};
    for (int i = 0; i < s->n_steps; i++) {
        const step *st = &s->steps[i];
        c->phase = st->phase;
        memset(recv, 0xEE, cap);
        memset(recv + cap, GUARD_VALUE, GUARD_BYTES);
        int rc = 0;
        size_t n_recv = 0;
        if (st->op == OP_ALLGATHER) {
            fill_pattern(send, st->n_bytes, i, me);
            memcpy(expect_send, send, st->n_bytes);
            rc = comm_allgather(c, send, st->n_bytes, recv, &err);
            n_recv = st->n_bytes * (size_t)size;
            if (rc == 0 && memcmp(send, expect_send, st->n_bytes) != 0) failf(run, "step %d: send buffer changed", i);
            for (int r = 0; rc == 0 && r < size; r++)
                for (size_t j = 0; j < st->n_bytes; j++)
                    if (recv[(size_t)r * st->n_bytes + j] != pattern(i, r, j)) {
                        failf(run, "step %d allgather(%zu): rank %d byte %zu of rank %d wrong", i, st->n_bytes, me,
                              j, r);
                        break;
                    }
        } else if (st->op == OP_ALLGATHERV) {
            size_t counts[MAX_RANKS];
            for (int r = 0; r < size; r++) counts[r] = counts_of(st->counts_id, r, size);
            fill_pattern(send, counts[me], i, me);
            // A rank with nothing to send may pass NULL.
            rc = comm_allgatherv(c, counts[me] ? send : NULL, counts, recv, &err);
            size_t off = 0;
            for (int r = 0; rc == 0 && r < size; r++) {
                for (size_t j = 0; j < counts[r]; j++)
                    if (recv[off + j] != pattern(i, r, j)) {
                        failf(run, "step %d allgatherv(counts %d): rank %d byte %zu of rank %d wrong", i,
                              st->counts_id, me, j, r);
                        break;
                    }
                off += counts[r];
            }
            n_recv = off;
        } else if (st->op == OP_BCAST) {
            // Everyone bcasts in place from recv; non-roots start with junk.
            if (me == st->root) fill_pattern(recv, st->n_bytes, i, me);
            rc = comm_bcast(c, recv, st->n_bytes, st->root, &err);
            n_recv = st->n_bytes;
            for (size_t j = 0; rc == 0 && j < st->n_bytes; j++)
                if (recv[j] != pattern(i, st->root, j)) {
                    failf(run, "step %d bcast(%zu, root %d): rank %d byte %zu wrong", i, st->n_bytes, st->root, me, j);
                    break;
                }
        } else {
            rc = comm_barrier(c, &err);
        }
        if (rc != 0) failf(run, "step %d: rank %d: %s", i, me, err.msg);
        // Nothing written past the result, nor past the whole buffer.
        for (size_t j = n_recv; j < cap && j < n_recv + 64; j++)
            if (recv[j] != 0xEE) {
                failf(run, "step %d: rank %d wrote past the result at byte %zu", i, me, j);
                break;
            }
        if (!guard_ok(recv + cap)) failf(run, "step %d: rank %d guard bytes overwritten", i, me);
    }
    free(send);
    free(recv);
    free(expect_send);
    return NULL;
}

static void test_sim_size(int size) {
    rc_err err = {{0}};
    comm *comms[MAX_RANKS];
    CHECK_MSG(comm_sim_create(size, comms, &err) == 0, "%s", err.msg);
    script s;
    build_script(&s, size);
    rank_run runs[MAX_RANKS];
    pthread_t threads[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        CHECK(strcmp(comms[r]->kind, "sim") == 0);
        CHECK(comms[r]->rank == r && comms[r]->size == size);
        CHECK(comms[r]->local_rank == r && comms[r]->local_size == size);
        runs[r] = (rank_run){.c = comms[r], .s = &s};
        CHECK(pthread_create(&threads[r], NULL, rank_main, &runs[r]) == 0);
    }
    for (int r = 0; r < size; r++) pthread_join(threads[r], NULL);
    for (int r = 0; r < size; r++) {
        CHECK_MSG(runs[r].n_failed == 0, "size %d rank %d: %d failures, first: %s", size, r, runs[r].n_failed,
                  runs[r].first_failure);
        comm_counters want[COMM_PHASE_COUNT];
        expected_counters(&s, r, want);
        for (int p = 0; p < COMM_PHASE_COUNT; p++) {
            const comm_counters *got = &comms[r]->counters[p];
            CHECK_MSG(got->n_calls == want[p].n_calls && got->bytes_sent == want[p].bytes_sent &&
                          got->bytes_recv == want[p].bytes_recv,
                      "size %d rank %d phase %d: calls %lld/%lld sent %lld/%lld recv %lld/%lld (got/want)", size, r, p,
                      (long long)got->n_calls, (long long)want[p].n_calls, (long long)got->bytes_sent,
                      (long long)want[p].bytes_sent, (long long)got->bytes_recv, (long long)want[p].bytes_recv);
        }
        CHECK(comms[r]->counters[COMM_PHASE_DECODE].n_calls == 0);
    }
    for (int r = 0; r < size; r++) comm_destroy(comms[r]);
    printf("sim size %d: %d steps ok\n", size, s.n_steps);
}

// ---- 3. protocol checks of the simulation ----

enum { BUG_OP, BUG_SIZE, BUG_COUNTS, BUG_ROOT, BUG_LEAVE, N_BUGS };

typedef struct bug_run {
    comm *c;
    int bug;
    int rc_buggy;        // the call where rank 1 misbehaves
    int rc_after;        // a correct call after it
    char msg[1024];
    uint8_t after[3 * 4];
} bug_run;

static void *bug_main(void *arg) {
    bug_run *run = arg;
    comm *c = run->c;
    rc_err err = {{0}};
    uint8_t send[64] = {0}, recv[3 * 64];
    size_t counts[3] = {4, 4, 4};
    const int odd = c->rank == 1;  // rank 1 is the buggy one
    switch (run->bug) {
    case BUG_OP:
        run->rc_buggy = odd ? comm_bcast(c, send, 8, 0, &err) : comm_allgather(c, send, 8, recv, &err);
        break;
    case BUG_SIZE: run->rc_buggy = comm_allgather(c, send, odd ? 9 : 8, recv, &err); break;
    case BUG_COUNTS:
        if (c->rank == 2) counts[0] = 5;  // rank 2's view of the counts differs
        run->rc_buggy = comm_allgatherv(c, send, counts, recv, &err);
        break;
    case BUG_ROOT: run->rc_buggy = comm_bcast(c, send, 8, odd ? 2 : 0, &err); break;
    case BUG_LEAVE:
        if (odd) {
            comm_destroy(c);
            run->c = NULL;
            run->rc_buggy = -1;
            run->rc_after = -1;
            snprintf(run->msg, sizeof(run->msg), "left");
            return NULL;
        }
        run->rc_buggy = comm_barrier(c, &err);
        break;
    }
    snprintf(run->msg, sizeof(run->msg), "%s", err.msg);
    if (run->bug != BUG_LEAVE) {
        // The ranks stayed in step: a correct call still works.
        uint8_t mine[4];
        for (int i = 0; i < 4; i++) mine[i] = (uint8_t)(10 * c->rank + i);
        run->rc_after = comm_allgather(c, mine, 4, run->after, &err);
    } else {
        run->rc_after = comm_barrier(c, &err);  // still broken
    }
    return NULL;
}

static void test_sim_protocol(void) {
    static const char *const names[N_BUGS] = {"op", "size", "counts", "root", "leave"};
    for (int bug = 0; bug < N_BUGS; bug++) {
        rc_err err = {{0}};
        comm *comms[3];
        CHECK_MSG(comm_sim_create(3, comms, &err) == 0, "%s", err.msg);
        bug_run runs[3];
        pthread_t threads[3];
        for (int r = 0; r < 3; r++) {
            runs[r] = (bug_run){.c = comms[r], .bug = bug};
            pthread_create(&threads[r], NULL, bug_main, &runs[r]);
        }
        for (int r = 0; r < 3; r++) pthread_join(threads[r], NULL);
        for (int r = 0; r < 3; r++) {
            if (bug == BUG_LEAVE && r == 1) continue;
            const char *want = bug == BUG_LEAVE ? "destroyed" : "mismatch";
            CHECK_MSG(runs[r].rc_buggy == -1 && strstr(runs[r].msg, want), "bug %s rank %d: rc %d msg '%s'",
                      names[bug], r, runs[r].rc_buggy, runs[r].msg);
            if (bug == BUG_LEAVE) {
                CHECK_MSG(runs[r].rc_after == -1, "bug leave: rank %d later call did not fail", r);
            } else {
                CHECK_MSG(runs[r].rc_after == 0, "bug %s: rank %d could not go on", names[bug], r);
                for (int i = 0; i < 12; i++) CHECK(runs[r].after[i] == (uint8_t)(10 * (i / 4) + i % 4));
            }
        }
        if (bug != BUG_LEAVE) CHECK(strcmp(runs[0].msg + strlen("[rank 0"), runs[2].msg + strlen("[rank 2")) == 0);
        for (int r = 0; r < 3; r++) comm_destroy(runs[r].c);
    }
    rc_err err = {{0}};
    comm *one[1];
    CHECK(comm_sim_create(0, one, &err) == -1);
}

// ---- 4. abort ends the process with the code ----

static comm *g_abort_comms[2];  // reachable from a global: no leak report at exit

static void *abort_rank_main(void *arg) {
    comm *c = arg;
    rc_err err;
    if (c->rank == 1) {
        usleep(20000);  // let rank 0 block in the barrier first
        c->ops->abort(c, 5);
    }
    comm_barrier(c, &err);  // rank 0 waits here until the process ends
    return NULL;
}

static int run_child(int which) {
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        if (which == 0) {
            g_abort_comms[0] = comm_null_create();
            g_abort_comms[0]->ops->abort(g_abort_comms[0], 4);
        }
        rc_err err;
        if (comm_sim_create(2, g_abort_comms, &err)) _exit(99);
        pthread_t t[2];
        for (int r = 0; r < 2; r++) pthread_create(&t[r], NULL, abort_rank_main, g_abort_comms[r]);
        for (int r = 0; r < 2; r++) pthread_join(t[r], NULL);
        _exit(98);  // abort did not end the process
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
}

static void test_abort(void) {
    CHECK_MSG(run_child(0) == 4, "null abort");
    CHECK_MSG(run_child(1) == 5, "sim abort");
}

// ---- 5. launcher detection ----

static void test_launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID", "SLURM_NTASKS"};
    enum { N_VARS = sizeof(vars) / sizeof(vars[0]) };
    char *saved[N_VARS];
    for (int i = 0; i < N_VARS; i++) {
        const char *v = getenv(vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(vars[i]);
    }
    CHECK(comm_launched_by_mpi() == 0);
    for (int i = 0; i < 3; i++) {
        setenv(vars[i], "0", 1);
        CHECK_MSG(comm_launched_by_mpi() == 1, "%s", vars[i]);
        unsetenv(vars[i]);
    }
    setenv("SLURM_PROCID", "0", 1);
    CHECK(comm_launched_by_mpi() == 0);  // a Slurm job, but no tasks count
    setenv("SLURM_NTASKS", "1", 1);
    CHECK(comm_launched_by_mpi() == 0);  // one task: not a multi-rank launch
    setenv("SLURM_NTASKS", "4", 1);
    CHECK(comm_launched_by_mpi() == 1);
    for (int i = 0; i < N_VARS; i++) {
        if (saved[i]) setenv(vars[i], saved[i], 1);
        else unsetenv(vars[i]);
        free(saved[i]);
    }
#ifndef RECALL_HAVE_MPI
    rc_err err = {{0}};
    CHECK(comm_mpi_available() == 0);
    CHECK(comm_mpi_create(NULL, NULL, &err) == NULL && strstr(err.msg, "without MPI"));
#else
    CHECK(comm_mpi_available() == 1);
#endif
}

// ---- 6. the device data path ----

// A fake device backend: its buffers are host memory, but it says is_device
// (and has no expose), so the communicator must route them over a device path.
// Device d of the table below; ranks pick theirs through backend.device.
static const char *const fake_names[] = {"GPU-A", "GPU-A", "GPU-A", "GPU-B"};
static const char *const fake_pci[] = {"0000:01:00", "0000:02:00", "0000:03:00", "0000:04:00"};

static int fake_info(const backend *b, backend_device_info *info, rc_err *err) {
    info->index = b->device;
    snprintf(info->name, sizeof(info->name), "%s", fake_names[b->device]);
    snprintf(info->pci_id, sizeof(info->pci_id), "%s", fake_pci[b->device]);
    return 0;
}
static void fake_download(const backend *b, void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static void fake_upload(const backend *b, void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

static void fake_destroy(comm_dev *d) { free(d); }
static const comm_dev_ops fake_path_ops = {.destroy = fake_destroy};
static comm_dev *fake_create(const backend *b, comm *ctl, rc_err *err) {  // stands for NCCL: never used for data
    comm_dev *d = calloc(1, sizeof(*d));
    if (d) *d = (comm_dev){.ops = &fake_path_ops, .kind = "nccl"};
    return d;
}

static const backend_ops fake_dev = {.name = "fake", .is_device = 1, .device_info = fake_info,
                                     .download = fake_download, .upload = fake_upload, .comm_dev_create = fake_create};
static const backend_ops fake_dev_no_path = {.name = "fake", .is_device = 1, .device_info = fake_info,
                                             .download = fake_download, .upload = fake_upload};

typedef struct dev_job {
    comm *c;
    const backend_ops *ops;
    int device;
    int transfer;          // run the data checks (host-staged only)
    const char *kind;      // attached path, or NULL
    char err[256];
    int bad;               // data checks that failed
} dev_job;

static void *dev_rank_main(void *arg) {
    dev_job *j = arg;
    backend b = {.ops = j->ops, .device = j->device};
    rc_err err = {{0}};
    if (comm_dev_attach(j->c, &b, &err) != 1) {
        snprintf(j->err, sizeof(j->err), "%.255s", err.msg);
        return NULL;
    }
    j->kind = j->c->dev->kind;
    if (j->transfer) {
        comm *c = j->c;
        const int R = c->size, me = c->rank;
        // A second attach shares the path; its detach leaves it in place.
        j->bad += comm_dev_attach(c, &b, &err) != 1 || c->dev->n_users != 2;
        comm_dev *d = c->dev;
        comm_dev_detach(c, &b, 0);
        j->bad += c->dev != d || d->n_users != 1;
        uint8_t send[64], recv[4 * 64 + 8], want[4 * 64 + 8];
        c->phase = COMM_PHASE_DECODE;
        // allgather: 33 bytes from each rank
        fill_pattern(send, 33, 1, me);
        j->bad += comm_allgather_buf(c, &b, send, 33, recv, &err) != 0;
        for (int r = 0; r < R; r++) {
            fill_pattern(want + r * 33, 33, 1, r);
            j->bad += memcmp(recv + r * 33, want + r * 33, 33) != 0;
        }
        // allgatherv: rank r sends 7 * r bytes (rank 0 none)
        size_t counts[4], off = 0;
        for (int r = 0; r < R; r++) counts[r] = (size_t)(7 * r);
        fill_pattern(send, counts[me], 2, me);
        j->bad += comm_allgatherv_buf(c, &b, send, counts, recv, &err) != 0;
        for (int r = 0; r < R; r++) {
            fill_pattern(want, counts[r], 2, r);
            j->bad += memcmp(recv + off, want, counts[r]) != 0;
            off += counts[r];
        }
        // bcast of 40 bytes from the last rank
        fill_pattern(recv, 40, 3, me);
        j->bad += comm_bcast_buf(c, &b, recv, 40, R - 1, &err) != 0;
        fill_pattern(want, 40, 3, R - 1);
        j->bad += memcmp(recv, want, 40) != 0;
        const comm_counters *k = &c->counters[COMM_PHASE_DECODE];
        const int64_t sent = 33 + (int64_t)counts[me] + (me == R - 1 ? 40 : 0);
        const int64_t got = 33 * (R - 1) + (int64_t)(off - counts[me]) + (me == R - 1 ? 0 : 40);
        j->bad += k->n_calls != 3 || k->bytes_sent != sent || k->bytes_recv != got;
        if (j->bad) snprintf(j->err, sizeof(j->err), "rank %d: %d data checks failed (%.150s)", me, j->bad, err.msg);
    }
    comm_dev_detach(j->c, &b, 0);
    j->bad += j->c->dev != NULL;
    return NULL;
}

// One attach on 3 simulated ranks; want_kind NULL: every rank must fail with an error containing want_err.
static void dev_case(const char *what, const char *env, const backend_ops *ops, const int devices[3], int transfer,
                     const char *want_kind, const char *want_err) {
    if (env) setenv(COMM_DEVICE_ENV, env, 1);
    else unsetenv(COMM_DEVICE_ENV);
    comm *comms[3];
    rc_err err = {{0}};
    CHECK_MSG(comm_sim_create(3, comms, &err) == 0, "%s", err.msg);
    dev_job jobs[3];
    pthread_t t[3];
    for (int r = 0; r < 3; r++) {
        jobs[r] = (dev_job){.c = comms[r], .ops = ops, .device = devices[r], .transfer = transfer};
        pthread_create(&t[r], NULL, dev_rank_main, &jobs[r]);
    }
    for (int r = 0; r < 3; r++) pthread_join(t[r], NULL);
    for (int r = 0; r < 3; r++) {
        const dev_job *j = &jobs[r];
        if (want_kind)
            CHECK_MSG(j->kind && !strcmp(j->kind, want_kind) && !j->bad, "%s: rank %d: path %s (want %s) %s", what, r,
                      j->kind ? j->kind : "none", want_kind, j->err);
        else
            CHECK_MSG(!j->kind && strstr(j->err, want_err) && !strcmp(j->err, jobs[0].err),
                      "%s: rank %d: '%s', want every rank to fail with '%s'", what, r, j->err, want_err);
        comm_destroy(comms[r]);
    }
    unsetenv(COMM_DEVICE_ENV);
}

static void test_device_path(void) {
    const int own[3] = {0, 1, 2}, shared[3] = {0, 1, 1}, mixed[3] = {0, 1, 3};
    dev_case("own devices, auto", NULL, &fake_dev, own, 0, "nccl", NULL);
    dev_case("own devices, RECALL_DEVICE_COMM=auto", "auto", &fake_dev, own, 0, "nccl", NULL);
    dev_case("two ranks share a device, auto", NULL, &fake_dev, shared, 1, "staged", NULL);
    dev_case("RECALL_DEVICE_COMM=host", "host", &fake_dev, own, 1, "staged", NULL);
    dev_case("RECALL_DEVICE_COMM=nccl, shared", "nccl", &fake_dev, shared, 0, "nccl", NULL);
    dev_case("no backend path, auto", NULL, &fake_dev_no_path, own, 1, "staged", NULL);
    dev_case("RECALL_DEVICE_COMM=nccl, no backend path", "nccl", &fake_dev_no_path, own, 0, NULL,
             "RECALL_DEVICE_COMM=nccl: the fake backend has no device communicator");
    dev_case("RECALL_DEVICE_COMM=bogus", "bogus", &fake_dev, own, 0, NULL, "RECALL_DEVICE_COMM=bogus is not auto, host or nccl");
    dev_case("different device models", NULL, &fake_dev, mixed, 0, NULL,
             "ranks run on different devices: rank 0 (");
    // A host backend, or one rank: no device path.
    comm *one = comm_null_create();
    backend cpu = {.ops = &backend_cpu};
    backend dev = {.ops = &fake_dev};
    rc_err err = {{0}};
    CHECK(comm_dev_attach(one, &dev, &err) == 0 && one->dev == NULL);
    comm_destroy(one);
    comm *two[2];
    CHECK(comm_sim_create(2, two, &err) == 0);
    CHECK(comm_dev_attach(two[0], &cpu, &err) == 0 && two[0]->dev == NULL);
    comm_destroy(two[0]);
    comm_destroy(two[1]);
}

int main(void) {
    test_null();
    for (int size = 1; size <= MAX_RANKS; size++) test_sim_size(size);
    test_sim_protocol();
    test_abort();
    test_launched_by_mpi();
    test_device_path();
    TEST_MAIN_END();
}
