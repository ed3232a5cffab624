// The GGUF reader (src/model/gguf.c) against files from the test writer:
// every metadata type read back, tensors (dims, type, bytes, alignment),
// custom alignments, and every malformed input rejected with -1, a message
// that names the file, a zeroed gguf_file, and no out-of-bounds read (the
// truncated images live in exactly-sized heap buffers, so ASan sees overreads).
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "gguf_writer.h"
#include "model/gguf.h"
#include "model/quant.h"
#include "quantize_ref.h"
#include "tiny_model.h"

static char g_dir[512];

static void path_in_dir(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static int is_zeroed(const gguf_file *f) {
    return f->kvs == NULL && f->tensors == NULL && f->map == NULL && f->n_kv == 0 && f->n_tensors == 0;
}

// Parses n_bytes of img from a heap copy of exactly that size.
static int open_copy(gguf_file *f, const uint8_t *img, size_t n_bytes, rc_err *err) {
    uint8_t *copy = malloc(n_bytes ? n_bytes : 1);
    if (n_bytes) memcpy(copy, img, n_bytes);
    err->msg[0] = 0;
    int rc = gguf_open_memory(f, copy, n_bytes, "mem.gguf", err);
    if (rc == 0) gguf_close(f);  // the copy must outlive f
    free(copy);
    return rc;
}

// Serializes w and expects the reader to reject it with a message containing
// `want` (NULL: any message). Reported at the caller's line.
static void expect_reject_at(const gguf_writer *w, const char *want, int line, int case_index) {
    uint8_t *img;
    size_t n;
    rc_err err = {{0}};
    if (gguf_writer_write_memory(w, &img, &n, NULL, &err)) {
        fprintf(stderr, "%s:%d: writer failed: %s\n", __FILE__, line, err.msg);
        g_checks_failed++;
        return;
    }
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, img, n);
    gguf_file f;
    err.msg[0] = 0;
    int rc = gguf_open_memory(&f, copy, n, "mem.gguf", &err);
    g_checks_run++;
    if (rc != -1 || strncmp(err.msg, "mem.gguf: ", 10) != 0 || (want && !contains(err.msg, want)) || !is_zeroed(&f)) {
        g_checks_failed++;
        fprintf(stderr, "%s:%d: case %d: expected rejection containing '%s', got rc=%d msg='%s'\n", __FILE__, line,
                case_index, want ? want : "", rc, err.msg);
        if (rc == 0) gguf_close(&f);
    }
    free(copy);
    free(img);
}
#define EXPECT_REJECT(w, want) expect_reject_at((w), (want), __LINE__, -1)

// ---- the "everything" file ----

typedef struct tensor_spec {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
} tensor_spec;

static const tensor_spec k_tensors[] = {
    {"f32_vec", 1, {7}, GGML_TYPE_F32},            // 28 bytes: not a multiple of the alignment
    {"f16_mat", 2, {5, 3}, GGML_TYPE_F16},         // 30 bytes
    {"q8_0_mat", 2, {64, 2}, GGML_TYPE_Q8_0},
    {"q4_0_mat", 2, {32, 3}, GGML_TYPE_Q4_0},
    {"q4_1_vec", 1, {96}, GGML_TYPE_Q4_1},
    {"bf16_4d", 4, {2, 3, 4, 5}, GGML_TYPE_BF16},
    {"q5_k_row", 1, {256}, GGML_TYPE_Q5_K},        // known but unsupported: the reader still parses it
    {"one", 1, {1}, GGML_TYPE_F32},
};
enum { N_TENSORS = sizeof(k_tensors) / sizeof(k_tensors[0]) };

static size_t spec_bytes(const tensor_spec *s) {
    int64_t n = 1;
    for (uint32_t d = 0; d < s->n_dims; d++) n *= s->ne[d];
    const ggml_type_info *ti = ggml_type_get(s->type);
    return (size_t)(n / ti->block_elems) * ti->block_bytes;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
}

static const uint8_t k_arr_u8[] = {0, 1, 255};
static const int32_t k_arr_i32[] = {-2147483647 - 1, -1, 0, 2147483647};
static const float k_arr_f32[] = {1.5f, -0.0f, 1e-30f, 3e38f, -7.25f};
static const double k_arr_f64[] = {1e300, -2.5};
static const uint8_t k_arr_bool[] = {1, 0, 1};
static const uint64_t k_arr_u64[] = {UINT64_MAX, 0};
static const int64_t k_arr_i64[] = {INT64_MIN, 42};
static const int16_t k_arr_i16[] = {-32768, 32767};
static const char *const k_arr_str[] = {"alpha", "", "gamma \xce\xb3"};
static const uint64_t k_u64_big = ((uint64_t)1 << 63) + 5;

enum { N_FULL_KV = 31 };

// alignment 0: no general.alignment key (default 32).
static void build_full(gguf_writer *w, uint32_t alignment, uint32_t version) {
    gguf_writer_init(w);
    w->version = version;
    gguf_writer_add_str(w, "general.architecture", "test");
    if (alignment) gguf_writer_add_u32(w, "general.alignment", alignment);
    else gguf_writer_add_u32(w, "general.not_alignment", 7);  // keeps the key count fixed
    gguf_writer_add_u8(w, "t.u8", 200);
    gguf_writer_add_i8(w, "t.i8", -100);
    gguf_writer_add_u16(w, "t.u16", 60000);
    gguf_writer_add_i16(w, "t.i16", -30000);
    gguf_writer_add_u32(w, "t.u32", 4000000000u);
    gguf_writer_add_i32(w, "t.i32", -2000000000);
    gguf_writer_add_i32(w, "t.i32_pos", 7);
    gguf_writer_add_u64(w, "t.u64_big", k_u64_big);
    gguf_writer_add_u64(w, "t.u64_small", 123);
    gguf_writer_add_i64(w, "t.i64", -((int64_t)1 << 62));
    gguf_writer_add_f32(w, "t.f32", 3.25f);
    gguf_writer_add_f64(w, "t.f64", 0.1);
    gguf_writer_add_f64(w, "t.f64_inf", INFINITY);
    gguf_writer_add_bool(w, "t.bool_t", 1);
    gguf_writer_add_bool(w, "t.bool_f", 0);
    gguf_writer_add_str(w, "t.str", "hello");
    gguf_writer_add_str(w, "t.empty_str", "");
    gguf_writer_add_strn(w, "t.nul_str", "a\0b", 3);
    gguf_writer_add_arr(w, "t.arr_u8", GGUF_VAL_UINT8, k_arr_u8, 3);
    gguf_writer_add_arr(w, "t.arr_i32", GGUF_VAL_INT32, k_arr_i32, 4);
    gguf_writer_add_arr(w, "t.arr_f32", GGUF_VAL_FLOAT32, k_arr_f32, 5);
    gguf_writer_add_arr(w, "t.arr_f64", GGUF_VAL_FLOAT64, k_arr_f64, 2);
    gguf_writer_add_arr(w, "t.arr_bool", GGUF_VAL_BOOL, k_arr_bool, 3);
    gguf_writer_add_arr(w, "t.arr_u64", GGUF_VAL_UINT64, k_arr_u64, 2);
    gguf_writer_add_arr(w, "t.arr_i64", GGUF_VAL_INT64, k_arr_i64, 2);
    gguf_writer_add_arr(w, "t.arr_i16", GGUF_VAL_INT16, k_arr_i16, 2);
    gguf_writer_add_arr(w, "t.arr_empty", GGUF_VAL_UINT32, NULL, 0);
    gguf_writer_add_arr_str(w, "t.arr_str", k_arr_str, 3);
    gguf_writer_add_arr_str(w, "t.arr_str_empty", NULL, 0);
    for (int i = 0; i < N_TENSORS; i++) {
        size_t nb = spec_bytes(&k_tensors[i]);
        uint8_t *data = malloc(nb);
        fill_pattern(data, nb, (uint32_t)i);
        gguf_writer_add_tensor(w, k_tensors[i].name, k_tensors[i].n_dims, k_tensors[i].ne, k_tensors[i].type, data, nb);
        free(data);
    }
}

