// The threaded simulation: `size` ranks as threads of one process, for tests
// that run the distributed protocol without MPI (style item 10).
//
// Every collective has the same two-barrier shape:
//   1. each rank posts a descriptor (op, its call number, sizes, root) and
//      copies its contribution into its own staging slot;
//   2. barrier; every rank checks that all descriptors agree, then copies
//      what it needs out of the slots;
//   3. barrier, so no rank refills its slot before all have read it (callers
//      may reuse their buffers as soon as the call returns).
// Only rank r writes slot r (and only before the first barrier), so the data
// path needs no lock; the barrier's mutex orders the writes before the reads.
// Results are plain copies, hence exact and deterministic.
//
// The simulation also catches the protocol bugs that hang or corrupt a real
// job: when ranks call different collectives at the same point, or pass
// different sizes, counts or roots, every rank gets the same error; a rank
// that destroys its communicator while others still wait in (or later enter)
// a collective breaks the exchange, and those calls fail instead of hanging.
#include "comm/comm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum sim_op { SIM_ALLGATHER = 1, SIM_ALLGATHERV, SIM_BCAST, SIM_BARRIER };

static const char *sim_op_name(int op) {
    switch (op) {
    case SIM_ALLGATHER: return "allgather";
    case SIM_ALLGATHERV: return "allgatherv";
    case SIM_BCAST: return "bcast";
    case SIM_BARRIER: return "barrier";
    default: return "?";
    }
}

typedef struct sim_slot {
    int op;              // enum sim_op; 0 when this rank failed to stage its data
    size_t n_bytes;      // allgather/bcast size
    int root;            // bcast root
    size_t *counts;      // allgatherv counts as this rank passed them: (size,)
    unsigned char *buf;  // staged contribution
    size_t cap;          // bytes allocated in buf
} sim_slot;

typedef struct sim_shared {
    int size;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_waiting;       // ranks inside the current barrier
    uint64_t generation; // bumped when a barrier opens
    int n_departed;      // ranks that destroyed their communicator
    int n_alive;         // communicators not yet destroyed
    sim_slot *slots;     // (size,)
} sim_shared;

typedef struct sim_rank {
    sim_shared *sh;
} sim_rank;

static sim_shared *shared_of(comm *c) { return ((sim_rank *)c->impl)->sh; }

static int sim_barrier_wait(comm *c, rc_err *err) {
    sim_shared *sh = shared_of(c);
    int broken = 0;
    pthread_mutex_lock(&sh->mu);
    const uint64_t gen = sh->generation;
    if (sh->n_departed > 0) {
        broken = 1;
    } else if (++sh->n_waiting == sh->size) {
        sh->n_waiting = 0;
        sh->generation++;
        pthread_cond_broadcast(&sh->cv);
    } else {
        while (sh->generation == gen) {
            if (sh->n_departed > 0) {
                broken = 1;
                break;
            }
            pthread_cond_wait(&sh->cv, &sh->mu);
        }
    }
    pthread_mutex_unlock(&sh->mu);
    if (broken)
        return rc_fail(err, "[rank %d @ sim] a rank destroyed its communicator while the others were still in collectives",
                       c->rank);
    return 0;
}

// Posts this rank's descriptor and stages n_stage bytes of data.
static int sim_post(comm *c, int op, size_t n_bytes, int root, const size_t *counts, const void *data, size_t n_stage,
                    rc_err *err) {
    sim_rank *me = c->impl;
    sim_slot *s = &me->sh->slots[c->rank];
    if (n_stage > s->cap) {
        unsigned char *p = realloc(s->buf, n_stage);
        if (!p) return rc_fail(err, "[rank %d @ sim] out of memory staging %zu bytes", c->rank, n_stage);
        s->buf = p;
        s->cap = n_stage;
    }
    s->op = op;
    s->n_bytes = n_bytes;
    s->root = root;
    if (counts) memcpy(s->counts, counts, (size_t)c->size * sizeof(size_t));
    if (n_stage > 0) memcpy(s->buf, data, n_stage);
    return 0;
}

