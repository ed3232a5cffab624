#!/usr/bin/env python3
"""Golden logits for the tiny synthetic models of tests/test_engine.c.

For every <name>.gguf in --dir (the models of tests/support/tiny_zoo.c,
written by the make_tiny_models tool) this script runs an independent numpy
forward pass and writes <name>.logits, which tests/test_engine.c compares
with the C engine.  Only the .logits files are committed (tests/data/tiny/):
*.gguf is git-ignored, and test_engine writes the same models itself, checking
their hash against the one recorded here.  Nothing in this script reads or
calls the C code: the GGUF is parsed by the `gguf` package and every tensor is
dequantized by `gguf.quants.dequantize` (the Python reimplementation of
ggml's block formats).

Regenerating (from the repository root, about 5 s once built):

    cmake -S . -B build && cmake --build build --target make_tiny_models
    build/tests/make_tiny_models tests/data/tiny
    python3 tests/golden/make_tiny_golden.py

The forward pass follows the published model definitions, not the C code:

  * HF transformers' LlamaForCausalLM / Qwen2ForCausalLM (eager attention):
        x = embed_tokens[tok]
        per layer:  h = x + o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x))))
                    x = h + down_proj(silu(gate_proj(rms(h))) * up_proj(rms(h)))
        logits = lm_head(rms(x))          (lm_head = embed_tokens when tied)
    RMSNorm x / sqrt(mean(x^2) + eps) * w; RoPE with HF's rotate_half, i.e.
    pairs (i, i + head_dim/2), inv_freq[i] = base^(-2i/head_dim); GQA by
    repeat_kv (query head h uses KV head h // (n_head / n_head_kv)); scale
    1/sqrt(head_dim); causal softmax; Qwen2 adds biases to q, k and v only.
  * llama.cpp's GGUF conventions, undone to get back to the HF weights:
      - llama q/k weights are stored permuted (convert_hf_to_gguf.py's
        LlamaModel.permute: per head, HF rows (i, i + hd/2) become rows
        (2i, 2i+1)), which is why llama.cpp rotates adjacent pairs.  We apply
        the inverse permutation and then HF's rotate_half.  Qwen2 weights are
        stored as in HF (llama.cpp uses NeoX RoPE for it), so nothing is undone.
      - {arch}.rope.scaling.type = "linear" with .factor f: HF's linear
        scaling, positions / f.
      - rope_freqs.weight (llama 3.1 scaling): llama.cpp divides inv_freq[i]
        by factor[i].  The factors are checked against HF's
        _compute_llama3_parameters() with the generator's settings (see
        LLAMA3_PARAMS) before they are used.
      - token_embd / output / blk.N.{attn,ffn}_* names, output.weight absent
        when the output matrix is tied to the embedding.

Precision: float64 throughout (weights are exact after dequantization), so
the reference error is far below the C engine's float32 error.  A second
set of logits ("f16kv") rounds K (after RoPE) and V to IEEE float16 (round
to nearest even) before attention: what an fp16 KV cache stores.

Reuse: the Model class of ref_numpy.py (the SmolLM2 reference) provides the
RMSNorm (`rms`), the matrix product (`mm`) and the f16 rounding (`f16`); the
rest of that class is llama-only (no biases, no scaling, head_dim = d/n_head),
so TinyModel replaces its constructor and forward pass.

Sequences (token ids are seeded, fixed per model; id 0 and the last id are
always present):
  * "main": 64 tokens, logits at every position (all models);
  * "long": 1100 tokens, logits at SPARSE positions around the fast backend's
    tile edges (256, 512, 1024), every 37th position and the last one
    (llama3_q8_0_mqa only; its context is 2048).

File format (<name>.logits), little-endian:

    char    magic[8] = "RCTINY1\\0"
    uint64  gguf_n_bytes             size of <name>.gguf it was computed from
    uint64  gguf_fnv1a64             FNV-1a 64 of that file's bytes
    uint32  n_vocab
    uint32  n_seqs
    repeat n_seqs:
      uint32  name_len; char name[name_len]            no NUL
      uint32  n_tokens; int32 tokens[n_tokens]
      uint32  n_rows;   int32 positions[n_rows]         ascending, < n_tokens
      float32 exact[n_rows][n_vocab]   logits after token positions[r]
      float32 f16kv[n_rows][n_vocab]   same with K and V rounded to float16

Usage:
    python3 tests/golden/make_tiny_golden.py [--dir tests/data/tiny]
        [--out-dir DIR] [--only NAME,...] [--variant V]
--variant writes a deliberately wrong reference (for checking that
test_engine catches the mistake; only tests/data/tiny_mutants/ holds them):
    neox-llama        llama: NeoX pairs on the stored (permuted) weights
    adjacent-qwen2    qwen2: adjacent pairs (2i, 2i+1)
    no-bias           qwen2: drop the q/k/v biases
    no-linear         ignore linear RoPE scaling
    no-freq-factors   ignore rope_freqs.weight
    kv-interleave     query head h uses KV head h % n_head_kv
    no-final-norm     skip the output RMSNorm's weight (x / rms only)
    eps-x10           RMSNorm epsilon 10x too large (a small error: ~1e-5
                      relative on the llama models, ~1e-6 on qwen2's eps 1e-6)
    f16-k-only        the f16kv logits round K but not V

Dependencies: numpy, gguf (both installed for the system python3; tested
with numpy 2.4.6, gguf 0.19.0).
"""

