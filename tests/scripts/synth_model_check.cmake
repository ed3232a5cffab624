# cmake -P driver of synth_model (see tests/cli/scaling.cmake):
# launch/synth_model.py smollm2-135m writes a GGUF that recall loads with
# SmolLM2-135M's exact shape (30 layers, d_model 576, 9 heads over 3 KV heads
# of 64, d_ff 1536, vocab 49152, tied output) and decodes from; an unknown
# name is one "recall: ..." line.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${PYTHON} ${SCRIPT} smollm2-135m --out ${WORK}/smol.gguf RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "synth_model.py failed (exit ${rc}): ${err}")
endif()
execute_process(COMMAND ${RECALL} info ${WORK}/smol.gguf RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
foreach(want "layers +30\n" "d_model +576\n" "heads +9 query, 3 KV \\(GQA group 3\\), head_dim 64" "ffn +1536 "
             "vocab +49152 " "output +tied to token_embd")
  if(NOT out MATCHES "${want}")
    message(FATAL_ERROR "recall info: no '${want}' in\n${out}${err}")
  endif()
endforeach()
execute_process(COMMAND ${RECALL} bench -m ${WORK}/smol.gguf --fill random --depths 64 --decode-tokens 2 --threads 1
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "decode   full +64 +2 [^\n]*synthetic fill")
  message(FATAL_ERROR "bench on the synthetic model failed (exit ${rc}):\n${out}${err}")
endif()
execute_process(COMMAND ${PYTHON} ${SCRIPT} gpt-9 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "^recall: unknown model shape 'gpt-9'")
  message(FATAL_ERROR "an unknown shape should fail with one line (exit ${rc}): ${err}")
endif()
file(REMOVE ${WORK}/smol.gguf)
message(STATUS "synth_model.py: SmolLM2-135M's shape, loadable and benchable")
