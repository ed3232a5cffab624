# Real model under mpirun: N = 2, 3, 4 ranks reproduce the single-process
# greedy run (tokens identical for 128 steps, logits within 1e-4 relative),
# every rank's logits are bitwise identical (checked inside recall by hash),
# and each rank holds at most its 1/N share of the KV cache plus one block.
add_executable(compare_logits compare_logits.c)
target_link_libraries(compare_logits PRIVATE m)
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE)
  set(mpi_prompt ${RECALL_TEST_DATA}/prose/persuasion_ch1.txt)
  set(mpi_work ${CMAKE_CURRENT_BINARY_DIR}/mpi_generate)
  add_test(NAME mpi_generate_single
    COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DPROMPT=${mpi_prompt}
            -DWORK=${mpi_work} -DNP=1 -DMPIEXEC=${MPIEXEC_EXECUTABLE}
            -DCOMPARE=$<TARGET_FILE:compare_logits> -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/mpi_generate_check.cmake)
  # Open MPI's own allocations look like leaks to LeakSanitizer.
  set_tests_properties(mpi_generate_single PROPERTIES FIXTURES_SETUP recall_mpi_single LABELS "real_model;mpi"
                       TIMEOUT 900 ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
  foreach(np 2 3 4)
    add_test(NAME mpi_generate_np${np}
      COMMAND ${CMAKE_COMMAND} -DRECALL=$<TARGET_FILE:recall> -DMODEL=${RECALL_MODEL_PATH} -DPROMPT=${mpi_prompt}
              -DWORK=${mpi_work} -DNP=${np} -DMPIEXEC=${MPIEXEC_EXECUTABLE}
              -DCOMPARE=$<TARGET_FILE:compare_logits> -P ${CMAKE_CURRENT_SOURCE_DIR}/scripts/mpi_generate_check.cmake)
    set_tests_properties(mpi_generate_np${np} PROPERTIES FIXTURES_REQUIRED recall_mpi_single
                         LABELS "real_model;mpi" TIMEOUT 900 ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
  endforeach()
endif()

# A rank that fails ends the whole job promptly and names itself: rank 1 of 3
# fails after loading the model while ranks 0 and 2 wait in a broadcast.
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE AND DEFINED recall_mpiexec_joined)
  add_test(NAME mpi_generate_rank1_fails
    COMMAND ${CMAKE_COMMAND}
      -DMPIEXEC=${MPIEXEC_EXECUTABLE}
      "-DARGS=${recall_mpiexec_joined}|-x|RECALL_INJECT_FAILURE|$<TARGET_FILE:recall>|generate|-m|${CMAKE_CURRENT_BINARY_DIR}/bad_inputs/tiny.gguf|-p|hello|-n|4"
      "-DMATCH=recall: \\[rank 1 @ [^]]+\\] injected failure"
      -DTIMEOUT=30
      -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/mpi_expect_failure.cmake)
  set_tests_properties(mpi_generate_rank1_fails PROPERTIES
    ENVIRONMENT "${recall_mpi_test_env};RECALL_INJECT_FAILURE=1" TIMEOUT 45 LABELS mpi
    FIXTURES_REQUIRED recall_bad_inputs)
endif()

# --backend cuda under MPI: each rank opens GPU <local rank>; one that cannot
# (here: no GPU, or a build without CUDA) ends the job with one line naming
# rank, host and GPU.
if(MPI_C_FOUND AND MPIEXEC_EXECUTABLE AND DEFINED recall_mpiexec_joined)
  add_test(NAME mpi_generate_cuda_gpu_missing
    COMMAND ${CMAKE_COMMAND}
      -DMPIEXEC=${MPIEXEC_EXECUTABLE}
      "-DARGS=${recall_mpiexec_joined}|$<TARGET_FILE:recall>|generate|-m|${CMAKE_CURRENT_BINARY_DIR}/bad_inputs/tiny.gguf|-p|hello|-n|4|--backend|cuda"
      "-DMATCH=recall: \\[rank [0-2] @ [^]]+\\] GPU [0-2] for local rank [0-2] of 3 on this host: --backend cuda: "
      -DTIMEOUT=30
      -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/mpi_expect_failure.cmake)
  set_tests_properties(mpi_generate_cuda_gpu_missing PROPERTIES
    ENVIRONMENT "${recall_mpi_test_env}" TIMEOUT 45 LABELS mpi FIXTURES_REQUIRED recall_bad_inputs)
endif()
