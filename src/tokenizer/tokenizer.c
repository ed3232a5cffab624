// Tokenizer from the GGUF vocabulary. The reference is llama.cpp
// (src/llama-vocab.cpp: llm_tokenizer_bpe_session, llm_tokenizer_spm_session,
// tokenizer_st_partition, token_to_piece; src/unicode.cpp: unicode_regex_split).
// Where this file differs from a textbook BPE it is because llama.cpp does:
// those places say so.
#define _GNU_SOURCE  // memmem
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/array.h"
#include "tokenizer/strmap.h"
#include "tokenizer/utf8.h"

enum vocab_kind { VOCAB_BPE, VOCAB_SPM };

// GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

// Per-token attribute bits (llama.cpp's llama_token_attr, plus EOG).
enum {
    ATTR_UNDEFINED = 1 << 0,
    ATTR_UNKNOWN = 1 << 1,
    ATTR_UNUSED = 1 << 2,
    ATTR_NORMAL = 1 << 3,
    ATTR_CONTROL = 1 << 4,
    ATTR_USER_DEFINED = 1 << 5,
    ATTR_BYTE = 1 << 6,
    ATTR_EOG = 1 << 7,
};

#define MAX_PRE_REGEX 6
#define UTF8_REPLACEMENT "\xEF\xBF\xBD"  // U+FFFD
#define SPM_SPACE "\xE2\x96\x81"         // U+2581, SentencePiece's escaped space

// ---------------------------------------------------------------------------
// growable buffers

typedef struct ids_vec {
    int32_t *v;
    size_t n, cap;
} ids_vec;

static int ids_push(ids_vec *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof(int32_t));
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

// Ensures *buf holds at least n elements of elem_bytes each.
static int grow(void **buf, size_t *cap, size_t n, size_t elem_bytes) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n) c *= 2;
    void *p = realloc(*buf, c * elem_bytes);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

// ---------------------------------------------------------------------------
// GPT-2 byte <-> unicode mapping (bytes_to_unicode in GPT-2's encoder.py)

typedef struct byte_map {
    char enc[256][2];       // UTF-8 of the code point standing for each byte
    unsigned char enc_len[256];
    int16_t dec[324];       // code point -> byte, -1 if not a byte char
} byte_map;

static void byte_map_init(byte_map *m) {
    uint32_t cp_of[256];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp_of[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int i = 0; i < 324; i++) m->dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        char tmp[4];
        m->enc_len[b] = (unsigned char)utf8_put(cp_of[b], tmp);
        memcpy(m->enc[b], tmp, m->enc_len[b]);
        m->dec[cp_of[b]] = (int16_t)b;
    }
}

// ---------------------------------------------------------------------------
// pre-tokenizers: the regex lists of llm_tokenizer_bpe for each tokenizer.ggml.pre.
// llama.cpp runs most of them through std::regex on a text where every
// non-ASCII code point is collapsed to one byte standing for its category;
// for these patterns (\p{L}, \p{N}, \p{P}, \s and plain classes) that is the
// same as matching the real code points with PCRE2 in UCP mode.

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACT "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3 \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_PUNCT_RUN "[\\p{P}\\$\\+<=>\\^~\\|]+"
#define RE_PORO " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
#define RE_UPPER_THEN_LOWER "((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
#define RE_UPPER_RUN "((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
#define RE_TEKKEN                                                                           \
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_THEN_LOWER "|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_RUN \
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT4O                                                                                        \
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_THEN_LOWER RE_CONTRACT "?|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER_RUN \
        RE_CONTRACT "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_BAILING                                                                                        \
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"
#define RE_SEED_CODER \
    RE_CONTRACT "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
// deepseek-llm's letter class (the cased letters of Unicode), written with
// escapes so no editor can normalize the singleton code points (U+1FBE, U+2126, U+212A, ...).
#define RE_DEEPSEEK_LETTERS                                                                                   \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"       \
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"     \
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"            \
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"         \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"         \
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}" \
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}" \
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"          \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"           \
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"           \
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"          \
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"         \
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"       \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"                    \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"
#define RE_DEEPSEEK_PUNCT "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

typedef struct pre_def {
    const char *names[20];  // tokenizer.ggml.pre values, NULL-terminated
    const char *regex[MAX_PRE_REGEX + 1];
    int ignore_merges;      // a whole word that is a token is taken as is
    int add_bos;            // default of add_bos_token
} pre_def;

static const pre_def k_pre_defs[] = {
    {{"default"}, {RE_PUNCT_RUN, RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, 0, 0},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
     {RE_LLAMA3},
     1,
     1},
    {{"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"}, {RE_LLAMA3}, 0, 0},
    {{"deepseek-llm"}, {"[\\r\\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_CJK, "\\p{N}+"}, 0, 0},
    {{"deepseek-coder"}, {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}, 0, 0},
    // falcon's punctuation run includes the backtick in the llama.cpp the golden data comes from
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, 0, 0},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"},
     {"\\p{N}", RE_GPT2},
     0,
     0},
    {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
      "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling"},
     {RE_GPT2},
     0,
     0},
    {{"stablelm2", "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "hunyuan", "solar-open"},
     {RE_QWEN2},
     0,
     0},
    {{"poro-chat", "bloom", "gpt3-finnish"}, {RE_PORO}, 0, 0},
    {{"viking"}, {RE_PORO, "\\p{N}"}, 0, 0},
    {{"tekken"}, {RE_TEKKEN}, 1, 1},
    {{"gpt-4o", "llama4", "kanana2"}, {RE_GPT4O}, 0, 0},
    {{"bailingmoe", "bailingmoe2", "llada-moe"}, {RE_BAILING}, 0, 0},
    {{"seed-coder"}, {RE_SEED_CODER}, 0, 0},
};

