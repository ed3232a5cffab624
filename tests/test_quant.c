// Dequantization and float conversions (src/model/quant.c) against
// closed-form values on hand-built blocks, an independent float converter
// (tests/support/quantize_ref.c, plus the compiler's _Float16 where it exists),
// and quantize -> dequantize round trips with per-element error bounds.
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "model/quant.h"
#include "quantize_ref.h"

#define GUARD_ELEMS 16
static const float GUARD_VALUE = 12345.5f;

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t g_rng = 0x1234567887654321ull;
static uint32_t rand_u32(void) {  // xorshift64*
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545f4914f6cdd1dull) >> 32);
}

static float rand_normal(void) {
    double u1 = (rand_u32() + 0.5) / 4294967296.0, u2 = (rand_u32() + 0.5) / 4294967296.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// Same value, or both NaN; distinguishes +0 from -0.
static int same_value(float a, float b) { return (isnan(a) && isnan(b)) || f32_bits(a) == f32_bits(b); }

static int fp16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0; }

// ---- type table ----

static void test_type_table(void) {
    CHECK(sizeof(block_q4_0) == 18);
    CHECK(sizeof(block_q4_1) == 20);
    CHECK(sizeof(block_q8_0) == 34);
    CHECK(sizeof(block_q5_0) == 22);
    CHECK(sizeof(block_q5_1) == 24);
    CHECK(sizeof(block_q4_k) == 144);
    CHECK(sizeof(block_q5_k) == 176);
    CHECK(sizeof(block_q6_k) == 210);

    static const struct { uint32_t type; const char *name; int64_t block_elems; size_t block_bytes; int supported; } known[] = {
        {GGML_TYPE_F32, "F32", 1, 4, 1},      {GGML_TYPE_F16, "F16", 1, 2, 1},
        {GGML_TYPE_BF16, "BF16", 1, 2, 1},    {GGML_TYPE_Q4_0, "Q4_0", 32, 18, 1},
        {GGML_TYPE_Q4_1, "Q4_1", 32, 20, 1},  {GGML_TYPE_Q8_0, "Q8_0", 32, 34, 1},
        {GGML_TYPE_Q5_0, "Q5_0", 32, 22, 1},  {GGML_TYPE_Q5_1, "Q5_1", 32, 24, 1},
        {GGML_TYPE_Q5_K, "Q5_K", 256, 176, 1}, {GGML_TYPE_Q4_K, "Q4_K", 256, 144, 1},
        {GGML_TYPE_Q6_K, "Q6_K", 256, 210, 1}, {GGML_TYPE_Q3_K, "Q3_K", 256, 110, 0},
        {GGML_TYPE_Q2_K, "Q2_K", 256, 84, 0},  {GGML_TYPE_Q8_K, "Q8_K", 256, 292, 0},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        const ggml_type_info *ti = ggml_type_get(known[i].type);
        CHECK_MSG(ti != NULL, "type %u", known[i].type);
        if (!ti) continue;
        CHECK_MSG(strcmp(ti->name, known[i].name) == 0, "type %u is named %s", known[i].type, ti->name);
        CHECK(ti->block_elems == known[i].block_elems);
        CHECK(ti->block_bytes == known[i].block_bytes);
        CHECK_MSG(ti->supported == known[i].supported, "%s supported=%d", ti->name, ti->supported);
        CHECK(strcmp(ggml_type_name(known[i].type), known[i].name) == 0);
    }
    // Ids ggml never defined (4 and 5 were removed Q4_2/Q4_3) or beyond the table.
    static const uint32_t unknown[] = {4, 5, 31, 32, 33, GGML_TYPE_COUNT, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        CHECK_MSG(ggml_type_get(unknown[i]) == NULL, "type %u", unknown[i]);
        CHECK(ggml_row_bytes(unknown[i], 32) == 0);
        CHECK(ggml_row_bytes(unknown[i], 256) == 0);
    }
    CHECK(strcmp(ggml_type_name(1000), "type 1000") == 0);
    CHECK(strcmp(ggml_type_name(UINT32_MAX), "type 4294967295") == 0);
}

static void test_row_bytes(void) {
    CHECK(ggml_row_bytes(GGML_TYPE_F32, 7) == 28);
    CHECK(ggml_row_bytes(GGML_TYPE_F32, 1) == 4);
    CHECK(ggml_row_bytes(GGML_TYPE_F16, 7) == 14);
    CHECK(ggml_row_bytes(GGML_TYPE_BF16, 3) == 6);
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_0, 32) == 18);
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_0, 64) == 36);
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_1, 96) == 60);
    CHECK(ggml_row_bytes(GGML_TYPE_Q8_0, 96) == 102);
    CHECK(ggml_row_bytes(GGML_TYPE_Q5_K, 512) == 352);
    CHECK(ggml_row_bytes(GGML_TYPE_Q8_0, (int64_t)1 << 40) == ((size_t)1 << 35) * 34);
    // Not a whole number of blocks, or negative: 0.
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_0, 33) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_1, 16) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_Q8_0, 31) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_Q5_K, 255) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_F32, -4) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_Q4_0, -32) == 0);
    CHECK(ggml_row_bytes(GGML_TYPE_F32, 0) == 0);
}

