// A model file's identity by content, not by path: what shipped per-model
// data (configs/heads/index.json) is keyed by. Reading a multi-GB file whole
// would take seconds, so the fingerprint covers what tells models apart
// cheaply:
//   FNV-1a 64 over the file size (8 bytes, little-endian), then the GGUF
//   header, metadata and tensor-info block (bytes [0, data_offset)), then the
//   first and the last MODEL_FP_DATA_BYTES of the tensor data (the whole data
//   section when it is shorter than twice that).
// The metadata holds the architecture, shapes, vocabulary and tensor types;
// the data ends tell apart two files with identical metadata (a fine-tune, a
// re-quantization with the same types).
#ifndef RECALL_MODEL_FINGERPRINT_H
#define RECALL_MODEL_FINGERPRINT_H

#include <stdint.h>

#include "model/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_FP_DATA_BYTES ((uint64_t)1 << 20)  // 1 MiB from each end of the tensor data

uint64_t model_fingerprint(const gguf_file *f);
// The same as 16 lowercase hex digits and a NUL (buf: at least 17 bytes).
void model_fingerprint_hex(const gguf_file *f, char *buf);

#ifdef __cplusplus
}
#endif

#endif