static const pre_def *find_pre(gguf_str name) {
    for (size_t i = 0; i < ARRAY_LEN(k_pre_defs); i++)
        for (const char *const *n = k_pre_defs[i].names; *n; n++)
            if (gguf_str_eq(name, *n)) return &k_pre_defs[i];
    return NULL;
}

// Token texts llama.cpp treats as end of generation (and forces to CONTROL).
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    ("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"),  // DeepSeek (split where a hex escape would swallow letters)
    "[e~[",
};
// FIM repo / file-separator / pad markers: llama.cpp auto-detects them by
// text, makes them CONTROL and counts them as end of generation.
static const char *const k_fim_eog_texts[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
};
// FIM prefix/suffix/middle markers: forced to CONTROL only.
static const char *const k_fim_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", ("<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>"),
    "<PRE>", SPM_SPACE "<PRE>", "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", ("<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>"),
    "<SUF>", SPM_SPACE "<SUF>", "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", ("<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>"),
    "<MID>", SPM_SPACE "<MID>", "<|code_middle|>", "<|middle|>",
};

// ---------------------------------------------------------------------------

struct tokenizer {
    enum vocab_kind kind;
    int32_t n_vocab;
    char *text;              // token texts as stored in the GGUF, concatenated
    uint64_t *text_off;      // [n_vocab + 1]
    char *piece;             // decoded bytes of each token (special tokens shown)
    uint64_t *piece_off;     // [n_vocab + 1]
    uint8_t *attr;           // ATTR_* bits
    float *score;            // SPM merge scores
    strmap token_ids;        // text -> id
    strmap merge_ranks;      // BPE: left 0xFF right -> rank (0xFF never occurs in UTF-8)
    int32_t bos, eos, unk;
    int add_bos;
    int add_space_prefix;    // SPM
    int ignore_merges;       // BPE
    int32_t *special;        // ids matched in raw text, longest text first
    size_t n_special;
    pcre2_code *re[MAX_PRE_REGEX];
    size_t n_re;
    size_t max_piece;
    int32_t byte_token[256];  // SPM byte fallback (<0xXX>), -1 if absent
    byte_map bytes;
};

static const char *tok_text(const tokenizer *t, int32_t id, size_t *n) {
    *n = (size_t)(t->text_off[id + 1] - t->text_off[id]);
    return t->text + t->text_off[id];
}

static const char *tok_piece(const tokenizer *t, int32_t id, size_t *n) {
    *n = (size_t)(t->piece_off[id + 1] - t->piece_off[id]);
    return t->piece + t->piece_off[id];
}

static int valid_id(const tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab; }

int32_t tokenizer_n_vocab(const tokenizer *tok) { return tok->n_vocab; }
int32_t tokenizer_bos(const tokenizer *tok) { return tok->bos; }
int32_t tokenizer_eos(const tokenizer *tok) { return tok->eos; }
int tokenizer_add_bos(const tokenizer *tok) { return tok->add_bos; }
int tokenizer_is_eog(const tokenizer *tok, int32_t id) { return valid_id(tok, id) && (tok->attr[id] & ATTR_EOG); }

size_t tokenizer_decode_cap(const tokenizer *tok) { return 3 * (tok->max_piece + 3); }

void tokenizer_free(tokenizer *tok) {
    if (!tok) return;
    free(tok->text);
    free(tok->text_off);
    free(tok->piece);
    free(tok->piece_off);
    free(tok->attr);
    free(tok->score);
    strmap_free(&tok->token_ids);
    strmap_free(&tok->merge_ranks);
    free(tok->special);
    for (size_t i = 0; i < tok->n_re; i++) pcre2_code_free(tok->re[i]);
    free(tok);
}

// ---------------------------------------------------------------------------
// initialization

static const gguf_kv *find_array(const gguf_file *f, const char *key, int want_string, rc_err *err, int *bad) {
    const gguf_kv *kv = gguf_find(f, key);
    *bad = 0;
    if (!kv) return NULL;
    int ok = kv->type == GGUF_VAL_ARRAY &&
             (want_string ? kv->arr_type == GGUF_VAL_STRING
                          : (kv->arr_type != GGUF_VAL_STRING && kv->arr_type != GGUF_VAL_ARRAY &&
                             kv->arr_type < GGUF_VAL_COUNT));
    if (!ok) {
        *bad = 1;
        rc_fail(err, "%s: %s must be an array of %s, not %s of %s", f->path, key, want_string ? "strings" : "numbers",
                gguf_value_type_name(kv->type),
                kv->type == GGUF_VAL_ARRAY ? gguf_value_type_name(kv->arr_type) : "-");
        return NULL;
    }
    return kv;
}

// Reads an optional token id key; an id outside the vocabulary keeps the default (as llama.cpp).
static int read_token_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *id, rc_err *err) {
    uint32_t v = UINT32_MAX;
    if (gguf_opt_u32(f, key, &v, err)) return -1;
    if (v != UINT32_MAX && v < (uint32_t)n_vocab) *id = (int32_t)v;
    return 0;
}

