#!/usr/bin/env bash
# Validates `recall plan` on this machine: measures decode with `recall bench
# --fill random` (synthetic fill: no prefill) for every rank count and
# context, runs `recall plan` for the same grid (its CPU probe at the same
# time, under the same load), and prints a markdown table of predicted vs
# measured milliseconds per full step and per recycled step, with the error.
#
#   launch/validate_plan.sh [-m MODEL] [--ctx LIST] [--ranks LIST] [--decode-tokens N] [--out DIR]
#
# Defaults: the real model, --ctx 2048,8192,32768, --ranks 1,2,4, 20 decode
# tokens, recycled stride 10 (K = ctx / 8), output in build/validate_plan/.
# Every rank runs 1 thread (a loaded machine stalls multi-thread barriers);
# ranks above the core count run oversubscribed (launch/mpirun.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

model="${RECALL_MODEL:-$HOME/.cache/recall/SmolLM2-135M-Instruct.Q4_1.gguf}"
ctxs="2048,8192,32768" ranks="1,2,4" tokens=20 out="build/validate_plan" recall="build/recall"
while [ $# -gt 0 ]; do
  case "$1" in
    -m) model="$2"; shift 2 ;;
    --ctx) ctxs="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --decode-tokens) tokens="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "validate_plan.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -f "$model" ] || { echo "validate_plan.sh: no model at $model (launch/setup.sh fetches it)" >&2; exit 1; }
mkdir -p "$out"
export GOMP_SPINCOUNT=2000  # short OpenMP spin: the machine is shared
uptime > "$out/load.txt"
for np in ${ranks//,/ }; do
  args=(bench -m "$model" --fill random --depths "$ctxs" --decode-tokens "$tokens" --attention full,recycled:stride=10
        --csv "$out/bench_np$np.csv")
  if [ "$np" -eq 1 ]; then
    "$recall" "${args[@]}" --threads 1 > "$out/bench_np$np.txt"
  else
    launch/mpirun.sh -np "$np" -- "$recall" "${args[@]}" --threads 1 > "$out/bench_np$np.txt" 2>/dev/null
  fi
done
"$recall" plan -m "$model" --threads 1 --ctx "$ctxs" --ranks "$ranks" --attention full,recycled \
  --recycle-stride 10 --csv "$out/plan.csv" > "$out/plan.txt"
uptime >> "$out/load.txt"

# Join: bench rows (method, depth, ranks -> ms_full, ms_rec) with plan rows.
awk -F, '
  FNR == 1 { next }
  FILENAME ~ /plan.csv$/ { pf[$3, $6, $7] = $15; pr[$3, $6, $7] = $16; next }
  $1 == "decode" {
    m = ($2 ~ /^recycled/) ? "recycled" : "full"
    mf[m, $4, $6] = $13; mr[m, $4, $6] = $14; keys[m, $4, $6] = 1
  }
  END {
    print "| method | ctx | ranks | full step: predicted / measured ms | error | recycled step: predicted / measured ms | error |"
    print "|---|---:|---:|---:|---:|---:|---:|"
    for (k in keys) {
      split(k, a, SUBSEP)
      e1 = (mf[k] > 0) ? sprintf("%+.0f%%", 100 * (pf[k] - mf[k]) / mf[k]) : "-"
      rec = (a[1] == "recycled" && mr[k] > 0)
      e2 = rec ? sprintf("%+.0f%%", 100 * (pr[k] - mr[k]) / mr[k]) : "-"
      printf "| %s | %d | %d | %.1f / %.1f | %s | %s | %s |\n", a[1], a[2], a[3], pf[k], mf[k], e1,
             rec ? sprintf("%.1f / %.1f", pr[k], mr[k]) : "-", e2
    }
  }' "$out"/bench_np*.csv "$out/plan.csv" | { read -r h1; read -r h2; echo "$h1"; echo "$h2"; sort -t'|' -k2,2 -k3,3n -k4,4n; } \
  | tee "$out/table.md"
sed -n 2,3p "$out/plan.txt" >&2
cat "$out/load.txt" >&2
