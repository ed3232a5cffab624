#!/usr/bin/env python3
"""Reference token ids for tests/test_tokenizer.c, produced by llama.cpp's own
tokenizer through llama-cpp-python (the independent implementation).

Run with the reference venv (launch/setup.sh builds it):
    /root/.cache/recall/refenv/bin/python tests/golden/make_tokenizer_golden.py [model.gguf]

Writes into tests/data/tokenizer/:
  golden.txt             one record per line (format below)
  spm_tiny.gguf          a hand-made SentencePiece-style vocabulary (vocab only, no tensors)
  spm_tiny_noprefix.gguf the same with tokenizer.ggml.add_space_prefix = false

Record formats (fields separated by one space; byte strings as lowercase hex, "-" when empty):
  tok  <vocab> <parse_special> <input> <detok> <detok_utf8> <roundtrip> <n_ids> <id>...
       vocab: "smollm2" (the real model), "pre:<name>" (the real model's vocabulary
       rewritten with tokenizer.ggml.pre = <name>), or the name of a .gguf in this directory
       without extension. detok: llama.cpp's pieces (token_to_piece, special=True) concatenated;
       detok_utf8: the same decoded as UTF-8 with errors="replace"; roundtrip: detok == input.
       detok is "=" when it equals input, detok_utf8 is "=" when it equals detok.
  eog  <vocab> <n> <id>...                 ids for which llama_vocab_is_eog is true
  meta <vocab> <n_vocab> <bos> <eos> <add_bos>
  chat <vocab> <system or @ for none> <user> <expected text>   (expected from the Jinja template)
"""
import ctypes
import os
import sys
import tempfile

import gguf
import jinja2
import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "data", "tokenizer")
DEFAULT_MODEL = os.path.expanduser("~/.cache/recall/SmolLM2-135M-Instruct.Q4_1.gguf")

PARAGRAPH = (
    "The history of natural language processing generally started in the 1950s, although work can be found "
    "from earlier periods. In 1950, Alan Turing published an article titled \"Computing Machinery and "
    "Intelligence\" which proposed what is now called the Turing test as a criterion of intelligence. "
    "The Georgetown experiment in 1954 involved fully automatic translation of more than sixty Russian "
    "sentences into English. The authors claimed that within three or five years, machine translation "
    "would be a solved problem. However, real progress was much slower, and after the ALPAC report in "
    "1966, which found that ten-year-long research had failed to fulfill the expectations, funding for "
    "machine translation was dramatically reduced. Little further research in machine translation was "
    "conducted until the late 1980s when the first statistical machine translation systems were developed.\n\n"
    "Up to the 1980s, most natural language processing systems were based on complex sets of hand-written "
    "rules. Starting in the late 1980s, however, there was a revolution in natural language processing with "
    "the introduction of machine learning algorithms for language processing. This was due to both the "
    "steady increase in computational power (see Moore's law) and the gradual lessening of the dominance of "
    "Chomskyan theories of linguistics (e.g. transformational grammar), whose theoretical underpinnings "
    "discouraged the sort of corpus linguistics that underlies the machine-learning approach to language "
    "processing. In the 2010s, representation learning and deep neural network-style machine learning "
    "methods became widespread in natural language processing. That popularity was due partly to a flurry "
    "of results showing that such techniques can achieve state-of-the-art results in many natural language "
    "tasks, e.g., in language modeling and parsing. This is increasingly important in medicine and "
    "healthcare, where NLP helps analyze notes and text in electronic health records that would otherwise "
    "be inaccessible for study when seeking to improve care or protect patient privacy.\n"
)

