// Regression tests of the loader defects found by fuzzing and crafted inputs
// (support/defect_inputs.h), at the library level: each check failed before
// its fix, in the Release build or (the undefined-behaviour cases) under the
// ASan+UBSan build. The CLI side is tests/cli/defects.cmake.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "defect_inputs.h"
#include "gguf_writer.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/quant.h"
#include "policy/head_scores.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

static uint8_t *defect(int i, size_t *n) {
    rc_err err;
    uint8_t *img = NULL;
    if (defect_gguf_build(i, &img, n, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return img;
}

// Loads a defect image; returns the error message ("" when it loaded).
static const char *load_defect(int i, rc_err *err) {
    size_t n;
    uint8_t *img = defect(i, &n);
    model m;
    int rc = model_load_memory(&m, img, n, "mem.gguf", err);
    if (rc == 0) {
        model_free(&m);
        err->msg[0] = '\0';
    }
    free(img);
    return err->msg;
}

static void test_metadata_that_makes_nan(void) {
    rc_err err;
    const char *msg = load_defect(DEFECT_ROPE_BASE_ZERO, &err);
    CHECK_MSG(strstr(msg, "llama.rope.freq_base = 0 must be positive") != NULL, "got '%s'", msg);
    msg = load_defect(DEFECT_RMS_EPS_NEGATIVE, &err);
    CHECK_MSG(strstr(msg, "layer_norm_rms_epsilon = -1 must be positive") != NULL, "got '%s'", msg);
    // The NaN-weight model loads: its NaN logits are the CLI's to refuse.
    msg = load_defect(DEFECT_NAN_WEIGHT, &err);
    CHECK_MSG(msg[0] == '\0', "got '%s'", msg);
}

// Accepted alignments are powers of two >= 8, and every tensor then starts
// at such a boundary of the (aligned) image.
static void test_alignment(void) {
    const uint32_t values[] = {1, 2, 4, 8, 32, 64, 48};
    for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++) {
        tiny_model_params p;
        tiny_model_default(&p);
        p.type_attn = GGML_TYPE_Q8_0;
        p.alignment = values[k];
        gguf_writer w;
        gguf_writer_init(&w);
        rc_err err;
        uint8_t *img = NULL;
        size_t n = 0;
        CHECK(tiny_model_build(&w, &p, &err) == 0 && gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
        uint8_t *copy = aligned_alloc(64, (n + 63) / 64 * 64);
        memcpy(copy, img, n);
        gguf_file f;
        const int ok = gguf_open_memory(&f, copy, n, "mem.gguf", &err) == 0;
        const int want = values[k] >= 8 && (values[k] & (values[k] - 1)) == 0;
        CHECK_MSG(ok == want, "alignment %u: %s", values[k], ok ? "accepted" : err.msg);
        if (!ok && values[k] < 8)
            CHECK_MSG(strstr(err.msg, "not a power of two of at least 8") != NULL, "got '%s'", err.msg);
        if (ok) {
            for (uint64_t t = 0; t < f.n_tensors; t++)
                CHECK(((uintptr_t)f.tensors[t].data - (uintptr_t)copy) % values[k] == 0);
            gguf_close(&f);
        }
        free(copy);
        free(img);
        gguf_writer_free(&w);
    }
    rc_err err;
    const char *msg = load_defect(DEFECT_ALIGNMENT_ONE, &err);
    CHECK_MSG(strstr(msg, "general.alignment 1") != NULL, "got '%s'", msg);
}

// A token type of 0xFFFFFFFF (uint32 array) loads as an undefined type; the
// float->int conversion used to be undefined behaviour (UBSan).
static void test_token_type_range(void) {
    size_t n;
    uint8_t *img = defect(DEFECT_TOKEN_TYPE_HUGE, &n);
    gguf_file f;
    rc_err err;
    CHECK(gguf_open_memory(&f, img, n, "mem.gguf", &err) == 0);
    tokenizer *tok = NULL;
    CHECK_MSG(tokenizer_init(&tok, &f, &err) == 0, "%s", err.msg);
    tokenizer_free(tok);
    gguf_close(&f);
    free(img);
}

static void test_dimension_bounds(void) {
    rc_err err;
    const char *msg = load_defect(DEFECT_HEAD_COUNT_HUGE, &err);
    CHECK_MSG(strstr(msg, "beyond the supported bounds") != NULL, "got '%s'", msg);
    CHECK_MSG(strstr(msg, " -") == NULL && strstr(msg, "[-") == NULL, "a wrapped negative value in '%s'", msg);
    msg = load_defect(DEFECT_BLOCK_COUNT_HUGE, &err);
    CHECK_MSG(strstr(msg, "layers 4294967295 of at most 4096") != NULL, "got '%s'", msg);
}

// A block count within the bound but beyond the tensors the file holds fails
// on the count, before the per-layer table is allocated.
static void test_block_count_vs_tensors(void) {
    tiny_model_params p;
    tiny_model_default(&p);
    gguf_writer w;
    gguf_writer_init(&w);
    rc_err err;
    CHECK(tiny_model_build(&w, &p, &err) == 0);
    uint32_t type, v = 4000;
    uint8_t *val = gguf_writer_find_value(&w, "llama.block_count", &type);
    CHECK(val && type == GGUF_VAL_UINT32);
    memcpy(val, &v, 4);
    uint8_t *img = NULL;
    size_t n = 0;
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
    model m;
    CHECK(model_load_memory(&m, img, n, "mem.gguf", &err) != 0);
    CHECK_MSG(strstr(err.msg, "block_count 4000, but the file holds") != NULL, "got '%s'", err.msg);
    free(img);
    gguf_writer_free(&w);
}

// 65536 x 65536 declared, one row present: refused on the shape, without
// first allocating 32 GiB (which fails under the address-space limit set in
// main, outside ASan, and made the error "out of memory").
static void test_head_scores_shape_first(void) {
    char path[] = "/tmp/recall_test_defects_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *text = defect_head_scores_json();
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    head_scores hs;
    rc_err err;
    CHECK(head_scores_load(path, 0, 0, &hs, &err) != 0);
    CHECK_MSG(strstr(err.msg, "\"scores\" has 1 rows, n_layer is 65536") != NULL, "got '%s'", err.msg);
    unlink(path);
}

// Found by fuzzing (head_scores harness, save/load round trip): a score of
// -0 loaded as -0 but is saved as 0; it now loads as +0.
static void test_head_scores_negative_zero(void) {
    char path[] = "/tmp/recall_test_defects_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *text = "{\"format\":\"recall-head-scores-1\",\"model\":\"m\",\"probe\":\"r\",\"n_layer\":1,"
                       "\"n_head\":2,\"n_examples\":1,\"scores\":[[-0,1]]}";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    head_scores hs;
    rc_err err;
    CHECK_MSG(head_scores_load(path, 0, 0, &hs, &err) == 0, "%s", err.msg);
    if (hs.score) {
        CHECK(hs.score[0] == 0.0 && !signbit(hs.score[0]) && hs.score[1] == 1.0);
        head_scores_free(&hs);
    }
    unlink(path);
}

int main(void) {
    if (!UNDER_ASAN) {  // ASan reserves terabytes of address space
        struct rlimit rl = {.rlim_cur = (rlim_t)8 << 30, .rlim_max = (rlim_t)8 << 30};
        setrlimit(RLIMIT_AS, &rl);
    }
    test_metadata_that_makes_nan();
    test_alignment();
    test_token_type_range();
    test_dimension_bounds();
    test_block_count_vs_tensors();
    test_head_scores_shape_first();
    test_head_scores_negative_zero();
    TEST_MAIN_END();
}
