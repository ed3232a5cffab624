#include "cli/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/array.h"
#include "core/read_file.h"

// The commands that read a config file: a [section] naming one of them is
// skipped by the others; any other section name is a typo.
static const char *const k_commands[] = {"generate", "bench", "eval ruler", "eval ppl", "eval custom", "profile-heads", "plan"};

static char *trim(char *s, char *end) {  // trims [s, end) in place, returns s
    while (s < end && isspace((unsigned char)*s)) s++;
    while (end > s && isspace((unsigned char)end[-1])) end--;
    *end = '\0';
    return s;
}

static const struct option *find_key(const struct option *opts, const char *key) {
    for (; opts->name; opts++)
        if (!strcmp(opts->name, key)) return opts;
    return NULL;
}

static char *arg_for(const struct option *o, const char *value) {
    const char *home = getenv("HOME");
    int tilde = value[0] == '~' && value[1] == '/' && home && *home;
    size_t n = strlen(o->name) + strlen(value) + (tilde ? strlen(home) : 0) + 4;
    char *a = malloc(n);
    if (!a) return NULL;
    if (o->has_arg == no_argument)
        snprintf(a, n, "--%s", o->name);
    else
        snprintf(a, n, "--%s=%s%s", o->name, tilde ? home : "", tilde ? value + 1 : value);
    return a;
}

int cli_config_args(const char *text, const char *name, const char *command, const struct option *opts,
                    char ***args, int *n_args, rc_err *err) {
    char *buf = strdup(text);
    int n = 0, cap = 8, active = 1, rc = 0;
    char **out = malloc((size_t)(cap + 1) * sizeof(char *));
    if (!buf || !out) {
        free(buf);
        free(out);
        *args = NULL;
        *n_args = 0;
        return rc_fail(err, "%s: out of memory", name);
    }
    char *line = buf;
    for (int lineno = 1; line; lineno++) {
        char *nl = strchr(line, '\n');
        char *next = nl ? nl + 1 : NULL;
        char *s = trim(line, nl ? nl : line + strlen(line));
        line = next;
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            size_t len = strlen(s);
            if (s[len - 1] != ']') {
                rc = rc_fail(err, "%s:%d: a section line must be '[command]'", name, lineno);
                break;
            }
            char *sec = trim(s + 1, s + len - 1);
            int known = 0;
            for (size_t i = 0; i < ARRAY_LEN(k_commands); i++) known |= !strcmp(sec, k_commands[i]);
            if (!known) {
                rc = rc_fail(err, "%s:%d: unknown section '[%s]' (sections are [generate], [bench], [eval ruler], [eval ppl], [eval custom], [profile-heads] and [plan])", name, lineno,
                             sec);
                break;
            }
            active = !strcmp(sec, command);
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = rc_fail(err, "%s:%d: expected 'key = value', '[command]' or a comment", name, lineno);
            break;
        }
        char *key = trim(s, eq), *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {  // "  padded prompt  "
            value[vlen - 1] = '\0';
            value++;
        }
        if (!*key) {
            rc = rc_fail(err, "%s:%d: expected 'key = value', '[command]' or a comment", name, lineno);
            break;
        }
        if (!active) continue;  // another command's keys: its own table checks them
        const struct option *o = find_key(opts, key);
        if (!o || !strcmp(key, "help") || !strcmp(key, "config")) {
            rc = rc_fail(err, "%s:%d: unknown key '%s' (keys are the long flags of 'recall %s', see --help)", name,
                         lineno, key, command);
            break;
        }
        if (o->has_arg == no_argument) {
            if (strcmp(value, "true") && strcmp(value, "false")) {
                rc = rc_fail(err, "%s:%d: '%s' takes true or false, not '%s'", name, lineno, key, value);
                break;
            }
            if (!strcmp(value, "false")) continue;
        } else if (!*value) {
            rc = rc_fail(err, "%s:%d: '%s' needs a value", name, lineno, key);
            break;
        }
        if (n == cap) {
            char **grown = realloc(out, (size_t)(2 * cap + 1) * sizeof(char *));
            if (!grown) {
                rc = rc_fail(err, "%s: out of memory", name);
                break;
            }
            out = grown;
            cap *= 2;
        }
        if (!(out[n] = arg_for(o, value))) {
            rc = rc_fail(err, "%s: out of memory", name);
            break;
        }
        n++;
    }
    free(buf);
    out[n] = NULL;
    if (rc) {
        cli_config_free(out);
        out = NULL;
        n = 0;
    }
    *args = out;
    *n_args = n;
    return rc;
}

int cli_config_args_file(const char *path, const char *command, const struct option *opts, char ***args,
                         int *n_args, rc_err *err) {
    *args = NULL;
    *n_args = 0;
    char *text = NULL;
    size_t n = 0;
    if (read_file_bounded(path, CLI_MAX_CONFIG_BYTES, "config file", &text, &n, err)) return -1;
    int rc = strlen(text) != n ? rc_fail(err, "%s: the config file contains a NUL byte", path)
                             : cli_config_args(text, path, command, opts, args, n_args, err);
    free(text);
    return rc;
}

void cli_config_free(char **args) {
    if (!args) return;
    for (char **a = args; *a; a++) free(*a);
    free(args);
}

// Kept until exit: the merged argv and the file's strings it points to.
static char **g_config_args, **g_merged_argv;

static void free_merged_args(void) {
    cli_config_free(g_config_args);
    free(g_merged_argv);
    g_config_args = g_merged_argv = NULL;
}

void cli_config_merge(const char *command, const char *optstring, const struct option *opts, int *argc,
                      char ***argv) {
    const char *path = NULL;
    opterr = 0;
    optind = 0;  // GNU getopt: a full re-initialization
    int c, idx = -1;
    while ((c = getopt_long(*argc, *argv, optstring, opts, &idx)) != -1) {
        if (c != '?' && c != ':' && idx >= 0 && !strcmp(opts[idx].name, "config")) path = optarg;
        idx = -1;
    }
    optind = 0;
    if (!path) return;
    rc_err err = {{0}};
    int n = 0;
    free_merged_args();  // a second merge in one process replaces the first
    if (cli_config_args_file(path, command, opts, &g_config_args, &n, &err)) cli_die_err(&err);
    static int registered;
    if (!registered) registered = atexit(free_merged_args) == 0;
    g_merged_argv = malloc((size_t)(*argc + n + 1) * sizeof(char *));
    if (!g_merged_argv) cli_die("out of memory");
    g_merged_argv[0] = (*argv)[0];
    memcpy(g_merged_argv + 1, g_config_args, (size_t)n * sizeof(char *));
    memcpy(g_merged_argv + 1 + n, *argv + 1, (size_t)(*argc - 1) * sizeof(char *));
    g_merged_argv[*argc + n] = NULL;
    *argc += n;
    *argv = g_merged_argv;
}