# (input bytes, parse_special)
CASES = [
    (b"Hello world", 0),
    (b"Hello, world! How are you today?", 0),
    (b"I'm sure you're right, but they'll say we've done what he'd do. It's Bob's.", 0),
    (b"DON'T YOU'LL I'M THEY'RE 'S", 0),
    (b"12345 3.14159", 0),
    (b"Phone: +1 (555) 123-4567, year 2026, 1,000,000.00 and 007", 0),
    (b"def foo(x):\n    return x * 2  # double\n", 0),
    (b"int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n", 0),
    (b"a  b   c    d     e", 0),
    (b"   leading and trailing   ", 0),
    (b"line1\n\nline2\r\nline3\n\n\n", 0),
    (b"\tindented\t\ttabs\t", 0),
    ("Café naïve résumé façade Ångström".encode(), 0),
    ("Größe Straße Übermäßig".encode(), 0),
    ("你好，世界！这是一个测试。".encode(), 0),
    ("こんにちは世界、カタカナとひらがな".encode(), 0),
    ("안녕하세요 세계".encode(), 0),
    ("I love 🦙 and 🤗! 👍🏽 👨‍👩‍👧".encode(), 0),
    ("English русский ελληνικά العربية עברית हिन्दी".encode(), 0),
    (b"Wait... what?!?! --- *** ### @@@ ~~~ ^^^ |||", 0),
    (b"https://example.com/path?q=1&x=y user@example.org", 0),
    (b"# Title\n\n- item 1\n- item 2\n\n```python\nprint('hi')\n```", 0),
    (b'{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}', 0),
    (b"<|im_start|>user\nHello<|im_end|>\n", 0),
    (b"<|im_start|>user\nHello<|im_end|>\n", 1),
    (b"<|im_start|>", 1),
    (b"<|im_start|>", 0),
    (b"<|im_start", 1),
    (b"text<|im_end|>more<|endoftext|> <repo_name>x", 1),
    (b"", 0),
    (b" ", 0),
    (b"\n", 0),
    (PARAGRAPH.encode(), 0),
    ("a\u00a0b\u2003c\u3000d \u2028e".encode(), 0),
    (b"\xff\xfe hello \xc3 w\xe2\x82orld \xed\xa0\x80 \xc0\x80 end\xe2", 0),
    ("e\u0301 n\u0303 a\u0308".encode(), 0),
    ("∑ x² ≤ ∞ → ∀ε>0 ≠ ∂f/∂x".encode(), 0),
    ("٣٤٥ ①②③ ½ ²³".encode(), 0),
    (b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!!!!!!!!!!!!!", 0),
    (b"rock 'n' roll 'tis the 'S and ''quoted'' 'll've", 0),
    (b"hello \n world  \n\n  x \t\n", 0),
    (b"a\x00b\x01\x02\x7f", 0),
    (b"pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious", 0),
    (b"                                                                 x", 0),
]

# Pre-tokenizers checked on the real vocabulary with tokenizer.ggml.pre rewritten.
PRE_NAMES = ["default", "gpt-2", "llama-bpe", "qwen2", "starcoder", "deepseek-llm", "deepseek-coder", "falcon",
             "tekken", "gpt-4o", "poro-chat", "viking", "bailingmoe", "seed-coder", "command-r"]

SPM_CASES = [
    (b"hello world", 0),
    (b"Hello World", 0),
    (b"the cat sat on the mat.", 0),
    (b"  two  spaces ", 0),
    (b"", 0),
    (b" ", 0),
    (b"<|user|>hi there", 0),
    (b"<|ctrl|>hi", 0),
    (b"<|ctrl|>hi", 1),
    (b"a<|user|> b<|ctrl|> c", 1),
    ("café 世界 naïve".encode(), 0),
    (b"line\nbreak\ttab", 0),
    ("emoji 🦙!".encode(), 0),
    (b"bad \xff utf \xc3", 0),
    (b"in the interesting thing", 0),
]


def hexs(b):
    return b.hex() if b else "-"


@llama_cpp.llama_log_callback
def _quiet_log(level, text, user_data):
    pass


class Vocab:
    def __init__(self, path):
        llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        p = llama_cpp.llama_model_default_params()
        p.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), p)
        if not self.model:
            raise RuntimeError("llama.cpp refused " + path)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)

    def close(self):
        llama_cpp.llama_model_free(self.model)

    def n_vocab(self):
        return llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text, special):
        cap = len(text) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, cap, False, bool(special))
        if n < 0:
            raise RuntimeError("tokenize failed")
        return list(buf[:n])

    def piece(self, tok):
        buf = ctypes.create_string_buffer(1024)
        n = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, 1024, 0, True)
        if n < 0:
            raise RuntimeError("piece too long")
        return buf.raw[:n]


def tok_records(name, vocab, cases):
    lines = []
    for text, special in cases:
        ids = vocab.tokenize(text, special)
        detok = b"".join(vocab.piece(i) for i in ids)
        utf8 = detok.decode("utf-8", errors="replace").encode()
        rt = 1 if detok == text else 0
        detok_f = "=" if detok == text else hexs(detok)
        utf8_f = "=" if utf8 == detok else hexs(utf8)
        lines.append(" ".join(["tok", name, str(special), hexs(text), detok_f, utf8_f, str(rt), str(len(ids))]
                              + [str(i) for i in ids]))
    return lines


def meta_records(name, vocab):
    v = vocab.vocab
    eog = [i for i in range(vocab.n_vocab()) if llama_cpp.llama_vocab_is_eog(v, i)]
    return [" ".join(["eog", name, str(len(eog))] + [str(i) for i in eog]),
            " ".join(["meta", name, str(vocab.n_vocab()), str(llama_cpp.llama_vocab_bos(v)),
                      str(llama_cpp.llama_vocab_eos(v)), str(int(llama_cpp.llama_vocab_get_add_bos(v)))])]


