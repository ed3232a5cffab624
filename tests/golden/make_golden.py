#!/usr/bin/env python3
"""Golden reference data, reference A: llama.cpp (through llama-cpp-python).

Subcommands (run from the repository root; see tests/golden/README.md):

  prompts --prose DIR     write tests/data/golden/prompts/*.txt; the long
                          prompt is cut from DIR/pride_and_prejudice.txt
                          (made by extract_prose.py).  Needs llama_cpp (its
                          tokenizer is used to size the long excerpt).
  llamacpp [--out-dir D]  evaluate every prompt with llama.cpp and write
                          llamacpp.golden, greedy.txt and meta.txt into D
                          (default tests/data/golden).
  compare A.golden B.golden     print top-1 agreement and logit differences
                          between two golden files (numpy only).
  dump FILE.golden           print a golden file's contents in short.

The binary format (little-endian), one file per reference:

  char magic[8] = "RCGOLD1\\0"
  uint32 n_prompts; uint32 top_k (20); uint32 n_vocab (49152)
  repeat n_prompts:
    uint32 name_len; char name[name_len]     (prompt file name, no NUL)
    uint32 n_tokens; int32 tokens[n_tokens]
    repeat n_tokens: int32 ids[top_k]; float32 logits[top_k]
                     (the logits after token i, i.e. predicting token i+1;
                      sorted by value descending, ties by id ascending)
    float32 last_logits[n_vocab]             (all logits at the last position)

This module is also imported by ref_numpy.py for the format I/O; it imports
llama_cpp only inside the subcommands that need it.
"""

import argparse
import hashlib
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOLDEN_DIR = os.path.join(REPO, "tests", "data", "golden")
PROMPT_DIR = os.path.join(GOLDEN_DIR, "prompts")
DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/recall/SmolLM2-135M-Instruct.Q4_1.gguf")

MAGIC = b"RCGOLD1\0"
TOP_K = 20
N_GREEDY = 64
# The prompts in the golden files, in order; GREEDY_PROMPT is used for
# the greedy-generation reference.
PROMPTS = ["a_short.txt", "b_chat.txt", "c_long.txt"]
GREEDY_PROMPT = "d_greedy.txt"

SYSTEM = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
          "trained by Hugging Face<|im_end|>\n")


def chatml(user):
    return (SYSTEM + "<|im_start|>user\n" + user + "<|im_end|>\n"
            "<|im_start|>assistant\n")


PROMPT_A = ("The capital of France is Paris. The capital of Germany is "
            "Berlin. The capital of Italy is")

PASSAGE_B = (  # abridged from Chapter 1 of Pride and Prejudice
    "It is a truth universally acknowledged, that a single man in possession "
    "of a good fortune, must be in want of a wife. \"My dear Mr. Bennet,\" "
    "said his lady to him one day, \"have you heard that Netherfield Park is "
    "let at last?\" \"Why, my dear, you must know, Mrs. Long says that "
    "Netherfield is taken by a young man of large fortune from the north of "
    "England; that he came down on Monday in a chaise and four to see the "
    "place; that he is to take possession before Michaelmas.\" \"What is his "
    "name?\" \"Bingley.\"")
PROMPT_B = chatml(
    "Read the passage below and answer the question.\n\n"
    "Passage: " + PASSAGE_B + "\n\n"
    "Question: Who has taken Netherfield Park, where does he come from, and "
    "when will he take possession of it? Answer in one or two sentences.")

# Chosen among ten candidates because llama.cpp's and the exact numpy
# reference's argmax agree at all 64 greedy steps and only two steps have a
# top1-top2 gap below 0.3 (see README.md).
PROMPT_D = chatml(
    "Write a Python function that checks whether a number is prime, and "
    "explain how it works.")

# Long prompt: a contiguous excerpt of Pride and Prejudice starting at the
# heading of Chapter 3, cut after a word in the middle of a paragraph so
# that it has about LONG_TARGET tokens (must stay within 2200..2600).
LONG_START = "Chapter 3\n"
LONG_TARGET = 2400


# ---------------------------------------------------------------------------
# format I/O
# ---------------------------------------------------------------------------

