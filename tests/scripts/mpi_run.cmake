# Included by the mpi_*_check.cmake drivers: runs recall on NP ranks (NP = 1:
# one process with 2 threads; else mpirun, 1 thread per rank) and stops the
# test unless it succeeds and reports bitwise-equal logits on every rank.
# Sets `err` to recall's stderr.
#   recall_run_ranks(NP TIMEOUT ARG...)
# Every real-model test fails (never skips) without the model, with one line.
if(DEFINED MODEL AND NOT EXISTS "${MODEL}")
  message(FATAL_ERROR "the real model is required at ${MODEL}; fetch it with: bash launch/setup.sh")
endif()
set(ENV{GOMP_SPINCOUNT} 2000)
set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
macro(recall_run_ranks np timeout)
  if(${np} EQUAL 1)
    execute_process(COMMAND ${RECALL} ${ARGN} --threads 2
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${timeout})
  else()
    # Oversubscribed ranks on 2 cores must yield while they wait, or they spin each other down.
    execute_process(COMMAND ${MPIEXEC} --oversubscribe -np ${np} --mca btl self,vader --mca mpi_yield_when_idle 1
                            -x OMP_NUM_THREADS=1 ${RECALL} ${ARGN} --threads 1
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${timeout})
  endif()
  message("${out}")
  message("${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "recall with ${np} rank(s) failed (exit ${rc})")
  endif()
  if(NOT err MATCHES "logits bitwise identical on all ranks")
    message(FATAL_ERROR "no cross-rank logits check in the output")
  endif()
endmacro()
