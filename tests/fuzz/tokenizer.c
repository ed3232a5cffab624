// Encode/decode on the real model's vocabulary (SmolLM2, byte-level BPE).
// Property (README "Fuzzing"): valid UTF-8, encoded without parsing special
// tokens, decodes to itself, except the bytes the vocabulary cannot encode
// (no single-byte token: 21 of 256 in SmolLM2), which are dropped as
// llama.cpp drops them; where that breaks a multi-byte character, its other
// bytes decode to U+FFFD. Any input: encoding succeeds, every id is in range
// and the decoded text is valid UTF-8.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tiny_model.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

static gguf_file g_file;
static tokenizer *g_tok;
static size_t g_cap;
static unsigned char g_droppable[256];  // bytes with no single-byte token

// RFC 3629 UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    rc_err err;
    const char *path = fuzz_model_path();
    if (gguf_open(&g_file, path, &err) || tokenizer_init(&g_tok, &g_file, &err)) {
        fprintf(stderr, "fuzz_tokenizer: needs the real model: %s\n", err.msg);
        exit(77);
    }
    g_cap = tokenizer_decode_cap(g_tok);
    // A byte is droppable when no token is exactly its byte-level symbol.
    const gguf_kv *toks = gguf_find(&g_file, "tokenizer.ggml.tokens");
    for (int b = 0; b < 256; b++) {
        char sym[3];
        const int len = tiny_model_byte_token((uint8_t)b, sym);  // GPT-2's byte-to-unicode map
        int found = 0;
        for (uint64_t i = 0; i < toks->arr_len && !found; i++) {
            gguf_str s = gguf_arr_str(toks, i);
            found = s.n_bytes == (uint64_t)len && memcmp(s.ptr, sym, (size_t)len) == 0;
        }
        g_droppable[b] = !found;
    }
    int n_drop = 0;
    for (int b = 0; b < 256; b++) n_drop += g_droppable[b];
    fprintf(stderr, "fuzz_tokenizer: %s: %d of 256 bytes have no token\n", path, n_drop);
    return 0;
}

// Length of the valid UTF-8 character at s, or 0.
static size_t char_len(const uint8_t *s, size_t avail) {
    const size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : 4;
    return len <= avail && utf8_valid(s, len) ? len : 0;
}

// Keeps the valid characters other than U+FFFD.
static size_t strip(const uint8_t *s, size_t n, uint8_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        const size_t len = char_len(s + i, n - i);
        if (!len) {
            i++;
            continue;
        }
        if (!(len == 3 && memcmp(s + i, "\xEF\xBF\xBD", 3) == 0)) memcpy(out + m, s + i, len), m += len;
        i += len;
    }
    return m;
}

// The round trip of valid UTF-8 `in`: the output is `in` without the
// droppable bytes; where dropping one broke a multi-byte character, its
// other bytes may come out as U+FFFD (compared with every U+FFFD removed).
static int round_trip_ok(const uint8_t *in, size_t n_in, const char *out, size_t n_out) {
    uint8_t *kept = malloc(n_in + 1), *a = malloc(n_in + 1), *b = malloc(n_out + 1);
    size_t n_kept = 0;
    for (size_t i = 0; i < n_in; i++)
        if (!g_droppable[in[i]]) kept[n_kept++] = in[i];
    int ok;
    if (utf8_valid(kept, n_kept)) {
        ok = n_kept == n_out && memcmp(kept, out, n_out) == 0;
    } else {
        const size_t na = strip(kept, n_kept, a), nb = strip((const uint8_t *)out, n_out, b);
        ok = na == nb && memcmp(a, b, na) == 0;
    }
    free(kept), free(a), free(b);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rc_err err;
    for (int parse_special = 0; parse_special < 2; parse_special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode(g_tok, (const char *)data, size, 0, parse_special, &ids, &n, &err))
            fuzz_fail("encode failed: %s", err.msg);
        size_t cap = size * 3 + 16 + g_cap, len = 0;  // every byte may become U+FFFD
        char *out = malloc(cap);
        tokenizer_stream st = {0};
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(g_tok)) fuzz_fail("token id %d out of range", ids[i]);
            len += tokenizer_decode_stream(g_tok, &st, ids[i], out + len, g_cap);
            if (len + g_cap > cap) fuzz_fail("decoded text longer than 3 bytes per input byte");
        }
        len += tokenizer_stream_flush(g_tok, &st, out + len, g_cap);
        if (!utf8_valid((const uint8_t *)out, len)) fuzz_fail("decoded text is not valid UTF-8");
        if (!parse_special && utf8_valid(data, size) && !round_trip_ok(data, size, out, len))
            fuzz_fail("round trip: %zu bytes in, %zu bytes out, not equal", size, len);
        free(out);
        free(ids);
    }
    return 0;
}
