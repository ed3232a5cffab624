# Under MPI every rank must load the same model file: rank 1 given another
# file (MPMD launch, one rank per program) makes the job fail with one line
# that names rank 1 (cli_load_model). Uses mpi_comm.cmake's launcher settings.
if(NOT MPIEXEC_EXECUTABLE OR NOT DEFINED recall_mpiexec_args)
  return()
endif()
set(recall_mpmd_args ${recall_mpiexec_args})
list(REMOVE_AT recall_mpmd_args 0 1)  # the "-np 3" in front
list(JOIN recall_mpmd_args "|" recall_mpmd_joined)
set(recall_mpmd_rank "generate|-p|hi|-n|2|--threads|1")
add_test(NAME mpi_model_differs_rank1
  COMMAND ${CMAKE_COMMAND}
    -DMPIEXEC=${MPIEXEC_EXECUTABLE}
    "-DARGS=${recall_mpmd_joined}|${MPIEXEC_NUMPROC_FLAG}|1|$<TARGET_FILE:recall>|${recall_mpmd_rank}|-m|${RECALL_BAD_INPUTS}/tiny.gguf|:|${MPIEXEC_NUMPROC_FLAG}|1|$<TARGET_FILE:recall>|${recall_mpmd_rank}|-m|${RECALL_BAD_INPUTS}/tiny_ctx512.gguf"
    "-DMATCH=the model file differs between ranks: rank 1 has [0-9]+ bytes"
    -DTIMEOUT=60
    -P ${CMAKE_CURRENT_LIST_DIR}/mpi_expect_failure.cmake)
set_tests_properties(mpi_model_differs_rank1 PROPERTIES FIXTURES_REQUIRED recall_bad_inputs
  ENVIRONMENT "${recall_mpi_test_env}" TIMEOUT 90 PROCESSORS 2 LABELS mpi)