static int load_vocab(tokenizer *t, const gguf_file *f, rc_err *err) {
    int bad;
    const gguf_kv *toks = find_array(f, "tokenizer.ggml.tokens", 1, err, &bad);
    if (bad) return -1;
    if (!toks) return rc_fail(err, "%s: no tokenizer.ggml.tokens (the file has no vocabulary)", f->path);
    if (toks->arr_len == 0 || toks->arr_len > (uint64_t)INT32_MAX / 2)
        return rc_fail(err, "%s: tokenizer.ggml.tokens has %llu entries", f->path, (unsigned long long)toks->arr_len);
    const int32_t n = (int32_t)toks->arr_len;
    t->n_vocab = n;

    const gguf_kv *types = find_array(f, "tokenizer.ggml.token_type", 0, err, &bad);
    if (bad) return -1;
    if (types && types->arr_len < (uint64_t)n)
        return rc_fail(err, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", f->path,
                       (unsigned long long)types->arr_len, n);
    const gguf_kv *scores = find_array(f, "tokenizer.ggml.scores", 0, err, &bad);
    if (bad) return -1;
    if (scores && scores->arr_len < (uint64_t)n)
        return rc_fail(err, "%s: tokenizer.ggml.scores has %llu entries for %d tokens", f->path,
                       (unsigned long long)scores->arr_len, n);

    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(toks, (uint64_t)i);
        total += s.n_bytes ? s.n_bytes : 32;  // "[EMPTY_i]"
    }
    t->text = malloc(total + 1);
    t->text_off = malloc(((size_t)n + 1) * sizeof(uint64_t));
    t->attr = malloc((size_t)n);
    t->score = malloc((size_t)n * sizeof(float));
    if (!t->text || !t->text_off || !t->attr || !t->score || strmap_init(&t->token_ids, (size_t)n))
        return rc_fail(err, "out of memory loading the vocabulary");

    size_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(toks, (uint64_t)i);
        t->text_off[i] = pos;
        if (s.n_bytes == 0) {  // llama.cpp renames empty tokens so they stay unique
            pos += (size_t)snprintf(t->text + pos, 33, "[EMPTY_%d]", i);
        } else {
            memcpy(t->text + pos, s.ptr, s.n_bytes);
            pos += s.n_bytes;
        }
        const char *txt = t->text + t->text_off[i];
        size_t len = pos - t->text_off[i];
        int r = strmap_put(&t->token_ids, txt, len, i);
        if (r < 0) return rc_fail(err, "out of memory loading the vocabulary");
        if (r == 0)
            return rc_fail(err, "%s: duplicate token in vocabulary: '%.*s' has ids %d and %d", f->path, (int)len, txt,
                           strmap_get(&t->token_ids, txt, len), i);

        // Any numeric array type is accepted: range-check before the cast
        // (out of range or fractional values are undefined types).
        const double tv = types ? gguf_arr_num(types, (uint64_t)i) : TT_NORMAL;
        const int tt = tv >= 0.0 && tv <= 255.0 && tv == (double)(int)tv ? (int)tv : -1;
        switch (tt) {
        case TT_NORMAL: t->attr[i] = ATTR_NORMAL; break;
        case TT_UNKNOWN: t->attr[i] = ATTR_UNKNOWN; break;
        case TT_CONTROL: t->attr[i] = ATTR_CONTROL; break;
        case TT_USER_DEFINED: t->attr[i] = ATTR_USER_DEFINED; break;
        case TT_UNUSED: t->attr[i] = ATTR_UNUSED; break;
        case TT_BYTE: t->attr[i] = ATTR_BYTE; break;
        default: t->attr[i] = ATTR_UNDEFINED; break;
        }
        t->score[i] = scores ? (float)gguf_arr_num(scores, (uint64_t)i) : 0.0f;
    }
    t->text_off[n] = pos;
    return 0;
}

static int load_merges(tokenizer *t, const gguf_file *f, rc_err *err) {
    int bad;
    const gguf_kv *merges = find_array(f, "tokenizer.ggml.merges", 1, err, &bad);
    if (bad) return -1;
    if (!merges) return rc_fail(err, "%s: gpt2 tokenizer without tokenizer.ggml.merges", f->path);
    if (merges->arr_len > (uint64_t)INT32_MAX / 4)
        return rc_fail(err, "%s: tokenizer.ggml.merges has %llu entries", f->path, (unsigned long long)merges->arr_len);
    if (strmap_init(&t->merge_ranks, (size_t)merges->arr_len)) return rc_fail(err, "out of memory loading merges");
    char *key = NULL;
    size_t key_cap = 0;
    for (uint64_t i = 0; i < merges->arr_len; i++) {
        gguf_str s = gguf_arr_str(merges, i);
        // split at the first space after position 0, like llama.cpp (word.find(' ', 1))
        size_t sp = 0;
        for (size_t j = 1; j < s.n_bytes; j++)
            if (s.ptr[j] == ' ') {
                sp = j;
                break;
            }
        if (sp == 0) continue;  // llama.cpp stores ("", "") which can never match
        if (grow((void **)&key, &key_cap, s.n_bytes, 1)) {
            free(key);
            return rc_fail(err, "out of memory loading merges");
        }
        memcpy(key, s.ptr, s.n_bytes);
        key[sp] = (char)0xFF;
        if (strmap_put(&t->merge_ranks, key, s.n_bytes, (int32_t)i) < 0) {
            free(key);
            return rc_fail(err, "out of memory loading merges");
        }
    }
    free(key);
    return 0;
}