static void check_scalar(const gguf_file *f, const char *key, uint32_t type, const void *want, size_t n) {
    const gguf_kv *kv = gguf_find(f, key);
    CHECK_MSG(kv && kv->type == type, "%s: type", key);
    if (kv && kv->type == type) CHECK_MSG(memcmp(kv->data, want, n) == 0, "%s: value", key);
}

static void check_arr(const gguf_file *f, const char *key, uint32_t elem_type, uint64_t n, const double *want) {
    const gguf_kv *kv = gguf_find(f, key);
    CHECK_MSG(kv && kv->type == GGUF_VAL_ARRAY && kv->arr_type == elem_type && kv->arr_len == n, "%s: array header", key);
    if (!kv || kv->arr_len != n) return;
    for (uint64_t i = 0; i < n; i++) {
        double v = gguf_arr_num(kv, i);
        CHECK_MSG(v == want[i] || (isnan(v) && isnan(want[i])), "%s[%llu] = %.17g, want %.17g", key,
                  (unsigned long long)i, v, want[i]);
    }
}

static void check_full(const gguf_file *f, uint32_t alignment, uint32_t version) {
    uint64_t al = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    CHECK(f->version == version);
    CHECK(f->n_kv == N_FULL_KV);
    CHECK(f->n_tensors == N_TENSORS);
    CHECK(f->alignment == al);
    CHECK(f->data_offset % al == 0);

    // Raw values, type by type.
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u;
    int32_t i32 = -2000000000;
    int64_t i64 = -((int64_t)1 << 62);
    float f32 = 3.25f;
    double f64 = 0.1;
    uint8_t bt = 1, bf = 0;
    check_scalar(f, "t.u8", GGUF_VAL_UINT8, &u8, 1);
    check_scalar(f, "t.i8", GGUF_VAL_INT8, &i8, 1);
    check_scalar(f, "t.u16", GGUF_VAL_UINT16, &u16, 2);
    check_scalar(f, "t.i16", GGUF_VAL_INT16, &i16, 2);
    check_scalar(f, "t.u32", GGUF_VAL_UINT32, &u32, 4);
    check_scalar(f, "t.i32", GGUF_VAL_INT32, &i32, 4);
    check_scalar(f, "t.u64_big", GGUF_VAL_UINT64, &k_u64_big, 8);
    check_scalar(f, "t.i64", GGUF_VAL_INT64, &i64, 8);
    check_scalar(f, "t.f32", GGUF_VAL_FLOAT32, &f32, 4);
    check_scalar(f, "t.f64", GGUF_VAL_FLOAT64, &f64, 8);
    check_scalar(f, "t.bool_t", GGUF_VAL_BOOL, &bt, 1);
    check_scalar(f, "t.bool_f", GGUF_VAL_BOOL, &bf, 1);

    const double want_u8[] = {0, 1, 255}, want_i32[] = {-2147483648.0, -1, 0, 2147483647};
    const double want_f32[] = {1.5, -0.0, (double)1e-30f, (double)3e38f, -7.25}, want_f64[] = {1e300, -2.5};
    const double want_bool[] = {1, 0, 1}, want_u64[] = {(double)UINT64_MAX, 0}, want_i64[] = {(double)INT64_MIN, 42};
    const double want_i16[] = {-32768, 32767};
    check_arr(f, "t.arr_u8", GGUF_VAL_UINT8, 3, want_u8);
    check_arr(f, "t.arr_i32", GGUF_VAL_INT32, 4, want_i32);
    check_arr(f, "t.arr_f32", GGUF_VAL_FLOAT32, 5, want_f32);
    check_arr(f, "t.arr_f64", GGUF_VAL_FLOAT64, 2, want_f64);
    check_arr(f, "t.arr_bool", GGUF_VAL_BOOL, 3, want_bool);
    check_arr(f, "t.arr_u64", GGUF_VAL_UINT64, 2, want_u64);
    check_arr(f, "t.arr_i64", GGUF_VAL_INT64, 2, want_i64);
    check_arr(f, "t.arr_i16", GGUF_VAL_INT16, 2, want_i16);
    check_arr(f, "t.arr_empty", GGUF_VAL_UINT32, 0, NULL);
    const gguf_kv *kv = gguf_find(f, "t.arr_str");
    CHECK(kv && kv->type == GGUF_VAL_ARRAY && kv->arr_type == GGUF_VAL_STRING && kv->arr_len == 3);
    if (kv && kv->arr_len == 3)
        for (uint64_t i = 0; i < 3; i++) CHECK_MSG(gguf_str_eq(gguf_arr_str(kv, i), k_arr_str[i]), "arr_str[%d]", (int)i);
    kv = gguf_find(f, "t.arr_str_empty");
    CHECK(kv && kv->arr_type == GGUF_VAL_STRING && kv->arr_len == 0);
    CHECK(gguf_find(f, "t.nope") == NULL);
    CHECK(gguf_find(f, "t.u") == NULL);  // a prefix of a key is not the key

    // Typed getters.
    rc_err err;
    uint32_t v32 = 0;
    CHECK(gguf_get_u32(f, "t.u8", &v32, &err) == 0 && v32 == 200);
    CHECK(gguf_get_u32(f, "t.u16", &v32, &err) == 0 && v32 == 60000);
    CHECK(gguf_get_u32(f, "t.u32", &v32, &err) == 0 && v32 == 4000000000u);
    CHECK(gguf_get_u32(f, "t.i32_pos", &v32, &err) == 0 && v32 == 7);
    CHECK(gguf_get_u32(f, "t.u64_small", &v32, &err) == 0 && v32 == 123);
    v32 = 99;
    CHECK(gguf_get_u32(f, "t.i8", &v32, &err) == -1 && contains(err.msg, "out of range") && v32 == 99);
    CHECK(gguf_get_u32(f, "t.u64_big", &v32, &err) == -1 && contains(err.msg, "out of range"));
    CHECK(gguf_get_u32(f, "t.f32", &v32, &err) == -1 && contains(err.msg, "expected an integer"));
    CHECK(gguf_get_u32(f, "t.str", &v32, &err) == -1 && contains(err.msg, "t.str"));
    CHECK(gguf_get_u32(f, "t.nope", &v32, &err) == -1 && contains(err.msg, "missing metadata key 't.nope'"));
    float vf = 0;
    CHECK(gguf_get_f32(f, "t.f32", &vf, &err) == 0 && vf == 3.25f);
    CHECK(gguf_get_f32(f, "t.f64", &vf, &err) == 0 && vf == 0.1f);
    CHECK(gguf_get_f32(f, "t.u16", &vf, &err) == 0 && vf == 60000.0f);
    CHECK(gguf_get_f32(f, "t.i8", &vf, &err) == 0 && vf == -100.0f);
    CHECK(gguf_get_f32(f, "t.f64_inf", &vf, &err) == -1 && contains(err.msg, "not finite"));
    CHECK(gguf_get_f32(f, "t.str", &vf, &err) == -1 && contains(err.msg, "expected a number"));
    CHECK(gguf_get_f32(f, "t.arr_f32", &vf, &err) == -1);
    int vb = -1;
    CHECK(gguf_get_bool(f, "t.bool_t", &vb, &err) == 0 && vb == 1);
    CHECK(gguf_get_bool(f, "t.bool_f", &vb, &err) == 0 && vb == 0);
    CHECK(gguf_get_bool(f, "t.u8", &vb, &err) == 0 && vb == 1);
    CHECK(gguf_get_bool(f, "t.f32", &vb, &err) == -1 && contains(err.msg, "expected bool"));
    gguf_str s = {0};
    CHECK(gguf_get_str(f, "t.str", &s, &err) == 0 && gguf_str_eq(s, "hello"));
    CHECK(gguf_get_str(f, "t.empty_str", &s, &err) == 0 && s.n_bytes == 0);
    CHECK(gguf_get_str(f, "t.nul_str", &s, &err) == 0 && s.n_bytes == 3 && memcmp(s.ptr, "a\0b", 3) == 0);
    CHECK(gguf_get_str(f, "general.architecture", &s, &err) == 0 && gguf_str_eq(s, "test"));
    CHECK(gguf_get_str(f, "t.u8", &s, &err) == -1 && contains(err.msg, "expected string"));
    CHECK(gguf_get_str(f, "t.arr_str", &s, &err) == -1);
    CHECK(gguf_get_str(f, "t.nope", &s, &err) == -1 && contains(err.msg, "missing"));
    // Optional getters: a missing key leaves the default alone; a bad one is still an error.
    v32 = 77;
    vf = 1.5f;
    vb = 5;
    CHECK(gguf_opt_u32(f, "t.nope", &v32, &err) == 0 && v32 == 77);
    CHECK(gguf_opt_f32(f, "t.nope", &vf, &err) == 0 && vf == 1.5f);
    CHECK(gguf_opt_bool(f, "t.nope", &vb, &err) == 0 && vb == 5);
    CHECK(gguf_opt_u32(f, "t.u16", &v32, &err) == 0 && v32 == 60000);
    CHECK(gguf_opt_u32(f, "t.str", &v32, &err) == -1);
    CHECK(gguf_opt_f32(f, "t.str", &vf, &err) == -1);
    CHECK(gguf_opt_bool(f, "t.str", &vb, &err) == -1);

    // Tensors: shape, type, sizes, bytes, placement.
    for (int i = 0; i < N_TENSORS; i++) {
        const tensor_spec *sp = &k_tensors[i];
        const gguf_tensor *t = &f->tensors[i];
        CHECK_MSG(gguf_str_eq(t->name, sp->name), "tensor %d name", i);
        CHECK(gguf_find_tensor(f, sp->name) == t);
        CHECK_MSG(t->n_dims == sp->n_dims && t->type == sp->type, "%s: dims/type", sp->name);
        int64_t n = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            int64_t want = d < (int)sp->n_dims ? sp->ne[d] : 1;
            CHECK_MSG(t->ne[d] == want, "%s: ne[%d] = %lld, want %lld", sp->name, d, (long long)t->ne[d], (long long)want);
            n *= want;
        }
        size_t nb = spec_bytes(sp);
        CHECK_MSG(t->n_elems == n && t->n_bytes == nb, "%s: %lld elems, %zu bytes", sp->name, (long long)t->n_elems,
                  t->n_bytes);
        CHECK_MSG(t->offset % al == 0, "%s: offset %llu not aligned to %llu", sp->name, (unsigned long long)t->offset,
                  (unsigned long long)al);
        const uint8_t *p = t->data;
        CHECK(p == f->map + f->data_offset + t->offset);
        CHECK((size_t)(p - f->map) % al == 0);
        CHECK(p + t->n_bytes <= f->map + f->n_bytes);
        if (i > 0) CHECK(t->offset >= f->tensors[i - 1].offset + f->tensors[i - 1].n_bytes);  // no overlap
        uint8_t *want = malloc(nb);
        fill_pattern(want, nb, (uint32_t)i);
        CHECK_MSG(memcmp(p, want, nb) == 0, "%s: data bytes differ", sp->name);
        free(want);
    }
    CHECK(gguf_find_tensor(f, "nope") == NULL);
    CHECK(gguf_find_tensor(f, "f32") == NULL);
    CHECK(strcmp(gguf_value_type_name(GGUF_VAL_FLOAT64), "float64") == 0);
    CHECK(strcmp(gguf_value_type_name(99), "unknown") == 0);
}

