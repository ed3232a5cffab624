# Needle tracing and the head scores shipped per model, on the tiny models
# of make_bad_inputs (bad_input.cmake's fixture):
#   needle_trace_cli   generate and eval ruler --trace-needle: traced runs print
#                      and count what untraced ones do (also on 2 ranks under
#                      mpirun); the JSONL's shape; launch/needle_plot.sh
#                      (scripts/needle_trace_check.cmake; the values against brute
#                      force are test_needle_trace's)
#   head_defaults      the fingerprint lookup (a renamed copy finds its scores,
#                      another model does not), HeadKV budgets by default for
#                      recycled attention and the lines that say which
#                      (scripts/head_defaults_check.cmake)
#   cli_bad_needle_*   bad input, one line each
set(needle_work ${CMAKE_CURRENT_BINARY_DIR}/needle_tests)
set(needle_mpi "")
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  set(needle_mpi -DMPIEXEC=${MPIEXEC_EXECUTABLE})
endif()
add_test(NAME needle_trace_cli
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODELS=${RECALL_BAD_INPUTS} -DWORK=${needle_work}/trace
          -DPLOT=${PROJECT_SOURCE_DIR}/launch/needle_plot.sh ${needle_mpi}
          -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/needle_trace_check.cmake)
add_test(NAME head_defaults
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODELS=${RECALL_BAD_INPUTS} -DHEADS=${RECALL_TEST_DATA}/heads
          -DWORK=${needle_work}/heads -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/head_defaults_check.cmake)
set_tests_properties(needle_trace_cli head_defaults PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180)

recall_cli_expect_failure(needle_without_trace MATCH "--trace-needle FILE and --needle TEXT go together"
  ARGS generate -m ${RECALL_BAD_INPUTS}/tiny.gguf -p hi --needle x)
recall_cli_expect_failure(needle_not_in_prompt MATCH "--needle: 'zebra' does not occur in the prompt"
  ABSENT ${needle_work}/not_written.jsonl
  ARGS generate -m ${RECALL_BAD_INPUTS}/tiny.gguf -p hello --needle zebra --trace-needle ${needle_work}/not_written.jsonl)
recall_cli_expect_failure(needle_unwritable MATCH "cannot open for writing"
  ARGS generate -m ${RECALL_BAD_INPUTS}/tiny.gguf -p hello --needle ell --trace-needle /nonexistent/dir/t.jsonl)
recall_cli_expect_failure(needle_trace_is_output MATCH "--trace-needle [^ ]*/r\\.jsonl is the run's own \\.jsonl output"
  ABSENT ${needle_work}/same/r.jsonl
  ARGS eval ruler -m ${RECALL_BAD_INPUTS}/tiny_ctx512.gguf --ctx 500 --tasks niah_single_1 --samples 1
       --prose ${RECALL_TEST_DATA}/prose/persuasion_ch1.txt --out ${needle_work}/same/r --trace-needle ${needle_work}/same/r.jsonl)

# ruler_summary: launch/ruler_summary.py's tables of partial eval ruler runs, against hand-worked figures.
find_program(RECALL_PYTHON3_SUMMARY python3)
if(RECALL_PYTHON3_SUMMARY)
  add_test(NAME ruler_summary
    COMMAND ${CMAKE_COMMAND} -DPYTHON=${RECALL_PYTHON3_SUMMARY} -DSCRIPT=${PROJECT_SOURCE_DIR}/launch/ruler_summary.py
            -DWORK=${needle_work}/summary -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/ruler_summary_check.cmake)
  set_tests_properties(ruler_summary PROPERTIES TIMEOUT 60)
endif()
