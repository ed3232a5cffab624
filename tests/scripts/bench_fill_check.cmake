# cmake -P driver of bench_fill_random (see tests/cli/scaling.cmake): recall
# bench --fill random on the tiny model (depths 0 and 40; full, recycled and
# snapkv): no prefill rows unless asked; every decode row at depth > 0 says
# "synthetic fill", in the table and in the CSV's fill column (snapkv too: it
# compresses the synthetic cache, voting with the synthetic window); depth 0
# is a plain decode (prefill, verified; snapkv has no prompt to compress).
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${RECALL} bench -m ${MODEL} --fill random --depths 0,40 --decode-tokens 4 --threads 2
                        --attention full,recycled:k=8:stride=2,snapkv:budget=8 --csv ${WORK}/fill.csv
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "recall bench --fill random failed (exit ${rc}): ${err}")
endif()
string(REGEX MATCHALL "\n  decode   [^\n]*" rows "${out}")
list(LENGTH rows n)
if(NOT n EQUAL 6)
  message(FATAL_ERROR "expected 6 decode rows, got ${n}:\n${out}")
endif()
string(REGEX MATCHALL "\n  decode   [^\n]* 40 [^\n]*synthetic fill" synth "${out}")
list(LENGTH synth n)
if(NOT n EQUAL 3 OR out MATCHES "\n  prefill ")
  message(FATAL_ERROR "expected the three depth-40 rows to say 'synthetic fill' and no prefill rows:\n${out}")
endif()
file(READ ${WORK}/fill.csv csv)
string(REGEX MATCHALL "\ndecode,[^\n]*,40,[^\n]*,synthetic fill,\"recall bench[^\n]*" csv_synth "${csv}")
string(REGEX MATCHALL "\ndecode,[^\n]*,0,[^\n]*,0,prefill,\"recall bench[^\n]*" csv_plain "${csv}")
list(LENGTH csv_synth a)
list(LENGTH csv_plain b)
if(NOT a EQUAL 3 OR NOT b EQUAL 2)
  message(FATAL_ERROR "fill.csv: ${a} synthetic rows at depth 40 (expected 3), ${b} verified prefill rows at depth 0 (expected 2):\n${csv}")
endif()
message(STATUS "bench --fill random: 3 synthetic-fill rows, 2 verified rows")
