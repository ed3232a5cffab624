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
// The same, for messages: 0 when p is not device memory; 1 when it is but the
// range runs outside its buffer (*base, *size: that buffer); 2 when inside.
// Call between device_begin and device_end (the table may change otherwise).
int classify_device_range(const void *p, size_t n_bytes, const void **base, size_t *size);
// Opens the buffer holding [p, p + n_bytes) for this device work, so another
// thread's buffer can be read too; 0 (nothing opened) when the range does not
// lie inside one allocation. Between device_begin and device_end only.
int open_device_range(const void *p, size_t n_bytes);
// 1 for NULL (the default stream) or a live stream from cudaStreamCreate*.
int is_valid_stream(cudaStream_t stream);
// Prints "recall-emu: <what>: <msg>" and makes cudaErrorLaunchFailure sticky.
void fail_sticky(const char *what, const char *msg);

}  // namespace rc_emu

#endif
