# cmake -P driver of eval_custom_tiny (tests/cli/eval_custom.cmake), on the
# tiny model (byte-level tokenizer, 64-token context): cheap checks of the
# plumbing, not of answers.
#   1. Without --out, every run gets its own directory under runs/: two runs
#      of eval custom give two directories with custom.{jsonl,csv,json}; eval
#      ppl writes runs/eval-ppl-*/ppl.{csv,json}, bench --csv (no file)
#      runs/bench-*/bench.csv; bench --csv FILE still writes FILE.
#   2. A sample longer than --ctx: skipped with a warning naming its line (not
#      in the JSONL), or with --truncate middle cut to ctx - max_new_tokens
#      tokens (cut_tokens > 0).
#   -DRECALL= -DMODEL= -DTEXT= -DWORK=
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/cwd)
set(ENV{GOMP_SPINCOUNT} 2000)
string(REPEAT "a long prompt " 20 long)
file(WRITE ${WORK}/d.jsonl "{\"prompt\":\"hello there\",\"answers\":\"x\",\"id\":\"short\"}\n"
                           "{\"prompt\":\"${long}\",\"answers\":\"y\",\"id\":\"long\"}\n")
set(tiny_args -m ${MODEL} --data ${WORK}/d.jsonl --ctx 64 --max-new-tokens 8 --threads 1)

function(run_ok)
  execute_process(COMMAND ${RECALL} ${ARGN} WORKING_DIRECTORY ${WORK}/cwd
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "recall ${ARGN}: exit ${rc}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
  set(err "${err}" PARENT_SCOPE)
endfunction()

# 1. run directories
run_ok(eval custom ${tiny_args})
run_ok(eval custom ${tiny_args})
file(GLOB dirs LIST_DIRECTORIES true ${WORK}/cwd/runs/eval-custom-*)
list(LENGTH dirs n)
if(NOT n EQUAL 2)
  message(FATAL_ERROR "two runs without --out made ${n} directories (${dirs}), expected 2")
endif()
foreach(d ${dirs})
  foreach(ext jsonl csv json)
    if(NOT EXISTS ${d}/custom.${ext})
      message(FATAL_ERROR "${d}/custom.${ext} missing")
    endif()
  endforeach()
endforeach()
if(NOT err MATCHES "results in runs/eval-custom-[0-9]+-[0-9]+(-[0-9]+)?/custom\\.\\{jsonl,csv,json\\}")
  message(FATAL_ERROR "eval custom does not say where its results are:\n${err}")
endif()
file(WRITE ${WORK}/short.txt "Just a short text, long enough for a context of thirty-two byte tokens.\n")
run_ok(eval ppl -m ${MODEL} --text ${WORK}/short.txt --ctx 32 --eval-tokens 8 --threads 1)
file(GLOB ppl ${WORK}/cwd/runs/eval-ppl-*/ppl.csv ${WORK}/cwd/runs/eval-ppl-*/ppl.json)
list(LENGTH ppl n)
if(NOT n EQUAL 2 OR NOT err MATCHES "results in runs/eval-ppl-[0-9-]+/ppl\\.\\{csv,json\\}")
  message(FATAL_ERROR "eval ppl without --out: ${ppl}, expected runs/eval-ppl-*/ppl.{csv,json}")
endif()
set(bench_args bench -m ${MODEL} --prefill 16 --depths 0 --decode-tokens 4 --reps 1 --threads 1)
run_ok(${bench_args} --csv)
file(GLOB bench ${WORK}/cwd/runs/bench-*/bench.csv)
list(LENGTH bench n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "bench --csv without a file: ${bench}, expected one runs/bench-*/bench.csv")
endif()
run_ok(${bench_args} --csv ${WORK}/named.csv)
file(GLOB bench ${WORK}/cwd/runs/bench-*)
list(LENGTH bench n)
if(NOT EXISTS ${WORK}/named.csv OR NOT n EQUAL 1)
  message(FATAL_ERROR "bench --csv FILE did not write FILE, or made a run directory")
endif()

# 2. a sample longer than the context
run_ok(eval custom ${tiny_args} --out ${WORK}/skip/r)
if(NOT err MATCHES "warning: [^\n]*d\\.jsonl:2: [0-9]+ prompt tokens \\+ 8 answer tokens exceed --ctx 64: skipped")
  message(FATAL_ERROR "no warning naming line 2:\n${err}")
endif()
file(READ ${WORK}/skip/r.jsonl text)
if(text MATCHES "\"id\":\"long\"" OR NOT text MATCHES "\"id\":\"short\"")
  message(FATAL_ERROR "the skipped sample was run, or the short one was not:\n${text}")
endif()
run_ok(eval custom ${tiny_args} --truncate middle --out ${WORK}/cut/r)
file(READ ${WORK}/cut/r.jsonl text)
if(NOT text MATCHES "\"id\":\"long\"[^\n]*\"prompt_tokens\":56,\"cut_tokens\":[1-9][0-9]*,")
  message(FATAL_ERROR "--truncate middle: the long sample is not cut to 64 - 8 = 56 tokens:\n${text}")
endif()
message(STATUS "eval custom: run directories, skip and --truncate middle as documented")
