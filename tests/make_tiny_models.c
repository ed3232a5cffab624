// make_tiny_models OUTDIR: writes the tiny synthetic models of
// tests/support/tiny_zoo.c as OUTDIR/<name>.gguf, for
// tests/golden/make_tiny_golden.py to evaluate with numpy:
//
//   build/tests/make_tiny_models tests/data/tiny
//   python3 tests/golden/make_tiny_golden.py
//
// test_engine reads tests/data/tiny/<name>.gguf when present and otherwise
// writes the same model itself; either way it checks the file's hash against
// the one recorded in <name>.logits.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tiny_zoo.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    if (mkdir(argv[1], 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_tiny_models: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    for (int i = 0; i < tiny_zoo_count(); i++) {
        tiny_model_params p;
        tiny_zoo_params(i, &p);
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s.gguf", argv[1], tiny_zoo_name(i));
        rc_err err;
        if (tiny_model_write(path, &p, &err)) {
            fprintf(stderr, "make_tiny_models: %s: %s\n", path, err.msg);
            return 1;
        }
        printf("wrote %s\n", path);
    }
    return 0;
}
