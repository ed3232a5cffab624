# cmake -P driver of eval_ruler_ranks (see tests/cli/eval.cmake): `recall eval
# ruler` on the real model at ctx 512, tasks niah_single_1 (noise haystack)
# and niah_single_2 (essay haystack from tests/data/prose), 2 samples each,
# full + snapkv at budget ratios 0.125 and 0.25 (64 and 128 rows): 12 runs.
#   1. 1 rank and 2 ranks: 12 JSONL lines with the expected (task, sample,
#      method, budget) rows and fields; CSV and JSON summaries with the
#      expected rows; the same outputs and scores on both rank counts (fp32
#      KV, so the rank merge's rounding cannot flip a token); full attention
#      answers all 4 samples right (score 1, CSV accuracy 100);
#   2. run again: "0 to run", no decode step, the JSONL byte for byte the same;
#   3. a run killed in the middle of writing its last line: the unfinished
#      line is cut off, only that run is redone, and the results equal the
#      first run's.
if(NOT EXISTS "${MODEL}")
  message(FATAL_ERROR "the real model is required at ${MODEL}; fetch it with: bash launch/setup.sh")
endif()
include(${CMAKE_CURRENT_LIST_DIR}/mpi_run.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common eval ruler -m ${MODEL} --ctx 512 --tasks niah_single_1,niah_single_2 --samples 2
    --attention full,snapkv --budget-ratio 0.125,0.25 --kv-type f32 --prose ${PROSE})

function(count_matches text regex out)
  string(REGEX MATCHALL "${regex}" hits "${text}")
  list(LENGTH hits n)
  set(${out} ${n} PARENT_SCOPE)
endfunction()

