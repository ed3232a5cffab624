// The backend the engine-level tests run on: the fast CPU backend, or with
// RECALL_TEST_BACKEND=strict the strict one whose buffers fault on any host
// access outside the backend (so a test run proves the engine never touches them),
// or with RECALL_TEST_BACKEND=cuda_emu the CUDA backend on the SIMT emulator
// (kernels/emu: every kernel from its CUDA source, device memory the host may not touch).
#ifndef RECALL_TESTS_TEST_BACKEND_H
#define RECALL_TESTS_TEST_BACKEND_H

#include "backend/backend.h"

// A plain CPU backend instance for unit tests that hand host arrays to
// library functions (1 thread); set up by test_backend_setup.
extern backend g_cpu;

void test_backend_setup(void);
// The table engine tests pass as engine_opts.backend.
const backend_ops *test_backend(void);
const char *test_backend_name(void);
// The device data path (comm/comm.h) an engine of the test backend attaches
// on n_ranks simulated ranks: "none" (host buffers, one rank), "nccl" with
// RECALL_DEVICE_COMM=nccl, else "staged" (=host, or auto: simulated ranks
// share one device).
const char *test_device_path(int n_ranks);

#endif
