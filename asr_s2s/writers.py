"""Transcripts of files and folders: finding audio files, output formats (txt, json, jsonl, srt,
vtt, as whisper writes them) and writing each result as it completes."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import soundfile as sf

from asr_s2s.errors import AsrError
from asr_s2s.transcribe import Transcriber, Transcription

log = logging.getLogger(__name__)

FORMATS = ("txt", "json", "jsonl", "srt", "vtt")
# Suffixes of the formats that soundfile (libsndfile) decodes.
_EXTENSIONS = {
    "WAV": (".wav",),
    "WAVEX": (".wav",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",),
    "AIFF": (".aif", ".aiff"),
    "AU": (".au", ".snd"),
    "CAF": (".caf",),
    "W64": (".w64",),
    "RF64": (".rf64",),
}


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``decimal_marker='.'``, ``HH:MM:SS.mmm`` (WebVTT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def format_srt(result: Transcription) -> str:
    """SubRip subtitles: one numbered cue per segment."""
    cues = [
        f"{i}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{s.text}\n"
        for i, s in enumerate(result.segments, start=1)
    ]
    return "\n".join(cues)


def format_vtt(result: Transcription) -> str:
    """WebVTT subtitles: the header, then one cue per segment."""
    cues = [
        f"{format_timestamp(s.start, '.')} --> {format_timestamp(s.end, '.')}\n{s.text}\n"
        for s in result.segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def format_result(result: Transcription, output_format: str) -> str:
    """The text of one result in ``output_format`` (one of :data:`FORMATS`), ending in a newline."""
    if output_format == "txt":
        return result.text + "\n"
    if output_format == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n"
    if output_format == "jsonl":
        return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"
    if output_format == "srt":
        return format_srt(result)
    if output_format == "vtt":
        return format_vtt(result)
    raise ValueError(f"unknown output format {output_format!r} (expected one of {', '.join(FORMATS)})")


def audio_extensions() -> set[str]:
    """File suffixes of the audio formats this soundfile build decodes."""
    available = sf.available_formats()
    return {ext for fmt, exts in _EXTENSIONS.items() if fmt in available for ext in exts}


def find_audio(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """``(file, name)`` pairs: files as given, folders searched recursively for audio files.

    ``name`` is where the file's output goes, relative to the output folder: the path inside the
    searched folder, or the file name for files given directly. Paths that do not exist are kept
    (they fail later with a clear error); hidden files and repeats are skipped.
    """
    extensions = audio_extensions()
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(
                p
                for p in item.rglob("*")
                if p.suffix.lower() in extensions
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not files:
                log.warning("%s: no audio files (%s) in this folder", item, " ".join(sorted(extensions)))
            pairs = [(p, p.relative_to(item)) for p in files]
        else:
            pairs = [(item, Path(item.name))]
        for path, name in pairs:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append((path, name))
    return found


def _output_names(files: list[Path], names: list[Path], output_format: str) -> list[Path]:
    # x.wav -> x.srt; where two inputs would collide (x.wav and x.flac), keep the audio suffix too.
    plain = [n.with_suffix(f".{output_format}") for n in names]
    counts = Counter(plain)
    chosen = [p if counts[p] == 1 else n.with_name(f"{n.name}.{output_format}") for p, n in zip(plain, names)]
    owners: dict[Path, Path] = {}
    for path, name in zip(files, chosen):
        if name in owners:
            raise AsrError(
                f"{owners[name]} and {path} would both be written to {name}; transcribe them separately"
            )
        owners[name] = path
    return chosen


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:  # the file, or the folder above it that could not be made
        raise AsrError(f"{err.filename or path}: cannot write ({err.strerror or err})") from None


def transcribe_files(
    transcriber: Transcriber,
    inputs: Sequence[str | Path],
    output_format: str = "txt",
    output_dir: str | Path | None = None,
    beam_size: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[Transcription]:
    """Transcribe files and folders (searched recursively), writing each result as it completes.

    With ``output_dir``, each input ``x.wav`` gets ``x.<format>`` there (folder structure kept for
    searched folders), except ``jsonl``, which writes one ``transcripts.jsonl`` for all. Without it,
    results go to stdout: the text alone for one input, ``path<TAB>text`` lines for several
    (``txt``); one JSON object per line for several inputs (``json``, ``jsonl``); subtitles under a
    ``==> path <==`` header each for several inputs (``srt``, ``vtt``).

    A single input that fails raises its :class:`AudioError`. With several, a failure is logged
    (file and reason) and the others go on; an :class:`AsrError` listing the failures is raised at
    the end. Returns the transcriptions of the inputs that succeeded, in input order.
    """
    if output_format not in FORMATS:
        raise ValueError(f"unknown output format {output_format!r} (expected one of {', '.join(FORMATS)})")
    found = find_audio(inputs)
    if not found:
        raise AsrError(f"no audio files found in {', '.join(str(p) for p in inputs)}")
    files = [path for path, _ in found]
    out_dir = None if output_dir is None else Path(output_dir)
    names = [name for _, name in found]
    if out_dir is not None and output_format != "jsonl":
        names = _output_names(files, names, output_format)
    single = len(files) == 1
    combined: IO[str] | None = None
    if out_dir is not None and output_format == "jsonl":
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            combined = open(out_dir / "transcripts.jsonl", "w", encoding="utf-8")
        except OSError as err:
            raise AsrError(f"{out_dir}: cannot write transcripts.jsonl ({err.strerror or err})") from None
    results: list[Transcription] = []
    failures: list[AsrError] = []
    started = time.monotonic()
    try:
        outcomes = transcriber.iter_transcriptions(
            files, beam_size=beam_size, batch_size=batch_size, progress=progress
        )
        for path, name, result in zip(files, names, outcomes):
            if isinstance(result, AsrError):
                if single:
                    raise result
                log.error("skipping %s", result)
                failures.append(result)
                continue
            results.append(result)
            if combined is not None:
                combined.write(format_result(result, "jsonl"))
                combined.flush()
            elif out_dir is not None:
                _write_text(out_dir / name, format_result(result, output_format))
                log.debug("wrote %s", out_dir / name)
            else:
                _print_result(result, path, output_format, single)
    finally:
        if combined is not None:
            combined.close()
    audio_s = sum(r.duration for r in results)
    log.info(
        "transcribed %d file(s), %.1f s of audio, in %.1f s",
        len(results),
        audio_s,
        time.monotonic() - started,
    )
    if failures:
        listed = "; ".join(str(f) for f in failures[:5]) + ("; ..." if len(failures) > 5 else "")
        raise AsrError(f"{len(failures)} of {len(files)} files failed: {listed}")
    return results


def _print_result(result: Transcription, path: Path, output_format: str, single: bool) -> None:
    if output_format == "txt":
        text = result.text if single else f"{path}\t{result.text}"
    elif output_format in ("json", "jsonl"):
        text = format_result(result, "json" if single else "jsonl").rstrip("\n")
    else:
        body = format_result(result, output_format).rstrip("\n")
        text = body if single else f"==> {path} <==\n{body}\n"
    print(text, flush=True)
