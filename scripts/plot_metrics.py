#!/usr/bin/env python3
"""Draws the curves of a ranktune run from its metrics.jsonl to a PNG: training loss (and eval loss) against step,
and the learning rate below it. Rows of a resumed run that repeat a step replace the earlier ones.

    python3 scripts/plot_metrics.py runs/default/metrics.jsonl [-o loss.png] [--title "tiny run"]
    python3 scripts/plot_metrics.py a/metrics.jsonl b/metrics.jsonl -o compare.png   # several runs, one figure
"""
import argparse
import json
import pathlib
import sys


def read_rows(path):
    rows = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                # A run killed mid-write leaves a partial last line: skip it, refuse damage elsewhere.
                if number == sum(1 for _ in open(path, encoding="utf-8")):
                    print(f"{path}:{number}: skipping a partial last line", file=sys.stderr)
                    continue
                sys.exit(f"error: {path}:{number}: not JSON ({e})")
            if "step" not in row:
                sys.exit(f"error: {path}:{number}: row has no 'step'")
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", help="metrics.jsonl of one or more runs")
    ap.add_argument("-o", "--output", help="PNG to write (default: loss.png beside the first metrics file)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        sys.exit("error: matplotlib is not installed (pip install matplotlib; scripts/setup.sh installs it)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for path in args.metrics:
        rows = read_rows(path)
        if not rows:
            sys.exit(f"error: {path} has no rows")
        label = pathlib.Path(path).parent.name if len(args.metrics) > 1 else ""
        steps, loss = series(rows, "loss")
        line, = ax_loss.plot(steps, loss, label=(label + " train").strip())
        e_steps, e_loss = series(rows, "eval_loss")
        if e_steps:
            ax_loss.plot(e_steps, e_loss, "o--", color=line.get_color(), label=(label + " eval").strip())
        lr_steps, lr = series(rows, "lr")
        ax_lr.plot(lr_steps, lr, color=line.get_color())
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_loss.set_title(args.title or str(pathlib.Path(args.metrics[0]).parent))
    out = pathlib.Path(args.output) if args.output else pathlib.Path(args.metrics[0]).with_name("loss.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
