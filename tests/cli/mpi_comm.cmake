# The MPI communicator under a real launcher (only when CMake found MPI):
#   mpi_comm_np3          mpi_comm_check with 3 ranks on this host: collective
#                         results, local ranks, counters, MPI errors as rc_err,
#                         whole and chunked transfers. Exits non-zero on any
#                         mismatch.
#   mpi_comm_abort_rank1  rank 1 injects a failure and aborts while ranks 0
#                         and 2 wait in a collective: the job must end with a
#                         non-zero status within 30 s, and stderr must name
#                         rank 1 (checked by mpi_expect_failure.cmake).
# Open MPI options: shared memory only (no network), oversubscribed ranks
# that yield instead of spinning (3 ranks on 2 cores), and root allowed via
# the environment (containers often run as root; harmless otherwise).
if(NOT MPI_C_FOUND)
  return()
endif()

add_executable(mpi_comm_check ${CMAKE_CURRENT_SOURCE_DIR}/mpi_comm_check.c)
target_link_libraries(mpi_comm_check PRIVATE recall_core)

if(NOT MPIEXEC_EXECUTABLE)
  find_program(MPIEXEC_EXECUTABLE NAMES mpiexec mpirun)
endif()
if(NOT MPIEXEC_EXECUTABLE)
  message(STATUS "MPI found but no mpiexec: the mpirun tests of the communicator are not registered")
  return()
endif()
if(NOT MPIEXEC_NUMPROC_FLAG)
  set(MPIEXEC_NUMPROC_FLAG -np)
endif()

execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version
  OUTPUT_VARIABLE recall_mpiexec_version ERROR_VARIABLE recall_mpiexec_version_err
  RESULT_VARIABLE recall_mpiexec_version_rc TIMEOUT 30)
set(recall_mpiexec_args ${MPIEXEC_NUMPROC_FLAG} 3)
set(recall_mpi_abort_code "")
if("${recall_mpiexec_version}${recall_mpiexec_version_err}" MATCHES "Open MPI|OpenRTE")
  list(APPEND recall_mpiexec_args --oversubscribe --mca btl self,vader --mca pml ob1 --mca mpi_yield_when_idle 1)
  set(recall_mpi_abort_code 3)  # Open MPI's mpirun exits with the MPI_Abort code
endif()
list(APPEND recall_mpiexec_args ${MPIEXEC_PREFLAGS})

# ASan's leak checker reports Open MPI's own allocations at exit: off for
# these tests only. One OpenMP thread per rank: there are only 2 cores.
set(recall_mpi_test_env
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 OMP_NUM_THREADS=1)

add_test(NAME mpi_comm_np3
  COMMAND ${MPIEXEC_EXECUTABLE} ${recall_mpiexec_args} $<TARGET_FILE:mpi_comm_check> ${MPIEXEC_POSTFLAGS})
set_tests_properties(mpi_comm_np3 PROPERTIES
  ENVIRONMENT "${recall_mpi_test_env}" TIMEOUT 120 PROCESSORS 2 LABELS mpi)

list(JOIN recall_mpiexec_args "|" recall_mpiexec_joined)
add_test(NAME mpi_comm_abort_rank1
  COMMAND ${CMAKE_COMMAND}
    -DMPIEXEC=${MPIEXEC_EXECUTABLE}
    "-DARGS=${recall_mpiexec_joined}|$<TARGET_FILE:mpi_comm_check>|--fail-rank|1"
    "-DMATCH=rank 1 @ [^ ]+ injected failure"
    -DEXPECT_CODE=${recall_mpi_abort_code}
    -DTIMEOUT=30
    -P ${CMAKE_CURRENT_LIST_DIR}/mpi_expect_failure.cmake)
set_tests_properties(mpi_comm_abort_rank1 PROPERTIES
  ENVIRONMENT "${recall_mpi_test_env}" TIMEOUT 45 PROCESSORS 2 LABELS mpi)
