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
recall_cli_config_test(generate SUCCESS ARGS generate --config ${cfg_dir}/good.ini)

# Greedy decoding of n tokens reports "decode n-1 tokens" (the last needs no
# forward pass): n-predict = 2 from the file, and -n 4 on the command line wins.
add_test(NAME cli_config_file_sets_n_predict COMMAND recall generate --config ${cfg_dir}/good.ini)
add_test(NAME cli_config_command_line_wins COMMAND recall generate -n 4 --config ${cfg_dir}/good.ini)
set_tests_properties(cli_config_file_sets_n_predict PROPERTIES PASS_REGULAR_EXPRESSION "decode 1 tokens")
set_tests_properties(cli_config_command_line_wins PROPERTIES PASS_REGULAR_EXPRESSION "decode 3 tokens")
set_tests_properties(cli_config_file_sets_n_predict cli_config_command_line_wins PROPERTIES
  FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 180
  FAIL_REGULAR_EXPRESSION "AddressSanitizer|LeakSanitizer|runtime error|Segmentation fault")
