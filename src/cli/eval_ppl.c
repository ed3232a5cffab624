// recall eval ppl: perplexity of a text's last tokens under each attention
// method, teacher-forced after a long context.
//
// For each context length C: the first C tokens of the text; the first
// C - E are prefilled once with full attention (the prompt cache is retained);
// then each method truncates back to them, switches, and is fed the last E
// tokens one by one. Token P (P = C - E) is predicted by the prefill's logits,
// the same for every method; token t + 1 by the logits after token t. NLL is
// a log-softmax in double: lse(logits) - logit[target], lse = max + ln sum
// exp(x - max); ppl = exp(mean NLL).
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/config.h"
#include "cli/eval_common.h"
#include "core/hash.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_CTX 4096
#define DEFAULT_EVAL_TOKENS 256
#define DEFAULT_OUT "ppl"  // file stem in the run's own directory (eval_claim_out)

static void usage(FILE *out) {
    fprintf(out,
            "usage: recall eval ppl -m MODEL --text FILE [options]\n"
            "\n"
            "Perplexity of the last --eval-tokens tokens of each context under each --attention method.\n"
            "The text is tokenized (with BOS when the model adds one) and its first --ctx tokens taken;\n"
            "all but the last --eval-tokens are prefilled once with full attention, then every method\n"
            "decodes the rest teacher-forced from that prefill (KV-compression policies compress the\n"
            "prefilled context at the first step). NLL per token is a log-softmax in double.\n"
            "\n"
            "      --text FILE         the text to score (required, at most 256 MiB); it must have at least\n"
            "                          --ctx tokens\n"
            "      --eval-tokens N     tokens scored at the end of each context (default %d; below --ctx)\n",
            DEFAULT_EVAL_TOKENS);
    eval_common_usage(out, "4096", "eval-ppl", DEFAULT_OUT);
    fprintf(out,
            "  -h, --help              this help\n"
            "\n"
            "Output (rank 0): per context length and method, ppl = exp(mean NLL), the mean NLL, its\n"
            "difference from full attention's and the ratio of perplexities, the KV cache held at the\n"
            "end (largest rank) and the decode time, on stdout; PREFIX.csv (ctx, method, budget,\n"
            "eval_tokens, mean_nll, ppl, delta_nll, ppl_ratio, kv_mib, decode_seconds) and PREFIX.json\n"
            "(the same with every token's NLL).\n");
}

static double token_nll(const float *logits, int64_t n_vocab, int32_t target) {
    double mx = -INFINITY, sum = 0.0;
    for (int64_t v = 0; v < n_vocab; v++) mx = fmax(mx, (double)logits[v]);
    for (int64_t v = 0; v < n_vocab; v++) sum += exp((double)logits[v] - mx);
    return mx + log(sum) - (double)logits[target];
}

typedef struct ppl_result {
    double mean_nll, ppl, kv_bytes, seconds;
    double *nll;  // (eval_tokens)
} ppl_result;

