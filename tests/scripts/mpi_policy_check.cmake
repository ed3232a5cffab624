# cmake -P driver for one mpi_policy test (see cli/mpi_policy.cmake): a
# KV-compression policy (METHOD, budget 256 rows per KV head, fp32 KV) on the
# real model, run on 1 rank and then on NP ranks:
#   - the same kept positions per (layer, store head): the per-layer hashes
#     of the kept sets (--trace "policy_layers", over all ranks) must be
#     equal at every step, whatever rows counts say, except where a near-tie
#     at a ranked cut (--trace "policy_cuts": the gap there within the
#     rounding measured between the runs; selection_ties) swapped two rows;
#     the test then reports the tie, and any other difference fails;
#   - the same text, and logits within TOL relative (compare_logits) while
#     the kept sets stay equal; only steps from the first tie get LOOSE_TOL,
#     and compare_logits says how many steps that was;
#   - every rank's logits bitwise equal (checked inside recall);
#   - the ranks together hold as many rows as one process, each rank a share.
set(common generate -m ${MODEL} -f ${PROMPT} -n 32 --kv-type f32 --stats --attention ${METHOD} --kv-budget 256)
if(HEADS)
  list(APPEND common --head-scores ${HEADS})
endif()
include(${CMAKE_CURRENT_LIST_DIR}/mpi_run.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/selection_flips.cmake)
file(MAKE_DIRECTORY ${WORK})

function(rows_kept text out_total out_count)
  string(REGEX MATCHALL "rank [0-9]+: KV [0-9]+ rows kept" lines "${text}")
  set(total 0)
  set(count 0)
  foreach(l IN LISTS lines)
    string(REGEX REPLACE ".*KV ([0-9]+) rows kept" "\\1" n "${l}")
    math(EXPR total "${total} + ${n}")
    math(EXPR count "${count} + 1")
  endforeach()
  set(${out_total} ${total} PARENT_SCOPE)
  set(${out_count} ${count} PARENT_SCOPE)
endfunction()

foreach(np 1 ${NP})
  recall_run_ranks(${np} 300 ${common} --logits-out ${WORK}/${METHOD}_np${np}.bin
                   --trace ${WORK}/${METHOD}_trace_np${np}.jsonl)
  set(text_${np} "${out}")
  rows_kept("${err}" rows_${np} ranks_${np})
  if(NOT ranks_${np} EQUAL np)
    message(FATAL_ERROR "${np} rank(s): ${ranks_${np}} 'rows kept' lines in --stats")
  endif()
endforeach()
# 30 layers x 3 KV heads x (256 + the 32 generated tokens) rows in all, minus
# what the policy evicts: h2o and streaming stay at 256 per head.
if(METHOD STREQUAL "h2o" OR METHOD STREQUAL "streaming")
  math(EXPR want "30 * 3 * 256")
  if(NOT rows_1 EQUAL want)
    message(FATAL_ERROR "one rank keeps ${rows_1} rows, expected ${want} (budget 256 per KV head)")
  endif()
endif()
if(NOT rows_${NP} EQUAL rows_1)
  message(FATAL_ERROR "${NP} ranks keep ${rows_${NP}} rows together, one rank ${rows_1}")
endif()
if(NOT text_${NP} STREQUAL text_1)
  message(FATAL_ERROR "${NP} ranks generated different text:\n--- 1 rank\n${text_1}\n--- ${NP} ranks\n${text_${NP}}")
endif()
first_selection_flip(${WORK}/${METHOD}_trace_np1.jsonl ${WORK}/${METHOD}_trace_np${NP}.jsonl policy_layers
                     flip flip_layers)
set(cmp_args ${TOL})
if(flip GREATER 0)
  # Only a near-tie at a ranked cut may make the kept sets differ: the gap
  # there (--trace "policy_cuts") must be within the rounding measured
  # between the two runs on the same step (selection_ties).
  execute_process(COMMAND ${TIES} ${WORK}/${METHOD}_trace_np1.jsonl ${WORK}/${METHOD}_trace_np${NP}.jsonl ${flip}
                  RESULT_VARIABLE trc OUTPUT_VARIABLE ties)
  if(NOT trc EQUAL 0)
    message(FATAL_ERROR "${NP} ranks keep other positions than one process at step ${flip} (layers ${flip_layers}), "
                        "and not by a near-tie:\n${ties}")
  endif()
  message(STATUS "${METHOD}: the kept sets first differ at step ${flip} (layers ${flip_layers}) by a near-tie:\n${ties}"
                 "logits from there on are held to ${LOOSE_TOL}")
  list(APPEND cmp_args ${flip} ${LOOSE_TOL})
endif()
execute_process(COMMAND ${COMPARE} ${WORK}/${METHOD}_np1.bin ${WORK}/${METHOD}_np${NP}.bin 49152 ${cmp_args}
                RESULT_VARIABLE crc)
if(NOT crc EQUAL 0)
  message(FATAL_ERROR "${NP} ranks do not reproduce the single-process run")
endif()
message(STATUS "${METHOD}: ${NP} ranks keep the same positions (${rows_1} rows) and reproduce one process")
