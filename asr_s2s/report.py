"""Plots and a summary of an experiment: training curves, WER by utterance length, an example."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402

from asr_s2s.evaluate import score  # noqa: E402


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_training(metrics: Path, out: Path) -> Path:
    """Training loss per step, dev loss and dev WER per epoch, from a trainer's ``metrics.jsonl``."""
    records = _read_jsonl(metrics)
    train = [r for r in records if r["kind"] == "train"]
    dev = [r for r in records if r["kind"] == "dev"]
    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(11, 4))
    # CTC-only training (train.ctc_weight=1) logs no decoder CE: its losses are the CTC head's.
    kind = "CE" if all("ce" in r for r in train) else "CTC"
    if train:
        ax_loss.plot(
            [r["step"] for r in train],
            [r[kind.lower()] for r in train],
            label=f"train {kind}" + (" (smoothed labels)" if kind == "CE" else ""),
            alpha=0.7,
        )
    if dev:
        ax_loss.plot([r["step"] for r in dev], [r["dev_loss"] for r in dev], "o-", label=f"dev {kind}")
        ax_wer.plot([r["epoch"] for r in dev], [100 * r["dev_wer"] for r in dev], "o-", label="dev WER")
        ax_wer.plot([r["epoch"] for r in dev], [100 * r["dev_cer"] for r in dev], "s--", label="dev CER")
    ax_loss.set(xlabel="step", ylabel="loss per character", title="Loss")
    ax_wer.set(xlabel="epoch", ylabel="%", title="Dev error rates (greedy)", yscale="log")
    for ax in (ax_loss, ax_wer):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def wer_by_length(per_utterance: Path) -> dict[int, dict[str, float]]:
    """Corpus WER grouped by the number of words in the reference: ``{words: {wer, utterances}}``."""
    groups: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r in _read_jsonl(per_utterance):
        refs, hyps = groups[len(r["reference"].split())]
        refs.append(r["reference"])
        hyps.append(r["hypothesis"])
    return {
        n: {"wer": score(refs, hyps).wer, "utterances": len(refs)}
        for n, (refs, hyps) in sorted(groups.items())
    }


def plot_wer_by_length(per_utterance: Path, out: Path, title: str = "WER by number of words") -> Path:
    """Bar chart of :func:`wer_by_length`."""
    table = wer_by_length(per_utterance)
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(list(table), [100 * v["wer"] for v in table.values()])
    ax.set_xticks(list(table))
    for bar, v in zip(bars, table.values()):
        ax.annotate(
            f"n={v['utterances']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set(xlabel="words in the reference", ylabel="WER (%)", title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_example(audio: Path, model: Any, reference: str | None, out: Path) -> Path:
    """Log-mel of one file with its reference and the model's hypothesis as the title.

    ``model`` is a :class:`asr_s2s.transcribe.Transcriber`.
    """
    from asr_s2s.audio import load_audio
    from asr_s2s.features import LogMel

    cfg = model.config.features
    wave, _ = load_audio(audio, cfg.sample_rate)
    feats = LogMel(cfg)(wave)
    hypothesis = model.transcribe(audio).text
    fig, ax = plt.subplots(figsize=(10, 3.5))
    seconds = feats.shape[0] * cfg.hop_ms / 1000
    ax.imshow(
        feats.T.numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, cfg.n_mels), cmap="magma"
    )
    ax.set(xlabel="seconds", ylabel="mel bin")
    ax.set_title(f"REF: {reference or '?'}\nHYP: {hypothesis}", fontsize=10, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(
    exp: Path, eval_dir: Path | None, out: Path, audio: Path | None = None, reference: str | None = None
) -> dict[str, Path]:
    """Every plot that the available inputs allow, into ``out``; returns ``{name: path}``."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    if (exp / "metrics.jsonl").exists():
        made["training"] = plot_training(exp / "metrics.jsonl", out / "training.png")
    if eval_dir is not None and (eval_dir / "per_utterance.jsonl").exists():
        made["wer_by_length"] = plot_wer_by_length(
            eval_dir / "per_utterance.jsonl", out / "wer_by_length.png"
        )
        table = wer_by_length(eval_dir / "per_utterance.jsonl")
        (out / "wer_by_length.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
        made["wer_by_length_table"] = out / "wer_by_length.json"
    if audio is not None and (exp / "model.pt").exists():
        from asr_s2s.transcribe import load_model

        made["example"] = plot_example(
            audio, load_model(exp / "model.pt", device="cpu"), reference, out / "example.png"
        )
    return made