static int compile_regexes(tokenizer *t, const pre_def *pd, rc_err *err) {
    for (size_t i = 0; pd->regex[i]; i++) {
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pd->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof(msg));
            return rc_fail(err, "pre-tokenizer regex %zu does not compile at offset %zu: %s", i, (size_t)off,
                           (const char *)msg);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
        t->re[t->n_re++] = re;
    }
    return 0;
}

static int text_in(const char *txt, size_t len, const char *const *list, size_t n_list) {
    for (size_t i = 0; i < n_list; i++)
        if (strlen(list[i]) == len && memcmp(list[i], txt, len) == 0) return 1;
    return 0;
}


static int build_pieces(tokenizer *t, rc_err *err) {
    // Decoded text is never longer than the stored text (byte-level chars are
    // 1-2 bytes for 1 byte, "▁" is 3 bytes for 1, "<0xXX>" is 6 bytes for 1).
    size_t total = t->text_off[t->n_vocab];
    t->piece = malloc(total + 1);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof(uint64_t));
    if (!t->piece || !t->piece_off) return rc_fail(err, "out of memory building token pieces");
    size_t pos = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->piece_off[id] = pos;
        size_t n;
        const unsigned char *s = (const unsigned char *)tok_text(t, id, &n);
        char *out = t->piece + pos;
        size_t m = 0;
        uint8_t a = t->attr[id];
        if (a & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
            memcpy(out, s, n);
            m = n;
        } else if (a & ATTR_NORMAL) {
            if (t->kind == VOCAB_SPM) {
                for (size_t i = 0; i < n;) {
                    if (i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0) {
                        out[m++] = ' ';
                        i += 3;
                    } else {
                        out[m++] = (char)s[i++];
                    }
                }
            } else {
                for (size_t i = 0; i < n;) {
                    uint32_t cp;
                    size_t l = utf8_decode_lenient(s + i, n - i, &cp);
                    if (l == 0) {  // not UTF-8: keep the byte
                        out[m++] = (char)s[i++];
                        continue;
                    }
                    if (cp < 324 && t->bytes.dec[cp] >= 0) {
                        out[m++] = (char)t->bytes.dec[cp];
                    } else {  // llama.cpp prints "[UNK_BYTE_0x..]" here; keep the character instead
                        memcpy(out + m, s + i, l);
                        m += l;
                    }
                    i += l;
                }
            }
        } else if (a & ATTR_BYTE) {
            // "<0xXX>" -> the byte (llama.cpp's token_to_byte)
            if (n == 6 && memcmp(s, "<0x", 3) == 0) {
                char hex[3] = {(char)s[3], (char)s[4], 0};
                out[m++] = (char)strtol(hex, NULL, 16);
            }
        }
        // UNUSED and UNDEFINED tokens decode to nothing, as in llama.cpp.
        pos += m;
        if (m > t->max_piece) t->max_piece = m;
    }
    t->piece_off[t->n_vocab] = pos;
    return 0;
}

// Special tokens are sorted as (text length, id) pairs.
typedef struct special_key {
    size_t len;
    int32_t id;
} special_key;

static int cmp_special_key(const void *a, const void *b) {
    const special_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int build_special(tokenizer *t, rc_err *err) {
    size_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) n++;
    special_key *keys = malloc((n ? n : 1) * sizeof(special_key));
    t->special = malloc((n ? n : 1) * sizeof(int32_t));
    if (!keys || !t->special) {
        free(keys);
        return rc_fail(err, "out of memory building the special-token list");
    }
    size_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
            size_t len;
            tok_text(t, id, &len);
            keys[k++] = (special_key){.len = len, .id = id};
        }
    // llama.cpp sorts by length only (std::sort, unstable); ties go by id here.
    qsort(keys, n, sizeof(special_key), cmp_special_key);
    for (size_t i = 0; i < n; i++) t->special[i] = keys[i].id;
    t->n_special = n;
    free(keys);
    return 0;
}