// ---- fp16 ----

static void test_fp16_decode(void) {
    static const struct { uint16_t h; float f; } cases[] = {
        {0x0000, 0.0f},           {0x3c00, 1.0f},          {0xc000, -2.0f},
        {0x3555, 0.333251953125f}, {0x7bff, 65504.0f},     {0xfbff, -65504.0f},
        {0x0400, 0x1p-14f},       {0x03ff, 1023 * 0x1p-24f}, {0x0001, 0x1p-24f},
        {0x8001, -0x1p-24f},      {0x0200, 0x1p-15f},      {0x3bff, 1.0f - 0x1p-11f},
        {0x7c00, INFINITY},       {0xfc00, -INFINITY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_MSG(same_value(fp16_to_fp32(cases[i].h), cases[i].f), "fp16 0x%04x -> %a, want %a", cases[i].h,
                  fp16_to_fp32(cases[i].h), cases[i].f);
    CHECK(signbit(fp16_to_fp32(0x8000)) && fp16_to_fp32(0x8000) == 0.0f);
    CHECK(isnan(fp16_to_fp32(0x7e00)) && isnan(fp16_to_fp32(0x7c01)) && isnan(fp16_to_fp32(0xffff)));

    // Every one of the 65536 patterns against the reference decoder, and
    // every non-NaN one survives fp16 -> fp32 -> fp16 unchanged.
    int n_bad_decode = 0, n_bad_roundtrip = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_fp32((uint16_t)h);
        if (!same_value(f, qref_fp16_to_fp32((uint16_t)h))) n_bad_decode++;
        if (!fp16_is_nan((uint16_t)h) && fp32_to_fp16(f) != h) n_bad_roundtrip++;
        if (fp16_is_nan((uint16_t)h) && !fp16_is_nan(fp32_to_fp16(f))) n_bad_roundtrip++;
    }
    CHECK_MSG(n_bad_decode == 0, "%d fp16 patterns decode differently from the reference", n_bad_decode);
    CHECK_MSG(n_bad_roundtrip == 0, "%d fp16 patterns do not round-trip", n_bad_roundtrip);
}

static void check_fp16_encoding(float f, uint16_t want, int line) {
    uint16_t got = fp32_to_fp16(f), ref = qref_fp32_to_fp16(f);
    g_checks_run++;
    if (got != want || ref != want) {
        g_checks_failed++;
        fprintf(stderr, "%s:%d: fp32_to_fp16(%a) = 0x%04x, reference 0x%04x, want 0x%04x\n", __FILE__, line, f, got,
                ref, want);
    }
}
#define CHECK_FP16(f, want) check_fp16_encoding((f), (want), __LINE__)

static void test_fp16_encode(void) {
    CHECK_FP16(0.0f, 0x0000);
    CHECK_FP16(-0.0f, 0x8000);
    CHECK_FP16(1.0f, 0x3c00);
    CHECK_FP16(-2.0f, 0xc000);
    CHECK_FP16(0.1f, 0x2e66);
    CHECK_FP16(65504.0f, 0x7bff);
    // Ties go to the even neighbour.
    CHECK_FP16(1.0f + 0x1p-11f, 0x3c00);            // halfway 0x3c00 / 0x3c01
    CHECK_FP16(1.0f + 3 * 0x1p-11f, 0x3c02);        // halfway 0x3c01 / 0x3c02
    CHECK_FP16(1.0f + 0x1p-11f + 0x1p-23f, 0x3c01); // just above halfway
    CHECK_FP16(-(1.0f + 0x1p-11f), 0xbc00);
    CHECK_FP16(2048.0f + 1.0f, 0x6800);             // 2049: halfway between 2048 and 2050
    CHECK_FP16(2048.0f + 3.0f, 0x6802);
    // Overflow: 65520 is halfway from 65504 (odd mantissa) to 2^16, so it rounds to inf.
    CHECK_FP16(65519.996f, 0x7bff);
    CHECK_FP16(65520.0f, 0x7c00);
    CHECK_FP16(-65520.0f, 0xfc00);
    CHECK_FP16(1e6f, 0x7c00);
    CHECK_FP16(FLT_MAX, 0x7c00);
    CHECK_FP16(INFINITY, 0x7c00);
    CHECK_FP16(-INFINITY, 0xfc00);
    // Subnormals (unit 2^-24) and underflow.
    CHECK_FP16(0x1p-14f, 0x0400);
    CHECK_FP16(0x1p-24f, 0x0001);
    CHECK_FP16(-0x1p-24f, 0x8001);
    CHECK_FP16(0x1p-25f, 0x0000);                   // halfway 0 / 1: even is 0
    CHECK_FP16(-0x1p-25f, 0x8000);
    CHECK_FP16(0x1p-25f * (1.0f + 0x1p-20f), 0x0001);
    CHECK_FP16(3 * 0x1p-25f, 0x0002);               // halfway 1 / 2
    CHECK_FP16(5 * 0x1p-25f, 0x0002);               // halfway 2 / 3
    CHECK_FP16(0x1p-14f - 0x1p-25f, 0x0400);        // halfway 0x3ff / 0x400: rounds up into the normals
    CHECK_FP16(0x1p-14f - 0x1p-24f, 0x03ff);
    CHECK_FP16(0x1p-26f, 0x0000);
    CHECK_FP16(FLT_MIN, 0x0000);
    CHECK_FP16(bits_f32(1), 0x0000);                // smallest float subnormal
    // NaNs stay NaN, including a signalling NaN whose payload sits in low bits
    // that a plain shift would drop (turning it into inf).
    CHECK(fp16_is_nan(fp32_to_fp16(NAN)));
    CHECK(fp16_is_nan(fp32_to_fp16(bits_f32(0x7f800001))));
    CHECK(fp16_is_nan(fp32_to_fp16(bits_f32(0xff800001))) && (fp32_to_fp16(bits_f32(0xff800001)) & 0x8000));
    CHECK(fp16_is_nan(qref_fp32_to_fp16(bits_f32(0x7f800001))));

    // Around every fp16 rounding boundary: floats whose 13 dropped bits are
    // at or next to 0 and the halfway point, across the whole fp16 range.
    static const uint32_t low[] = {0, 1, 0xfff, 0x1000, 0x1001, 0x1fff};
    int n_bad = 0;
    for (uint32_t hi = 0x33000000u >> 13; hi <= 0x47800000u >> 13; hi++)
        for (size_t k = 0; k < sizeof(low) / sizeof(low[0]); k++)
            for (uint32_t sign = 0; sign < 2; sign++) {
                float f = bits_f32(sign << 31 | hi << 13 | low[k]);
                if (fp32_to_fp16(f) != qref_fp32_to_fp16(f)) n_bad++;
            }
    // Random bit patterns: every exponent, NaNs and infinities included.
    for (int i = 0; i < (1 << 20); i++) {
        float f = bits_f32(rand_u32());
        uint16_t a = fp32_to_fp16(f), b = qref_fp32_to_fp16(f);
        if (!(a == b || (fp16_is_nan(a) && fp16_is_nan(b) && (a & 0x8000) == (b & 0x8000)))) n_bad++;
    }
    CHECK_MSG(n_bad == 0, "%d floats convert to fp16 differently from the reference", n_bad);

#ifdef __FLT16_MAX__
    // The compiler's own conversion is a third, independent opinion.
    int n_bad_hw = 0;
    for (int i = 0; i < (1 << 18); i++) {
        float f = bits_f32(rand_u32());
        _Float16 hf = (_Float16)f;
        uint16_t want;
        memcpy(&want, &hf, 2);
        uint16_t got = fp32_to_fp16(f);
        if (!(got == want || (fp16_is_nan(got) && fp16_is_nan(want)))) n_bad_hw++;
        if (!isnan(f) && qref_fp32_to_fp16(f) != want) n_bad_hw++;
    }
    CHECK_MSG(n_bad_hw == 0, "%d floats convert differently from the compiler's _Float16", n_bad_hw);
#endif
}

// ---- bf16 ----

static void check_bf16_encoding(float f, uint16_t want, int line) {
    uint16_t got = fp32_to_bf16(f), ref = qref_fp32_to_bf16(f);
    g_checks_run++;
    if (got != want || ref != want) {
        g_checks_failed++;
        fprintf(stderr, "%s:%d: fp32_to_bf16(%a) = 0x%04x, reference 0x%04x, want 0x%04x\n", __FILE__, line, f, got,
                ref, want);
    }
}
#define CHECK_BF16(f, want) check_bf16_encoding((f), (want), __LINE__)

static void test_bf16(void) {
    CHECK(bf16_to_fp32(0x3f80) == 1.0f);
    CHECK(bf16_to_fp32(0x4049) == 3.140625f);
    CHECK(bf16_to_fp32(0xc000) == -2.0f);
    CHECK(bf16_to_fp32(0x0001) == 0x1p-133f);  // subnormal
    CHECK(bf16_to_fp32(0x7f80) == INFINITY && bf16_to_fp32(0xff80) == -INFINITY);
    CHECK(isnan(bf16_to_fp32(0x7fc0)) && isnan(bf16_to_fp32(0x7f81)));
    CHECK(signbit(bf16_to_fp32(0x8000)));
    int n_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_fp32((uint16_t)h);
        if (!same_value(f, qref_bf16_to_fp32((uint16_t)h))) n_bad++;
        if (!bf16_is_nan((uint16_t)h) && fp32_to_bf16(f) != h) n_bad++;
        if (bf16_is_nan((uint16_t)h) && !bf16_is_nan(fp32_to_bf16(f))) n_bad++;
    }
    CHECK_MSG(n_bad == 0, "%d bf16 patterns decode or round-trip wrongly", n_bad);

    CHECK_BF16(1.0f, 0x3f80);
    CHECK_BF16(-0.0f, 0x8000);
    CHECK_BF16(3.14159265f, 0x4049);
    CHECK_BF16(1.0f + 0x1p-8f, 0x3f80);             // halfway: even
    CHECK_BF16(1.0f + 3 * 0x1p-8f, 0x3f82);         // halfway: even is up
    CHECK_BF16(1.0f + 0x1p-8f + 0x1p-20f, 0x3f81);
    CHECK_BF16(bits_f32(0x7f7f7fff), 0x7f7f);       // just below halfway to inf
    CHECK_BF16(bits_f32(0x7f7f8000), 0x7f80);       // halfway from the odd maximum: inf
    CHECK_BF16(FLT_MAX, 0x7f80);
    CHECK_BF16(-FLT_MAX, 0xff80);
    CHECK_BF16(INFINITY, 0x7f80);
    CHECK_BF16(bits_f32(0x00010000), 0x0001);
    CHECK_BF16(bits_f32(0x00008000), 0x0000);       // halfway 0 / 1
    CHECK_BF16(bits_f32(0x00018000), 0x0002);       // halfway 1 / 2
    CHECK_BF16(bits_f32(0x007fffff), 0x0080);       // largest float subnormal rounds up to FLT_MIN
    CHECK(bf16_is_nan(fp32_to_bf16(NAN)));
    CHECK(bf16_is_nan(fp32_to_bf16(bits_f32(0x7f800001))));  // payload only in the dropped bits
    CHECK(bf16_is_nan(fp32_to_bf16(bits_f32(0xffff0000))) && (fp32_to_bf16(bits_f32(0xffff0000)) & 0x8000));

    static const uint32_t low[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff};
    n_bad = 0;
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (size_t k = 0; k < sizeof(low) / sizeof(low[0]); k++) {
            float f = bits_f32(hi << 16 | low[k]);
            uint16_t a = fp32_to_bf16(f), b = qref_fp32_to_bf16(f);
            if (!(a == b || (bf16_is_nan(a) && bf16_is_nan(b)))) n_bad++;
        }
    CHECK_MSG(n_bad == 0, "%d floats convert to bf16 differently from the reference", n_bad);
}

