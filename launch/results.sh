#!/usr/bin/env bash
# Regenerates the README's evaluation results and plots on the real model:
# speed sweeps (1 rank x 2 threads, 2 ranks x 1 thread), RULER-style accuracy
# at 2K/4K/8K for every method at three KV budgets, and long-text perplexity.
# About 55 minutes on 2 cores; run it on an otherwise idle machine (the speed
# figures are timings). Every step is resumable or cheap to repeat:
#   launch/results.sh [bench|ruler|ppl|plots]...   (default: all four)
#   SAMPLES=2 (RULER samples per task and length; RULER itself uses 25+), RESULTS=results (output folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
cache="${RECALL_CACHE:-$HOME/.cache/recall}"
M="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
heads=configs/heads/smollm2-135m-instruct.json
out="${RESULTS:-results}"
samples="${SAMPLES:-2}"
mkdir -p "$out"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(bench ruler ppl plots)
# Budgets default to context / 8 (recycled's K and the policies' rows per KV head).
# budgets=uniform: the paper's method (plain "recycled" takes the HeadKV budgets shipped for the model).
methods=full,recycled:stride=10:budgets=uniform,recycled:stride=10:budgets=headkv,streaming,h2o,snapkv,pyramidkv,adakv,headkv

for step in "${steps[@]}"; do
  case "$step" in
  bench)
    build/recall bench -m "$M" --threads 2 --prefill 512,4096 --reps 1 --depths 2048,8192,16384 --decode-tokens 64 \
      --attention "$methods" --head-scores "$heads" --csv "$out/bench_np1.csv"
    bash launch/mpirun.sh -np 2 -- build/recall bench -m "$M" --prefill 512,4096 --reps 1 --depths 2048,8192,16384 \
      --decode-tokens 64 --attention "$methods" --head-scores "$heads" --csv "$out/bench_np2.csv"
    { cat "$out/bench_np1.csv"; tail -n +2 "$out/bench_np2.csv"; } >"$out/bench.csv"
    ;;
  ruler)
    # Answers here are short (a number, a few words): 40 new tokens at most
    # instead of RULER's 128 keeps the run within the hour on 2 cores.
    build/recall eval ruler -m "$M" --threads 2 --ctx 2048,4096,8192 --samples "$samples" \
      --tasks niah_single_1,niah_single_2,niah_multikey_1,niah_multivalue,niah_multiquery,vt,cwe,fwe \
      --attention "$methods" --budget-ratio 0.0625,0.125,0.25 --head-scores "$heads" --max-new-tokens 40 \
      --out "$out/ruler"
    ;;
  ppl)
    build/recall eval ppl -m "$M" --threads 2 --text "$cache/prose/austen.txt" --ctx 8192 --eval-tokens 256 \
      --attention "$methods" --head-scores "$heads" --out "$out/ppl"
    ;;
  plots) bash launch/plots.sh "$out" ;;
  *) echo "results.sh: unknown step '$step' (bench, ruler, ppl, plots)" >&2; exit 1 ;;
  esac
done
