# cmake -P driver of eval_ppl_ranks (see tests/cli/eval.cmake): `recall eval
# ppl` on the real model, ctx 512 with the last 32 tokens scored, for full,
# recycled (K = 64) and snapkv (budget 64), fp32 KV, on 1 and then 2 ranks:
# each CSV has one row per method with a finite perplexity, and the two rank
# counts agree within 1e-4 relative (the rank merge only reorders sums).
if(NOT EXISTS "${MODEL}")
  message(FATAL_ERROR "the real model is required at ${MODEL}; fetch it with: bash launch/setup.sh")
endif()
include(${CMAKE_CURRENT_LIST_DIR}/mpi_run.cmake)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common eval ppl -m ${MODEL} --text ${TEXT} --ctx 512 --eval-tokens 32 --attention full,recycled,snapkv
    --budget-ratio 0.125 --kv-type f32)
set(runs "full,512" "recycled,64" "snapkv,64")

# ppl of one row as an integer in units of 1e-9 (the CSV prints 9 decimals).
function(ppl_of csv run out)
  if(NOT csv MATCHES "\n512,${run},32,[0-9.]+,([0-9]+)\\.([0-9]+),")
    message(FATAL_ERROR "no CSV row 512,${run},32,<mean_nll>,<ppl> in:\n${csv}")
  endif()
  set(${out} "${CMAKE_MATCH_1}${CMAKE_MATCH_2}" PARENT_SCOPE)
endfunction()

foreach(np 1 2)
  recall_run_ranks(${np} 300 ${common} --out ${WORK}/np${np})
  file(READ ${WORK}/np${np}.csv csv${np})
  string(REGEX MATCHALL "\n" lines "${csv${np}}")
  list(LENGTH lines n)
  if(NOT n EQUAL 4)
    message(FATAL_ERROR "np${np}.csv: ${n} lines, expected a header and 3 rows")
  endif()
endforeach()
foreach(run IN LISTS runs)
  ppl_of("${csv1}" "${run}" a)
  ppl_of("${csv2}" "${run}" b)
  math(EXPR diff "${a} - ${b}")
  if(diff LESS 0)
    math(EXPR diff "-${diff}")
  endif()
  math(EXPR scaled "${diff} * 10000")
  if(scaled GREATER a)
    message(FATAL_ERROR "${run}: ppl ${a}e-9 on 1 rank, ${b}e-9 on 2 ranks: more than 1e-4 apart")
  endif()
  message(STATUS "${run}: ppl ${a}e-9 (1 rank) vs ${b}e-9 (2 ranks)")
endforeach()
