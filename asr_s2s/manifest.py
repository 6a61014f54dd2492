"""JSON Lines manifests, compatible with NeMo's ASR manifests.

Each line is an object with ``audio_filepath`` (absolute, or relative to the manifest's folder),
``duration`` (seconds) and ``text``; optionally ``offset`` (seconds), ``id`` and ``speaker``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_s2s.errors import ManifestError
from asr_s2s.fileio import atomic_write

# Longer than any recording: a larger 'duration' is a broken line (and would overflow frame counts).
MAX_DURATION = 1e6


@dataclass(frozen=True)
class Utterance:
    """One manifest entry with its audio path resolved."""

    id: str
    audio_filepath: Path
    duration: float
    text: str
    offset: float = 0.0
    speaker: str | None = None

    def to_json(self, base_dir: Path | None = None) -> dict[str, Any]:
        """The manifest record; paths are written relative to ``base_dir`` when they lie under it."""
        # Readers resolve a relative path against the manifest's folder, not the current directory.
        path = Path(os.path.abspath(self.audio_filepath))
        if base_dir is not None:
            for base in (Path(os.path.abspath(base_dir)), base_dir.resolve()):
                if path.is_relative_to(base):
                    path = path.relative_to(base)
                    break
        record: dict[str, Any] = {
            "id": self.id,
            "audio_filepath": str(path),
            "duration": round(self.duration, 4),
            "text": self.text,
        }
        if self.offset:
            record["offset"] = round(self.offset, 4)
        if self.speaker is not None:
            record["speaker"] = self.speaker
        return record


def parse_line(
    line: str, base_dir: Path, path: str | Path = "<manifest>", lineno: int | None = None
) -> Utterance:
    """Validate one manifest line and return its :class:`Utterance`; raise :class:`ManifestError`."""

    def fail(reason: str) -> ManifestError:
        return ManifestError(path, reason, lineno)

    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise fail(f"invalid JSON ({err.msg} at column {err.colno})") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise fail(f"invalid JSON ({err})") from None
    except RecursionError:
        raise fail("invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise fail("expected a JSON object")
    for key in ("audio_filepath", "duration", "text"):
        if key not in record:
            raise fail(f"missing field '{key}'")
    audio = record["audio_filepath"]
    if not isinstance(audio, str) or not audio.strip():
        raise fail("'audio_filepath' must be a non-empty string")
    text = record["text"]
    if not isinstance(text, str):
        raise fail("'text' must be a string")
    duration = _number(record["duration"], "duration", fail)
    if duration <= 0:
        raise fail(f"'duration' must be positive, got {duration}")
    if duration > MAX_DURATION:
        raise fail(f"'duration' of {duration:g} seconds is not plausible (the limit is {MAX_DURATION:g})")
    offset = _number(record.get("offset", 0.0), "offset", fail)
    if offset < 0:
        raise fail(f"'offset' must not be negative, got {offset}")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = base_dir / audio_path
    utt_id = record.get("id")
    if utt_id is None:
        utt_id = audio_path.stem if not offset else f"{audio_path.stem}-{offset:.2f}"
    if not isinstance(utt_id, str | int) or str(utt_id) == "":
        raise fail("'id' must be a non-empty string")
    speaker = record.get("speaker")
    for key in ("audio_filepath", "text", "id", "speaker"):
        if isinstance(record.get(key), str) and not _encodable(record[key]):
            # A JSON escape of half a surrogate pair ("\ud800") decodes, but no file can hold it.
            raise fail(f"'{key}' holds an unpaired surrogate escape (not valid Unicode)")
    return Utterance(
        id=str(utt_id),
        audio_filepath=audio_path,
        duration=duration,
        text=text,
        offset=offset,
        speaker=None if speaker is None else str(speaker),
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(value: Any, name: str, fail: Callable[[str], ManifestError]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"'{name}' must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise fail(f"'{name}' must be finite, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(number):
        raise fail(f"'{name}' must be finite, got {value!r}")
    return number


def iter_manifest(
    path: str | Path,
    on_error: Callable[[ManifestError], None] | None = None,
) -> Iterator[Utterance]:
    """Stream the utterances of a manifest, one line at a time.

    A malformed line raises :class:`ManifestError` naming ``file:line``, unless ``on_error`` is
    given: then it is called with the error and the line is skipped. Blank lines are ignored;
    duplicate ids are errors.
    """
    for _, utt in iter_manifest_offsets(path, on_error):
        yield utt


def iter_manifest_offsets(
    path: str | Path,
    on_error: Callable[[ManifestError], None] | None = None,
) -> Iterator[tuple[int, Utterance]]:
    """As :func:`iter_manifest`, with the byte offset of each utterance's line in the file."""
    for start, _, utt in iter_manifest_lines(path, on_error):
        yield start, utt


def iter_manifest_lines(
    path: str | Path,
    on_error: Callable[[ManifestError], None] | None = None,
) -> Iterator[tuple[int, str, Utterance]]:
    """As :func:`iter_manifest`, with each utterance's byte offset and line (to keep every field)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, "no such manifest file" if not path.exists() else "not a file")
    base_dir = path.resolve().parent
    seen: set[str] = set()
    offset = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            try:
                if lineno == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ManifestError(path, f"not valid UTF-8 (byte {err.start})", lineno) from None
                if not line.strip():
                    continue
                utt = parse_line(line, base_dir, path, lineno)
                if utt.id in seen:
                    raise ManifestError(path, f"duplicate id '{utt.id}'", lineno)
                seen.add(utt.id)
            except ManifestError as err:
                if on_error is None:
                    raise
                on_error(err)
                continue
            yield start, line, utt


def read_manifest(
    path: str | Path, on_error: Callable[[ManifestError], None] | None = None
) -> list[Utterance]:
    """All utterances of a manifest; an empty manifest is an error."""
    utts = list(iter_manifest(path, on_error))
    if not utts:
        raise ManifestError(path, "manifest has no utterances")
    return utts


def write_manifest(path: str | Path, utterances: Iterable[Utterance], relative: bool = False) -> int:
    """Write a manifest atomically; returns the number of lines.

    With ``relative`` the audio paths are stored relative to the manifest's folder when possible.
    """
    path = Path(path)
    base_dir = path.parent if relative else None
    count = 0
    try:
        with atomic_write(path) as handle:
            for utt in utterances:
                handle.write(json.dumps(utt.to_json(base_dir), ensure_ascii=False) + "\n")
                count += 1
    except OSError as err:
        raise ManifestError(path, f"cannot write ({err.strerror or err})") from None
    return count
