#!/usr/bin/env bash
# Regenerates the evaluation plots with gnuplot (pngcairo):
#   docs/plots/accuracy_vs_budget.png      RULER mean accuracy (over tasks) vs KV budget, one line per
#                                          method, one panel per context length; full attention (which
#                                          keeps everything) is a dashed horizontal line
#   docs/plots/decode_speed_vs_context.png decode tokens/s vs context depth, one line per method (and
#                                          rank count, when the CSV holds several): one colour per
#                                          method, one line style per rank count, full attention thicker
#
#   launch/plots.sh [RESULTS_DIR]
#
# Inputs: RESULTS_DIR/ruler.csv (from `recall eval ruler --out RESULTS_DIR/ruler`) and
# RESULTS_DIR/bench.csv (from `recall bench --csv RESULTS_DIR/bench.csv`); RESULTS_DIR defaults
# to results/ in the repository. Environment overrides: RULER_CSV, BENCH_CSV (the input files),
# PLOTS_DIR (the output folder, default docs/plots in the repository). Running it again
# rewrites the same files. Needs gnuplot with the cairo terminals (Debian: gnuplot-nox).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="${1:-$root/results}"
ruler_csv="${RULER_CSV:-$results/ruler.csv}"
bench_csv="${BENCH_CSV:-$results/bench.csv}"
out_dir="${PLOTS_DIR:-$root/docs/plots}"

die() {
  echo "plots.sh: $*" >&2
  exit 1
}

command -v gnuplot >/dev/null 2>&1 || die "gnuplot not found (Debian: apt-get install gnuplot-nox)"
[ -s "$ruler_csv" ] || die "$ruler_csv not found or empty (write it with: build/recall eval ruler -m MODEL ... --out ${ruler_csv%.csv})"
[ -s "$bench_csv" ] || die "$bench_csv not found or empty (write it with: build/recall bench -m MODEL ... --csv $bench_csv)"
head -n 1 "$ruler_csv" | grep -q '^ctx,method,budget,task,n,accuracy' ||
  die "$ruler_csv is not a 'recall eval ruler' CSV (header ctx,method,budget,task,n,accuracy)"
head -n 1 "$bench_csv" | grep -q '^test,method,budget,depth,tokens,ranks,' ||
  die "$bench_csv is not a 'recall bench --csv' file (header test,method,budget,depth,tokens,ranks,...)"
