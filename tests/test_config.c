// --config FILE (src/cli/config.c): config text -> the "--key=value" / "--key"
// arguments it stands for, checked against a getopt_long table; and the merge
// that puts them ahead of the command line so that the command line wins.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cli/cli.h"
#include "cli/config.h"

static const struct option k_opts[] = {
    {"model", required_argument, 0, 'm'}, {"n-predict", required_argument, 0, 'n'},
    {"kv-type", required_argument, 0, 1}, {"prompt", required_argument, 0, 'p'},
    {"chat", no_argument, 0, 2},          {"stats", no_argument, 0, 3},
    {"config", required_argument, 0, 4},  {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

// Parses text as "t.ini" for `generate`; returns the args joined by '|' (or
// "ERR:" and the message) in a static buffer.
static const char *run(const char *text) {
    static char out[2048];
    char **args = NULL;
    int n = -1;
    rc_err err = {{0}};
    if (cli_config_args(text, "t.ini", "generate", k_opts, &args, &n, &err)) {
        CHECK(args == NULL && n == 0);
        snprintf(out, sizeof(out), "ERR:%s", err.msg);
        return out;
    }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strcat(out, "|");
        strcat(out, args[i]);
    }
    CHECK(args[n] == NULL);
    cli_config_free(args);
    return out;
}

#define EXPECT(text, want)                                                       \
    do {                                                                         \
        const char *got_ = run(text);                                            \
        CHECK_MSG(!strcmp(got_, want), "got [%s], want [%s]", got_, want);       \
    } while (0)

int main(void) {
    // Keys, spacing, comments, blank lines, CRLF, booleans, file order, quotes.
    EXPECT("", "");
    EXPECT("model = a.gguf\n", "--model=a.gguf");
    EXPECT("# c\n; c\n\n  model=a b.gguf  \r\nn-predict\t=\t7", "--model=a b.gguf|--n-predict=7");
    EXPECT("chat = true\nstats = false\nkv-type = f32\n", "--chat|--kv-type=f32");
    EXPECT("prompt = \"  two = signs # kept  \"\n", "--prompt=  two = signs # kept  ");
    EXPECT("n-predict = 2\nn-predict = 3\n", "--n-predict=2|--n-predict=3");  // getopt: the last wins
    // Sections: top-level keys apply to every command, [bench] is skipped by generate.
    EXPECT("model = a\n[bench]\nreps = 5\nbogus = 1\n[generate]\nn-predict = 4\n[ bench ]\ndepths = 0\n",
           "--model=a|--n-predict=4");
    // "~/" at the start of a value is $HOME.
    setenv("HOME", "/home/u", 1);
    EXPECT("model = ~/m.gguf\nprompt = a~/b\n", "--model=/home/u/m.gguf|--prompt=a~/b");

    // Errors name the file and the line.
    EXPECT("model = a\n\nfoo = 1\n",
           "ERR:t.ini:3: unknown key 'foo' (keys are the long flags of 'recall generate', see --help)");
    EXPECT("m = a\n", "ERR:t.ini:1: unknown key 'm' (keys are the long flags of 'recall generate', see --help)");
    EXPECT("--model = a\n",
           "ERR:t.ini:1: unknown key '--model' (keys are the long flags of 'recall generate', see --help)");
    EXPECT("# x\nconfig = other.ini\n",
           "ERR:t.ini:2: unknown key 'config' (keys are the long flags of 'recall generate', see --help)");
    EXPECT("help = true\n", "ERR:t.ini:1: unknown key 'help' (keys are the long flags of 'recall generate', see --help)");
    EXPECT("chat = yes\n", "ERR:t.ini:1: 'chat' takes true or false, not 'yes'");
    EXPECT("chat =\n", "ERR:t.ini:1: 'chat' takes true or false, not ''");
    EXPECT("\nmodel =\n", "ERR:t.ini:2: 'model' needs a value");
    EXPECT("model a.gguf\n", "ERR:t.ini:1: expected 'key = value', '[command]' or a comment");
    EXPECT(" = a\n", "ERR:t.ini:1: expected 'key = value', '[command]' or a comment");
    EXPECT("[generate\n", "ERR:t.ini:1: a section line must be '[command]'");
    EXPECT("[gen]\n", "ERR:t.ini:1: unknown section '[gen]' (sections are [generate], [bench], [eval ruler], [eval ppl], [eval custom], [profile-heads] and [plan])");
    EXPECT("[bench]\nx\n", "ERR:t.ini:2: expected 'key = value', '[command]' or a comment");  // syntax is checked everywhere

    // Files: an unreadable one is an error naming it.
    char **args = NULL;
    int n = 0;
    rc_err err = {{0}};
    CHECK(cli_config_args_file("/nonexistent/x.ini", "generate", k_opts, &args, &n, &err) == -1);
    CHECK(strstr(err.msg, "/nonexistent/x.ini: cannot open the config file") == err.msg);

    // Merge: argv[0], the file's args, then the command line, and getopt sees the command line last.
    char path[] = "/tmp/recall_test_config_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char text[] = "model = a.gguf\nn-predict = 2\nchat = true\n";
    CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
    close(fd);
    char *argv_in[] = {"generate", "-p", "hi", "--config", path, "-n", "5", NULL};
    int argc = 7;
    char **argv = argv_in;
    cli_config_merge("generate", ":m:p:n:h", k_opts, &argc, &argv);
    CHECK(argc == 10);
    const char *want[] = {"generate", "--model=a.gguf", "--n-predict=2", "--chat", "-p", "hi", "--config", path, "-n", "5"};
    for (int i = 0; i < 10 && i < argc; i++) CHECK_MSG(!strcmp(argv[i], want[i]), "argv[%d] = %s", i, argv[i]);
    CHECK(argv[argc] == NULL);
    const char *model = NULL, *n_predict = NULL;
    int chat = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:h", k_opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        if (c == 'n') n_predict = optarg;
        if (c == 2) chat = 1;
    }
    CHECK(model && !strcmp(model, "a.gguf"));
    CHECK(n_predict && !strcmp(n_predict, "5"));
    CHECK(chat == 1);
    unlink(path);

    // Without --config, argv is left alone.
    char *plain[] = {"generate", "-m", "x", NULL};
    argc = 3;
    argv = plain;
    cli_config_merge("generate", ":m:p:n:h", k_opts, &argc, &argv);
    CHECK(argc == 3 && argv == plain);
    // The command line written into results: what a shell would run again.
    char *cmd_argv[] = {"bench", "-m", "/x/m.gguf", "--csv", "/tmp/a b.csv", "--text", "it's", ""};
    char line[256];
    cli_command_line("recall bench", 8, cmd_argv, line, sizeof(line));
    CHECK_MSG(strcmp(line, "recall bench -m /x/m.gguf --csv '/tmp/a b.csv' --text 'it'\\''s' ''") == 0, "%s", line);
    char small[16];
    cli_command_line("recall bench", 8, cmd_argv, small, sizeof(small));
    CHECK_MSG(strlen(small) == sizeof(small) - 1 && strncmp(small, "recall bench -m", 15) == 0, "%s", small);
    TEST_MAIN_END();
}
