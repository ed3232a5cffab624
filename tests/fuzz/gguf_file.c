// The same as gguf_model.c through the path the CLI takes: open, fstat and
// mmap of a file (a memfd), then the model and its tokenizer.
#include "fuzz_common.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_scratch_file(data, size);
    rc_err err;
    model m;
    if (model_load(&m, path, &err) == 0) {
        fuzz_check_model(&m);
        tokenizer *tok = NULL;
        if (tokenizer_init(&tok, &m.file, &err) == 0) tokenizer_free(tok);
        model_free(&m);
    } else {
        gguf_file f;  // a file that is no model may still hold a vocabulary
        if (gguf_open(&f, path, &err) == 0) {
            tokenizer *tok = NULL;
            if (tokenizer_init(&tok, &f, &err) == 0) tokenizer_free(tok);
            gguf_close(&f);
        }
    }
    return 0;
}
