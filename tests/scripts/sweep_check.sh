#!/usr/bin/env bash
# ctest sweep_resume: launch/sweep.sh on the tiny model (ranks 1,2 x depths
# 16,32 x full and recycled, synthetic fill): 8 cells, one results row each
# with the machine, the commit and the launch command; a second run does
# nothing and leaves every file alone; a deleted cell is run again, and only
# that one.
#   sweep_check.sh REPO RECALL MODEL WORK
set -uo pipefail
repo="$1" recall="$2" model="$3" work="$4"
fail() { echo "sweep test FAILED: $*"; exit 1; }
rm -rf "$work"
sweep=("$repo/launch/sweep.sh" --out "$work" -m "$model" --recall "$recall" --ranks 1,2 --ctx 16,32
       --methods full,recycled:stride=2 --budgets 4 --fill random --decode-tokens 2)
"${sweep[@]}" 2> "$work.log1" || fail "first run: $(tail -3 "$work.log1")"
grep -q "8 cells, 0 done, 8 to run" "$work.log1" || fail "first run: $(head -1 "$work.log1")"
[ "$(ls "$work"/cells/*.csv | wc -l)" = 8 ] || fail "expected 8 cell files"
rows=$(tail -n +2 "$work/results.csv" | wc -l)
[ "$rows" = 8 ] || fail "results.csv has $rows rows, expected 8"
head -1 "$work/results.csv" | grep -q '^cell,machine,commit,launch,test,method,' || fail "results.csv header: $(head -1 "$work/results.csv")"
bad=$(tail -n +2 "$work/results.csv" | grep -vc '^np[12]_ctx[0-9]*_[^,]*,"[^"]\+",[0-9a-f]\+\(-dirty\)\?,"[^"]*recall bench')
[ "$bad" = 0 ] || fail "$bad rows lack the machine, the commit or the launch command"
grep -q '^np2_ctx32_recycled_stride_2_k_4,.*launch/mpirun.sh -np 2 .*,decode,recycled:stride=2:k=4,4,32,2,2,' \
  "$work/results.csv" || fail "no 2-rank recycled row at depth 32"
sums1=$(cd "$work" && md5sum cells/*.csv results.csv)
stamps1=$(cd "$work" && stat -c '%n %Y.%y' cells/*.csv)
"${sweep[@]}" 2> "$work.log2" || fail "second run failed"
grep -q "8 cells, 8 done, 0 to run" "$work.log2" || fail "second run: $(head -1 "$work.log2")"
grep -q "running" "$work.log2" && fail "second run ran a cell: $(grep running "$work.log2")"
[ "$stamps1" = "$(cd "$work" && stat -c '%n %Y.%y' cells/*.csv)" ] || fail "the second run touched cell files"
rm "$work/cells/np1_ctx32_full.csv"
"${sweep[@]}" 2> "$work.log3" || fail "third run failed"
grep -q "8 cells, 7 done, 1 to run" "$work.log3" || fail "third run: $(head -1 "$work.log3")"
[ "$(grep -c running "$work.log3")" = 1 ] && grep -q "running np1_ctx32_full" "$work.log3" \
  || fail "third run should redo np1_ctx32_full only: $(grep running "$work.log3")"
[ -s "$work/cells/np1_ctx32_full.csv" ] || fail "the deleted cell was not redone"
for f in $(cd "$work" && ls cells/*.csv | grep -v np1_ctx32_full); do
  echo "$sums1" | grep -q "$(cd "$work" && md5sum "$f")" || fail "$f changed on the third run"
done
[ "$(tail -n +2 "$work/results.csv" | wc -l)" = 8 ] || fail "results.csv lost rows"
echo "sweep: 8 cells; a rerun did nothing; a deleted cell was redone alone"
