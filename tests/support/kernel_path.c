#include "kernel_path.h"

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

// F16C from cpuid itself: clang 14 (the fuzzing build, which compiles this
// directory too) does not know the "f16c" feature name.
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

// Whether this CPU runs a path, from cpuid here rather than from the backend under test.
static int cpu_can_run(const char *path) {
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    if (!strcmp(path, "avx2")) return avx2;
    if (!strcmp(path, "avx512"))
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    return 1;
}

int test_check_kernel_path(const char *test) {
    const char *portable = getenv("RECALL_CPU_PORTABLE"), *kernels = getenv("RECALL_CPU_KERNELS");
    const char *want = portable && portable[0] && strcmp(portable, "0") != 0 ? "portable"
                       : kernels && kernels[0]                                ? kernels
                                                                              : NULL;
    const char *path = backend_cpu_kernel_path();
    printf("%s: CPU kernels: %s%s%s\n", test, path, want ? " (forced: " : "", want ? want : "");
    if (want) printf(")\n");
    if (!want || !strcmp(path, want)) return 0;
    if (!cpu_can_run(want)) {
        printf("%s: skipped: this CPU cannot run the %s kernels\n", test, want);
        return 77;
    }
    fprintf(stderr, "%s: the %s kernels were forced but the CPU backend runs the %s kernels\n", test, want, path);
    return 1;
}
