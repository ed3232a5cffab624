#include "test_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_strict.h"

backend g_cpu;

void test_backend_setup(void) {
    rc_err err = {{0}};
    if (backend_init(&g_cpu, &backend_cpu, 1, -1, &err)) {
        fprintf(stderr, "backend_init: %s\n", err.msg);
        exit(1);
    }
    const char *want = getenv("RECALL_TEST_BACKEND");
    if (want && *want && strcmp(want, "cpu") != 0 && strcmp(want, "strict") != 0) {
        fprintf(stderr, "RECALL_TEST_BACKEND=%s: expected cpu or strict\n", want);
        exit(1);
    }
    fprintf(stderr, "engine tests on the %s backend\n", test_backend_name());
}

const backend_ops *test_backend(void) {
    const char *want = getenv("RECALL_TEST_BACKEND");
    return want && strcmp(want, "strict") == 0 ? &backend_cpu_strict : &backend_cpu;
}

const char *test_backend_name(void) { return test_backend()->name; }
