#!/usr/bin/env bash
# Needle coverage heatmaps from --trace-needle files (README, "Needle tracing"):
# one panel per method side by side, layers (rows) x cache heads (columns),
# the fraction of the answer's prompt tokens each head holds at the step where
# the answer starts; a layer that ran full attention at that step counts as 1.
#
#   launch/needle_plot.sh [-o PNG] [--step N] [--sample CTX,TASK,INDEX] TRACE.jsonl [TRACE.jsonl ...]
#
# Runs: every needle_run of the files (`generate --trace-needle` writes one per
# file, so pass one file per method); from `eval ruler --trace-needle`, the
# methods of one sample: --sample picks it (e.g. 4096,niah_single_1,0),
# default the first sample in the file. Step: each run's answer_step (the
# step whose token starts the answer in its output); a run that never
# produced the answer uses the answer step of a full-attention run of the same
# sample, else step 1; --step N fixes it for every panel. Heads whose cache
# holds nothing yet (a recycled cache before its first build) are left blank.
# Output: -o PNG (default needle_coverage.png). Needs python3 and gnuplot with
# the cairo terminals (Debian: gnuplot-nox).
set -euo pipefail

die() {
  echo "needle_plot.sh: $*" >&2
  exit 1
}

out="needle_coverage.png" step="" sample=""
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) [ $# -ge 2 ] || die "-o needs a file"; out="$2"; shift 2 ;;
    --step) [ $# -ge 2 ] || die "--step needs a number"; step="$2"; shift 2 ;;
    --sample) [ $# -ge 2 ] || die "--sample needs CTX,TASK,INDEX"; sample="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || die "no trace file given (see --help)"
for f in "${files[@]}"; do [ -s "$f" ] || die "$f not found or empty"; done
[ -z "$step" ] || [[ "$step" =~ ^[0-9]+$ ]] || die "--step: not a step number: $step"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
command -v gnuplot >/dev/null 2>&1 || die "gnuplot not found (Debian: apt-get install gnuplot-nox)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# One matrix file per panel (rows = layers, columns = cache heads, NaN = blank)
# and an index line "file<TAB>title" per panel.
python3 - "$tmp" "$step" "$sample" "${files[@]}" <<'PY' || die "cannot read the traces"
import json, math, sys
tmp, fixed_step, sample, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = []  # dicts: header, steps {(step, layer): line}, end
for path in files:
    cur = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, text in enumerate(fh, 1):
            text = text.strip()
            if not text:
                continue
            try:
                o = json.loads(text)
            except ValueError:
                sys.exit(f"{path}:{n}: not JSON")
            ev = o.get("event")
            if ev == "needle_run":
                cur = {"header": o, "steps": {}, "end": None}
                runs.append(cur)
            elif ev == "needle_step" and cur:
                cur["steps"][(o["step"], o["layer"])] = o
            elif ev == "needle_end" and cur:
                cur["end"] = o
if not runs:
    sys.exit("no needle_run line in the traces")
key = lambda r: (r["header"].get("ctx"), r["header"].get("task"), r["header"].get("sample"))
if sample:
    parts = sample.split(",")
    if len(parts) != 3:
        sys.exit("--sample: expected CTX,TASK,INDEX")
    want = (int(parts[0]), parts[1], int(parts[2]))
    runs = [r for r in runs if key(r) == want]
    if not runs:
        sys.exit(f"--sample {sample}: no such runs")
elif any(r["header"].get("task") is not None for r in runs):
    first = key(runs[0])
    runs = [r for r in runs if key(r) == first]
def answer_step(r):
    return r["end"]["answer_step"] if r["end"] and r["end"].get("answer_step", -1) >= 0 else None
full_step = next((answer_step(r) for r in runs if r["header"]["attention"] == "full" and answer_step(r) is not None), None)
with open(f"{tmp}/index", "w") as idx:
    for i, r in enumerate(runs):
        h = r["header"]
        s = int(fixed_step) if fixed_step else answer_step(r)
        how = "answer starts"
        if s is None:
            s, how = (full_step, "full attention's answer") if full_step is not None else (1, "no answer")
        if fixed_step:
            how = "fixed"
        L, CH = h["n_layer"], h["cache_heads"]
        with open(f"{tmp}/m{i}.dat", "w") as m:
            for l in range(L):
                o = r["steps"].get((s, l))
                row = []
                for c in range(CH):
                    if o is None or o["held"] is None:
                        row.append("NaN")
                    elif o["full"]:
                        row.append("1")
                    else:
                        held = o["held"][c]
                        row.append(f"{sum(held) / len(held):.4f}" if held else "NaN")
                m.write(" ".join(row) + "\n")
        title = f"{h['method']}  (step {s}: {how})"
        idx.write(f"{tmp}/m{i}.dat\t{title}\t{L}\t{CH}\n")
PY

n=$(wc -l < "$tmp/index")
{
  echo "set terminal pngcairo size $((360 * n + 80)),560 font 'sans,10' noenhanced"
  echo "set output '$out'"
  echo "set multiplot layout 1,$n title 'needle coverage: fraction of the answer tokens each head holds (layers x heads; full-attention layers = 1)'"
  echo "set cbrange [0:1]"
  echo "set palette defined (0 '#f7fbff', 0.5 '#6baed6', 1 '#08306b')"
  echo "set xlabel 'cache head'"
  echo "set ylabel 'layer'"
  echo "set datafile missing 'NaN'"
  echo "set xtics 1"
  while IFS=$'\t' read -r file title layers heads; do
    echo "set title \"${title//\"/\'}\""
    echo "set xrange [-0.5:$((heads)) - 0.5]"
    echo "set yrange [-0.5:$((layers)) - 0.5]"
    echo "set ytics $(( layers > 16 ? 2 : 1 ))"
    echo "plot '$file' matrix with image notitle"
  done < "$tmp/index"
  echo "unset multiplot"
} > "$tmp/plot.gp"
gnuplot "$tmp/plot.gp" || die "gnuplot failed"
[ -s "$out" ] || die "gnuplot wrote no $out"
echo "needle_plot.sh: wrote $out ($n panel$([ "$n" -gt 1 ] && echo s))"
