// Config files (cli/config.h) through the bounded reader: any bytes either
// fail with a message or become "--name" / "--name=value" arguments, one per
// known long flag, in a NULL-terminated list.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/config.h"
#include "fuzz_common.h"

static const struct option k_opts[] = {
    {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
    {"n-predict", required_argument, 0, 'n'}, {"chat", no_argument, 0, 1},
    {"attention", required_argument, 0, 2}, {"config", required_argument, 0, 3},
    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rc_err err;
    char **args = NULL;
    int n = 0;
    static const char *const commands[] = {"generate", "bench", "eval ruler"};
    const char *command = commands[size % 3];
    if (cli_config_args_file(fuzz_scratch_file(data, size), command, k_opts, &args, &n, &err) == 0) {
        if (!args || n < 0 || args[n] != NULL) fuzz_fail("argument list");
        for (int i = 0; i < n; i++) {
            if (strncmp(args[i], "--", 2) != 0) fuzz_fail("argument '%s' is not a long flag", args[i]);
            const size_t name_len = strcspn(args[i] + 2, "=");
            int known = 0;
            for (const struct option *o = k_opts; o->name; o++)
                known |= strlen(o->name) == name_len && !strncmp(o->name, args[i] + 2, name_len) &&
                         strcmp(o->name, "help") && strcmp(o->name, "config");
            if (!known) fuzz_fail("argument '%s' is not an allowed flag", args[i]);
        }
    } else if (args || n != 0) {
        fuzz_fail("a failed parse returned arguments");
    }
    cli_config_free(args);
    return 0;
}
