#!/usr/bin/env bash
# The CUDA backend's checks on a machine with a GPU, in one run:
#   1. build with nvcc (RECALL_CUDA=ON, no MPI) into build-gpu;
#   2. test_kernels_gpu: every op of the CUDA backend against the CPU reference;
#   3. recall generate --backend cuda vs --backend cpu, greedy, full and recycled
#      attention: the same tokens;
#   4. recall bench --backend cuda at depths 0, 8K, 32K and 128K (synthetic KV
#      fill), full and recycled attention, on the real model and on a
#      Llama-3.1-8B-shaped model with random weights (launch/synth_model.py);
#   5. two ranks sharing the one GPU (mpirun -np 2 ... --backend cuda --device 0,
#      full and recycled): the same tokens as one rank (step 3); the ranks move
#      device buffers host-staged, since NCCL refuses two ranks on one GPU; and
#      RECALL_DEVICE_COMM=nccl forced there must end the job with an error
#      within 60 s, not hang. Needs MPI (mpicc + mpiexec); skipped without it.
# Results (logs, CSV) go to $OUT (default gpu-check-out/). The exit status is
# non-zero when any check failed; every step still runs.
#
#   launch/gpu_check.sh fetch   on a machine with apt (not the GPU one): downloads the
#                               .deb files of the libraries the build needs into
#                               .gpu-debs/ (ignored by git), to travel with the tree
#   launch/gpu_check.sh         on the GPU machine: the checks; unpacks .gpu-debs/
#                               into a private prefix when the libraries are missing
#
# Environment: RECALL_MODEL (the real model; default ~/.cache/recall/
# SmolLM2-135M-Instruct.Q4_1.gguf; when absent, a SmolLM2-135M-shaped model
# with random weights stands in and the logs say so), OUT, GPU_CHECK_SKIP_8B=1.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEBS="$ROOT/.gpu-debs"
PKGS="libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libpcre2-8-0 libpcre2-dev libcjson1 libcjson-dev
      pkgconf pkgconf-bin libpkgconf3"

if [ "${1:-}" = fetch ]; then
    mkdir -p "$DEBS" && cd "$DEBS" && apt-get download $PKGS || { echo "gpu_check: apt-get download failed" >&2; exit 1; }
    du -sh "$DEBS"
    exit 0
fi

# Fail fast, before any build, where no GPU is usable.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no usable GPU on this machine (nvidia-smi finds none): nothing to check" >&2
    exit 1
fi
NVCC=${CUDACXX:-/usr/local/cuda/bin/nvcc}
[ -x "$NVCC" ] || NVCC=$(command -v nvcc || true)
[ -n "$NVCC" ] || { echo "gpu_check: no nvcc (set CUDACXX)" >&2; exit 1; }

OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
FAILED=0
say() { echo "gpu_check: $*" | tee -a "$LOG"; }
fail() { say "FAILED: $*"; FAILED=1; }
nvidia-smi -L | tee -a "$LOG"
"$NVCC" --version | tail -1 | tee -a "$LOG"

