// cuBLAS for the host code: the real <cublas_v2.h>, or the SIMT emulator's
// reference implementation of the same API (RC_SIMT_EMU).
#ifndef RC_KERNELS_BLAS_H
#define RC_KERNELS_BLAS_H

#include "kernels/launch_api.h"

#if defined(RC_SIMT_EMU)
#include "kernels/emu/emu_cublas.h"
#else
#include <cublas_v2.h>
#endif

#endif
