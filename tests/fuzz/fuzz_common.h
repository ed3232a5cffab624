// Pieces shared by the libFuzzer harnesses (one harness per file here,
// registered with one recall_fuzz_harness() line in CMakeLists.txt).
#ifndef RECALL_TESTS_FUZZ_COMMON_H
#define RECALL_TESTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

// Stops the run with a message; libFuzzer saves the input as a crash.
_Noreturn void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Writes data to this process's scratch file (a memfd) and returns its path
// (/proc/self/fd/N), for readers that take a path (mmap, fopen).
const char *fuzz_scratch_file(const uint8_t *data, size_t n_bytes);

// A private copy at a 64-byte boundary, as a mapped file would be (page
// aligned); libFuzzer's own buffer has no alignment promise. Caller frees.
uint8_t *fuzz_aligned_copy(const uint8_t *data, size_t n_bytes);

// What every model that loads must satisfy: dimensions within the bounds,
// positive finite eps and RoPE frequencies, every weight view inside the
// file. Dequantizes the first and last row of every matrix, so a misaligned
// or out-of-range view shows up under the sanitizers.
void fuzz_check_model(const model *m);

// The path of the real model (RECALL_MODEL, else the configured default).
const char *fuzz_model_path(void);

#endif
