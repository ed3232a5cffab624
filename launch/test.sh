#!/usr/bin/env bash
# The test suite: the same set-up as the main job, then ctest on the Release
# build and again on an AddressSanitizer + UndefinedBehaviorSanitizer build,
# then every fuzzing harness for RECALL_FUZZ_SECONDS (default 40) each, after
# its regression inputs (launch/fuzz.sh; a finding fails naming the reproducer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
jobs=1  # tests use 2 threads each; running them in parallel on 2 cores only slows them down
echo "[test] Release build" >&2
ctest --test-dir build --output-on-failure -j"$jobs"
echo "[test] ASan + UBSan build" >&2
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECALL_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j"$(nproc)" >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j"$jobs"
echo "[test] fuzzing (libFuzzer + ASan + UBSan)" >&2
for h in $(bash launch/fuzz.sh list); do
  rc=0
  bash launch/fuzz.sh "$h" "${RECALL_FUZZ_SECONDS:-40}" || rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 77 ] || exit $rc
done
