# Runs `recall` once and checks the CLI's error contract: exit status 1 (not
# a signal, a crash or a timeout), and stderr exactly one newline-terminated
# line that starts with "recall: " (and matches MATCH when given), with no
# sanitizer report.
#
#   cmake -DRECALL=/path/to/recall -DARGS="generate|-m|x.gguf|-p|hi"
#         [-DMATCH=regex] [-DEXPECT=success] [-DABSENT=path] -P expect_failure.cmake
#
# ARGS separates the arguments with '|' (a CMake list would be split by
# add_test). EXPECT=success instead checks a run that must work: exit 0 and
# its stdout + stderr matching MATCH (required: exit 0 alone would pass a run
# that did nothing). ABSENT names a file or directory that must not exist
# afterwards (it is removed before the run).

# tests/CMakeLists.txt include()s every cli/*.cmake at configure time; this
# file is only a script for `cmake -P`.
if(NOT CMAKE_SCRIPT_MODE_FILE)
  return()
endif()

if(NOT DEFINED RECALL OR NOT DEFINED ARGS)
  message(FATAL_ERROR "expect_failure.cmake: pass -DRECALL=... and -DARGS=...")
endif()
string(REPLACE "|" ";" args "${ARGS}")
string(REPLACE "|" " " shown "${ARGS}")

if(DEFINED ABSENT AND NOT ABSENT STREQUAL "")
  file(REMOVE_RECURSE "${ABSENT}")
endif()
execute_process(COMMAND ${RECALL} ${args}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  TIMEOUT 120)

function(fail why)
  message(FATAL_ERROR "recall ${shown}\n  ${why}\n  exit: ${rc}\n  stderr: [${err}]\n  stdout: [${out}]")
endfunction()

if(DEFINED ABSENT AND NOT ABSENT STREQUAL "" AND EXISTS "${ABSENT}")
  fail("the run created ${ABSENT}")
endif()
# A signal or timeout gives a text such as "Segmentation fault" instead of a number.
if(NOT rc MATCHES "^[0-9]+$")
  fail("did not exit normally")
endif()
if(err MATCHES "AddressSanitizer|LeakSanitizer|runtime error|Segmentation fault|core dumped")
  fail("sanitizer or crash report on stderr")
endif()

if(EXPECT STREQUAL "success")
  if(NOT rc EQUAL 0)
    fail("expected success")
  endif()
  if(NOT DEFINED MATCH OR MATCH STREQUAL "")
    fail("a success case needs MATCH: what the command must have produced")
  endif()
  if(NOT "${out}${err}" MATCHES "${MATCH}")
    fail("the output does not match '${MATCH}'")
  endif()
  message(STATUS "ok (success): recall ${shown}")
  return()
endif()

if(NOT rc EQUAL 1)
  fail("expected exit status 1")
endif()
if(err STREQUAL "")
  fail("no error message on stderr")
endif()
if(NOT err MATCHES "\n$")
  fail("the error message does not end with a newline")
endif()
string(REGEX REPLACE "\n$" "" line "${err}")
if(line MATCHES "\n")
  fail("stderr has more than one line")
endif()
if(NOT line MATCHES "^recall: ")
  fail("the message does not start with 'recall: '")
endif()
if(DEFINED MATCH AND NOT MATCH STREQUAL "" AND NOT line MATCHES "${MATCH}")
  fail("the message does not match '${MATCH}'")
endif()
message(STATUS "ok: ${line}")
