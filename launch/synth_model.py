#!/usr/bin/env python3
"""Writes a GGUF file with random weights in the exact shape of a named model,
for speed experiments at real shapes (recall bench --fill random, recall plan).
The weights are random: the model's text is noise, its speed is the real one.

usage: launch/synth_model.py NAME [--type q4_1|q8_0] [--out FILE] [--seed N]
       launch/synth_model.py --list
NAME: llama-3.1-8b, llama-3.1-70b, qwen2-7b, smollm2-135m. The file goes to
~/.cache/recall/synthetic/NAME.TYPE.gguf unless --out is given (never into the
repository). Sizes: 8B Q4_1 ~5.1 GB, 70B Q4_1 ~44 GB: mind the disk.

Shapes are the models' published config.json figures (Hugging Face:
meta-llama/Llama-3.1-8B, meta-llama/Llama-3.1-70B, Qwen/Qwen2-7B,
HuggingFaceTB/SmolLM2-135M-Instruct). The vocabulary is a byte-level GPT-2 BPE
vocabulary of the model's size (256 bytes, a few merges, reserved fillers).
Only the Python standard library is used.
"""
import argparse
import math
import os
import random
import struct
import sys

SHAPES = {
    # arch, n_layer, d_model, n_head, n_head_kv, head_dim, d_ff, n_vocab, n_ctx, rope_base, rms_eps, tied
    "llama-3.1-8b": ("llama", 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000.0, 1e-5, False),
    "llama-3.1-70b": ("llama", 80, 8192, 64, 8, 128, 28672, 128256, 131072, 500000.0, 1e-5, False),
    "qwen2-7b": ("qwen2", 28, 3584, 28, 4, 128, 18944, 152064, 131072, 1000000.0, 1e-6, False),
    "smollm2-135m": ("llama", 30, 576, 9, 3, 64, 1536, 49152, 8192, 100000.0, 1e-5, True),
}

GGML_F32, GGML_Q4_1, GGML_Q8_0 = 0, 3, 8
BLOCK = 32
BLOCK_BYTES = {GGML_Q4_1: 20, GGML_Q8_0: 34}
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9
ALIGN = 32
POOL_BLOCKS = 1 << 16  # distinct random blocks per tensor, tiled over it


def s_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = s_str(key) + struct.pack("<I", vtype)
    if vtype == T_U32:
        return out + struct.pack("<I", value)
    if vtype == T_F32:
        return out + struct.pack("<f", value)
    if vtype == T_BOOL:
        return out + struct.pack("<B", 1 if value else 0)
    if vtype == T_STR:
        return out + s_str(value)
    elem, items = value
    out += struct.pack("<IQ", elem, len(items))
    if elem == T_STR:
        return out + b"".join(s_str(x) for x in items)
    return out + struct.pack("<%di" % len(items), *items)


