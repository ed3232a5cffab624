#!/usr/bin/env bash
# Fuzzes one input reader with libFuzzer + ASan + UBSan (tests/fuzz/):
#   launch/fuzz.sh HARNESS SECONDS     HARNESS: gguf_model gguf_file tokenizer head_scores config
#   launch/fuzz.sh list                the harnesses
# Builds build-fuzz with clang (RECALL_FUZZ_BUILD to change), writes the seed
# and regression corpora with make_fuzz_corpus, runs every regression input
# once, then fuzzes for SECONDS from the seeds, the regressions and the inputs
# earlier runs kept (build-fuzz/corpus/work/HARNESS). A failure (crash,
# sanitizer report, broken property, leak, timeout, an allocation over 1 GiB)
# exits 1 naming the reproducer. Exit 77: skipped (tokenizer without the real model).
set -euo pipefail
cd "$(dirname "$0")/.."

harnesses=(gguf_model gguf_file tokenizer head_scores config)
if [ "${1:-}" = list ]; then printf '%s\n' "${harnesses[@]}"; exit 0; fi
if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
  echo "usage: launch/fuzz.sh HARNESS SECONDS (harnesses: ${harnesses[*]})" >&2
  exit 2
fi
h=$1 seconds=$2
case " ${harnesses[*]} " in *" $h "*) ;; *) echo "fuzz: unknown harness '$h' (${harnesses[*]})" >&2; exit 2;; esac

build="${RECALL_FUZZ_BUILD:-build-fuzz}"
log() { printf '[fuzz] %s\n' "$*" >&2; }
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECALL_FUZZ=ON -DRECALL_BUILD_TESTS=OFF \
    -DRECALL_MPI=OFF >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target "fuzz_$h" make_fuzz_corpus >/dev/null
corpus="$build/corpus"
"$build/tests/fuzz/make_fuzz_corpus" "$corpus" >/dev/null

bin="$build/tests/fuzz/fuzz_$h"
findings="$build/findings/$h"
work="$corpus/work/$h"
mkdir -p "$findings" "$work"
# Readers' inputs kept in the repository are seeds too.
extra=() dict=() max_len=4096
case "$h" in
  gguf_model|gguf_file) extra=(tests/data/tokenizer); dict=(-dict=tests/fuzz/gguf.dict); max_len=65536 ;;
  head_scores) extra=(configs/heads); max_len=16384 ;;
  config) extra=(configs) ;;
esac
opts=(-timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=1024 -artifact_prefix="$findings/" -print_final_stats=1)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OMP_NUM_THREADS=1
logf="$build/fuzz_$h.log"

fail() {
  local artifact
  artifact=$(ls -t "$findings" 2>/dev/null | head -1 || true)
  tail -n 40 "$logf" >&2
  if [ -n "$artifact" ]; then
    echo "fuzz: $h found a failure; reproduce with: $bin $findings/$artifact" >&2
  else
    echo "fuzz: $h failed: $1 (log: $logf)" >&2
  fi
  exit 1
}

# 1. Every input that ever failed, run once each at full length, then the seeds.
regressions=("$corpus/regressions/$h"/*)
[ -e "${regressions[0]}" ] || regressions=()
set +e
if [ ${#regressions[@]} -gt 0 ]; then
  "$bin" "${opts[@]}" "${regressions[@]}" >"$logf" 2>&1
else
  : >"$logf"
fi
rc=$?
[ $rc -eq 0 ] && { "$bin" "${opts[@]}" -runs=0 "$corpus/seeds/$h" >>"$logf" 2>&1; rc=$?; }
set -e
[ $rc -eq 77 ] && { log "$h: skipped ($(grep -m1 fuzz_ "$logf" || true))"; exit 77; }
[ $rc -eq 0 ] || fail "a regression input"
n_reg=${#regressions[@]}

# 2. Fuzz for SECONDS.
set +e
"$bin" "${opts[@]}" "${dict[@]}" -max_len=$max_len -max_total_time="$seconds" \
  "$work" "$corpus/seeds/$h" "$corpus/regressions/$h" "${extra[@]}" >>"$logf" 2>&1
rc=$?
set -e
[ $rc -eq 0 ] || fail "fuzzing"
runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$logf" | tail -1 | grep -o '[0-9]*$' || echo '?')
cov=$(grep -E '^#[0-9]+.*cov: ' "$logf" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [0-9]+\/[0-9a-zA-Z]+).*/\1/' || true)
log "$h: $n_reg regression inputs pass; ${seconds}s: $runs executions, $cov, no failure"
