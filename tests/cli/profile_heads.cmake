# `recall profile-heads` (src/cli/profile_heads.c):
#   cli_bad_profile_heads_*   bad input: one "recall: ..." line and exit 1 (bad_input.cmake's helper):
#                             unknown probe, missing -o / --model / --probe, an -o whose directory does
#                             not exist, a length above the model's context or too short for the probe
#                             prompt, an unreadable or missing default haystack (names launch/setup.sh),
#                             depths out of [0, 1] or not numbers, --merge of two r files
#   profile_heads_smoke       real model: r and r2 on one 320-token prompt at one depth, then --merge;
#                             every file loads (string(JSON)) with the model's shape, its meta says 1
#                             example tried and counted, the heads of the layers that retrieve score, and `recall generate --attention headkv --head-scores` runs
#                             with the merged file (this file, run as a cmake -P script)
#   profile_heads_mpi_refused under mpirun: one clear error, the job ends non-zero
# The probe math is unit-tested in tests/test_probe.c.

# ------------------------------------------------------------------ script mode
if(CMAKE_SCRIPT_MODE_FILE)
  if(NOT EXISTS "${MODEL}")
    message(FATAL_ERROR "the real model is required at ${MODEL}; fetch it with: bash launch/setup.sh")
  endif()
  file(REMOVE_RECURSE ${WORK})
  file(MAKE_DIRECTORY ${WORK})

  function(run_recall out_var)
    execute_process(COMMAND ${RECALL} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
    string(REPLACE ";" " " shown "${ARGN}")
    if(NOT rc EQUAL 0 OR err MATCHES "AddressSanitizer|LeakSanitizer|runtime error")
      message(FATAL_ERROR "recall ${shown}\n  exit: ${rc}\n  stderr: [${err}]\n  stdout: [${out}]")
    endif()
    set(${out_var} "${err}" PARENT_SCOPE)
  endfunction()

  # A scores file as the model's shape, with what profile-heads records.
  function(check_scores path probe)
    file(READ ${path} json)
    string(JSON format GET "${json}" format)
    string(JSON got_probe GET "${json}" probe)
    string(JSON n_layer GET "${json}" n_layer)
    string(JSON n_head GET "${json}" n_head)
    string(JSON n_rows LENGTH "${json}" scores)
    string(JSON n_cols LENGTH "${json}" scores 0)
    if(NOT format STREQUAL "recall-head-scores-1" OR NOT got_probe STREQUAL "${probe}" OR NOT n_layer EQUAL 30
       OR NOT n_head EQUAL 9 OR NOT n_rows EQUAL 30 OR NOT n_cols EQUAL 9)
      message(FATAL_ERROR "${path}: format ${format}, probe ${got_probe}, ${n_layer} x ${n_head} heads, "
                          "${n_rows} x ${n_cols} scores; expected probe ${probe}, 30 x 9\n${json}")
    endif()
    string(JSON cmd GET "${json}" command)
    if(NOT cmd MATCHES "^recall profile-heads ")
      message(FATAL_ERROR "${path}: command is '${cmd}'")
    endif()
    if(NOT probe STREQUAL "r+r2")
      string(JSON tried GET "${json}" examples_tried)
      string(JSON counted GET "${json}" examples_counted)
      string(JSON n_examples GET "${json}" n_examples)
      # The example must count: with none counted every score is 0 and the
      # checks below would pass for nothing.
      if(NOT tried EQUAL 1 OR NOT counted EQUAL 1 OR NOT n_examples EQUAL 1)
        message(FATAL_ERROR "${path}: ${tried} examples tried, ${counted} counted, n_examples ${n_examples}; expected 1, 1, 1")
      endif()
    endif()
    # A counted example gives some head a score (a needle span placed on the
    # wrong tokens would leave them all 0); none counted leaves them all 0.
    set(any_positive 0)
    set(positive_layers "")
    foreach(l RANGE 29)
      foreach(h RANGE 8)
        string(JSON v GET "${json}" scores ${l} ${h})
        if(v MATCHES "^-")
          message(FATAL_ERROR "${path}: negative score ${v} at layer ${l} head ${h}")
        elseif(NOT v MATCHES "^0(\\.0*)?$")
          set(any_positive 1)
          list(APPEND positive_layers ${l})
        endif()
      endforeach()
    endforeach()
    # The layers whose heads copy the needle in this example on both probes
    # (measured 2026-12-02 at depth 0.75: r scores heads in 11 layers, r2 in
    # 9; both in 8, 14, 17, 18, 23 and 24): a span placed on the wrong tokens,
    # or scores written to the wrong rows, leaves them at 0.
    foreach(l 8 14 17 18 23 24)
      list(FIND positive_layers ${l} at)
      if(at EQUAL -1)
        message(FATAL_ERROR "${path}: no head of layer ${l} scored (layers with scores: ${positive_layers})")
      endif()
    endforeach()
    string(JSON n_examples GET "${json}" n_examples)
    if((n_examples GREATER 0) AND NOT any_positive)
      message(FATAL_ERROR "${path}: ${n_examples} examples counted but every score is 0")
    endif()
    if((n_examples EQUAL 0) AND any_positive)
      message(FATAL_ERROR "${path}: no example counted but some score is not 0")
    endif()
  endfunction()

  # Depth 0.75: both probes' example counts there (at 0.5 and 0.9 the r2 answer misses).
  set(common -m ${MODEL} --haystack ${HAYSTACK} --lengths 320 --depths 0.75 --threads 2)
  foreach(probe r r2)
    run_recall(err profile-heads ${common} --probe ${probe} -o ${WORK}/${probe}.json)
    if(NOT err MATCHES "\\[1/1\\] ${probe} len 320 \\([0-9]+ tok\\) depth 0.75 seed 0: F1 [0-9.]+ counted")
      message(FATAL_ERROR "profile-heads --probe ${probe}: no per-example line on stderr:\n${err}")
    endif()
    check_scores(${WORK}/${probe}.json ${probe})
  endforeach()
  run_recall(err profile-heads --merge ${WORK}/r.json,${WORK}/r2.json -o ${WORK}/combined.json)
  check_scores(${WORK}/combined.json r+r2)
  # The recall binary's own loader, through the flag that consumes these files.
  run_recall(err generate -m ${MODEL} -p "The capital of France is" -n 4 --attention headkv --kv-budget 8
             --head-scores ${WORK}/combined.json --threads 2)
  message(STATUS "ok: profile-heads r, r2 and --merge files load")
  return()
endif()

# --------------------------------------------------------------- configure mode
set(ph_work ${CMAKE_CURRENT_BINARY_DIR}/profile_heads_tests)
set(ph_out ${CMAKE_CURRENT_BINARY_DIR}/profile_heads_bad.json)
set(ph_hay ${RECALL_TEST_DATA}/prose/persuasion_ch1.txt)
set(ph_tiny ${RECALL_BAD_INPUTS}/tiny.gguf)

recall_cli_expect_failure(unknown_probe PREFIX cli_bad_profile_heads_ MATCH "--probe 'r3'"
  ARGS profile-heads -m ${ph_tiny} --probe r3 -o ${ph_out})
recall_cli_expect_failure(missing_output PREFIX cli_bad_profile_heads_ MATCH "--output"
  ARGS profile-heads -m ${ph_tiny} --probe r)
recall_cli_expect_failure(missing_model PREFIX cli_bad_profile_heads_ MATCH "--model"
  ARGS profile-heads --probe r -o ${ph_out})
recall_cli_expect_failure(missing_probe PREFIX cli_bad_profile_heads_ MATCH "--probe"
  ARGS profile-heads -m ${ph_tiny} -o ${ph_out})
recall_cli_expect_failure(output_dir_missing PREFIX cli_bad_profile_heads_ MATCH "/nonexistent/dir/x\\.json"
  ARGS profile-heads -m ${ph_tiny} --probe r -o /nonexistent/dir/x.json)
recall_cli_expect_failure(length_above_context PREFIX cli_bad_profile_heads_ MATCH "above the model's context"
  ARGS profile-heads -m ${ph_tiny} --probe r --haystack ${ph_hay} --lengths 512,1000000 -o ${ph_out})
recall_cli_expect_failure(haystack_unreadable PREFIX cli_bad_profile_heads_ MATCH "/nonexistent/hay\\.txt"
  ARGS profile-heads -m ${ph_tiny} --probe r --haystack /nonexistent/hay.txt -o ${ph_out})
recall_cli_expect_failure(depth_above_one PREFIX cli_bad_profile_heads_ MATCH "--depths"
  ARGS profile-heads -m ${ph_tiny} --probe r2 --depths 0.5,1.5 -o ${ph_out})
recall_cli_expect_failure(depth_not_number PREFIX cli_bad_profile_heads_ MATCH "--depths: 'deep'"
  ARGS profile-heads -m ${ph_tiny} --probe r2 --depths deep -o ${ph_out})
recall_cli_expect_failure(seeds_zero PREFIX cli_bad_profile_heads_ MATCH "--seeds"
  ARGS profile-heads -m ${ph_tiny} --probe r --seeds 0 -o ${ph_out})
recall_cli_expect_failure(unknown_flag PREFIX cli_bad_profile_heads_ MATCH "--frobnicate"
  ARGS profile-heads -m ${ph_tiny} --probe r --frobnicate -o ${ph_out})
recall_cli_expect_failure(merge_one_file PREFIX cli_bad_profile_heads_ MATCH "exactly two files"
  ARGS profile-heads --merge ${ph_out} -o ${ph_out})
recall_cli_expect_failure(merge_missing_file PREFIX cli_bad_profile_heads_ MATCH "/nonexistent/r\\.json"
  ARGS profile-heads --merge /nonexistent/r.json,/nonexistent/r2.json -o ${ph_out})
# The default haystack lives under $RECALL_CACHE: missing, the error names launch/setup.sh.
recall_cli_expect_failure(default_haystack_missing PREFIX cli_bad_profile_heads_ MATCH "launch/setup\\.sh"
  ARGS profile-heads -m ${ph_tiny} --probe r -o ${ph_out})
set_property(TEST cli_bad_profile_heads_default_haystack_missing APPEND PROPERTY ENVIRONMENT
  "RECALL_CACHE=${CMAKE_CURRENT_BINARY_DIR}/no_such_cache")
# The tiny model's context is 64 tokens, less than the probe prompt without any haystack.
recall_cli_expect_failure(length_too_short PREFIX cli_bad_profile_heads_ MATCH "no room for haystack"
  ARGS profile-heads -m ${ph_tiny} --probe r --haystack ${ph_hay} --lengths 64 -o ${ph_out})

add_test(NAME profile_heads_smoke
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DHAYSTACK=${ph_hay}
          -DWORK=${ph_work} -P ${CMAKE_CURRENT_LIST_FILE})
set_tests_properties(profile_heads_smoke PROPERTIES LABELS real_model TIMEOUT 300
  ENVIRONMENT "OMP_NUM_THREADS=2;GOMP_SPINCOUNT=2000")

# Under mpirun the command refuses to start (it profiles on one process).
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE AND DEFINED recall_mpiexec_args)
  list(JOIN recall_mpiexec_args "|" ph_mpi_args)
  add_test(NAME profile_heads_mpi_refused
    COMMAND ${CMAKE_COMMAND} -DMPIEXEC=${MPIEXEC_EXECUTABLE}
            "-DARGS=${ph_mpi_args}|$<TARGET_FILE:recall>|profile-heads|-m|${ph_tiny}|--probe|r|-o|${ph_out}"
            "-DMATCH=profile-heads runs on one process" -DTIMEOUT=60
            -P ${CMAKE_CURRENT_LIST_DIR}/mpi_expect_failure.cmake)
  set_tests_properties(profile_heads_mpi_refused PROPERTIES LABELS mpi TIMEOUT 120 FIXTURES_REQUIRED recall_bad_inputs
    ENVIRONMENT "${recall_mpi_test_env}")
endif()
