"""Import a Kaldi data directory (``wav.scp``, ``text``, optional ``utt2spk`` and ``segments``) as a manifest.

Each Kaldi table is a text file of ``KEY VALUE`` lines (the key ends at the first space or tab).
``wav.scp`` maps a recording id to an audio file; with ``segments`` (``UTT REC START END``, times in
seconds, ``END`` of -1 meaning the end of the recording) the utterances are parts of recordings and
become manifest ``offset`` and ``duration``; without it every recording is one utterance.
Durations come from the audio headers (:func:`soundfile.info`), not from decoding the audio.

Problems are collected, not raised: a malformed line (``file:line: reason``), a ``wav.scp`` entry
that is a command (``... |``) or an archive offset, audio that is missing or unreadable, and ids
without a transcript (or transcripts without audio) are each skipped and counted in
:class:`KaldiImport`. Only a missing ``wav.scp`` or ``text``, or a directory that yields no
utterance at all, raise :class:`asr_s2s.errors.ManifestError`.

lhotse's ``load_kaldi_data_dir`` (lhotse.kaldi) is the reference for the format; this module keeps
the project's error contract (one line per problem, no traceback) without the dependency.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from asr_s2s.errors import ManifestError
from asr_s2s.manifest import Utterance, write_manifest

# Kinds of problem, in the order a summary lists them.
BAD_LINE = "bad line"
COMMAND = "command in wav.scp"
MISSING_AUDIO = "missing audio"
UNREADABLE_AUDIO = "unreadable audio"
NO_TEXT = "no transcript in text"
NO_AUDIO = "transcript without audio"
PROBLEM_KINDS = (BAD_LINE, COMMAND, MISSING_AUDIO, UNREADABLE_AUDIO, NO_TEXT, NO_AUDIO)

# A segment may end this far (seconds) past its recording's header duration: Kaldi's own
# tolerance for rounded segment times.
END_TOLERANCE = 0.05


@dataclass
class KaldiImport:
    """The utterances of a data directory and what was skipped: ``problems`` holds one message per
    skipped line or utterance, ``counts`` their number per kind (see ``PROBLEM_KINDS``)."""

    utterances: list[Utterance] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # Ids whose line was malformed: their other lines are not reported again.
    rejected: set[str] = field(default_factory=set)

    def note(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.problems.append(message)

    @property
    def hours(self) -> float:
        return sum(u.duration for u in self.utterances) / 3600

    def summary(self) -> str:
        """One line: utterances, hours, and the skipped ones by kind."""
        text = f"{len(self.utterances)} utterances ({self.hours:.2f} h)"
        skipped = [f"{self.counts[k]} {k}" for k in PROBLEM_KINDS if self.counts[k]]
        return text + (f"; skipped: {', '.join(skipped)}" if skipped else "")


def read_table(path: Path, result: KaldiImport) -> dict[str, tuple[str, int]]:
    """``KEY VALUE`` lines of a Kaldi table -> {key: (value, line number)}.

    Blank lines are skipped; a line without a value, a repeated key or bytes that are not UTF-8
    are noted in ``result`` as bad lines (the first occurrence of a key is kept).
    """
    table: dict[str, tuple[str, int]] = {}
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(path, f"cannot read ({err.strerror or err})") from None
    for lineno, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            result.note(BAD_LINE, f"{where}: not valid UTF-8 (byte {err.start})")
            continue
        if not line:
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            result.note(BAD_LINE, f"{where}: '{parts[0]}' has no value")
            result.rejected.add(parts[0])
            continue
        key, value = parts
        if key in table:
            result.note(BAD_LINE, f"{where}: duplicate id '{key}' (first on line {table[key][1]})")
            continue
        table[key] = (value.strip(), lineno)
    return table


@dataclass(frozen=True)
class _Segment:
    recording: str
    start: float
    end: float  # -1: to the end of the recording
    line: int


def _read_segments(path: Path, result: KaldiImport) -> dict[str, _Segment]:
    segments: dict[str, _Segment] = {}
    for utt, (value, lineno) in read_table(path, result).items():
        fields = value.split()
        where = f"{path}:{lineno}"
        result.rejected.add(utt)  # until the line proves valid
        if len(fields) != 3:
            result.note(
                BAD_LINE, f"{where}: expected 'UTT RECORDING START END', got {len(fields) + 1} fields"
            )
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            result.note(BAD_LINE, f"{where}: START and END must be numbers, got '{fields[1]}' '{fields[2]}'")
            continue
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            result.note(BAD_LINE, f"{where}: START must be a finite number >= 0, got {fields[1]}")
            continue
        if end != -1 and end <= start:
            result.note(BAD_LINE, f"{where}: END ({fields[2]}) must be after START ({fields[1]}), or -1")
            continue
        result.rejected.discard(utt)
        segments[utt] = _Segment(fields[0], start, end, lineno)
    return segments


def _audio_path(value: str, audio_root: Path, where: str, result: KaldiImport) -> Path | None:
    """The file a ``wav.scp`` value names, or None (noted) when it is a command or an archive."""
    if value.endswith("|"):
        result.note(
            COMMAND,
            f"{where}: the entry is a command ('{value}'), not an audio file; run the command to "
            "write the audio to files and list those in wav.scp",
        )
        return None
    if value.startswith("-") or value.endswith("-"):
        result.note(COMMAND, f"{where}: '{value}' reads standard input; list an audio file instead")
        return None
    path = Path(value)
    return path if path.is_absolute() else audio_root / path


def read_kaldi_dir(data_dir: str | Path, audio_root: str | Path | None = None) -> KaldiImport:
    """Read a Kaldi data directory into utterances (in ``wav.scp`` or ``segments`` order).

    Relative audio paths resolve against ``audio_root`` (default: the current directory, as Kaldi
    resolves them). Texts are kept as written; normalization happens at training and scoring.
    """
    data_dir = Path(data_dir)
    root = Path(audio_root) if audio_root is not None else Path.cwd()
    if not data_dir.is_dir():
        raise ManifestError(
            data_dir, "no such data directory" if not data_dir.exists() else "not a directory"
        )
    for required in ("wav.scp", "text"):
        if not (data_dir / required).is_file():
            raise ManifestError(data_dir / required, "missing: a Kaldi data directory needs wav.scp and text")
    result = KaldiImport()
    wav_scp = data_dir / "wav.scp"
    recordings = read_table(wav_scp, result)
    texts = read_table(data_dir / "text", result)
    speakers = read_table(data_dir / "utt2spk", result) if (data_dir / "utt2spk").is_file() else {}
    seg_path = data_dir / "segments"
    segments = _read_segments(seg_path, result) if seg_path.is_file() else None

    # Header durations of the recordings, read once each (None: skipped, already noted).
    durations: dict[str, tuple[Path, float] | None] = {}

    def recording(rec: str, where: str) -> tuple[Path, float] | None:
        if rec in durations:
            return durations[rec]
        durations[rec] = None
        if rec not in recordings:
            result.note(NO_AUDIO, f"{where}: recording '{rec}' is not in {wav_scp}")
            return None
        value, lineno = recordings[rec]
        path = _audio_path(value, root, f"{wav_scp}:{lineno}", result)
        if path is None:
            return None
        if not path.is_file():
            result.note(MISSING_AUDIO, f"{wav_scp}:{lineno}: {path}: no such audio file")
            return None
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            result.note(UNREADABLE_AUDIO, f"{wav_scp}:{lineno}: {path}: cannot read the audio header ({err})")
            return None
        if info.samplerate <= 0 or info.frames <= 0:
            result.note(UNREADABLE_AUDIO, f"{wav_scp}:{lineno}: {path}: no audio samples")
            return None
        durations[rec] = (path, info.frames / info.samplerate)
        return durations[rec]

    if segments is None:
        units = {rec: (rec, 0.0, -1.0, f"{wav_scp}:{line}") for rec, (_, line) in recordings.items()}
    else:
        units = {
            utt: (seg.recording, seg.start, seg.end, f"{seg_path}:{seg.line}")
            for utt, seg in segments.items()
        }
    for utt, (rec, start, end, where) in units.items():
        if utt not in texts:
            result.note(NO_TEXT, f"{where}: '{utt}' has no line in {data_dir / 'text'}")
            continue
        found = recording(rec, where)
        if found is None:
            continue
        path, total = found
        stop = total if end == -1 else end
        if end != -1 and end > total + END_TOLERANCE:
            result.note(
                BAD_LINE, f"{where}: segment ends at {end:g} s, after the recording's end ({total:.2f} s)"
            )
            continue
        if start >= total:
            result.note(
                BAD_LINE, f"{where}: segment starts at {start:g} s, after the recording's end ({total:.2f} s)"
            )
            continue
        stop = min(stop, total)
        speaker = speakers.get(utt)
        result.utterances.append(
            Utterance(
                id=utt,
                audio_filepath=Path(os.path.abspath(path)),
                duration=stop - start,
                text=texts[utt][0],
                offset=start,
                speaker=speaker[0] if speaker else None,
            )
        )
    for utt, (_, lineno) in texts.items():
        if utt not in units and utt not in result.rejected:
            source = "segments" if segments is not None else "wav.scp"
            result.note(NO_AUDIO, f"{data_dir / 'text'}:{lineno}: '{utt}' is not in {source}")
    return result


def import_kaldi(data_dir: str | Path, out: str | Path, audio_root: str | Path | None = None) -> KaldiImport:
    """Read ``data_dir`` (see :func:`read_kaldi_dir`) and write its utterances as a JSONL manifest.

    Audio paths are written relative to the manifest's folder when they lie under it, absolute
    otherwise. Raises :class:`ManifestError` when no utterance could be imported.
    """
    result = read_kaldi_dir(data_dir, audio_root)
    if not result.utterances:
        first = f"; the first: {result.problems[0]}" if result.problems else ""
        raise ManifestError(data_dir, f"no utterance could be imported ({result.summary()}){first}")
    write_manifest(out, result.utterances, relative=True)
    return result
