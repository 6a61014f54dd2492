"""Evaluation: the one evaluator that decodes a dataset of utterances into hypotheses (used by
``asr-s2s evaluate`` and by the trainer's dev pass), corpus-level WER/CER with jiwer, and the report
files of a manifest's evaluation.

Audio is read by :class:`asr_s2s.data.AsrDataset` in a DataLoader (worker processes when asked),
so every utterance is the ``[offset, offset + duration]`` segment of its file, exactly as in
training, whatever the offset.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jiwer
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr_s2s.config import TextConfig
from asr_s2s.data import AsrDataset, Batch, collate
from asr_s2s.errors import AsrError, ConfigError, ManifestError
from asr_s2s.features import LogMel
from asr_s2s.manifest import Utterance, iter_manifest_lines
from asr_s2s.text import normalize

if TYPE_CHECKING:
    from asr_s2s.transcribe import Transcriber

log = logging.getLogger(__name__)

REPORT_FILES = {
    "per_utterance": "per_utterance.jsonl",
    "alignment": "alignment.txt",
    "summary": "summary.json",
    "predictions": "predictions.jsonl",
}

# Texts of a padded batch: features ``(batch, time, n_mels)`` and lengths ``(batch,)`` on the device.
DecodeFn = Callable[[torch.Tensor, torch.Tensor], list[str]]


@dataclass
class Score:
    """Corpus totals: error rates are total errors over total reference words (or characters)."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    utterances: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score(references: Sequence[str], hypotheses: Sequence[str], text: TextConfig | None = None) -> Score:
    """Normalize both sides with :func:`asr_s2s.text.normalize` (as ``text``, a model's ``text``
    config, says; defaults otherwise) and score them with jiwer.

    Words of hypotheses whose reference is empty count as insertions (in the WER only: such
    utterances are left out of the CER).
    """
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    refs = [normalize(r, text) for r in references]
    hyps = [normalize(h, text) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        return Score(0.0, 0.0, 0, 0, sum(len(h.split()) for h in hyps), 0, 0, len(refs))
    refs_k = [refs[i] for i in keep]
    hyps_k = [hyps[i] for i in keep]
    words = jiwer.process_words(refs_k, hyps_k)
    chars = jiwer.process_characters(refs_k, hyps_k)
    extra = sum(len(hyps[i].split()) for i in range(len(refs)) if not refs[i])
    ref_words = words.hits + words.substitutions + words.deletions
    errors = words.substitutions + words.deletions + words.insertions + extra
    return Score(
        wer=errors / ref_words,
        cer=chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions + extra,
        hits=words.hits,
        ref_words=ref_words,
        utterances=len(refs),
    )


@dataclass
class Decoded:
    """What :func:`decode_dataset` produced: one hypothesis per utterance of the dataset (in its
    order; empty for a failed one), the reasons of the failures by index, and the seconds of audio
    decoded and spent decoding."""

    hypotheses: list[str]
    errors: dict[int, str]
    audio_seconds: float
    decode_seconds: float


def batches_by_count(durations: Sequence[float], size: int) -> list[list[int]]:
    """Indices in batches of ``size``, longest utterance first (similar lengths pad little)."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    return [order[start : start + size] for start in range(0, len(order), size)]


def decode_dataset(
    dataset: AsrDataset,
    batches: Iterable[list[int]],
    decode_fn: DecodeFn,
    device: torch.device | str,
    num_workers: int = 0,
    on_batch: Callable[[Batch], None] | None = None,
    progress: bool = False,
) -> Decoded:
    """Decode the utterances of ``dataset`` in ``batches`` (lists of indices) with ``decode_fn``.

    Features come from the dataset through a DataLoader (``num_workers`` processes). ``on_batch``
    sees each padded batch on ``device`` first (the trainer adds the teacher-forced dev loss). An
    utterance whose audio cannot be read gets an empty hypothesis and its error in
    :attr:`Decoded.errors`; the others go on.
    """
    batches = list(batches)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        # A private generator: a dev pass must not draw on the global RNG (exact resume).
        generator=torch.Generator().manual_seed(0),
    )
    hyps = [""] * len(dataset)
    errors: dict[int, str] = {}
    audio_seconds = 0.0
    started = time.monotonic()
    with tqdm(total=len(dataset), unit="utt", desc="evaluate", disable=not progress or None) as bar:
        for indices, batch in zip(batches, loader):  # the loader keeps the batches' order
            good = set(batch.indices)
            failed = [i for i in indices if i not in good]
            errors.update((i, error) for i, (_, error) in zip(failed, batch.errors))
            if len(batch):
                batch = batch.to(device)
                if on_batch is not None:
                    on_batch(batch)
                for i, text in zip(batch.indices, decode_fn(batch.feats, batch.feat_lens)):
                    hyps[i] = text
                audio_seconds += sum(dataset.utterances[i].duration for i in batch.indices)
            bar.update(len(indices))
    return Decoded(hyps, errors, audio_seconds, time.monotonic() - started)


@dataclass
class Report:
    """The outcome of :func:`evaluate_manifest`: corpus scores, failures and the files written."""

    score: Score
    failed_utterances: int
    manifest: Path
    out_dir: Path
    beam_size: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def wer(self) -> float:
        return self.score.wer

    @property
    def cer(self) -> float:
        return self.score.cer

    def table(self) -> str:
        """A small plain-text summary for the terminal."""
        s = self.score
        failed = f" ({self.failed_utterances} failed, scored as empty)" if self.failed_utterances else ""
        rows = [
            ("WER", f"{100 * s.wer:.2f}%"),
            ("CER", f"{100 * s.cer:.2f}%"),
            ("S / D / I", f"{s.substitutions} / {s.deletions} / {s.insertions}"),
            ("words", str(s.ref_words)),
            ("utterances", f"{s.utterances}{failed}"),
            ("beam size", str(self.beam_size)),
            *((name, str(path)) for name, path in self.files.items()),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _utterance_counts(ref: str, hyp: str, chunks: Sequence[Any] | None) -> dict[str, Any]:
    # Per-utterance S/D/I from jiwer's alignment of this sentence (None: empty reference).
    if chunks is None:
        inserted = len(hyp.split())
        return {"wer": None if inserted else 0.0, "substitutions": 0, "deletions": 0, "insertions": inserted}
    counts = {"substitute": 0, "delete": 0, "insert": 0}
    for chunk in chunks:
        if chunk.type in ("substitute", "delete"):
            counts[chunk.type] += chunk.ref_end_idx - chunk.ref_start_idx
        elif chunk.type == "insert":
            counts["insert"] += chunk.hyp_end_idx - chunk.hyp_start_idx
    errors = sum(counts.values())
    return {
        "wer": errors / len(ref.split()),
        "substitutions": counts["substitute"],
        "deletions": counts["delete"],
        "insertions": counts["insert"],
    }


def _read(manifest: Path) -> tuple[list[Utterance], list[dict[str, Any]]]:
    # One pass over the file: the utterances, and each one's record with every field (for NeMo's
    # predictions file).
    utts, records = [], []
    for _, line, utt in iter_manifest_lines(manifest):
        utts.append(utt)
        records.append(json.loads(line))
    if not utts:
        raise ManifestError(manifest, "manifest has no utterances")
    return utts, records


def _alignment_block(name: str, ref: str, hyp: str, chunks: Sequence[Any]) -> str:
    """REF/HYP lines of one utterance from jiwer's alignment chunks, with S, D or I under each error
    (words right-aligned in columns, as jiwer's ``visualize_alignment`` prints them)."""
    ref_words, hyp_words = ref.split(), hyp.split()
    columns: list[tuple[str, str, str]] = []
    for chunk in chunks:
        refs = ref_words[chunk.ref_start_idx : chunk.ref_end_idx]
        hyps = hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "delete":
            columns += [(r, "*" * len(r), "D") for r in refs]
        elif chunk.type == "insert":
            columns += [("*" * len(h), h, "I") for h in hyps]
        else:
            mark = "S" if chunk.type == "substitute" else ""
            columns += [(r, h, mark) for r, h in zip(refs, hyps)]
    widths = [max(len(r), len(h), 1) for r, h, _ in columns]
    lines = [
        "REF: " + " ".join(f"{r:>{w}}" for (r, _, _), w in zip(columns, widths)),
        "HYP: " + " ".join(f"{h:>{w}}" for (_, h, _), w in zip(columns, widths)),
        "     " + " ".join(f"{m:>{w}}" for (_, _, m), w in zip(columns, widths)),
    ]
    return f"=== {name} ===\n\n" + "\n".join(line.rstrip() for line in lines) + "\n\n"


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise AsrError(f"{path}: cannot write ({err.strerror or err})") from None


def evaluate_manifest(
    transcriber: Transcriber,
    manifest: str | Path,
    out_dir: str | Path,
    beam_size: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> Report:
    """Decode every utterance of a manifest and score the hypotheses against its texts.

    Utterances are decoded whole (not split at silences), ``batch_size`` at a time sorted by
    duration, their features computed by ``num_workers`` DataLoader processes (see
    :func:`decode_dataset`). Both sides are normalized with :func:`asr_s2s.text.normalize`; WER and
    CER are corpus-level (total errors over total reference words or characters, not a mean of
    per-utterance rates).

    A manifest that cannot be read raises :class:`ManifestError`. An utterance whose audio cannot
    be read is logged (id, file and reason), counted in ``failed_utterances`` and scored as an
    empty hypothesis, i.e. all its words are deletions: leaving it out would flatter the score.

    Writes to ``out_dir``: ``per_utterance.jsonl`` (id, reference, hypothesis, WER and S/D/I per
    utterance), ``alignment.txt`` (word alignments, headed by utterance id), ``summary.json`` and
    ``predictions.jsonl`` (the manifest's records with ``pred_text`` added, as NeMo writes them).
    """
    manifest = Path(manifest)
    out_dir = Path(out_dir)
    if num_workers < 0:
        raise ConfigError(f"the number of workers must be at least 0, got {num_workers}")
    utts, records = _read(manifest)
    beam = transcriber.decode_config(beam_size).beam_size
    size = transcriber.batch_size(batch_size)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AsrError(f"{out_dir}: cannot create the report folder ({err.strerror or err})") from None

    # Features on the CPU, as training computes them; the decoding runs on the model's device.
    dataset = AsrDataset(utts, transcriber.vocab, LogMel(transcriber.config.features))
    decoded = decode_dataset(
        dataset,
        batches_by_count([u.duration for u in utts], size),
        partial(transcriber.decode_features, beam_size=beam),
        transcriber.device,
        num_workers=num_workers,
        progress=progress,
    )
    errors = decoded.errors
    for i, error in sorted(errors.items()):
        log.error("utterance %s: %s (scored as an empty hypothesis)", utts[i].id, error)
    hyps = decoded.hypotheses

    text = transcriber.vocab.text  # the model's own normalization, stored with it
    refs_n = [normalize(u.text, text) for u in utts]
    hyps_n = [normalize(h, text) for h in hyps]
    result = score(refs_n, hyps_n, text)
    scored = [i for i, r in enumerate(refs_n) if r]
    chunks: dict[int, Sequence[Any]] = {}
    if scored:
        words = jiwer.process_words([refs_n[i] for i in scored], [hyps_n[i] for i in scored])
        chunks = dict(zip(scored, words.alignments))
    files = {name: out_dir / filename for name, filename in REPORT_FILES.items()}

    lines = []
    for i, utt in enumerate(utts):
        entry: dict[str, Any] = {
            "id": utt.id,
            "audio_filepath": str(utt.audio_filepath),
            "reference": refs_n[i],
            "hypothesis": hyps_n[i],
            **_utterance_counts(refs_n[i], hyps_n[i], chunks.get(i)),
            "ref_words": len(refs_n[i].split()),
        }
        if i in errors:
            entry["error"] = errors[i]
        lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
    _write(files["per_utterance"], "".join(lines))
    empty_refs = len(utts) - len(scored)
    note = f"({empty_refs} utterances with empty references are not shown)\n\n" if empty_refs else ""
    blocks = "".join(_alignment_block(utts[i].id, refs_n[i], hyps_n[i], chunks[i]) for i in scored)
    totals = (
        f"=== SUMMARY ===\nutterances: {result.utterances}\n"
        f"substitutions={result.substitutions} deletions={result.deletions} "
        f"insertions={result.insertions} hits={result.hits}\n\nwer={100 * result.wer:.2f}%\n"
    )
    _write(files["alignment"], note + blocks + totals)
    _write(
        files["predictions"],
        "".join(
            json.dumps({**rec, "pred_text": hyp}, ensure_ascii=False) + "\n"
            for rec, hyp in zip(records, hyps)
        ),
    )
    report = Report(result, len(errors), manifest, out_dir, beam, files)
    summary = {
        "manifest": str(manifest),
        "model": transcriber.model_path,
        **result.as_dict(),
        "failed_utterances": len(errors),
        "beam_size": beam,
        "length_penalty": transcriber.config.decode.length_penalty,
        "ctc_weight": transcriber.config.decode.ctc_weight,
        "lm": transcriber.lm_path,
        "lm_weight": transcriber.config.decode.lm_weight,
        "oov_penalty": transcriber.config.decode.oov_penalty,
        "length_bonus": transcriber.config.decode.length_bonus,
        "audio_seconds": round(decoded.audio_seconds, 3),
        "decode_seconds": round(decoded.decode_seconds, 3),
        "files": {name: str(path) for name, path in files.items()},
    }
    _write(files["summary"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "%d utterances (%.1f s of audio) decoded in %.1f s; WER %.2f%%",
        len(utts),
        decoded.audio_seconds,
        decoded.decode_seconds,
        100 * result.wer,
    )
    return report
