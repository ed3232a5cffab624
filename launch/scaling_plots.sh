#!/usr/bin/env bash
# Plots of a scaling sweep (launch/sweep.sh's results.csv, or any `recall
# bench --csv` file) with gnuplot (pngcairo):
#   decode_speed_vs_context.png  decode tokens/s vs context depth (log axis): one colour per
#                                method, one line style per rank count, full attention drawn
#                                thicker; the key sits outside, right of the plot
#   speedup_vs_ranks.png         speed-up over the same method on 1 rank vs ranks, one panel
#                                per context depth, one colour per method; dotted: ideal
#   memory_per_rank.png          peak resident memory of the largest rank (MiB) vs context
#                                depth, colours and line styles as above
# Next to each PNG, NAME.series lists its series (one title a line), for tests and readers.
#
#   launch/scaling_plots.sh RESULTS_CSV [OUT_DIR]     (OUT_DIR defaults to docs/plots/scaling)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
csv="${1:-}"
out="${2:-$root/docs/plots/scaling}"
die() { echo "scaling_plots.sh: $*" >&2; exit 1; }
[ -n "$csv" ] || die "usage: launch/scaling_plots.sh RESULTS_CSV [OUT_DIR]"
[ -s "$csv" ] || die "$csv not found or empty"
command -v gnuplot >/dev/null 2>&1 || die "gnuplot not found (Debian: apt-get install gnuplot-nox)"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Parse the CSV (quoted fields) into one .dat file per series and a gnuplot script.
python3 - "$csv" "$tmp" "$out" <<'PY' || exit 1
import csv, sys
path, tmp, out = sys.argv[1:]
rows = [r for r in csv.DictReader(open(path, newline="")) if r.get("test") == "decode" and r.get("depth")]
need = {"method", "depth", "ranks", "tok_s", "peak_rss_mib"}
if not rows or not need <= set(rows[0]):
    sys.exit("scaling_plots.sh: %s has no decode rows with %s" % (path, ", ".join(sorted(need))))
methods, ranks, depths = [], [], []
for r in rows:
    for lst, v in ((methods, r["method"]), (ranks, int(r["ranks"])), (depths, int(r["depth"]))):
        if v not in lst:
            lst.append(v)
ranks.sort(); depths.sort()
data = {(r["method"], int(r["ranks"]), int(r["depth"])): r for r in rows}
PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
color = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
dash = {r: i + 1 for i, r in enumerate(ranks)}
width = lambda m: 4 if m.split(":")[0] == "full" else 2
rk = lambda r: "%d rank%s" % (r, "" if r == 1 else "s")
logx = "set logscale x 2" if depths[0] > 0 else ""

def line_plot(name, title, ylabel, value):
    plots, series = [], []
    for m in methods:
        for r in ranks:
            pts = [(d, value(data[m, r, d])) for d in depths if (m, r, d) in data]
            if not pts:
                continue
            f = "%s/%s_%d.dat" % (tmp, name, len(plots))
            open(f, "w").write("".join("%d %s\n" % p for p in pts))
            t = "%s, %s" % (m, rk(r))
            series.append(t)
            plots.append("'%s' using 1:2 with linespoints linecolor rgb '%s' dashtype %d linewidth %d pointtype 7 title '%s'"
                         % (f, color[m], dash[r], width(m), t))
    gp = ["set terminal pngcairo size 900,500 font 'sans,10' noenhanced", "set output '%s/%s.png'" % (out, name),
          "set title '%s'" % title, "set xlabel 'context depth (tokens)'", "set ylabel '%s'" % ylabel,
          "set yrange [0:*]", "set key outside right top box", "set grid", logx, "plot " + ", ".join(plots)]
    open("%s/%s.gp" % (tmp, name), "w").write("\n".join(gp) + "\n")
    open("%s/%s.series" % (out, name), "w").write("".join(s + "\n" for s in series))

line_plot("decode_speed_vs_context", "Decode speed vs context depth", "decode tokens/s", lambda r: r["tok_s"])
line_plot("memory_per_rank", "Memory per rank vs context depth", "peak RSS of the largest rank (MiB)",
          lambda r: r["peak_rss_mib"])

# Speed-up over 1 rank, one panel per depth.
panels, series = [], []
for d in depths:
    plots = []
    for m in methods:
        base = data.get((m, 1, d))
        pts = [(r, float(data[m, r, d]["tok_s"]) / float(base["tok_s"])) for r in ranks
               if base and (m, r, d) in data and float(base["tok_s"]) > 0]
        if len(pts) < 1:
            continue
        f = "%s/speedup_%d_%d.dat" % (tmp, d, len(plots))
        open(f, "w").write("".join("%d %.4f\n" % p for p in pts))
        plots.append("'%s' using 1:2 with linespoints linecolor rgb '%s' linewidth %d pointtype 7 title '%s'"
                     % (f, color[m], width(m), m))
        series.append("%s, depth %d" % (m, d))
    if plots:
        panels.append("set title 'depth %d'\nplot x with lines dashtype 3 linecolor rgb '#999999' title 'ideal', %s"
                      % (d, ", ".join(plots)))
if not panels:
    sys.exit("scaling_plots.sh: no method has a 1-rank row to compare with")
gp = ["set terminal pngcairo size %d,460 font 'sans,10' noenhanced" % (380 * len(panels) + 200),
      "set output '%s/speedup_vs_ranks.png'" % out,
      "set multiplot layout 1,%d title 'Decode speed-up over 1 rank'" % len(panels),
      "set xlabel 'ranks'", "set ylabel 'speed-up (tokens/s over 1 rank)'", "set xrange [%g:%g]" % (ranks[0] * 0.8, ranks[-1] * 1.25),
      "set logscale x 2", "set yrange [0:*]", "set key top left", "set grid"] + panels + ["unset multiplot"]
open("%s/speedup_vs_ranks.gp" % tmp, "w").write("\n".join(gp) + "\n")
open("%s/speedup_vs_ranks.series" % out, "w").write("".join(s + "\n" for s in series))
PY
for p in decode_speed_vs_context speedup_vs_ranks memory_per_rank; do
  gnuplot "$tmp/$p.gp" || die "gnuplot failed on $p"
done
echo "scaling_plots.sh: wrote decode_speed_vs_context, speedup_vs_ranks and memory_per_rank (.png, .series) in $out"
