// make_fuzz_corpus OUTDIR: writes the fuzzing corpora with the test suite's
// own writers (GGUF writer, tiny models, head_scores_save):
//   OUTDIR/seeds/HARNESS/        valid inputs of every kind the harness reads
//   OUTDIR/regressions/HARNESS/  every input that once failed (support/defect_inputs.h)
// gguf_model and gguf_file share the GGUF seeds and regressions.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "defect_inputs.h"
#include "gguf_writer.h"
#include "model/quant.h"
#include "policy/head_scores.h"
#include "tiny_model.h"

static const char *g_out;
static int g_rc;

static void make_dir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_fuzz_corpus: mkdir %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void path_of(char *buf, size_t cap, const char *kind, const char *harness, const char *name) {
    snprintf(buf, cap, "%s/%s/%s/%s", g_out, kind, harness, name);
}

static void write_bytes(const char *kind, const char *harness, const char *name, const void *data, size_t n) {
    char path[4096];
    path_of(path, sizeof(path), kind, harness, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "make_fuzz_corpus: cannot write %s\n", path);
        g_rc = 1;
    }
}

static void write_str(const char *kind, const char *harness, const char *name, const char *text) {
    write_bytes(kind, harness, name, text, strlen(text));
}

// Small tiny-model variants: every weight type, both architectures, tied
// output, each RoPE scaling, a non-default alignment.
static void gguf_seeds(void) {
    static const char *const harnesses[] = {"gguf_model", "gguf_file"};
    for (int v = 0; v < 7; v++) {
        tiny_model_params p;
        tiny_model_default(&p);
        p.seed = 1000 + (uint64_t)v;
        p.n_layer = 1;
        p.d_model = 32;
        p.n_head = 2;
        p.n_head_kv = 1;
        p.d_ff = 32;
        p.n_vocab = TINY_MODEL_MIN_VOCAB;
        p.n_ctx = 64;
        const char *name = NULL;
        switch (v) {
        case 0: name = "llama_f32.gguf"; p.tied_output = 1; break;
        case 1: name = "llama_q8_0.gguf"; p.type_embd = p.type_attn = p.type_ffn = p.type_output = GGML_TYPE_Q8_0; break;
        case 2: name = "llama_q4_0_linear.gguf"; p.type_embd = p.type_attn = p.type_ffn = GGML_TYPE_Q4_0;
            p.tied_output = 1; p.rope_scaling = TINY_ROPE_LINEAR; p.rope_factor = 4.0f; break;
        case 3: name = "llama_q4_1_llama3.gguf"; p.type_attn = p.type_ffn = GGML_TYPE_Q4_1; p.type_embd = GGML_TYPE_Q8_0;
            p.rope_scaling = TINY_ROPE_LLAMA3; p.rope_factor = 8.0f; p.rope_orig_ctx = 32; p.tied_output = 1; break;
        case 4: name = "qwen2_f16_bf16.gguf"; p.arch = "qwen2"; p.type_attn = GGML_TYPE_F16; p.type_ffn = GGML_TYPE_BF16;
            p.type_embd = GGML_TYPE_BF16; p.type_output = GGML_TYPE_F16; p.rope_base = 1e6f; p.tokenizer_pre = "qwen2"; break;
        case 5: name = "llama_align64_headdim.gguf"; p.alignment = 64; p.head_dim = 8; p.type_embd = GGML_TYPE_Q8_0;
            p.tied_output = 1; break;
        case 6: name = "llama_2layers_smollm.gguf"; p.n_layer = 2; p.tokenizer_pre = "smollm"; p.tied_output = 1;
            p.type_embd = p.type_attn = p.type_ffn = GGML_TYPE_Q8_0; break;
        }
        gguf_writer w;
        gguf_writer_init(&w);
        rc_err err;
        uint8_t *img = NULL;
        size_t n = 0;
        if (tiny_model_build(&w, &p, &err) || gguf_writer_write_memory(&w, &img, &n, NULL, &err)) {
            fprintf(stderr, "make_fuzz_corpus: %s: %s\n", name, err.msg);
            g_rc = 1;
        } else {
            for (int h = 0; h < 2; h++) write_bytes("seeds", harnesses[h], name, img, n);
        }
        free(img);
        gguf_writer_free(&w);
    }
    for (int i = 0; i < DEFECT_GGUF_COUNT; i++) {
        rc_err err;
        uint8_t *img = NULL;
        size_t n = 0;
        char name[128];
        snprintf(name, sizeof(name), "%s.gguf", defect_gguf_name(i));
        if (defect_gguf_build(i, &img, &n, &err)) {
            fprintf(stderr, "make_fuzz_corpus: %s\n", err.msg);
            g_rc = 1;
        } else {
            for (int h = 0; h < 2; h++) write_bytes("regressions", harnesses[h], name, img, n);
        }
        free(img);
    }
}

