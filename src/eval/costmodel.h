// The cost model of `recall plan`: for a model shape, a context length, a
// rank count, a device profile and a method, the bytes read, FLOPs,
// collective calls and bytes, memory per rank, and the latency of a full
// decode step, of a recycled step and of a prefill token. Model-free math,
// mirroring what the engine does (engine.c, recycle.c); measured devices are
// probed by the caller.
#ifndef RECALL_EVAL_COSTMODEL_H
#define RECALL_EVAL_COSTMODEL_H

#include <stdint.h>

#include "core/status.h"

typedef struct cm_shape {
    char name[64];
    int64_t n_layer, d_model, n_head, n_head_kv, head_dim, d_ff, n_vocab;
    int tied_output;
    double weight_bytes_per_param;  // Q4_1 20/32, Q8_0 34/32, F16 2
    int64_t weight_bytes;           // > 0: read per decode token, from the GGUF (overrides the shape's count)
    double kv_elem_bytes;           // K/V bytes per element: 2 (f16), 4 (f32), 34/32 (q8_0), 18/32 (q4_0)
} cm_shape;

// A device: what one rank runs on. ranks_per_device > 1 means ranks share it
// (a CPU node: its bandwidth and FLOP/s are divided among the ranks on it).
typedef struct cm_device {
    char name[64];
    double mem_bw;          // bytes/s the decode path reads weights at
    double kv_bw;           // bytes/s decode attention reads K/V at (0: mem_bw)
    double flops;           // FLOP/s roof of decode (0: none, the measured kernels are bandwidth figures)
    double prefill_flops;   // FLOP/s of the prefill GEMMs
    // Shared devices: what one rank achieves on its own threads (0: no limit
    // but the device's share); a CPU rank with 1 of 2 cores gets at most half.
    double rank_mem_bw, rank_kv_bw;
    double link_latency;    // seconds per collective call
    double link_bw;         // bytes/s per rank of a collective
    int shared;             // 1: all ranks on one device (this CPU machine); 0: one device per rank
    double mem_capacity;    // bytes of memory per device (0: unknown)
    const char *source;     // where the figures come from
    // The recycled rebuild (0: not modelled; the GPU profiles have no kernel
    // to measure yet), on the whole device and on one rank's threads:
    // candidates per second its selection ranks (GQA reduce of the scores,
    // max-pooling, top-K of each KV head's positions), and selected rows per
    // second it gathers into the recycled cache (find the slot, copy K and V).
    double select_rate, rank_select_rate;
    double gather_rate, rank_gather_rate;
} cm_device;

enum cm_method { CM_FULL = 0, CM_RECYCLED = 1 };

typedef struct cm_method_opts {
    int method;             // enum cm_method
    int64_t k;              // recycled: rows per layer and KV head
    int64_t stride;         // recycled: a full step every `stride` steps
} cm_method_opts;

// Per rank (the largest shard) unless said otherwise.
typedef struct cm_step {
    double weight_bytes, kv_bytes;    // read per step
    double flops;                     // weights (2 per param) + attention (4 per head-dim per key)
    int64_t calls;                    // collective calls
    double comm_bytes;                // bytes received from the other ranks
    double select_candidates;         // recycled full step: positions x KV heads x layers the rebuild ranks
    double gather_rows;               // recycled full step: selected rows (K per layer and KV head) it gathers
    double seconds;
} cm_step;

typedef struct cm_result {
    int64_t n_ctx, n_ranks, local_positions;  // the largest shard
    cm_step full, recycled;           // recycled: an all-recycled step (zero when method is full)
    double mean_step_seconds;         // over one stride (full: = full.seconds)
    double prefill_token_seconds;     // whole prompt / n_ctx, prefill FLOPs at prefill_flops
    double weight_mem, kv_mem, recycled_mem, total_mem;  // bytes per rank
    int fits;                         // 1: the ranks on a device fit its memory (or it is unknown)
} cm_result;

int64_t cm_params_per_token(const cm_shape *s);  // weights a decode token multiplies (no embedding)
int cm_predict(const cm_shape *s, const cm_device *d, const cm_method_opts *m, int64_t n_ctx, int64_t n_ranks,
               cm_result *out, rc_err *err);

// Named shapes (llama-3.1-8b, llama-3.1-70b, qwen2-7b, smollm2-135m); -1 when unknown.
int cm_shape_by_name(const char *name, cm_shape *out);
// Named GPU profiles (h100, h200); -1 when unknown.
int cm_device_by_name(const char *name, cm_device *out);

#endif