static int init_impl(tokenizer *t, const gguf_file *f, rc_err *err) {
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model, err)) return rc_wrap(err, "no vocabulary");
    const pre_def *pd = NULL;
    if (gguf_str_eq(model, "gpt2")) {
        t->kind = VOCAB_BPE;
        gguf_str pre = {.ptr = "default", .n_bytes = 7};
        if (gguf_find(f, "tokenizer.ggml.pre") && gguf_get_str(f, "tokenizer.ggml.pre", &pre, err)) return -1;
        pd = find_pre(pre);
        if (!pd)
            return rc_fail(err, "%s: unknown pre-tokenizer type tokenizer.ggml.pre = '%.*s' (not supported)", f->path,
                           (int)pre.n_bytes, pre.ptr);
    } else if (gguf_str_eq(model, "llama")) {
        t->kind = VOCAB_SPM;
    } else {
        return rc_fail(err, "%s: unknown tokenizer tokenizer.ggml.model = '%.*s' (supported: gpt2, llama)", f->path,
                       (int)model.n_bytes, model.ptr);
    }
    byte_map_init(&t->bytes);
    if (load_vocab(t, f, err)) return -1;
    if (t->kind == VOCAB_BPE) {
        if (load_merges(t, f, err)) return -1;
        if (compile_regexes(t, pd, err)) return -1;
        t->ignore_merges = pd->ignore_merges;
        t->add_bos = pd->add_bos;
        t->bos = t->eos = t->unk = -1;
    } else {
        t->add_bos = 1;
        t->add_space_prefix = 1;
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        for (int i = 0; i < 3; i++) {
            int32_t *d = i == 0 ? &t->bos : i == 1 ? &t->eos : &t->unk;
            if (*d >= t->n_vocab) *d = -1;
        }
    }

    int32_t eot = -1, eom = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
    if (read_token_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err) ||
        read_token_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err) ||
        read_token_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk, err) ||
        read_token_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, &eot, err) ||
        read_token_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab, &eom, err) ||
        read_token_id(f, "tokenizer.ggml.fim_pad_token_id", t->n_vocab, &fim_pad, err) ||
        read_token_id(f, "tokenizer.ggml.fim_rep_token_id", t->n_vocab, &fim_rep, err) ||
        read_token_id(f, "tokenizer.ggml.fim_sep_token_id", t->n_vocab, &fim_sep, err))
        return -1;
    if (gguf_opt_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err) ||
        gguf_opt_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err))
        return -1;
    if (t->add_bos && t->bos < 0)
        return rc_fail(err, "%s: tokenizer.ggml.add_bos_token is true, but there is no valid bos_token_id", f->path);

    // Special tokens by text, as llama.cpp's load(): end-of-turn and FIM
    // markers become CONTROL even if the converter forgot to say so.
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *txt = tok_text(t, id, &len);
        if (text_in(txt, len, k_eog_texts, ARRAY_LEN(k_eog_texts)) ||
            text_in(txt, len, k_fim_eog_texts, ARRAY_LEN(k_fim_eog_texts)))
            t->attr[id] |= ATTR_CONTROL | ATTR_EOG;
        else if (text_in(txt, len, k_fim_texts, ARRAY_LEN(k_fim_texts)))
            t->attr[id] |= ATTR_CONTROL;
    }
    const int32_t eog_ids[] = {t->eos, eot, eom, fim_pad, fim_rep, fim_sep};
    for (size_t i = 0; i < ARRAY_LEN(eog_ids); i++)
        if (eog_ids[i] >= 0) t->attr[eog_ids[i]] |= ATTR_EOG;

    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", b);
        t->byte_token[b] = strmap_get(&t->token_ids, name, 6);
        if (t->byte_token[b] < 0) {  // llama.cpp's byte_to_token falls back to the raw byte as text
            char c = (char)b;
            t->byte_token[b] = strmap_get(&t->token_ids, &c, 1);
        }
    }
    if (build_pieces(t, err)) return -1;
    return build_special(t, err);
}

int tokenizer_init(tokenizer **out, const gguf_file *f, rc_err *err) {
    *out = NULL;
    tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return rc_fail(err, "out of memory");
    if (init_impl(t, f, err)) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

// ---------------------------------------------------------------------------
// encoding

typedef struct symbol {
    int32_t prev, next;
    uint32_t start, n;  // byte range in the word; n == 0 once merged away
} symbol;

typedef struct bigram {
    float score;   // SPM: higher first
    int32_t rank;  // BPE: lower first
    int32_t left, right;
    uint32_t size;
} bigram;

typedef struct span {
    size_t off, n;
} span;

// Per-call scratch, so that a tokenizer can be shared between threads.
typedef struct scratch {
    char *word;
    size_t word_cap;
    symbol *syms;
    size_t syms_cap;
    bigram *heap;
    size_t heap_n, heap_cap;
    char *key;
    size_t key_cap;
    span *spans[2];
    size_t spans_cap[2], spans_n[2];
    pcre2_match_data *md;
} scratch;

static void scratch_free(scratch *s) {
    free(s->word);
    free(s->syms);
    free(s->heap);
    free(s->key);
    free(s->spans[0]);
    free(s->spans[1]);
    if (s->md) pcre2_match_data_free(s->md);
}

// True if a should be popped before b.
static int bigram_first(const bigram *a, const bigram *b, int spm) {
    if (spm) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static int heap_push(scratch *s, bigram b, int spm) {
    if (grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof(bigram))) return -1;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_first(&b, &s->heap[p], spm)) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
    return 0;
}

