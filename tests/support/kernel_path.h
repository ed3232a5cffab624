// The CPU kernel path a test ran on, checked against RECALL_CPU_PORTABLE: a
// test registered to run the portable kernels fails when the override did
// not take effect (so the portable path really ran).
#ifndef RECALL_TESTS_KERNEL_PATH_H
#define RECALL_TESTS_KERNEL_PATH_H

// Prints "<test>: CPU kernels: <path>" and returns 0, or prints why and
// returns 1 when RECALL_CPU_PORTABLE asks for the portable path and
// backend_cpu takes another.
int test_check_kernel_path(const char *test);

#endif
