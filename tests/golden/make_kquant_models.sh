#!/usr/bin/env bash
# K-quant versions of SmolLM2 and their reference logits, in the cache (never committed). Idempotent.
#   1. builds llama.cpp (llama-quantize and libllama, portable AVX2 flags) from the PyPI sdist of
#      llama-cpp-python into ${RECALL_CACHE:-~/.cache/recall}/llama.cpp;
#   2. re-quantizes the Q4_1 file to Q4_K_M and Q6_K with llama-quantize (the code behind
#      llama_model_quantize), --allow-requantize;
#   3. for each, writes reference A (llama.cpp through the sdist's Python bindings over the library
#      built in 1) and reference B (ref_numpy.py, weights dequantized by the gguf package) next to it.
# usage: tests/golden/make_kquant_models.sh [--models-only]
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache=${RECALL_CACHE:-$HOME/.cache/recall}
D=$cache/llama.cpp
src_model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
sdist=llama-cpp-python==0.3.36   # the version tests/golden/README.md describes
log() { printf '[kquant] %s\n' "$*" >&2; }

[ -f "$src_model" ] || { echo "recall: $src_model is missing (run launch/setup.sh)" >&2; exit 1; }
mkdir -p "$D"
if [ ! -d "$D/src" ]; then
  log "fetching the $sdist source distribution"
  tmp=$(mktemp -d "$D/.src.XXXXXX")
  python3 -m pip download -q --no-deps --no-binary :all: "$sdist" -d "$tmp/dl"
  mkdir -p "$tmp/src" && tar xzf "$tmp"/dl/*.tar.gz -C "$tmp/src" --strip-components=1
  mv "$tmp/src" "$D/src" 2>/dev/null || true   # another process may have won the race: keep its copy
  rm -rf "$tmp"
fi
LC=$(find "$D/src" -maxdepth 3 -type d -path '*vendor/llama.cpp' | head -n1)
[ -n "$LC" ] || { echo "recall: no vendor/llama.cpp in the llama-cpp-python sdist" >&2; exit 1; }

# Portable flags: a native build on AMX-capable VMs compiles AMX kernels that fault (tests/golden/README.md).
B=$D/build-ref
if [ ! -x "$B/bin/llama-quantize" ] || [ ! -f "$B/bin/libllama.so" ]; then
  log "building llama-quantize and libllama in $B (takes a while on 2 cores)"
  cmake -S "$LC" -B "$B" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >/dev/null
  cmake --build "$B" -j"$(nproc)" --target llama-quantize llama >/dev/null
fi
log "llama-quantize: $B/bin/llama-quantize"

# Python bindings of the same sdist over the library built above (diskcache, jinja2 and numpy are
# what llama_cpp imports), and gguf for reference B. A fresh machine has none of them, so they are
# installed here at the versions tests/golden/README.md records.
venv=$D/pyenv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import diskcache, jinja2, numpy, gguf' 2>/dev/null; then
  log "python environment for the llama.cpp bindings and reference B: $venv"
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q diskcache jinja2 numpy==2.4.6 gguf==0.19.0 ||
    { echo "recall: could not install the reference's Python packages into $venv" >&2; exit 1; }
fi
[ "${1:-}" = "--models-only" ] && refs=0 || refs=1

for q in Q4_K_M Q6_K; do
  out=$cache/SmolLM2-135M-Instruct.$q.gguf
  if [ ! -s "$out" ]; then
    log "quantizing $q -> $out"
    "$B/bin/llama-quantize" --allow-requantize "$src_model" "$out.partial" "$q" 2 >"$out.log" 2>&1 ||
      { tail -n 5 "$out.log" >&2; echo "recall: llama-quantize $q failed (log: $out.log)" >&2; exit 1; }
    mv "$out.partial" "$out"
  fi
  [ "$refs" = 1 ] || continue
  R=$cache/golden/SmolLM2-135M-Instruct.$q
  mkdir -p "$R"
  if [ ! -s "$R/greedy.txt" ] || [ "$R/greedy.txt" -ot "$out" ]; then
    log "reference A (llama.cpp) for $q -> $R"
    PYTHONPATH="$D/src" LLAMA_CPP_LIB_PATH="$B/bin" "$venv/bin/python" tests/golden/make_golden.py --model "$out" \
      llamacpp --out-dir "$R"
  fi
  if [ ! -s "$R/fp32.golden" ] || [ "$R/fp32.golden" -ot "$R/greedy.txt" ]; then
    log "reference B (numpy) for $q -> $R"
    "$venv/bin/python" tests/golden/ref_numpy.py --model "$out" --tokens-from "$R/llamacpp.golden" --out "$R/fp32.golden.partial" \
      --stats "$R/compare_llamacpp_fp32.md"
    mv "$R/fp32.golden.partial" "$R/fp32.golden"
  fi
done
log "K-quant models and references in $cache"
