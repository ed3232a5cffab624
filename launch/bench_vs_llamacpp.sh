#!/usr/bin/env bash
# recall and llama.cpp side by side in one run: the same GGUF file, threads, depths and prompt
# lengths, the two engines run alternately (recall, llama-bench, recall, llama-bench, ...) so a
# machine whose load changes slows both alike. Prints one table: each engine's best tokens/s over
# the rounds (and the spread), their ratio, the roofline from a read-bandwidth probe run here, and
# each engine's fraction of it; with the date, CPU, its SIMD flags and the command.
#
#   launch/bench_vs_llamacpp.sh [options]
#
#   -m, --model FILE     GGUF model (default: the cache's SmolLM2-135M-Instruct.Q4_1.gguf)
#   --depths LIST        decode depths (default 0,2048,8192,16384)
#   --prefill LIST       prompt lengths (default 512,4096; none: no prefill rows)
#   --decode-tokens N    timed decode steps per depth (default 64)
#   --rounds N           runs of each engine, alternating (default 2)
#   --threads N          threads of both engines (default: all cores)
#   --kv-type f16|q8_0   KV cache of both (default f16; q8_0 gives llama.cpp -ctk/-ctv q8_0 -fa 1,
#                        which its quantized V cache needs)
#   --quick              a smoke test: depths 0,512, prefill 64, 8 decode steps
#   --recall PATH        recall binary (default build/recall)
#   --llama-bench PATH   a built llama-bench (default: build it, see below)
#   --out DIR            keep the raw CSVs and the table there (default: a new runs/vs-llamacpp-*)
#
# llama-bench is built once from the PyPI source distribution of llama-cpp-python into
# ${RECALL_CACHE:-~/.cache/recall}/llama.cpp/build-bench (the sources launch/setup.sh already
# unpacks there for llama-quantize), with the CPU's own SIMD flags (AVX2; AVX-512 F/BW/VL, VNNI,
# BF16, VBMI where cpuid has them) but never AMX: on these VMs the kernel does not enable AMX tile
# state and ggml's AMX kernels fault (tests/golden/README.md). ~15 min on  the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench_vs_llamacpp.sh: $*" >&2; exit 1; }

cache=${RECALL_CACHE:-$HOME/.cache/recall}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
depths=0,2048,8192,16384 prefill=512,4096 tokens=64 rounds=2 threads=$(nproc) kv=f16
recall=build/recall lbench="" out=""
command_line="launch/bench_vs_llamacpp.sh $*"
while [ $# -gt 0 ]; do
  case $1 in
    -m|--model) model=$2; shift 2 ;;
    --depths) depths=$2; shift 2 ;;
    --prefill) prefill=$2; shift 2 ;;
    --decode-tokens) tokens=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --kv-type) kv=$2; shift 2 ;;
    --quick) depths=0,512 prefill=64 tokens=8; shift ;;
    --recall) recall=$2; shift 2 ;;
    --llama-bench) lbench=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -f "$model" ] || die "model $model not found (launch/setup.sh downloads it)"
[ -x "$recall" ] || die "$recall is not built (cmake --build build --target recall)"
[[ $rounds =~ ^[1-9][0-9]*$ && $tokens =~ ^[1-9][0-9]*$ && $threads =~ ^[1-9][0-9]*$ ]] ||
  die "--rounds, --decode-tokens and --threads take positive integers"
