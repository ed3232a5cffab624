#!/usr/bin/env bash
# Runs recall as N MPI ranks under Open MPI's mpirun, each rank with an equal
# share of its host's cores.
#
#   launch/mpirun.sh -np N [--hostfile FILE] [--dry-run] -- RECALL [ARGS...]
#
#   launch/mpirun.sh -np 2 -- ./build/recall generate -m model.gguf -p "Hello"
#   launch/mpirun.sh -np 8 --hostfile hosts -- ./build/recall generate -m model.gguf -f long.txt
#
# recall notices that mpirun started it and uses MPI by itself; there is no
# flag to pass. What this wrapper adds to a plain mpirun:
#   - OMP_NUM_THREADS = max(1, cores per host / ranks per host), sent to every
#     rank (-x). Ranks per host: N without a hostfile; with one, the slots it
#     gives this host (the first host's when this host is not listed, all cores
#     when no slots= is given), at most N.
#   - ranks x threads <= cores: --bind-to core --map-by slot:PE=<threads>, so
#     each rank's threads stay on their own cores; otherwise (more ranks than
#     cores) --bind-to none --oversubscribe.
#   - --mca btl self,vader,tcp: shared memory within a host, TCP between hosts.
#   - --allow-run-as-root when run as root (containers).
# It prints the mpirun command to stderr, then runs it (exec): the exit status
# is mpirun's, which is the failing rank's when a rank aborts.
#
# Cores per host are the physical cores this process may use (nproc divided by
# the hardware threads per core); every host of a hostfile is assumed to look
# like this one. Environment:
#   RECALL_CORES_PER_HOST  use this core count instead
#   MPIRUN                 the launcher (default: mpirun)
#
# Slurm: run `srun -n N ./build/recall generate ...` directly (no wrapper);
# recall detects srun (PMI/PMIx, SLURM_NTASKS > 1) and uses MPI by itself.
# Set OMP_NUM_THREADS and --cpus-per-task to match.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  printf 'mpirun.sh: %s\n' "$*" >&2
  exit 2
}

np="" hostfile="" dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n|--np) [ $# -ge 2 ] || die "$1 needs a value"; np="$2"; shift 2 ;;
    --hostfile|-hostfile|--machinefile) [ $# -ge 2 ] || die "$1 needs a file"; hostfile="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the recall command goes after --; see --help)" ;;
  esac
done
[ -n "$np" ] || die "missing -np N"
[[ "$np" =~ ^[1-9][0-9]*$ ]] || die "-np expects a positive integer, got '$np'"
[ $# -gt 0 ] || die "missing the command after -- (e.g. -- ./build/recall generate ...)"

# ---- cores on this host ----
if [ -n "${RECALL_CORES_PER_HOST:-}" ]; then
  [[ "$RECALL_CORES_PER_HOST" =~ ^[1-9][0-9]*$ ]] || die "RECALL_CORES_PER_HOST must be a positive integer"
  cores=$RECALL_CORES_PER_HOST
else
  cpus=$(nproc)
  tpc=$(LC_ALL=C lscpu 2>/dev/null | awk -F: '/^Thread\(s\) per core/ {gsub(/ /, "", $2); print $2}')
  [[ "${tpc:-}" =~ ^[1-9][0-9]*$ ]] || tpc=1
  cores=$(( cpus / tpc ))
  [ "$cores" -ge 1 ] || cores=1
fi

# ---- ranks on this host ----
ranks_per_host=$np
if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "cannot read hostfile '$hostfile'"
  names=" $(hostname) $(hostname -s 2>/dev/null || true) localhost 127.0.0.1 "
  # Sum the slots of the lines naming this host; remember the first host's.
  read -r mine first < <(awk -v names="$names" -v cores="$cores" '
    { sub(/#.*/, "") }
    NF == 0 { next }
    {
      slots = cores
      for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, kv, "="); slots = kv[2] + 0 }
      if (first == "") first = slots
      if (index(names, " " $1 " ")) mine += slots
    }
    END { print mine + 0, (first == "" ? 0 : first) }' "$hostfile")
  if [ "$mine" -gt 0 ]; then slots=$mine; else slots=$first; fi
  [ "$slots" -gt 0 ] || die "no host with slots in '$hostfile'"
  [ "$slots" -lt "$np" ] && ranks_per_host=$slots
fi

threads=$(( cores / ranks_per_host ))
[ "$threads" -ge 1 ] || threads=1

cmd=("${MPIRUN:-mpirun}" -np "$np")
[ -n "$hostfile" ] && cmd+=(--hostfile "$hostfile")
if [ $(( ranks_per_host * threads )) -le "$cores" ]; then
  cmd+=(--bind-to core --map-by "slot:PE=$threads")
else
  cmd+=(--bind-to none --oversubscribe)
fi
cmd+=(--mca btl self,vader,tcp)
[ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
export OMP_NUM_THREADS=$threads
cmd+=(-x OMP_NUM_THREADS "$@")

printf '# %d rank(s), %d per host, %d core(s) per host, OMP_NUM_THREADS=%d\n' \
  "$np" "$ranks_per_host" "$cores" "$threads" >&2
shown=""
for a in "${cmd[@]}"; do
  if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then shown+=" $a"; else shown+=" $(printf '%q' "$a")"; fi
done
printf '%s\n' "${shown# }" >&2
[ "$dry_run" -eq 1 ] && exit 0
exec "${cmd[@]}"
