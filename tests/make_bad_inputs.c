// make_bad_inputs OUTDIR: writes the files the CLI bad-input tests feed to
// `recall` (tests/cli/bad_input.cmake), plus one valid tiny model:
//   tiny.gguf               valid llama model (F32 / Q8_0 / Q4_1 mix, context 64)
//   not_gguf.bin            a text file
//   truncated_header.gguf   tiny.gguf cut in the middle of its metadata
//   truncated_data.gguf     tiny.gguf cut in the middle of its tensor data
//   offset_past_eof.gguf    output.weight's offset points 1 TiB past the end
//   unsupported_type.gguf   blk.0.attn_q.weight stored as Q3_K (known to ggml, not to recall)
//   unknown_type.gguf       blk.0.attn_q.weight with type id 99 (no such ggml type)
//   unsupported_arch.gguf   general.architecture = "mamba"
//   tiny_ctx512.gguf        tiny.gguf with a 512-token trained context
//   tiny_other_weights.gguf tiny.gguf with other random weights: the same metadata
//                           and tensor infos byte for byte, another model (fingerprint)
//   defect_*.gguf           the GGUF files of support/defect_inputs.h
//   defect_head_scores.json a head-scores file that declares far more rows than it holds
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "defect_inputs.h"
#include "gguf_writer.h"
#include "model/quant.h"
#include "tiny_model.h"

static const char *g_outdir;

static void out_path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_outdir, name); }

static int write_bytes(const char *name, const void *bytes, size_t n_bytes) {
    char path[4096];
    out_path(path, sizeof(path), name);
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        fprintf(stderr, "make_bad_inputs: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t written = n_bytes ? fwrite(bytes, 1, n_bytes, fp) : 0;
    if (fclose(fp) != 0 || written != n_bytes) {
        fprintf(stderr, "make_bad_inputs: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static void tiny_params(tiny_model_params *p) {
    tiny_model_default(p);
    p->n_ctx = 64;
    p->type_embd = GGML_TYPE_F32;
    p->type_attn = GGML_TYPE_Q8_0;
    p->type_ffn = GGML_TYPE_Q4_1;
    p->type_output = GGML_TYPE_Q8_0;
}

// Builds a model, lets `tweak` set writer knobs, and writes the first
// `keep(layout)` bytes (all of them when keep is NULL).
static int write_model(const char *name, const tiny_model_params *p, void (*tweak)(gguf_writer *),
                       size_t (*keep)(const gguf_writer_layout *)) {
    gguf_writer w;
    gguf_writer_init(&w);
    rc_err err;
    uint8_t *img = NULL;
    size_t n = 0;
    gguf_writer_layout lay;
    int rc = tiny_model_build(&w, p, &err);
    if (rc == 0 && tweak) tweak(&w);
    if (rc == 0) rc = gguf_writer_write_memory(&w, &img, &n, &lay, &err);
    if (rc == 0) {
        rc = write_bytes(name, img, keep ? keep(&lay) : n);
        gguf_writer_layout_free(&lay);
    } else {
        fprintf(stderr, "make_bad_inputs: %s: %s\n", name, err.msg);
    }
    free(img);
    gguf_writer_free(&w);
    return rc;
}

static size_t keep_half_header(const gguf_writer_layout *l) { return l->header_bytes / 2; }
static size_t keep_half_data(const gguf_writer_layout *l) { return l->data_offset + (l->data_end - l->data_offset) / 2; }

static void offset_past_eof(gguf_writer *w) {
    int64_t i = gguf_writer_find_tensor(w, "output.weight");
    if (i >= 0) w->tensors[i].offset_override = (uint64_t)1 << 40;  // aligned, so only the bounds check can catch it
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_bad_inputs OUTDIR\n");
        return 2;
    }
    g_outdir = argv[1];
    if (mkdir(g_outdir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_bad_inputs: mkdir %s: %s\n", g_outdir, strerror(errno));
        return 1;
    }
    int rc = 0;
    tiny_model_params p;

    tiny_params(&p);
    rc |= write_model("tiny.gguf", &p, NULL, NULL);
    static const char text[] = "This is not a GGUF file.\nJust two lines of text.\n";
    rc |= write_bytes("not_gguf.bin", text, sizeof(text) - 1);
    rc |= write_model("truncated_header.gguf", &p, NULL, keep_half_header);
    rc |= write_model("truncated_data.gguf", &p, NULL, keep_half_data);
    rc |= write_model("offset_past_eof.gguf", &p, offset_past_eof, NULL);

    // Q3_K blocks hold 256 elements, so this model's rows are 256 long.
    tiny_params(&p);
    p.n_layer = 1;
    p.d_model = 256;
    p.d_ff = 256;
    p.type_embd = p.type_attn = p.type_ffn = p.type_output = GGML_TYPE_Q8_0;
    p.override_tensor = "blk.0.attn_q.weight";
    p.override_type = GGML_TYPE_Q3_K;
    rc |= write_model("unsupported_type.gguf", &p, NULL, NULL);

    tiny_params(&p);
    p.override_tensor = "blk.0.attn_q.weight";
    p.override_type = 99;
    rc |= write_model("unknown_type.gguf", &p, NULL, NULL);

    tiny_params(&p);
    p.arch = "mamba";
    rc |= write_model("unsupported_arch.gguf", &p, NULL, NULL);

    tiny_params(&p);
    p.n_ctx = 512;
    rc |= write_model("tiny_ctx512.gguf", &p, NULL, NULL);

    tiny_params(&p);
    p.seed += 1;
    rc |= write_model("tiny_other_weights.gguf", &p, NULL, NULL);

    for (int i = 0; i < DEFECT_GGUF_COUNT; i++) {
        rc_err err;
        uint8_t *img = NULL;
        size_t n = 0;
        char name[128];
        snprintf(name, sizeof(name), "%s.gguf", defect_gguf_name(i));
        if (defect_gguf_build(i, &img, &n, &err)) {
            fprintf(stderr, "make_bad_inputs: %s\n", err.msg);
            rc = 1;
        } else {
            rc |= write_bytes(name, img, n);
        }
        free(img);
    }
    const char *heads = defect_head_scores_json();
    rc |= write_bytes("defect_head_scores.json", heads, strlen(heads));

    if (rc) return 1;
    printf("make_bad_inputs: wrote the bad inputs to %s\n", g_outdir);
    return 0;
}