// After the first barrier: every rank sees the same slots, so every rank
// reaches the same verdict (and the same message).
static int sim_check_agree(comm *c, rc_err *err) {
    const sim_shared *sh = shared_of(c);
    const sim_slot *a = &sh->slots[0];
    for (int r = 1; r < sh->size; r++) {
        const sim_slot *b = &sh->slots[r];
        int same = a->op == b->op;
        if (same && (a->op == SIM_ALLGATHER || a->op == SIM_BCAST)) same = a->n_bytes == b->n_bytes;
        if (same && a->op == SIM_BCAST) same = a->root == b->root;
        if (same && a->op == SIM_ALLGATHERV) same = memcmp(a->counts, b->counts, (size_t)sh->size * sizeof(size_t)) == 0;
        if (!same)
            return rc_fail(err,
                           "[rank %d @ sim] collective mismatch: rank 0 called %s(n_bytes=%zu, root=%d), "
                           "rank %d called %s(n_bytes=%zu, root=%d)%s",
                           c->rank, sim_op_name(a->op), a->n_bytes, a->root, r, sim_op_name(b->op), b->n_bytes,
                           b->root,
                           a->op == SIM_ALLGATHERV && b->op == SIM_ALLGATHERV ? " (allgatherv counts differ)" : "");
    }
    return 0;
}

// The common shape: post, barrier, check, copy out, barrier.
typedef void (*sim_copy_fn)(comm *c, void *out, const void *arg);

static int sim_collective(comm *c, int op, size_t n_bytes, int root, const size_t *counts, const void *stage,
                          size_t n_stage, sim_copy_fn copy_out, void *out, const void *arg, rc_err *err) {
    if (sim_post(c, op, n_bytes, root, counts, stage, n_stage, err)) {
        // Still take part in both barriers so the others do not wait forever;
        // they see a stale descriptor and report a mismatch.
        shared_of(c)->slots[c->rank].op = 0;
        rc_err ignored;
        if (sim_barrier_wait(c, &ignored) == 0) sim_barrier_wait(c, &ignored);
        return -1;
    }
    if (sim_barrier_wait(c, err)) return -1;
    const int rc = sim_check_agree(c, err);
    if (rc == 0 && copy_out) copy_out(c, out, arg);
    if (sim_barrier_wait(c, err)) return -1;
    return rc;
}

static void copy_allgather(comm *c, void *out, const void *arg) {
    const sim_shared *sh = shared_of(c);
    const size_t n = sh->slots[0].n_bytes;
    if (n == 0) return;
    for (int r = 0; r < sh->size; r++) memcpy((unsigned char *)out + (size_t)r * n, sh->slots[r].buf, n);
}

static int sim_allgather(comm *c, const void *send, size_t n_bytes, void *recv, rc_err *err) {
    return sim_collective(c, SIM_ALLGATHER, n_bytes, -1, NULL, send, n_bytes, copy_allgather, recv, NULL, err);
}

static void copy_allgatherv(comm *c, void *out, const void *arg) {
    const sim_shared *sh = shared_of(c);
    const size_t *counts = sh->slots[0].counts;
    size_t off = 0;
    for (int r = 0; r < sh->size; r++) {
        if (counts[r] > 0) memcpy((unsigned char *)out + off, sh->slots[r].buf, counts[r]);
        off += counts[r];
    }
}

static int sim_allgatherv(comm *c, const void *send, const size_t *counts, void *recv, rc_err *err) {
    return sim_collective(c, SIM_ALLGATHERV, 0, -1, counts, send, counts[c->rank], copy_allgatherv, recv, NULL, err);
}

static void copy_bcast(comm *c, void *out, const void *arg) {
    const sim_shared *sh = shared_of(c);
    const sim_slot *root = &sh->slots[sh->slots[0].root];
    if (c->rank != sh->slots[0].root && root->n_bytes > 0) memcpy(out, root->buf, root->n_bytes);
}