int eval_ppl_main(int argc, char **argv) {
    eval_common_opts o;
    eval_common_init(&o);
    const char *text_path = NULL;
    int64_t eval_tokens = DEFAULT_EVAL_TOKENS;
    rc_err err = {{0}};
    comm *cm = cli_comm_init();  // first, so that any error below ends every rank
    const int rank0 = cm->rank == 0;
    enum { OPT_TEXT = EVAL_OPT_FIRST_COMMAND, OPT_EVAL_TOKENS };
    static const struct option opts[] = {
        EVAL_COMMON_OPTIONS,
        {"text", required_argument, 0, OPT_TEXT}, {"eval-tokens", required_argument, 0, OPT_EVAL_TOKENS},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    static const char optstring[] = ":m:h";
    cli_config_merge("eval ppl", optstring, opts, &argc, &argv);  // the file's flags go first, so argv wins
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, optstring, opts, NULL)) != -1) {
        switch (c) {
        case OPT_TEXT: text_path = optarg; break;
        case OPT_EVAL_TOKENS: eval_tokens = cli_parse_int("--eval-tokens", optarg, 1, (int64_t)1 << 24); break;
        case 'h':
            if (rank0) usage(stdout);
            comm_destroy(cm);
            return 0;
        case ':': cli_die("option '%s' needs a value (see 'recall eval ppl --help')", argv[optind - 1]);
        default:
            if (eval_common_option(c, optarg, &o)) break;
            cli_die("unknown option '%s' (see 'recall eval ppl --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_die("unexpected argument '%s' (see 'recall eval ppl --help')", argv[optind]);
    eval_common_finish(&o, "recall eval ppl", DEFAULT_CTX, DEFAULT_OUT);
    if (!text_path) cli_die("missing --text FILE, the text to score (see 'recall eval ppl --help')");
    for (int ci = 0; ci < o.n_ctx; ci++)
        if (eval_tokens >= o.ctx[ci])
            cli_die("--eval-tokens %lld must be smaller than --ctx %lld (the rest is the prefilled context)",
                    (long long)eval_tokens, (long long)o.ctx[ci]);
    method_spec methods[METHOD_LIST_MAX];
    const int n_methods = method_list_parse(o.methods_arg, &o.base, o.recycle_k_given, 0, methods, METHOD_LIST_MAX);
    char command[4096];
    cli_command_line("recall eval ppl", argc, argv, command, sizeof(command));

    model m;
    cli_load_model(cm, &m, o.model_path);
    eval_check_ctx(&o, &m.cfg);
    method_list_head_scores(methods, n_methods, &m);
    if (rank0) method_list_budgets_note(methods, n_methods, &m);
    const int64_t max_ctx = eval_max_ctx(&o), V = m.cfg.n_vocab;
    eval_run *runs[EVAL_MAX_CTX];
    int n_runs[EVAL_MAX_CTX];
    int64_t n_total = 0;
    for (int ci = 0; ci < o.n_ctx; ci++) {
        runs[ci] = malloc(EVAL_MAX_RUNS * sizeof(eval_run));
        n_runs[ci] = eval_runs_for_ctx(methods, n_methods, &o.budgets, o.ctx[ci], max_ctx, &m.cfg, runs[ci]);
        n_total += n_runs[ci];
    }

    // Rank 0 reads and tokenizes the text; every rank gets the first max_ctx ids.
    tokenizer *tok = NULL;
    if (tokenizer_init(&tok, &m.file, &err)) cli_die_err(&err);
    int32_t *ids = NULL;
    int64_t n_text = 0;
    if (rank0) {
        size_t n_bytes = 0, n = 0;
        char *text = cli_read_file(text_path, "text file", &n_bytes);
        if (tokenizer_encode(tok, text, n_bytes, tokenizer_add_bos(tok), 0, &ids, &n, &err)) cli_die_err(&err);
        free(text);
        n_text = (int64_t)n;
        if (n_text < max_ctx)
            cli_die("%s has %lld tokens, fewer than --ctx %lld", text_path, (long long)n_text, (long long)max_ctx);
    }
    if (comm_bcast(cm, &n_text, sizeof(n_text), 0, &err)) cli_die_err(&err);
    if (!rank0) ids = malloc((size_t)max_ctx * sizeof(int32_t));
    if (comm_bcast(cm, ids, (size_t)max_ctx * sizeof(int32_t), 0, &err)) cli_die_err(&err);

    engine *e = eval_engine_create(&o, &m, cm, max_ctx);

    FILE *csv = NULL;
    char csv_path[4096];
    cJSON *root = NULL, *results = NULL;
    if (rank0) {
        eval_claim_out(&o);
        csv = eval_open_output(o.out_prefix, ".csv", "w", csv_path, sizeof(csv_path));
        fprintf(csv, "ctx,method,budget,eval_tokens,mean_nll,ppl,delta_nll,ppl_ratio,kv_mib,decode_seconds\n");
        root = cJSON_CreateObject();
        results = cJSON_CreateArray();
        cJSON_AddStringToObject(root, "format", "recall-eval-ppl-1");
        cJSON_AddStringToObject(root, "command", command);
        cJSON_AddStringToObject(root, "model", o.model_path);
        cJSON_AddStringToObject(root, "text", text_path);
        cJSON_AddNumberToObject(root, "text_tokens", (double)n_text);
        cJSON_AddNumberToObject(root, "eval_tokens", (double)eval_tokens);
        cJSON_AddNumberToObject(root, "ranks", cm->size);
        printf("# recall eval ppl: %s, %s (%lld tokens), %d rank%s; the last %lld tokens of each context, "
               "teacher-forced\n", o.model_path, text_path, (long long)n_text, cm->size, cm->size > 1 ? "s" : "",
               (long long)eval_tokens);
    }
    eval_progress prog;
    eval_progress_init(&prog, rank0, o.progress, n_total, (double)n_total * (double)eval_tokens);
    float *prompt_logits = malloc((size_t)V * sizeof(float));
    ppl_result *res = calloc(EVAL_MAX_RUNS, sizeof(ppl_result));
    for (int ri = 0; ri < EVAL_MAX_RUNS; ri++) res[ri].nll = malloc((size_t)eval_tokens * sizeof(double));
    uint64_t all_hash = FNV1A_INIT;
    int64_t n_steps = 0;
    for (int ci = 0; ci < o.n_ctx; ci++) {
        const int64_t ctx = o.ctx[ci], n_prefix = ctx - eval_tokens;
        char status[160];
        snprintf(status, sizeof(status), "ctx %lld: prefill %lld tokens", (long long)ctx, (long long)n_prefix);
        eval_progress_status(&prog, status);
        engine_reset(e);
        if (engine_set_attention(e, ATTENTION_FULL, NULL, NULL, &err)) cli_die_err(&err);
        if (engine_prefill(e, ids, n_prefix, NULL, NULL, NULL, &err)) cli_die_err(&err);
        cli_check_logits(engine_logits(e), V, "the prefill of %lld tokens (ctx %lld)", (long long)n_prefix, (long long)ctx);
        memcpy(prompt_logits, engine_logits(e), (size_t)V * sizeof(float));
        const double nll_first = token_nll(prompt_logits, V, ids[n_prefix]);
        for (int ri = 0; ri < n_runs[ci]; ri++) {
            const eval_run *r = &runs[ci][ri];
            snprintf(status, sizeof(status), "ctx %lld: %s budget %lld", (long long)ctx, r->label, (long long)r->budget);
            eval_progress_status(&prog, status);
            const double t0 = cli_now();
            if (engine_truncate(e, n_prefix, &err) || eval_set_run(e, r, &err)) cli_die_err(&err);
            double *nll = res[ri].nll, sum = nll[0] = nll_first;
            uint64_t hash = fnv1a(FNV1A_INIT, prompt_logits, (size_t)V * sizeof(float));
            for (int64_t i = 1; i < eval_tokens; i++) {
                if (engine_decode(e, ids[n_prefix + i - 1], &err)) cli_die_err(&err);
                cli_check_logits(engine_logits(e), V, "decode step %lld (position %lld, ctx %lld, %s)", (long long)i,
                                 (long long)(n_prefix + i - 1), (long long)ctx, r->label);
                hash = fnv1a(hash, engine_logits(e), (size_t)V * sizeof(float));
                sum += nll[i] = token_nll(engine_logits(e), V, ids[n_prefix + i]);
            }
            const double secs = cli_now() - t0;
            n_steps += eval_tokens - 1;
            all_hash = fnv1a(all_hash, &hash, sizeof(hash));
            char what[200];
            snprintf(what, sizeof(what), "ctx %lld %s", (long long)ctx, r->label);
            eval_gather_run(cm, hash, (double)engine_kv_bytes_used(e), secs, &res[ri].kv_bytes, &res[ri].seconds, what);
            res[ri].mean_nll = sum / (double)eval_tokens;
            res[ri].ppl = exp(res[ri].mean_nll);
            eval_progress_step(&prog, 1, (double)eval_tokens, status);
            char line[256];
            snprintf(line, sizeof(line), "ctx %lld %s budget %lld: ppl %.4f", (long long)ctx, r->label,
                     (long long)r->budget, res[ri].ppl);
            eval_progress_line(&prog, line);
        }
        if (!rank0) continue;
        const ppl_result *full = NULL;
        for (int ri = 0; ri < n_runs[ci] && !full; ri++)
            if (runs[ci][ri].attention == ATTENTION_FULL) full = &res[ri];
        if (prog.bar) fprintf(stderr, "\r\033[K");
        printf("#\n# ctx %lld: %lld tokens prefilled, %lld scored\n# %-30s %7s %12s %10s %10s %9s %8s %8s\n",
               (long long)ctx, (long long)n_prefix, (long long)eval_tokens, "method", "budget", "ppl", "mean NLL",
               "dNLL", "ppl/full", "KV MiB", "seconds");
        for (int ri = 0; ri < n_runs[ci]; ri++) {
            const eval_run *r = &runs[ci][ri];
            const ppl_result *p = &res[ri];
            const double kv_mib = p->kv_bytes / (1024.0 * 1024.0);
            char d[24] = "-", q[24] = "-";
            if (full && p != full) {
                snprintf(d, sizeof(d), "%+.6f", p->mean_nll - full->mean_nll);
                snprintf(q, sizeof(q), "%.5f", p->ppl / full->ppl);
            }
            printf("  %-30s %7lld %12.6f %10.6f %10s %9s %8.2f %8.2f\n", r->label, (long long)r->budget, p->ppl,
                   p->mean_nll, d, q, kv_mib, p->seconds);
            fprintf(csv, "%lld,", (long long)ctx);
            cli_csv_field(csv, r->label);
            fprintf(csv, ",%lld,%lld,%.9f,%.9f,", (long long)r->budget, (long long)eval_tokens, p->mean_nll, p->ppl);
            if (full) fprintf(csv, "%.9f,%.9f", p->mean_nll - full->mean_nll, p->ppl / full->ppl);
            else fprintf(csv, ",");
            fprintf(csv, ",%.4f,%.4f\n", kv_mib, p->seconds);
            cJSON *obj = cJSON_CreateObject();
            cJSON_AddNumberToObject(obj, "ctx", (double)ctx);
            cJSON_AddStringToObject(obj, "method", r->label);
            cJSON_AddStringToObject(obj, "attention", attention_kind_name(r->attention));
            cJSON_AddNumberToObject(obj, "budget", (double)r->budget);
            cJSON_AddNumberToObject(obj, "prefill_tokens", (double)n_prefix);
            cJSON_AddNumberToObject(obj, "mean_nll", p->mean_nll);
            cJSON_AddNumberToObject(obj, "ppl", p->ppl);
            if (full) {
                cJSON_AddNumberToObject(obj, "delta_nll", p->mean_nll - full->mean_nll);
                cJSON_AddNumberToObject(obj, "ppl_ratio", p->ppl / full->ppl);
            }
            cJSON_AddNumberToObject(obj, "kv_bytes", p->kv_bytes);
            cJSON_AddNumberToObject(obj, "decode_seconds", p->seconds);
            cJSON_AddItemToObject(obj, "nll", cJSON_CreateDoubleArray(p->nll, (int)eval_tokens));
            cJSON_AddItemToArray(results, obj);
        }
        fflush(stdout);
        fflush(csv);
    }
    eval_progress_end(&prog);
    if (rank0) {
        fprintf(stderr, "recall: eval: %lld decode steps, logits bitwise identical on all ranks (%d rank%s, hash %016llx)\n",
                (long long)n_steps, cm->size, cm->size > 1 ? "s" : "", (unsigned long long)all_hash);
        eval_finish_outputs(o.out_prefix, csv, csv_path, root, results, command, cm->size);
        fprintf(stderr, "recall: eval: results in %s.{csv,json}\n", o.out_prefix);
    }
    for (int ri = 0; ri < EVAL_MAX_RUNS; ri++) free(res[ri].nll);
    free(res);
    free(prompt_logits);
    for (int ci = 0; ci < o.n_ctx; ci++) free(runs[ci]);
    engine_destroy(e);
    free(ids);
    tokenizer_free(tok);
    model_free(&m);
    comm_destroy(cm);
    return 0;
}