mkdir -p "$out_dir"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- accuracy vs budget: rows with task "mean", split per (ctx, method) ------
# Fields: 1 ctx, 2 method, 3 budget, 4 task, 5 n, 6 accuracy. Method names hold
# no commas (the --attention list is comma-separated), so a plain split works.
awk -F, -v dir="$tmp" '
  NR > 1 && $1 != "ctx" && $4 == "mean" {
    gsub(/"/, "", $2)
    key = $1 SUBSEP $2
    if (!(key in seen)) { seen[key] = ++n; print $1 "," $2 > (dir "/acc_index") }
    print $3, $6 > (dir "/acc_" seen[key] ".dat")
  }' "$ruler_csv"
[ -s "$tmp/acc_index" ] || die "$ruler_csv has no 'mean' rows"

ctxs=$(cut -d, -f1 "$tmp/acc_index" | sort -n -u)
n_ctx=$(echo "$ctxs" | wc -l)
methods=$(cut -d, -f2- "$tmp/acc_index" | awk '!s[$0]++')  # first-seen order, one color per method
{
  echo "set terminal pngcairo size $((560 * n_ctx)),460 font 'sans,10' noenhanced"
  echo "set output '$out_dir/accuracy_vs_budget.png'"
  echo "set datafile separator ' '"
  echo "set multiplot layout 1,$n_ctx title 'RULER: mean accuracy over tasks vs KV budget'"
  echo "set xlabel 'KV budget (rows per head)'"
  echo "set ylabel 'accuracy (%)'"
  echo "set yrange [0:105]"
  echo "set logscale x 2"
  echo "set key below"
  echo "set grid"
  for ctx in $ctxs; do
    # The budgets of the compressing methods at this length set the x range; full sits at x = ctx.
    xs=$(awk -F, -v c="$ctx" '$1 == c { print NR }' "$tmp/acc_index")
    lo=""; hi=""
    for i in $xs; do
      m=$(sed -n "${i}p" "$tmp/acc_index" | cut -d, -f2-)
      [ "${m%%:*}" = "full" ] && continue
      read -r a b < <(sort -n "$tmp/acc_$i.dat" | awk 'NR==1{lo=$1} {hi=$1} END{print lo, hi}')
      if [ -z "$lo" ] || [ "$a" -lt "$lo" ]; then lo=$a; fi
      if [ -z "$hi" ] || [ "$b" -gt "$hi" ]; then hi=$b; fi
    done
    [ -z "$lo" ] && { lo=$ctx; hi=$ctx; }
    echo "set title 'context $ctx tokens'"
    echo "set xrange [$lo/1.5:$hi*1.5]"
    plots=()
    k=0
    while IFS= read -r m; do
      k=$((k + 1))
      i=$(awk -F, -v c="$ctx" -v m="$m" '{ mm = $0; sub(/^[^,]*,/, "", mm) } $1 == c && mm == m { print NR; exit }' "$tmp/acc_index")
      [ -n "$i" ] || continue
      if [ "${m%%:*}" = "full" ]; then
        y=$(awk '{ s += $2; n++ } END { if (n) printf "%.4f", s / n }' "$tmp/acc_$i.dat")
        plots+=("$y with lines dashtype 2 linewidth 2 linecolor $k title '$m (all rows)'")
      else
        sort -n "$tmp/acc_$i.dat" > "$tmp/acc_${i}_sorted.dat"
        plots+=("'$tmp/acc_${i}_sorted.dat' using 1:2 with linespoints linewidth 2 pointtype 7 linecolor $k title '$m'")
      fi
    done <<< "$methods"
    (IFS=,; echo "plot ${plots[*]}")
  done
  echo "unset multiplot"
} > "$tmp/accuracy.gp"
gnuplot "$tmp/accuracy.gp"

# --- decode speed vs context depth: decode rows, per (method, ranks) ---------
# Fields: 1 test, 2 method, 4 depth, 6 ranks, 10 tok_s (the command, last, may be quoted).
awk -F, -v dir="$tmp" '
  $1 == "decode" && $4 != "" {
    gsub(/"/, "", $2)
    key = $2 SUBSEP $6
    if (!(key in seen)) { seen[key] = ++n; print $2 "," $6 > (dir "/speed_index") }
    print $4, $10 > (dir "/speed_" seen[key] ".dat")
  }' "$bench_csv"
[ -s "$tmp/speed_index" ] || die "$bench_csv has no decode rows"
n_ranks=$(cut -d, -f2 "$tmp/speed_index" | sort -u | wc -l)
min_depth=$(cat "$tmp"/speed_*.dat | sort -n | head -n 1 | cut -d' ' -f1)
{
  echo "set terminal pngcairo size 760,500 font 'sans,10' noenhanced"
  echo "set output '$out_dir/decode_speed_vs_context.png'"
  echo "set title 'Decode speed vs context depth'"
  echo "set xlabel 'context depth (tokens)'"
  echo "set ylabel 'decode tokens/s'"
  echo "set yrange [0:*]"
  echo "set key outside right top"
  echo "set grid"
  # A depth of 0 has no place on a log axis.
  if [ "$min_depth" -gt 0 ]; then echo "set logscale x 2"; fi
  plots=()
  i=0
  # One colour per method, one line style per rank count, full attention thicker.
  speed_methods=$(cut -d, -f1 "$tmp/speed_index" | awk '!s[$0]++')
  speed_ranks=$(cut -d, -f2 "$tmp/speed_index" | sort -n -u)
  while IFS=, read -r m r; do
    i=$((i + 1))
    color=$(echo "$speed_methods" | awk -v m="$m" '$0 == m { print NR; exit }')
    dash=$(echo "$speed_ranks" | awk -v r="$r" '$0 == r { print NR; exit }')
    width=2
    [ "${m%%:*}" = full ] && width=4
    sort -n "$tmp/speed_$i.dat" > "$tmp/speed_${i}_sorted.dat"
    title="$m"
    if [ "$n_ranks" -gt 1 ]; then
      plural=""
      [ "$r" -gt 1 ] && plural=s
      title="$m, $r rank$plural"
    fi
    plots+=("'$tmp/speed_${i}_sorted.dat' using 1:2 with linespoints linecolor $color dashtype $dash linewidth $width pointtype 7 title '$title'")
  done < "$tmp/speed_index"
  (IFS=,; echo "plot ${plots[*]}")
} > "$tmp/speed.gp"
gnuplot "$tmp/speed.gp"

echo "plots.sh: wrote $out_dir/accuracy_vs_budget.png and $out_dir/decode_speed_vs_context.png"
