# cmake -P driver of head_defaults (tests/cli/needle.cmake): the head scores
# shipped per model, found by the model file's content fingerprint, and the
# default they make for --attention recycled. HEADS is a test-only index
# (tests/data/heads) keyed by the fingerprint of make_bad_inputs' tiny.gguf.
#   - `recall info` prints that fingerprint (else the index is stale: say so);
#   - tiny.gguf, and a copy under another name and directory, run recycled
#     attention with HeadKV budgets by default and say so in the summary line,
#     with the same text and rebuild counts as --recycle-budgets headkv
#     --head-scores tests/data/heads/tiny.json, and span 2 (the line says so;
#     --recycle-span 0 takes it off and changes the logits; uniform has none);
#   - tiny_other_weights.gguf (the same metadata, other weights) finds no
#     scores: uniform budgets, and one line pointing to `recall profile-heads`;
#   - --recycle-budgets uniform forces uniform budgets on the model with scores;
#   - --recycle-budgets headkv without --head-scores takes the shipped scores;
#   - bench and eval ppl say so too, once, and a method's own budgets=uniform
#     does not change the default of the methods after it;
#   - a malformed index is one error line.
foreach(v RECALL MODELS HEADS WORK)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "head_defaults_check.cmake: pass -D${v}=...")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/elsewhere)
set(ENV{GOMP_SPINCOUNT} 2000)
set(ENV{RECALL_HEADS_DIR} ${HEADS})

function(run_recall out_var)
  execute_process(COMMAND ${RECALL} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "recall ${ARGN}: exit ${rc}\n${err}")
  endif()
  set(${out_var} "${out}\n${err}" PARENT_SCOPE)
endfunction()

file(READ ${HEADS}/index.json index)
string(JSON fp GET "${index}" models 0 fingerprint)
run_recall(info info ${MODELS}/tiny.gguf)
if(NOT info MATCHES "fingerprint +${fp} \\(head scores: [^)]*tiny\\.json\\)")
  string(REGEX MATCH "fingerprint[^\n]*" line "${info}")
  message(FATAL_ERROR "tiny.gguf no longer has the fingerprint ${HEADS}/index.json keys (${line}): "
                      "the tiny model changed; put its new fingerprint in the index")
endif()

file(COPY_FILE ${MODELS}/tiny.gguf ${WORK}/elsewhere/renamed-copy.gguf)
set(gen generate -p hello -n 24 --stats --attention recycled --recycle-k 6)
set(default_line "recycled attention \\(K 6 on average, HeadKV budgets by default \\(scores shipped for this model: tiny\\.json\\), stride 10, GQA max, pool 7, first query last, span 2\\): [0-9]+ of 23 decode steps")
run_recall(orig ${gen} -m ${MODELS}/tiny.gguf)
run_recall(copy ${gen} -m ${WORK}/elsewhere/renamed-copy.gguf)
run_recall(expl ${gen} -m ${MODELS}/tiny.gguf --recycle-budgets headkv --head-scores ${HEADS}/tiny.json)
foreach(v orig copy)
  if(NOT ${v} MATCHES "${default_line}" OR ${v} MATCHES "uniform recycled budgets")
    message(FATAL_ERROR "${v}: no HeadKV default in:\n${${v}}")
  endif()
endforeach()
# Span 0 is a different selection (a different logits hash), and the line no longer names a span.
run_recall(nospan ${gen} -m ${MODELS}/tiny.gguf --recycle-span 0)
string(REGEX MATCH "hash [0-9a-f]+" hash_nospan "${nospan}")
string(REGEX MATCH "hash [0-9a-f]+" hash_span "${orig}")
if(NOT nospan MATCHES "HeadKV budgets by default [^\n]*pool 7\\): " OR hash_nospan STREQUAL hash_span OR hash_span STREQUAL "")
  message(FATAL_ERROR "--recycle-span 0 must switch the default span off (${hash_span} vs ${hash_nospan}):\n${nospan}")
endif()
# The same budgets as asking for them: same text, same rebuild rows, same logits hash.
foreach(v orig copy expl)
  string(REGEX MATCH "^[^\n]*" text_${v} "${${v}}")
  string(REGEX MATCH "layer rebuilds: [0-9]+ rows fetched, [0-9]+ reused" rows_${v} "${${v}}")
  string(REGEX MATCH "hash [0-9a-f]+" hash_${v} "${${v}}")
endforeach()
if(NOT (text_orig STREQUAL text_expl AND text_copy STREQUAL text_expl AND rows_orig STREQUAL rows_expl
        AND hash_orig STREQUAL hash_expl AND hash_copy STREQUAL hash_expl) OR rows_expl STREQUAL "")
  message(FATAL_ERROR "the default differs from --recycle-budgets headkv with the same scores:\n"
                      "${text_orig} ${rows_orig} ${hash_orig}\n${text_copy} ${hash_copy}\n${text_expl} ${rows_expl} ${hash_expl}")
endif()

# bench and eval ppl take the same default and say so once (they used to switch silently).
set(note_re "note: recycled attention uses HeadKV budgets and span 2 by default \\(scores shipped for this model: [^\n]*tiny\\.json\\)")
run_recall(bench_out bench -m ${MODELS}/tiny.gguf --prefill none --depths 32 --decode-tokens 2 --threads 1
           --attention recycled,recycled:budgets=uniform)
