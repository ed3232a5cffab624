#!/usr/bin/env bash
# The main job: set up (packages, model, build), then answer a question about
# a long document on the real model with the KV cache sharded over 2 MPI
# ranks, once with full attention and once with recycled attention (most steps
# attend only to a replicated top-K cache, with no communication), and print
# both answers and their speed.
#   RECALL_RANKS      ranks (default 2)
#   RECALL_RECYCLE_K  recycled-cache entries per layer and KV head (default 512)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
model="${RECALL_CACHE:-$HOME/.cache/recall}/SmolLM2-135M-Instruct.Q4_1.gguf"
ranks="${RECALL_RANKS:-2}"
k="${RECALL_RECYCLE_K:-512}"
prompt=$(mktemp)
trap 'rm -f "$prompt"' EXIT
{
  cat tests/data/prose/persuasion_ch1.txt
  printf '\n\nQuestion: What is the name of the baronet of Kellynch Hall, and which book does he like to read?'
} > "$prompt"
echo "# Q: $(tail -n 1 "$prompt" | sed 's/^Question: //')" >&2
for attention in full recycled; do
  extra=()
  [ "$attention" = recycled ] && extra=(--recycle-k "$k" --recycle-stride 10)
  echo "# recall generate --chat over a $(wc -c < "$prompt")-byte document, KV cache sharded over $ranks ranks," \
       "--attention $attention ${extra[*]}" >&2
  launch/mpirun.sh -np "$ranks" -- ./build/recall generate -m "$model" --chat -f "$prompt" -n 64 --stats \
    --attention "$attention" "${extra[@]}"
done
