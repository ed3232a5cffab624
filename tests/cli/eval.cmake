# `recall eval ruler`, `recall eval ppl`, `recall bench --csv/--json` and
# launch/plots.sh:
#   test_eval_ppl          (tests/test_eval_ppl.c) eval ppl vs a one-shot prefill with logits at every
#                          position and its own log-softmax: full within 1e-4, recycled K = ctx = full
#   eval_ruler_ranks       real model, ctx 512, 2 tasks x 2 samples x (full + snapkv at 2 budgets) on 1
#                          and 2 ranks: the JSONL/CSV/JSON rows, the same answers and scores on both, a
#                          second run resumes with nothing to do and leaves the file alone, and a run
#                          cut off mid-line is resumed to the same results (scripts/eval_ruler_check.cmake)
#   eval_ppl_ranks         eval ppl on 1 and 2 ranks: the same perplexities within 1e-4
#   eval_bench_output      bench --csv/--json on the tiny model: rows, columns, #wrong = 0
#   eval_plots             launch/plots.sh on small CSVs: both PNGs written; a missing input is an error
#   cli_bad_eval_*         bad input: one "recall: ..." line and exit 1 (bad_input.cmake's helper):
#                          unknown task or method, ctx above the trained context, missing/unreadable/short
#                          --text, --eval-tokens >= --ctx, bad --budget-ratio, a budget below the snapkv
#                          window, a missing prose file, an unwritable --csv, and a PREFIX.jsonl of another
#                          model, of other settings or with a line that is not a result
set(eval_work ${CMAKE_CURRENT_BINARY_DIR}/eval_tests)
set(eval_prose ${RECALL_TEST_DATA}/prose/persuasion_ch1.txt)

if(TARGET test_eval_ppl)
  # Keep the unit-test environment (tests/CMakeLists.txt) and add the binary under test.
  set_tests_properties(test_eval_ppl PROPERTIES LABELS real_model TIMEOUT 300
    ENVIRONMENT "OMP_NUM_THREADS=2;GOMP_SPINCOUNT=2000;RECALL_BIN=$<TARGET_FILE:recall>")
endif()

if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  add_test(NAME eval_ruler_ranks
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DPROSE=${eval_prose}
            -DWORK=${eval_work}/ruler -DMPIEXEC=${MPIEXEC_EXECUTABLE}
            -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_ruler_check.cmake)
  add_test(NAME eval_ppl_ranks
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DTEXT=${eval_prose}
            -DWORK=${eval_work}/ppl -DMPIEXEC=${MPIEXEC_EXECUTABLE}
            -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_ppl_check.cmake)
  # Open MPI's allocations look like leaks to LeakSanitizer.
  set_tests_properties(eval_ruler_ranks eval_ppl_ranks PROPERTIES LABELS "real_model;mpi" TIMEOUT 600
                       ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()

add_test(NAME eval_bench_output
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_BAD_INPUTS}/tiny.gguf
          -DWORK=${eval_work}/bench -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_bench_check.cmake)
set_tests_properties(eval_bench_output PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180
                     ENVIRONMENT "OMP_NUM_THREADS=2;GOMP_SPINCOUNT=2000")

find_program(RECALL_GNUPLOT gnuplot)
find_program(RECALL_BASH bash)
if(RECALL_GNUPLOT AND RECALL_BASH)
  add_test(NAME eval_plots
    COMMAND ${CMAKE_COMMAND} -DBASH=${RECALL_BASH} -DSCRIPT=${PROJECT_SOURCE_DIR}/launch/plots.sh
            -DWORK=${eval_work}/plots -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_plots_check.cmake)
  set_tests_properties(eval_plots PROPERTIES TIMEOUT 120)
else()
  # launch/test.sh then fails: fewer tests than tests/expected_test_count.
  message(WARNING "gnuplot not found: the launch/plots.sh test is not registered")
endif()

# Bad input. The tiny model has a 64-token trained context; its tokenizer is
# byte-level, so a 20-byte text has about 20 tokens.
set(tiny ${RECALL_BAD_INPUTS}/tiny.gguf)
file(WRITE ${eval_work}/short.txt "Just a short text.\n")
function(recall_eval_bad name)
  recall_cli_expect_failure(${name} PREFIX cli_bad_eval_ ${ARGN})
endfunction()
recall_eval_bad(no_subcommand MATCH "eval: expected a subcommand, ruler, ppl or custom" ARGS eval)
recall_eval_bad(unknown_subcommand MATCH "eval: unknown subcommand 'frob'" ARGS eval frob)
recall_eval_bad(unknown_task MATCH "--tasks: unknown task 'needle' \\(valid: niah_single_1, niah_single_2, .*fwe\\)$"
  ARGS eval ruler -m ${tiny} --tasks niah_single_1,needle --out ${eval_work}/bad/r)
recall_eval_bad(ruler_ctx_too_large MATCH "--ctx 4096 is larger than the model's trained context \\(64 tokens\\)"
  ARGS eval ruler -m ${tiny} --ctx 64,4096 --out ${eval_work}/bad/r)
recall_eval_bad(ppl_ctx_too_large MATCH "--ctx 128 is larger than the model's trained context \\(64 tokens\\)"
  ARGS eval ppl -m ${tiny} --text ${eval_work}/short.txt --ctx 128 --eval-tokens 8 --out ${eval_work}/bad/p)