import argparse
import math
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TINY_DIR = os.path.join(REPO, "tests", "data", "tiny")
sys.path.insert(0, HERE)
from ref_numpy import Model as RefModel  # noqa: E402

MAGIC = b"RCTINY1\0"
MAIN_LEN = 64
LONG_LEN = 1100
LONG_MODELS = ("llama3_q8_0_mqa",)
# Llama 3.1 scaling settings of tests/support/tiny_zoo.c, per model, for the
# check of rope_freqs.weight: (factor, low_freq_factor, high_freq_factor,
# original_max_position_embeddings).
LLAMA3_PARAMS = {"llama3_q8_0_mqa": (8.0, 1.0, 4.0, 256)}
VARIANTS = ("neox-llama", "adjacent-qwen2", "no-bias", "no-linear",
            "no-freq-factors", "kv-interleave", "no-final-norm", "eps-x10",
            "f16-k-only")


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def unpermute_llama(w, n_heads):
    """Inverse of convert_hf_to_gguf.py's LlamaModel.permute:
    permute(w, n) = w.reshape(n, 2, rows/n/2, cols).swapaxes(1, 2).reshape(w.shape)."""
    rows = w.shape[0]
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def hf_llama3_inv_freq(inv_freq, factor, low, high, old_ctx):
    """transformers' _compute_llama3_parameters (modeling_rope_utils.py)."""
    low_wavelen = old_ctx / low
    high_wavelen = old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    out = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, out)


