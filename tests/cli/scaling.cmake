# Scaling experiments: synthetic fill in recall bench, recall plan, the Slurm
# scripts under a real Slurm, the sweep driver and the plots.
#   bench_fill_random     bench --fill random on the tiny model: every decode row says
#                         "synthetic fill" (table and CSV), no prefill rows by default
#   cli_bad_scaling_*     bad input: one "recall: ..." line and exit 1
#   plan_output           recall plan --shape: the table and CSV rows for every cell
#   sweep_resume          launch/sweep.sh: resume (see below)
#   scaling_plots         launch/scaling_plots.sh (see below)
#   synth_model           launch/synth_model.py (see below)
#   slurm_cpu_sbatch      (label slurm) munged + slurmctld + slurmd started by the test, the
#                         CPU sbatch script with 2 tasks: the same text and bitwise-equal logits
#                         as mpirun -np 2; then launch/sweep.sh --slurm runs 2 cells as job
#                         arrays and a plain rerun collects them (scripts/slurm_check.sh;
#                         77 = Slurm not installed)
set(scaling_work ${CMAKE_CURRENT_BINARY_DIR}/scaling_tests)
set(tiny ${RECALL_BAD_INPUTS}/tiny.gguf)

add_test(NAME bench_fill_random
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${tiny} -DWORK=${scaling_work}/fill
          -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/bench_fill_check.cmake)
set_tests_properties(bench_fill_random PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 120
                     ENVIRONMENT "OMP_NUM_THREADS=2;GOMP_SPINCOUNT=2000")

add_test(NAME plan_output
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DWORK=${scaling_work}/plan
          -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/plan_check.cmake)
set_tests_properties(plan_output PROPERTIES TIMEOUT 120)

function(recall_scaling_bad name)
  recall_cli_expect_failure(${name} PREFIX cli_bad_scaling_ ${ARGN})
endfunction()
recall_scaling_bad(fill_unknown MATCH "--fill: expected prefill or random, got 'zeros'"
  ARGS bench -m ${tiny} --fill zeros)
recall_scaling_bad(plan_no_shape MATCH "give exactly one of --model and --shape"
  ARGS plan)
recall_scaling_bad(plan_unknown_shape MATCH "--shape: unknown shape 'gpt-9'"
  ARGS plan --shape gpt-9 --device h100)
recall_scaling_bad(plan_unknown_device MATCH "--device: unknown device 'tpu'"
  ARGS plan --shape llama-3.1-8b --device tpu)
recall_scaling_bad(plan_policy MATCH "--attention: plan models full and recycled, not 'snapkv'"
  ARGS plan --shape llama-3.1-8b --device h100 --attention snapkv)

find_program(RECALL_SBATCH sbatch)
find_program(RECALL_BASH_SLURM bash)
add_test(NAME slurm_cpu_sbatch
  COMMAND ${RECALL_BASH_SLURM} ${CMAKE_CURRENT_SOURCE_DIR}/scripts/slurm_check.sh $<TARGET_FILE:recall>
          ${RECALL_MODEL_PATH} ${PROJECT_SOURCE_DIR} ${scaling_work}/slurm)
# Open MPI's allocations look like leaks to LeakSanitizer.
set_tests_properties(slurm_cpu_sbatch PROPERTIES LABELS "slurm;mpi;real_model" TIMEOUT 600 SKIP_RETURN_CODE 77
                     ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")

# sweep_resume: launch/sweep.sh on the tiny model, 8 cells; a rerun does nothing, a deleted
# cell is redone alone (scripts/sweep_check.sh).
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  add_test(NAME sweep_resume
    COMMAND ${RECALL_BASH_SLURM} ${CMAKE_CURRENT_SOURCE_DIR}/scripts/sweep_check.sh ${PROJECT_SOURCE_DIR}
            $<TARGET_FILE:recall> ${tiny} ${scaling_work}/sweep)
  set_tests_properties(sweep_resume PROPERTIES LABELS mpi FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 300
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0;GOMP_SPINCOUNT=2000")
endif()

# scaling_plots: launch/scaling_plots.sh on a small CSV: three PNGs whose series are the CSV's.
find_program(RECALL_GNUPLOT_SCALING gnuplot)
find_program(RECALL_PYTHON3 python3)
if(RECALL_GNUPLOT_SCALING AND RECALL_PYTHON3)
  add_test(NAME scaling_plots
    COMMAND ${CMAKE_COMMAND} -DBASH=${RECALL_BASH_SLURM} -DSCRIPT=${PROJECT_SOURCE_DIR}/launch/scaling_plots.sh
            -DWORK=${scaling_work}/plots -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/scaling_plots_check.cmake)
  set_tests_properties(scaling_plots PROPERTIES TIMEOUT 120)
endif()

# synth_model: launch/synth_model.py smollm2-135m loads with the exact shape and decodes.
if(RECALL_PYTHON3)
  add_test(NAME synth_model
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DPYTHON=${RECALL_PYTHON3}
            -DSCRIPT=${PROJECT_SOURCE_DIR}/launch/synth_model.py -DWORK=${scaling_work}/synth
            -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/synth_model_check.cmake)
  set_tests_properties(synth_model PROPERTIES TIMEOUT 300 ENVIRONMENT "GOMP_SPINCOUNT=2000")
endif()
