// The model fingerprint (src/model/fingerprint.h) against FNV-1a written out
// over the parts it documents, on an image larger than the two hashed ends
// of its data; and the head-scores index lookup (src/policy/head_index.h):
// found, absent, no index, malformed index.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "model/fingerprint.h"
#include "policy/head_index.h"

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

// What the header documents, written out independently.
static uint64_t reference(const uint8_t *map, size_t n, size_t data) {
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint64_t h = fnv(0xcbf29ce484222325ull, size_le, 8);
    h = fnv(h, map, data);
    const size_t M = 1u << 20, nd = n - data;
    if (nd <= 2 * M) return fnv(h, map + data, nd);
    h = fnv(h, map + data, M);
    return fnv(h, map + n - M, M);
}

static void test_fingerprint(void) {
    const size_t n = (5u << 20) + 123, data = 4096;
    uint8_t *buf = malloc(n);
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(s >> 56);
    }
    gguf_file f = {.map = buf, .n_bytes = n, .data_offset = data};
    const uint64_t fp = model_fingerprint(&f);
    CHECK(fp == reference(buf, n, data));
    char hex[17];
    model_fingerprint_hex(&f, hex);
    CHECK(strlen(hex) == 16 && strtoull(hex, NULL, 16) == fp);
    // Every hashed part changes it; the middle of a large data section does not (documented).
    const size_t probes[] = {0, data - 1, data, data + (1u << 20) - 1, n - (1u << 20), n - 1};
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        buf[probes[i]] ^= 1;
        CHECK_MSG(model_fingerprint(&f) != fp, "a change at byte %zu does not change the fingerprint", probes[i]);
        buf[probes[i]] ^= 1;
    }
    buf[n / 2] ^= 1;
    CHECK(model_fingerprint(&f) == fp);
    buf[n / 2] ^= 1;
    f.n_bytes = n - 1;  // the size is part of it
    CHECK(model_fingerprint(&f) == reference(buf, n - 1, data) && model_fingerprint(&f) != fp);
    // A small file: the whole data section.
    f.n_bytes = 100000;
    const uint64_t small = model_fingerprint(&f);
    CHECK(small == reference(buf, 100000, data));
    buf[50000] ^= 1;  // the middle of a short data section is hashed
    CHECK(model_fingerprint(&f) != small);
    buf[50000] ^= 1;
    free(buf);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL);
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
}

static void test_index(void) {
    char dir[] = "/tmp/recall_head_index_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], out[512];
    rc_err err = {{0}};
    CHECK(head_index_find(dir, "0123456789abcdef", out, sizeof(out), &err) == 0);  // no index: nothing shipped
    snprintf(path, sizeof(path), "%s/index.json", dir);
    write_text(path, "{\"format\":\"recall-head-index-1\",\"models\":[{\"fingerprint\":\"aaaaaaaaaaaaaaaa\",\"scores\":\"a.json\"},"
                     "{\"fingerprint\":\"0123456789abcdef\",\"scores\":\"sub/b.json\",\"file\":\"b.gguf\"}]}");
    CHECK(head_index_find(dir, "0123456789abcdef", out, sizeof(out), &err) == 1);
    char want[512];
    snprintf(want, sizeof(want), "%s/sub/b.json", dir);
    CHECK_MSG(!strcmp(out, want), "%s", out);
    CHECK(head_index_find(dir, "aaaaaaaaaaaaaaaa", out, sizeof(out), &err) == 1);
    CHECK(head_index_find(dir, "0123456789abcdee", out, sizeof(out), &err) == 0);
    CHECK(head_index_find(dir, "0123456789abcdef", out, 8, &err) == -1);  // does not fit
    write_text(path, "{\"format\":\"something-else\",\"models\":[]}");
    CHECK(head_index_find(dir, "0123456789abcdef", out, sizeof(out), &err) == -1 && strstr(err.msg, "index.json"));
    write_text(path, "{\"format\":\"recall-head-index-1\",\"models\":[{\"fingerprint\":1,\"scores\":\"a.json\"}]}");
    CHECK(head_index_find(dir, "0123456789abcdef", out, sizeof(out), &err) == -1 && strstr(err.msg, "fingerprint"));
    write_text(path, "not json");
    CHECK(head_index_find(dir, "0123456789abcdef", out, sizeof(out), &err) == -1);
    remove(path);
    rmdir(dir);
}

int main(void) {
    test_fingerprint();
    test_index();
    TEST_MAIN_END();
}