string(REPEAT "hello world, the cat sat on the mat. " 60 text)
file(WRITE ${WORK}/text.txt "${text}")
run_recall(ppl_out eval ppl -m ${MODELS}/tiny.gguf --text ${WORK}/text.txt --ctx 64 --eval-tokens 8 --threads 1
           --attention full,recycled --out ${WORK}/ppl/p)
foreach(v bench_out ppl_out)
  string(REGEX MATCHALL "${note_re}" notes "${${v}}")
  list(LENGTH notes n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "${v}: expected one line saying recycled attention uses HeadKV budgets by default, got ${n}:\n${${v}}")
  endif()
endforeach()

# A method's own budgets=uniform must not leak into the methods listed after it:
# `recycled` gives the perplexity of explicit HeadKV budgets wherever it stands.
foreach(order "recycled:budgets=uniform,recycled,recycled:budgets=headkv" "recycled,recycled:budgets=uniform,recycled:budgets=headkv")
  run_recall(ord eval ppl -m ${MODELS}/tiny.gguf --text ${WORK}/text.txt --ctx 64 --eval-tokens 8 --threads 1
             --attention ${order} --out ${WORK}/ppl_order/p)
  file(REMOVE_RECURSE ${WORK}/ppl_order)
  string(REGEX MATCH "\n  recycled +[0-9]+ +([0-9.]+)" m "${ord}")
  set(ppl_default ${CMAKE_MATCH_1})
  string(REGEX MATCH "\n  recycled:budgets=headkv +[0-9]+ +([0-9.]+)" m "${ord}")
  set(ppl_headkv ${CMAKE_MATCH_1})
  string(REGEX MATCH "\n  recycled:budgets=uniform +[0-9]+ +([0-9.]+)" m "${ord}")
  set(ppl_uniform ${CMAKE_MATCH_1})
  if(ppl_default STREQUAL "" OR NOT ppl_default STREQUAL ppl_headkv OR ppl_uniform STREQUAL ppl_headkv)
    message(FATAL_ERROR "--attention ${order}: recycled must equal recycled:budgets=headkv and differ from uniform "
                        "(default ${ppl_default}, headkv ${ppl_headkv}, uniform ${ppl_uniform}):\n${ord}")
  endif()
endforeach()

# eval ruler results made before the default span must not be resumed as the default's.
file(MAKE_DIRECTORY ${WORK}/resume)
file(WRITE ${WORK}/resume/old.jsonl "{\"model\":\"tiny.gguf\",\"settings\":\"kv=f16 chat=model prose=austen.txt max_new=0 recycled_budgets=shipped_headkv\",\"seed\":42,\"ctx\":64,\"task\":\"niah_single_1\",\"sample\":0,\"method\":\"recycled\",\"budget\":8,\"score\":1}\n")
execute_process(COMMAND ${RECALL} eval ruler -m ${MODELS}/tiny.gguf --ctx 64 --tasks niah_single_1 --samples 1
                        --attention recycled --out ${WORK}/resume/old RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "old\\.jsonl:1: results made with other settings \\([^)]*shipped_headkv, not [^)]*shipped_headkv recycled_span=2\\)")
  message(FATAL_ERROR "results without the default span must not be resumed (exit ${rc}):\n${err}")
endif()

# Another model: uniform, and the pointer to profile-heads.
run_recall(other ${gen} -m ${MODELS}/tiny_other_weights.gguf)
if(NOT other MATCHES "recycled attention \\(K 6, stride 10, GQA max, pool 7\\)"
   OR NOT other MATCHES "note: uniform recycled budgets: no head scores are shipped for this model \\(fingerprint [0-9a-f]+[^\n]*'recall profile-heads'")
  message(FATAL_ERROR "tiny_other_weights.gguf must fall back to uniform budgets with a note:\n${other}")
endif()
string(REGEX MATCHALL "profile-heads" n_notes "${other}")
list(LENGTH n_notes n_notes)
if(NOT n_notes EQUAL 1)
  message(FATAL_ERROR "expected one line pointing to profile-heads, got ${n_notes}:\n${other}")
endif()

# --recycle-budgets uniform: the paper's method, no note.
run_recall(uni ${gen} -m ${MODELS}/tiny.gguf --recycle-budgets uniform)
if(NOT uni MATCHES "recycled attention \\(K 6, stride 10, GQA max, pool 7\\)" OR uni MATCHES "profile-heads|HeadKV")
  message(FATAL_ERROR "--recycle-budgets uniform must force uniform budgets:\n${uni}")
endif()
# --recycle-budgets headkv without --head-scores: the shipped scores.
run_recall(hk ${gen} -m ${MODELS}/tiny.gguf --recycle-budgets headkv)
if(NOT hk MATCHES "recycled attention \\(K 6 on average, HeadKV budgets, stride 10")
  message(FATAL_ERROR "--recycle-budgets headkv must find the shipped scores:\n${hk}")
endif()

# A malformed index: one error line, exit 1.
file(MAKE_DIRECTORY ${WORK}/bad_index)
file(WRITE ${WORK}/bad_index/index.json "{\"format\":\"recall-head-index-1\",\"models\":[{\"scores\":1}]}")
set(ENV{RECALL_HEADS_DIR} ${WORK}/bad_index)
execute_process(COMMAND ${RECALL} ${gen} -m ${MODELS}/tiny.gguf RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 1 OR NOT err MATCHES "^recall: [^\n]*index\\.json: [^\n]*\n$")
  message(FATAL_ERROR "a malformed index must be one error line (exit ${rc}):\n${err}")
endif()
message(STATUS "shipped head scores: found by content (copy included), HeadKV by default, uniform elsewhere")
