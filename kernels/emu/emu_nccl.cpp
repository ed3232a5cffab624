// NCCL as the SIMT emulator serves it: the ranks of a communicator are threads
// of this process (the simulated job), their buffers the emulator's device
// memory. Every call is synchronous, like the emulator's streams.
//
// A collective has comm_sim's shape: every rank posts (call number, op, count,
// type, root, buffers) to the clique; the last to arrive compares the posts,
// and when they differ (a real job would hang or corrupt data) every rank
// returns ncclInvalidUsage and one line names the ranks and fields. Otherwise
// each rank copies what it receives straight out of the others' device
// buffers, then waits in a second rendezvous, so no rank returns (and refills
// its send buffer) before all have read it. A call that fails its own
// argument checks still takes part, posting "invalid", so its peers fail
// instead of hanging. Waits never hold the emulator lock (g_mu).
//
// Unlike NCCL, calls inside a group run one after another at the outermost
// ncclGroupEnd, so a group may not hold two ranks of one clique (one thread
// driving several ranks would wait for itself). Zero-count calls are local
// no-ops, as in NCCL (enqueue.cc returns before any communication).
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "kernels/emu/emu_internal.h"
#include "kernels/emu/emu_nccl.h"

namespace {

const int NCCL_VERSION_CODE_EMU = 22809;  // the toolkit's NCCL, 2.28.9
const int INIT_WAIT_S = 60;              // ncclCommInitRank: every rank must join within this
const int COLL_WAIT_S = 600;             // a rendezvous: only a rank that never comes (its thread ended) takes this long
const char ID_MAGIC[] = "recall-emu-nccl";

enum { OP_ALLGATHER = 1, OP_BCAST = 2 };

const char *op_name(int op) { return op == OP_ALLGATHER ? "ncclAllGather" : op == OP_BCAST ? "ncclBroadcast" : "?"; }

// Bytes per element; 0 for a type NCCL 2.28 does not have.
size_t type_bytes(int t) {
    switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    case 10: case 11: return 1;  // ncclFloat8e4m3, ncclFloat8e5m2 (not declared: recall does not use them)
    default: return 0;
    }
}

const char *type_name(int t) {
    static const char *names[] = {"ncclInt8",    "ncclUint8",   "ncclInt32",   "ncclUint32",
                                  "ncclInt64",   "ncclUint64",  "ncclFloat16", "ncclFloat32",
                                  "ncclFloat64", "ncclBfloat16", "ncclFloat8e4m3", "ncclFloat8e5m2"};
    return t >= 0 && t < ncclNumTypes ? names[t] : "?";
}

// pthread rather than std:: so that timed waits are ones ThreadSanitizer knows.
struct locker {
    pthread_mutex_t *m;
    explicit locker(pthread_mutex_t *mu) : m(mu) { pthread_mutex_lock(m); }
    ~locker() { pthread_mutex_unlock(m); }
    locker(const locker &) = delete;
    locker &operator=(const locker &) = delete;
};

void cond_init(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

struct timespec deadline_after(int seconds) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += seconds;
    return t;
}

// What one rank brings to a collective.
struct post {
    ncclResult_t local;  // not ncclSuccess: the call failed this rank's own checks
    unsigned long long seq;
    int op;
    size_t count;
    int dtype;
    int root;
    const void *send;
    void *recv;
};

// The ranks of one unique id. Init fields are guarded by g_reg_mu, the rest by mu.
struct clique {
    int nranks;
    // init
    int joined = 0;
    std::vector<char> taken;
    bool complete = false;
    ncclResult_t init_rc = ncclSuccess;  // a failed init: every joiner gets it
    std::string init_msg;
    pthread_cond_t init_cv;
    // collectives
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int alive = 0;    // communicators not yet destroyed or aborted
    int arrived = 0;  // ranks inside the current rendezvous
    unsigned long long gen = 0;  // rendezvous completed
    std::vector<post> posts;
    std::string verdict;   // the last completed post rendezvous: "" when the ranks agreed
    int aborted_by = -1;   // a rank that called ncclCommAbort
    int departed = -1;     // a rank that destroyed its communicator
    std::string broken;    // a rank gave up waiting (timeout)