// ---- dequantize_row on hand-built blocks ----

// Runs dequantize_row into a buffer with guard elements after n_elems and
// checks the guard survived. Returns the malloc'd output (caller frees).
static float *dequant_guarded(uint32_t type, const void *src, int64_t n_elems) {
    float *out = malloc((size_t)(n_elems + GUARD_ELEMS) * sizeof(float));
    for (int64_t i = 0; i < n_elems + GUARD_ELEMS; i++) out[i] = GUARD_VALUE;
    dequantize_row(type, src, out, n_elems);
    int guard_ok = 1;
    for (int i = 0; i < GUARD_ELEMS; i++) guard_ok &= out[n_elems + i] == GUARD_VALUE;
    CHECK_MSG(guard_ok, "dequantize_row(%s) wrote past %lld elements", ggml_type_name(type), (long long)n_elems);
    return out;
}

static void test_dequant_float_types(void) {
    const uint16_t h[] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x3555, 0x7c00};
    const float hf[] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, -0.0f, 0.333251953125f, INFINITY};
    float *out = dequant_guarded(GGML_TYPE_F16, h, 7);
    for (int i = 0; i < 7; i++) CHECK_MSG(same_value(out[i], hf[i]), "F16 element %d = %a", i, out[i]);
    free(out);

    const uint16_t b[] = {0x3f80, 0x4049, 0xc000, 0x0001, 0xff80};
    const float bf[] = {1.0f, 3.140625f, -2.0f, 0x1p-133f, -INFINITY};
    out = dequant_guarded(GGML_TYPE_BF16, b, 5);
    for (int i = 0; i < 5; i++) CHECK_MSG(same_value(out[i], bf[i]), "BF16 element %d = %a", i, out[i]);
    free(out);

    const float f[] = {1.5f, -0.0f, FLT_MAX, 0x1p-149f, -3.0f};
    out = dequant_guarded(GGML_TYPE_F32, f, 5);
    for (int i = 0; i < 5; i++) CHECK(same_value(out[i], f[i]));
    free(out);
}

