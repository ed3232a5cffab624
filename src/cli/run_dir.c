#include "cli/run_dir.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"

void run_dir_create(const char *slug, char *buf, size_t cap) {
    if (mkdir(RUN_DIR_ROOT, 0777) != 0 && errno != EEXIST)
        cli_die("%s: cannot create directory: %s (name one with --out)", RUN_DIR_ROOT, strerror(errno));
    char stamp[32];
    const time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    // mkdir is atomic: of two runs that start in the same second, one gets "-2".
    for (int n = 1; n < 1000; n++) {
        if (n == 1) snprintf(buf, cap, "%s/%s-%s", RUN_DIR_ROOT, slug, stamp);
        else snprintf(buf, cap, "%s/%s-%s-%d", RUN_DIR_ROOT, slug, stamp, n);
        if (mkdir(buf, 0777) == 0) return;
        if (errno != EEXIST) cli_die("%s: cannot create directory: %s (name one with --out)", buf, strerror(errno));
    }
    cli_die("%s/%s-%s: a thousand runs in one second (name the output with --out)", RUN_DIR_ROOT, slug, stamp);
}