    explicit clique(int n) : nranks(n), taken((size_t)n, 0), posts((size_t)n) {
        cond_init(&init_cv);
        cond_init(&cv);
        pthread_mutex_init(&mu, nullptr);
    }
    ~clique() {
        pthread_cond_destroy(&init_cv);
        pthread_cond_destroy(&cv);
        pthread_mutex_destroy(&mu);
    }
};

pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
// Ids still being joined, and the ones that failed (kept, so late joiners fail
// at once). Never destroyed: still reachable for the leak checker at exit.
std::map<std::string, clique *> &g_reg = *new std::map<std::string, clique *>();
std::atomic<unsigned long long> g_id_counter{0};

}  // namespace

struct ncclComm {
    clique *q;
    int rank, nranks;
    unsigned long long seq;  // collectives this rank has entered (owner thread)
    bool finalized;
    int busy;                // calls in progress (under q->mu): an abort from another thread waits for them
    std::atomic<int> async;  // ncclRemoteError once this rank has seen the clique aborted
    char last[1024];         // ncclGetLastError (owner thread)
};

namespace {

thread_local char t_last[1024];
thread_local unsigned long long t_n_coll = 0, t_bytes_recv = 0;

// One call as queued by a group (or run at once).
struct op_desc {
    int op;
    const void *send;
    void *recv;
    size_t count;
    int dtype;
    int root;
    ncclComm_t comm;
    ncclResult_t local;
};
thread_local int t_group_depth = 0;
thread_local std::vector<op_desc> t_queue;
thread_local ncclResult_t t_group_err = ncclSuccess;

void remember(ncclComm_t c, const char *line) {
    snprintf(t_last, sizeof t_last, "recall-emu: %s", line);
    if (c) snprintf(c->last, sizeof c->last, "recall-emu: %s", line);
}

// Prints "recall-emu: <msg>", remembers it for ncclGetLastError, returns r.
ncclResult_t fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
ncclResult_t fail(ncclComm_t c, ncclResult_t r, const char *fmt, ...) {
    char line[1000];  // + "recall-emu: " fits the 1024 of ncclGetLastError's buffers
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "recall-emu: %s\n", line);
    remember(c, line);
    return r;
}

std::string rank_list(const std::vector<int> &ranks) {
    std::string s = ranks.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < ranks.size(); i++) s += (i ? "," : "") + std::to_string(ranks[i]);
    return s;
}

// "count 4096 on ranks 0,1,3, 4095 on rank 2": one field's values, grouped.
std::string field_groups(const char *field, const std::vector<std::string> &vals) {
    std::vector<std::string> distinct;
    for (const std::string &v : vals)
        if (std::find(distinct.begin(), distinct.end(), v) == distinct.end()) distinct.push_back(v);
    if (distinct.size() < 2) return "";
    std::string s = field;
    for (size_t d = 0; d < distinct.size(); d++) {
        std::vector<int> who;
        for (size_t r = 0; r < vals.size(); r++)
            if (vals[r] == distinct[d]) who.push_back((int)r);
        s += (d ? ", " : " ") + distinct[d] + " on " + rank_list(who);
    }
    return s;
}

bool overlap(const char *a, size_t na, const char *b, size_t nb) { return na && nb && a < b + nb && b < a + na; }