static void test_roundtrip(uint32_t alignment, uint32_t version) {
    gguf_writer w;
    build_full(&w, alignment, version);
    rc_err err = {{0}};
    char path[600];
    path_in_dir(path, sizeof(path), "full.gguf");
    gguf_writer_layout lay;
    CHECK(gguf_writer_write_file(&w, path, &lay, &err) == 0);
    CHECK(lay.data_offset % (alignment ? alignment : 32) == 0);

    gguf_file f;
    int rc = gguf_open(&f, path, &err);
    CHECK_MSG(rc == 0, "alignment %u: %s", alignment, err.msg);
    if (rc == 0) {
        CHECK(f.data_offset == lay.data_offset && f.n_bytes == lay.total_bytes && f.owns_map);
        CHECK(strcmp(f.path, path) == 0);
        check_full(&f, alignment, version);
        gguf_close(&f);
        CHECK(is_zeroed(&f));
    }
    // The same image from memory.
    uint8_t *img;
    size_t n;
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
    rc = gguf_open_memory(&f, img, n, "mem.gguf", &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0) {
        CHECK(!f.owns_map && f.map == img);
        check_full(&f, alignment, version);
        gguf_close(&f);
    }
    free(img);
    gguf_writer_layout_free(&lay);
    gguf_writer_free(&w);
    unlink(path);
}

