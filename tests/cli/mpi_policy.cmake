# Real model under mpirun with each KV-compression policy (budget 256 rows per
# KV head of a ~4.2K-token prompt, 32 tokens, fp32 KV), checked by
# scripts/mpi_policy_check.cmake: 3 ranks keep exactly the positions one
# process keeps (per-layer hashes of the kept sets in --trace) and generate
# the same text, logits within full attention's 1e-4 relative while the kept
# sets agree; only after a step where they differ (the (o, lse) merge's
# rounding differs between rank counts and can swap near-tied positions at an
# H2O eviction) 5e-3, and the test says for how many steps. The selections
# themselves are checked against brute force in test_kvpolicy.
# headkv reads the head scores shipped for this model.
# selection_ties judges a step whose kept sets differ (near-tie or bug; tests/support/selection_ties.h).
add_executable(selection_ties ${CMAKE_CURRENT_SOURCE_DIR}/selection_ties.c)
target_link_libraries(selection_ties PRIVATE recall_test_support)
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  set(heads ${PROJECT_SOURCE_DIR}/configs/heads/smollm2-135m-instruct.json)
  foreach(method streaming h2o snapkv pyramidkv adakv headkv)
    set(extra "")
    if(method STREQUAL "headkv")
      set(extra -DHEADS=${heads})
    endif()
    add_test(NAME mpi_policy_${method}_np3
      COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH}
              -DPROMPT=${RECALL_TEST_DATA}/prose/persuasion_ch1.txt -DWORK=${CMAKE_CURRENT_BINARY_DIR}/mpi_policy
              -DNP=3 -DMETHOD=${method} -DTOL=1e-4 -DLOOSE_TOL=5e-3 ${extra} -DMPIEXEC=${MPIEXEC_EXECUTABLE}
              -DCOMPARE=$<TARGET_FILE:compare_logits> -DTIES=$<TARGET_FILE:selection_ties> -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/mpi_policy_check.cmake)
    set_tests_properties(mpi_policy_${method}_np3 PROPERTIES LABELS "real_model;mpi" TIMEOUT 600
                         ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
  endforeach()
endif()
