# cmake -P driver of ruler_summary: launch/ruler_summary.py on hand-made result
# lines whose tables are worked out here by hand. Only samples every kept
# method finished count; trace lines in the same file are skipped; relative
# means are over full attention's.
foreach(v PYTHON SCRIPT WORK)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "ruler_summary_check.cmake: pass -D${v}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(l "{\"format\":\"recall-eval-ruler-1\",\"ctx\":100,")
file(WRITE ${WORK}/r.jsonl
  "${l}\"task\":\"A\",\"sample\":0,\"method\":\"full\",\"score\":1}\n"
  "${l}\"task\":\"A\",\"sample\":0,\"method\":\"m1\",\"score\":1}\n"
  "${l}\"task\":\"A\",\"sample\":0,\"method\":\"m2\",\"score\":0}\n"
  "{\"event\":\"needle_run\",\"run\":0}\n"
  "${l}\"task\":\"A\",\"sample\":1,\"method\":\"full\",\"score\":1}\n"
  "${l}\"task\":\"A\",\"sample\":1,\"method\":\"m1\",\"score\":0}\n"
  "${l}\"task\":\"B\",\"sample\":0,\"method\":\"full\",\"score\":1}\n"
  "${l}\"task\":\"B\",\"sample\":0,\"method\":\"m1\",\"score\":1}\n"
  "${l}\"task\":\"B\",\"sample\":0,\"method\":\"m2\",\"score\":1}\n")

function(summary out_var)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "ruler_summary.py ${ARGN}: exit ${rc}\n${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# All three methods: m2 lacks A's sample 1, so A counts sample 0 only.
summary(all --markdown ${WORK}/r.jsonl)
foreach(row "\\| A \\(n=1\\) \\| B \\(n=1\\) \\| mean"
            "\\| `full` \\| 100 \\| 100 \\| 100\\.0 \\| - \\|"
            "\\| `m1` \\| 100 \\| 100 \\| 100\\.0 \\| 1\\.00 \\|"
            "\\| `m2` \\| 0 \\| 100 \\| 50\\.0 \\| 0\\.50 \\|")
  if(NOT all MATCHES "${row}")
    message(FATAL_ERROR "expected a line matching '${row}' in:\n${all}")
  endif()
endforeach()
# Without m2, A's two samples pair up: m1 scores 50 there, 75 on average.
summary(two --methods full,m1 --markdown ${WORK}/r.jsonl)
if(NOT two MATCHES "\\| `m1` \\| 50 \\| 100 \\| 75\\.0 \\| 0\\.75 \\|" OR NOT two MATCHES "A \\(n=2\\)" OR two MATCHES "m2")
  message(FATAL_ERROR "--methods full,m1: expected m1 at 50/100, mean 75.0, 0.75:\n${two}")
endif()
# --tasks B: only B's sample counts, so m2 is at 100.
summary(only_b --tasks B --markdown ${WORK}/r.jsonl)
if(NOT only_b MATCHES "\\| `m2` \\| 100 \\| 100\\.0 \\| 1\\.00 \\|" OR only_b MATCHES "A \\(n=")
  message(FATAL_ERROR "--tasks B: expected B alone, m2 at 100:\n${only_b}")
endif()
# A method without results is one error line.
execute_process(COMMAND ${PYTHON} ${SCRIPT} --methods full,nope ${WORK}/r.jsonl RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "^ruler_summary.py: no results for method\\(s\\) nope\n$")
  message(FATAL_ERROR "an unknown method must be one error line (exit ${rc}):\n${err}")
endif()
message(STATUS "ruler_summary: paired samples, per-task accuracy, means and ratios as worked out by hand")
