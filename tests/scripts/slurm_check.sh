#!/usr/bin/env bash
# ctest slurm_cpu_sbatch: a real one-node Slurm, started by this test as its
# own processes (munged, slurmctld, slurmd on loopback with this machine's
# cores and memory), runs launch/slurm/cpu.sbatch with 2 tasks; the tokens it
# generates (text and every step's logits) must equal a direct `mpirun -np 2`
# run; then launch/sweep.sh --slurm runs two cells as job arrays, which a
# plain rerun collects without running anything. The daemons are stopped by pid. Exit 77 (skip) only when Slurm or
# munge is not installed.
#   slurm_check.sh RECALL MODEL REPO WORK
set -uo pipefail
recall="$1" model="$2" repo="$3" work="$4"
for b in munged slurmctld slurmd sbatch squeue; do
  command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$b" >/dev/null 2>&1 || {
    echo "slurm test skipped: $b is not installed (launch/setup.sh installs slurm-wlm and munge)"; exit 77; }
done
export PATH="$PATH:/usr/sbin"
[ -f "$model" ] || { echo "slurm test: no model at $model"; exit 1; }
rm -rf "$work" && mkdir -p "$work" || exit 1
# Short paths: unix sockets are limited to ~100 bytes.
run=$(mktemp -d /tmp/recall-slurm.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  cp "$run"/*.log "$work/" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
fail() { echo "slurm test FAILED: $*"; for f in "$run"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

# munge with its own key and socket
dd if=/dev/urandom of="$run/munge.key" bs=1024 count=1 status=none && chmod 400 "$run/munge.key"
mkdir -p "$run/munge" && chmod 700 "$run/munge"
munged --foreground --force --key-file="$run/munge.key" --socket="$run/munge/munge.sock" \
  --pid-file="$run/munge/munged.pid" --log-file="$run/munged.log" --seed-file="$run/munge/seed" \
  >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$run/munge/munge.sock" ] && break; sleep 0.1; done
[ -S "$run/munge/munge.sock" ] || fail "munged did not start"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
port=$((20000 + $$ % 20000))
mkdir -p "$run/state" "$run/spool"
cat > "$run/slurm.conf" <<CONF
ClusterName=recalltest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$run/munge/munge.sock
StateSaveLocation=$run/state
SlurmdSpoolDir=$run/spool
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$run/slurmctld.log
SlurmdLogFile=$run/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
PlugStackConfig=/dev/null
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$run/slurm.conf"
slurmctld -D -i -f "$SLURM_CONF" >"$run/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$host" >"$run/slurmd.out" 2>&1 &
pids+=($!)
ok=0
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then ok=1; break; fi
  sleep 0.2
done
[ "$ok" = 1 ] || fail "the node did not come up (sinfo: $(sinfo 2>&1 | tail -1))"
echo "slurm: $(sinfo -V), srun --mpi=list: $(srun --mpi=list 2>&1 | tr -s '\n ' ' ')"

# The job: 2 tasks x 1 thread, greedy, f32 KV (bitwise-reproducible across launchers).
cat > "$work/run.ini" <<CONF
model = $model
prompt = It is a truth universally acknowledged, that a single man in possession of a good fortune
n-predict = 24
kv-type = f32
CONF
cd "$repo" || exit 1
plugin="${RECALL_SRUN_MPI:-pmix}"
jobid=$(RECALL_CONFIG="$work/run.ini" RECALL="$recall" RECALL_RUN_ROOT="$work/runs" RECALL_SRUN_MPI="$plugin" \
  sbatch --parsable -n 2 -c 1 -o "$work/slurm-%j.out" -D "$repo" launch/slurm/cpu.sbatch --logits-out "$work/slurm_logits.bin") \
  || fail "sbatch failed"
deadline=$((SECONDS + 300))
while squeue -h -j "$jobid" 2>/dev/null | grep -q .; do
  [ $SECONDS -lt $deadline ] || { scancel "$jobid"; fail "job $jobid still running after 300 s"; }
  sleep 1
done
rundir="$work/runs/$jobid"
[ -f "$rundir/stdout.txt" ] || fail "no $rundir/stdout.txt (job output: $(cat "$work"/slurm-*.out 2>/dev/null))"
[ -s "$work/slurm_logits.bin" ] || fail "the job wrote no logits (stderr: $(tail -3 "$rundir/stderr.txt"))"
grep -q "2 ranks" "$rundir/stderr.txt" || fail "the job did not run on 2 ranks: $(tail -2 "$rundir/stderr.txt")"
echo "sbatch job $jobid: $(head -2 "$rundir/job.txt" | tr '\n' ' ')"

OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -np 2 "$recall" generate --config "$work/run.ini" \
  --logits-out "$work/mpirun_logits.bin" > "$work/mpirun_stdout.txt" 2> "$work/mpirun_stderr.txt" \
  || fail "mpirun -np 2 failed: $(tail -3 "$work/mpirun_stderr.txt")"
cmp -s "$rundir/stdout.txt" "$work/mpirun_stdout.txt" || fail "generated text differs: [$(cat "$rundir/stdout.txt")] vs [$(cat "$work/mpirun_stdout.txt")]"
cmp -s "$work/slurm_logits.bin" "$work/mpirun_logits.bin" || fail "logits differ between srun and mpirun"
echo "srun --mpi=$plugin with 2 tasks and mpirun -np 2 generated the same $(wc -c < "$rundir/stdout.txt")-byte text and bitwise-equal logits"

# launch/sweep.sh --slurm: one job array per rank count; a plain rerun collects the cells.
sweep=(launch/sweep.sh --out "$work/sweep" -m "$model" --recall "$recall" --ranks 1,2 --ctx 64 --methods full
       --fill random --decode-tokens 2 --threads 1)
RECALL_SRUN_MPI="$plugin" "${sweep[@]}" --slurm > "$work/sweep_submit.log" 2>&1 || fail "sweep --slurm: $(tail -3 "$work/sweep_submit.log")"
deadline=$((SECONDS + 300))
while squeue -h 2>/dev/null | grep -q .; do
  [ $SECONDS -lt $deadline ] || fail "the sweep's job arrays still run after 300 s"
  sleep 1
done
[ -s "$work/sweep/cells/np1_ctx64_full.csv" ] && [ -s "$work/sweep/cells/np2_ctx64_full.csv" ] \
  || fail "the job arrays did not finish both cells: $(cat "$work"/sweep/cells/*.log "$work"/sweep/cells/slurm-*.out 2>/dev/null | tail -12)"
"${sweep[@]}" > "$work/sweep_collect.log" 2>&1 || fail "sweep collect: $(tail -3 "$work/sweep_collect.log")"
grep -q "2 cells, 2 done, 0 to run" "$work/sweep_collect.log" \
  || fail "the Slurm arrays did not finish both cells: $(head -1 "$work/sweep_collect.log"); $(cat "$work"/sweep/cells/*.log 2>/dev/null | tail -5)"
grep -q '^np2_ctx64_full,.*"srun --mpi=[a-z0-9_]* -n 2 .*,decode,full,,64,2,2,' "$work/sweep/results.csv" \
  || fail "no 2-rank row launched by srun in the sweep's results: $(cat "$work/sweep/results.csv")"
echo "sweep --slurm: 2 cells run as Slurm job arrays and collected"
