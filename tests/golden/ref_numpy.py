#!/usr/bin/env python3
"""Reference B: an exact (no activation quantization) numpy forward pass.

Reads the GGUF model with the `gguf` package, dequantizes every tensor with
`gguf.quants.dequantize` (the Python reimplementation of ggml's block
formats, independent of llama.cpp's C code), and runs the llama forward pass:

    x = token_embd[tok]
    per layer:  h = x + Wo . Attn(RoPE(Wq . rms(x)), RoPE(Wk . rms(x)), Wv . rms(x))
                x = h + Wdown . (silu(Wgate . rms(h)) * (Wup . rms(h)))
    logits = token_embd . rms(x)        (tied output matrix)

  * RMSNorm: x / sqrt(mean(x^2) + eps) * w, computed in float64.
  * RoPE "NORM" style (ggml's LLAMA_ROPE_TYPE_NORM, used by the llama arch):
    rotates adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/64).  The
    GGUF converter permutes the HF q/k weights so that this equals HF's
    rotate_half ("NeoX") style on the HF weights.  Angles in float64.
    (--rope neox switches to (x[i], x[i+32]) pairs, for checking that the
    choice matters; it does: top-1 agreement with llama.cpp collapses.)
  * GQA: 9 query heads, 3 KV heads, query head h uses KV head h // 3;
    scale 1/sqrt(64); causal mask; softmax in float64.
  * SwiGLU FFN, silu in float64.
  * Weight matrix products in float32 (BLAS, float32 accumulation) by
    default, or float64 with --dtype float64.

Token ids are taken from the llama.cpp golden file (tests/data/golden/
llamacpp.golden, written by make_golden.py llamacpp) so that both references
evaluate exactly the same sequences; --tokens-from selects another file.

Output: tests/data/golden/fp32.golden in the RCGOLD1 format (see README.md).

Usage:
    python3 tests/golden/ref_numpy.py [--model PATH] [--out PATH]
        [--tokens-from PATH] [--dtype float32|float64] [--rope norm|neox]
        [--greedy-check]

Dependencies: numpy, gguf (PyPI).  Runtime on 2 cores: about 1-2 minutes.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_golden import (DEFAULT_MODEL, GOLDEN_DIR, read_golden,  # noqa: E402
                         topk_sorted, write_golden, TOP_K)


class Model:
    def __init__(self, path, dtype):
        import gguf
        r = gguf.GGUFReader(path)
        f = r.fields

        def val(key):
            return f[key].contents()

        arch = val("general.architecture")
        if arch != "llama":
            raise SystemExit("unsupported architecture %r" % arch)
        self.n_layer = int(val("llama.block_count"))
        self.d = int(val("llama.embedding_length"))
        self.n_head = int(val("llama.attention.head_count"))
        self.n_kv = int(val("llama.attention.head_count_kv"))
        self.n_ff = int(val("llama.feed_forward_length"))
        self.eps = float(val("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(val("llama.rope.freq_base"))
        self.hd = self.d // self.n_head
        self.dtype = dtype

        t = {}
        self.mins = {}  # Q4_1 block minimums, only for --emulate-ggml
        for ti in r.tensors:
            w = gguf.quants.dequantize(ti.data, ti.tensor_type)
            t[ti.name] = np.ascontiguousarray(w, dtype=np.float32)
            if ti.tensor_type == gguf.GGMLQuantizationType.Q4_1:
                blk = np.asarray(ti.data).reshape(w.shape[0], -1, 20)
                m = blk[:, :, 2:4].copy().view(np.float16)[:, :, 0]
                self.mins[ti.name] = np.ascontiguousarray(
                    m.astype(np.float32).T)                     # (nb, out)
        self.embd = t["token_embd.weight"].astype(dtype)       # (vocab, d)
        self.out = t.get("output.weight", None)
        self.out = self.embd if self.out is None else self.out.astype(dtype)
        self.n_vocab = self.out.shape[0]
        self.out_norm = t["output_norm.weight"].astype(np.float64)
        self.layers = []
        for i in range(self.n_layer):
            p = "blk.%d." % i
            L = {
                "attn_norm": t[p + "attn_norm.weight"].astype(np.float64),
                "ffn_norm": t[p + "ffn_norm.weight"].astype(np.float64),
                # stored (out, in); keep transposed (in, out) for x @ W
                "wq": t[p + "attn_q.weight"].T.astype(dtype),
                "wk": t[p + "attn_k.weight"].T.astype(dtype),
                "wv": t[p + "attn_v.weight"].T.astype(dtype),
                "wo": t[p + "attn_output.weight"].T.astype(dtype),
                "wg": t[p + "ffn_gate.weight"].T.astype(dtype),
                "wu": t[p + "ffn_up.weight"].T.astype(dtype),
                "wd": t[p + "ffn_down.weight"].T.astype(dtype),
            }
            names = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
                     "wo": "attn_output", "wg": "ffn_gate", "wu": "ffn_up",
                     "wd": "ffn_down"}
            for k, n in names.items():
                L[k] = np.ascontiguousarray(L[k])
                L[k + "_min"] = self.mins.get(p + n + ".weight")
            self.layers.append(L)
        assert self.layers[0]["wq"].shape == (self.d, self.n_head * self.hd)
        assert self.layers[0]["wk"].shape == (self.d, self.n_kv * self.hd)

    # -- optional emulation of llama.cpp's rounding (diagnostic only) --
    emulate = False

    @staticmethod
    def q8(x):
        """ggml's Q8_0/Q8_1 activation quantization (blocks of 32 along the
        last axis, scale amax/127 stored as fp16, round half to even).
        Returns the dequantized activations and, per block, the Q8_1 sum
        correction fp16(d*sum(q)) - fp16(d)*sum(q)."""
        shp = x.shape
        xb = x.astype(np.float32).reshape(-1, 32)
        amax = np.abs(xb).max(axis=1, keepdims=True)
        d = amax / np.float32(127)
        with np.errstate(divide="ignore"):
            idv = np.where(amax > 0, np.float32(127) / amax, np.float32(0))
        q = np.rint(xb * idv)
        d16 = d.astype(np.float16).astype(np.float32)
        sq = q.sum(axis=1, keepdims=True)
        corr = ((d * sq).astype(np.float16).astype(np.float64)
                - d16.astype(np.float64) * sq)
        nb = shp[-1] // 32
        return ((q * d16).reshape(shp),
                corr.reshape(shp[:-1] + (nb,)))

    def mm(self, x, w, mins=None):
        """x @ w; with emulation, x is quantized like ggml's vec_dot_type
        (Q8_1 for Q4_1 weights, whose block minimum multiplies the fp16
        block sum s; Q8_0 for the Q8_0 output matrix)."""
        if not self.emulate:
            return x.astype(self.dtype) @ w
        xq, corr = self.q8(x)
        y = xq.astype(self.dtype) @ w
        if mins is not None:
            y = y + (corr @ mins).astype(y.dtype)
        return y

    @staticmethod
    def f16(x):
        return x.astype(np.float16).astype(np.float64)

    def rms(self, x, w):
        x = x.astype(np.float64)
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return (y * w).astype(self.dtype)

    def rope(self, x, pos, style):
        # x: (T, H, hd) float64; pos: (T,)
        hd = self.hd
        inv = self.base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = pos[:, None].astype(np.float64) * inv[None, :]      # (T, hd/2)
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        y = np.empty_like(x)
        if style == "norm":
            x0, x1 = x[..., 0::2], x[..., 1::2]
            y[..., 0::2] = x0 * c - x1 * s
            y[..., 1::2] = x0 * s + x1 * c
        else:
            h = hd // 2
            x0, x1 = x[..., :h], x[..., h:]
            y[..., :h] = x0 * c - x1 * s
            y[..., h:] = x0 * s + x1 * c
        return y

    def forward(self, tokens, rope_style="norm"):
        """Final-norm hidden states (T, d) for the whole sequence."""
        T = len(tokens)
        H, KV, hd = self.n_head, self.n_kv, self.hd
        grp = H // KV
        pos = np.arange(T)
        x = self.embd[np.asarray(tokens)].astype(np.float64)        # residual f64
        mask = np.triu(np.ones((T, T), dtype=bool), k=1)
        scale = 1.0 / np.sqrt(hd)
        for L in self.layers:
            xn = self.rms(x, L["attn_norm"])
            q = self.mm(xn, L["wq"], L["wq_min"]).astype(np.float64).reshape(T, H, hd)
            k = self.mm(xn, L["wk"], L["wk_min"]).astype(np.float64).reshape(T, KV, hd)
            v = self.mm(xn, L["wv"], L["wv_min"]).astype(np.float64).reshape(T, KV, hd)
            q = self.rope(q, pos, rope_style)
            k = self.rope(k, pos, rope_style)
            if self.emulate:  # f16 KV cache; q and probs rounded to f16
                q, k, v = self.f16(q), self.f16(k), self.f16(v)
            att = np.empty((T, H, hd), dtype=np.float64)
            for g in range(KV):
                kg = k[:, g, :]                                     # (T, hd)
                vg = v[:, g, :]
                for j in range(grp):
                    h = g * grp + j
                    s = (q[:, h, :] @ kg.T) * scale                 # (T, T)
                    s[mask] = -np.inf
                    s -= s.max(axis=1, keepdims=True)
                    np.exp(s, out=s)
                    s /= s.sum(axis=1, keepdims=True)
                    if self.emulate:
                        s = self.f16(s)
                    att[:, h, :] = s @ vg
            o = self.mm(att.reshape(T, H * hd), L["wo"], L["wo_min"])
            x = x + o.astype(np.float64)
            hn = self.rms(x, L["ffn_norm"])
            gt = self.mm(hn, L["wg"], L["wg_min"]).astype(np.float64)
            up = self.mm(hn, L["wu"], L["wu_min"]).astype(np.float64)
            act = (gt / (1.0 + np.exp(-gt))) * up
            x = x + self.mm(act, L["wd"], L["wd_min"]).astype(np.float64)
        return self.rms(x, self.out_norm)

    def logits_chunks(self, hidden, chunk=256):
        """Yield (start, logits[chunk, vocab]) in float32."""
        for s in range(0, hidden.shape[0], chunk):
            lg = self.mm(hidden[s:s + chunk], self.out.T)
            yield s, lg.astype(np.float32)


def run_prompt(model, tokens, rope_style, ref=None):
    """Top-k per position and the full last row.  With ref (a prompt record
    of another golden file, same tokens), also compare with it using this
    reference's full logits: |ref.vals - ours[ref.ids]| at every position."""
    t0 = time.time()
    hid = model.forward(tokens, rope_style)
    n = len(tokens)
    ids = np.empty((n, TOP_K), dtype=np.int32)
    vals = np.empty((n, TOP_K), dtype=np.float32)
    diff = np.empty((n, TOP_K), dtype=np.float64)
    last = None
    for s, lg in model.logits_chunks(hid):
        for i in range(lg.shape[0]):
            ids[s + i], vals[s + i] = topk_sorted(lg[i], TOP_K)
            if ref is not None:
                diff[s + i] = np.abs(ref["vals"][s + i].astype(np.float64)
                                     - lg[i, ref["ids"][s + i]])
        if s + lg.shape[0] == n:
            last = lg[-1].copy()
    stats = None
    if ref is not None:
        agree = ids[:, 0] == ref["ids"][:, 0]
        gap = ref["vals"][:, 0] - ref["vals"][:, 1]
        dl = np.abs(ref["last"].astype(np.float64) - last)
        stats = {
            "n": n, "agree": int(agree.sum()),
            "max_gap_disagree": float(gap[~agree].max()) if (~agree).any()
            else 0.0,
            "agree_gap_0.1": (int(agree[gap > 0.1].sum()),
                              int((gap > 0.1).sum())),
            "agree_gap_0.5": (int(agree[gap > 0.5].sum()),
                              int((gap > 0.5).sum())),
            "top20_max": float(diff.max()), "top20_mean": float(diff.mean()),
            "top20_p99": float(np.percentile(diff, 99)),
            "top1_max": float(diff[:, 0].max()),
            "top1_mean": float(diff[:, 0].mean()),
            "last_max": float(dl.max()), "last_mean": float(dl.mean()),
        }
    return ids, vals, last, time.time() - t0, stats


