# CLI tests on bad input: `recall` must fail with exit status 1 and exactly
# one line "recall: <message>" on stderr, never a crash or sanitizer report
# (checked by expect_failure.cmake). The bad files are written at test time by
# make_bad_inputs, a FIXTURES_SETUP test, into ${RECALL_BAD_INPUTS}.

add_executable(make_bad_inputs ${CMAKE_CURRENT_SOURCE_DIR}/make_bad_inputs.c)
target_link_libraries(make_bad_inputs PRIVATE recall_test_support)

set(RECALL_BAD_INPUTS ${CMAKE_CURRENT_BINARY_DIR}/bad_inputs)
set(RECALL_EXPECT_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/expect_failure.cmake)

add_test(NAME cli_bad_inputs_setup COMMAND make_bad_inputs ${RECALL_BAD_INPUTS})
set_tests_properties(cli_bad_inputs_setup PROPERTIES FIXTURES_SETUP recall_bad_inputs)

# recall_cli_expect_failure(NAME [MATCH regex] [SUCCESS] [PREFIX p] [ABSENT path] ARGS arg...)
# registers test <p><NAME> (prefix default cli_bad_). A SUCCESS case must give
# MATCH, matched against its stdout + stderr. ABSENT: a path that must not
# exist after the run (an output a failed run must not create). Arguments must not
# contain '|' or ';'. Other tests/cli/*.cmake files (included after this one,
# in name order) use it too.
function(recall_cli_expect_failure name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "SUCCESS" "MATCH;PREFIX;ABSENT" "ARGS")
  if(NOT arg_PREFIX)
    set(arg_PREFIX cli_bad_)
  endif()
  list(JOIN arg_ARGS "|" joined)
  set(expect failure)
  if(arg_SUCCESS)
    set(expect success)
    if(NOT arg_MATCH)
      message(FATAL_ERROR "recall_cli_expect_failure(${name} SUCCESS): give MATCH, what the command must produce")
    endif()
  endif()
  add_test(NAME ${arg_PREFIX}${name}
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> "-DARGS=${joined}" "-DMATCH=${arg_MATCH}"
            -DEXPECT=${expect} "-DABSENT=${arg_ABSENT}" -P ${RECALL_EXPECT_SCRIPT})
  set_tests_properties(${arg_PREFIX}${name} PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180)
endfunction()

set(bad ${RECALL_BAD_INPUTS})
set(long_prompt "The quick brown fox jumps over the lazy dog and keeps running far beyond the edge of a tiny context window.")

# The fixture model itself must load, or the cases that use it would pass for the wrong reason.
recall_cli_expect_failure(tiny_model_is_valid SUCCESS MATCH "architecture +llama\nlayers +2\n"
  ARGS info ${bad}/tiny.gguf)
# `recall info` names the CPU kernel path, and RECALL_CPU_PORTABLE=1 switches it.
add_test(NAME info_portable_kernels
  COMMAND ${CMAKE_COMMAND} -E env RECALL_CPU_PORTABLE=1 $<TARGET_FILE:recall> info ${bad}/tiny.gguf)
set_tests_properties(info_portable_kernels PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 60
  PASS_REGULAR_EXPRESSION "cpu kernels +portable\n")
# RECALL_CPU_KERNELS=avx2 caps the path below AVX-512 (portable on a CPU without AVX2).
add_test(NAME info_avx2_kernels
  COMMAND ${CMAKE_COMMAND} -E env RECALL_CPU_KERNELS=avx2 $<TARGET_FILE:recall> info ${bad}/tiny.gguf)
set_tests_properties(info_avx2_kernels PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 60
  PASS_REGULAR_EXPRESSION "cpu kernels +(avx2|portable)\n")

recall_cli_expect_failure(missing_file MATCH "nonexistent" ARGS generate -m /nonexistent.gguf -p hi)
recall_cli_expect_failure(not_gguf MATCH "GGUF|magic" ARGS generate -m ${bad}/not_gguf.bin -p hi)
recall_cli_expect_failure(truncated_header MATCH "truncat" ARGS generate -m ${bad}/truncated_header.gguf -p hi)
recall_cli_expect_failure(truncated_data MATCH "truncat" ARGS generate -m ${bad}/truncated_data.gguf -p hi)
recall_cli_expect_failure(offset_past_eof MATCH "truncat|past|offset|bounds|beyond"
  ARGS generate -m ${bad}/offset_past_eof.gguf -p hi)
recall_cli_expect_failure(unsupported_type MATCH "Q3_K" ARGS generate -m ${bad}/unsupported_type.gguf -p hi)
recall_cli_expect_failure(unknown_type MATCH "99" ARGS generate -m ${bad}/unknown_type.gguf -p hi)
recall_cli_expect_failure(unsupported_arch MATCH "mamba" ARGS generate -m ${bad}/unsupported_arch.gguf -p hi)
recall_cli_expect_failure(prompt_longer_than_ctx MATCH "ctx|context|long|exceed"
  ARGS generate -m ${bad}/tiny.gguf -p "${long_prompt}" --ctx 8)
