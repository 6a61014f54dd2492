"""Tabulate leave-one-speaker-out runs (recipes/digits/loso.sh) and plot WER per held-out speaker.

    python recipes/digits/loso_report.py EXP [EXP ...] [--plot loso_wer.png] [--labels a,b]

Each EXP holds one folder per held-out speaker with ``eval_unseen/summary.json`` and
``eval_seen/summary.json``. Writes ``EXP/loso.json`` and ``EXP/loso.md`` for each EXP and prints the
Markdown table; with ``--plot``, one bar group per held-out speaker, one bar per EXP. An EXP may
also be a ``loso.json`` written earlier (e.g. ``recipes/digits/loso_runs/*.json``, the runs of
RESULTS.md, whose experiment folders are gone): it is read, not rewritten.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path


def fold_results(exp: Path) -> dict[str, dict[str, float]]:
    """Held-out speaker -> unseen/seen WER (%) and training seconds, for each scored fold of ``exp``."""
    folds: dict[str, dict[str, float]] = {}
    for fold in sorted(p for p in exp.iterdir() if (p / "eval_unseen" / "summary.json").is_file()):
        row = {"unseen_wer": 100 * json.loads((fold / "eval_unseen" / "summary.json").read_text())["wer"]}
        seen = fold / "eval_seen" / "summary.json"
        if seen.is_file():
            row["seen_wer"] = 100 * json.loads(seen.read_text())["wer"]
        seconds = fold / "train_seconds"
        if seconds.is_file():
            row["train_seconds"] = float(seconds.read_text())
        folds[fold.name] = row
    return folds


def summarize(folds: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean and maximum of each column over the folds."""
    out: dict[str, float] = {}
    for key in ("unseen_wer", "seen_wer"):
        values = [row[key] for row in folds.values() if key in row]
        if values:
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_max"] = max(values)
    return out


def markdown(folds: dict[str, dict[str, float]], summary: dict[str, float]) -> str:
    """One row per fold, then the mean."""
    lines = ["| held-out speaker | unseen WER % | seen WER % | training s |", "|---|---|---|---|"]
    for spk, row in folds.items():
        seen = f"{row['seen_wer']:.2f}" if "seen_wer" in row else ""
        secs = f"{row['train_seconds']:.0f}" if "train_seconds" in row else ""
        lines.append(f"| {spk} | {row['unseen_wer']:.2f} | {seen} | {secs} |")
    if folds:
        seen_mean = f"{summary['seen_wer_mean']:.2f}" if "seen_wer_mean" in summary else ""
        lines.append(f"| **mean** | **{summary['unseen_wer_mean']:.2f}** | {seen_mean} | |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Grouped bars: unseen-speaker WER per held-out speaker, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speakers = sorted({spk for folds in results.values() for spk in folds})
    width = 0.8 / max(1, len(results))
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(speakers), 3.6))
    for k, (label, folds) in enumerate(results.items()):
        xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(speakers))]
        ys = [folds.get(spk, {}).get("unseen_wer", float("nan")) for spk in speakers]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks(range(len(speakers)), speakers)
    ax.set_xlabel("held-out speaker (all recordings; trained on the other three)")
    ax.set_ylabel("unseen-speaker WER %")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exps", type=Path, nargs="+")
    parser.add_argument("--plot", type=Path, help="PNG of WER per held-out speaker, one bar per EXP")
    parser.add_argument("--labels", help="comma-separated labels for the plot (default: the EXP names)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [exp.name for exp in args.exps]
    if len(labels) != len(args.exps):
        print("error: --labels needs one label per EXP", file=sys.stderr)
        return 2
    results = {}
    for label, exp in zip(labels, args.exps):
        folds = json.loads(exp.read_text())["folds"] if exp.is_file() else fold_results(exp)
        summary = summarize(folds)
        table = markdown(folds, summary)
        if not exp.is_file():
            (exp / "loso.json").write_text(json.dumps({"folds": folds, **summary}, indent=2) + "\n")
            (exp / "loso.md").write_text(table)
        print(f"{label} ({exp})\n{table}")
        results[label] = folds
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
