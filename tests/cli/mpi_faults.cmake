# Faults in the middle of a run (src/comm/comm.c, RECALL_COMM_FAIL), 3 ranks,
# tiny model:
#   mpi_fault_prefill_kv   rank 1 fails at its 2nd prefill collective: layer
#                          1's K/V exchange (an allgatherv), while ranks 0 and 2
#                          are inside it;
#   mpi_fault_decode_mid   rank 2 fails in its 3rd decode collective (an
#                          (o, lse) allgather, chunked by a 96-byte call
#                          limit) after the first chunk, the others inside it.
# Each job must end by itself within 30 s with a non-zero status, stderr
# must name the failing rank, and no process it started (mpirun and the
# three ranks, recorded by pid as they start) may be left afterwards.

# ------------------------------------------------------------------ script mode
if(CMAKE_SCRIPT_MODE_FILE)
  file(REMOVE_RECURSE ${WORK})
  file(MAKE_DIRECTORY ${WORK})
  string(REPLACE "|" ";" args "${ARGS}")
  string(REPLACE "|" ";" recall_args "${RECALL_ARGS}")
  # sh records its pid and execs, so each pid is the process itself.
  set(wrap sh -c "echo $$ >> ${WORK}/pids && exec \"$0\" \"$@\"")
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${wrap} ${MPIEXEC} ${args} ${wrap} ${RECALL} ${recall_args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
  string(TIMESTAMP t1 "%s")
  math(EXPR elapsed "${t1} - ${t0}")
  function(fail why)
    message(FATAL_ERROR "${why}\n  exit: ${rc} after ${elapsed} s\n  stderr: [${err}]")
  endfunction()
  if(NOT rc MATCHES "^[0-9]+$")
    fail("the job did not end by itself within 30 s")
  endif()
  if(rc EQUAL 0)
    fail("expected a non-zero exit status")
  endif()
  if(NOT err MATCHES "${MATCH}")
    fail("stderr does not match '${MATCH}'")
  endif()
  file(STRINGS ${WORK}/pids pids)
  list(LENGTH pids n_pids)
  if(NOT n_pids EQUAL 4)
    fail("expected 4 recorded pids (mpirun and 3 ranks), got ${n_pids}: ${pids}")
  endif()
  # Up to 5 s for the last ones to be reaped; a zombie counts as gone.
  foreach(try RANGE 10)
    set(left "")
    foreach(pid ${pids})
      if(EXISTS /proc/${pid}/stat)
        file(READ /proc/${pid}/stat st)
        if(NOT st MATCHES "^[0-9]+ \\([^)]*\\) Z")
          list(APPEND left ${pid})
        endif()
      endif()
    endforeach()
    if(left STREQUAL "")
      break()
    endif()
    execute_process(COMMAND sleep 0.5)
  endforeach()
  if(NOT left STREQUAL "")
    execute_process(COMMAND ps -o pid,stat,args -p ${left} OUTPUT_VARIABLE ps_out)
    foreach(pid ${left})
      execute_process(COMMAND kill -9 ${pid})
    endforeach()
    fail("processes left behind: ${left}\n${ps_out}")
  endif()
  message(STATUS "ok: exit ${rc} after ${elapsed} s, no process left; stderr matches '${MATCH}'")
  return()
endif()

# --------------------------------------------------------------- configure mode
if(NOT MPI_C_FOUND OR NOT DEFINED recall_mpiexec_joined)
  return()  # a build without MPI (-DRECALL_MPI=OFF)
endif()
set(fault_prompt "hello there, a prompt of a few words")
foreach(fault "prefill_kv;1:prefill:2;1;allgatherv" "decode_mid;2:decode:3:mid;2;between two chunks")
  list(POP_FRONT fault tag spec rank what)
  add_test(NAME mpi_fault_${tag}
    COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE} "-DARGS=${recall_mpiexec_joined}|-x|RECALL_COMM_FAIL|-x|RECALL_COMM_MPI_MAX_CALL_BYTES"
            -DRECALL=$<TARGET_FILE:recall>
            "-DRECALL_ARGS=generate|-m|${RECALL_BAD_INPUTS}/tiny.gguf|-p|${fault_prompt}|-n|8"
            "-DMATCH=recall: \\[rank ${rank} @ [^]]+\\] injected failure.*${what}"
            -DWORK=${CMAKE_CURRENT_BINARY_DIR}/mpi_faults/${tag} -P ${CMAKE_CURRENT_LIST_FILE})
  set_tests_properties(mpi_fault_${tag} PROPERTIES
    ENVIRONMENT "${recall_mpi_test_env};RECALL_COMM_FAIL=${spec};RECALL_COMM_MPI_MAX_CALL_BYTES=96"
    TIMEOUT 60 LABELS mpi FIXTURES_REQUIRED recall_bad_inputs)
endforeach()
