# --config FILE for `recall generate` / `recall bench`: bad files fail with one
# "recall: FILE:LINE: ..." line (checked by expect_failure.cmake), a good one
# runs, and a flag on the command line beats the same key in the file. The
# unit test (test_config.c) also needs the CLI sources it tests.

target_sources(test_config PRIVATE ${PROJECT_SOURCE_DIR}/src/cli/config.c ${PROJECT_SOURCE_DIR}/src/cli/common.c)

set(cfg_dir ${CMAKE_CURRENT_BINARY_DIR}/config_tests)
set(cfg_model ${CMAKE_CURRENT_BINARY_DIR}/bad_inputs/tiny.gguf)  # written by the recall_bad_inputs fixture
file(WRITE ${cfg_dir}/good.ini "# tiny model, two tokens\nmodel = ${cfg_model}\nprompt = hi\n[generate]\nn-predict = 2\n[bench]\nreps = 1\n")
file(WRITE ${cfg_dir}/unknown_key.ini "model = ${cfg_model}\n\nfoo = 1\n")
file(WRITE ${cfg_dir}/bad_bool.ini "model = ${cfg_model}\nchat = yes\n")
file(WRITE ${cfg_dir}/bench_key.ini "model = ${cfg_model}\n[bench]\nprompt = hi\n")

# The config tests go through bad_input.cmake's helper, named cli_config_*.
function(recall_cli_config_test name)
  recall_cli_expect_failure(${name} PREFIX cli_config_ ${ARGN})
endfunction()

recall_cli_config_test(unknown_key
  MATCH "^recall: [^ ]*/unknown_key\\.ini:3: unknown key 'foo' \\(keys are the long flags of 'recall generate', see --help\\)$"
  ARGS generate --config ${cfg_dir}/unknown_key.ini)
recall_cli_config_test(bad_boolean MATCH "bad_bool\\.ini:2: 'chat' takes true or false, not 'yes'"
  ARGS generate --config ${cfg_dir}/bad_bool.ini)
recall_cli_config_test(missing_file MATCH "/nonexistent/recall\\.ini: cannot open the config file"
  ARGS generate --config /nonexistent/recall.ini)
recall_cli_config_test(missing_value MATCH "--config" ARGS generate --config)
# A generate-only key in [bench] is bench's error, not generate's.
recall_cli_config_test(bench_unknown_key MATCH "bench_key\\.ini:3: unknown key 'prompt' .*'recall bench'"
  ARGS bench --config ${cfg_dir}/bench_key.ini)
recall_cli_config_test(generate SUCCESS MATCH "decode 1 tokens" ARGS generate --config ${cfg_dir}/good.ini)

# Greedy decoding of n tokens reports "decode n-1 tokens" (the last needs no
# forward pass): n-predict = 2 from the file, and -n 4 on the command line wins.
add_test(NAME cli_config_file_sets_n_predict COMMAND recall generate --config ${cfg_dir}/good.ini)
add_test(NAME cli_config_command_line_wins COMMAND recall generate -n 4 --config ${cfg_dir}/good.ini)
set_tests_properties(cli_config_file_sets_n_predict PROPERTIES PASS_REGULAR_EXPRESSION "decode 1 tokens")
set_tests_properties(cli_config_command_line_wins PROPERTIES PASS_REGULAR_EXPRESSION "decode 3 tokens")
set_tests_properties(cli_config_file_sets_n_predict cli_config_command_line_wins PROPERTIES
  FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180
  FAIL_REGULAR_EXPRESSION "AddressSanitizer|LeakSanitizer|runtime error|Segmentation fault")

