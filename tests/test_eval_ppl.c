// `recall eval ppl` against a separate computation of the same perplexity.
//
// The CLI prefills the first C - E tokens and teacher-forces the last E one
// decode step at a time. Here the whole C-token window is prefilled in one
// call with logits for every position (the tiled prefill path, no decode
// step at all), and the NLL of each of the last E tokens comes from its
// predecessor's logits through a log-softmax written out below. Both sides
// use an fp32 KV cache: with fp16, a new token's K/V computed by a decode step
// and by the prefill can round to different fp16 values, which moves ppl by
// ~3e-5 relative; with fp32 the two paths agree to ~1e-6. Checks:
//   1. full attention: exp(mean NLL) within 1e-4 relative of the CLI's;
//      every token's NLL within 1e-3 absolute (an off-by-one position would
//      be off by about 1);
//   2. recycled with K = C (nothing left out) equals full within 1e-4;
//   3. the CSV has one row per method with the JSON's ppl.
// Uses the real model and its tokenizer (RECALL_MODEL_PATH; the test fails when it is
// missing) on tests/data/prose/persuasion_ch1.txt at C = 512, E = 128.
// The recall binary comes from $RECALL_BIN (tests/cli/eval.cmake sets it),
// else ../recall next to this test's directory.
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "test_backend.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define CTX 512
#define EVAL_TOKENS 128
#define TEXT_PATH RECALL_TEST_DATA "/prose/persuasion_ch1.txt"

extern char **environ;

static char *read_all(const char *path, size_t *n_bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    if (n_bytes) *n_bytes = got;
    return buf;
}

static void recall_binary(char *out, size_t cap) {
    const char *env = getenv("RECALL_BIN");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(out, cap, "%s/../recall", self);
}

// Runs recall with argv; returns its exit status (-1 when it could not run).
static int run(char *const *argv) {
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0) return -1;
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// log-softmax in double: NLL of `target` = ln sum_v exp(x_v) - x_target.
static double nll_of(const float *x, int64_t n, int32_t target) {
    double mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return log(s) + mx - (double)x[target];
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const cJSON *find_result(const cJSON *results, const char *method) {
    const cJSON *r;
    cJSON_ArrayForEach(r, results) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "method");
        if (cJSON_IsString(m) && !strcmp(m->valuestring, method)) return r;
    }
    return NULL;
}

