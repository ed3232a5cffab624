#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/kv_format.h"
#include "core/hash.h"
#include "core/read_file.h"
#include "cli/cli.h"

static comm *g_comm;

void cli_set_comm(comm *c) { g_comm = c; }

_Noreturn void cli_die(const char *fmt, ...) {
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    // One line: newlines inside messages would break log parsing.
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fflush(stdout);
    if (g_comm && g_comm->size > 1) {
        char gpu[32] = "";
        if (g_comm->dev) snprintf(gpu, sizeof(gpu), ", GPU %d", g_comm->dev->device);
        fprintf(stderr, "recall: [rank %d @ %s%s] %s\n", g_comm->rank, g_comm->host, gpu, msg);
        fflush(stderr);
        comm_abort(g_comm, 1);  // the device data path first (ncclCommAbort), then every rank
    }
    fprintf(stderr, "recall: %s\n", msg);
    exit(1);
}

_Noreturn void cli_die_err(const rc_err *err) { cli_die("%s", err->msg); }

void cli_check_logits(const float *logits, int64_t n_vocab, const char *step_fmt, ...) {
    for (int64_t v = 0; v < n_vocab; v++) {
        if (isfinite(logits[v])) continue;
        char step[256];
        va_list ap;
        va_start(ap, step_fmt);
        vsnprintf(step, sizeof(step), step_fmt, ap);
        va_end(ap);
        cli_die("non-finite logits after %s (token %lld: %g): the model's weights or metadata are broken",
                step, (long long)v, (double)logits[v]);
    }
}

comm *cli_comm_init(void) {
    rc_err err = {{0}};
    comm *c = comm_launched_by_mpi() ? comm_mpi_create(NULL, NULL, &err) : comm_null_create();
    if (!c) cli_die_err(&err);
    cli_set_comm(c);
    return c;
}

int cli_parse_kv_type(const char *value) {
    const int elem = kv_elem_parse(value);
    if (elem < 0) cli_die("--kv-type: '%s' is not f16, f32, q8_0 or q4_0", value);
    return elem;
}

int64_t cli_parse_int(const char *flag, const char *value, int64_t min, int64_t max) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end != '\0') cli_die("%s: '%s' is not an integer", flag, value);
    if (v < min || v > max) cli_die("%s: %lld is out of range [%lld, %lld]", flag, v, (long long)min, (long long)max);
    return v;
}

double cli_parse_double(const char *flag, const char *value, double min, double max) {
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end != '\0') cli_die("%s: '%s' is not a number", flag, value);
    if (!(v >= min && v <= max)) cli_die("%s: %g is out of range [%g, %g]", flag, v, min, max);
    return v;
}

int cli_parse_int_list(const char *flag, const char *value, int64_t *out, int max_n, int64_t min, int64_t max) {
    int n = 0;
    char *copy = strdup(value);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        if (n == max_n) cli_die("%s: more than %d values", flag, max_n);
        out[n++] = cli_parse_int(flag, tok, min, max);
    }
    free(copy);
    if (n == 0) cli_die("%s: expected a comma-separated list of integers", flag);
    return n;
}

int cli_default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double cli_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_load_model(comm *cm, model *m, const char *path) {
    rc_err err = {{0}};
    if (model_load(m, path, &err)) cli_die_err(&err);
    if (!cm || cm->size <= 1) return;
    // Every rank must hold the same model: compare the file size and a hash
    // of everything before the tensor data (metadata, vocabulary, tensor table).
    const gguf_file *f = &m->file;
    uint64_t mine[2] = {(uint64_t)f->n_bytes, fnv1a(FNV1A_INIT, f->map, (size_t)f->data_offset)};
    uint64_t *all = malloc((size_t)cm->size * sizeof(mine));
    if (!all) cli_die("out of memory");
    if (comm_allgather(cm, mine, sizeof(mine), all, &err)) cli_die_err(&err);
    int bad = -1;
    for (int r = 1; r < cm->size && bad < 0; r++)
        if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) bad = r;
    if (bad >= 0) {
        if (cm->rank != 0) {  // rank 0 reports it and ends the job
            comm_barrier(cm, &err);
            exit(1);
        }
        cli_die("the model file differs between ranks: rank %d has %llu bytes with header hash %016llx, rank 0 (%s) "
                "%llu bytes with %016llx; give every rank the same file", bad, (unsigned long long)all[2 * bad],
                (unsigned long long)all[2 * bad + 1], path, (unsigned long long)all[0], (unsigned long long)all[1]);
    }
    free(all);
}

char *cli_read_file(const char *path, const char *what, size_t *n_bytes) {
    rc_err err = {{0}};
    char *text = NULL;
    if (read_file_bounded(path, CLI_MAX_TEXT_BYTES, what, &text, n_bytes, &err)) cli_die_err(&err);
    return text;
}

void cli_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);  // RFC 4180: quoted, inner quotes doubled
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void cli_command_line(const char *head, int argc, char **argv, char *buf, size_t cap) {
    if (cap == 0) return;
    size_t len = (size_t)snprintf(buf, cap, "%s", head);
    for (int a = 1; a < argc && len + 1 < cap; a++) {
        const int quote = argv[a][0] == '\0' || strpbrk(argv[a], " \t\n\"'\\$`!*?;&|<>()[]{}#~") != NULL;
        len += (size_t)snprintf(buf + len, cap - len, quote ? " '" : " ");
        for (const char *c = argv[a]; *c && len + 1 < cap; c++) {
            if (quote && *c == '\'') len += (size_t)snprintf(buf + len, cap - len, "'\\''");  // ' -> '\''
            else buf[len++] = *c, buf[len] = '\0';
        }
        if (quote && len + 1 < cap) len += (size_t)snprintf(buf + len, cap - len, "'");
    }
    if (len >= cap) buf[cap - 1] = '\0';
}