def field_value(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]) for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    return f.parts[f.data[0]][0].item()


def write_vocab_gguf(path, pre, tokens, types, merges):
    # Same content and key order as make_vocab_gguf() in tests/test_tokenizer.c.
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_vocab():
    """A tiny SentencePiece vocabulary: specials, 256 byte tokens, characters and
    a few merges with scores (higher = merged first)."""
    toks = [("<unk>", 2, 0.0), ("<s>", 3, 0.0), ("</s>", 3, 0.0)]
    toks += [("<0x%02X>" % b, 6, 0.0) for b in range(256)]
    toks += [("<|user|>", 4, 0.0), ("<|ctrl|>", 3, 0.0)]
    merges = ["▁t", "he", "▁the", "in", "▁a", "er", "on", "▁h", "ll", "▁he", "llo", "▁hello", "▁w", "or", "▁wor",
              "ld", "▁world", "at", "▁c", "▁cat", "▁s", "▁sat", "▁o", "▁on", "▁m", "▁mat", "▁th", "ing", "▁in",
              "re", "es", "st", "int", "▁int", "▁inter", "ter", "▁interest", "▁interesting", "th", "▁thing", "ca",
              "fé", "▁ca", "▁café", "▁▁", "na", "▁na", "ïve", "▁Hel", "Hel", "▁W", "lo"]
    chars = list("abcdefghijklmnopqrstuvwxyzHW.,!▁éïv世")  # "界" deliberately missing: byte fallback
    score = -1.0
    for m in merges:
        toks.append((m, 1, score))
        score -= 1.0
    for c in chars:
        toks.append((c, 1, score))
        score -= 1.0
    seen = set()
    out = []
    for t in toks:
        if t[0] not in seen:
            seen.add(t[0])
            out.append(t)
    return out


def write_spm_gguf(path, add_space_prefix):
    toks = spm_vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([t[0] for t in toks])
    w.add_token_types([t[1] for t in toks])
    w.add_token_scores([t[2] for t in toks])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    if not add_space_prefix:
        w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL
    os.makedirs(OUT_DIR, exist_ok=True)
    lines = ["# generated by tests/golden/make_tokenizer_golden.py with llama-cpp-python %s; do not edit"
             % llama_cpp.__version__]

    v = Vocab(model)
    lines += meta_records("smollm2", v)
    lines += tok_records("smollm2", v, CASES)
    v.close()

    reader = gguf.GGUFReader(model)
    tmpl = field_value(reader, "tokenizer.chat_template")
    env = jinja2.Environment()
    for system, user in [(None, "What is the capital of France?"),
                         ("You are a pirate.", "Tell me a joke\nabout cats  "),
                         ("", "hi")]:
        msgs = ([] if system is None else [{"role": "system", "content": system}]) + [{"role": "user", "content": user}]
        expected = env.from_string(tmpl).render(messages=msgs, add_generation_prompt=True)
        lines.append(" ".join(["chat", "smollm2", "@" if system is None else hexs(system.encode()),
                               hexs(user.encode()), hexs(expected.encode())]))
        if system is None:  # the encoded chat prompt, as the CLI would feed it
            cv = Vocab(model)
            lines += tok_records("smollm2", cv, [(expected.encode(), 1)])
            cv.close()

    tokens = [t.decode() for t in field_value(reader, "tokenizer.ggml.tokens")]
    types = field_value(reader, "tokenizer.ggml.token_type")
    merges = [m.decode() for m in field_value(reader, "tokenizer.ggml.merges")]
    short_cases = [c for c in CASES if len(c[0]) < 1000]
    with tempfile.TemporaryDirectory() as tmp:
        for pre in PRE_NAMES:
            path = os.path.join(tmp, pre + ".gguf")
            write_vocab_gguf(path, pre, tokens, types, merges)
            try:
                pv = Vocab(path)
            except RuntimeError:
                print("llama.cpp does not know pre-tokenizer %r; skipped" % pre, file=sys.stderr)
                continue
            lines += tok_records("pre:" + pre, pv, short_cases)
            pv.close()

    for name, prefix in [("spm_tiny", True), ("spm_tiny_noprefix", False)]:
        path = os.path.join(OUT_DIR, name + ".gguf")
        write_spm_gguf(path, prefix)
        sv = Vocab(path)
        lines += meta_records(name, sv)
        lines += tok_records(name, sv, SPM_CASES)
        sv.close()

    with open(os.path.join(OUT_DIR, "golden.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d records" % (len(lines) - 1))


if __name__ == "__main__":
    main()