// ---- truncation at every length ----

static void test_truncation_everywhere(uint32_t alignment) {
    gguf_writer w;
    build_full(&w, alignment, 3);
    uint8_t *img;
    size_t n;
    gguf_writer_layout lay;
    rc_err err;
    CHECK(gguf_writer_write_memory(&w, &img, &n, &lay, &err) == 0);
    CHECK(lay.header_bytes < lay.data_offset || lay.header_bytes == lay.data_offset);
    CHECK(lay.data_end <= lay.total_bytes && lay.total_bytes == n);

    // Every prefix shorter than the end of the last tensor's bytes is invalid;
    // from there on (the rest is padding) the file is complete.
    int n_bad_accept = 0, n_bad_msg = 0, n_bad_reject = 0;
    for (size_t len = 0; len <= n; len++) {
        gguf_file f;
        int rc = open_copy(&f, img, len, &err);
        if (len < lay.data_end) {
            if (rc != -1 || !is_zeroed(&f)) {
                n_bad_accept++;
                fprintf(stderr, "truncated at %zu of %zu: accepted\n", len, n);
            } else if (strncmp(err.msg, "mem.gguf: ", 10) != 0 ||
                       !(len < 4 ? contains(err.msg, "bad magic")
                                 : contains(err.msg, "truncated") || contains(err.msg, "exceeds the file"))) {
                n_bad_msg++;
                fprintf(stderr, "truncated at %zu: unexpected message '%s'\n", len, err.msg);
            }
        } else if (rc != 0) {
            n_bad_reject++;
            fprintf(stderr, "complete at %zu of %zu (data ends at %zu): rejected: %s\n", len, n, lay.data_end, err.msg);
        }
    }
    CHECK_MSG(n_bad_accept == 0, "%d truncated images accepted", n_bad_accept);
    CHECK_MSG(n_bad_msg == 0, "%d truncated images with an unexpected message", n_bad_msg);
    CHECK_MSG(n_bad_reject == 0, "%d complete images rejected", n_bad_reject);

    // A few of the same through gguf_open (the file path has its own checks for tiny files).
    const size_t lens[] = {0, 3, 7, 8, 23, lay.header_bytes / 2, lay.header_bytes, lay.data_offset, lay.data_end - 1};
    char path[600];
    path_in_dir(path, sizeof(path), "trunc.gguf");
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        FILE *fp = fopen(path, "wb");
        if (lens[i]) fwrite(img, 1, lens[i], fp);
        fclose(fp);
        gguf_file f;
        err.msg[0] = 0;
        int rc = gguf_open(&f, path, &err);
        CHECK_MSG(rc == -1 && is_zeroed(&f) && strncmp(err.msg, path, strlen(path)) == 0,
                  "file truncated at %zu: rc=%d '%s'", lens[i], rc, err.msg);
        if (rc == 0) gguf_close(&f);
    }
    unlink(path);
    free(img);
    gguf_writer_layout_free(&lay);
    gguf_writer_free(&w);
}

// ---- malformed headers, metadata and tensor infos ----

// A small valid file: two kvs and two F32 tensors.
static void build_small(gguf_writer *w) {
    gguf_writer_init(w);
    gguf_writer_add_str(w, "general.architecture", "test");
    gguf_writer_add_u32(w, "test.n", 3);
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[4] = {-1, -2, -3, -4};
    gguf_writer_add_tensor(w, "a", 2, (const int64_t[]){4, 2}, GGML_TYPE_F32, a, sizeof(a));
    gguf_writer_add_tensor(w, "b", 1, (const int64_t[]){4}, GGML_TYPE_F32, b, sizeof(b));
}

static void test_small_is_valid(void) {
    gguf_writer w;
    build_small(&w);
    uint8_t *img;
    size_t n;
    rc_err err;
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
    gguf_file f;
    CHECK(open_copy(&f, img, n, &err) == 0);
    free(img);
    gguf_writer_free(&w);

    // Minimal files: no metadata and no tensors, and metadata only.
    gguf_writer_init(&w);
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0 && n == 32);  // padded to the alignment
    CHECK(open_copy(&f, img, n, &err) == 0);
    CHECK(open_copy(&f, img, 24, &err) == 0);  // padding is optional without tensors
    free(img);
    gguf_writer_add_str(&w, "k", "v");
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
    CHECK(open_copy(&f, img, n, &err) == 0);
    free(img);
    gguf_writer_free(&w);
}

