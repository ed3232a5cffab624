// What a kernel family's C-compatible header needs to declare its host
// launchers: cudaStream_t and cudaError_t, from the real runtime API or from
// the SIMT emulator's (RC_SIMT_EMU).
#ifndef RC_KERNELS_LAUNCH_API_H
#define RC_KERNELS_LAUNCH_API_H

#if defined(RC_SIMT_EMU)
#include "kernels/emu/emu_runtime.h"
#else
#include <cuda_runtime_api.h>
#endif

#endif