static int sim_bcast(comm *c, void *buf, size_t n_bytes, int root, rc_err *err) {
    if (root < 0 || root >= c->size) return rc_fail(err, "comm bcast: root %d out of range [0, %d)", root, c->size);
    const size_t n_stage = c->rank == root ? n_bytes : 0;
    return sim_collective(c, SIM_BCAST, n_bytes, root, NULL, buf, n_stage, copy_bcast, buf, NULL, err);
}

static int sim_barrier(comm *c, rc_err *err) {
    return sim_collective(c, SIM_BARRIER, 0, -1, NULL, NULL, 0, NULL, NULL, NULL, err);
}

static _Noreturn void sim_abort(comm *c, int code) {
    fprintf(stderr, "recall: [rank %d @ sim] abort: ending the simulated job with exit code %d\n", c->rank, code);
    fflush(stdout);
    fflush(stderr);
    exit(code);
}

static void sim_shared_free(sim_shared *sh) {
    for (int r = 0; r < sh->size; r++) {
        free(sh->slots[r].buf);
        free(sh->slots[r].counts);
    }
    free(sh->slots);
    pthread_cond_destroy(&sh->cv);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

static void sim_destroy(comm *c) {
    sim_rank *me = c->impl;
    sim_shared *sh = me->sh;
    pthread_mutex_lock(&sh->mu);
    sh->n_departed++;
    const int last = --sh->n_alive == 0;
    pthread_cond_broadcast(&sh->cv);  // wake ranks stuck waiting for this one
    pthread_mutex_unlock(&sh->mu);
    if (last) sim_shared_free(sh);
    free(me);
    free(c);
}

static const comm_ops sim_ops = {
    .allgather = sim_allgather,
    .allgatherv = sim_allgatherv,
    .bcast = sim_bcast,
    .barrier = sim_barrier,
    .abort = sim_abort,
    .destroy = sim_destroy,
};

int comm_sim_create(int size, comm **comms, rc_err *err) {
    if (size < 1) return rc_fail(err, "comm sim: size %d must be at least 1", size);
    if (!comms) return rc_fail(err, "comm sim: NULL comms array");
    for (int r = 0; r < size; r++) comms[r] = NULL;
    sim_shared *sh = calloc(1, sizeof(*sh));
    if (!sh) return rc_fail(err, "comm sim: out of memory");
    sh->size = size;
    sh->n_alive = size;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv, NULL);
    sh->slots = calloc((size_t)size, sizeof(sim_slot));
    if (!sh->slots) goto oom;
    for (int r = 0; r < size; r++)
        if (!(sh->slots[r].counts = calloc((size_t)size, sizeof(size_t)))) goto oom;

    char host[sizeof(comms[0]->host)];
    if (gethostname(host, sizeof(host)) != 0) strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    for (int r = 0; r < size; r++) {
        comm *c = calloc(1, sizeof(*c));
        sim_rank *me = calloc(1, sizeof(*me));
        if (!c || !me) {
            free(c);
            free(me);
            goto oom;
        }
        me->sh = sh;
        c->ops = &sim_ops;
        c->kind = "sim";
        c->rank = r;
        c->size = size;
        c->local_rank = r;  // every simulated rank shares this host
        c->local_size = size;
        memcpy(c->host, host, sizeof(host));
        c->phase = COMM_PHASE_SETUP;
        c->impl = me;
        comms[r] = c;
    }
    return 0;

oom:
    for (int r = 0; r < size; r++) {
        if (comms[r]) {
            free(comms[r]->impl);
            free(comms[r]);
            comms[r] = NULL;
        }
    }
    if (sh->slots) {
        for (int r = 0; r < size; r++) free(sh->slots[r].counts);
        free(sh->slots);
    }
    pthread_cond_destroy(&sh->cv);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
    return rc_fail(err, "comm sim: out of memory creating %d ranks", size);
}
