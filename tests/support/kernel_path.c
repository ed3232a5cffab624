#include "kernel_path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

int test_check_kernel_path(const char *test) {
    const char *forced = getenv("RECALL_CPU_PORTABLE");
    const int want_portable = forced && forced[0] && strcmp(forced, "0") != 0;
    const char *path = backend_cpu_kernel_path();
    printf("%s: CPU kernels: %s%s\n", test, path, want_portable ? " (RECALL_CPU_PORTABLE set)" : "");
    if (want_portable && strcmp(path, "portable") != 0) {
        fprintf(stderr, "%s: RECALL_CPU_PORTABLE=%s but the CPU backend runs the %s kernels\n", test, forced, path);
        return 1;
    }
    return 0;
}