# What must not depend on the rank count or on timing: every field but the
# decode time, the KV bytes of the largest rank and the rank count.
function(normalized_jsonl path out)
  file(READ ${path} text)
  string(REGEX REPLACE "\"decode_seconds\":[-+0-9.eE]+," "" text "${text}")
  string(REGEX REPLACE "\"kv_bytes\":[-+0-9.eE]+," "" text "${text}")
  string(REGEX REPLACE "\"ranks\":[0-9]+" "" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

function(check_outputs prefix)
  file(READ ${prefix}.jsonl jsonl)
  count_matches("${jsonl}" "\n" n_lines)
  if(NOT n_lines EQUAL 12)
    message(FATAL_ERROR "${prefix}.jsonl: ${n_lines} lines, expected 12 (2 tasks x 2 samples x 3 runs)")
  endif()
  foreach(pair "\"task\":\"niah_single_1\"=6" "\"task\":\"niah_single_2\"=6" "\"sample\":0,=6" "\"sample\":1,=6"
               "\"method\":\"full\",\"attention\":\"full\",\"budget\":512,=4"
               "\"method\":\"snapkv\",\"attention\":\"snapkv\",\"budget\":64,=4"
               "\"method\":\"snapkv\",\"attention\":\"snapkv\",\"budget\":128,=4"
               "\"model\":\"[^\"]+\\.gguf\"=12" "\"answers\":\\[\"[0-9]+\"\\]=12" "\"score\":(0|1)[,}]=12"
               "\"output\":\"=12" "\"kv_bytes\":[0-9]+=12" "\"prompt_tokens\":3[0-9][0-9],=12")
    string(REGEX REPLACE "=([0-9]+)$" "" regex "${pair}")
    string(REGEX REPLACE ".*=([0-9]+)$" "\\1" want "${pair}")
    count_matches("${jsonl}" "${regex}" n)
    if(NOT n EQUAL want)
      message(FATAL_ERROR "${prefix}.jsonl: ${n} matches of ${regex}, expected ${want}")
    endif()
  endforeach()
  # The scorer must be able to say "right": the real model answers these four
  # samples (seed 42) correctly under full attention (measured 2026-12-02:
  # the output is the needle's number), so any score but 1 there is a bug.
  count_matches("${jsonl}" "\"method\":\"full\",[^\n]*\"score\":1[,}]" n_right)
  if(NOT n_right EQUAL 4)
    message(FATAL_ERROR "${prefix}.jsonl: full attention scored 1 on ${n_right} of 4 samples, expected all 4")
  endif()
  file(READ ${prefix}.csv csv)
  if(NOT csv MATCHES "^ctx,method,budget,task,n,accuracy\n")
    message(FATAL_ERROR "${prefix}.csv: unexpected header")
  endif()
  count_matches("${csv}" "\n" n_rows)
  if(NOT n_rows EQUAL 10)  # header + 3 runs x (2 tasks + mean)
    message(FATAL_ERROR "${prefix}.csv: ${n_rows} lines, expected 10")
  endif()
  foreach(run "full,512" "snapkv,64" "snapkv,128")
    foreach(task niah_single_1 niah_single_2)
      set(acc "(0|50|100)")
      if(run STREQUAL "full,512")
        set(acc 100)
      endif()
      if(NOT csv MATCHES "\n512,${run},${task},2,${acc}\\.0000\n")
        message(FATAL_ERROR "${prefix}.csv: no row 512,${run},${task},2,<accuracy>")
      endif()
    endforeach()
    if(NOT csv MATCHES "\n512,${run},mean,4,[0-9.]+\n")
      message(FATAL_ERROR "${prefix}.csv: no mean row for ${run}")
    endif()
  endforeach()
  file(READ ${prefix}.json json)
  string(JSON n_results LENGTH "${json}" results)
  string(JSON n_tasks LENGTH "${json}" tasks)
  if(NOT n_results EQUAL 3 OR NOT n_tasks EQUAL 2)
    message(FATAL_ERROR "${prefix}.json: ${n_results} results and ${n_tasks} tasks, expected 3 and 2")
  endif()
endfunction()

# 1. one and two ranks
foreach(np 1 2)
  recall_run_ranks(${np} 300 ${common} --out ${WORK}/np${np} --fresh)
  if(NOT err MATCHES "12 runs [^\n]*, 0 already in [^\n]*, 12 to run")
    message(FATAL_ERROR "${np} rank(s): no '12 to run' line")
  endif()
  check_outputs(${WORK}/np${np})
endforeach()
normalized_jsonl(${WORK}/np1.jsonl norm1)
normalized_jsonl(${WORK}/np2.jsonl norm2)
if(NOT norm1 STREQUAL norm2)
  message(FATAL_ERROR "2 ranks answered differently from 1 rank:\n--- 1 rank\n${norm1}\n--- 2 ranks\n${norm2}")
endif()
file(READ ${WORK}/np1.csv csv1)
file(READ ${WORK}/np2.csv csv2)
if(NOT csv1 STREQUAL csv2)
  message(FATAL_ERROR "the accuracy tables of 1 and 2 ranks differ:\n${csv1}\n---\n${csv2}")
endif()

# 2. resume with nothing left
file(SHA256 ${WORK}/np2.jsonl before)
string(TIMESTAMP t0 "%s")
recall_run_ranks(2 120 ${common} --out ${WORK}/np2 --resume)
string(TIMESTAMP t1 "%s")
math(EXPR took "${t1} - ${t0}")
if(NOT err MATCHES "12 already in [^\n]*, 0 to run" OR NOT err MATCHES "eval: 0 decode steps")
  message(FATAL_ERROR "the second run was not a no-op")
endif()
file(SHA256 ${WORK}/np2.jsonl after)
if(NOT before STREQUAL after)
  message(FATAL_ERROR "the second run changed np2.jsonl")
endif()
check_outputs(${WORK}/np2)
message(STATUS "resume with nothing to do: ${took} s including mpirun start-up, file unchanged")

# 3. a run killed while writing its last line
file(READ ${WORK}/np1.jsonl full_text)
string(REGEX REPLACE "[^\n]*\n$" "" cut_text "${full_text}")
string(REGEX MATCH "[^\n]*\n$" last_line "${full_text}")
string(SUBSTRING "${last_line}" 0 60 half_line)
file(WRITE ${WORK}/np1.jsonl "${cut_text}${half_line}")
recall_run_ranks(1 300 ${common} --out ${WORK}/np1)
if(NOT err MATCHES "np1\\.jsonl:12 was unfinished" OR NOT err MATCHES "11 already in [^\n]*, 1 to run")
  message(FATAL_ERROR "the unfinished line was not cut off and redone")
endif()
check_outputs(${WORK}/np1)
normalized_jsonl(${WORK}/np1.jsonl norm1b)
if(NOT norm1b STREQUAL norm1)
  message(FATAL_ERROR "the resumed file differs from the first run:\n${norm1b}\n---\n${norm1}")
endif()
message(STATUS "eval ruler: 1 and 2 ranks agree on all 12 runs; resume redoes only what is missing")
