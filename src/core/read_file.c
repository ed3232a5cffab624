#include "core/read_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int read_file_bounded(const char *path, size_t max_bytes, const char *what, char **text, size_t *n_bytes,
                      rc_err *err) {
    *text = NULL;
    *n_bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return rc_fail(err, "%s: cannot open the %s: %s", path, what, strerror(errno));
    size_t cap = max_bytes < 4096 ? max_bytes : 4096, n = 0;
    char *buf = malloc(cap + 1);
    int rc = buf ? 0 : rc_fail(err, "%s: out of memory reading the %s", path, what);
    while (rc == 0) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;  // end of file or an error (ferror below)
        if (cap == max_bytes) {
            // Full at the bound: one more byte means the file is too large.
            if (fgetc(f) != EOF)
                rc = rc_fail(err, "%s: the %s is larger than the %zu-byte limit", path, what, max_bytes);
            break;
        }
        const size_t grown_cap = cap > max_bytes / 2 ? max_bytes : cap * 2;
        char *grown = realloc(buf, grown_cap + 1);
        if (!grown) {
            rc = rc_fail(err, "%s: out of memory reading the %s (%zu bytes)", path, what, grown_cap);
            break;
        }
        buf = grown;
        cap = grown_cap;
    }
    if (rc == 0 && ferror(f)) rc = rc_fail(err, "%s: cannot read the %s: %s", path, what, strerror(errno));
    fclose(f);
    if (rc) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *text = buf;
    *n_bytes = n;
    return 0;
}