[[ $depths =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--depths: expected a comma list of integers, got '$depths'"
[[ $prefill == none || $prefill =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--prefill: expected a list or none"
case $kv in f16) lkv=(-ctk f16 -ctv f16 -fa 0) ;; q8_0) lkv=(-ctk q8_0 -ctv q8_0 -fa 1) ;;
  *) die "--kv-type: f16 or q8_0, got '$kv'" ;; esac

flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n')
has() { grep -qx "$1" <<<"$flags"; }

# --- llama-bench ---------------------------------------------------------------
if [ -z "$lbench" ]; then
  D=$cache/llama.cpp
  mkdir -p "$D"
  if [ ! -d "$D/src" ]; then
    tmp=$(mktemp -d "$D/.src.XXXXXX")
    python3 -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp/dl"
    mkdir -p "$tmp/src" && tar xzf "$tmp"/dl/*.tar.gz -C "$tmp/src" --strip-components=1
    mv "$tmp/src" "$D/src" 2>/dev/null || true
    rm -rf "$tmp"
  fi
  LC=$(find "$D/src" -maxdepth 3 -type d -path '*vendor/llama.cpp' | head -n1)
  [ -n "$LC" ] || die "no vendor/llama.cpp in the llama-cpp-python sdist"
  B=$D/build-bench
  lbench=$B/bin/llama-bench
  if [ ! -x "$lbench" ]; then
    onoff() { has "$1" && echo ON || echo OFF; }
    simd=(-DGGML_AVX=ON -DGGML_AVX2="$(onoff avx2)" -DGGML_FMA="$(onoff fma)" -DGGML_F16C="$(onoff f16c)"
          -DGGML_BMI2="$(onoff bmi2)" -DGGML_AVX512="$(onoff avx512f)" -DGGML_AVX512_VNNI="$(onoff avx512_vnni)"
          -DGGML_AVX512_BF16="$(onoff avx512_bf16)" -DGGML_AVX512_VBMI="$(onoff avx512vbmi)")
    echo "building llama-bench in $B (${simd[*]})" >&2
    cmake -S "$LC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=OFF "${simd[@]}" \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >"$D/build-bench.log" 2>&1 &&
    cmake --build "$B" -j"$(nproc)" --target llama-bench >>"$D/build-bench.log" 2>&1 ||
      { tail -n 20 "$D/build-bench.log" >&2; die "llama-bench build failed (log: $D/build-bench.log)"; }
  fi
fi
[ -x "$lbench" ] || die "llama-bench $lbench is not executable"

# --- read bandwidth: the best of 5 passes over 1 GiB, summed as 64-bit words on every thread ----
probe=$cache/bwprobe
if [ ! -x "$probe" ] || [ "$0" -nt "$probe" ]; then
  cat >"$probe.c" <<'EOF'
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    size_t n = ((size_t)1 << 30) / 8;
    uint64_t *a = malloc(n * 8), sink = 0;
    if (!a) return 1;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = omp_get_wtime();
        uint64_t s = 0;
#pragma omp parallel for reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += a[i];
        t = omp_get_wtime() - t;
        sink += s;
        if (t < best) best = t;
    }
    printf("%.2f\n", (double)(n * 8) / best / 1e9);
    return sink == 42;
}
EOF
  cc -O3 -march=native -fopenmp "$probe.c" -o "$probe" || die "cannot build the bandwidth probe"
fi

# --- the runs, alternating -------------------------------------------------------
[ -n "$out" ] || out=runs/vs-llamacpp-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out"
export OMP_NUM_THREADS=$threads
lpre=(); [ "$prefill" = none ] || lpre=(-p "$prefill" -n 0 -d 0)
rpre=(--prefill "$prefill")
bw=$(OMP_PROC_BIND=false "$probe")
echo "read bandwidth, $threads thread(s): $bw GB/s" >&2
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds: recall" >&2
  "$recall" bench -m "$model" "${rpre[@]}" --depths "$depths" --decode-tokens "$tokens" --threads "$threads" \
    --kv-type "$kv" --bandwidth-gbs "$bw" --csv "$out/recall.$r.csv" >"$out/recall.$r.log" 2>&1 ||
    { tail -n 5 "$out/recall.$r.log" >&2; die "recall bench failed (log: $out/recall.$r.log)"; }
  echo "round $r/$rounds: llama-bench" >&2
  : >"$out/llama.$r.csv"
  if [ ${#lpre[@]} -gt 0 ]; then
    "$lbench" -m "$model" -t "$threads" "${lkv[@]}" -r 1 -o csv "${lpre[@]}" >>"$out/llama.$r.csv" 2>"$out/llama.$r.log" ||
      { tail -n 5 "$out/llama.$r.log" >&2; die "llama-bench failed (log: $out/llama.$r.log)"; }
  fi
  "$lbench" -m "$model" -t "$threads" "${lkv[@]}" -r 1 -o csv -p 0 -n "$tokens" -d "$depths" >>"$out/llama.$r.csv" \
    2>>"$out/llama.$r.log" || { tail -n 5 "$out/llama.$r.log" >&2; die "llama-bench failed (log: $out/llama.$r.log)"; }
done

# --- the table ----------------------------------------------------------------------
wbytes=$(sed -n 's/.*weights read per decode token: \([0-9.]*\) MB.*/\1/p' "$out/recall.1.log" | head -n1)
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
simdflags=$(for f in avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512vbmi; do
  has $f && printf '%s ' $f; done)
python3 - "$out" "$rounds" "$bw" "${wbytes:-0}" >"$out/table.txt" <<'EOF'
import csv, sys
out, rounds, bw, wmb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rec, lla, kvb = {}, {}, {}
for r in range(1, rounds + 1):
    for row in csv.DictReader(open(f"{out}/recall.{r}.csv")):
        if row["test"] == "prefill":
            key = ("prefill", int(row["tokens"]))
        elif row["method"] == "full":
            key = ("decode", int(row["depth"]))
            kvb[key] = float(row["kv_bytes_read_per_token"])
        else:
            continue
        rec.setdefault(key, []).append(float(row["tok_s"]))
    lines = [l for l in open(f"{out}/llama.{r}.csv") if l.strip()]
    hdr = lines[0]
    for row in csv.DictReader([hdr] + [l for l in lines[1:] if l != hdr]):
        pp, tg, d = int(row["n_prompt"]), int(row["n_gen"]), int(row["n_depth"])
        key = ("prefill", pp) if tg == 0 else ("decode", d)
        lla.setdefault(key, []).append(float(row["avg_ts"]))
print(f"{'test':<16} {'recall tok/s':>20} {'llama.cpp tok/s':>20} {'ratio':>7} {'roofline':>9} {'recall':>7} {'llama':>7}")
for key in sorted(rec, key=lambda k: (k[0] != "decode", k[1])):
    a, b = rec.get(key, []), lla.get(key, [])
    name = f"{key[0]} {'depth ' if key[0] == 'decode' else ''}{key[1]}"
    fa = f"{max(a):.1f} ({min(a):.1f}-{max(a):.1f})" if a else "-"
    fb = f"{max(b):.1f} ({min(b):.1f}-{max(b):.1f})" if b else "-"
    ratio = f"{max(a) / max(b):.2f}x" if a and b else "-"
    roof = pr = pl = ""
    if key[0] == "decode" and wmb > 0:
        tps = bw * 1e9 / (wmb * 1e6 + kvb[key])
        roof = f"{tps:.0f}"
        pr = f"{100 * max(a) / tps:.0f}%"
        pl = f"{100 * max(b) / tps:.0f}%" if b else "-"
    print(f"{name:<16} {fa:>20} {fb:>20} {ratio:>7} {roof:>9} {pr:>7} {pl:>7}")
EOF
{
  echo "# recall vs llama.cpp, $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname)"
  echo "# CPU: $cpu, $(nproc --all) cores; SIMD: $simdflags"
  echo "# recall kernels: $("$recall" info "$model" 2>/dev/null | sed -n 's/^cpu kernels *//p'); llama-bench: $lbench"
  echo "# model: $model; $threads thread(s); KV $kv; $rounds alternating rounds each; $tokens decode steps"
  echo "# read bandwidth (probe, $threads threads): $bw GB/s; weights read per token: ${wbytes:-?} MB"
  echo "# tok/s: best of the rounds (min-max); ratio: best recall / best llama.cpp; roofline: bandwidth /"
  echo "# (weights + K/V bytes read per token) in tok/s, and each engine's best as a fraction of it"
  echo "# command: $command_line"
  cat "$out/table.txt"
} | tee "$out/summary.txt"