static bigram heap_pop(scratch *s, int spm) {
    bigram top = s->heap[0];
    bigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_first(&s->heap[c + 1], &s->heap[c], spm)) c++;
        if (!bigram_first(&s->heap[c], &last, spm)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

// Splits w[0..n) into symbols of one UTF-8 character each (lead-byte length,
// clipped at the end, as llama.cpp).
static int make_symbols(scratch *s, const char *w, size_t n, size_t *n_syms) {
    if (grow((void **)&s->syms, &s->syms_cap, n + 1, sizeof(symbol))) return -1;
    size_t k = 0, off = 0;
    while (off < n) {
        size_t len = utf8_len((unsigned char)w[off]);
        if (len > n - off) len = n - off;
        s->syms[k] = (symbol){.prev = (int32_t)k - 1, .next = -1, .start = (uint32_t)off, .n = (uint32_t)len};
        off += len;
        if (off < n) s->syms[k].next = (int32_t)k + 1;
        k++;
    }
    *n_syms = k;
    return 0;
}

static int bpe_add_bigram(const tokenizer *t, scratch *s, const char *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const symbol *l = &s->syms[left], *r = &s->syms[right];
    size_t kn = (size_t)l->n + 1 + r->n;
    if (grow((void **)&s->key, &s->key_cap, kn, 1)) return -1;
    memcpy(s->key, w + l->start, l->n);
    s->key[l->n] = (char)0xFF;
    memcpy(s->key + l->n + 1, w + r->start, r->n);
    int32_t rank = strmap_get(&t->merge_ranks, s->key, kn);
    if (rank < 0) return 0;
    return heap_push(s, (bigram){.rank = rank, .left = left, .right = right, .size = l->n + r->n}, 0);
}

// One pre-tokenized word (raw bytes) -> tokens, as llm_tokenizer_bpe_session::tokenize.
static int bpe_word(const tokenizer *t, scratch *s, const char *raw, size_t n_raw, ids_vec *out) {
    if (grow((void **)&s->word, &s->word_cap, 2 * n_raw + 1, 1)) return -1;
    char *w = s->word;
    size_t n = 0;
    for (size_t i = 0; i < n_raw; i++) {
        unsigned char b = (unsigned char)raw[i];
        memcpy(w + n, t->bytes.enc[b], t->bytes.enc_len[b]);
        n += t->bytes.enc_len[b];
    }
    if (t->ignore_merges) {
        int32_t id = strmap_get(&t->token_ids, w, n);
        if (id >= 0) return ids_push(out, id);
    }
    size_t n_syms;
    if (make_symbols(s, w, n, &n_syms)) return -1;
    s->heap_n = 0;
    for (size_t i = 1; i < n_syms; i++)
        if (bpe_add_bigram(t, s, w, (int32_t)i - 1, (int32_t)i)) return -1;
    while (s->heap_n) {
        bigram b = heap_pop(s, 0);
        symbol *l = &s->syms[b.left], *r = &s->syms[b.right];
        // Stale entry: one side was merged since (llama.cpp compares the texts;
        // with fixed start offsets equal lengths mean equal texts).
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = b.left;
        if (bpe_add_bigram(t, s, w, l->prev, b.left) || bpe_add_bigram(t, s, w, b.left, l->next)) return -1;
    }
    for (int32_t i = n_syms ? 0 : -1; i >= 0; i = s->syms[i].next) {
        const symbol *sy = &s->syms[i];
        if (sy->n == 0) continue;
        int32_t id = strmap_get(&t->token_ids, w + sy->start, sy->n);
        if (id >= 0) {
            if (ids_push(out, id)) return -1;
            continue;
        }
        // Not a token: llama.cpp looks up each byte of the encoded text on its
        // own and silently drops the ones that are not tokens either.
        for (uint32_t j = 0; j < sy->n; j++) {
            int32_t bid = strmap_get(&t->token_ids, w + sy->start + j, 1);
            if (bid >= 0 && ids_push(out, bid)) return -1;
        }
    }
    return 0;
}

// Re-encodes text the way llama.cpp's unicode_cpts_from_utf8 + unicode_cpt_to_utf8
// see it: each invalid byte becomes U+FFFD. norm is what gets tokenized; proxy
// is the same bytes with the (encodable but invalid) surrogates and
// out-of-range code points replaced by U+FFFD, so PCRE2 only ever sees valid
// UTF-8. Both have the same length and byte offsets. Returns the length.
static size_t sanitize_utf8(const char *in, size_t n, char *norm, char *proxy) {
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode_lenient((const unsigned char *)in + i, n - i, &cp);
        if (l == 0) {
            cp = 0xFFFD;
            l = 1;
        }
        i += l;
        if (cp > 0x10FFFF) cp = 0xFFFD;  // llama.cpp throws here; keep going instead
        size_t k = utf8_put(cp, norm + m);
        if (cp >= 0xD800 && cp <= 0xDFFF)
            memcpy(proxy + m, UTF8_REPLACEMENT, 3);
        else
            memcpy(proxy + m, norm + m, k);
        m += k;
    }
    return m;
}

static int push_span(scratch *s, int which, size_t off, size_t n) {
    if (grow((void **)&s->spans[which], &s->spans_cap[which], s->spans_n[which] + 1, sizeof(span))) return -1;
    s->spans[which][s->spans_n[which]++] = (span){off, n};
    return 0;
}

// unicode_regex_split: each regex in turn splits every current piece into
// its matches and the unmatched gaps between them. Each piece is matched as
// a subject of its own, so lookaheads and $ stop at the piece's end.
static int regex_split(const tokenizer *t, scratch *s, const char *proxy, size_t n, int *which_out, rc_err *err) {
    int cur = 0;
    s->spans_n[0] = s->spans_n[1] = 0;
    if (push_span(s, cur, 0, n)) return rc_fail(err, "out of memory");
    for (size_t r = 0; r < t->n_re; r++) {
        int nxt = cur ^ 1;
        s->spans_n[nxt] = 0;
        for (size_t p = 0; p < s->spans_n[cur]; p++) {
            span sp = s->spans[cur][p];
            PCRE2_SPTR subj = (PCRE2_SPTR)(proxy + sp.off);
            size_t pos = 0, prev = 0;
            uint32_t opts = PCRE2_NO_UTF_CHECK;
            while (pos < sp.n) {
                int rc = pcre2_match(t->re[r], subj, sp.n, pos, opts, s->md, NULL);
                if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(opts & PCRE2_NO_JIT)) {
                    opts |= PCRE2_NO_JIT;  // deep backtracking: the interpreter uses the heap
                    continue;
                }
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof(msg));
                    return rc_fail(err, "pre-tokenizer regex failed: %s", (const char *)msg);
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
                size_t ms = ov[0], me = ov[1];
                if (me == ms) {  // empty match: never produced by the supported patterns; step over it
                    if (ms >= sp.n) break;
                    pos = ms + utf8_len(subj[ms]);
                    continue;
                }
                if (ms > prev && push_span(s, nxt, sp.off + prev, ms - prev)) return rc_fail(err, "out of memory");
                if (push_span(s, nxt, sp.off + ms, me - ms)) return rc_fail(err, "out of memory");
                prev = pos = me;
            }
            if (prev < sp.n && push_span(s, nxt, sp.off + prev, sp.n - prev)) return rc_fail(err, "out of memory");
        }
        cur = nxt;
    }
    *which_out = cur;
    return 0;
}