def byte_tokens():
    """GPT-2's bytes_to_unicode: printable bytes map to themselves."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cps, extra = {}, 0
    for b in range(256):
        if b in printable:
            cps[b] = b
        else:
            cps[b] = 256 + extra
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [chr(cps[b]) for b in order]


def vocab(n_vocab):
    G = "\u0120"
    merges = [(G, "t"), ("h", "e"), ("i", "n"), (G, "a"), ("e", "r"), ("o", "n"), (G + "t", "he"), ("r", "e")]
    special = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    tokens = byte_tokens() + [a + b for a, b in merges]
    n_fill = n_vocab - len(tokens) - len(special)
    tokens += ["<|reserved_%d|>" % i for i in range(n_fill)] + special
    types = [1] * (256 + len(merges)) + [3] * (n_fill + len(special))
    return tokens, types, ["%s %s" % m for m in merges]


def f16(x):
    return struct.pack("<e", x)


def block_pool(gtype, sigma, rng):
    """POOL_BLOCKS random blocks whose values are uniform with std sigma."""
    n = POOL_BLOCKS
    if gtype == GGML_Q4_1:
        d = sigma * math.sqrt(12.0) / 16.0  # q uniform on 0..15: value d*q + m
        head = f16(d) + f16(-7.5 * d)
        body = rng.randbytes(16 * n)
        return b"".join(head + body[16 * i:16 * i + 16] for i in range(n))
    d = sigma * math.sqrt(3.0) / 127.0  # int8 uniform on -127..127
    head = f16(d)
    to_int8 = bytes(((x % 255) - 127) & 0xFF for x in range(256))  # -127..127, as two's complement bytes
    body = rng.randbytes(32 * n).translate(to_int8)
    return b"".join(head + body[32 * i:32 * i + 32] for i in range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?")
    ap.add_argument("--type", default="q4_1", choices=["q4_1", "q8_0"])
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--list", action="store_true", help="print the known shapes and exit")
    a = ap.parse_args()
    if a.list:
        for k, v in SHAPES.items():
            print(k, "arch=%s layers=%d d_model=%d heads=%d kv_heads=%d head_dim=%d d_ff=%d vocab=%d" % v[:8])
        return 0
    if a.name not in SHAPES:
        print("recall: unknown model shape '%s' (known: %s)" % (a.name, ", ".join(SHAPES)), file=sys.stderr)
        return 1
    arch, L, d, H, Hkv, hd, ff, V, ctx, rope, eps, tied = SHAPES[a.name]
    gtype = GGML_Q4_1 if a.type == "q4_1" else GGML_Q8_0
    out = a.out or os.path.join(os.path.expanduser(os.environ.get("RECALL_CACHE", "~/.cache/recall")), "synthetic",
                                "%s.%s.gguf" % (a.name, a.type))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rng = random.Random(a.seed)

    # (name, ne0 = input dim, ne1 = rows, type, std)
    tensors = [("token_embd.weight", d, V, gtype, 1.0)]
    qd, kvd = H * hd, Hkv * hd
    for l in range(L):
        p = "blk.%d." % l
        tensors += [(p + "attn_norm.weight", d, 1, GGML_F32, 1.0),
                    (p + "attn_q.weight", d, qd, gtype, 1 / math.sqrt(d))]
        if arch == "qwen2":
            tensors.append((p + "attn_q.bias", qd, 1, GGML_F32, 0.0))
        tensors.append((p + "attn_k.weight", d, kvd, gtype, 1 / math.sqrt(d)))
        if arch == "qwen2":
            tensors.append((p + "attn_k.bias", kvd, 1, GGML_F32, 0.0))
        tensors.append((p + "attn_v.weight", d, kvd, gtype, 1 / math.sqrt(d)))
        if arch == "qwen2":
            tensors.append((p + "attn_v.bias", kvd, 1, GGML_F32, 0.0))
        tensors += [(p + "attn_output.weight", qd, d, gtype, 1 / math.sqrt(qd)),
                    (p + "ffn_norm.weight", d, 1, GGML_F32, 1.0),
                    (p + "ffn_gate.weight", d, ff, gtype, 1 / math.sqrt(d)),
                    (p + "ffn_up.weight", d, ff, gtype, 1 / math.sqrt(d)),
                    (p + "ffn_down.weight", ff, d, gtype, 1 / math.sqrt(ff))]
    tensors.append(("output_norm.weight", d, 1, GGML_F32, 1.0))
    if not tied:
        tensors.append(("output.weight", d, V, gtype, 1 / math.sqrt(d)))

    def nbytes(t):
        _, ne0, ne1, ty, _ = t
        return ne0 * ne1 * 4 if ty == GGML_F32 else ne0 // BLOCK * BLOCK_BYTES[ty] * ne1

    toks, types, merges = vocab(V)
    meta = [kv("general.architecture", T_STR, arch), kv("general.name", T_STR, "synthetic " + a.name),
            kv(arch + ".block_count", T_U32, L), kv(arch + ".context_length", T_U32, ctx),
            kv(arch + ".embedding_length", T_U32, d), kv(arch + ".feed_forward_length", T_U32, ff),
            kv(arch + ".attention.head_count", T_U32, H), kv(arch + ".attention.head_count_kv", T_U32, Hkv),
            kv(arch + ".attention.key_length", T_U32, hd), kv(arch + ".attention.value_length", T_U32, hd),
            kv(arch + ".rope.dimension_count", T_U32, hd), kv(arch + ".rope.freq_base", T_F32, rope),
            kv(arch + ".attention.layer_norm_rms_epsilon", T_F32, eps), kv(arch + ".vocab_size", T_U32, V),
            kv("tokenizer.ggml.model", T_STR, "gpt2"), kv("tokenizer.ggml.pre", T_STR, "default"),
            kv("tokenizer.ggml.tokens", T_ARR, (T_STR, toks)), kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
            kv("tokenizer.ggml.merges", T_ARR, (T_STR, merges)),
            kv("tokenizer.ggml.bos_token_id", T_U32, V - 1), kv("tokenizer.ggml.eos_token_id", T_U32, V - 1),
            kv("tokenizer.ggml.add_bos_token", T_BOOL, False)]
    info, off = [], 0
    for t in tensors:
        name, ne0, ne1, ty, _ = t
        dims = [ne0] if ne1 == 1 else [ne0, ne1]
        info.append(s_str(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) +
                    struct.pack("<IQ", ty, off))
        off += (nbytes(t) + ALIGN - 1) // ALIGN * ALIGN
    total = off
    print("writing %s: %s, %d tensors, %.2f GB" % (out, a.name, len(tensors), total / 1e9), file=sys.stderr)
    tmp = out + ".partial"
    with open(tmp, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
        for m in meta:
            f.write(m)
        for i in info:
            f.write(i)
        f.write(b"\0" * (-f.tell() % ALIGN))
        for t in tensors:
            name, ne0, ne1, ty, sigma = t
            n = nbytes(t)
            if ty == GGML_F32:
                f.write(struct.pack("<f", sigma) * (n // 4))
            else:
                pool = block_pool(ty, sigma, rng)
                left = n
                while left > 0:  # tile the pool from a random block each time
                    start = rng.randrange(POOL_BLOCKS) * BLOCK_BYTES[ty]
                    chunk = pool[start:] + pool[:start]
                    f.write(chunk[:left])
                    left -= min(left, len(chunk))
            f.write(b"\0" * (-n % ALIGN))
    os.replace(tmp, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