# Recycled attention from a config file: the shipped sample's keys are all
# valid (its model and K overridden on the command line for the tiny model),
# a file of our own selects recycled attention with its settings, and a bad
# recycle value in a file fails with the flag's one-line error.
set(recycled_sample ${PROJECT_SOURCE_DIR}/configs/recycled-example.ini)
file(WRITE ${cfg_dir}/recycled.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nn-predict = 12\nattention = recycled\nrecycle-k = 4\nrecycle-schedule = stride\nrecycle-stride = 3\nrecycle-agg = mean\nrecycle-pool = 3\nrecycle-query = window\nrecycle-query-window = 1\nrecycle-query-agg = max\nrecycle-span = 2\n")
file(WRITE ${cfg_dir}/recycled_dynamic.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nn-predict = 12\nattention = recycled\nrecycle-k = 4\nrecycle-schedule = dynamic\nrecycle-check-every = 2\nrecycle-similarity = 0.5\n")
file(WRITE ${cfg_dir}/recycled_bad_pool.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nattention = recycled\nrecycle-pool = 4\n")
file(WRITE ${cfg_dir}/recycled_bad_similarity.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nattention = recycled\nrecycle-similarity = 1.5\n")
file(WRITE ${cfg_dir}/recycled_bad_k.ini "model = ${cfg_model}\nprompt = hello\nn-predict = 4\n[generate]\nattention = recycled\nrecycle-k = 100\n")
file(WRITE ${cfg_dir}/recycled_bad_attention.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nattention = recycle\n")
file(WRITE ${cfg_dir}/recycled_no_attention.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nrecycle-k = 4\n")
file(WRITE ${cfg_dir}/recycled_typo.ini "model = ${cfg_model}\n[generate]\nattention = recycled\nrecycle-size = 4\n")

recall_cli_config_test(recycled_sample SUCCESS MATCH "recycled attention \\(K 4, stride 10, GQA max, pool 7\\)"
  ARGS generate --config ${recycled_sample} -m ${cfg_model} -p hello -n 8 --recycle-k 4)
recall_cli_config_test(recycled SUCCESS MATCH "recycled attention \\(K 4, stride 3, GQA mean, pool 3, first query window 1 max, span 2\\): 3 of 11 decode steps"
  ARGS generate --config ${cfg_dir}/recycled.ini)
recall_cli_config_test(recycled_dynamic SUCCESS
  MATCH "recycled attention \\(K 4, dynamic: every 2 steps, full at cosine <= 0\\.5, GQA max, pool 7\\): [0-9]+ of 11 decode steps"
  ARGS generate --config ${cfg_dir}/recycled_dynamic.ini)
recall_cli_config_test(recycled_bad_pool MATCH "^recall: --recycle-pool: the kernel must be odd \\(got 4\\)$"
  ARGS generate --config ${cfg_dir}/recycled_bad_pool.ini)
recall_cli_config_test(recycled_bad_similarity MATCH "^recall: --recycle-similarity: 1\\.5 is out of range"
  ARGS generate --config ${cfg_dir}/recycled_bad_similarity.ini)
recall_cli_config_test(recycled_bad_k MATCH "^recall: --recycle-k 100 exceeds the context size"
  ARGS generate --config ${cfg_dir}/recycled_bad_k.ini)
recall_cli_config_test(recycled_bad_attention MATCH "^recall: --attention: unknown method 'recycle'"
  ARGS generate --config ${cfg_dir}/recycled_bad_attention.ini)
recall_cli_config_test(recycled_keys_without_attention MATCH "^recall: --recycle-\\* settings need --attention recycled$"
  ARGS generate --config ${cfg_dir}/recycled_no_attention.ini)
recall_cli_config_test(recycled_unknown_key MATCH "recycled_typo\\.ini:4: unknown key 'recycle-size'"
  ARGS generate --config ${cfg_dir}/recycled_typo.ini)

# The settings took effect: the summary line names them (the file's K 4 and
# stride 3, window 1 max, span 2; the sample's stride 10 and pool 7 with K 4 from the command line).
add_test(NAME cli_config_recycled_settings_apply COMMAND recall generate --config ${cfg_dir}/recycled.ini)
set_tests_properties(cli_config_recycled_settings_apply PROPERTIES
  PASS_REGULAR_EXPRESSION "recycled attention \\(K 4, stride 3, GQA mean, pool 3, first query window 1 max, span 2\\): [0-9]+ of [0-9]+ decode steps")
add_test(NAME cli_config_recycled_sample_settings COMMAND recall generate --config ${recycled_sample}
  -m ${cfg_model} -p hello -n 8 --recycle-k 4)
set_tests_properties(cli_config_recycled_sample_settings PROPERTIES
  PASS_REGULAR_EXPRESSION "recycled attention \\(K 4, stride 10, GQA max, pool 7\\)")
set_tests_properties(cli_config_recycled_settings_apply cli_config_recycled_sample_settings PROPERTIES
  FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180
  FAIL_REGULAR_EXPRESSION "AddressSanitizer|LeakSanitizer|runtime error|Segmentation fault")

# HeadKV from the shipped sample (model and head scores overridden for the
# tiny model; its window 8 and budget 512 stay) and a policy file of our own
# whose bad value fails with the flag's error.
set(headkv_sample ${PROJECT_SOURCE_DIR}/configs/headkv-example.ini)
file(WRITE ${cfg_dir}/snapkv_bad_budget.ini "model = ${cfg_model}\nprompt = hello\n[generate]\nattention = snapkv\nkv-budget = 4\n")
recall_cli_config_test(headkv_sample SUCCESS MATCH "KV [0-9]+ rows kept.*headkv evicted 0 rows while decoding"
  ARGS generate --config ${headkv_sample} -m ${cfg_model} -p hello -n 8 --head-scores ${heads_dir}/ok.json --stats)
recall_cli_config_test(snapkv_bad_budget MATCH "^recall: snapkv: --kv-budget 4 is smaller than the observation window 8"
  ARGS generate --config ${cfg_dir}/snapkv_bad_budget.ini)
