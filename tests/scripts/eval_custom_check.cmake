# cmake -P driver of eval_custom_ranks (tests/cli/eval_custom.cmake):
# `recall eval custom` on the real model with tests/data/custom/austen_qa.jsonl
# (4 questions over the opening of Persuasion, one of them about a sentence
# added to it), ctx 1024, full + snapkv at budget 256: 8 runs.
#   1. 1 rank and 2 ranks: 8 JSONL lines; full attention answers every
#      question correctly, checked on the output text itself (the expected
#      words must be in it, independently of the scorer) and by the scorer
#      (score 1, the table's 100.0); the same outputs and scores on both rank
#      counts (fp32 KV, so the rank merge's rounding cannot flip a token);
#   2. run again: "0 to run", no decode step, the JSONL byte for byte the same;
#   3. one line deleted: only that run is redone, and the results equal the
#      first run's.
#   -DRECALL= -DMODEL= -DDATA= -DWORK= -DMPIEXEC=
if(NOT EXISTS "${MODEL}")
  message("eval test skipped: no model at ${MODEL} (launch/setup.sh fetches it)")
  return()
endif()
include(${CMAKE_CURRENT_LIST_DIR}/mpi_run.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common eval custom -m ${MODEL} --data ${DATA} --ctx 1024 --attention full,snapkv --budget-ratio 0.25 --kv-type f32)

function(count_matches text regex out)
  string(REGEX MATCHALL "${regex}" hits "${text}")
  list(LENGTH hits n)
  set(${out} ${n} PARENT_SCOPE)
endfunction()

# Every field but the decode time, the KV bytes of the largest rank and the
# rank count, one line per run, sorted (a redone run is appended at the end).
function(normalized_jsonl path out)
  file(STRINGS ${path} lines)
  set(norm "")
  foreach(l IN LISTS lines)
    string(REGEX REPLACE "\"decode_seconds\":[-+0-9.eE]+," "" l "${l}")
    string(REGEX REPLACE "\"kv_bytes\":[-+0-9.eE]+," "" l "${l}")
    string(REGEX REPLACE "\"ranks\":[0-9]+" "" l "${l}")
    list(APPEND norm "${l}")
  endforeach()
  list(SORT norm)
  set(${out} "${norm}" PARENT_SCOPE)
endfunction()

function(check_outputs prefix)
  file(READ ${prefix}.jsonl jsonl)
  count_matches("${jsonl}" "\n" n_lines)
  if(NOT n_lines EQUAL 8)
    message(FATAL_ERROR "${prefix}.jsonl: ${n_lines} lines, expected 8 (4 samples x 2 runs)")
  endif()
  # Full attention's answers, read as text: the word each question asks for.
  foreach(pair "house=Kellynch Hall" "county=Somerset" "wife=Elizabeth" "cellar=blue tin box")
    string(REGEX REPLACE "=.*" "" id "${pair}")
    string(REGEX REPLACE ".*=" "" word "${pair}")
    if(NOT jsonl MATCHES "\"id\":\"${id}\",[^\n]*\"method\":\"full\",[^\n]*\"output\":\"[^\n]*${word}[^\n]*\",\"score\":1,")
      message(FATAL_ERROR "${prefix}.jsonl: full attention's answer to '${id}' lacks '${word}' or is not scored 1")
    endif()
  endforeach()
  foreach(pair "\"method\":\"full\",\"attention\":\"full\",\"budget\":1024,=4"
               "\"method\":\"snapkv\",\"attention\":\"snapkv\",\"budget\":256,=4"
               "\"score\":(0|1)[,}]=8" "\"sample_hash\":\"[0-9a-f]+\"=8" "\"cut_tokens\":0,=8"
               "\"prompt_tokens\":[5-9][0-9][0-9],=8")
    string(REGEX REPLACE "=([0-9]+)$" "" regex "${pair}")
    string(REGEX REPLACE ".*=([0-9]+)$" "\\1" want "${pair}")
    count_matches("${jsonl}" "${regex}" n)
    if(NOT n EQUAL want)
      message(FATAL_ERROR "${prefix}.jsonl: ${n} matches of ${regex}, expected ${want}")
    endif()
  endforeach()
  file(READ ${prefix}.csv csv)
  if(NOT csv MATCHES "^ctx,method,budget,metric,n,score\n1024,full,1024,contains,4,100\\.0000\n1024,snapkv,256,contains,4,[0-9.]+\n$")
    message(FATAL_ERROR "${prefix}.csv: unexpected rows:\n${csv}")
  endif()
  file(READ ${prefix}.json json)
  string(JSON n_results LENGTH "${json}" results)
  string(JSON full_score GET "${json}" results 0 score)
  if(NOT n_results EQUAL 2 OR NOT full_score EQUAL 100)
    message(FATAL_ERROR "${prefix}.json: ${n_results} results, full's score ${full_score}; expected 2 and 100")
  endif()
endfunction()

# 1. one and two ranks
foreach(np 1 2)
  recall_run_ranks(${np} 600 ${common} --out ${WORK}/np${np} --fresh)
  if(NOT err MATCHES "8 runs [^\n]*, 0 already in [^\n]*, 8 to run")
    message(FATAL_ERROR "${np} rank(s): no '8 to run' line")
  endif()
  if(NOT out MATCHES "\n  full +1024 +4 +100\\.0 ")
    message(FATAL_ERROR "${np} rank(s): the table does not give full attention 100.0")
  endif()
  check_outputs(${WORK}/np${np})
endforeach()
normalized_jsonl(${WORK}/np1.jsonl norm1)
normalized_jsonl(${WORK}/np2.jsonl norm2)
if(NOT norm1 STREQUAL norm2)
  message(FATAL_ERROR "2 ranks answered differently from 1 rank:\n--- 1 rank\n${norm1}\n--- 2 ranks\n${norm2}")
endif()

# 2. resume with nothing left
file(SHA256 ${WORK}/np2.jsonl before)
recall_run_ranks(2 120 ${common} --out ${WORK}/np2)
if(NOT err MATCHES "8 already in [^\n]*, 0 to run" OR NOT err MATCHES "eval: 0 decode steps")
  message(FATAL_ERROR "the second run was not a no-op")
endif()
file(SHA256 ${WORK}/np2.jsonl after)
if(NOT before STREQUAL after)
  message(FATAL_ERROR "the second run changed np2.jsonl")
endif()
check_outputs(${WORK}/np2)

# 3. a deleted line is redone, and only it
file(STRINGS ${WORK}/np1.jsonl lines)
list(REMOVE_AT lines 2)
list(JOIN lines "\n" kept)
file(WRITE ${WORK}/np1.jsonl "${kept}\n")
recall_run_ranks(1 300 ${common} --out ${WORK}/np1)
if(NOT err MATCHES "7 already in [^\n]*, 1 to run")
  message(FATAL_ERROR "the deleted line was not the only run redone")
endif()
check_outputs(${WORK}/np1)
normalized_jsonl(${WORK}/np1.jsonl norm1b)
if(NOT norm1b STREQUAL norm1)
  message(FATAL_ERROR "the resumed file differs from the first run:\n${norm1b}\n---\n${norm1}")
endif()
message(STATUS "eval custom: full attention answers all 4; 1 and 2 ranks agree on all 8 runs; resume redoes only what is missing")