static void test_bad_header(void) {
    gguf_writer w;
    build_small(&w);
    memcpy(w.magic, "GGUX", 4);
    EXPECT_REJECT(&w, "bad magic");
    memcpy(w.magic, "FUGG", 4);  // byte-swapped magic
    EXPECT_REJECT(&w, "bad magic");
    memcpy(w.magic, "GGUF", 4);
    w.version = 1;
    EXPECT_REJECT(&w, "unsupported GGUF version 1");
    w.version = 4;
    EXPECT_REJECT(&w, "unsupported GGUF version 4");
    w.version = 0x03000000;  // v3 written big-endian
    EXPECT_REJECT(&w, "unsupported GGUF version");
    w.version = 2;  // v2 has the same layout as v3
    uint8_t *img;
    size_t n;
    rc_err err;
    gguf_file f;
    CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0 && open_copy(&f, img, n, &err) == 0);
    free(img);
    w.version = 3;

    // Implausible counts must fail before anything is allocated for them.
    w.n_kv_override = (uint64_t)1 << 60;
    EXPECT_REJECT(&w, "implausible");
    w.n_kv_override = UINT64_MAX - 1;
    EXPECT_REJECT(&w, "implausible");
    w.n_kv_override = GGUF_WRITER_NO_OVERRIDE;
    w.n_tensors_override = (uint64_t)1 << 60;
    EXPECT_REJECT(&w, "implausible");
    // Plausible counts that the file cannot hold.
    w.n_tensors_override = 100000;
    EXPECT_REJECT(&w, NULL);
    w.n_tensors_override = GGUF_WRITER_NO_OVERRIDE;
    w.n_kv_override = 100000;
    EXPECT_REJECT(&w, NULL);
    gguf_writer_free(&w);
}

static void test_bad_metadata(void) {
    uint8_t raw[256];
    size_t k;
    gguf_writer w;

    // Key length past the end of the file.
    gguf_writer_init(&w);
    k = gguf_raw_put_u64(raw, (uint64_t)1 << 62);
    gguf_writer_add_raw_kv(&w, raw, k);
    EXPECT_REJECT(&w, "truncated");
    gguf_writer_free(&w);

    gguf_writer_init(&w);
    k = gguf_raw_put_u64(raw, UINT64_MAX);
    gguf_writer_add_raw_kv(&w, raw, k);
    EXPECT_REJECT(&w, "truncated");
    gguf_writer_free(&w);

    // String value length past the end: far past, and exactly one byte past.
    gguf_writer_init(&w);
    k = gguf_raw_put_str(raw, "k");
    k += gguf_raw_put_u32(raw + k, GGUF_VAL_STRING);
    k += gguf_raw_put_u64(raw + k, UINT64_MAX);
    gguf_writer_add_raw_kv(&w, raw, k);
    EXPECT_REJECT(&w, "truncated");
    gguf_writer_free(&w);

    for (int extra = -1; extra <= 1; extra++) {  // length = bytes present + extra
        gguf_writer_init(&w);
        k = gguf_raw_put_str(raw, "k");
        k += gguf_raw_put_u32(raw + k, GGUF_VAL_STRING);
        k += gguf_raw_put_u64(raw + k, (uint64_t)(10 + extra));
        memcpy(raw + k, "0123456789", 10);
        gguf_writer_add_raw_kv(&w, raw, k + 10);
        w.truncate_at = 24 + k + 10;  // no alignment padding after the string
        if (extra > 0) {
            EXPECT_REJECT(&w, "truncated");
        } else {
            // With extra = -1 one byte is left over, which is fine: no tensors follow.
            uint8_t *img;
            size_t n;
            rc_err err;
            gguf_file f;
            CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0);
            CHECK_MSG(open_copy(&f, img, n, &err) == 0, "extra %d: %s", extra, err.msg);
            free(img);
        }
        gguf_writer_free(&w);
    }

    // Unknown value types, scalar and array element.
    gguf_writer_init(&w);
    k = gguf_raw_put_str(raw, "k");
    k += gguf_raw_put_u32(raw + k, GGUF_VAL_COUNT);
    k += gguf_raw_put_u32(raw + k, 0);
    gguf_writer_add_raw_kv(&w, raw, k);
    EXPECT_REJECT(&w, "unknown value type 13");
    gguf_writer_free(&w);

    const uint32_t bad_elem[] = {GGUF_VAL_ARRAY, GGUF_VAL_COUNT, 99, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_elem) / sizeof(bad_elem[0]); i++) {
        gguf_writer_init(&w);
        k = gguf_raw_put_str(raw, "nested");
        k += gguf_raw_put_u32(raw + k, GGUF_VAL_ARRAY);
        k += gguf_raw_put_u32(raw + k, bad_elem[i]);
        k += gguf_raw_put_u64(raw + k, 1);
        k += gguf_raw_put_u64(raw + k, 0);
        gguf_writer_add_raw_kv(&w, raw, k);
        EXPECT_REJECT(&w, "unsupported array element type");
        gguf_writer_free(&w);
    }

    // Huge array counts: numeric (2^60 * 4 bytes wraps a 64-bit size) and string.
    const uint32_t elem[] = {GGUF_VAL_UINT8, GGUF_VAL_UINT32, GGUF_VAL_FLOAT64, GGUF_VAL_STRING};
    const uint64_t counts[] = {(uint64_t)1 << 60, (uint64_t)1 << 62, UINT64_MAX, 1000};
    for (size_t i = 0; i < sizeof(elem) / sizeof(elem[0]); i++)
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
            gguf_writer_init(&w);
            k = gguf_raw_put_str(raw, "arr");
            k += gguf_raw_put_u32(raw + k, GGUF_VAL_ARRAY);
            k += gguf_raw_put_u32(raw + k, elem[i]);
            k += gguf_raw_put_u64(raw + k, counts[c]);
            k += gguf_raw_put_u64(raw + k, 1);  // a few bytes of "elements"
            gguf_writer_add_raw_kv(&w, raw, k);
            EXPECT_REJECT(&w, NULL);
            gguf_writer_free(&w);
        }

    // A string array whose second element's length runs past the end.
    gguf_writer_init(&w);
    k = gguf_raw_put_str(raw, "arr");
    k += gguf_raw_put_u32(raw + k, GGUF_VAL_ARRAY);
    k += gguf_raw_put_u32(raw + k, GGUF_VAL_STRING);
    k += gguf_raw_put_u64(raw + k, 2);
    k += gguf_raw_put_str(raw + k, "ok");
    k += gguf_raw_put_u64(raw + k, 1000);
    gguf_writer_add_raw_kv(&w, raw, k);
    EXPECT_REJECT(&w, "truncated");
    gguf_writer_free(&w);

    // general.alignment: wrong type, zero, not a power of two, below 8 (the
    // kernels' typed reads need aligned data).
    gguf_writer_init(&w);
    gguf_writer_add_u64(&w, "general.alignment", 64);
    EXPECT_REJECT(&w, "general.alignment must be uint32");
    gguf_writer_free(&w);
    const uint32_t bad_align[] = {0, 48, 3, 0x80000001u, 1, 2, 4};
    for (size_t i = 0; i < sizeof(bad_align) / sizeof(bad_align[0]); i++) {
        gguf_writer_init(&w);
        gguf_writer_add_u32(&w, "general.alignment", bad_align[i]);
        EXPECT_REJECT(&w, "not a power of two");
        gguf_writer_free(&w);
    }
}

