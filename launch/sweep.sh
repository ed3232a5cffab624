#!/usr/bin/env bash
# Runs the grid ranks x context lengths x methods x budgets as one `recall
# bench` per cell, locally (launch/mpirun.sh) or as Slurm job arrays, and
# collects one CSV row per cell, with the machine, the commit and the launch
# command, into OUT/results.csv. Resumable: a cell whose result file exists is
# skipped, so rerunning after an interruption (or after deleting a cell's
# file) runs only what is missing.
#
#   launch/sweep.sh --out DIR -m MODEL [options] [-- extra recall bench flags]
#
#   --ranks LIST        rank counts (default 1,2,4); more ranks than cores run oversubscribed
#   --ctx LIST          context depths (default 8192,16384,32768)
#   --methods LIST      bench --attention entries, one cell each (default full,recycled:stride=10)
#   --budgets LIST      K for recycled, the KV budget for the policies (default: bench's, ctx/8);
#                       full attention has one cell whatever the budgets
#   --fill prefill|random  how each depth is made (default prefill; random: synthetic fill,
#                       full and recycled only)
#   --decode-tokens N   timed decode steps per cell (default 32)
#   --threads N         threads per rank (default: cores / ranks, at least 1)
#   --slurm             submit one Slurm job array per rank count (cells as array tasks)
#                       instead of running here; rerun without --slurm to collect
#   --recall PATH       the binary (default build/recall)
# Files: OUT/cells/<cell>.csv (bench's CSV of the cell), OUT/cells/<cell>.log,
# OUT/results.csv (all finished cells), OUT/sweep.txt (the sweep's command).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "sweep.sh: $*" >&2; exit 1; }
out="" model="" ranks="1,2,4" ctxs="8192,16384,32768" methods="full,recycled:stride=10" budgets=""
fill="prefill" tokens=32 threads="" slurm=0 recall="build/recall" extra=() run_cell=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -m|--model) model="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --ctx) ctxs="$2"; shift 2 ;;
    --methods) methods="$2"; shift 2 ;;
    --budgets) budgets="$2"; shift 2 ;;
    --fill) fill="$2"; shift 2 ;;
    --decode-tokens) tokens="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --slurm) slurm=1; shift ;;
    --recall) recall="$2"; shift 2 ;;
    --run-cell) run_cell="$2"; shift 2 ;;  # internal: one array task
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$out" ] || die "missing --out DIR"
[ -n "$model" ] || die "missing -m MODEL"
[ -f "$model" ] || die "no model at $model"
[ -x "$recall" ] || die "no recall binary at $recall (build first)"
case "$fill" in prefill|random) ;; *) die "--fill: expected prefill or random, got '$fill'" ;; esac
mkdir -p "$out/cells"
cores=$(nproc)
machine="$(hostname -s) $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //; s/,/ /g') ${cores} cores"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)"

# The cells: key, ranks, depth, method (the bench --attention entry).
cells=()
IFS=, read -r -a r_list <<< "$ranks"
IFS=, read -r -a c_list <<< "$ctxs"
IFS=, read -r -a m_list <<< "$methods"
IFS=, read -r -a b_list <<< "${budgets:-default}"
for r in "${r_list[@]}"; do for c in "${c_list[@]}"; do for m in "${m_list[@]}"; do
  for b in "${b_list[@]}"; do
    entry="$m"
    if [ "$b" != default ]; then
      case "$m" in
        full) ;;
        recycled*) entry="$m:k=$b" ;;
        *) entry="$m:budget=$b" ;;
      esac
    fi
    key="np${r}_ctx${c}_$(echo "$entry" | tr ':=,/' '_-__')"
    cells+=("$key|$r|$c|$entry")
    [ "$m" = full ] && break  # one full cell per (ranks, ctx)
  done
done; done; done

cell_cmd() {  # the launch command of one cell, as words
  local r="$2" c="$3" entry="$4" t="$threads"
  [ -n "$t" ] || t=$(( cores / r > 0 ? cores / r : 1 ))
  local bench=("$recall" bench -m "$model" --fill "$fill" --prefill none --depths "$c" --decode-tokens "$tokens"
               --threads "$t" --attention "$entry" --verify-max 0 --csv "$out/cells/$1.csv.partial" "${extra[@]}")
  if [ "$slurm" = 1 ] || [ -n "$run_cell" ]; then
    printf '%s\n' srun --mpi="${RECALL_SRUN_MPI:-pmix}" -n "$r" "${bench[@]}"
  elif [ "$r" = 1 ]; then
    printf '%s\n' "${bench[@]}"
  else
    printf '%s\n' launch/mpirun.sh -np "$r" -- "${bench[@]}"
  fi
}

