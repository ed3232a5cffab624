// The essay haystack's text: the prose file launch/setup.sh extracts.
#include "eval/ruler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval/text.h"

int ruler_load_prose(const char *path, char **text, size_t *len, rc_err *err) {
    *text = NULL;
    *len = 0;
    const char *hint = "(launch/setup.sh extracts it from Debian's r-cran-janeaustenr)";
    if (!path) return rc_fail(err, "ruler: no prose haystack path %s", hint);
    FILE *f = fopen(path, "rb");
    if (!f) return rc_fail(err, "ruler: cannot open the prose haystack %s: %s %s", path, strerror(errno), hint);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return rc_fail(err, "ruler: the prose haystack %s is not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return rc_fail(err, "ruler: out of memory for the prose haystack %s", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return rc_fail(err, "ruler: reading the prose haystack %s: short read", path);
    }
    buf[n] = '\0';
    size_t words = 0;
    for (size_t i = 0; i < n && !words; i++) words += !text_is_space(buf[i]);
    if (!words) {
        free(buf);
        return rc_fail(err, "ruler: the prose haystack %s is empty %s", path, hint);
    }
    *text = buf;
    *len = n;
    return 0;
}
