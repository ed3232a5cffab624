#!/usr/bin/env bash
# The test suite: the same set-up as the main job, then ctest on the Release
# build, again on an AddressSanitizer + UndefinedBehaviorSanitizer build, the
# simulated-rank tests under ThreadSanitizer, then every fuzzing harness for
# RECALL_FUZZ_SECONDS (default 40) each, after its regression inputs
# (launch/fuzz.sh; a finding fails naming the reproducer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
jobs=1  # tests use 2 threads each; running them in parallel on 2 cores only slows them down

# The suite must not shrink quietly (a missing library or tool that drops
# tests at configure time): ctest must register exactly the declared count.
# Adding or removing a test means updating tests/expected_test_count.
expected=$(tr -d '[:space:]' < tests/expected_test_count)
check_count() {
  local got
  got=$(ctest --test-dir "$1" -N | sed -n 's/^Total Tests: //p')
  if [[ "$got" != "$expected" ]]; then
    echo "recall: $1 registers ${got:-no} tests, the suite declares $expected (tests/expected_test_count)" >&2
    exit 1
  fi
}

echo "[test] Release build" >&2
check_count build
ctest --test-dir build --output-on-failure -j"$jobs"
echo "[test] ASan + UBSan build" >&2
# RECALL_CUDA=OFF: nvcc compiles once per run (above); the kernels still run
# here, in the SIMT emulator.
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECALL_SANITIZE=ON -DRECALL_CUDA=OFF >/dev/null
cmake --build build-sanitize -j"$(nproc)" >/dev/null
check_count build-sanitize
# Tests labelled release_only (long real-model sweeps whose code the tiny-model
# tests cover) run in the Release stage only.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j"$jobs" -LE release_only

# ThreadSanitizer on the tests whose simulated ranks are threads sharing one
# communicator. One OpenMP thread: libgomp is not built with TSan, so its
# barriers look like races to it (false positives); with one thread a
# parallel region runs on the calling thread and the ranks' own threads are
# all TSan sees.
echo "[test] ThreadSanitizer build (simulated ranks)" >&2
# The emulator's own tests too: its fibers switch under TSan's fiber API.
tsan_tests=(test_comm test_shard test_recycle test_kvpolicy test_soak test_needle_trace test_emu test_emu_cublas test_emu_proofs test_emu_nccl)
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECALL_TSAN=ON -DRECALL_MPI=OFF -DRECALL_CUDA=OFF >/dev/null
cmake --build build-tsan -j"$(nproc)" --target "${tsan_tests[@]}" >/dev/null
for t in "${tsan_tests[@]}"; do
  echo "[test] tsan: $t" >&2
  OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" "build-tsan/tests/$t" >/dev/null
done

echo "[test] fuzzing (libFuzzer + ASan + UBSan)" >&2
for h in $(bash launch/fuzz.sh list); do
  rc=0
  bash launch/fuzz.sh "$h" "${RECALL_FUZZ_SECONDS:-40}" || rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 77 ] || exit $rc
done