static void tokenizer_seeds(void) {
    static const char *const texts[] = {
        "Hello world! How are you today?",
        "  leading and trailing spaces  \n\n\ttabs\r\n",
        "Numbers: 3.14159, 1,000,000 and 2026-12-02.",
        "caf\xc3\xa9 na\xc3\xafve \xc3\xbc\xc3\xb6\xc3\xa4 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\xf0\x9f\x91\x8d",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|> text after a control token's text",
        "def f(x):\n    return x ** 2  # code\n",
        "invalid \xff\xfe bytes \xc3 and \xe2\x82 cut sequences \xed\xa0\x80",
        "I'm don't we'll they've SHE'S",
        "\x01\x02\x7f control bytes \x00 and a NUL",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "text_%02zu.txt", i);
        write_bytes("seeds", "tokenizer", name, texts[i], i == 9 ? 30 : strlen(texts[i]));
    }
    // Bytes with no token (0xF1 in a 4-byte character, runs of 0x14) are
    // dropped and break the character around them: the round-trip exception.
    static const char dropped_lead[] = "caf\xc3\xa9 <jtp'tera\0@\0\0_\xf1\x9f\x91\x8d";
    static const char dropped_ctrl[] = "dee+\0\0 0\x14\x14<filename>\x14\x14\xef\xbf\xbd" "eh\x14\x14me>";
    write_bytes("regressions", "tokenizer", "dropped_lead_byte.txt", dropped_lead, sizeof(dropped_lead) - 1);
    write_bytes("regressions", "tokenizer", "dropped_control_bytes.txt", dropped_ctrl, sizeof(dropped_ctrl) - 1);
}

static void head_scores_seeds(void) {
    static const char *const probes[] = {"r", "r2", "r+r2"};
    for (int v = 0; v < 3; v++) {
        head_scores hs = {.n_layer = 1 + v, .n_head = 2 + v, .n_examples = 10 * v};
        snprintf(hs.model, sizeof(hs.model), "tiny-%d", v);
        snprintf(hs.probe, sizeof(hs.probe), "%s", probes[v]);
        double score[12];
        for (int i = 0; i < 12; i++) score[i] = v == 2 ? 1e-300 * i : 0.125 * i + 1.0 / 3.0;
        hs.score = score;
        char path[4096], name[32];
        snprintf(name, sizeof(name), "scores_%d.json", v);
        path_of(path, sizeof(path), "seeds", "head_scores", name);
        rc_err err;
        if (head_scores_save(path, &hs, v == 1 ? "{\"lengths\":[512,1024],\"command\":\"recall profile-heads\"}" : NULL,
                             &err)) {
            fprintf(stderr, "make_fuzz_corpus: %s\n", err.msg);
            g_rc = 1;
        }
    }
    write_str("regressions", "head_scores", "defect_head_scores.json", defect_head_scores_json());
    // Found by a long run: a score of -0 loaded as -0 but saved as 0, so a
    // save/load round trip changed its bits.
    write_str("regressions", "head_scores", "negative_zero.json",
              "{\"format\":\"recall-head-scores-1\",\"model\":\"m\",\"probe\":\"r\",\"n_layer\":1,"
              "\"n_head\":2,\"n_examples\":1,\"scores\":[[-0,1]]}");
}

static void config_seeds(void) {
    write_str("seeds", "config", "plain.ini", "model = ~/m.gguf\nprompt = \"  padded prompt  \"\nn-predict = 16\nchat = true\n");
    write_str("seeds", "config", "sections.ini",
              "# comment\n; another\n[generate]\nattention = recycled\n[bench]\nchat = false\n[eval ruler]\nmodel=x\n");
    write_str("seeds", "config", "errors.ini", "[nosuch]\nunknown = 1\nchat = maybe\nmodel =\n= value\n");
    // Defect 2: a config file must be bounded (it once grew without limit
    // reading /dev/zero): one byte over the 1 MiB bound.
    const size_t n = ((size_t)1 << 20) + 1;
    char *big = malloc(n);
    if (!big) exit(1);
    memset(big, '#', n);
    write_bytes("regressions", "config", "over_1mib.ini", big, n);
    big[0] = '\0';  // and one with a NUL byte
    write_bytes("regressions", "config", "nul_byte.ini", big, 4096);
    free(big);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_fuzz_corpus OUTDIR\n");
        return 2;
    }
    g_out = argv[1];
    static const char *const harnesses[] = {"gguf_model", "gguf_file", "tokenizer", "head_scores", "config"};
    char path[4096];
    make_dir(g_out);
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof(path), "%s/%s", g_out, k ? "regressions" : "seeds");
        make_dir(path);
        for (size_t h = 0; h < sizeof(harnesses) / sizeof(harnesses[0]); h++) {
            snprintf(path, sizeof(path), "%s/%s/%s", g_out, k ? "regressions" : "seeds", harnesses[h]);
            make_dir(path);
        }
    }
    gguf_seeds();
    tokenizer_seeds();
    head_scores_seeds();
    config_seeds();
    if (!g_rc) printf("make_fuzz_corpus: wrote %s/seeds and %s/regressions\n", g_out, g_out);
    return g_rc;
}
