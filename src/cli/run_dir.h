// Where a run writes when the user names no output: a directory of its own,
// so that no run overwrites or resumes another's files by accident (the
// repository's committed results/ included).
#ifndef RECALL_CLI_RUN_DIR_H
#define RECALL_CLI_RUN_DIR_H

#include <stddef.h>

#define RUN_DIR_ROOT "runs"

// Creates RUN_DIR_ROOT/<slug>-YYYYMMDD-HHMMSS (local time) in the current
// directory, with -2, -3, ... appended when a run started in the same second
// already holds that name, and writes its path to buf. Dies with one line
// when it cannot be created. slug names the command, e.g. "eval-ruler".
void run_dir_create(const char *slug, char *buf, size_t cap);

#endif
