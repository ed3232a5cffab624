# Runs an MPI job that must fail promptly: it must exit with a non-zero status
# (EXPECT_CODE, when given) within TIMEOUT seconds, and its stderr must match
# MATCH, with no sanitizer report.
#
#   cmake -DMPIEXEC=/usr/bin/mpirun -DARGS="-np|3|prog|--fail-rank|1"
#         -DMATCH=regex [-DEXPECT_CODE=3] [-DTIMEOUT=30] -P mpi_expect_failure.cmake
#
# ARGS separates the arguments with '|' (a CMake list would be split by
# add_test). A test with WILL_FAIL could not tell "failed as it should" from
# "hung until the ctest timeout" or "failed for another reason"; this can.

# tests/CMakeLists.txt include()s every cli/*.cmake at configure time; this
# file is only a script for `cmake -P`.
if(NOT CMAKE_SCRIPT_MODE_FILE)
  return()
endif()

if(NOT DEFINED MPIEXEC OR NOT DEFINED ARGS OR NOT DEFINED MATCH)
  message(FATAL_ERROR "mpi_expect_failure.cmake: pass -DMPIEXEC=... -DARGS=... -DMATCH=...")
endif()
if(NOT DEFINED TIMEOUT OR TIMEOUT STREQUAL "")
  set(TIMEOUT 30)
endif()
string(REPLACE "|" ";" args "${ARGS}")
string(REPLACE "|" " " shown "${ARGS}")

string(TIMESTAMP t0 "%s")
execute_process(COMMAND ${MPIEXEC} ${args}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  TIMEOUT ${TIMEOUT})
string(TIMESTAMP t1 "%s")
math(EXPR elapsed "${t1} - ${t0}")

function(fail why)
  message(FATAL_ERROR "${MPIEXEC} ${shown}\n  ${why}\n  exit: ${rc} after ${elapsed} s\n  stderr: [${err}]\n  stdout: [${out}]")
endfunction()

# A timeout or a signal gives a text instead of a number.
if(NOT rc MATCHES "^[0-9]+$")
  fail("did not end by itself within ${TIMEOUT} s")
endif()
if(rc EQUAL 0)
  fail("expected a non-zero exit status")
endif()
if(DEFINED EXPECT_CODE AND NOT EXPECT_CODE STREQUAL "" AND NOT rc EQUAL EXPECT_CODE)
  fail("expected exit status ${EXPECT_CODE}")
endif()
if(err MATCHES "AddressSanitizer|LeakSanitizer|runtime error|Segmentation fault|core dumped")
  fail("sanitizer or crash report on stderr")
endif()
if(NOT err MATCHES "${MATCH}")
  fail("stderr does not match '${MATCH}'")
endif()
message(STATUS "ok: exit ${rc} after ${elapsed} s; stderr matches '${MATCH}'")
