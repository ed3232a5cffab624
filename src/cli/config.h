// `recall <command> --config FILE`: a file whose keys are the command's long
// flags, turned into the arguments they stand for so that the command's own
// getopt loop parses them ahead of the real command line (which then wins).
//
//   # comment            ; comment too (only on lines of their own)
//   model = ~/.cache/recall/model.gguf    a leading "~/" becomes $HOME/
//   chat = true                           flags without a value: true | false
//   [generate]                            keys below apply only to that command;
//   n-predict = 64                        keys before any section apply to all
#ifndef RECALL_CLI_CONFIG_H
#define RECALL_CLI_CONFIG_H

#include <getopt.h>

#include "core/status.h"

// Config text (named `name` in messages) -> "--key=value" / "--key" strings in
// file order, checked against opts for `command` ("generate", "bench"). Returns
// 0 with a NULL-terminated malloc'd array in *args (free with
// cli_config_free) and its length in *n_args, or -1 with "NAME:LINE: ..." in err.
int cli_config_args(const char *text, const char *name, const char *command, const struct option *opts,
                    char ***args, int *n_args, rc_err *err);
// The same for a file; an unreadable file is an error.
int cli_config_args_file(const char *path, const char *command, const struct option *opts, char ***args,
                         int *n_args, rc_err *err);
void cli_config_free(char **args);

// When argv has --config FILE (found with getopt_long over optstring + opts,
// which must list "config"), replaces *argc/*argv by argv[0], the file's
// arguments, then the rest of argv, and resets getopt. Dies on any error. The
// new argv lives until exit (optarg points into it).
void cli_config_merge(const char *command, const char *optstring, const struct option *opts, int *argc,
                      char ***argv);

#endif
