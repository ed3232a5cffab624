// The CUDA backend's device data path (comm/comm.h): NCCL.
#ifndef RECALL_BACKEND_CUDA_COMM_H
#define RECALL_BACKEND_CUDA_COMM_H

#include "backend/backend.h"
#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

// backend_ops.comm_dev_create: rank 0 makes the NCCL unique id, the control
// communicator carries it to every rank, each joins with ncclCommInitRank on
// the backend's device. Collective over ctl's ranks.
comm_dev *cuda_comm_dev_create(const backend *b, comm *ctl, rc_err *err);

// backend_ops.device_info.
int cuda_device_info(const backend *b, backend_device_info *info, rc_err *err);

// allgatherv as one padded ncclAllGather plus a compaction, instead of grouped
// broadcasts, from this many bytes in all when padding every rank's part to
// the largest adds at most 1/CUDA_COMM_PADDED_SLACK to the payload (the prefill
// K/V exchange: parts differ by at most a chunk row). 8 MiB is where UCC found
// the crossover on its hardware (openucx/ucc#347); unmeasured here, no GPU
// has run this yet. RECALL_NCCL_PADDED_MIN_BYTES overrides it (rank 0's value
// holds for every rank; tests set 0 to force the padded form).
#define CUDA_COMM_PADDED_MIN_BYTES ((size_t)8 << 20)
#define CUDA_COMM_PADDED_SLACK 8
#define CUDA_COMM_PADDED_ENV "RECALL_NCCL_PADDED_MIN_BYTES"

#ifdef __cplusplus
}
#endif

#endif
