// Tokenizer built from the vocabulary stored in a GGUF file. It reproduces
// llama.cpp's tokenizers (src/llama-vocab.cpp, src/unicode.cpp) token for
// token: byte-level BPE ("gpt2" models, with the pre-tokenizer regexes chosen
// by tokenizer.ggml.pre) and SentencePiece-style BPE ("llama" models, merges
// by score with <0xXX> byte fallback). tests/test_tokenizer.c checks it
// against ids produced by llama.cpp itself (tests/golden/make_tokenizer_golden.py).
//
// A tokenizer is immutable after tokenizer_init, so one instance may be used
// from several threads at once (each call allocates its own scratch).
#ifndef RECALL_TOKENIZER_TOKENIZER_H
#define RECALL_TOKENIZER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/gguf.h"

typedef struct tokenizer tokenizer;  // opaque

// Reads tokenizer.ggml.* from f and copies everything it needs, so f may be
// closed afterwards. Fails (naming the value) on an unknown tokenizer.ggml.model
// or tokenizer.ggml.pre, and on malformed or inconsistent vocabulary arrays.
int tokenizer_init(tokenizer **out, const gguf_file *f, rc_err *err);
void tokenizer_free(tokenizer *tok);  // NULL-safe

int32_t tokenizer_n_vocab(const tokenizer *tok);
int32_t tokenizer_bos(const tokenizer *tok);  // -1 if none
int32_t tokenizer_eos(const tokenizer *tok);  // -1 if none
// tokenizer.ggml.add_bos_token; default 1 for "llama" (SPM) models and the
// llama3-style BPE pre-tokenizers, 0 for other BPE models. 0 when there is no BOS.
int tokenizer_add_bos(const tokenizer *tok);
// End of generation: eos, eot, eom, the FIM pad/repo/file-separator ids given
// in the GGUF, and tokens whose text is one of llama.cpp's end-of-turn markers
// (<|im_end|>, <|eot_id|>, <|endoftext|>, <end_of_turn>, ...).
int tokenizer_is_eog(const tokenizer *tok, int32_t id);

// Encodes n_bytes of text into *out_ids (malloc'd even when *out_n is 0;
// caller frees). add_bos prepends BOS (error if the model has none).
// parse_special: text equal to a control or unknown-type token becomes that
// token (llama.cpp's special=true). User-defined tokens (type 4) are matched
// whether or not parse_special is set, as in llama.cpp.
// Invalid UTF-8 never fails: in BPE models each invalid byte is encoded as
// U+FFFD, exactly as llama.cpp does; SPM models fall back to <0xXX> tokens.
int tokenizer_encode(const tokenizer *tok, const char *text, size_t n_bytes, int add_bos, int parse_special,
                     int32_t **out_ids, size_t *out_n, rc_err *err);

// Streaming decode to valid UTF-8. Zero-initialize the stream
// (tokenizer_stream st = {0}; set show_special to print control tokens).
// Each call appends the bytes of token id and writes to out only complete
// UTF-8 sequences: the trailing part of an incomplete multi-byte sequence is
// held (at most 3 bytes) until later tokens complete it; bytes that cannot
// be part of valid UTF-8 become U+FFFD. Control and unknown-type tokens
// decode to nothing unless show_special is set. No leading-space stripping is
// done for SPM models (a piece "▁Hello" decodes to " Hello").
// Returns the number of bytes written, never more than out_cap. The output
// for one call is at most tokenizer_decode_cap(tok) bytes: with an out_cap at
// least that large nothing is ever dropped; with a smaller out_cap the output
// is cut at a character boundary and the rest of that token's text is lost.
typedef struct tokenizer_stream {
    unsigned char held[8];
    int n_held;
    int show_special;
} tokenizer_stream;

size_t tokenizer_decode_stream(const tokenizer *tok, tokenizer_stream *st, int32_t id, char *out, size_t out_cap);
// Emits the held bytes of an unfinished sequence as one U+FFFD (3 bytes,
// written only if out_cap >= 3) and resets the stream's held bytes.
size_t tokenizer_stream_flush(const tokenizer *tok, tokenizer_stream *st, char *out, size_t out_cap);
// Largest output of one tokenizer_decode_stream call:
// 3 * (longest token piece + 3 held bytes), since every byte may become U+FFFD.
size_t tokenizer_decode_cap(const tokenizer *tok);

// Raw bytes of one token as llama.cpp's token_to_piece(special=true) gives
// them (control tokens give their text), without UTF-8 holding. Returns the
// full length and writes min(length, cap) bytes; 0 for an invalid id.
size_t tokenizer_token_bytes(const tokenizer *tok, int32_t id, char *out, size_t cap);

#endif