static void test_dequant_q4_0(void) {
    // Block 0: d = 0.25, low nibble j, high nibble 15 - j.
    // Block 1: d = -2, low nibble (7j mod 16), high nibble (3j mod 16).
    block_q4_0 blk[2];
    blk[0].d = 0x3400;
    blk[1].d = 0xc000;
    for (int j = 0; j < 16; j++) {
        blk[0].qs[j] = (uint8_t)(j | (15 - j) << 4);
        blk[1].qs[j] = (uint8_t)((7 * j) % 16 | ((3 * j) % 16) << 4);
    }
    float *out = dequant_guarded(GGML_TYPE_Q4_0, blk, 64);
    for (int j = 0; j < 16; j++) {
        // Element order: low nibbles are elements 0..15, high nibbles 16..31.
        CHECK_MSG(out[j] == 0.25f * (j - 8), "q4_0 [%d] = %g", j, out[j]);
        CHECK_MSG(out[16 + j] == 0.25f * (7 - j), "q4_0 [%d] = %g", 16 + j, out[16 + j]);
        CHECK_MSG(out[32 + j] == -2.0f * ((7 * j) % 16 - 8), "q4_0 [%d] = %g", 32 + j, out[32 + j]);
        CHECK_MSG(out[48 + j] == -2.0f * ((3 * j) % 16 - 8), "q4_0 [%d] = %g", 48 + j, out[48 + j]);
    }
    free(out);
}

