// recall: long-context LLM decoding. Subcommands dispatch to cmd_*().
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   decode text from a prompt with a GGUF model\n"
            "  info       print a model file's architecture, shapes and tensor types\n"
            "  bench      measure prefill and decode speed and memory bandwidth\n"
            "  eval       RULER-style accuracy, long-text perplexity and your own data, per attention method\n"
            "  plan       predict latency, bytes, FLOPs, collectives and memory per rank (cost model)\n"
            "  profile-heads\n"
            "             measure per-head retrieval importance (HeadKV probes) and write it as JSON\n"
            "\n"
            "Run 'recall <command> --help' for the options of each command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("recall 0.1.0\n");
        return 0;
    }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "plan")) return cmd_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "profile-heads")) return cmd_profile_heads(argc - 1, argv + 1);
    cli_die("unknown command '%s' (try 'recall --help')", cmd);
}