def topk_sorted(row, k=TOP_K):
    """Top-k (ids int32, values float32) of a 1-D logit row, sorted by value
    descending with ties broken by id ascending (exactly, also at the k-th
    place)."""
    row = np.asarray(row, dtype=np.float32)
    if not np.all(np.isfinite(row)):
        raise ValueError("non-finite logits")
    part = np.argpartition(-row, k - 1)[:k]
    kth = row[part].min()
    cand = np.nonzero(row >= kth)[0]
    order = np.lexsort((cand, -row[cand]))[:k]
    sel = cand[order]
    return sel.astype(np.int32), row[sel].astype(np.float32)


def write_golden(path, prompts, n_vocab, top_k=TOP_K):
    """prompts: list of dicts name, tokens, ids (n,k), vals (n,k), last."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<III", len(prompts), top_k, n_vocab))
        for p in prompts:
            name = p["name"].encode("utf-8")
            n = len(p["tokens"])
            ids = np.asarray(p["ids"], dtype="<i4")
            vals = np.asarray(p["vals"], dtype="<f4")
            last = np.asarray(p["last"], dtype="<f4")
            assert ids.shape == (n, top_k) and vals.shape == (n, top_k)
            assert last.shape == (n_vocab,)
            f.write(struct.pack("<I", len(name)) + name)
            f.write(struct.pack("<I", n))
            f.write(np.asarray(p["tokens"], dtype="<i4").tobytes())
            rec = np.empty((n, 2 * top_k), dtype="<i4")
            rec[:, :top_k] = ids
            rec[:, top_k:] = vals.view("<i4")
            f.write(rec.tobytes())
            f.write(last.tobytes())
    os.replace(tmp, path)


def read_golden(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != MAGIC:
        raise ValueError("%s: bad magic" % path)
    n_prompts, top_k, n_vocab = struct.unpack_from("<III", data, 8)
    off = 20
    prompts = []
    for _ in range(n_prompts):
        (nl,) = struct.unpack_from("<I", data, off)
        off += 4
        name = data[off:off + nl].decode("utf-8")
        off += nl
        (n,) = struct.unpack_from("<I", data, off)
        off += 4
        tokens = np.frombuffer(data, "<i4", n, off).astype(int).tolist()
        off += 4 * n
        rec = np.frombuffer(data, "<i4", n * 2 * top_k, off).reshape(
            n, 2 * top_k)
        off += 8 * n * top_k
        ids = rec[:, :top_k].astype(np.int32)
        vals = rec[:, top_k:].copy().view("<f4").astype(np.float32)
        last = np.frombuffer(data, "<f4", n_vocab, off).astype(np.float32)
        off += 4 * n_vocab
        prompts.append({"name": name, "tokens": tokens, "ids": ids,
                        "vals": vals, "last": last})
    if off != len(data):
        raise ValueError("%s: %d trailing bytes" % (path, len(data) - off))
    return {"top_k": top_k, "n_vocab": n_vocab, "prompts": prompts}


def read_prompt(name):
    with open(os.path.join(PROMPT_DIR, name), "rb") as f:
        return f.read().decode("utf-8")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------------------
# llama.cpp
# ---------------------------------------------------------------------------

def llama_versions():
    import ctypes
    import llama_cpp
    info = {"llama_cpp_python": llama_cpp.__version__}
    libdir = os.environ.get("LLAMA_CPP_LIB_PATH") or os.path.join(
        os.path.dirname(llama_cpp.__file__), "lib")
    try:
        lib = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
        for fn in ("ggml_version", "ggml_commit"):
            f = getattr(lib, fn)
            f.restype = ctypes.c_char_p
            info[fn] = f().decode()
    except (OSError, AttributeError):
        pass
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def open_llama(model):
    from llama_cpp import Llama
    return Llama(model_path=model, n_ctx=4096, logits_all=True, n_threads=2,
                 n_batch=512, verbose=False)


def tokenize(llm, text):
    # add_bos=False: the model's tokenizer.ggml.add_bos_token is false (and
    # llama.cpp would not add one anyway, see README); special=True parses
    # <|im_start|> / <|im_end|> as single special tokens.
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def eval_all(llm, tokens):
    """Logits (n_tokens, n_vocab) float32 for a fresh sequence."""
    llm.reset()
    llm.eval(tokens)
    assert llm.n_tokens == len(tokens)
    return np.array(llm.scores[:len(tokens)], dtype=np.float32)


def cmd_prompts(args):
    import llama_cpp  # noqa: F401 - fail early if missing
    llm = open_llama(args.model)
    with open(os.path.join(args.prose, "pride_and_prejudice.txt"),
              encoding="utf-8") as f:
        novel = f.read()
    start = novel.index(LONG_START)
    tail = novel[start:start + 40000]
    # candidate cut points: after a word, inside a paragraph (the next
    # character is a space or a single newline followed by more text)
    cuts = []
    for i in range(1, len(tail) - 2):
        if tail[i] in " \n" and tail[i - 1].isalpha() and \
                tail[i + 1] not in "\n" and (tail[i] == " " or
                                             tail[i + 1].isalpha()):
            cuts.append(i)
    lo, hi = 0, len(cuts) - 1
    while lo < hi:  # first cut with >= LONG_TARGET tokens
        mid = (lo + hi) // 2
        if len(tokenize(llm, tail[:cuts[mid]])) >= LONG_TARGET:
            hi = mid
        else:
            lo = mid + 1
    long_text = tail[:cuts[lo]]
    texts = {"a_short.txt": PROMPT_A, "b_chat.txt": PROMPT_B,
             "c_long.txt": long_text, "d_greedy.txt": PROMPT_D}
    os.makedirs(PROMPT_DIR, exist_ok=True)
    for name, text in texts.items():
        with open(os.path.join(PROMPT_DIR, name), "wb") as f:
            f.write(text.encode("utf-8"))
        print("%-14s %5d tokens  %6d chars" % (
            name, len(tokenize(llm, text)), len(text)))
    n_long = len(tokenize(llm, long_text))
    if not 2200 <= n_long <= 2600:
        raise SystemExit("long prompt has %d tokens" % n_long)
    return 0


def cmd_llamacpp(args):
    out_dir = args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    vers = llama_versions()
    llm = open_llama(args.model)
    n_vocab = llm.n_vocab()
    results = []
    meta = ["llama-cpp-python %s" % vers.get("llama_cpp_python"),
            "ggml %s, llama.cpp commit %s" % (vers.get("ggml_version"),
                                              vers.get("ggml_commit")),
            "system_info: %s" % vers.get("system_info", "").strip(),
            "Llama(n_ctx=4096, logits_all=True, n_threads=2, n_batch=512); "
            "tokenize(add_bos=False, special=True); flash_attn off; "
            "KV cache f16 (defaults)",
            "model %s sha256 %s" % (os.path.basename(args.model),
                                    sha256(args.model)),
            ""]
    for name in PROMPTS:
        text = read_prompt(name)
        toks = tokenize(llm, text)
        logits = eval_all(llm, toks)
        ids = np.empty((len(toks), TOP_K), dtype=np.int32)
        vals = np.empty((len(toks), TOP_K), dtype=np.float32)
        for i in range(len(toks)):
            ids[i], vals[i] = topk_sorted(logits[i])
        results.append({"name": name, "tokens": toks, "ids": ids,
                        "vals": vals, "last": logits[-1].copy()})
        meta.append("prompt %s: %d tokens, sha256 %s" % (
            name, len(toks), sha256(os.path.join(PROMPT_DIR, name))))
        print("%-14s %5d tokens" % (name, len(toks)), file=sys.stderr)
    out = os.path.join(out_dir, "llamacpp.golden")
    write_golden(out, results, n_vocab)

    # greedy generation: own loop, argmax (lowest id on exact ties), no
    # penalties, no sampling; the prompt is evaluated as one batch, then
    # one token per llama_decode call (KV cache reuse).
    toks = tokenize(llm, read_prompt(GREEDY_PROMPT))
    llm.reset()
    llm.eval(toks)
    gen, gaps = [], []
    for step in range(N_GREEDY):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        ids, vals = topk_sorted(row, 2)
        gen.append(int(ids[0]))
        gaps.append(float(vals[0]) - float(vals[1]))
        if step + 1 < N_GREEDY:
            llm.eval([int(ids[0])])
    with open(os.path.join(out_dir, "greedy.txt"), "w") as f:
        f.write(GREEDY_PROMPT + "\n")
        f.write(" ".join(map(str, toks)) + "\n")
        f.write(" ".join(map(str, gen)) + "\n")
        f.write(" ".join("%.6f" % g for g in gaps) + "\n")
    text = llm.detokenize(gen, special=True).decode("utf-8", "replace")
    meta.append("greedy %s: %d prompt tokens, min gap %.4f at step %d; "
                "text: %r" % (GREEDY_PROMPT, len(toks), min(gaps),
                              int(np.argmin(gaps)), text))
    with open(os.path.join(out_dir, "meta.txt"), "w") as f:
        f.write("\n".join(meta) + "\n")
    print("\n".join(meta), file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------
# comparison of two golden files (by id where both top-k lists have it)
# ---------------------------------------------------------------------------

def compare(a, b, out=sys.stdout):
    A, B = read_golden(a), read_golden(b)
    pb = {p["name"]: p for p in B["prompts"]}
    print("| prompt | tokens | top-1 agree | top-1 agree (A gap>0.1) | "
          "max/mean abs diff (shared top-20 ids) | max/mean abs diff "
          "(last position, all %d) |" % A["n_vocab"], file=out)
    print("|---|---|---|---|---|---|", file=out)
    for p in A["prompts"]:
        q = pb.get(p["name"])
        if q is None or q["tokens"] != p["tokens"]:
            print("| %s | missing or different tokens |" % p["name"],
                  file=out)
            continue
        n = len(p["tokens"])
        top1 = p["ids"][:, 0] == q["ids"][:, 0]
        gap = p["vals"][:, 0] - p["vals"][:, 1]
        clear = gap > 0.1
        diffs = []
        for i in range(n):
            qv = dict(zip(q["ids"][i].tolist(), q["vals"][i].tolist()))
            for j, v in zip(p["ids"][i].tolist(), p["vals"][i].tolist()):
                if j in qv:
                    diffs.append(abs(v - qv[j]))
        diffs = np.array(diffs)
        dl = np.abs(p["last"].astype(np.float64) - q["last"])
        print("| %s | %d | %.2f%% (%d/%d) | %.2f%% (%d/%d) | %.4f / %.4f | "
              "%.4f / %.4f |" % (
                  p["name"], n, 100 * top1.mean(), top1.sum(), n,
                  100 * top1[clear].mean() if clear.any() else 100,
                  top1[clear].sum(), clear.sum(), diffs.max(), diffs.mean(),
                  dl.max(), dl.mean()), file=out)


def cmd_dump(args):
    g = read_golden(args.file)
    print("top_k %d n_vocab %d" % (g["top_k"], g["n_vocab"]))
    for p in g["prompts"]:
        print("%s: %d tokens, first %s" % (p["name"], len(p["tokens"]),
                                           p["tokens"][:12]))
        for i in (0, len(p["tokens"]) - 1):
            print("  pos %d top5 %s %s" % (i, p["ids"][i, :5].tolist(),
                                          np.round(p["vals"][i, :5], 4)))
        print("  last: argmax %d max %.4f" % (int(np.argmax(p["last"])),
                                              p["last"].max()))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("prompts")
    sp.add_argument("--prose", required=True)
    sp = sub.add_parser("llamacpp")
    sp.add_argument("--out-dir", default=GOLDEN_DIR)
    sp = sub.add_parser("compare")
    sp.add_argument("a")
    sp.add_argument("b")
    sp = sub.add_parser("dump")
    sp.add_argument("file")
    args = ap.parse_args()
    if args.cmd == "prompts":
        return cmd_prompts(args)
    if args.cmd == "llamacpp":
        return cmd_llamacpp(args)
    if args.cmd == "compare":
        compare(args.a, args.b)
        return 0
    return cmd_dump(args)


if __name__ == "__main__":
    sys.exit(main())
