# `recall eval custom` and the run directories of runs without --out:
#   eval_custom_ranks      real model, tests/data/custom/austen_qa.jsonl, full + snapkv on 1 and 2
#                          ranks: full attention answers all 4 (read from the output text), the same
#                          answers on both, resume with nothing to do, a deleted line redone
#                          (scripts/eval_custom_check.cmake)
#   eval_custom_tiny       tiny model: runs without --out get their own directories (eval custom,
#                          eval ppl, bench --csv); a sample longer than --ctx is skipped with a
#                          warning or cut with --truncate middle (scripts/eval_custom_tiny_check.cmake)
#   cli_bad_eval_custom_*  bad data files (not JSON, missing fields, wrong types, empty, a 2 GiB line,
#                          duplicate ids): one line naming file:line, exit 1, no output created
#                          (scripts/eval_custom_bad_check.cmake); bad flags (one line, exit 1)
set(custom_work ${CMAKE_CURRENT_BINARY_DIR}/eval_tests/custom)
set(custom_tiny ${RECALL_BAD_INPUTS}/tiny.gguf)

if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  add_test(NAME eval_custom_ranks
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH}
            -DDATA=${RECALL_TEST_DATA}/custom/austen_qa.jsonl -DWORK=${custom_work}/ranks
            -DMPIEXEC=${MPIEXEC_EXECUTABLE} -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_custom_check.cmake)
  set_tests_properties(eval_custom_ranks PROPERTIES LABELS "real_model;mpi" TIMEOUT 1500
                       SKIP_REGULAR_EXPRESSION "eval test skipped: no model" ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()

add_test(NAME eval_custom_tiny
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${custom_tiny} -DWORK=${custom_work}/tiny
          -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_custom_tiny_check.cmake)
set_tests_properties(eval_custom_tiny PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180)

# Bad data files, written here; the 2 GiB line is made (sparse) by the driver.
set(custom_bad ${custom_work}/bad_data)
set(ok_line "{\"prompt\": \"p\", \"answers\": \"a\"}\n")
file(WRITE ${custom_bad}/not_json.jsonl "${ok_line}{\"prompt\": oops}\n")
file(WRITE ${custom_bad}/not_object.jsonl "${ok_line}[\"prompt\", \"answers\"]\n")
file(WRITE ${custom_bad}/missing_prompt.jsonl "{\"answers\": [\"a\"]}\n")
file(WRITE ${custom_bad}/missing_answers.jsonl "${ok_line}\n{\"context\": \"c\", \"question\": \"q\"}\n")
file(WRITE ${custom_bad}/wrong_type_prompt.jsonl "{\"prompt\": 42, \"answers\": \"a\"}\n")
file(WRITE ${custom_bad}/wrong_type_answers.jsonl "{\"prompt\": \"p\", \"answers\": [\"a\", 7]}\n")
file(WRITE ${custom_bad}/wrong_type_max_new.jsonl "${ok_line}${ok_line}{\"prompt\": \"p\", \"answers\": \"a\", \"max_new_tokens\": \"ten\"}\n")
file(WRITE ${custom_bad}/wrong_type_chat.jsonl "{\"prompt\": \"p\", \"answers\": \"a\", \"chat\": \"yes\"}\n")
file(WRITE ${custom_bad}/duplicate_id.jsonl "{\"prompt\": \"p\", \"answers\": \"a\", \"id\": 3}\n{\"prompt\": \"q\", \"answers\": \"b\", \"id\": \"3\"}\n")
file(WRITE ${custom_bad}/empty.jsonl "")
function(recall_custom_bad name file match)
  add_test(NAME cli_bad_eval_custom_${name}
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${custom_tiny} -DDATA=${custom_bad}/${file}
            "-DMATCH=${match}" -DWORK=${custom_work}/bad_${name} ${ARGN}
            -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/eval_custom_bad_check.cmake)
  set_tests_properties(cli_bad_eval_custom_${name} PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 120)
endfunction()
recall_custom_bad(not_json not_json.jsonl "not_json\\.jsonl:2: not JSON")
recall_custom_bad(not_object not_object.jsonl "not_object\\.jsonl:2: expected a JSON object, not an array")
recall_custom_bad(missing_prompt missing_prompt.jsonl "missing_prompt\\.jsonl:1: missing \"prompt\"")
recall_custom_bad(missing_answers missing_answers.jsonl "missing_answers\\.jsonl:3: missing \"answers\"")
recall_custom_bad(wrong_type_prompt wrong_type_prompt.jsonl "wrong_type_prompt\\.jsonl:1: \"prompt\" must be a string, not a number")
recall_custom_bad(wrong_type_answers wrong_type_answers.jsonl "wrong_type_answers\\.jsonl:1: \"answers\"\\[1\\] must be a string, not a number")
recall_custom_bad(wrong_type_max_new wrong_type_max_new.jsonl "wrong_type_max_new\\.jsonl:3: \"max_new_tokens\" must be an integer")
recall_custom_bad(wrong_type_chat wrong_type_chat.jsonl "wrong_type_chat\\.jsonl:1: \"chat\" must be true or false, not a string")
recall_custom_bad(duplicate_id duplicate_id.jsonl "duplicate_id\\.jsonl:2: id \"3\" is already used on line 1")
recall_custom_bad(empty empty.jsonl "empty\\.jsonl:1: no samples: the file is empty")
recall_custom_bad(missing_file nonexistent.jsonl "nonexistent\\.jsonl: cannot open: No such file")
recall_custom_bad(huge_line huge.jsonl "huge\\.jsonl:1: the line is longer than 67108864 bytes \\(64 MiB\\)" -DHUGE=1)

# Bad flags: one line, exit 1.
recall_eval_bad(custom_missing_data MATCH "missing --data FILE\\.jsonl" ARGS eval custom -m ${custom_tiny})
recall_eval_bad(custom_bad_metric MATCH "--metric: 'rouge' is not contains, exact or f1"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/empty.jsonl --metric rouge)
recall_eval_bad(custom_bad_score MATCH "--score: 'most' is not any or all"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/empty.jsonl --score most)
recall_eval_bad(custom_bad_truncate MATCH "--truncate: 'left' is not skip or middle"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/empty.jsonl --truncate left)
recall_eval_bad(custom_two_ctx MATCH "--ctx: eval custom takes one context length, not 2"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/empty.jsonl --ctx 32,64)
recall_eval_bad(custom_bad_template MATCH "--template must contain \\{context\\} and \\{question\\}"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/empty.jsonl --template "{context}")
file(WRITE ${custom_bad}/too_long.jsonl "{\"prompt\": \"this prompt is far longer than sixteen tokens\", \"answers\": \"a\"}\n")
recall_eval_bad(custom_nothing_fits MATCH "too_long\\.jsonl: none of its 1 samples fits --ctx 16"
  ARGS eval custom -m ${custom_tiny} --data ${custom_bad}/too_long.jsonl --ctx 16 --max-new-tokens 4 --no-chat --out ${custom_work}/bad/nf)