// The verdict on one rendezvous's posts: "" when every rank may proceed.
std::string judge(const std::vector<post> &p) {
    const int n = (int)p.size();
    char head[96];
    snprintf(head, sizeof head, "%s (collective #%llu)", op_name(p[0].op), p[0].seq);
    std::vector<int> bad;
    for (int r = 0; r < n; r++)
        if (p[r].local != ncclSuccess) bad.push_back(r);
    if (!bad.empty())
        return std::string(head) + ": " + rank_list(bad) + (bad.size() == 1 ? " failed its" : " failed their") +
               " own argument checks, so every rank fails the call";
    std::vector<std::string> seq, op, count, dtype, root;
    for (const post &x : p) {
        seq.push_back(std::to_string(x.seq));
        op.push_back(op_name(x.op));
        count.push_back(std::to_string(x.count));
        dtype.push_back(type_name(x.dtype));
        root.push_back(std::to_string(x.root));
    }
    std::string diff;
    for (const std::string &f : {field_groups("op", op), field_groups("count", count), field_groups("datatype", dtype),
                                 field_groups("root", root), field_groups("call number", seq)})
        if (!f.empty()) diff += (diff.empty() ? "" : "; ") + f;
    if (!diff.empty()) return std::string(head) + ": the ranks' arguments differ (NCCL would hang or corrupt): " + diff;
    // Ranks share one address space only here: buffers one rank writes must be its own.
    const size_t n_bytes = p[0].count * type_bytes(p[0].dtype);
    const bool gather = p[0].op == OP_ALLGATHER;
    for (int r = 0; r < n; r++)
        for (int s = 0; s < n; s++) {
            if (r == s) continue;
            const char *recv = (const char *)p[r].recv, *rs = (const char *)p[s].recv, *ss = (const char *)p[s].send;
            const size_t nr = gather ? n_bytes * (size_t)n : n_bytes;
            const size_t ns = gather || s == p[0].root ? n_bytes : 0;  // a broadcast reads sendbuff on the root only
            const char *what = overlap(recv, nr, rs, nr) ? "recvbuff" : overlap(recv, nr, ss, ns) ? "sendbuff" : nullptr;
            if (what) {
                char m[256];
                snprintf(m, sizeof m, ": rank %d's recvbuff %p overlaps rank %d's %s %p (every rank needs its own buffers)",
                         r, (void *)recv, s, what, what[0] == 'r' ? (const void *)rs : (const void *)ss);
                return std::string(head) + m;
            }
        }
    return "";
}

// Waits until every rank of the clique has arrived. mine: this rank's post (the
// first rendezvous of a call) or NULL; then *verdict gets judge's word and
// *all the posts. Fails on an abort, a departed rank, or a timeout.
ncclResult_t rendezvous(ncclComm_t c, const char *what, const post *mine, std::vector<post> *all, std::string *verdict) {
    clique *q = c->q;
    std::string judged;
    {
        locker lk(&q->mu);
        const unsigned long long gen = q->gen;
        if (q->aborted_by < 0 && q->departed < 0 && q->broken.empty()) {
            if (mine) q->posts[(size_t)c->rank] = *mine;
            if (++q->arrived == q->nranks) {
                if (mine) judged = q->verdict = judge(q->posts);
                q->arrived = 0;
                q->gen++;
                pthread_cond_broadcast(&q->cv);
            } else {
                const struct timespec end = deadline_after(COLL_WAIT_S);
                while (q->gen == gen && q->aborted_by < 0 && q->departed < 0 && q->broken.empty())
                    if (pthread_cond_timedwait(&q->cv, &q->mu, &end) == ETIMEDOUT) break;
            }
        }
        if (q->gen != gen) {  // completed, whatever happened since
            if (all) *all = q->posts;
            if (verdict) *verdict = q->verdict;
        } else if (q->aborted_by >= 0) {
            c->async.store(ncclRemoteError);
            return fail(c, ncclRemoteError, "%s (rank %d of %d): rank %d aborted the communicator", what, c->rank,
                        c->nranks, q->aborted_by);
        } else if (q->departed >= 0) {
            return fail(c, ncclInvalidUsage, "%s (rank %d of %d): rank %d destroyed its communicator while this rank is in a collective",
                        what, c->rank, c->nranks, q->departed);
        } else {
            if (q->broken.empty()) {
                char m[160];
                snprintf(m, sizeof m, "rank %d waited %d s in %s for the others (a rank that never came?)", c->rank,
                         COLL_WAIT_S, what);
                q->broken = m;
                pthread_cond_broadcast(&q->cv);
            }
            return fail(c, ncclSystemError, "%s (rank %d of %d): %s", what, c->rank, c->nranks, q->broken.c_str());
        }
    }
    if (!judged.empty()) fprintf(stderr, "recall-emu: %s\n", judged.c_str());  // once, by the last to arrive
    return ncclSuccess;
}

