// The GGUF reader, model loading and tokenizer construction on an in-memory
// image: whatever the bytes, each step either fails with a message or yields
// a model and tokenizer that satisfy fuzz_check_model and can encode/decode.
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

static void check_metadata(const gguf_file *f) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kvs[i];
        if (kv->type != GGUF_VAL_ARRAY) continue;
        for (uint64_t j = 0; j < kv->arr_len; j++) {
            if (kv->arr_type == GGUF_VAL_STRING) {
                gguf_str s = gguf_arr_str(kv, j);
                if ((const uint8_t *)s.ptr < f->map || s.n_bytes > (size_t)(f->map + f->n_bytes - (const uint8_t *)s.ptr))
                    fuzz_fail("string array element outside the file");
            } else {
                (void)gguf_arr_num(kv, j);
            }
        }
    }
}

static void exercise_tokenizer(const gguf_file *f) {
    tokenizer *tok = NULL;
    rc_err err;
    if (tokenizer_init(&tok, f, &err)) return;
    static const char text[] = "Hello world! <|im_start|>user\n  3.14 \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\xff\x80";
    int32_t *ids = NULL;
    size_t n = 0;
    const int add_bos = tokenizer_bos(tok) >= 0;
    if (tokenizer_encode(tok, text, sizeof(text) - 1, add_bos, 1, &ids, &n, &err) == 0) {
        const size_t cap = tokenizer_decode_cap(tok);
        char *out = malloc(cap + 1);
        tokenizer_stream st = {.show_special = 1};
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(tok)) fuzz_fail("token id %d out of range", ids[i]);
            if (tokenizer_decode_stream(tok, &st, ids[i], out, cap) > cap) fuzz_fail("decode overflow");
        }
        tokenizer_stream_flush(tok, &st, out, cap);
        free(out);
    }
    free(ids);
    tokenizer_free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = fuzz_aligned_copy(data, size);
    rc_err err;
    gguf_file f;
    if (gguf_open_memory(&f, copy, size, "fuzz.gguf", &err) == 0) {
        check_metadata(&f);
        exercise_tokenizer(&f);
        gguf_close(&f);
    }
    model m;
    if (model_load_memory(&m, copy, size, "fuzz.gguf", &err) == 0) {
        fuzz_check_model(&m);
        model_free(&m);
    }
    free(copy);
    return 0;
}
