# cmake -P driver of the golden mutation tests (tests/CMakeLists.txt):
# test_engine against a deliberately wrong reference (make_tiny_golden.py
# --variant, committed under tests/data/tiny_mutants/VARIANT/) must fail, and
# for the right reason: a logits comparison of MODEL out of tolerance, not a
# missing file or a golden of another model.
#   cmake -DTEST_ENGINE=... -DDIR=... -DMODEL=... -P golden_mutant_check.cmake
execute_process(COMMAND ${TEST_ENGINE} ${DIR} ${MODEL} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 300)
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "test_engine on the wrong golden ${DIR}/${MODEL}.logits exited ${rc}, expected 1 (it must fail)\n${err}")
endif()
if(err MATCHES "cannot read the golden|regenerate the goldens|AddressSanitizer|runtime error")
  message(FATAL_ERROR "test_engine failed for another reason than the wrong logits:\n${err}")
endif()
string(REGEX MATCHALL "CHECK failed: [^\n]*${MODEL}: [^\n]*NMSE" hits "${err}")
list(LENGTH hits n)
if(n EQUAL 0)
  message(FATAL_ERROR "test_engine failed without a logits mismatch of ${MODEL}:\n${err}")
endif()
message(STATUS "ok: the wrong golden ${DIR} fails ${n} logits comparisons of ${MODEL}")
