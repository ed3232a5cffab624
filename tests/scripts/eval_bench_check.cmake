# cmake -P driver of eval_bench_output (see tests/cli/eval.cmake): `recall
# bench --csv --json` on the tiny model (prefill 8 and 16 tokens; decode depths
# 0 and 16 for full and recycled, K = 4, plus snapkv which has no prompt to
# compress at depth 0) must write, besides its usual table, a CSV with the
# header and one row per prefill length and per decode (method, depth) with
# #wrong = 0, and a JSON document with the same rows and the command line.
# Each method is checked against its own reference: full and recycled (whose
# first step is full) against a one-shot prefill, snapkv (budget 12 < depth
# 16) against itself from a fresh prefill, and n/a where nothing was checked
# (--verify-max 0 leaves depth 16 unchecked in a second run).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${RECALL} bench -m ${MODEL} --prefill 8,16 --ctx 0,16 --decode-tokens 4 --reps 1 --threads 2
                        --attention full,recycled:k=4,snapkv:budget=12:window=4 --csv ${WORK}/bench.csv
                        --json ${WORK}/bench.json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "recall bench failed (exit ${rc})")
endif()
if(NOT out MATCHES "\n  decode   full +16 ")
  message(FATAL_ERROR "the printed table is missing")
endif()
foreach(check "full +0: 0 logits of the first step differ from one-shot full-attention prefill"
              "recycled:k=4 +16: 0 logits of the first step differ from one-shot full-attention prefill"
              "snapkv:budget=12:window=4 +16: 0 logits of the first step differ from the same method from a fresh prefill")
  if(NOT out MATCHES "\n  check +${check}\n")
    message(FATAL_ERROR "no check line '${check}'")
  endif()
endforeach()
execute_process(COMMAND ${RECALL} bench -m ${MODEL} --prefill 8 --ctx 16 --decode-tokens 2 --reps 1 --threads 2
                        --attention full,snapkv:budget=12:window=4 --verify-max 0
                RESULT_VARIABLE rc OUTPUT_VARIABLE out2 ERROR_VARIABLE err2 TIMEOUT 120)
if(NOT rc EQUAL 0 OR NOT out2 MATCHES "\n  check +snapkv:budget=12:window=4 +16: n/a logits")
  message(FATAL_ERROR "--verify-max 0: expected an n/a check for snapkv at depth 16 (exit ${rc}):\n${out2}${err2}")
endif()
file(READ ${WORK}/bench.csv csv)
set(header "test,method,budget,depth,tokens,ranks,threads,kv_type,seconds,tok_s,vs_full,n_full,ms_full,ms_rec,kv_bytes_read_per_token,comm_bytes_per_token,kv_mib,peak_rss_mib,wrong,fill,command")
if(NOT csv MATCHES "^${header}\n")
  message(FATAL_ERROR "bench.csv: unexpected header")
endif()
string(REGEX MATCHALL "\n" lines "${csv}")
list(LENGTH lines n)
if(NOT n EQUAL 8)  # header + 2 prefill + depth 0 (full, recycled) + depth 16 (full, recycled, snapkv)
  message(FATAL_ERROR "bench.csv: ${n} lines, expected 8")
endif()
set(num "[0-9.]+")
foreach(row "prefill,,,,8,1,2,f16," "prefill,,,,16,1,2,f16,"
            "decode,full,,0,4,1,2,f16," "decode,recycled:k=4,4,0,4,1,2,f16,"
            "decode,full,,16,4,1,2,f16," "decode,recycled:k=4,4,16,4,1,2,f16,"
            "decode,snapkv:budget=12:window=4,12,16,4,1,2,f16,")
  if(NOT csv MATCHES "\n${row}${num},${num},")
    message(FATAL_ERROR "bench.csv: no row starting ${row}<seconds>,<tok/s>")
  endif()
endforeach()
# decode rows: ..., kv_mib, peak_rss_mib, wrong = 0, then the quoted command line
string(REGEX MATCHALL "\ndecode,[^\n]*,${num},${num},0,prefill,\"recall bench -m [^\n]*--csv=[^\n]*\"" decode_rows "${csv}")
list(LENGTH decode_rows n)
if(NOT n EQUAL 5)
  message(FATAL_ERROR "bench.csv: ${n} decode rows with #wrong = 0 and the command line, expected 5")
endif()
file(READ ${WORK}/bench.json json)
string(JSON n_rows LENGTH "${json}" rows)
string(JSON command GET "${json}" command)
string(JSON wrong GET "${json}" rows 6 wrong)
string(JSON method GET "${json}" rows 6 method)
string(JSON rss GET "${json}" rows 6 peak_rss_mib)
if(NOT n_rows EQUAL 7 OR NOT command MATCHES "^recall bench -m " OR NOT wrong EQUAL 0
   OR NOT method STREQUAL "snapkv:budget=12:window=4" OR NOT rss GREATER 0)
  message(FATAL_ERROR "bench.json: ${n_rows} rows (expected 7), command '${command}', last row ${method} wrong ${wrong} rss ${rss}")
endif()
message(STATUS "bench --csv/--json: 7 rows each")