// Copies what this rank receives, out of the others' device buffers.
ncclResult_t receive(ncclComm_t c, const op_desc &d, const std::vector<post> &all, unsigned long long *bytes_recv) {
    const char *name = op_name(d.op);
    if (rc_emu::device_begin(name) != cudaSuccess)
        return fail(c, ncclUnhandledCudaError, "%s (rank %d of %d): a failed kernel left a sticky CUDA error; nothing received",
                    name, c->rank, c->nranks);
    const size_t n = d.count * type_bytes(d.dtype);
    ncclResult_t r = ncclSuccess;
    auto copy = [&](void *dst, const void *src, int from) {
        if (r != ncclSuccess || dst == src) return;
        if (!rc_emu::open_device_range(dst, n) || !rc_emu::open_device_range(src, n)) {
            r = fail(c, ncclRemoteError, "%s (rank %d of %d): rank %d's buffer %p is gone (freed after an abort?)", name,
                     c->rank, c->nranks, from, src);
            return;
        }
        memmove(dst, src, n);
        if (from != c->rank) *bytes_recv += n;
    };
    if (d.op == OP_ALLGATHER)
        for (int s = 0; s < c->nranks; s++) copy(static_cast<char *>(d.recv) + (size_t)s * n, all[(size_t)s].send, s);
    else
        copy(d.recv, all[(size_t)d.root].send, d.root);
    rc_emu::device_end();
    return r;
}

// One collective, start to end, on the calling thread.
ncclResult_t run(const op_desc &d) {
    ncclComm_t c = d.comm;
    {
        locker lk(&c->q->mu);
        c->busy++;
    }
    const post mine{d.local, c->seq++, d.op, d.count, d.dtype, d.root, d.send, d.recv};
    std::vector<post> all;
    std::string verdict;
    unsigned long long bytes = 0;
    ncclResult_t r = rendezvous(c, op_name(d.op), &mine, &all, &verdict);
    if (r == ncclSuccess && !verdict.empty()) {
        if (d.local == ncclSuccess) remember(c, verdict.c_str());  // else its own line says more
        r = d.local != ncclSuccess ? d.local : ncclInvalidUsage;
    } else if (r == ncclSuccess) {
        const ncclResult_t got = receive(c, d, all, &bytes);
        r = rendezvous(c, op_name(d.op), nullptr, nullptr, nullptr);  // also after a failed receive: peers wait here
        if (r == ncclSuccess) r = got;
    }
    if (r == ncclSuccess) {
        t_n_coll++;
        t_bytes_recv += bytes;
    }
    locker lk(&c->q->mu);
    if (--c->busy == 0) pthread_cond_broadcast(&c->q->cv);
    return r;
}

// NCCL's argument checks, plus the emulator's: buffers must be device memory.
// ncclSuccess with d.count == 0 means a local no-op.
ncclResult_t check(op_desc &d) {
    ncclComm_t c = d.comm;
    const char *name = op_name(d.op);
    const size_t es = type_bytes(d.dtype);
    if (d.dtype < 0 || d.dtype >= ncclNumTypes || es == 0)
        return fail(c, ncclInvalidArgument, "%s (rank %d of %d): datatype %d is not an NCCL type", name, c->rank,
                    c->nranks, d.dtype);
    if (d.op == OP_BCAST && (d.root < 0 || d.root >= c->nranks))
        return fail(c, ncclInvalidArgument, "%s (rank %d of %d): root %d is not a rank", name, c->rank, c->nranks, d.root);
    if (c->finalized)
        return fail(c, ncclInvalidUsage, "%s (rank %d of %d): the communicator was finalized", name, c->rank, c->nranks);
    const size_t n_ranks = (size_t)c->nranks;
    if (d.count > SIZE_MAX / es / n_ranks)
        return fail(c, ncclInvalidArgument, "%s (rank %d of %d): count %zu of %s overflows", name, c->rank, c->nranks,
                    d.count, type_name(d.dtype));
    if (d.count == 0) return ncclSuccess;
    const size_t n = d.count * es, n_recv = d.op == OP_ALLGATHER ? n * n_ranks : n;
    const bool uses_send = d.op == OP_ALLGATHER || c->rank == d.root;
    if (rc_emu::device_begin(name) != cudaSuccess)
        return fail(c, ncclUnhandledCudaError, "%s (rank %d of %d): a failed kernel left a sticky CUDA error", name, c->rank,
                    c->nranks);
    char msg[512] = "";
    struct side {
        const char *what;
        const void *p;
        size_t n;
    } sides[2] = {{"sendbuff", d.send, uses_send ? n : 0}, {"recvbuff", d.recv, n_recv}};
    for (const side &s : sides) {
        if (s.n == 0 || msg[0]) continue;
        const void *base = nullptr;
        size_t size = 0;
        const int k = rc_emu::classify_device_range(s.p, s.n, &base, &size);
        if (k == 0)
            snprintf(msg, sizeof msg, "%s %p is not device memory (cudaMalloc'd)", s.what, s.p);
        else if (k == 1)
            snprintf(msg, sizeof msg, "%s range [%p, +%zu) runs outside its %zu-byte device buffer at %p", s.what, s.p,
                     s.n, size, base);
    }
    rc_emu::device_end();
    if (msg[0]) return fail(c, ncclInvalidArgument, "%s (rank %d of %d): %s", name, c->rank, c->nranks, msg);
    // In place, as NCCL allows it: allgather sendbuff == recvbuff + rank * n, broadcast sendbuff == recvbuff.
    if (uses_send) {
        const char *in_place = static_cast<const char *>(d.recv) + (d.op == OP_ALLGATHER ? (size_t)c->rank * n : 0);
        if (d.send != in_place && overlap(static_cast<const char *>(d.send), n, static_cast<const char *>(d.recv), n_recv))
            return fail(c, ncclInvalidArgument,
                        "%s (rank %d of %d): sendbuff %p overlaps recvbuff %p but is not the in-place position %p", name,
                        c->rank, c->nranks, d.send, d.recv, (const void *)in_place);
    }
    return ncclSuccess;
}

