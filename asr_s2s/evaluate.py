"""Corpus-level WER/CER scoring with jiwer, and decoding a manifest into an evaluation report."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jiwer
from tqdm import tqdm

from asr_s2s.audio import load_audio
from asr_s2s.errors import AsrError, ManifestError
from asr_s2s.manifest import read_manifest
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


def score(references: Sequence[str], hypotheses: Sequence[str]) -> Score:
    """Normalize both sides with :func:`asr_s2s.text.normalize` and score them with jiwer.

    Words of hypotheses whose reference is empty count as insertions (in the WER only: such
    utterances are left out of the CER).
    """
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in number")
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
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


def _raw_records(path: Path) -> list[dict[str, Any]]:
    # The manifest's own records (every field kept), in the order iter_manifest yields them.
    with open(path, "rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
) -> Report:
    """Decode every utterance of a manifest and score the hypotheses against its texts.

    Utterances are decoded whole (not split at silences), in batches sorted by duration. Both
    sides are normalized with :func:`asr_s2s.text.normalize`; WER and CER are corpus-level (total
    errors over total reference words or characters, not a mean of per-utterance rates).

    A manifest that cannot be read raises :class:`ManifestError`. An utterance whose audio cannot
    be read is logged (id, file and reason), counted in ``failed_utterances`` and scored as an
    empty hypothesis, i.e. all its words are deletions: leaving it out would flatter the score.

    Writes to ``out_dir``: ``per_utterance.jsonl`` (id, reference, hypothesis, WER and S/D/I per
    utterance), ``alignment.txt`` (jiwer's word alignments, headed by utterance id),
    ``summary.json`` and ``predictions.jsonl`` (the manifest's records with ``pred_text`` added,
    as NeMo writes them).
    """
    manifest = Path(manifest)
    out_dir = Path(out_dir)
    utts = read_manifest(manifest)
    records = _raw_records(manifest)
    if len(records) != len(utts):
        raise ManifestError(manifest, "changed while it was being read")
    beam = transcriber.decode_config(beam_size).beam_size
    size = transcriber.batch_size(batch_size)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AsrError(f"{out_dir}: cannot create the report folder ({err.strerror or err})") from None

    hyps = [""] * len(utts)
    errors: dict[int, str] = {}
    audio_seconds = 0.0
    started = time.monotonic()
    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    with tqdm(total=len(utts), unit="utt", desc="evaluate", disable=not progress or None) as bar:
        for start in range(0, len(order), size):
            batch, waves = [], []
            for i in order[start : start + size]:
                utt = utts[i]
                try:
                    wave, _ = load_audio(
                        utt.audio_filepath,
                        transcriber.sample_rate,
                        utt.offset,
                        utt.duration if utt.offset else None,
                    )
                except AsrError as err:
                    log.error("utterance %s: %s (scored as an empty hypothesis)", utt.id, err)
                    errors[i] = str(err)
                    continue
                batch.append(i)
                waves.append(wave)
                audio_seconds += len(wave) / transcriber.sample_rate
            for i, text in zip(batch, transcriber.decode(waves, beam, size)):
                hyps[i] = text
            bar.update(len(order[start : start + size]))
    decode_seconds = time.monotonic() - started

    refs_n = [normalize(u.text) for u in utts]
    hyps_n = [normalize(h) for h in hyps]
    result = score(refs_n, hyps_n)
    scored = [i for i, r in enumerate(refs_n) if r]
    alignment = ""
    chunks: dict[int, Sequence[Any]] = {}
    if scored:
        words = jiwer.process_words([refs_n[i] for i in scored], [hyps_n[i] for i in scored])
        chunks = dict(zip(scored, words.alignments))
        # jiwer numbers the sentences; name them by utterance id instead.
        alignment = re.sub(
            r"^=== SENTENCE (\d+) ===$",
            lambda m: f"=== {utts[scored[int(m[1]) - 1]].id} ===",
            jiwer.visualize_alignment(words, show_measures=True, skip_correct=False),
            flags=re.MULTILINE,
        )
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
    _write(files["alignment"], note + alignment)
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
        "audio_seconds": round(audio_seconds, 3),
        "decode_seconds": round(decode_seconds, 3),
        "files": {name: str(path) for name, path in files.items()},
    }
    _write(files["summary"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "%d utterances (%.1f s of audio) decoded in %.1f s; WER %.2f%%",
        len(utts),
        audio_seconds,
        decode_seconds,
        100 * result.wer,
    )
    return report
