// NCCL for the host code: the real <nccl.h>, or the SIMT emulator's
// implementation of the same calls (RC_SIMT_EMU), whose ranks are the threads
// of the simulated job (comm_sim).
#ifndef RC_KERNELS_NCCL_API_H
#define RC_KERNELS_NCCL_API_H

#include "kernels/launch_api.h"

#if defined(RC_SIMT_EMU)
#include "kernels/emu/emu_nccl.h"
#else
#include <nccl.h>
#endif

#endif