int main(void) {
    test_backend_setup();
    rc_err err = {{0}};
    model m;
    if (model_load(&m, RECALL_MODEL_PATH, &err)) {
        return test_missing_model(RECALL_MODEL_PATH, err.msg);
    }
    char bin[PATH_MAX + 16], dir[] = "/tmp/recall_test_eval_ppl_XXXXXX";
    recall_binary(bin, sizeof(bin));
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "no recall binary at %s (set RECALL_BIN)\n", bin);
        return 1;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    // 1. The CLI: full and recycled with K = C (the paper's uniform budgets: every head keeps all).
    char prefix[sizeof(dir) + 16], ctx_s[16], eval_s[16], methods[64];
    snprintf(prefix, sizeof(prefix), "%s/ppl", dir);
    snprintf(ctx_s, sizeof(ctx_s), "%d", CTX);
    snprintf(eval_s, sizeof(eval_s), "%d", EVAL_TOKENS);
    snprintf(methods, sizeof(methods), "full,recycled:k=%d:budgets=uniform", CTX);  // uniform: K = C keeps all
    char *argv[] = {bin, "eval", "ppl", "-m", RECALL_MODEL_PATH, "--text", TEXT_PATH, "--ctx", ctx_s,
                    "--eval-tokens", eval_s, "--attention", methods, "--kv-type", "f32", "--threads", "2",
                    "--out", prefix, NULL};
    int rc = run(argv);
    CHECK_MSG(rc == 0, "recall eval ppl exited with %d", rc);
    char path[sizeof(prefix) + 16];
    snprintf(path, sizeof(path), "%s.json", prefix);
    char *json_text = read_all(path, NULL);
    cJSON *root = json_text ? cJSON_Parse(json_text) : NULL;
    CHECK_MSG(root != NULL, "%s: missing or not JSON", path);
    const cJSON *results = root ? cJSON_GetObjectItemCaseSensitive(root, "results") : NULL;
    const cJSON *full = find_result(results, "full"), *rec = find_result(results, methods + strlen("full,"));
    CHECK(full != NULL && rec != NULL);
    double cli_ppl = NAN, rec_ppl = NAN, cli_nll[EVAL_TOKENS];
    for (int i = 0; i < EVAL_TOKENS; i++) cli_nll[i] = NAN;
    if (full && rec) {
        cli_ppl = num(full, "ppl");
        rec_ppl = num(rec, "ppl");
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(full, "nll");
        CHECK(cJSON_GetArraySize(arr) == EVAL_TOKENS);
        for (int i = 0; i < EVAL_TOKENS && i < cJSON_GetArraySize(arr); i++)
            cli_nll[i] = cJSON_IsNumber(cJSON_GetArrayItem(arr, i)) ? cJSON_GetArrayItem(arr, i)->valuedouble : NAN;
    }

    // 2. The separate path: one prefill of all C tokens, logits at every position.
    tokenizer *tok = NULL;
    CHECK_MSG(tokenizer_init(&tok, &m.file, &err) == 0, "%s", err.msg);
    size_t n_bytes = 0, n_ids = 0;
    char *text = read_all(TEXT_PATH, &n_bytes);
    int32_t *ids = NULL;
    CHECK_MSG(text && tokenizer_encode(tok, text, n_bytes, tokenizer_add_bos(tok), 0, &ids, &n_ids, &err) == 0, "%s",
              err.msg);
    CHECK(n_ids >= CTX);
    engine_opts eo = engine_default_opts();
    eo.backend = test_backend();
    eo.n_ctx = CTX;
    eo.n_threads = 2;
    eo.kv_elem = KV_F32;
    engine *e = NULL;
    CHECK_MSG(!(e = engine_create(&m, &eo, &err)) == 0, "%s", err.msg);
    const int64_t V = m.cfg.n_vocab;
    float *logits = malloc((size_t)CTX * (size_t)V * sizeof(float));
    CHECK_MSG(engine_prefill(e, ids, CTX, logits, NULL, NULL, &err) == 0, "%s", err.msg);
    double sum = 0.0, worst = 0.0;
    int worst_i = -1;
    for (int i = 0; i < EVAL_TOKENS; i++) {
        const int64_t t = CTX - EVAL_TOKENS + i;  // predicted from position t - 1
        const double nll = nll_of(logits + (t - 1) * V, V, ids[t]);
        sum += nll;
        const double d = fabs(nll - cli_nll[i]);
        if (!(d <= worst)) {
            worst = d;
            worst_i = i;
        }
    }
    const double ref_ppl = exp(sum / EVAL_TOKENS);
    printf("full: CLI ppl %.8f, one-shot prefill %.8f (rel %.2e); recycled K=%d %.8f (rel %.2e); "
           "largest per-token NLL difference %.2e (token %d)\n", cli_ppl, ref_ppl, fabs(cli_ppl / ref_ppl - 1.0), CTX,
           rec_ppl, fabs(rec_ppl / cli_ppl - 1.0), worst, worst_i);
    CHECK_CLOSE(cli_ppl, ref_ppl, 0.0, 1e-4);
    CHECK_CLOSE(rec_ppl, cli_ppl, 0.0, 1e-4);
    CHECK_MSG(worst <= 1e-3, "token %d: NLL differs by %g", worst_i, worst);

    // 3. The CSV: a header and one row per method, ppl as in the JSON.
    snprintf(path, sizeof(path), "%s.csv", prefix);
    char *csv = read_all(path, NULL);
    CHECK_MSG(csv != NULL, "%s missing", path);
    if (csv) {
        int lines = 0;
        for (char *p = csv; *p; p++) lines += *p == '\n';
        CHECK_MSG(lines == 3, "%s: %d lines, expected a header and 2 rows", path, lines);
        CHECK(!strncmp(csv, "ctx,method,budget,eval_tokens,mean_nll,ppl,", 43));
        char *row = strstr(csv, "\n512,full,512,128,");
        double csv_nll = NAN, csv_ppl = NAN;
        CHECK(row && sscanf(row + strlen("\n512,full,512,128,"), "%lf,%lf", &csv_nll, &csv_ppl) == 2);
        CHECK_CLOSE(csv_ppl, cli_ppl, 0.0, 1e-8);
    }

    free(csv);
    free(logits);
    engine_destroy(e);
    free(ids);
    free(text);
    tokenizer_free(tok);
    cJSON_Delete(root);
    free(json_text);
    model_free(&m);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    if (system(path) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
