// Emulator internals shared by emu_runtime.cpp and emu_cublas.cpp.
#ifndef RC_KERNELS_EMU_INTERNAL_H
#define RC_KERNELS_EMU_INTERNAL_H

#include <stddef.h>

#include "kernels/emu/emu_runtime.h"

namespace rc_emu {

// Brackets host code that stands for device work (a copy, a cuBLAS call):
// takes the emulator lock and lets it touch device buffers. `what` names it
// in fault reports. begin returns the sticky error, if any (then skip the work).
cudaError_t device_begin(const char *what);
void device_end();
// 1 when [p, p + n_bytes) lies inside one device allocation.
int is_device_range(const void *p, size_t n_bytes);
// Prints "recall-emu: <what>: <msg>" and makes cudaErrorLaunchFailure sticky.
void fail_sticky(const char *what, const char *msg);

}  // namespace rc_emu

#endif
