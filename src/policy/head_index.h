// The index of shipped head-importance scores (configs/heads/index.json):
// which scores file belongs to which model file, keyed by the model file's
// content fingerprint (model/fingerprint.h), so a copy or a renamed file
// still finds its scores and another model never does:
//
//   {"format": "recall-head-index-1",
//    "models": [{"fingerprint": "0123456789abcdef", "scores": "smollm2-135m-instruct.json",
//                "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}, ...]}
//
// "scores" is relative to the index's directory; "file" (and any other
// member) is informational.
#ifndef RECALL_POLICY_HEAD_INDEX_H
#define RECALL_POLICY_HEAD_INDEX_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HEAD_INDEX_FORMAT "recall-head-index-1"
#define HEAD_INDEX_FILE "index.json"

// Looks fingerprint (16 hex digits) up in DIR/index.json. Returns 1 and the
// scores file's path (DIR/<scores>) in path_out; 0 when there is no index
// file or no entry for the fingerprint; -1 with err (naming the index) when
// the index is malformed or the path does not fit in cap.
int head_index_find(const char *dir, const char *fingerprint, char *path_out, size_t cap, rc_err *err);

#ifdef __cplusplus
}
#endif

#endif