static void test_dequant_q4_1(void) {
    // Block 0: d = 0.5, m = -1, nibbles 0..15 low and 15..0 high.
    // Block 1: d = 2, m = 4, low nibble 15 - j, high nibble (5j mod 16).
    block_q4_1 blk[2];
    blk[0].d = 0x3800;
    blk[0].m = 0xbc00;
    blk[1].d = 0x4000;
    blk[1].m = 0x4400;
    for (int j = 0; j < 16; j++) {
        blk[0].qs[j] = (uint8_t)(j | (15 - j) << 4);
        blk[1].qs[j] = (uint8_t)((15 - j) | ((5 * j) % 16) << 4);
    }
    float *out = dequant_guarded(GGML_TYPE_Q4_1, blk, 64);
    for (int j = 0; j < 16; j++) {
        CHECK_MSG(out[j] == 0.5f * j - 1.0f, "q4_1 [%d] = %g", j, out[j]);
        CHECK_MSG(out[16 + j] == 0.5f * (15 - j) - 1.0f, "q4_1 [%d] = %g", 16 + j, out[16 + j]);
        CHECK_MSG(out[32 + j] == 2.0f * (15 - j) + 4.0f, "q4_1 [%d] = %g", 32 + j, out[32 + j]);
        CHECK_MSG(out[48 + j] == 2.0f * ((5 * j) % 16) + 4.0f, "q4_1 [%d] = %g", 48 + j, out[48 + j]);
    }
    CHECK(out[0] == -1.0f && out[15] == 6.5f && out[16] == 6.5f && out[31] == -1.0f);
    free(out);
}

static void test_dequant_q8_0(void) {
    // Block 0: d = 0.5, q = 127 - 8j. Block 1: a subnormal scale d = 2^-24
    // and q = -128 + 8j (ggml never writes -128 but a file may hold it).
    block_q8_0 blk[2];
    blk[0].d = 0x3800;
    blk[1].d = 0x0001;
    for (int j = 0; j < 32; j++) {
        blk[0].qs[j] = (int8_t)(127 - 8 * j);
        blk[1].qs[j] = (int8_t)(-128 + 8 * j);
    }
    float *out = dequant_guarded(GGML_TYPE_Q8_0, blk, 64);
    for (int j = 0; j < 32; j++) {
        CHECK_MSG(out[j] == 0.5f * (127 - 8 * j), "q8_0 [%d] = %g", j, out[j]);
        CHECK_MSG(out[32 + j] == 0x1p-24f * (-128 + 8 * j), "q8_0 [%d] = %a", 32 + j, out[32 + j]);
    }
    free(out);
}

static void test_dequant_unsupported(void) {
    // Callers check ->supported first; the documented fallback is zeros, and
    // nothing past n_elems is touched.
    uint8_t junk[176];
    memset(junk, 0xab, sizeof(junk));
    float *out = dequant_guarded(GGML_TYPE_Q3_K, junk, 256);
    int zeros = 1;
    for (int i = 0; i < 256; i++) zeros &= out[i] == 0.0f;
    CHECK(zeros);
    free(out);
}

// ---- Q5_0 / Q5_1 / K-quants: hand-built blocks, values from the ggml definitions ----

static void test_dequant_q5(void) {
    // Element j's 5-bit q = (13j + 5 + 7*(j/16)) mod 32 (j and j + 16 differ in their
    // low 4 bits, so swapped nibbles show): low 4 bits in the low (j < 16) or
    // high (j >= 16) nibble of qs[j mod 16], bit 4 in bit j of qh (little-endian).
    block_q5_0 b0 = {.d = 0x3800};  // d = 0.5
    block_q5_1 b1 = {.d = 0x3800, .m = 0xc200};  // d = 0.5, m = -3
    int q[32];
    for (int j = 0; j < 32; j++) {
        q[j] = (13 * j + 5 + 7 * (j / 16)) % 32;
        b0.qs[j % 16] |= (uint8_t)((q[j] & 15) << (j < 16 ? 0 : 4));
        b0.qh[j / 8] |= (uint8_t)((q[j] >> 4) << (j % 8));
    }
    memcpy(b1.qs, b0.qs, 16);
    memcpy(b1.qh, b0.qh, 4);
    float *o0 = dequant_guarded(GGML_TYPE_Q5_0, &b0, 32), *o1 = dequant_guarded(GGML_TYPE_Q5_1, &b1, 32);
    for (int j = 0; j < 32; j++) {
        CHECK_MSG(o0[j] == 0.5f * (q[j] - 16), "q5_0 [%d] = %g", j, o0[j]);
        CHECK_MSG(o1[j] == 0.5f * q[j] - 3.0f, "q5_1 [%d] = %g", j, o1[j]);
    }
    // By hand: q[0] = 5, q[3] = 44 mod 32 = 12, q[17] = 233 mod 32 = 9, q[31] = 415 mod 32 = 31.
    CHECK(o0[0] == -5.5f && o0[3] == -2.0f && o0[17] == -3.5f && o0[31] == 7.5f);
    CHECK(o1[0] == -0.5f && o1[3] == 3.0f && o1[17] == 1.5f && o1[31] == 12.5f);
    free(o0);
    free(o1);
}