static void test_bad_tensors(void) {
    gguf_writer w;
    float data[64] = {0};

    // Offsets: past the end, wrapping, misaligned, overlapping the end.
    build_small(&w);
    w.tensors[1].offset_override = (uint64_t)1 << 40;
    EXPECT_REJECT(&w, "truncated tensor data");
    w.tensors[1].offset_override = UINT64_MAX & ~(uint64_t)31;  // offset + size wraps around
    EXPECT_REJECT(&w, "truncated tensor data");
    w.tensors[1].offset_override = 1;
    EXPECT_REJECT(&w, "not aligned");
    w.tensors[1].offset_override = 48;
    EXPECT_REJECT(&w, "not aligned");
    w.tensors[1].offset_override = 64;  // aligned, but 16 bytes at 64 run past the 64-byte data section
    EXPECT_REJECT(&w, "truncated tensor data");
    w.tensors[1].offset_override = 0;  // aliasing another tensor's bytes is not an error either
    {
        uint8_t *img;
        size_t n;
        rc_err err;
        gguf_file f;
        CHECK(gguf_writer_write_memory(&w, &img, &n, NULL, &err) == 0 && open_copy(&f, img, n, &err) == 0);
        free(img);
    }
    gguf_writer_free(&w);

    // Offsets must honour a custom alignment.
    gguf_writer_init(&w);
    gguf_writer_add_u32(&w, "general.alignment", 64);
    gguf_writer_add_tensor(&w, "a", 1, (const int64_t[]){4}, GGML_TYPE_F32, data, 16);
    gguf_writer_add_tensor(&w, "b", 1, (const int64_t[]){4}, GGML_TYPE_F32, data, 16);
    w.tensors[1].offset_override = 32;
    EXPECT_REJECT(&w, "not aligned to 64");
    gguf_writer_free(&w);

    // Tensor data cut short by one byte.
    build_small(&w);
    {
        uint8_t *img;
        size_t n;
        gguf_writer_layout lay;
        rc_err err;
        gguf_file f;
        CHECK(gguf_writer_write_memory(&w, &img, &n, &lay, &err) == 0);
        CHECK(open_copy(&f, img, lay.data_end - 1, &err) == -1 && contains(err.msg, "truncated tensor data"));
        CHECK(open_copy(&f, img, lay.data_end, &err) == 0);
        free(img);
        gguf_writer_layout_free(&lay);
    }
    gguf_writer_free(&w);

    struct {
        uint32_t n_dims;
        int64_t ne[5];
        uint32_t type;
        const char *want;
    } cases[] = {
        {1, {4}, 99, "unknown tensor type 99"},
        {1, {4}, 4, "unknown tensor type 4"},  // removed Q4_2
        {1, {4}, GGML_TYPE_COUNT, "unknown tensor type"},
        {1, {4}, UINT32_MAX, "unknown tensor type 4294967295"},
        {1, {0}, GGML_TYPE_F32, "invalid dimension 0"},
        {2, {4, 0}, GGML_TYPE_F32, "invalid dimension 0"},
        {5, {1, 1, 1, 1, 1}, GGML_TYPE_F32, "5 dimensions"},
        {0, {0}, GGML_TYPE_F32, "0 dimensions"},
        {2, {(int64_t)1 << 32, (int64_t)1 << 32}, GGML_TYPE_F32, "invalid dimension"},  // 2^64 elements
        {1, {-1}, GGML_TYPE_F32, "invalid dimension"},  // written as 2^64 - 1
        {1, {(int64_t)1 << 62}, GGML_TYPE_F32, "impossibly large"},  // 2^64 bytes
        {1, {33}, GGML_TYPE_Q4_0, "not a multiple"},
        {2, {16, 2}, GGML_TYPE_Q8_0, "not a multiple"},
        {1, {100}, GGML_TYPE_Q5_K, "not a multiple"},
        // K-quants need whole super-blocks: SmolLM2's 576-wide rows cannot be Q4_K / Q6_K.
        {2, {576, 4}, GGML_TYPE_Q4_K, "tensor 'bad': row length 576 is not a multiple of the Q4_K block size 256"},
        {2, {320, 2}, GGML_TYPE_Q6_K, "row length 320 is not a multiple of the Q6_K block size 256"},
        {1, {(int64_t)1 << 40}, GGML_TYPE_F32, "truncated tensor data"},  // valid shape, no data
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        build_small(&w);
        gguf_writer_add_tensor(&w, "bad", cases[i].n_dims, cases[i].ne, cases[i].type, data, 16);
        expect_reject_at(&w, cases[i].want, __LINE__, (int)i);
        gguf_writer_free(&w);
    }

    // Duplicate tensor names.
    build_small(&w);
    gguf_writer_add_tensor(&w, "a", 1, (const int64_t[]){4}, GGML_TYPE_F32, data, 16);
    EXPECT_REJECT(&w, "duplicate tensor name 'a'");
    gguf_writer_free(&w);

    // Tensor name length past the end.
    build_small(&w);
    {
        uint8_t raw[8];
        gguf_raw_put_u64(raw, (uint64_t)1 << 62);
        // Splice: one more tensor whose info is just a huge name length. The
        // writer has no knob for that, so cut the image right after it.
        uint8_t *img;
        size_t n;
        gguf_writer_layout lay;
        rc_err err;
        w.n_tensors_override = 3;
        CHECK(gguf_writer_write_memory(&w, &img, &n, &lay, &err) == 0);
        memcpy(img + lay.header_bytes, raw, 8);
        gguf_file f;
        CHECK(open_copy(&f, img, lay.header_bytes + 8, &err) == -1 && contains(err.msg, "truncated"));
        free(img);
        gguf_writer_layout_free(&lay);
    }
    gguf_writer_free(&w);
}

static void test_open_errors(void) {
    gguf_file f;
    rc_err err;
    CHECK(gguf_open(&f, "/nonexistent/dir/model.gguf", &err) == -1 && contains(err.msg, "cannot open") &&
          contains(err.msg, "/nonexistent/dir/model.gguf") && is_zeroed(&f));
    CHECK(gguf_open(&f, g_dir, &err) == -1 && contains(err.msg, "not a regular file") && is_zeroed(&f));
    char path[600];
    path_in_dir(path, sizeof(path), "text.gguf");
    FILE *fp = fopen(path, "wb");
    fputs("this is not a gguf file, just some text\n", fp);
    fclose(fp);
    CHECK(gguf_open(&f, path, &err) == -1 && contains(err.msg, "bad magic") && is_zeroed(&f));
    unlink(path);
    gguf_close(&f);  // closing a zeroed file is harmless
    CHECK(is_zeroed(&f));
}

