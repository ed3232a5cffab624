#!/usr/bin/env python3
"""Accuracy tables from `recall eval ruler` result lines (PREFIX.jsonl), also of
a run that is still going or was stopped: only samples that every listed
method has finished are counted, so each method is scored on the same prompts.

  launch/ruler_summary.py [--methods M1,M2,...] [--tasks T1,...] [--markdown] PREFIX.jsonl [...]

Per context length: one row per method with the accuracy (%) per task, the
number of paired samples per task, the mean over tasks and the mean relative
to full attention's (when full is among the methods). --methods keeps those
methods, in that order (default: all, in order of appearance); --tasks keeps
those tasks (default: all).
"""
import argparse
import json
import sys
from collections import OrderedDict, defaultdict


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--methods", help="comma-separated methods to keep, in this order")
    ap.add_argument("--tasks", help="comma-separated tasks to keep")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table instead of text columns")
    a = ap.parse_args()

    # (ctx, task, sample) -> method -> score; methods in order of appearance
    score = defaultdict(dict)
    methods = OrderedDict()
    for path in a.files:
        try:
            f = open(path)
        except OSError as e:
            sys.exit(f"ruler_summary.py: {path}: {e.strerror}")
        with f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    sys.exit(f"ruler_summary.py: {path}:{n}: not a JSON line")
                if d.get("format") != "recall-eval-ruler-1":
                    continue  # e.g. needle-trace lines
                if a.tasks and d["task"] not in a.tasks.split(","):
                    continue
                key = (d["ctx"], d["task"], d["sample"])
                score[key][d["method"]] = float(d["score"])
                methods[d["method"]] = True
    keep = a.methods.split(",") if a.methods else list(methods)
    unknown = [m for m in keep if m not in methods]
    if unknown:
        sys.exit(f"ruler_summary.py: no results for method(s) {', '.join(unknown)}")
    if not keep:
        sys.exit("ruler_summary.py: no eval ruler result lines in the input")

    for ctx in sorted({k[0] for k in score}):
        tasks = []
        for k in sorted(score):
            if k[0] == ctx and k[1] not in tasks:
                tasks.append(k[1])
        paired = {t: [k for k in score if k[0] == ctx and k[1] == t and all(m in score[k] for m in keep)]
                  for t in tasks}
        tasks = [t for t in tasks if paired[t]]
        if not tasks:
            continue
        acc = {m: {t: 100.0 * sum(score[k][m] for k in paired[t]) / len(paired[t]) for t in tasks} for m in keep}
        mean = {m: sum(acc[m].values()) / len(tasks) for m in keep}
        full = mean.get("full")
        head = ["method"] + [f"{t} (n={len(paired[t])})" for t in tasks] + ["mean", "/ full"]
        rows = []
        for m in keep:
            rel = "-" if full is None or m == "full" else ("n/a" if full == 0 else f"{mean[m] / full:.2f}")
            rows.append([m] + [f"{acc[m][t]:.0f}" for t in tasks] + [f"{mean[m]:.1f}", rel])
        print(f"ctx {ctx}: accuracy %, samples every method finished")
        if a.markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for r in rows:
                print("| `" + r[0] + "` | " + " | ".join(r[1:]) + " |")
        else:
            w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
            print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head)))
            for r in rows:
                print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
        print()


if __name__ == "__main__":
    main()
