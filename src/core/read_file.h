// Reading a whole input file (config, prompt, text) into memory, bounded:
// a device or pipe that never ends (/dev/zero) or a huge file is refused with
// one line instead of growing the buffer until an allocation fails.
#ifndef RECALL_CORE_READ_FILE_H
#define RECALL_CORE_READ_FILE_H

#include <stddef.h>

#include "core/status.h"

// Reads path into *text (malloc'd, NUL-terminated; caller frees) and its
// length into *n_bytes. Fails, naming the file and `what` ("config file"),
// when it cannot be opened or read, holds more than max_bytes, or an
// allocation fails. *text is NULL on failure.
int read_file_bounded(const char *path, size_t max_bytes, const char *what, char **text, size_t *n_bytes,
                      rc_err *err);

#endif
