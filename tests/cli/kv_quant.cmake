# Quantized KV caches (--kv-type q8_0 / q4_0) through the CLI:
#   kv_quant_ppl         real model: `recall eval ppl` on the first 8,192 tokens of the Austen prose
#                        (7,936 prefilled, the last 256 scored), once per cache type: q8_0's perplexity
#                        within 0.5% of the fp16 cache's, q4_0's within 10%
#                        (scripts/kv_quant_ppl_check.cmake; ~3 passes of 8K tokens)
#   cli_bad_kv_type_*    one "recall: ..." line: an unknown type, and a block type on a model whose
#                        head_dim (16) is not a multiple of 32 (generate, bench, eval ppl)
if(DEFINED ENV{RECALL_CACHE})
  set(kvq_prose $ENV{RECALL_CACHE}/prose/austen.txt)
else()
  set(kvq_prose $ENV{HOME}/.cache/recall/prose/austen.txt)
endif()
add_test(NAME kv_quant_ppl
  COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DTEXT=${kvq_prose}
          -DWORK=${CMAKE_CURRENT_BINARY_DIR}/kv_quant_ppl -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/kv_quant_ppl_check.cmake)
# release_only: under ASan the three 8K passes take over 10 minutes and run
# the same code as test_kv_quant's tiny-model cases, which the sanitizer stage keeps.
set_tests_properties(kv_quant_ppl PROPERTIES LABELS "real_model;release_only" TIMEOUT 3600
  ENVIRONMENT "OMP_NUM_THREADS=2;GOMP_SPINCOUNT=2000")

recall_cli_expect_failure(kv_type_unknown MATCH "q5_0" ARGS generate -m ${bad}/tiny.gguf -p hi --kv-type q5_0)
recall_cli_expect_failure(kv_type_head_dim MATCH "multiple of 32" ARGS generate -m ${bad}/tiny.gguf -p hi --kv-type q8_0)
recall_cli_expect_failure(kv_type_head_dim_bench MATCH "multiple of 32"
  ARGS bench -m ${bad}/tiny.gguf --kv-type q4_0 --prefill none --depths 8 --decode-tokens 2)
recall_cli_expect_failure(kv_type_head_dim_eval MATCH "multiple of 32"
  ARGS eval ppl -m ${bad}/tiny.gguf --text ${CMAKE_SOURCE_DIR}/README.md --ctx 32 --eval-tokens 8 --kv-type q4_0)