// Q4_K/Q5_K scales and mins of the 8 sub-blocks: values above 15 and up to 63
// exercise the 2 high bits kept in bytes 0..7.
static const uint8_t KSC[8] = {1, 2, 63, 17, 33, 48, 5, 62};
static const uint8_t KMN[8] = {0, 3, 40, 63, 21, 16, 7, 50};

// The 12-byte packing as ggml's quantize_row_q4_K_ref writes it.
static void pack_kscales(uint8_t *out) {
    memset(out, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            out[j] = KSC[j];
            out[j + 4] = KMN[j];
        } else {
            out[j + 4] = (uint8_t)((KSC[j] & 0xf) | (KMN[j] & 0xf) << 4);
            out[j - 4] |= (uint8_t)((KSC[j] >> 4) << 6);
            out[j] |= (uint8_t)((KMN[j] >> 4) << 6);
        }
    }
}

static void test_dequant_q4_k_q5_k(void) {
    // Element 32s + l of sub-block s has the 4-bit q = (7l + s) mod 16, stored in
    // qs[32*(s/2) + l], low nibble for even s, high for odd; Q5_K adds 16 where
    // bit s of qh[l] is set, here where (l + 3s) mod 5 == 0.
    // x = d*sc_s*q - dmin*m_s with d = 0.5, dmin = 0.25.
    block_q4_k b4 = {.d = 0x3800, .dmin = 0x3400};
    block_q5_k b5 = {.d = 0x3800, .dmin = 0x3400};
    pack_kscales(b4.scales);
    pack_kscales(b5.scales);
    for (int s = 0; s < 8; s++)
        for (int l = 0; l < 32; l++) {
            int q = (7 * l + s) % 16;
            b4.qs[32 * (s / 2) + l] |= (uint8_t)(q << (s % 2 ? 4 : 0));
            b5.qh[l] |= (uint8_t)(((l + 3 * s) % 5 == 0) << s);
        }
    memcpy(b5.qs, b4.qs, sizeof(b4.qs));
    float *o4 = dequant_guarded(GGML_TYPE_Q4_K, &b4, 256), *o5 = dequant_guarded(GGML_TYPE_Q5_K, &b5, 256);
    int bad4 = 0, bad5 = 0;
    for (int s = 0; s < 8; s++)
        for (int l = 0; l < 32; l++) {
            int q = (7 * l + s) % 16, q5 = q + 16 * ((l + 3 * s) % 5 == 0);
            bad4 += o4[32 * s + l] != 0.5f * KSC[s] * q - 0.25f * KMN[s];
            bad5 += o5[32 * s + l] != 0.5f * KSC[s] * q5 - 0.25f * KMN[s];
        }
    CHECK_MSG(bad4 == 0, "%d Q4_K elements differ", bad4);
    CHECK_MSG(bad5 == 0, "%d Q5_K elements differ", bad5);
    // By hand: [64] s=2 l=0: q=2, 0.5*63*2 - 0.25*40 = 53; [101] s=3 l=5: q=6, 0.5*17*6 - 0.25*63 = 35.25;
    // [129] s=4 l=1: q=11, 0.5*33*11 - 0.25*21 = 176.25; [255] s=7 l=31: q=0, -0.25*50 = -12.5;
    // Q5_K [34] s=1 l=2: (2+3) mod 5 = 0, so q = 15 + 16 = 31: 0.5*2*31 - 0.25*3 = 30.25.
    CHECK(o4[64] == 53.0f && o4[101] == 35.25f && o4[129] == 176.25f && o4[255] == -12.5f);
    CHECK(o5[64] == 53.0f && o5[101] == 35.25f && o5[255] == -12.5f && o5[34] == 30.25f && o4[34] == 14.25f);
    free(o4);
    free(o5);
}