recall_cli_expect_failure(negative_n_predict ARGS generate -m ${bad}/tiny.gguf -p hi -n -1)
recall_cli_expect_failure(n_not_a_number ARGS generate -m ${bad}/tiny.gguf -p hi -n abc)
recall_cli_expect_failure(unknown_flag MATCH "no-such-flag" ARGS generate -m ${bad}/tiny.gguf -p hi --no-such-flag)
recall_cli_expect_failure(missing_model_flag ARGS generate -p hi)
recall_cli_expect_failure(missing_prompt ARGS generate -m ${bad}/tiny.gguf)
recall_cli_expect_failure(missing_prompt_file MATCH "prompt\\.txt"
  ARGS generate -m ${bad}/tiny.gguf -f /nonexistent/prompt.txt)
recall_cli_expect_failure(unknown_command MATCH "frobnicate" ARGS frobnicate)
recall_cli_expect_failure(info_missing_file MATCH "nonexistent" ARGS info /nonexistent.gguf)
recall_cli_expect_failure(info_not_gguf MATCH "GGUF|magic" ARGS info ${bad}/not_gguf.bin)
recall_cli_expect_failure(info_truncated_header MATCH "truncat" ARGS info ${bad}/truncated_header.gguf)
recall_cli_expect_failure(info_truncated_data MATCH "truncat" ARGS info ${bad}/truncated_data.gguf)