// ---- random corruption: never crash, never expose an out-of-bounds view ----

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rand_u32(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545f4914f6cdd1dull) >> 32);
}

static void test_corruption(void) {
    gguf_writer w;
    build_full(&w, 0, 3);
    uint8_t *img;
    size_t n;
    gguf_writer_layout lay;
    rc_err err;
    CHECK(gguf_writer_write_memory(&w, &img, &n, &lay, &err) == 0);
    int n_accepted = 0, n_bad_view = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, img, n);
        int n_flips = 1 + (int)(rand_u32() % 4);
        for (int i = 0; i < n_flips; i++) {
            // Mostly the header area, where the structure is.
            size_t at = rand_u32() % (iter % 4 ? lay.header_bytes : n);
            copy[at] = (uint8_t)(rand_u32() % 3 == 0 ? 0xff : rand_u32());
        }
        size_t len = iter % 5 == 0 ? rand_u32() % n : n;
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, copy, len);
        gguf_file f;
        if (gguf_open_memory(&f, exact, len, "fuzz", &err) == 0) {
            n_accepted++;
            for (uint64_t i = 0; i < f.n_tensors; i++) {
                const uint8_t *p = f.tensors[i].data;
                if (p < exact + f.data_offset || f.tensors[i].n_bytes > (size_t)(exact + len - p)) n_bad_view++;
            }
            for (uint64_t i = 0; i < f.n_kv; i++) {
                const gguf_kv *kv = &f.kvs[i];
                if (kv->type == GGUF_VAL_ARRAY && kv->arr_type == GGUF_VAL_STRING)
                    for (uint64_t j = 0; j < kv->arr_len; j++) {
                        gguf_str s = gguf_arr_str(kv, j);
                        if ((const uint8_t *)s.ptr < exact || s.n_bytes > (size_t)(exact + len - (const uint8_t *)s.ptr))
                            n_bad_view++;
                    }
                if (kv->type == GGUF_VAL_ARRAY && kv->arr_type != GGUF_VAL_STRING && kv->arr_len > 0)
                    (void)gguf_arr_num(kv, kv->arr_len - 1);  // ASan checks the last element is inside
            }
            gguf_close(&f);
        } else {
            CHECK(is_zeroed(&f) && strncmp(err.msg, "fuzz: ", 6) == 0);
        }
        free(exact);
        free(copy);
    }
    CHECK_MSG(n_bad_view == 0, "%d out-of-bounds views in accepted corrupt files", n_bad_view);
    printf("corruption: %d of 3000 corrupted images accepted (values changed, structure intact)\n", n_accepted);
    free(img);
    gguf_writer_layout_free(&lay);
    gguf_writer_free(&w);
}

// ---- the tiny synthetic models are valid GGUF with the expected contents ----