static void test_dequant_q6_k(void) {
    // Element e = 128h + 32k + l (half h, group k, l < 32) has the 6-bit q = (11e + 3(e/32)) mod 64
    // (the groups differ in their low 4 bits, so a wrong nibble or byte shows):
    // low 4 bits in the low (k < 2) or high (k >= 2) nibble of ql[64h + 32(k&1) + l],
    // high 2 bits at bits 2k..2k+1 of qh[32h + l]; x = d * scales[8h + 2k + l/16] * (q - 32), d = 0.25.
    static const int8_t sc[16] = {1, -2, 127, -128, 5, 17, -33, 64, 3, -1, 100, -100, 9, 11, -7, 2};
    block_q6_k b = {.d = 0x3400};
    memcpy(b.scales, sc, 16);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = e % 128 / 32, l = e % 32, q = (11 * e + 3 * (e / 32)) % 64;
        b.ql[64 * h + 32 * (k & 1) + l] |= (uint8_t)((q & 15) << (k >= 2 ? 4 : 0));
        b.qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
    float *o = dequant_guarded(GGML_TYPE_Q6_K, &b, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = e % 128 / 32, l = e % 32, q = (11 * e + 3 * (e / 32)) % 64;
        bad += o[e] != 0.25f * sc[8 * h + 2 * k + l / 16] * (q - 32);
    }
    CHECK_MSG(bad == 0, "%d Q6_K elements differ", bad);
    // By hand: [0] q=0: 0.25*1*-32 = -8; [40] k=1 l=8: q=443 mod 64=59, scale 127: 0.25*127*27 = 857.25;
    // [50] k=1 l=18: q=41, scale -128: -288; [116] k=3 l=20: q=1285 mod 64=5, scale 64: -432;
    // [200] h=1 k=2 l=8: q=42, scale 9: 22.5; [255] k=3 l=31: q=10, scale 2: -11.
    CHECK(o[0] == -8.0f && o[40] == 857.25f && o[50] == -288.0f && o[116] == -432.0f && o[200] == 22.5f &&
          o[255] == -11.0f);
    free(o);
}

// ---- reference quantizers: exact blocks, then round-trip bounds ----

static void test_qref_exact_blocks(void) {
    // These inputs are the outputs of the hand-built blocks above, so the
    // quantizer must give those blocks back byte for byte.
    float x[32];
    for (int j = 0; j < 16; j++) {
        x[j] = (float)(j - 8);        // first |max| is -8 at j = 0: d = -8 / -8 = 1
        x[16 + j] = (float)(7 - j);
    }
    block_q4_0 b0;
    qref_quantize_row_q4_0(x, &b0, 32);
    CHECK(b0.d == 0x3c00);
    int ok = 1;
    for (int j = 0; j < 16; j++) ok &= b0.qs[j] == (uint8_t)(j | (15 - j) << 4);
    CHECK(ok);

    for (int j = 0; j < 16; j++) {
        x[j] = 0.5f * j - 1.0f;
        x[16 + j] = 0.5f * (15 - j) - 1.0f;
    }
    block_q4_1 b1;
    qref_quantize_row_q4_1(x, &b1, 32);
    CHECK(b1.d == 0x3800 && b1.m == 0xbc00);
    ok = 1;
    for (int j = 0; j < 16; j++) ok &= b1.qs[j] == (uint8_t)(j | (15 - j) << 4);
    CHECK(ok);

    for (int j = 0; j < 32; j++) x[j] = 0.5f * (127 - 8 * j);  // amax 63.5: d = 0.5
    block_q8_0 b8;
    qref_quantize_row_q8_0(x, &b8, 32);
    CHECK(b8.d == 0x3800);
    ok = 1;
    for (int j = 0; j < 32; j++) ok &= b8.qs[j] == (int8_t)(127 - 8 * j);
    CHECK(ok);

    // All-zero blocks: scale 0 (Q4_0's is -0: 0 / -8), every element decodes to 0.
    float z[32] = {0};
    qref_quantize_row_q4_0(z, &b0, 32);
    qref_quantize_row_q4_1(z, &b1, 32);
    qref_quantize_row_q8_0(z, &b8, 32);
    CHECK((b0.d & 0x7fff) == 0 && b0.qs[0] == 0x88);
    CHECK(b1.d == 0 && b1.m == 0 && b1.qs[0] == 0);
    CHECK(b8.d == 0 && b8.qs[0] == 0);
    float out[32];
    int zero = 1;
    dequantize_row(GGML_TYPE_Q4_0, &b0, out, 32);
    for (int j = 0; j < 32; j++) zero &= out[j] == 0.0f;
    dequantize_row(GGML_TYPE_Q4_1, &b1, out, 32);
    for (int j = 0; j < 32; j++) zero &= out[j] == 0.0f;
    dequantize_row(GGML_TYPE_Q8_0, &b8, out, 32);
    for (int j = 0; j < 32; j++) zero &= out[j] == 0.0f;
    CHECK(zero);

    CHECK(qref_quantize(GGML_TYPE_Q5_K, x, &b8, 256) == 0);
    CHECK(qref_quantize(GGML_TYPE_Q8_0, x, &b8, 31) == 0);
}

enum { RT_BLOCKS = 256 };

// Test data: mostly N(0, s) with a varying scale per block, plus blocks that
// are constant, hold one outlier, or are all negative.
static void make_roundtrip_data(float *x, int n_blocks) {
    for (int b = 0; b < n_blocks; b++) {
        float s = ldexpf(1.0f, (int)(rand_u32() % 20) - 10);
        for (int j = 0; j < 32; j++) x[b * 32 + j] = s * rand_normal();
        if (b % 8 == 1)
            for (int j = 0; j < 32; j++) x[b * 32 + j] = s;
        if (b % 8 == 2) x[b * 32 + (int)(rand_u32() % 32)] = 100.0f * s;
        if (b % 8 == 3)
            for (int j = 0; j < 32; j++) x[b * 32 + j] = -fabsf(x[b * 32 + j]) - s;
    }
}