recall_eval_bad(ppl_missing_text MATCH "missing --text FILE"
  ARGS eval ppl -m ${tiny} --ctx 32 --eval-tokens 8)
recall_eval_bad(ppl_text_unreadable MATCH "/nonexistent/text\\.txt: cannot open"
  ARGS eval ppl -m ${tiny} --text /nonexistent/text.txt --ctx 32 --eval-tokens 8 --out ${eval_work}/bad/p)
recall_eval_bad(ppl_text_too_short MATCH "short\\.txt has [0-9]+ tokens, fewer than --ctx 48$"
  ARGS eval ppl -m ${tiny} --text ${eval_work}/short.txt --ctx 48 --eval-tokens 8 --out ${eval_work}/bad/p)
recall_eval_bad(ppl_eval_tokens_not_below_ctx MATCH "--eval-tokens 32 must be smaller than --ctx 32"
  ARGS eval ppl -m ${tiny} --text ${eval_work}/short.txt --ctx 32 --eval-tokens 32)
recall_eval_bad(budget_ratio_zero MATCH "--budget-ratio: 0 is not above 0"
  ARGS eval ruler -m ${tiny} --budget-ratio 0.125,0)
recall_eval_bad(budget_ratio_above_one MATCH "--budget-ratio: 1\\.5 is out of range \\[0, 1\\]"
  ARGS eval ppl -m ${tiny} --text ${eval_work}/short.txt --budget-ratio 1.5)
recall_eval_bad(budget_ratio_not_a_number MATCH "--budget-ratio: 'half' is not a number"
  ARGS eval ruler -m ${tiny} --budget-ratio half)
recall_eval_bad(budget_ratio_and_kv_budget MATCH "give --kv-budget or --budget-ratio, not both"
  ARGS eval ruler -m ${tiny} --budget-ratio 0.1 --kv-budget 16)
recall_eval_bad(budget_below_window MATCH "--attention snapkv at --ctx 64, budget 4 \\(--budget-ratio 0\\.0625\\): snapkv: --kv-budget 4 is smaller than the observation window 8"
  ARGS eval ruler -m ${tiny} --ctx 64 --attention full,snapkv --budget-ratio 0.0625 --out ${eval_work}/bad/r)
recall_eval_bad(unknown_method MATCH "--attention: unknown method 'bogus'"
  ARGS eval ruler -m ${tiny} --attention full,bogus)
recall_eval_bad(samples_zero MATCH "--samples: 0 is out of range"
  ARGS eval ruler -m ${tiny} --samples 0)
recall_eval_bad(headkv_without_scores MATCH "--attention headkv needs head-importance scores: --head-scores FILE"
  ARGS eval ruler -m ${tiny} --ctx 64 --attention full,headkv --out ${eval_work}/bad/r)
recall_eval_bad(missing_prose MATCH "/nonexistent/austen\\.txt.*launch/setup\\.sh"
  ARGS eval ruler -m ${tiny} --ctx 64 --tasks niah_single_2 --samples 1 --prose /nonexistent/austen.txt
       --out ${eval_work}/bad/prose --fresh)
recall_eval_bad(bench_csv_unwritable MATCH "--csv /nonexistent/dir/bench\\.csv: cannot open for writing"
  ARGS bench -m ${tiny} --csv /nonexistent/dir/bench.csv)
# Resuming from a results file that does not fit: one line naming the file and line.
set(line_tail "\"seed\":42,\"ctx\":64,\"task\":\"niah_single_1\",\"sample\":0,\"method\":\"full\",\"budget\":64,\"score\":1}")
set(tiny_settings "kv=f16 chat=model prose=austen.txt max_new=0")
file(WRITE ${eval_work}/resume/other_model.jsonl "{\"model\":\"other.gguf\",\"settings\":\"${tiny_settings}\",${line_tail}\n")
file(WRITE ${eval_work}/resume/other_settings.jsonl "{\"model\":\"tiny.gguf\",\"settings\":\"kv=f32\",${line_tail}\n")
file(WRITE ${eval_work}/resume/not_results.jsonl "{\"model\":\"tiny.gguf\",\"settings\":\"${tiny_settings}\",${line_tail}\n{\"hello\":1}\n")
recall_eval_bad(resume_other_model MATCH "other_model\\.jsonl:1: results of another model \\(other\\.gguf, not tiny\\.gguf\\)"
  ARGS eval ruler -m ${tiny} --ctx 64 --tasks niah_single_1 --samples 1 --out ${eval_work}/resume/other_model)
recall_eval_bad(resume_other_settings MATCH "other_settings\\.jsonl:1: results made with other settings \\(kv=f32, not kv=f16 "
  ARGS eval ruler -m ${tiny} --ctx 64 --tasks niah_single_1 --samples 1 --out ${eval_work}/resume/other_settings)
recall_eval_bad(resume_not_results MATCH "not_results\\.jsonl:2: not a result line of 'recall eval ruler'"
  ARGS eval ruler -m ${tiny} --ctx 64 --tasks niah_single_1 --samples 1 --out ${eval_work}/resume/not_results)