static int bpe_fragment(const tokenizer *t, scratch *s, const char *text, size_t n, ids_vec *out, rc_err *err) {
    // Each byte becomes at most 3 bytes (U+FFFD).
    char *norm = malloc(3 * n + 1), *proxy = malloc(3 * n + 1);
    int rc = -1;
    if (!norm || !proxy) {
        rc_fail(err, "out of memory");
        goto done;
    }
    size_t m = sanitize_utf8(text, n, norm, proxy);
    int which = 0;
    if (regex_split(t, s, proxy, m, &which, err)) goto done;
    for (size_t i = 0; i < s->spans_n[which]; i++) {
        span sp = s->spans[which][i];
        if (bpe_word(t, s, norm + sp.off, sp.n, out)) {
            rc_fail(err, "out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    free(norm);
    free(proxy);
    return rc;
}

static int spm_add_bigram(const tokenizer *t, scratch *s, const char *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const symbol *l = &s->syms[left], *r = &s->syms[right];
    // adjacent symbols: their concatenation is a slice of w
    int32_t id = strmap_get(&t->token_ids, w + l->start, (size_t)l->n + r->n);
    if (id < 0) return 0;
    return heap_push(s, (bigram){.score = t->score[id], .left = left, .right = right, .size = l->n + r->n}, 1);
}

// llm_tokenizer_spm_session::tokenize on one raw fragment.
static int spm_fragment(const tokenizer *t, scratch *s, const char *text, size_t n, int prefix_space, ids_vec *out) {
    size_t n_spaces = prefix_space ? 1 : 0;
    for (size_t i = 0; i < n; i++) n_spaces += text[i] == ' ';
    if (grow((void **)&s->word, &s->word_cap, n + 2 * n_spaces + 1, 1)) return -1;
    char *w = s->word;
    size_t m = 0;
    if (prefix_space) {
        memcpy(w, SPM_SPACE, 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(w + m, SPM_SPACE, 3);
            m += 3;
        } else {
            w[m++] = text[i];
        }
    }
    size_t n_syms;
    if (make_symbols(s, w, m, &n_syms)) return -1;
    s->heap_n = 0;
    for (size_t i = 1; i < n_syms; i++)
        if (spm_add_bigram(t, s, w, (int32_t)i - 1, (int32_t)i)) return -1;
    while (s->heap_n) {
        bigram b = heap_pop(s, 1);
        symbol *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = b.left;
        if (spm_add_bigram(t, s, w, l->prev, b.left) || spm_add_bigram(t, s, w, b.left, l->next)) return -1;
    }
    // resegment(): every merged symbol is a token by construction, so only
    // single characters can miss the vocabulary; they fall back to bytes.
    for (int32_t i = n_syms ? 0 : -1; i >= 0; i = s->syms[i].next) {
        const symbol *sy = &s->syms[i];
        int32_t id = strmap_get(&t->token_ids, w + sy->start, sy->n);
        if (id >= 0) {
            if (ids_push(out, id)) return -1;
            continue;
        }
        for (uint32_t j = 0; j < sy->n; j++) {
            int32_t bid = t->byte_token[(unsigned char)w[sy->start + j]];
            if (bid < 0) bid = t->unk;  // llama.cpp would throw; keep going with <unk>
            if (bid >= 0 && ids_push(out, bid)) return -1;
        }
    }
    return 0;
}

// A fragment of the input: a special token (id >= 0) or raw text.
typedef struct fragment {
    int32_t id;
    size_t off, n;
} fragment;

typedef struct frag_vec {
    fragment *v;
    size_t n, cap;
} frag_vec;

static int frag_push(frag_vec *a, fragment f) {
    if (grow((void **)&a->v, &a->cap, a->n + 1, sizeof(fragment))) return -1;
    a->v[a->n++] = f;
    return 0;
}

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0 || m > n) return NULL;
    return memmem(hay, n, needle, m);
}

// tokenizer_st_partition: for each special token, longest first, every raw
// fragment is split around all its occurrences.
static int partition_special(const tokenizer *t, const char *text, size_t n, int parse_special, frag_vec *out) {
    frag_vec a = {0}, b = {0};
    if (n && frag_push(&a, (fragment){.id = -1, .off = 0, .n = n})) return -1;
    for (size_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        size_t len;
        const char *needle = tok_text(t, id, &len);
        b.n = 0;
        for (size_t i = 0; i < a.n; i++) {
            fragment fr = a.v[i];
            if (fr.id >= 0) {
                if (frag_push(&b, fr)) goto oom;
                continue;
            }
            size_t off = fr.off, end = fr.off + fr.n;
            const char *hit;
            while (off < end && (hit = find_bytes(text + off, end - off, needle, len))) {
                size_t at = (size_t)(hit - text);
                if (at > off && frag_push(&b, (fragment){.id = -1, .off = off, .n = at - off})) goto oom;
                if (frag_push(&b, (fragment){.id = id})) goto oom;
                off = at + len;
            }
            if (off < end && frag_push(&b, (fragment){.id = -1, .off = off, .n = end - off})) goto oom;
        }
        frag_vec tmp = a;
        a = b;
        b = tmp;
    }
    free(b.v);
    *out = a;
    return 0;
oom:
    free(a.v);
    free(b.v);
    return -1;
}

int tokenizer_encode(const tokenizer *tok, const char *text, size_t n_bytes, int add_bos, int parse_special,
                     int32_t **out_ids, size_t *out_n, rc_err *err) {
    *out_ids = NULL;
    *out_n = 0;
    if (!text && n_bytes) return rc_fail(err, "tokenizer_encode: NULL text with %zu bytes", n_bytes);
    if (add_bos && tok->bos < 0) return rc_fail(err, "tokenizer_encode: BOS requested but the model has no BOS token");

    ids_vec ids = {0};
    frag_vec frags = {0};
    scratch s = {0};
    if (ids_push(&ids, 0)) goto oom;  // always hand back an allocation
    ids.n = 0;
    if (add_bos && ids_push(&ids, tok->bos)) goto oom;
    if (partition_special(tok, text, n_bytes, parse_special, &frags)) goto oom;
    if (tok->kind == VOCAB_BPE) {
        s.md = pcre2_match_data_create(1, NULL);
        if (!s.md) goto oom;
    }
    int prev_special = 1;  // SPM: a space is prefixed to text at the start or after a special token
    for (size_t i = 0; i < frags.n; i++) {
        fragment fr = frags.v[i];
        if (fr.id >= 0) {
            if (ids_push(&ids, fr.id)) goto oom;
            prev_special = 1;
            continue;
        }
        if (tok->kind == VOCAB_BPE) {
            if (bpe_fragment(tok, &s, text + fr.off, fr.n, &ids, err)) goto fail;
        } else {
            if (spm_fragment(tok, &s, text + fr.off, fr.n, tok->add_space_prefix && prev_special, &ids)) goto oom;
            prev_special = 0;
        }
    }
    free(frags.v);
    scratch_free(&s);
    *out_ids = ids.v;
    *out_n = ids.n;
    return 0;
oom:
    rc_fail(err, "tokenizer_encode: out of memory (%zu bytes of text)", n_bytes);
fail:
    free(ids.v);
    free(frags.v);
    scratch_free(&s);
    return -1;
}

// ---------------------------------------------------------------------------
// decoding

size_t tokenizer_token_bytes(const tokenizer *tok, int32_t id, char *out, size_t cap) {
    if (!valid_id(tok, id)) return 0;
    size_t n;
    const char *p = tok_piece(tok, id, &n);
    if (out) memcpy(out, p, n < cap ? n : cap);
    return n;
}

static size_t emit(char *out, size_t cap, size_t *m, const void *src, size_t n) {
    if (*m + n > cap) return 0;
    memcpy(out + *m, src, n);
    *m += n;
    return n;
}

size_t tokenizer_decode_stream(const tokenizer *tok, tokenizer_stream *st, int32_t id, char *out, size_t out_cap) {
    if (!valid_id(tok, id)) return 0;
    if (!st->show_special && (tok->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN))) return 0;
    size_t n_piece;
    const char *piece = tok_piece(tok, id, &n_piece);
    if (n_piece == 0) return 0;
    if (st->n_held < 0 || st->n_held > 3) st->n_held = 0;  // corrupted stream state: drop it

    // Work on held bytes + piece without copying the piece: index through both.
    size_t n_all = (size_t)st->n_held + n_piece;
    unsigned char held[3];
    size_t n_held = (size_t)st->n_held;
    memcpy(held, st->held, n_held);
#define BYTE_AT(i) ((i) < n_held ? held[(i)] : (unsigned char)piece[(i) - n_held])
    size_t m = 0, i = 0;
    st->n_held = 0;
    while (i < n_all) {
        unsigned char seq[4];
        size_t avail = n_all - i < 4 ? n_all - i : 4;
        for (size_t k = 0; k < avail; k++) seq[k] = BYTE_AT(i + k);
        int len = utf8_check_strict(seq, avail);
        if (len == 0) {  // valid so far but cut by the end: hold it for the next token
            for (size_t k = 0; k < avail; k++) st->held[k] = seq[k];
            st->n_held = (int)avail;
            break;
        }
        if (len < 0) {
            if (!emit(out, out_cap, &m, UTF8_REPLACEMENT, 3)) break;
            i += (size_t)-len;
            continue;
        }
        if (!emit(out, out_cap, &m, seq, (size_t)len)) break;
        i += (size_t)len;
    }
#undef BYTE_AT
    return m;
}

size_t tokenizer_stream_flush(const tokenizer *tok, tokenizer_stream *st, char *out, size_t out_cap) {
    (void)tok;
    if (st->n_held <= 0) {
        st->n_held = 0;
        return 0;
    }
    st->n_held = 0;
    size_t m = 0;
    emit(out, out_cap, &m, UTF8_REPLACEMENT, 3);
    return m;
}