static void test_roundtrip(void) {
    const int64_t n = RT_BLOCKS * 32;
    float *x = malloc((size_t)n * sizeof(float));
    float *y = malloc((size_t)n * sizeof(float));
    block_q8_0 *q8 = malloc(RT_BLOCKS * sizeof(block_q8_0));
    block_q4_0 *q40 = malloc(RT_BLOCKS * sizeof(block_q4_0));
    block_q4_1 *q41 = malloc(RT_BLOCKS * sizeof(block_q4_1));
    uint16_t *h = malloc((size_t)n * sizeof(uint16_t));
    make_roundtrip_data(x, RT_BLOCKS);

    // Each bound is the rounding of q (half a step, a full step where Q4_0
    // clips its +8) plus |q| times the error of storing the scale as fp16,
    // plus a few ulps for computing x * (1/d) in float.
    int n_bad_q8 = 0, n_bad_q40 = 0, n_bad_q41 = 0;
    CHECK(qref_quantize(GGML_TYPE_Q8_0, x, q8, n) == RT_BLOCKS * sizeof(block_q8_0));
    dequantize_row(GGML_TYPE_Q8_0, q8, y, n);
    for (int b = 0; b < RT_BLOCKS; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127, d16 = fp16_to_fp32(q8[b].d);
        float bound = d * (0.5f + 1e-4f) + 127 * fabsf(d - d16);
        for (int j = 0; j < 32; j++) n_bad_q8 += !(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
    }
    CHECK(qref_quantize(GGML_TYPE_Q4_0, x, q40, n) == RT_BLOCKS * sizeof(block_q4_0));
    dequantize_row(GGML_TYPE_Q4_0, q40, y, n);
    for (int b = 0; b < RT_BLOCKS; b++) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[b * 32 + j]) > amax) {
                amax = fabsf(x[b * 32 + j]);
                max = x[b * 32 + j];
            }
        float d = max / -8, d16 = fp16_to_fp32(q40[b].d);
        for (int j = 0; j < 32; j++) {
            float r = d ? x[b * 32 + j] / d : 0;
            float bound = fabsf(d) * ((r > 7.5f ? 1.0f : 0.5f) + 1e-4f) + 8 * fabsf(d - d16);
            n_bad_q40 += !(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
        }
    }
    CHECK(qref_quantize(GGML_TYPE_Q4_1, x, q41, n) == RT_BLOCKS * sizeof(block_q4_1));
    dequantize_row(GGML_TYPE_Q4_1, q41, y, n);
    for (int b = 0; b < RT_BLOCKS; b++) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < 32; j++) {
            min = fminf(min, x[b * 32 + j]);
            max = fmaxf(max, x[b * 32 + j]);
        }
        float d = (max - min) / 15, d16 = fp16_to_fp32(q41[b].d), m16 = fp16_to_fp32(q41[b].m);
        float bound = d * (0.5f + 1e-4f) + 15 * fabsf(d - d16) + fabsf(min - m16) + 1e-6f * fabsf(min);
        for (int j = 0; j < 32; j++) n_bad_q41 += !(fabsf(x[b * 32 + j] - y[b * 32 + j]) <= bound);
    }
    CHECK_MSG(n_bad_q8 == 0, "%d Q8_0 elements outside the bound", n_bad_q8);
    CHECK_MSG(n_bad_q40 == 0, "%d Q4_0 elements outside the bound", n_bad_q40);
    CHECK_MSG(n_bad_q41 == 0, "%d Q4_1 elements outside the bound", n_bad_q41);

    // F16 / BF16: relative error at most half an ulp (2^-11 / 2^-8) in the normal range.
    int n_bad = 0;
    CHECK(qref_quantize(GGML_TYPE_F16, x, h, n) == (size_t)n * 2);
    dequantize_row(GGML_TYPE_F16, h, y, n);
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) >= 0x1p-14f && fabsf(x[i]) < 65504.0f) n_bad += !(fabsf(x[i] - y[i]) <= 0x1p-11f * fabsf(x[i]));
    CHECK(qref_quantize(GGML_TYPE_BF16, x, h, n) == (size_t)n * 2);
    dequantize_row(GGML_TYPE_BF16, h, y, n);
    for (int64_t i = 0; i < n; i++) n_bad += !(fabsf(x[i] - y[i]) <= 0x1p-8f * fabsf(x[i]));
    CHECK_MSG(n_bad == 0, "%d F16/BF16 elements outside half an ulp", n_bad);

    free(x);
    free(y);
    free(q8);
    free(q40);
    free(q41);
    free(h);
}

int main(void) {
    test_type_table();
    test_row_bytes();
    test_fp16_decode();
    test_fp16_encode();
    test_bf16();
    test_dequant_float_types();
    test_dequant_q4_0();
    test_dequant_q4_1();
    test_dequant_q8_0();
    test_dequant_q5();
    test_dequant_q4_k_q5_k();
    test_dequant_q6_k();
    test_dequant_unsupported();
    test_qref_exact_blocks();
    test_roundtrip();
    TEST_MAIN_END();
}
