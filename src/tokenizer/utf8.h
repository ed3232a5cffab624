// UTF-8 as the tokenizers need it: llama.cpp's lenient decoding (for the
// pre-tokenizer) beside strict RFC 3629 checking (for streamed output).
#ifndef RECALL_TOKENIZER_UTF8_H
#define RECALL_TOKENIZER_UTF8_H

#include <stddef.h>
#include <stdint.h>

// Length of the sequence a lead byte announces, as llama.cpp's unicode_len_utf8
// (continuation bytes count as 1).
size_t utf8_len(unsigned char c);
// Writes code point cp (<= 0x10FFFF) to out[0..4); returns its length.
size_t utf8_put(uint32_t cp, char *out);
// Decodes one code point the way llama.cpp's unicode_cpt_from_utf8 does:
// lead/continuation structure is checked, overlong forms and surrogates are
// not. Returns 0 on an invalid sequence (caller substitutes U+FFFD, skips 1).
size_t utf8_decode_lenient(const unsigned char *s, size_t n, uint32_t *cp);
// Strict UTF-8 (RFC 3629) at s[0..n): returns the length of the valid
// sequence there; 0 if s is a valid but incomplete prefix cut by the end;
// or -k if invalid, where k >= 1 is the length of the maximal valid prefix
// (Unicode's "maximal subpart"), which becomes one U+FFFD.
int utf8_check_strict(const unsigned char *s, size_t n);

#endif
