# cmake -P driver of scaling_plots (see tests/cli/scaling.cmake):
# launch/scaling_plots.sh on a small sweep CSV (methods full and recycled on 1
# and 2 ranks at depths 1024 and 4096; one prefill row to be ignored) writes
# three PNGs whose series (NAME.series) are exactly the CSV's.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(h "cell,machine,commit,launch,test,method,budget,depth,tokens,ranks,threads,kv_type,seconds,tok_s,vs_full,n_full,ms_full,ms_rec,kv_bytes_read_per_token,comm_bytes_per_token,kv_mib,peak_rss_mib,wrong,fill,command")
set(c "\"vm x 2 cores\",abc1234,\"build/recall bench -m m.gguf --attention full,recycled\"")
file(WRITE ${WORK}/results.csv "${h}
a,${c},prefill,,,,512,1,1,f16,1.0,512.0,,,,,,,11.0,120.0,,,\"recall bench\"
b,${c},decode,full,,1024,8,1,1,f16,0.1,80.0,,8,12.5,0,1,0,22.0,130.0,,synthetic fill,\"recall bench\"
c,${c},decode,full,,4096,8,1,1,f16,0.2,40.0,,8,25.0,0,1,0,88.0,200.0,,synthetic fill,\"recall bench\"
d,${c},decode,full,,1024,8,2,1,f16,0.1,70.0,,8,14.0,0,1,0,11.0,110.0,,synthetic fill,\"recall bench\"
e,${c},decode,full,,4096,8,2,1,f16,0.1,60.0,,8,16.0,0,1,0,44.0,140.0,,synthetic fill,\"recall bench\"
f,${c},decode,recycled:stride=10,128,1024,8,1,1,f16,0.1,90.0,1.1,1,12.5,10,1,0,22.0,131.0,,synthetic fill,\"recall bench\"
g,${c},decode,recycled:stride=10,512,4096,8,1,1,f16,0.1,85.0,2.1,1,25.0,11,1,0,88.0,201.0,,synthetic fill,\"recall bench\"
h,${c},decode,recycled:stride=10,128,1024,8,2,1,f16,0.1,75.0,1.1,1,14.0,12,1,0,11.0,111.0,,synthetic fill,\"recall bench\"
i,${c},decode,recycled:stride=10,512,4096,8,2,1,f16,0.1,80.0,1.3,1,16.0,12,1,0,44.0,141.0,,synthetic fill,\"recall bench\"
")
execute_process(COMMAND ${BASH} ${SCRIPT} ${WORK}/results.csv ${WORK}/plots RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "scaling_plots.sh failed (exit ${rc}): ${out}${err}")
endif()
set(lines "full, 1 rank\nfull, 2 ranks\nrecycled:stride=10, 1 rank\nrecycled:stride=10, 2 ranks\n")
set(want_decode_speed_vs_context "${lines}")
set(want_memory_per_rank "${lines}")
set(want_speedup_vs_ranks "full, depth 1024\nrecycled:stride=10, depth 1024\nfull, depth 4096\nrecycled:stride=10, depth 4096\n")
foreach(p decode_speed_vs_context speedup_vs_ranks memory_per_rank)
  set(f ${WORK}/plots/${p}.png)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "${f} was not written")
  endif()
  file(READ ${f} magic LIMIT 8 HEX)
  file(SIZE ${f} size)
  if(NOT magic STREQUAL "89504e470d0a1a0a" OR size LESS 5000)
    message(FATAL_ERROR "${f} is not a PNG plot (${size} bytes, starts ${magic})")
  endif()
  file(READ ${WORK}/plots/${p}.series got)
  if(NOT got STREQUAL "${want_${p}}")
    message(FATAL_ERROR "${p}: series\n${got}expected\n${want_${p}}")
  endif()
endforeach()
# A CSV without decode rows is one clear error.
file(WRITE ${WORK}/empty.csv "${h}\n")
execute_process(COMMAND ${BASH} ${SCRIPT} ${WORK}/empty.csv ${WORK}/plots2 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "scaling_plots.sh: .*empty.csv has no decode rows")
  message(FATAL_ERROR "an empty CSV should fail with one line (exit ${rc}): ${err}")
endif()
message(STATUS "scaling_plots.sh: 3 plots, series equal to the CSV's")
