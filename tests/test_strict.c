// The strict backend can fail: host code that reads or writes a backend
// buffer, or runs one element past one, dies of a memory fault; the same
// accesses inside expose(b, p, 1) .. expose(b, p, 0) and inside its ops succeed.
// Each faulting access runs in a forked child and the parent checks the signal.
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend_strict.h"
#include "check.h"

enum { N = 37 };  // floats per buffer: not a multiple of a page, a vector or a cache line

static volatile float g_sink;

// What a child does with a fresh strict buffer of N floats.
enum probe { PROBE_READ, PROBE_WRITE, PROBE_OVERRUN, PROBE_UNDERRUN, PROBE_READ_EXPOSED, PROBE_AFTER_OP,
             PROBE_WEIGHT_READ };

static void child(enum probe what) {
    backend b;
    rc_err err;
    if (backend_init(&b, &backend_cpu_strict, 1, -1, &err)) _exit(3);
    float host[N];
    for (int i = 0; i < N; i++) host[i] = (float)i;
    float *buf = backend_upload_new(&b, host, sizeof(host));
    if (!buf) _exit(4);
    switch (what) {
    case PROBE_READ: g_sink = buf[3]; break;
    case PROBE_WRITE: buf[3] = 1.0f; break;
    case PROBE_OVERRUN: {  // a kernel that writes one element too many
        float big[N + 1] = {0};
        float *y = backend_upload_new(&b, big, sizeof(big));
        b.ops->add(&b, buf, y, N + 1);
        break;
    }
    case PROBE_UNDERRUN: g_sink = buf[-1]; break;  // the slack before a buffer is closed too
    case PROBE_READ_EXPOSED: {
        b.ops->expose(&b, buf, 1);
        float s = 0;
        for (int i = 0; i < N; i++) s += buf[i];
        buf[0] = s;
        b.ops->expose(&b, buf, 0);
        float back[N];
        b.ops->download(&b, back, buf, sizeof(back));
        if (back[0] != (float)(N * (N - 1) / 2)) _exit(5);  // 0 + 1 + ... + 36
        break;
    }
    case PROBE_AFTER_OP: {
        float *y = backend_upload_new(&b, host, sizeof(host));
        b.ops->add(&b, buf, y, N);  // works inside the op ...
        g_sink = buf[1];            // ... and faults right after it
        break;
    }
    case PROBE_WEIGHT_READ: {
        weight src = {.type = 0 /* F32 */, .data = host, .n_in = N, .n_out = 1, .row_bytes = sizeof(host)}, w;
        if (b.ops->weight_upload(&b, &w, &src, &err)) _exit(6);
        g_sink = ((const float *)w.data)[0];
        break;
    }
    }
    b.ops->free(&b, buf);
    backend_shutdown(&b);
    _exit(0);
}

// The signal that ended the child, 0 for a clean exit, -code for any other exit code.
static int run_child(enum probe what) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        child(what);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -100;
    if (WIFSIGNALED(st)) return WTERMSIG(st);
    return WEXITSTATUS(st) ? -WEXITSTATUS(st) : 0;
}

static int is_fault(int sig) { return sig == SIGSEGV || sig == SIGBUS; }

// Two simulated ranks, one instance each, open and close their own buffers
// concurrently: neither may ever see the other's protection.
typedef struct rank_arg {
    int rank, ok;
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *a = p;
    backend b;
    rc_err err;
    if (backend_init(&b, &backend_cpu_strict, 1, -1, &err)) return NULL;
    enum { M = 1000 };
    float host[M], back[M];
    for (int i = 0; i < M; i++) host[i] = (float)(i + a->rank);
    float *x = backend_upload_new(&b, host, sizeof(host)), *y = backend_upload_new(&b, host, sizeof(host));
    a->ok = x && y;
    for (int it = 0; it < 2000 && a->ok; it++) {
        b.ops->add(&b, x, y, M);
        if (it % 100 == 0) {
            b.ops->expose(&b, x, 1);
            a->ok = x[0] == (float)(a->rank * (it + 2));
            b.ops->expose(&b, x, 0);
        }
    }
    if (a->ok) {
        b.ops->download(&b, back, x, sizeof(back));
        for (int i = 0; i < M; i++) a->ok &= back[i] == 2001.0f * (float)(i + a->rank);
    }
    b.ops->free(&b, x);
    b.ops->free(&b, y);
    backend_shutdown(&b);
    return NULL;
}

int main(void) {
    int sig;
    sig = run_child(PROBE_READ);
    CHECK_MSG(is_fault(sig), "host read of a strict buffer: child ended with %d, wanted SIGSEGV/SIGBUS", sig);
    sig = run_child(PROBE_WRITE);
    CHECK_MSG(is_fault(sig), "host write of a strict buffer: child ended with %d", sig);
    sig = run_child(PROBE_OVERRUN);
    CHECK_MSG(is_fault(sig), "an op writing one element past a buffer: child ended with %d", sig);
    sig = run_child(PROBE_UNDERRUN);
    CHECK_MSG(is_fault(sig), "read one element before a buffer: child ended with %d", sig);
    sig = run_child(PROBE_AFTER_OP);
    CHECK_MSG(is_fault(sig), "host read right after an op: child ended with %d", sig);
    sig = run_child(PROBE_WEIGHT_READ);
    CHECK_MSG(is_fault(sig), "host read of an uploaded weight: child ended with %d", sig);
    sig = run_child(PROBE_READ_EXPOSED);
    CHECK_MSG(sig == 0, "reads and writes inside expose: child ended with %d, wanted a clean exit", sig);

    rank_arg args[2] = {{.rank = 1}, {.rank = 2}};
    pthread_t th[2];
    for (int r = 0; r < 2; r++) pthread_create(&th[r], NULL, rank_main, &args[r]);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    CHECK_MSG(args[0].ok && args[1].ok, "concurrent ranks on strict instances: %d %d", args[0].ok, args[1].ok);
    TEST_MAIN_END();
}