class TinyModel(RefModel):
    """HF Llama/Qwen2 on a tiny GGUF, float64 (see the module docstring)."""

    def __init__(self, path, variant=None):  # noqa: C901 (one flat reader)
        import gguf
        self.name = os.path.basename(path)[:-len(".gguf")]
        self.variant = variant
        self.dtype = np.float64
        self.emulate = False  # RefModel.mm: plain products, no Q8 activations
        r = gguf.GGUFReader(path)
        f = r.fields

        def val(key, default=None):
            if key not in f:
                if default is None:
                    raise SystemExit("%s: missing key %s" % (path, key))
                return default
            return f[key].contents()

        self.arch = val("general.architecture")
        if self.arch not in ("llama", "qwen2"):
            raise SystemExit("%s: unsupported architecture %r" % (path, self.arch))
        a = self.arch + "."
        self.n_layer = int(val(a + "block_count"))
        self.d = int(val(a + "embedding_length"))
        self.n_head = int(val(a + "attention.head_count"))
        self.n_kv = int(val(a + "attention.head_count_kv"))
        self.n_ff = int(val(a + "feed_forward_length"))
        self.eps = float(val(a + "attention.layer_norm_rms_epsilon"))
        if variant == "eps-x10":
            self.eps *= 10
        self.base = float(val(a + "rope.freq_base", 10000.0))
        self.hd = int(val(a + "attention.key_length", self.d // self.n_head))
        assert int(val(a + "attention.value_length", self.hd)) == self.hd
        assert int(val(a + "rope.dimension_count", self.hd)) == self.hd, \
            "partial rotary embeddings are not used by the tiny models"
        assert self.n_head % self.n_kv == 0
        self.pos_scale = 1.0
        if a + "rope.scaling.type" in f:
            kind = val(a + "rope.scaling.type")
            if kind == "linear" and variant != "no-linear":
                self.pos_scale = 1.0 / float(val(a + "rope.scaling.factor"))
            elif kind not in ("linear", "none"):
                raise SystemExit("%s: rope scaling %r" % (path, kind))

        t = {}
        for ti in r.tensors:
            w = gguf.quants.dequantize(ti.data, ti.tensor_type)
            t[ti.name] = np.asarray(w, dtype=np.float64)
        # HF: inv_freq[i] = base^(-2i/hd), i < hd/2
        inv = self.base ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        if "rope_freqs.weight" in t:
            fac = t["rope_freqs.weight"]
            assert fac.shape == (self.hd // 2,)
            if self.name in LLAMA3_PARAMS:
                hf = hf_llama3_inv_freq(inv, *LLAMA3_PARAMS[self.name])
                err = np.max(np.abs(inv / fac - hf) / hf)
                assert err < 1e-6, "rope_freqs.weight differs from HF's llama3 " \
                    "frequencies by %g" % err
            if variant != "no-freq-factors":
                inv = inv / fac
        self.inv_freq = inv

        self.embd = t["token_embd.weight"]                      # (vocab, d)
        self.tied = "output.weight" not in t
        self.out = self.embd if self.tied else t["output.weight"]
        self.n_vocab = self.out.shape[0]
        self.out_norm = t["output_norm.weight"]
        if variant == "no-final-norm":
            self.out_norm = np.ones_like(self.out_norm)
        # llama GGUF q/k rows are permuted for adjacent-pair RoPE: undo it.
        undo = self.arch == "llama" and variant != "neox-llama"
        self.layers = []
        for i in range(self.n_layer):
            p = "blk.%d." % i
            wq, wk = t[p + "attn_q.weight"], t[p + "attn_k.weight"]
            if undo:
                wq, wk = unpermute_llama(wq, self.n_head), unpermute_llama(wk, self.n_kv)
            L = {"attn_norm": t[p + "attn_norm.weight"],
                 "ffn_norm": t[p + "ffn_norm.weight"],
                 # stored (out, in); kept transposed (in, out) for x @ W
                 "wq": wq.T, "wk": wk.T, "wv": t[p + "attn_v.weight"].T,
                 "wo": t[p + "attn_output.weight"].T,
                 "wg": t[p + "ffn_gate.weight"].T,
                 "wu": t[p + "ffn_up.weight"].T,
                 "wd": t[p + "ffn_down.weight"].T}
            for b in ("q", "k", "v"):
                key = p + "attn_%s.bias" % b
                if self.arch == "qwen2":
                    assert key in t, "qwen2 without %s" % key
                L["b" + b] = t.get(key) if variant != "no-bias" else None
            self.layers.append(L)
        assert self.layers[0]["wq"].shape == (self.d, self.n_head * self.hd)
        assert self.layers[0]["wk"].shape == (self.d, self.n_kv * self.hd)
        assert self.layers[0]["wd"].shape == (self.n_ff, self.d)

    def rope(self, x, pos, style="hf"):
        """x: (T, H, hd) float64, pos: (T,).  HF's rotate_half (pairs
        (i, i+hd/2)); the variant adjacent-qwen2 uses (2i, 2i+1) instead."""
        ang = (pos[:, None] * self.pos_scale) * self.inv_freq[None, :]
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        y = np.empty_like(x)
        if self.variant == "adjacent-qwen2" and self.arch == "qwen2":
            x0, x1 = x[..., 0::2], x[..., 1::2]
            y[..., 0::2] = x0 * c - x1 * s
            y[..., 1::2] = x0 * s + x1 * c
            return y
        h = self.hd // 2
        x0, x1 = x[..., :h], x[..., h:]
        y[..., :h] = x0 * c - x1 * s
        y[..., h:] = x1 * c + x0 * s
        return y

    def forward(self, tokens, f16kv=False):
        """Logits (T, vocab) for the whole sequence."""
        T = len(tokens)
        H, KV, hd = self.n_head, self.n_kv, self.hd
        rep = H // KV
        pos = np.arange(T, dtype=np.float64)
        x = self.embd[np.asarray(tokens)].copy()
        mask = np.triu(np.ones((T, T), dtype=bool), k=1)
        scale = 1.0 / math.sqrt(hd)
        for L in self.layers:
            xn = self.rms(x, L["attn_norm"])
            q, k, v = self.mm(xn, L["wq"]), self.mm(xn, L["wk"]), self.mm(xn, L["wv"])
            if L["bq"] is not None:
                q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
            q = self.rope(q.reshape(T, H, hd), pos)
            k = self.rope(k.reshape(T, KV, hd), pos)
            v = v.reshape(T, KV, hd)
            if f16kv:
                k = self.f16(k)
                v = v if self.variant == "f16-k-only" else self.f16(v)
            att = np.empty((T, H, hd))
            for h in range(H):
                g = h % KV if self.variant == "kv-interleave" else h // rep
                s = (q[:, h, :] @ k[:, g, :].T) * scale          # (T, T)
                s[mask] = -np.inf
                s -= s.max(axis=1, keepdims=True)
                np.exp(s, out=s)
                s /= s.sum(axis=1, keepdims=True)
                att[:, h, :] = s @ v[:, g, :]
            x = x + self.mm(att.reshape(T, H * hd), L["wo"])
            hn = self.rms(x, L["ffn_norm"])
            gt, up = self.mm(hn, L["wg"]), self.mm(hn, L["wu"])
            x = x + self.mm(gt / (1.0 + np.exp(-gt)) * up, L["wd"])
        return self.mm(self.rms(x, self.out_norm), self.out.T)


def sequences(name, n_vocab):
    """[(seq name, tokens, positions)] for one model; seeded by the name."""
    seed = fnv1a64(name.encode()) & 0xffffffff
    rng = np.random.default_rng(seed)
    out = []
    toks = rng.integers(0, n_vocab, MAIN_LEN).astype(np.int32)
    toks[0], toks[MAIN_LEN // 2] = n_vocab - 1, 0
    out.append(("main", toks, np.arange(MAIN_LEN)))
    if name in LONG_MODELS:
        toks = rng.integers(0, n_vocab, LONG_LEN).astype(np.int32)
        toks[0], toks[700] = n_vocab - 1, 0
        rows = set(range(0, LONG_LEN, 37)) | {LONG_LEN - 1}
        for edge in (256, 512, 1024):
            rows |= set(range(edge - 3, edge + 3))
        out.append(("long", toks, np.array(sorted(rows))))
    return out


def write_logits(path, gguf_path, n_vocab, seqs):
    with open(gguf_path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<QQII", len(data), fnv1a64(data), n_vocab, len(seqs)))
        for name, toks, rows, exact, f16 in seqs:
            fh.write(struct.pack("<I", len(name)) + name.encode())
            fh.write(struct.pack("<I", len(toks)) + np.asarray(toks, "<i4").tobytes())
            fh.write(struct.pack("<I", len(rows)) + np.asarray(rows, "<i4").tobytes())
            assert exact.shape == f16.shape == (len(rows), n_vocab)
            fh.write(np.asarray(exact, "<f4").tobytes())
            fh.write(np.asarray(f16, "<f4").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=TINY_DIR, help="where the .gguf files are")
    ap.add_argument("--out-dir", help="where to write the .logits (default: --dir)")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--variant", choices=VARIANTS,
                    help="write a deliberately wrong reference (see --help)")
    args = ap.parse_args()
    out_dir = args.out_dir or args.dir
    if args.variant and os.path.abspath(out_dir) == os.path.abspath(TINY_DIR):
        raise SystemExit("--variant output must not overwrite the committed goldens: "
                         "pass --out-dir")
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(n[:-5] for n in os.listdir(args.dir) if n.endswith(".gguf"))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    if not names:
        raise SystemExit("no .gguf files in %s" % args.dir)
    for name in names:
        gpath = os.path.join(args.dir, name + ".gguf")
        m = TinyModel(gpath, args.variant)
        seqs = []
        for sname, toks, rows in sequences(name, m.n_vocab):
            exact = m.forward(toks)[rows]
            f16 = m.forward(toks, f16kv=True)[rows]
            d = np.abs(exact - f16)
            print("%-20s %-4s %4d tokens %3d rows  |logit| max %.3f  "
                  "|exact - f16kv| max %.2e mean %.2e"
                  % (name, sname, len(toks), len(rows), np.abs(exact).max(),
                     d.max(), d.mean()), file=sys.stderr)
            seqs.append((sname, toks, rows, exact, f16))
        write_logits(os.path.join(out_dir, name + ".logits"), gpath, m.n_vocab, seqs)
    print("wrote %d files to %s%s" % (len(names), out_dir,
          " (variant %s)" % args.variant if args.variant else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