# Libraries: the machine's own, else the carried .deb files unpacked into a prefix.
CMAKE_EXTRA=()
if ! pkg-config --exists libpcre2-8 libcjson 2>/dev/null || [ ! -e /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h ]; then
    ls "$DEBS"/*.deb >/dev/null 2>&1 || { fail "libraries missing and no .gpu-debs/ (run 'launch/gpu_check.sh fetch' first)"; exit 1; }
    P=/tmp/recall-deps
    for f in "$DEBS"/*.deb; do dpkg -x "$f" "$P"; done
    L=$P/usr/lib/x86_64-linux-gnu
    export PATH="$P/usr/bin:$PATH" PKG_CONFIG_SYSROOT_DIR="$P" PKG_CONFIG_LIBDIR="$L/pkgconfig:$P/usr/share/pkgconfig"
    export LD_LIBRARY_PATH="$L:$L/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    CMAKE_EXTRA=(-DPKG_CONFIG_EXECUTABLE="$P/usr/bin/pkgconf" -DOPENBLAS_OPENMP_LIB="$L/openblas-openmp/libopenblas.so"
                 -DCBLAS_INCLUDE_DIR="$P/usr/include/x86_64-linux-gnu/openblas-openmp")
    say "libraries from .gpu-debs/ unpacked into $P"
fi

# 1. Build (with MPI where the machine has it: step 5).
B=$ROOT/build-gpu
T0=$(date +%s)
MPIEXEC=$(command -v mpiexec || command -v mpirun || true)
MPI_ON=OFF
[ -n "$MPIEXEC" ] && command -v mpicc >/dev/null 2>&1 && MPI_ON=ON
if ! { cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DRECALL_CUDA=ON -DRECALL_MPI=$MPI_ON \
           -DCMAKE_CUDA_COMPILER="$NVCC" "${CMAKE_EXTRA[@]}" &&
       cmake --build "$B" -j"$(nproc)" --target recall test_kernels_gpu; } >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"
    fail "build (see build.log)"
    exit 1
fi
say "build: $(( $(date +%s) - T0 )) s"
R="$B/recall"
"$R" info --backend cuda 2>&1 | tee -a "$LOG" || fail "recall info --backend cuda"

# 2. Every op against the CPU reference, on the GPU.
if "$B/tests/test_kernels_gpu" >"$OUT/test_kernels_gpu.log" 2>&1; then
    say "test_kernels_gpu: passed ($(tail -1 "$OUT/test_kernels_gpu.log"))"
else
    tail -20 "$OUT/test_kernels_gpu.log"
    fail "test_kernels_gpu (exit $?; see test_kernels_gpu.log)"
fi

# 3. Same greedy tokens on both backends.
MODEL=${RECALL_MODEL:-$HOME/.cache/recall/SmolLM2-135M-Instruct.Q4_1.gguf}
MODEL_NOTE="real model"
if [ ! -f "$MODEL" ]; then
    MODEL=/tmp/smollm2-135m.synthetic.q4_1.gguf
    MODEL_NOTE="SmolLM2-135M shape, RANDOM weights (the real model did not travel)"
    [ -f "$MODEL" ] || python3 launch/synth_model.py smollm2-135m --type q4_1 --out "$MODEL" >>"$LOG" 2>&1 ||
        fail "synth_model.py smollm2-135m"
fi
say "model for generate/bench: $MODEL ($MODEL_NOTE)"
PROMPT=$OUT/prompt.txt
for i in 1 2 3 4; do cat README.md; done | head -c 24000 >"$PROMPT"  # ~6K tokens
for att in full recycled; do
    extra=()
    [ $att = recycled ] && extra=(--attention recycled --recycle-k 512 --recycle-stride 4)
    for be in cpu cuda; do
        "$R" generate -m "$MODEL" -f "$PROMPT" -n 48 --temp 0 --backend $be "${extra[@]}" \
            >"$OUT/gen_${att}_${be}.txt" 2>"$OUT/gen_${att}_${be}.err" || fail "generate --backend $be ($att)"
    done
    if cmp -s "$OUT/gen_${att}_cpu.txt" "$OUT/gen_${att}_cuda.txt" && [ -s "$OUT/gen_${att}_cpu.txt" ]; then
        say "generate ($att): cuda and cpu print the same tokens"
    else
        fail "generate ($att): cuda and cpu differ (gen_${att}_*.txt)"
    fi
    grep -h "tok/s" "$OUT/gen_${att}_cuda.err" "$OUT/gen_${att}_cpu.err" 2>/dev/null | tee -a "$LOG"
done

# 4. Decode speed on the GPU at long contexts.
bench() {  # name model
    "$R" bench -m "$2" --backend cuda --fill random --prefill none --depths 0,8192,32768,131072 \
        --attention full,recycled:stride=10 --decode-tokens 32 --csv="$OUT/bench_$1.csv" >"$OUT/bench_$1.log" 2>&1 &&
        cat "$OUT/bench_$1.log" | tee -a "$LOG" || { tail -5 "$OUT/bench_$1.log"; fail "bench $1"; }
}
bench smollm2 "$MODEL"
if [ "${GPU_CHECK_SKIP_8B:-0}" != 1 ]; then
    M8=/tmp/llama-3.1-8b.synthetic.q4_1.gguf
    T0=$(date +%s)
    [ -f "$M8" ] || python3 launch/synth_model.py llama-3.1-8b --type q4_1 --out "$M8" >>"$LOG" 2>&1 ||
        fail "synth_model.py llama-3.1-8b"
    say "llama-3.1-8b synthetic model: $(( $(date +%s) - T0 )) s"
    [ -f "$M8" ] && bench llama8b "$M8"
fi

# 5. Two ranks on the one GPU: host-staged device data path, same tokens as one rank.
if [ "$MPI_ON" = ON ]; then
    MPIRUN=("$MPIEXEC" -np 2 --oversubscribe)
    [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
    for att in full recycled; do
        extra=()
        [ $att = recycled ] && extra=(--attention recycled --recycle-k 512 --recycle-stride 4)
        timeout 600 "${MPIRUN[@]}" "$R" generate -m "$MODEL" -f "$PROMPT" -n 48 --temp 0 --backend cuda --device 0 \
            "${extra[@]}" --stats >"$OUT/gen_${att}_cuda_np2.txt" 2>"$OUT/gen_${att}_cuda_np2.err" ||
            fail "mpirun -np 2 generate --backend cuda --device 0 ($att)"
        if cmp -s "$OUT/gen_${att}_cuda.txt" "$OUT/gen_${att}_cuda_np2.txt" && [ -s "$OUT/gen_${att}_cuda.txt" ]; then
            say "generate ($att): 2 ranks sharing GPU 0 print the same tokens as 1 rank"
        else
            fail "generate ($att): 2 ranks sharing GPU 0 differ from 1 rank (gen_${att}_cuda*.txt)"
        fi
    done
    # NCCL forced on a shared GPU: NCCL refuses it ("Duplicate GPU"); the job must end, with a line, promptly.
    T0=$(date +%s)
    if timeout 60 "${MPIRUN[@]}" -x RECALL_DEVICE_COMM=nccl "$R" generate -m "$MODEL" -p hello -n 4 --backend cuda \
        --device 0 >"$OUT/gen_nccl_shared.txt" 2>"$OUT/gen_nccl_shared.err"; then
        fail "RECALL_DEVICE_COMM=nccl with 2 ranks on one GPU succeeded (expected NCCL to refuse it)"
    elif [ $? = 124 ]; then
        fail "RECALL_DEVICE_COMM=nccl with 2 ranks on one GPU hung (killed after 60 s)"
    else
        say "RECALL_DEVICE_COMM=nccl on a shared GPU ended in $(( $(date +%s) - T0 )) s: $(grep -m1 recall: "$OUT/gen_nccl_shared.err")"
    fi
else
    say "SKIPPED step 5 (2 ranks on one GPU): no MPI on this machine (mpicc, mpiexec)"
fi

[ $FAILED = 0 ] && say "all checks passed" || say "some checks FAILED"
exit $FAILED