# Recycled attention settings: one line naming the flag. The default -n (128)
# exceeds the tiny model's context (64), so these also check that the note
# "generation will stop at the context size" does not come before the error.
set(tiny ${bad}/tiny.gguf)
recall_cli_expect_failure(recycle_k_zero MATCH "--recycle-k: 0 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-k 0)
recall_cli_expect_failure(recycle_k_exceeds_ctx MATCH "--recycle-k 32 exceeds the context size 16"
  ARGS generate -m ${tiny} -p hi --ctx 16 --attention recycled --recycle-k 32)
recall_cli_expect_failure(recycle_k_exceeds_default_ctx MATCH "--recycle-k 1000 exceeds the context size 64"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-k 1000)
recall_cli_expect_failure(recycle_stride_zero MATCH "--recycle-stride: 0 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-stride 0)
recall_cli_expect_failure(recycle_check_every_zero MATCH "--recycle-check-every: 0 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-schedule dynamic --recycle-check-every 0)
recall_cli_expect_failure(recycle_similarity_above_1 MATCH "--recycle-similarity: 1\\.5 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-similarity 1.5)
recall_cli_expect_failure(recycle_similarity_below_minus_1 MATCH "--recycle-similarity: -2 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-similarity -2)
recall_cli_expect_failure(recycle_similarity_nan MATCH "--recycle-similarity: nan is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-similarity nan)
recall_cli_expect_failure(recycle_similarity_not_a_number MATCH "--recycle-similarity: 'high' is not a number"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-similarity high)
recall_cli_expect_failure(recycle_pool_even MATCH "--recycle-pool: .*must be odd"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-pool 4)
recall_cli_expect_failure(recycle_schedule_unknown MATCH "--recycle-schedule: unknown schedule 'sometimes'"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-schedule sometimes)
recall_cli_expect_failure(recycle_agg_unknown MATCH "--recycle-agg: unknown aggregation 'median'"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-agg median)
recall_cli_expect_failure(attention_unknown MATCH "--attention: unknown method 'bogus'"
  ARGS generate -m ${tiny} -p hi --attention bogus)
recall_cli_expect_failure(recycle_k_without_recycled MATCH "--recycle-\\* settings need --attention recycled"
  ARGS generate -m ${tiny} -p hi --recycle-k 8)
recall_cli_expect_failure(recycle_pool_with_full MATCH "--recycle-\\* settings need --attention recycled"
  ARGS generate -m ${tiny} -p hi --recycle-pool 3 --attention full)
# The first selection's query window and span-aware selection.
recall_cli_expect_failure(recycle_query_unknown MATCH "--recycle-query: unknown query 'middle' \\(expected last or window\\)"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-query middle)
recall_cli_expect_failure(recycle_query_window_0 MATCH "--recycle-query-window: 0 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-query window --recycle-query-window 0)
recall_cli_expect_failure(recycle_query_window_33 MATCH "--recycle-query-window: 33 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-query window --recycle-query-window 33)
recall_cli_expect_failure(recycle_query_window_longer_than_prompt
  MATCH "--recycle-query-window 32 exceeds the prompt's [0-9]+ tokens"
  ARGS generate -m ${tiny} -p hi -n 4 --attention recycled --recycle-k 4 --recycle-query window)
recall_cli_expect_failure(recycle_query_agg_unknown MATCH "--recycle-query-agg: unknown combine 'sum' \\(expected mean or max\\)"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-query window --recycle-query-agg sum)
recall_cli_expect_failure(recycle_span_negative MATCH "--recycle-span: -1 is out of range"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-span -1)
recall_cli_expect_failure(recycle_span_beyond_ctx MATCH "--recycle-span must lie in \\[0, 64\\)"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-k 4 --recycle-span 64)
recall_cli_expect_failure(recycle_span_with_full MATCH "--recycle-\\* settings need --attention recycled"
  ARGS generate -m ${tiny} -p hi --recycle-span 2)
recall_cli_expect_failure(recycle_query_method_setting MATCH "--recycle-query-window: 0 is out of range"
  ARGS bench -m ${tiny} --attention recycled:query=window:qwin=0)
recall_cli_expect_failure(recycle_method_setting_unknown MATCH "recycled: k, stride, schedule, qc, s, agg, pool, budgets, query, qwin, qagg, span"
  ARGS bench -m ${tiny} --attention recycled:window=4)
# KV-compression policies: bad budgets and head-score files, each one line.
set(heads_dir ${CMAKE_CURRENT_BINARY_DIR}/head_scores)
set(heads_ok "{\"format\":\"recall-head-scores-1\",\"model\":\"tiny\",\"probe\":\"r\",\"n_layer\":2,\"n_head\":4,\"n_examples\":1,\"scores\":[[1,0,2,3],[0.5,0.5,4,0]]}")
file(WRITE ${heads_dir}/ok.json "${heads_ok}")
string(REPLACE "\"n_layer\":2" "\"n_layer\":3" heads_layers "${heads_ok}")
string(REPLACE "[0.5,0.5,4,0]]" "[0.5,0.5,4,0],[1,1,1,1]]" heads_layers "${heads_layers}")
file(WRITE ${heads_dir}/three_layers.json "${heads_layers}")
string(REPLACE "[1,0,2,3]" "[1,0,-2,3]" heads_negative "${heads_ok}")
file(WRITE ${heads_dir}/negative.json "${heads_negative}")
string(REPLACE "[1,0,2,3]" "[1,\"NaN\",2,3]" heads_nan "${heads_ok}")
file(WRITE ${heads_dir}/nan.json "${heads_nan}")
string(REPLACE "[1,0,2,3]" "[1,0,2]" heads_short "${heads_ok}")
file(WRITE ${heads_dir}/short_row.json "${heads_short}")
recall_cli_expect_failure(kv_budget_zero MATCH "--kv-budget: 0 is out of range"
  ARGS generate -m ${tiny} -p hi --attention snapkv --kv-budget 0)
recall_cli_expect_failure(kv_budget_below_window MATCH "snapkv: --kv-budget 4 is smaller than the observation window 8"
  ARGS generate -m ${tiny} -p hi --attention snapkv --kv-budget 4)
recall_cli_expect_failure(kv_budget_streaming_sinks MATCH "streaming: --kv-budget 4 leaves no room beside the 4 sink tokens"
  ARGS generate -m ${tiny} -p hi --attention streaming --kv-budget 4)
recall_cli_expect_failure(kv_budget_with_full MATCH "--kv-\\* budget settings need a KV-compression method"
  ARGS generate -m ${tiny} -p hi --kv-budget 16)
recall_cli_expect_failure(kv_pool_even MATCH "--kv-pool: the kernel must be odd"
  ARGS generate -m ${tiny} -p hi --attention snapkv --kv-pool 4)
recall_cli_expect_failure(kv_window_too_big MATCH "--kv-window: 33 is out of range"
  ARGS generate -m ${tiny} -p hi --attention snapkv --kv-window 33)
recall_cli_expect_failure(headkv_beta_one MATCH "--headkv-beta must be greater than 1"
  ARGS generate -m ${tiny} -p hi --attention headkv --headkv-beta 1 --head-scores ${heads_dir}/ok.json)
recall_cli_expect_failure(ada_floor_above_one MATCH "--ada-floor: 1\\.5 is out of range"
  ARGS generate -m ${tiny} -p hi --attention adakv --ada-floor 1.5)
recall_cli_expect_failure(headkv_without_scores MATCH "--attention headkv needs head-importance scores: --head-scores FILE"
  ARGS generate -m ${tiny} -p hi --attention headkv)
recall_cli_expect_failure(recycle_budgets_without_scores MATCH "--recycle-budgets headkv needs head-importance scores"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-budgets headkv)
recall_cli_expect_failure(recycle_budgets_unknown MATCH "--recycle-budgets: unknown allocation 'random'"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-budgets random)
recall_cli_expect_failure(head_scores_with_snapkv MATCH "--head-scores is used by --attention headkv and --recycle-budgets headkv only"
  ARGS generate -m ${tiny} -p hi --attention snapkv --head-scores ${heads_dir}/ok.json)
recall_cli_expect_failure(head_scores_missing_file MATCH "nope\\.json"
  ARGS generate -m ${tiny} -p hi --attention headkv --head-scores ${heads_dir}/nope.json)
recall_cli_expect_failure(head_scores_wrong_layers MATCH "three_layers\\.json: 3 layers, the model has 2"
  ARGS generate -m ${tiny} -p hi --attention headkv --head-scores ${heads_dir}/three_layers.json)
recall_cli_expect_failure(head_scores_negative MATCH "negative\\.json:.*negative"
  ARGS generate -m ${tiny} -p hi --attention headkv --head-scores ${heads_dir}/negative.json)
recall_cli_expect_failure(head_scores_nan MATCH "nan\\.json:"
  ARGS generate -m ${tiny} -p hi --attention recycled --recycle-budgets headkv --head-scores ${heads_dir}/nan.json)
recall_cli_expect_failure(head_scores_short_row MATCH "short_row\\.json:"
  ARGS generate -m ${tiny} -p hi --attention headkv --head-scores ${heads_dir}/short_row.json)
# ... and every policy runs (the tiny model's prompt is shorter than the budget,
# so these also cover decoding past the budget with eviction). "hello" is 3
# tokens of the tiny tokenizer, so 3 + 23 positions reach the cache of each of
# the 2 layers x 2 KV heads (4 query heads with --budget-per-query-head):
# streaming and h2o keep their budget of 9 per head (36 rows) and evict the
# other 4 x 17 = 68; the SnapKV family keeps a prompt under its budget whole
# and never evicts (4 x 26 = 104 rows; 8 x 26 = 208 per query head).
foreach(method streaming h2o)
  recall_cli_expect_failure(${method}_runs SUCCESS MATCH "KV 36 rows kept.*${method} evicted 68 rows while decoding"
    ARGS generate -m ${tiny} -p hello -n 24 --attention ${method} --kv-budget 9 --kv-window 4 --stats)
endforeach()
foreach(method snapkv pyramidkv adakv)
  recall_cli_expect_failure(${method}_runs SUCCESS MATCH "KV 104 rows kept.*${method} evicted 0 rows while decoding"
    ARGS generate -m ${tiny} -p hello -n 24 --attention ${method} --kv-budget 9 --kv-window 4 --stats)
endforeach()
recall_cli_expect_failure(headkv_runs SUCCESS MATCH "KV 208 rows kept.*headkv evicted 0 rows while decoding"
  ARGS generate -m ${tiny} -p hello -n 24 --attention headkv --kv-budget 9 --kv-window 4 --budget-per-query-head
       --head-scores ${heads_dir}/ok.json --stats)
recall_cli_expect_failure(recycled_headkv_budgets_runs SUCCESS
  MATCH "recycled attention \\(K 6 on average, HeadKV budgets, stride 10, GQA max, pool 7, first query last, span 2\\): [0-9]+ of 23 decode steps"
  ARGS generate -m ${tiny} -p hello -n 24 --attention recycled --recycle-k 6 --recycle-budgets headkv
       --head-scores ${heads_dir}/ok.json)
# ... and valid settings run (both schedules, every aggregation): 12 tokens
# are 11 decode steps, of which stride 3 runs steps 3, 6 and 9 full.
recall_cli_expect_failure(recycled_stride_runs SUCCESS
  MATCH "recycled attention \\(K 4, stride 3, GQA max, pool 3\\): 3 of 11 decode steps"
  ARGS generate -m ${tiny} -p hello -n 12 --attention recycled --recycle-k 4 --recycle-stride 3 --recycle-pool 3)
recall_cli_expect_failure(recycled_query_window_span_runs SUCCESS
  MATCH "recycled attention \\(K 4, stride 3, GQA max, pool 3, first query window 1 max, span 2\\): 3 of 11 decode steps"
  ARGS generate -m ${tiny} -p hello -n 12 --attention recycled --recycle-k 4 --recycle-stride 3 --recycle-pool 3
       --recycle-query window --recycle-query-window 1 --recycle-query-agg max --recycle-span 2)
recall_cli_expect_failure(recycled_dynamic_runs SUCCESS
  MATCH "recycled attention \\(K 4, dynamic: every 2 steps, full at cosine <= 0\\.5, GQA mean, pool 1\\): [0-9]+ of 11 decode steps"
  ARGS generate -m ${tiny} -p hello -n 12 --attention recycled --recycle-k 4 --recycle-schedule dynamic
       --recycle-check-every 2 --recycle-similarity 0.5 --recycle-agg mean --recycle-pool 1)