static void test_tiny_model(void) {
    char path[600], path_q[600];
    path_in_dir(path, sizeof(path), "tiny.gguf");
    path_in_dir(path_q, sizeof(path_q), "tiny_q.gguf");
    rc_err err;
    tiny_model_params p;
    tiny_model_default(&p);
    p.arch = "qwen2";
    p.rope_scaling = TINY_ROPE_LLAMA3;
    p.rope_factor = 8.0f;
    p.rope_orig_ctx = 64;
    CHECK_MSG(tiny_model_write(path, &p, &err) == 0, "%s", err.msg);
    tiny_model_params pq = p;
    pq.type_embd = GGML_TYPE_Q8_0;
    pq.type_attn = GGML_TYPE_Q4_0;
    pq.type_ffn = GGML_TYPE_Q4_1;
    pq.type_output = GGML_TYPE_BF16;
    CHECK_MSG(tiny_model_write(path_q, &pq, &err) == 0, "%s", err.msg);

    gguf_file f, fq;
    if (gguf_open(&f, path, &err) != 0 || gguf_open(&fq, path_q, &err) != 0) {
        CHECK_MSG(0, "tiny model does not open: %s", err.msg);
        return;
    }
    gguf_str s;
    uint32_t v = 0;
    CHECK(gguf_get_str(&f, "general.architecture", &s, &err) == 0 && gguf_str_eq(s, "qwen2"));
    CHECK(gguf_get_u32(&f, "qwen2.block_count", &v, &err) == 0 && v == 2);
    CHECK(gguf_get_u32(&f, "qwen2.embedding_length", &v, &err) == 0 && v == 64);
    CHECK(gguf_get_u32(&f, "qwen2.attention.head_count_kv", &v, &err) == 0 && v == 2);
    CHECK(gguf_get_u32(&f, "qwen2.rope.dimension_count", &v, &err) == 0 && v == 16);
    CHECK(gguf_find(&f, "qwen2.attention.key_length") == NULL);  // head_dim not overridden
    CHECK(gguf_find(&f, "qwen2.rope.scaling.type") == NULL);     // llama3 scaling is the tensor only
    CHECK(gguf_get_str(&f, "tokenizer.ggml.model", &s, &err) == 0 && gguf_str_eq(s, "gpt2"));
    const gguf_kv *tok = gguf_find(&f, "tokenizer.ggml.tokens");
    const gguf_kv *types = gguf_find(&f, "tokenizer.ggml.token_type");
    const gguf_kv *merges = gguf_find(&f, "tokenizer.ggml.merges");
    CHECK(tok && tok->arr_type == GGUF_VAL_STRING && tok->arr_len == 300);
    CHECK(types && types->arr_type == GGUF_VAL_INT32 && types->arr_len == 300);
    CHECK(merges && merges->arr_len == TINY_MODEL_N_MERGES);
    if (tok && types && tok->arr_len == 300 && types->arr_len == 300) {
        CHECK(gguf_str_eq(gguf_arr_str(tok, 0), "!"));             // GPT-2 order: printable bytes first
        CHECK(gguf_str_eq(gguf_arr_str(tok, 188), "\xc4\x80"));    // byte 0 -> U+0100
        CHECK(gguf_str_eq(gguf_arr_str(tok, 188 + 32), "\xc4\xa0"));  // space -> U+0120 "Ġ"
        CHECK(gguf_str_eq(gguf_arr_str(tok, 256), "\xc4\xa0t"));
        CHECK(gguf_str_eq(gguf_arr_str(tok, 299), "<|endoftext|>") && gguf_arr_num(types, 299) == 3);
        CHECK(gguf_arr_num(types, 0) == 1 && gguf_arr_num(types, 256) == 1);
        // Every byte appears exactly once among the first 256 tokens.
        int seen[256] = {0}, ok = 1;
        for (int b = 0; b < 256; b++) {
            char t[3];
            int len = tiny_model_byte_token((uint8_t)b, t);
            for (int id = 0; id < 256; id++) {
                gguf_str ts = gguf_arr_str(tok, (uint64_t)id);
                if (ts.n_bytes == (uint64_t)len && memcmp(ts.ptr, t, (size_t)len) == 0) seen[b]++;
            }
            ok &= seen[b] == 1;
        }
        CHECK(ok);
    }
    CHECK(gguf_get_u32(&f, "tokenizer.ggml.eos_token_id", &v, &err) == 0 && v == 299);
    if (merges && merges->arr_len > 6) CHECK(gguf_str_eq(gguf_arr_str(merges, 6), "\xc4\xa0t he"));

    const gguf_tensor *t = gguf_find_tensor(&f, "blk.1.attn_k.bias");
    CHECK(t && t->n_dims == 1 && t->ne[0] == 32 && t->type == GGML_TYPE_F32);
    t = gguf_find_tensor(&f, "blk.0.attn_q.weight");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 64);
    t = gguf_find_tensor(&f, "blk.0.attn_k.weight");
    CHECK(t && t->ne[0] == 64 && t->ne[1] == 32);
    t = gguf_find_tensor(&f, "blk.1.ffn_down.weight");
    CHECK(t && t->ne[0] == 96 && t->ne[1] == 64);
    t = gguf_find_tensor(&f, "token_embd.weight");
    CHECK(t && t->ne[0] == 64 && t->ne[1] == 300);
    CHECK(gguf_find_tensor(&f, "output.weight") != NULL);
    CHECK(gguf_find_tensor(&f, "blk.2.attn_q.weight") == NULL);
    t = gguf_find_tensor(&f, "rope_freqs.weight");
    CHECK(t && t->n_dims == 1 && t->ne[0] == 8 && t->type == GGML_TYPE_F32);
    if (t && t->ne[0] == 8) {
        // Fast pairs keep factor 1, the slowest gets the full factor, monotone between.
        const float *rf = t->data;
        CHECK(rf[0] == 1.0f && rf[7] == 8.0f);
        for (int i = 1; i < 8; i++) CHECK(rf[i] >= rf[i - 1]);
    }
    t = gguf_find_tensor(&fq, "blk.0.ffn_up.weight");
    CHECK(t && t->type == GGML_TYPE_Q4_1);
    t = gguf_find_tensor(&fq, "blk.0.attn_norm.weight");
    CHECK(t && t->type == GGML_TYPE_F32);
    t = gguf_find_tensor(&fq, "blk.0.attn_q.bias");
    CHECK(t && t->type == GGML_TYPE_F32);

    // Weight scale: std 1/sqrt(fan_in); and the quantized twin holds the same
    // floats up to its quantization error.
    const gguf_tensor *a = gguf_find_tensor(&f, "blk.0.attn_q.weight"), *aq = gguf_find_tensor(&fq, "blk.0.attn_q.weight");
    if (a && aq && a->type == GGML_TYPE_F32 && aq->type == GGML_TYPE_Q4_0) {
        float *x = malloc((size_t)a->n_elems * sizeof(float));
        dequantize_row(aq->type, aq->data, x, aq->n_elems);
        const float *ref = a->data;
        double ss = 0, err2 = 0;
        for (int64_t i = 0; i < a->n_elems; i++) {
            ss += (double)ref[i] * ref[i];
            err2 += ((double)x[i] - ref[i]) * ((double)x[i] - ref[i]);
        }
        double std = sqrt(ss / (double)a->n_elems);
        CHECK_MSG(fabs(std - 0.125) < 0.0125, "attn_q std %g, want 0.125", std);
        CHECK_MSG(err2 / ss < 0.02, "Q4_0 twin relative squared error %g", err2 / ss);
        free(x);
    }
    gguf_close(&f);
    gguf_close(&fq);

    // Tied output, head_dim override, linear scaling, custom alignment, llama.
    tiny_model_default(&p);
    p.tied_output = 1;
    p.head_dim = 32;
    p.rope_scaling = TINY_ROPE_LINEAR;
    p.rope_factor = 4.0f;
    p.alignment = 64;
    p.type_attn = GGML_TYPE_Q8_0;
    CHECK_MSG(tiny_model_write(path, &p, &err) == 0, "%s", err.msg);
    if (gguf_open(&f, path, &err) == 0) {
        float fac = 0;
        CHECK(f.alignment == 64);
        CHECK(gguf_find_tensor(&f, "output.weight") == NULL);
        CHECK(gguf_get_u32(&f, "llama.attention.key_length", &v, &err) == 0 && v == 32);
        CHECK(gguf_get_u32(&f, "llama.rope.dimension_count", &v, &err) == 0 && v == 32);
        CHECK(gguf_get_str(&f, "llama.rope.scaling.type", &s, &err) == 0 && gguf_str_eq(s, "linear"));
        CHECK(gguf_get_f32(&f, "llama.rope.scaling.factor", &fac, &err) == 0 && fac == 4.0f);
        t = gguf_find_tensor(&f, "blk.0.attn_output.weight");
        CHECK(t && t->ne[0] == 128 && t->ne[1] == 64 && t->type == GGML_TYPE_Q8_0);
        gguf_close(&f);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }

    // Shapes a quantized type cannot hold are refused, not silently written.
    tiny_model_default(&p);
    p.d_ff = 40;
    p.type_ffn = GGML_TYPE_Q4_0;
    CHECK(tiny_model_write(path, &p, &err) == -1 && contains(err.msg, "ffn_down") && contains(err.msg, "Q4_0"));
    tiny_model_default(&p);
    p.n_vocab = 100;
    CHECK(tiny_model_write(path, &p, &err) == -1 && contains(err.msg, "n_vocab"));
    unlink(path);
    unlink(path_q);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/test_gguf.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", g_dir, strerror(errno));
        return 1;
    }
    test_roundtrip(0, 3);
    test_roundtrip(0, 2);
    test_roundtrip(64, 3);
    test_roundtrip(256, 3);
    test_roundtrip(8, 3);
    test_truncation_everywhere(0);
    test_truncation_everywhere(64);
    test_small_is_valid();
    test_bad_header();
    test_bad_metadata();
    test_bad_tensors();
    test_open_errors();
    test_corruption();
    test_tiny_model();
    rmdir(g_dir);
    TEST_MAIN_END();
}
