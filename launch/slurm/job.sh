#!/usr/bin/env bash
# The body of every launch/slurm/*.sbatch script (run by sbatch on the first
# node of the allocation, from the submit directory): makes the run directory
# runs/<job id>/, copies the run configuration there, and starts one recall
# rank per Slurm task with srun.
#
# Variables (export them, or pass with sbatch --export=ALL,...):
#   RECALL_CONFIG    the run configuration (required): 'key = value' lines whose keys are
#                    the long flags of the command, e.g. configs/slurm-cpu-generate.ini
#   RECALL_COMMAND   recall subcommand (default generate; also bench, eval ...)
#   RECALL           the binary (default build/recall)
#   RECALL_RUN_ROOT  where run directories go (default runs)
#   RECALL_SRUN_MPI  srun's --mpi plugin (default pmix; `srun --mpi=list` shows the installed
#                    ones; Debian 12's Slurm 22.05 has none, pmi2, pmix, pmix_v4, cray_shasta)
# Arguments after the script name are appended to recall's command line.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
: "${RECALL_CONFIG:?set RECALL_CONFIG to a run configuration file (see launch/slurm/job.sh)}"
[ -f "$RECALL_CONFIG" ] || { echo "recall: RECALL_CONFIG $RECALL_CONFIG: no such file" >&2; exit 1; }
recall="${RECALL:-build/recall}"
run_dir="${RECALL_RUN_ROOT:-runs}/${SLURM_JOB_ID:?not inside a Slurm job}"
mkdir -p "$run_dir"
cp "$RECALL_CONFIG" "$run_dir/config.ini"
# Threads per rank: the CPUs Slurm gave each task.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
{
  echo "job $SLURM_JOB_ID: ${SLURM_NTASKS:-1} tasks on ${SLURM_JOB_NUM_NODES:-1} node(s) (${SLURM_JOB_NODELIST:-?}),"
  echo "$OMP_NUM_THREADS thread(s) per task, srun --mpi=${RECALL_SRUN_MPI:-pmix}"
  echo "command: $recall ${RECALL_COMMAND:-generate} --config $run_dir/config.ini $*"
} > "$run_dir/job.txt"
srun --mpi="${RECALL_SRUN_MPI:-pmix}" --kill-on-bad-exit=1 \
  "$recall" "${RECALL_COMMAND:-generate}" --config "$run_dir/config.ini" "$@" \
  > "$run_dir/stdout.txt" 2> "$run_dir/stderr.txt"
