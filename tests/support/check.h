// Minimal test harness: every CHECK failure is printed with file:line and the
// test exits non-zero at the end (TEST_MAIN_END). Exit 77 means "skipped".
#ifndef RECALL_TESTS_CHECK_H
#define RECALL_TESTS_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Largest |a - ref| over the whole vector, relative to max |ref| (NaN: inf):
// how far one run's logits are from another's.
static inline double max_rel_diff(const float *a, const float *ref, int64_t n) {
    double scale = 0.0, worst = 0.0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]) / (scale > 0 ? scale : 1.0);
        if (d > worst || isnan(d)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static int g_checks_failed = 0;
static int g_checks_run = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        g_checks_run++;                                                               \
        if (!(cond)) {                                                                \
            g_checks_failed++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                \
    do {                                                                    \
        g_checks_run++;                                                     \
        if (!(cond)) {                                                      \
            g_checks_failed++;                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)

// |a - b| <= atol + rtol * |b|, and neither is NaN.
#define CHECK_CLOSE(a, b, atol, rtol)                                                         \
    do {                                                                                      \
        double a_ = (double)(a), b_ = (double)(b);                                            \
        CHECK_MSG(!isnan(a_) && !isnan(b_) && fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_),    \
                  "%s = %.9g, %s = %.9g", #a, a_, #b, b_);                                     \
    } while (0)

#define TEST_MAIN_END()                                                              \
    do {                                                                             \
        if (g_checks_failed) {                                                       \
            fprintf(stderr, "%d of %d checks FAILED\n", g_checks_failed, g_checks_run); \
            return 1;                                                                \
        }                                                                            \
        printf("all %d checks passed\n", g_checks_run);                              \
        return 0;                                                                    \
    } while (0)

#define TEST_SKIP 77

// Every real-model test fails (never skips) without the model: one line that
// says where it looked and how to fetch it.
static inline int test_missing_model(const char *path, const char *why) {
    fprintf(stderr, "FAIL: the real model is required at %s (%s); fetch it with: bash launch/setup.sh\n", path, why);
    return 1;
}

#endif
