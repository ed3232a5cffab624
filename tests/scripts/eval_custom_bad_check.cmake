# cmake -P driver of the cli_bad_eval_custom_* tests (tests/cli/eval_custom.cmake):
# `recall eval custom --data DATA` on a bad file must exit 1 with one line
# "recall: DATA:LINE: ..." matching MATCH, and create no output: neither the
# --out directory nor, without --out, a run directory in the working directory.
#   -DRECALL= -DMODEL= -DDATA= -DMATCH= -DWORK= [-DHUGE=1: DATA becomes a 2 GiB sparse file of one line]
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/cwd)
if(HUGE)
  # '{"prompt": "' and then 2 GiB of zero bytes without a newline; sparse, so it takes no disk.
  file(WRITE ${DATA} "{\"prompt\": \"")
  execute_process(COMMAND truncate -s 2G ${DATA} RESULT_VARIABLE rc)
  file(SIZE ${DATA} size)
  if(NOT rc EQUAL 0 OR NOT size EQUAL 2147483648)
    message(FATAL_ERROR "could not make the 2 GiB sparse file ${DATA} (truncate: ${rc}, size ${size})")
  endif()
endif()

function(run_bad)
  execute_process(COMMAND ${RECALL} eval custom -m ${MODEL} --data ${DATA} ${ARGN}
                  WORKING_DIRECTORY ${WORK}/cwd RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  string(REGEX REPLACE "\n$" "" line "${err}")
  if(NOT rc EQUAL 1 OR line MATCHES "\n" OR NOT line MATCHES "^recall: " OR NOT line MATCHES "${MATCH}")
    message(FATAL_ERROR "recall eval custom --data ${DATA} ${ARGN}: expected exit 1 and one line matching "
                        "'${MATCH}'\n  exit: ${rc}\n  stderr: [${err}]")
  endif()
  message(STATUS "ok: ${line}")
endfunction()

run_bad(--out ${WORK}/out/x)
if(EXISTS ${WORK}/out)
  message(FATAL_ERROR "${WORK}/out was created although the data is bad")
endif()
run_bad()
file(GLOB left ${WORK}/cwd/*)
if(left)
  message(FATAL_ERROR "the run without --out left ${left} although the data is bad")
endif()
if(HUGE)
  file(REMOVE ${DATA})
endif()