ncclResult_t collective(op_desc d, cudaStream_t stream) {
    if (!d.comm) return fail(nullptr, ncclInvalidArgument, "%s: comm is NULL", op_name(d.op));
    ncclResult_t r = rc_emu::is_valid_stream(stream)
                         ? check(d)
                         : fail(d.comm, ncclInvalidArgument, "%s (rank %d of %d): stream %p is not a live CUDA stream",
                                op_name(d.op), d.comm->rank, d.comm->nranks, (void *)stream);
    if (d.count == 0) return r;  // local, as in NCCL: peers with count 0 do not come either
    d.local = r;
    if (t_group_depth > 0) {
        t_queue.push_back(d);
        if (r != ncclSuccess && t_group_err == ncclSuccess) t_group_err = r;
        return r;
    }
    return run(d);  // a locally failed call still meets its peers (see the top)
}

// Drops the calls a group queued on a communicator that goes away.
void forget_queued(ncclComm_t c) {
    t_queue.erase(std::remove_if(t_queue.begin(), t_queue.end(), [c](const op_desc &d) { return d.comm == c; }),
                  t_queue.end());
}

// Leaves the clique (abort or destroy); the last to leave frees it.
void leave(ncclComm_t c, bool abort) {
    clique *q = c->q;
    bool last;
    {
        locker lk(&q->mu);
        if (abort && q->aborted_by < 0) q->aborted_by = c->rank;
        if (!abort && q->departed < 0) q->departed = c->rank;
        pthread_cond_broadcast(&q->cv);
        while (c->busy > 0) pthread_cond_wait(&q->cv, &q->mu);  // a call on another thread leaves promptly now
        last = --q->alive == 0;
    }
    forget_queued(c);
    if (last) delete q;
    delete c;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int *version) {
    if (!version) return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = NCCL_VERSION_CODE_EMU;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *unique_id) {
    if (!unique_id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: unique_id is NULL");
    memset(unique_id, 0, sizeof *unique_id);
    memcpy(unique_id->internal, ID_MAGIC, sizeof ID_MAGIC);
    const long long pid = (long long)getpid();
    const unsigned long long k = ++g_id_counter;
    memcpy(unique_id->internal + 16, &pid, sizeof pid);
    memcpy(unique_id->internal + 24, &k, sizeof k);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId comm_id, int rank) {
    if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    *comm = nullptr;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank %d of %d ranks is out of range", rank, nranks);
    if (memcmp(comm_id.internal, ID_MAGIC, sizeof ID_MAGIC))
        return fail(nullptr, ncclInvalidArgument,
                    "ncclCommInitRank (rank %d of %d): the id is not one ncclGetUniqueId made (was it broadcast to every rank?)",
                    rank, nranks);
    const std::string key(comm_id.internal, NCCL_UNIQUE_ID_BYTES);
    clique *q;
    {
        locker lk(&g_reg_mu);
        clique *&slot = g_reg[key];
        if (!slot) slot = new clique(nranks);
        q = slot;
        if (q->init_rc == ncclSuccess) {
            char m[160] = "";
            if (q->nranks != nranks)
                snprintf(m, sizeof m, "rank %d says %d ranks, an earlier rank said %d", rank, nranks, q->nranks);
            else if (q->taken[(size_t)rank])
                snprintf(m, sizeof m, "rank %d joined twice", rank);
            if (m[0]) {
                q->init_rc = ncclInvalidArgument;
                q->init_msg = m;
                pthread_cond_broadcast(&q->init_cv);
            }
        }
        if (q->init_rc == ncclSuccess) {
            q->taken[(size_t)rank] = 1;
            if (++q->joined == nranks) {
                q->complete = true;
                q->alive = nranks;
                g_reg.erase(key);
                pthread_cond_broadcast(&q->init_cv);
            }
            const struct timespec end = deadline_after(INIT_WAIT_S);
            while (!q->complete && q->init_rc == ncclSuccess)
                if (pthread_cond_timedwait(&q->init_cv, &g_reg_mu, &end) == ETIMEDOUT) break;
            if (!q->complete && q->init_rc == ncclSuccess) {
                char m[160];
                snprintf(m, sizeof m, "only %d of %d ranks joined within %d s", q->joined, nranks, INIT_WAIT_S);
                q->init_rc = ncclSystemError;
                q->init_msg = m;
                pthread_cond_broadcast(&q->init_cv);
            }
        }
        // A failed clique stays registered, so later joiners fail at once too.
        if (!q->complete)
            return fail(nullptr, q->init_rc, "ncclCommInitRank (rank %d of %d): %s", rank, nranks, q->init_msg.c_str());
    }
    ncclComm_t c = new ncclComm();
    c->q = q;
    c->rank = rank;
    c->nranks = nranks;
    c->seq = 0;
    c->finalized = false;
    c->busy = 0;
    c->async.store(ncclSuccess);
    c->last[0] = '\0';
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
    comm->finalized = true;  // every call is synchronous: nothing is left to flush
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm) leave(comm, false);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (comm) leave(comm, true);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    if (!comm || !async_error) return fail(comm, ncclInvalidArgument, "ncclCommGetAsyncError: NULL argument");
    ncclResult_t e = (ncclResult_t)comm->async.load();
    if (e == ncclSuccess) {
        locker lk(&comm->q->mu);
        if (comm->q->aborted_by >= 0) e = ncclRemoteError;
    }
    *async_error = e;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
    if (!comm || !count) return fail(comm, ncclInvalidArgument, "ncclCommCount: NULL argument");
    *count = comm->nranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
    if (!comm || !rank) return fail(comm, ncclInvalidArgument, "ncclCommUserRank: NULL argument");
    *rank = comm->rank;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return comm ? comm->last : t_last; }

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective(op_desc{OP_BCAST, sendbuff, recvbuff, count, (int)datatype, root, comm, ncclSuccess}, stream);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective(op_desc{OP_ALLGATHER, sendbuff, recvbuff, sendcount, (int)datatype, -1, comm, ncclSuccess}, stream);
}

ncclResult_t ncclGroupStart(void) {
    t_group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (t_group_depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--t_group_depth > 0) return ncclSuccess;
    std::vector<op_desc> queued;
    queued.swap(t_queue);
    ncclResult_t first = t_group_err;
    t_group_err = ncclSuccess;
    // Every queued call runs, failed or not, so every rank meets its peers equally often.
    for (const op_desc &d : queued) {
        const ncclResult_t r = run(d);
        if (first == ncclSuccess) first = r;
    }
    return first;
}

void rc_emu_nccl_stats(unsigned long long *n_collectives, unsigned long long *bytes_recv) {
    if (n_collectives) *n_collectives = t_n_coll;
    if (bytes_recv) *bytes_recv = t_bytes_recv;
}

}  // extern "C"
