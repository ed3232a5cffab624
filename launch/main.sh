#!/usr/bin/env bash
# The main job: set up (packages, model, build), then decode on the real model
# and print the answer and the speed.
#   RECALL_THREADS  threads (default: all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
model="${RECALL_CACHE:-$HOME/.cache/recall}/SmolLM2-135M-Instruct.Q4_1.gguf"
threads="${RECALL_THREADS:-$(nproc)}"
question="In two sentences, why do long-context language models need a KV cache, and what limits its size?"
echo "# recall generate --chat, $threads threads, greedy" >&2
echo "Q: $question"
printf 'A: '
./build/recall generate -m "$model" --chat -p "$question" -n 96 --threads "$threads"
