// Error reporting for library code: functions return 0 on success or -1 and
// fill an rc_err with one human-readable line. Only the CLI and tests exit.
#ifndef RECALL_CORE_STATUS_H
#define RECALL_CORE_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rc_err {
    char msg[1024];
} rc_err;

// Formats the message into err (if non-NULL) and returns -1, so callers can
// write `return rc_fail(err, "...", ...);`.
int rc_fail(rc_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prefixes an existing message ("context: old message"); returns -1.
int rc_wrap(rc_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