run_one() {  # runs a cell; its CSV appears only when it finished
  local key="$1"
  mapfile -t cmd < <(cell_cmd "$@")
  if "${cmd[@]}" > "$out/cells/$key.log" 2>&1; then
    { head -1 "$out/cells/$key.csv.partial" | sed 's/^/cell,machine,commit,launch,/'
      tail -n +2 "$out/cells/$key.csv.partial" | while IFS= read -r line; do
        printf '%s,"%s",%s,"%s",%s\n' "$key" "$machine" "$commit" "${cmd[*]//\"/\'}" "$line"; done
    } > "$out/cells/$key.csv"
    rm -f "$out/cells/$key.csv.partial"
  else
    echo "sweep.sh: cell $key failed (see $out/cells/$key.log)" >&2
    return 1
  fi
}

if [ -n "$run_cell" ]; then  # one Slurm array task
  for cell in "${cells[@]}"; do
    IFS='|' read -r key r c entry <<< "$cell"
    [ "$key" = "$run_cell" ] && { run_one "$key" "$r" "$c" "$entry"; exit $?; }
  done
  die "no cell $run_cell in this grid"
fi

printf '%q ' "$0" "$@" > "$out/sweep.txt"
todo=()
for cell in "${cells[@]}"; do
  IFS='|' read -r key _ <<< "$cell"
  [ -s "$out/cells/$key.csv" ] || todo+=("$cell")
done
echo "sweep: ${#cells[@]} cells, $(( ${#cells[@]} - ${#todo[@]} )) done, ${#todo[@]} to run" >&2

if [ "$slurm" = 1 ]; then
  for r in "${r_list[@]}"; do
    keys=()
    for cell in "${todo[@]}"; do IFS='|' read -r key cr _ <<< "$cell"; [ "$cr" = "$r" ] && keys+=("$key"); done
    [ ${#keys[@]} -gt 0 ] || continue
    printf '%s\n' "${keys[@]}" > "$out/array_np$r.txt"
    args=(--out "$out" -m "$model" --ranks "$ranks" --ctx "$ctxs" --methods "$methods" --fill "$fill"
          --decode-tokens "$tokens" --recall "$recall")
    [ -n "$budgets" ] && args+=(--budgets "$budgets")
    [ -n "$threads" ] && args+=(--threads "$threads")
    tail_args=""
    [ ${#extra[@]} -gt 0 ] && tail_args="-- $(printf '%q ' "${extra[@]}")"
    sbatch --parsable -n "$r" -c "${threads:-1}" --array=0-$(( ${#keys[@]} - 1 )) -o "$out/cells/slurm-%A_%a.out" \
      --wrap "bash launch/sweep.sh $(printf '%q ' "${args[@]}") --run-cell \$(sed -n \"\$((SLURM_ARRAY_TASK_ID + 1))p\" $out/array_np$r.txt) $tail_args"
  done
  echo "sweep: submitted; rerun without --slurm once the arrays finish to collect $out/results.csv" >&2
  exit 0
fi

failed=0
for cell in "${todo[@]}"; do
  IFS='|' read -r key r c entry <<< "$cell"
  echo "sweep: running $key" >&2
  run_one "$key" "$r" "$c" "$entry" || failed=1
done
# Collect: one header, every finished cell's rows, in grid order.
first=1
for cell in "${cells[@]}"; do
  IFS='|' read -r key _ <<< "$cell"
  f="$out/cells/$key.csv"
  [ -s "$f" ] || continue
  if [ $first = 1 ]; then head -1 "$f"; first=0; fi
  tail -n +2 "$f"
done > "$out/results.csv.tmp"
mv "$out/results.csv.tmp" "$out/results.csv"
echo "sweep: $(( $(wc -l < "$out/results.csv") - 1 )) rows in $out/results.csv" >&2
exit $failed
