// The CPU kernel path a test ran on, checked against the override that asked
// for one (RECALL_CPU_KERNELS, RECALL_CPU_PORTABLE): a test registered to run
// a forced path fails when the override did not take effect, so that path
// really ran.
#ifndef RECALL_TESTS_KERNEL_PATH_H
#define RECALL_TESTS_KERNEL_PATH_H

// Prints "<test>: CPU kernels: <path>" and returns 0; returns 77 (skip) when
// the forced path needs instructions this CPU lacks, else 1 (with why) when
// the CPU backend takes another path than the one forced.
int test_check_kernel_path(const char *test);

#endif
