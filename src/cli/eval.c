// recall eval: accuracy and perplexity of the attention methods side by side
// (design.md section 5). The subcommands live in eval_ruler.c, eval_ppl.c and
// eval_custom.c.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/eval_common.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall eval ruler -m MODEL [options]   RULER-style retrieval accuracy per method\n"
            "       recall eval ppl -m MODEL --text FILE [options]\n"
            "                                              perplexity of a text's last tokens per method\n"
            "       recall eval custom -m MODEL --data FILE.jsonl [options]\n"
            "                                              your own prompts and answers, scored per method\n"
            "\n"
            "All compare --attention methods (full, recycled, streaming, h2o, snapkv, pyramidkv, adakv,\n"
            "headkv) from one prefill per sample, at one or more context lengths and KV budgets, on one\n"
            "process or under mpirun. Run 'recall eval ruler --help' (or ppl, custom) for their\n"
            "options.\n");
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2) cli_die("eval: expected a subcommand, ruler, ppl or custom (see 'recall eval --help')");
    const char *sub = argv[1];
    if (!strcmp(sub, "ruler")) return eval_ruler_main(argc - 1, argv + 1);
    if (!strcmp(sub, "ppl")) return eval_ppl_main(argc - 1, argv + 1);
    if (!strcmp(sub, "custom")) return eval_custom_main(argc - 1, argv + 1);
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    cli_die("eval: unknown subcommand '%s' (expected ruler, ppl or custom; see 'recall eval --help')", sub);
}
