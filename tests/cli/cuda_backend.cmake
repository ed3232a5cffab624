# --backend and --device: one line and exit 1 for a backend that cannot run,
# before any work. The expected line depends on the build: with the CUDA
# toolkit (RECALL_HAVE_CUDA) the driver's reason, here where no GPU is usable
# (or --device 99 where one is); without it, the stub's line.
# (expect_failure.cmake checks that stderr is exactly one line.)
if(RECALL_HAVE_CUDA)
  set(no_gpu "^recall: --backend cuda: no usable GPU \\(.+\\)")
  # Where a GPU is usable the model loads and its Q5_K tensor is refused by name.
  set(bad_type "blk\\.0\\.attn_q\\.weight.*Q5_K|^recall: --backend cuda: no usable GPU \\(")
else()
  set(no_gpu "^recall: --backend cuda: this build has no CUDA support")
  set(bad_type "^recall: --backend cuda: this build has no CUDA support")
endif()

recall_cli_expect_failure(backend_cuda_no_gpu MATCH "${no_gpu}"
  ARGS generate -m ${bad}/tiny.gguf -p hi --backend cuda --device 99)
recall_cli_expect_failure(backend_cuda_no_gpu_bench MATCH "${no_gpu}"
  ARGS bench -m ${bad}/tiny.gguf --backend cuda --device 99 --prefill 8 --depths 0)
recall_cli_expect_failure(backend_cuda_no_gpu_info MATCH "${no_gpu}"
  ARGS info --backend cuda --device 99)
recall_cli_expect_failure(backend_nonsense MATCH "^recall: --backend nonsense: expected cpu or cuda"
  ARGS generate -m ${bad}/tiny.gguf -p hi --backend nonsense)
recall_cli_expect_failure(backend_nonsense_bench MATCH "^recall: --backend gpu: expected cpu or cuda"
  ARGS bench -m ${bad}/tiny.gguf --backend gpu)
recall_cli_expect_failure(backend_bad_device MATCH "--device"
  ARGS generate -m ${bad}/tiny.gguf -p hi --backend cuda --device -1)
recall_cli_expect_failure(backend_cuda_unsupported_type MATCH "${bad_type}"
  ARGS generate -m ${bad}/unsupported_type.gguf -p hi --backend cuda)
recall_cli_expect_failure(backend_cpu_explicit SUCCESS MATCH "architecture +llama"
  ARGS info --backend cpu ${bad}/tiny.gguf)
