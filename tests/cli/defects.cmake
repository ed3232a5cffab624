# Regression tests of the defects a fuzzing run and crafted inputs found
# (support/defect_inputs.h writes the files into ${RECALL_BAD_INPUTS}): each
# failed before its fix (exit 0 with garbage, a crash, or a sanitizer report
# under the ASan+UBSan build) and must now end with one "recall: ..." line.
set(d ${RECALL_BAD_INPUTS})
set(prose ${RECALL_TEST_DATA}/prose/persuasion_ch1.txt)

# 1. Metadata that makes every logit NaN is refused at load ...
recall_cli_expect_failure(defect_rope_base_zero MATCH "llama\\.rope\\.freq_base = 0 must be positive"
  ARGS generate -m ${d}/defect_rope_base_zero.gguf -p hi)
recall_cli_expect_failure(defect_rms_eps_negative MATCH "llama\\.attention\\.layer_norm_rms_epsilon = -1 must be positive"
  ARGS generate -m ${d}/defect_rms_eps_negative.gguf -p hi)
# ... and non-finite logits (here from a NaN weight) are an error naming the step, never a token.
recall_cli_expect_failure(defect_nan_logits_generate MATCH "non-finite logits after the prefill of 2 prompt tokens"
  ARGS generate -m ${d}/defect_nan_weight.gguf -p hi -n 4)
recall_cli_expect_failure(defect_nan_logits_eval_ppl MATCH "non-finite logits after the prefill of 24 tokens"
  ARGS eval ppl -m ${d}/defect_nan_weight.gguf --text ${prose} --ctx 32 --eval-tokens 8
       --out ${CMAKE_CURRENT_BINARY_DIR}/defects/ppl)
recall_cli_expect_failure(defect_nan_logits_bench MATCH "non-finite logits after the prefill of 8 tokens"
  ARGS bench -m ${d}/defect_nan_weight.gguf --prefill 8 --depths 4 --decode-tokens 2)

# 2. Config and prompt files are bounded (an unbounded read of /dev/zero once
# ended in a write through NULL). Under a 1 GiB address-space limit where the
# build allows one (ASan reserves terabytes of address space).
find_program(RECALL_PRLIMIT prlimit)
if(RECALL_PRLIMIT AND NOT RECALL_SANITIZE)
  # A recall linked with cuBLAS maps ~1 GiB of libcublas/libcublasLt at start: 2 GiB there.
  set(as_limit 1073741824)
  if(RECALL_HAVE_CUDA)
    set(as_limit 2147483648)
  endif()
  set(args_config "generate|--config|/dev/zero")
  set(args_prompt "generate|-m|${d}/tiny.gguf|-f|/dev/zero")
  foreach(what config prompt)
    set(args "${args_${what}}")
    add_test(NAME cli_bad_defect_${what}_dev_zero
      COMMAND ${CMAKE_COMMAND} -DRECALL=${RECALL_PRLIMIT}
              "-DARGS=--as=${as_limit}|$<TARGET_FILE:recall>|${args}"
              "-DMATCH=/dev/zero: the ${what} file is larger than the [0-9]+-byte limit" -P ${RECALL_EXPECT_SCRIPT})
    set_tests_properties(cli_bad_defect_${what}_dev_zero PROPERTIES FIXTURES_REQUIRED recall_bad_inputs TIMEOUT 120)
  endforeach()
else()
  recall_cli_expect_failure(defect_config_dev_zero MATCH "/dev/zero: the config file is larger than"
    ARGS generate --config /dev/zero)
  recall_cli_expect_failure(defect_prompt_dev_zero MATCH "/dev/zero: the prompt file is larger than"
    ARGS generate -m ${d}/tiny.gguf -f /dev/zero)
endif()

# 3. Tensor data at an odd offset (general.alignment = 1) is refused.
recall_cli_expect_failure(defect_alignment_one MATCH "general\\.alignment 1 is not a power of two of at least 8"
  ARGS generate -m ${d}/defect_alignment_one.gguf -p hi)
# 4. A token type of 0xFFFFFFFF loads as an undefined type (a UBSan report before).
recall_cli_expect_failure(defect_token_type_huge SUCCESS MATCH "decode steps: 1 with full attention"
  ARGS generate -m ${d}/defect_token_type_huge.gguf -p hi -n 2 --stats)
# 5. Head counts near 2^32 are refused before n_head * head_dim is computed.
recall_cli_expect_failure(defect_head_count_huge MATCH "heads 4294967295/4294967295 of at most 4096"
  ARGS info ${d}/defect_head_count_huge.gguf)
# 6. Counts are checked against the file before allocating for them.
recall_cli_expect_failure(defect_block_count_huge MATCH "layers 4294967295 of at most 4096"
  ARGS info ${d}/defect_block_count_huge.gguf)
recall_cli_expect_failure(defect_head_scores_rows MATCH "defect_head_scores\\.json: \"scores\" has 1 rows, n_layer is 65536"
  ARGS profile-heads --merge ${d}/defect_head_scores.json,${d}/defect_head_scores.json
       -o ${CMAKE_CURRENT_BINARY_DIR}/defect_merged.json)
# 7. A context too short for a RULER task fails before any output exists.
recall_cli_expect_failure(defect_ruler_no_output MATCH "niah_single_1 at --ctx 100: no room for the prompt"
  ABSENT ${CMAKE_CURRENT_BINARY_DIR}/defects/ruler
  ARGS eval ruler -m ${d}/tiny_ctx512.gguf --ctx 100 --tasks niah_single_1 --prose ${prose}
       --out ${CMAKE_CURRENT_BINARY_DIR}/defects/ruler/r)
