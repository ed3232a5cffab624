# cmake -P driver for one mpi_recycled test (see cli/mpi_recycled.cmake):
# recycled attention (K ${K}, stride 10, fp32 KV) on the real model with NP
# ranks; files under WORK are named by TAG (the setting) and NP.
#   NP = 1: the reference run (logits file and trace).
#   NP > 1: the same tokens as NP = 1 and logits within TOL relative
#           (compare_logits) while the recycled selections (the trace's
#           per-step hash) equal NP = 1's; from the first step where they
#           differ (a near-tie at the K boundary), LOOSE_TOL, and the test
#           says for how many steps; every rank's logits bitwise equal (checked
#           inside recall), and every rank's trace the same schedule, tokens
#           and recycled selections as rank 0's.
#   Any NP: on every rank's trace, steps 10, 20, ... run every layer full and
#           all other steps none; a step with no full layer makes no
#           collective call and moves no byte; on several ranks a full step
#           and the prefill do make calls.
# fp32 KV, as in mpi_generate_check.cmake: with fp16, a 1e-7 difference in
# summation order can flip a K/V element's rounding.
set(n_predict 64)
set(stride 10)
set(common generate -m ${MODEL} -f ${PROMPT} -n ${n_predict} --kv-type f32 --stats
           --attention recycled --recycle-k ${K} --recycle-stride ${stride} --recycle-budgets uniform)  # the paper's K
include(${CMAKE_CURRENT_LIST_DIR}/mpi_run.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/selection_flips.cmake)
file(MAKE_DIRECTORY ${WORK})
set(trace ${WORK}/${TAG}_trace_np${NP}.jsonl)
file(GLOB old_traces ${trace} ${trace}.rank*)
if(old_traces)
  file(REMOVE ${old_traces})
endif()
recall_run_ranks(${NP} 300 ${common} --logits-out ${WORK}/${TAG}_np${NP}.bin --trace ${trace})
if(NOT err MATCHES "recycled attention \\(K ${K}, stride ${stride}, GQA max, pool 7\\): ([0-9]+) of ([0-9]+) decode steps")
  message(FATAL_ERROR "no recycled-attention summary line in the output")
endif()
set(n_full_steps ${CMAKE_MATCH_1})
set(n_steps ${CMAKE_MATCH_2})
math(EXPR want_full "${n_steps} / ${stride}")
if(NOT n_full_steps EQUAL want_full OR n_steps LESS stride)
  message(FATAL_ERROR "${n_full_steps} of ${n_steps} decode steps ran full attention, expected ${want_full}")
endif()

# Every rank's trace.
set(files ${trace})
if(NP GREATER 1)
  math(EXPR last "${NP} - 1")
  foreach(r RANGE 1 ${last})
    list(APPEND files ${trace}.rank${r})
  endforeach()
endif()
foreach(f ${files})
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "no trace ${f}")
  endif()
  file(STRINGS ${f} lines)
  set(n_step_lines 0)
  set(n_recycled 0)
  set(signature "")
  foreach(line IN LISTS lines)
    if(line MATCHES "\"event\":\"prefill\"")
      if(NP GREATER 1 AND line MATCHES "\"comm_calls\":0,")
        message(FATAL_ERROR "${f}: the prefill made no collective call on ${NP} ranks: ${line}")
      endif()
      string(REGEX MATCH "\"selection\":\"[0-9a-f]*\"" selection "${line}")
      string(APPEND signature "prefill ${selection}\n")
      continue()
    endif()
    if(NOT line MATCHES "\"event\":\"step\"")
      continue()
    endif()
    math(EXPR n_step_lines "${n_step_lines} + 1")
    if(NOT line MATCHES "\"step\":([0-9]+),")
      message(FATAL_ERROR "${f}: no step number: ${line}")
    endif()
    set(step ${CMAKE_MATCH_1})
    if(NOT line MATCHES "\"full_layers\":([0-9]+),\"layers\":\"([FR]+)\"")
      message(FATAL_ERROR "${f}: no full_layers/layers: ${line}")
    endif()
    set(full ${CMAKE_MATCH_1})
    set(layers ${CMAKE_MATCH_2})
    string(LENGTH "${layers}" n_layer)
    if(NOT line MATCHES "\"comm_calls\":([0-9]+),\"comm_bytes\":([0-9]+)")
      message(FATAL_ERROR "${f}: no comm_calls/comm_bytes: ${line}")
    endif()
    set(calls ${CMAKE_MATCH_1})
    set(bytes ${CMAKE_MATCH_2})
    # What every rank must agree on: step, token, schedule and (when the
    # trace has it) the hash of the recycled selections.
    string(REGEX MATCH "\"token\":[0-9]+" token "${line}")
    string(REGEX MATCH "\"selection\":\"[0-9a-f]*\"" selection "${line}")
    string(APPEND signature "${step} ${token} ${layers} ${selection}\n")
    math(EXPR phase "${step} % ${stride}")
    if(phase EQUAL 0)
      if(NOT full EQUAL n_layer OR layers MATCHES "R")
        message(FATAL_ERROR "${f}: step ${step} should run every layer full: ${line}")
      endif()
      if(NP GREATER 1 AND calls EQUAL 0)
        message(FATAL_ERROR "${f}: full step ${step} made no collective call: ${line}")
      endif()
    else()
      if(NOT full EQUAL 0 OR layers MATCHES "F")
        message(FATAL_ERROR "${f}: step ${step} should be all recycled: ${line}")
      endif()
      if(NOT calls EQUAL 0 OR NOT bytes EQUAL 0)
        message(FATAL_ERROR "${f}: recycled step ${step} made ${calls} collective calls (${bytes} bytes): ${line}")
      endif()
      math(EXPR n_recycled "${n_recycled} + 1")
    endif()
  endforeach()
  if(NOT n_step_lines EQUAL n_steps OR n_recycled EQUAL 0)
    message(FATAL_ERROR "${f}: ${n_step_lines} step lines (${n_recycled} recycled), expected ${n_steps}")
  endif()
  message(STATUS "${f}: ${n_step_lines} steps, ${n_recycled} recycled with no collective call")
  if(f STREQUAL trace)
    set(signature0 "${signature}")
  elseif(NOT signature STREQUAL signature0)
    message(FATAL_ERROR "${f}: steps, tokens, schedule or selections differ from rank 0's trace")
  endif()
endforeach()

if(NOT NP EQUAL 1)
  first_selection_flip(${WORK}/${TAG}_trace_np1.jsonl ${trace} selection flip flip_layers)
  set(cmp_args ${TOL})
  if(flip GREATER 0)
    message(STATUS "the recycled selections first differ from one process's at step ${flip}: "
                   "logits from there on are held to ${LOOSE_TOL}")
    list(APPEND cmp_args ${flip} ${LOOSE_TOL})
  endif()
  execute_process(COMMAND ${COMPARE} ${WORK}/${TAG}_np1.bin ${WORK}/${TAG}_np${NP}.bin 49152 ${cmp_args}
                  RESULT_VARIABLE crc)
  if(NOT crc EQUAL 0)
    message(FATAL_ERROR "${NP} ranks do not reproduce the single-process run")
  endif()
endif()