def stats_table(rows, a_name, b_name):
    out = ["A = %s, B = %s (B's full logits looked up at A's top-20 ids)"
           % (a_name, b_name), "",
           "| prompt | positions | top-1 agree | largest A gap (top1-top2) at "
           "a disagreement | agree where A gap > 0.1 | agree where A gap > 0.5"
           " | abs diff over A's top-20: max / p99 / mean | top-1 logit: "
           "max / mean | last position, all logits: max / mean |",
           "|---|---|---|---|---|---|---|---|---|"]
    def f(v):
        return "%.4f" % v if v == 0 or v >= 0.01 else "%.2e" % v
    for name, st in rows:
        a1, n1 = st["agree_gap_0.1"]
        a5, n5 = st["agree_gap_0.5"]
        out.append(
            "| %s | %d | %.2f%% (%d/%d) | %s | %.2f%% (%d/%d) | "
            "%.2f%% (%d/%d) | %s / %s / %s | %s / %s | %s / %s |" % (
                name, st["n"], 100.0 * st["agree"] / st["n"], st["agree"],
                st["n"], f(st["max_gap_disagree"]), 100.0 * a1 / max(n1, 1),
                a1, n1, 100.0 * a5 / max(n5, 1), a5, n5,
                f(st["top20_max"]), f(st["top20_p99"]), f(st["top20_mean"]),
                f(st["top1_max"]), f(st["top1_mean"]), f(st["last_max"]),
                f(st["last_mean"])))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=os.path.join(GOLDEN_DIR, "fp32.golden"))
    ap.add_argument("--tokens-from",
                    default=os.path.join(GOLDEN_DIR, "llamacpp.golden"))
    ap.add_argument("--dtype", choices=("float32", "float64"),
                    default="float32")
    ap.add_argument("--rope", choices=("norm", "neox"), default="norm")
    ap.add_argument("--only", help="comma-separated prompt names to run")
    ap.add_argument("--stats", help="also write the comparison table with "
                    "the --tokens-from file to this path")
    ap.add_argument("--emulate-ggml", action="store_true",
                    help="diagnostic: round like llama.cpp's CPU backend "
                         "(8-bit activations in matrix products, f16 K/V/Q "
                         "and attention weights) to show that the A-vs-B "
                         "differences are rounding, not a model error")
    ap.add_argument("--greedy-check", action="store_true",
                    help="teacher-force greedy.txt and report whether the "
                         "argmax of this reference reproduces every step")
    args = ap.parse_args()

    dtype = np.float32 if args.dtype == "float32" else np.float64
    t0 = time.time()
    model = Model(args.model, dtype)
    model.emulate = args.emulate_ggml
    print("model loaded in %.1fs (%d layers, d=%d, vocab=%d, dtype=%s)"
          % (time.time() - t0, model.n_layer, model.d, model.n_vocab,
             args.dtype), file=sys.stderr)

    if args.greedy_check:
        gpath = os.path.join(GOLDEN_DIR, "greedy.txt")
        with open(gpath) as f:
            lines = f.read().splitlines()
        prompt = [int(t) for t in lines[1].split()]
        gen = [int(t) for t in lines[2].split()]
        gaps = [float(t) for t in lines[3].split()]
        hid = model.forward(prompt + gen[:-1], args.rope)
        P = len(prompt)
        ok = 0
        for s, lg in model.logits_chunks(hid[P - 1:]):
            for i in range(lg.shape[0]):
                step = s + i
                am = int(np.argmax(lg[i]))
                top2 = np.sort(lg[i])[-2:]
                same = am == gen[step]
                ok += same
                print("step %2d: ref %6d  numpy %6d %s  gap llama.cpp %.4f "
                      "numpy %.4f" % (step, gen[step], am,
                                      "ok" if same else "DIFF", gaps[step],
                                      top2[1] - top2[0]))
        print("greedy: %d/%d steps agree" % (ok, len(gen)))
        return 0

    prompts = read_golden(args.tokens_from)["prompts"]
    if args.only:
        keep = set(args.only.split(","))
        prompts = [p for p in prompts if p["name"] in keep]
    results, rows = [], []
    for p in prompts:
        ids, vals, last, dt, st = run_prompt(model, p["tokens"], args.rope,
                                             ref=p)
        print("%-16s %5d tokens  %.1fs  top-1 agreement with %s: %.2f%%"
              % (p["name"], len(p["tokens"]), dt,
                 os.path.basename(args.tokens_from),
                 100.0 * st["agree"] / st["n"]), file=sys.stderr)
        results.append({"name": p["name"], "tokens": p["tokens"],
                        "ids": ids, "vals": vals, "last": last})
        rows.append((p["name"], st))
    table = stats_table(rows, os.path.basename(args.tokens_from),
                        os.path.basename(args.out))
    print(table, file=sys.stderr)
    if args.stats:
        with open(args.stats, "w") as f:
            f.write(table)
    write_golden(args.out, results, model.n_vocab)
    print("wrote %s" % args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
