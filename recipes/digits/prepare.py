"""Build a connected-digits corpus from Free Spoken Digit Dataset (FSDD) recordings.

Each utterance is 1..N digits spoken by one speaker: FSDD recordings joined with random short
gaps, padded with a little silence, with low-level white noise added, at 16 kHz. The output
uses LibriSpeech's layout (``LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac``
plus ``<speaker>-<chapter>.trans.txt``) and has one manifest per split (``train/dev/test.jsonl``).

Recordings are split by their FSDD index, so no source recording feeds two splits: 0-4 test,
5-9 dev, 10 and above train. With ``--test-speakers NAME[,NAME]`` the split is by speaker as well:
every recording of those speakers goes to ``test`` (the unseen-speaker test) and none to train or
dev, and the other speakers' recordings 0-4 form ``test_seen`` (the seen-speaker test). The
output is a pure function of the input files, the options and the seed.

``--extra-kaldi DIR`` adds the digit-only utterances of a Kaldi data directory (speechocean762's
77 digit strings, 26 speakers) to ``train`` only, ``--extra-copies N`` times each; with
``--extra-text all`` every utterance joins (speechocean762: 2,500 sentences, 125 speakers: more
voices), its transcript normalized to the corpus's character set. Extra audio passes through
FSDD's 8 kHz, so it has the same bandwidth as the digits.

    python recipes/digits/prepare.py --fsdd-dir DIR --out OUTDIR [--seed 0] [--test-speakers NAME]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_s2s.download import (
    DownloadError,
    extract,
    fetch,
    forget_extracted,
    is_extracted,
    read_checksums,
    verify_files,
)
from asr_s2s.errors import AsrError, AudioError
from asr_s2s.manifest import Utterance, write_manifest

log = logging.getLogger("recipes.digits.prepare")

FSDD_VERSION = "1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v{FSDD_VERSION}.tar.gz"
FSDD_ARCHIVE = f"fsdd-v{FSDD_VERSION}.tar.gz"
# SHA-256 of every recording at FSDD's git tag (3,000 files), computed from the repository at that
# tag. GitHub's generated archives are not byte-stable, so the extracted recordings are checked,
# not the archive.
FSDD_SHA256SUMS = Path(__file__).resolve().parent / f"SHA256SUMS-v{FSDD_VERSION}"

SAMPLE_RATE = 16000
# FSDD's recordings are 8 kHz: extra training audio is band-limited to match (nothing above 4 kHz).
FSDD_RATE = 8000
SPLITS = ("train", "dev", "test", "test_seen")
# One chapter per split keeps utterance ids unique across splits although the speakers are shared.
CHAPTERS = {"train": 0, "dev": 1, "test": 2, "test_seen": 3}
_INDEX_RANGES = {"test": "0-4", "dev": "5-9", "train": "10 and above", "test_seen": "0-4"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

GAP_SECONDS = (0.05, 0.30)
EDGE_SILENCE_SECONDS = (0.10, 0.25)
NOISE_DBFS = (-55.0, -45.0)

_FSDD_NAME = re.compile(r"([0-9])_([A-Za-z0-9]+)_([0-9]+)\.wav")


@dataclass(frozen=True)
class Recording:
    """One FSDD source recording."""

    path: Path
    digit: int
    speaker: str
    index: int


@dataclass
class CorpusSummary:
    """What :func:`build_corpus` wrote."""

    utterances: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    manifests: dict[str, Path] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)
    # split -> utterance id -> the source recordings it was made of, in order
    sources: dict[str, dict[str, tuple[Recording, ...]]] = field(default_factory=dict)


# Many distinct training utterances, each seen twice (conf/default.yaml), fill the demo's training
# budget: at equal compute, unique utterances beat repeats of fewer (RESULTS.md).
DEFAULT_COUNTS = {"train": 24000, "dev": 500, "test": 500}
# The seen-speaker test set that --test-speakers adds next to the unseen-speaker ``test``.
DEFAULT_TEST_SEEN = 500
# Speaker names of --extra-kaldi utterances start with this, so they never collide with FSDD's.
EXTRA_SPEAKER_PREFIX = "x"


def split_of_index(index: int) -> str:
    """The split of an FSDD recording index (FSDD's own test set is 0-4)."""
    if index < 5:
        return "test"
    if index < 10:
        return "dev"
    return "train"


def scan_fsdd(
    fsdd_dir: str | Path, test_speakers: Sequence[str] = (), speakers: Sequence[str] = ()
) -> tuple[dict[str, list[Recording]], list[Path]]:
    """FSDD recordings of a folder grouped by split (sorted), and the files that were skipped.

    Without ``test_speakers`` the split is by index only (``test_seen`` stays empty). With them,
    every recording of those speakers is in ``test``, and the other speakers' recordings 0-4 are
    in ``test_seen`` instead. With ``speakers``, only those speakers' recordings are used (the
    others are left out, not counted as skipped). A folder holding a ``recordings/`` subfolder
    (an extracted FSDD archive) is looked into.
    """
    fsdd_dir = Path(fsdd_dir)
    if (fsdd_dir / "recordings").is_dir():
        fsdd_dir = fsdd_dir / "recordings"
    if not fsdd_dir.is_dir():
        raise AsrError(f"{fsdd_dir}: FSDD folder not found")
    by_split: dict[str, list[Recording]] = {split: [] for split in SPLITS}
    skipped: list[Path] = []
    for path in sorted(fsdd_dir.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        match = _FSDD_NAME.fullmatch(path.name)
        if match is None:
            skipped.append(path)
            continue
        rec = Recording(path, int(match[1]), match[2], int(match[3]))
        if speakers and rec.speaker not in speakers:
            continue
        if rec.speaker in test_speakers:
            by_split["test"].append(rec)
        elif test_speakers and split_of_index(rec.index) == "test":
            by_split["test_seen"].append(rec)
        else:
            by_split[split_of_index(rec.index)].append(rec)
    found = {rec.speaker for recs in by_split.values() for rec in recs}
    for kind, names in (("", speakers), ("test ", test_speakers)):
        missing = sorted(set(names) - found)
        if missing:
            raise AsrError(f"{fsdd_dir}: no recordings of {kind}speaker(s) {', '.join(missing)}")
    if test_speakers:
        if found <= set(test_speakers):
            raise AsrError(f"{fsdd_dir}: every speaker is a test speaker; none is left to train on")
    return by_split, skipped


class _SourceCache:
    """Decodes and resamples each source recording once, on first use (and once per speed factor)."""

    def __init__(self) -> None:
        self._audio: dict[tuple[Path, float], np.ndarray] = {}

    def get(self, path: Path, speed: float = 1.0) -> np.ndarray:
        audio = self._audio.get((path, speed))
        if audio is None:
            audio = load_resampled(path) if speed == 1.0 else change_speed(self.get(path), speed)
            self._audio[(path, speed)] = audio
        return audio


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """``audio`` (16 kHz) played ``factor`` times faster: tempo, pitch and formants all scale, as
    in Kaldi's speed perturbation. Resampling from ``16000 * factor`` Hz to 16 kHz (torchaudio)."""
    orig = int(round(SAMPLE_RATE * factor))
    out = AF.resample(torch.from_numpy(audio), orig, SAMPLE_RATE)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def load_resampled(path: Path) -> np.ndarray:
    """A recording as mono float32 at 16 kHz."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"cannot read audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty recording")
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = AF.resample(torch.from_numpy(mono), rate, SAMPLE_RATE).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _seconds_to_samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def synthesize(sources: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Join recordings with random gaps and edge silence and add white noise; returns int16 samples."""
    gaps = [_seconds_to_samples(g) for g in rng.uniform(*GAP_SECONDS, size=len(sources) - 1)]
    lead, trail = (_seconds_to_samples(s) for s in rng.uniform(*EDGE_SILENCE_SECONDS, size=2))
    total = lead + sum(len(s) for s in sources) + sum(gaps) + trail
    audio = np.zeros(total, dtype=np.float32)
    pos = lead
    for k, src in enumerate(sources):
        audio[pos : pos + len(src)] = src
        pos += len(src) + (gaps[k] if k < len(gaps) else 0)
    noise_rms = 10.0 ** (rng.uniform(*NOISE_DBFS) / 20.0)
    audio += (rng.standard_normal(total) * noise_rms).astype(np.float32)
    # Quantise ourselves (with clipping) so the FLAC samples do not depend on libsndfile's float path.
    return np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)


def build_corpus(
    fsdd_dir: str | Path,
    out_dir: str | Path,
    num_utts: Mapping[str, int] | None = None,
    min_digits: int = 1,
    max_digits: int = 7,
    seed: int = 0,
    jobs: int = 1,
    test_speakers: Sequence[str] = (),
    speakers: Sequence[str] = (),
    extra_train: Sequence[Utterance] = (),
    extra_copies: int = 1,
    train_speed: tuple[float, float] | None = None,
) -> CorpusSummary:
    """Write the corpus (audio, transcripts, manifests) under ``out_dir``.

    ``num_utts`` maps split names to utterance counts (default ``DEFAULT_COUNTS``, plus
    ``test_seen: DEFAULT_TEST_SEEN`` with ``test_speakers``); ``test_speakers`` makes ``test`` the
    unseen-speaker test and ``speakers`` restricts the FSDD speakers used (see :func:`scan_fsdd`).
    ``extra_train`` (see :func:`kaldi_utterances`) joins the training split ``extra_copies`` times
    (each copy with its own edge silence and noise, and its own speed with ``train_speed``), after
    the ``train`` count. ``train_speed = (low, high)`` plays each source recording of a training
    utterance at its own random speed in that range (:func:`change_speed`; dev and test stay
    unchanged). Each utterance has its own random generator seeded by ``(seed, split, number)``, so
    a split's content does not depend on the sizes of the others, and the result is identical for
    identical inputs, whatever the number of worker processes ``jobs``.
    """
    if num_utts is not None:
        counts = dict(num_utts)
    else:
        counts = dict(DEFAULT_COUNTS, **({"test_seen": DEFAULT_TEST_SEEN} if test_speakers else {}))
    if counts.get("test_seen") and not test_speakers:
        raise AsrError("the test_seen split needs test speakers (--test-speakers)")
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise AsrError(f"unknown split(s) {sorted(unknown)}; expected {list(SPLITS)}")
    if not 1 <= min_digits <= max_digits:
        raise AsrError(f"need 1 <= min_digits <= max_digits, got {min_digits} and {max_digits}")
    if any(n < 0 for n in counts.values()):
        raise AsrError(f"utterance counts must not be negative: {counts}")
    if jobs < 1:
        raise AsrError(f"need at least one job, got {jobs}")
    if train_speed is not None and not 0.5 <= train_speed[0] <= train_speed[1] <= 2.0:
        raise AsrError(f"need 0.5 <= low <= high <= 2.0 for the training speed range, got {train_speed}")
    if extra_copies < 1:
        raise AsrError(f"need at least one copy of the extra utterances, got {extra_copies}")

    by_split, skipped = scan_fsdd(fsdd_dir, tuple(test_speakers), tuple(speakers))
    for split, n in counts.items():
        if n > 0 and not by_split[split]:
            where = (
                f"all recordings of {', '.join(test_speakers)}"
                if split == "test" and test_speakers
                else f"FSDD indices {_INDEX_RANGES[split]}"
            )
            raise AsrError(
                f"{fsdd_dir}: no recordings for the {split} split "
                f"({where}, files named {{digit}}_{{speaker}}_{{index}}.wav)"
            )
    if skipped:
        log.warning("skipped %d file(s) not named {digit}_{speaker}_{index}.wav", len(skipped))

    out_dir = Path(out_dir).resolve()
    summary = CorpusSummary(skipped=skipped)
    for split_idx, split in enumerate(SPLITS):
        n = counts.get(split, 0)
        if n == 0:
            continue
        utts, sources = _build_split(
            split, split_idx, n, by_split[split], out_dir, min_digits, max_digits, seed, jobs,
            train_speed if split == "train" else None,
        )
        if split == "train" and extra_train:
            added = _add_extra(extra_train, extra_copies, out_dir, seed, train_speed)
            utts = sorted(utts + added, key=lambda u: u.id)
        manifest = out_dir / f"{split}.jsonl"
        write_manifest(manifest, utts, relative=True)
        summary.utterances[split] = len(utts)
        summary.seconds[split] = sum(u.duration for u in utts)
        summary.manifests[split] = manifest
        summary.sources[split] = sources
    return summary


@dataclass(frozen=True)
class _SplitPlan:
    """What every utterance of one split is drawn from; shared with the worker processes."""

    split_idx: int
    seed: int
    speakers: tuple[str, ...]
    by_speaker: dict[str, list[Recording]]
    min_digits: int
    max_digits: int
    speed: tuple[float, float] | None = None

    def draw(self, number: int) -> tuple[np.random.Generator, str, list[Recording], list[float]]:
        """Utterance ``number``'s speaker, recordings and their speed factors, and its generator for
        the audio that follows. Factors are drawn (in steps of 0.01) only with ``speed``."""
        rng = np.random.default_rng([self.seed, self.split_idx, number])
        speaker = self.speakers[rng.integers(len(self.speakers))]
        pool = self.by_speaker[speaker]
        n_digits = int(rng.integers(self.min_digits, self.max_digits + 1))
        chosen = [pool[j] for j in rng.integers(len(pool), size=n_digits)]
        if self.speed is None:
            return rng, speaker, chosen, [1.0] * n_digits
        factors = np.round(rng.uniform(*self.speed, size=n_digits), 2)
        return rng, speaker, chosen, [float(f) for f in factors]


# The split being rendered and its decoded recordings: set in each worker process (and in this one
# for --jobs 1) by _init_worker.
_worker: tuple[_SplitPlan, _SourceCache] | None = None


def _init_worker(plan: _SplitPlan) -> None:
    global _worker
    _worker = plan, _SourceCache()


def _render(job: tuple[int, Path]) -> int:
    """Synthesize utterance ``number`` into ``path`` (FLAC); returns its length in samples."""
    number, path = job
    assert _worker is not None
    plan, cache = _worker
    rng, _, chosen, speeds = plan.draw(number)
    samples = synthesize([cache.get(rec.path, speed) for rec, speed in zip(chosen, speeds)], rng)
    sf.write(path, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(samples)


def _build_split(
    split: str,
    split_idx: int,
    num: int,
    recordings: list[Recording],
    out_dir: Path,
    min_digits: int,
    max_digits: int,
    seed: int,
    jobs: int,
    speed: tuple[float, float] | None,
) -> tuple[list[Utterance], dict[str, tuple[Recording, ...]]]:
    split_dir = out_dir / "LibriSpeech" / split
    if split_dir.exists():
        # Remove a previous run's output so no stale utterance survives with a smaller --num-*.
        log.info("removing previous output %s", split_dir)
        shutil.rmtree(split_dir)
    by_speaker: dict[str, list[Recording]] = defaultdict(list)
    for rec in recordings:
        by_speaker[rec.speaker].append(rec)
    plan = _SplitPlan(
        split_idx, seed, tuple(sorted(by_speaker)), dict(by_speaker), min_digits, max_digits, speed
    )
    chapter = CHAPTERS[split]
    next_number: Counter[str] = Counter()
    transcripts: dict[str, list[str]] = defaultdict(list)
    pending: list[tuple[str, str, list[Recording], Path]] = []
    for i in range(num):
        # Ids number each speaker's utterances in order, so they are assigned here, not in the workers.
        _, speaker, chosen, _ = plan.draw(i)
        utt_id = f"{speaker}-{chapter}-{next_number[speaker]:04d}"
        next_number[speaker] += 1
        chapter_dir = split_dir / speaker / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        pending.append((utt_id, speaker, chosen, chapter_dir / f"{utt_id}.flac"))
    render_jobs = [(i, path) for i, (_, _, _, path) in enumerate(pending)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs, _init_worker, (plan,)) as pool:
            lengths = pool.map(_render, render_jobs, chunksize=64)
    else:
        _init_worker(plan)
        lengths = [_render(job) for job in render_jobs]

    utts: list[Utterance] = []
    sources: dict[str, tuple[Recording, ...]] = {}
    for (utt_id, speaker, chosen, path), n_samples in zip(pending, lengths):
        sources[utt_id] = tuple(chosen)
        words = [DIGIT_WORDS[rec.digit] for rec in chosen]
        transcripts[speaker].append(f"{utt_id} {' '.join(words).upper()}\n")
        utts.append(
            Utterance(
                id=utt_id,
                audio_filepath=path,
                duration=n_samples / SAMPLE_RATE,
                text=" ".join(words),
                speaker=speaker,
            )
        )
    for speaker, lines in transcripts.items():
        trans = split_dir / speaker / str(chapter) / f"{speaker}-{chapter}.trans.txt"
        trans.write_text("".join(lines), encoding="utf-8")
    utts.sort(key=lambda u: u.id)
    return utts, sources


def kaldi_utterances(kaldi_dir: str | Path, digits_only: bool = True) -> list[Utterance]:
    """The utterances of a Kaldi data directory, with transcripts normalized as the model's text
    (:func:`asr_s2s.text.normalize`: lowercase, no punctuation but apostrophes); with
    ``digits_only`` only those whose transcript is digit words alone (``ZERO`` to ``NINE``). Audio
    paths in ``wav.scp`` resolve against the folder above ``kaldi_dir`` (a corpus root holding
    ``train/`` next to ``WAVE/``, as speechocean762)."""
    from asr_s2s.kaldi import read_kaldi_dir
    from asr_s2s.text import normalize

    kaldi_dir = Path(kaldi_dir)
    found = read_kaldi_dir(kaldi_dir, audio_root=kaldi_dir.resolve().parent)
    utts = []
    for utt in found.utterances:
        text = normalize(utt.text)
        if text and (not digits_only or all(w in DIGIT_WORDS for w in text.split())):
            utts.append(Utterance(utt.id, utt.audio_filepath, utt.duration, text, utt.offset, utt.speaker))
    if not utts:
        what = "whose transcript is only digit words" if digits_only else "with a transcript"
        raise AsrError(f"{kaldi_dir}: no utterance {what} ({found.summary()})")
    return utts


def band_limit(audio: np.ndarray) -> np.ndarray:
    """16 kHz ``audio`` through FSDD's 8 kHz and back (torchaudio's windowed-sinc resampling):
    nothing is left above 4 kHz, as in the FSDD recordings."""
    low = AF.resample(torch.from_numpy(audio), SAMPLE_RATE, FSDD_RATE)
    return np.ascontiguousarray(AF.resample(low, FSDD_RATE, SAMPLE_RATE).numpy(), dtype=np.float32)


def _add_extra(
    extra: Sequence[Utterance],
    copies: int,
    out_dir: Path,
    seed: int,
    speed: tuple[float, float] | None = None,
) -> list[Utterance]:
    """Render ``copies`` versions of each extra utterance into the train split's folder.

    The audio is band-limited (:func:`band_limit`); each copy gets its own edge silence and noise
    (:func:`synthesize`, one generator per copy and utterance) and, with ``speed``, its own speed
    factor (in steps of 0.01, as the FSDD recordings), under speaker
    ``EXTRA_SPEAKER_PREFIX + speaker`` in the train chapter.
    """
    chapter = CHAPTERS["train"]
    split_dir = out_dir / "LibriSpeech" / "train"
    next_number: Counter[str] = Counter()
    transcripts: dict[str, list[str]] = defaultdict(list)
    utts: list[Utterance] = []
    for k, src in enumerate(extra):
        mono = load_resampled(src.audio_filepath)
        if src.offset:
            start = int(round(src.offset * SAMPLE_RATE))
            mono = mono[start : start + int(round(src.duration * SAMPLE_RATE))]
        mono = band_limit(mono)
        speaker = EXTRA_SPEAKER_PREFIX + (src.speaker or src.id)
        folder = split_dir / speaker / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(copies):
            rng = np.random.default_rng([seed, len(SPLITS), k, copy])
            factor = 1.0 if speed is None else float(np.round(rng.uniform(*speed), 2))
            samples = synthesize([mono if factor == 1.0 else change_speed(mono, factor)], rng)
            utt_id = f"{speaker}-{chapter}-{next_number[speaker]:04d}"
            next_number[speaker] += 1
            path = folder / f"{utt_id}.flac"
            sf.write(path, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            transcripts[speaker].append(f"{utt_id} {src.text.upper()}\n")
            utts.append(Utterance(utt_id, path, len(samples) / SAMPLE_RATE, src.text, speaker=speaker))
    for speaker, lines in transcripts.items():
        (split_dir / speaker / str(chapter) / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return utts


def fetch_fsdd(download_dir: str | Path) -> Path:
    """Download (or take from ``download_dir``) and extract the pinned FSDD release, verify every
    recording against ``FSDD_SHA256SUMS``, and return its ``recordings`` folder.

    An archive already at ``download_dir/FSDD_ARCHIVE`` (copied in by hand) is used instead of
    downloading; an interrupted download resumes. Any missing, changed or unlisted recording stops
    with :class:`DownloadError` naming the first one, and the extracted copy is removed.
    """
    download_dir = Path(download_dir)
    checksums = read_checksums(FSDD_SHA256SUMS)
    archive = download_dir / FSDD_ARCHIVE
    top = download_dir / f"free-spoken-digit-dataset-{FSDD_VERSION}"
    if not archive.is_file() and not is_extracted(archive, download_dir):
        log.info("downloading %s", FSDD_URL)
        fetch(FSDD_URL, download_dir, FSDD_ARCHIVE)
    extract(archive, download_dir)
    recordings = top / "recordings"
    try:
        if not recordings.is_dir():
            raise DownloadError(f"{archive}: no recordings/ folder after extraction (expected {recordings})")
        unlisted = sorted(
            p.name for p in recordings.iterdir() if _FSDD_NAME.fullmatch(p.name) and p.name not in checksums
        )
        if unlisted:
            raise DownloadError(f"{recordings / unlisted[0]}: not in {FSDD_SHA256SUMS.name}")
        verify_files(recordings, checksums)
    except DownloadError as err:
        # Nothing unverified stays behind; a rerun extracts again (after the archive is replaced).
        shutil.rmtree(top, ignore_errors=True)
        forget_extracted(archive, download_dir)
        raise DownloadError(
            f"{err}; refusing to use {archive}, which is not FSDD v{FSDD_VERSION} as published "
            "(delete it to download again)"
        ) from None
    log.info("verified %d FSDD recordings against %s", len(checksums), FSDD_SHA256SUMS.name)
    return recordings


def _speed_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise AsrError(f"--train-speed: expected LOW,HIGH (e.g. 0.85,1.15), got {text!r}") from None
    return low, high


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd-dir", type=Path, help="folder of FSDD recordings; downloaded if omitted")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--num-dev", type=int, default=DEFAULT_COUNTS["dev"])
    parser.add_argument("--num-test", type=int, default=DEFAULT_COUNTS["test"])
    parser.add_argument(
        "--test-speakers",
        help="comma-separated FSDD speakers held out of training: all their recordings form the test "
        "split, and the other speakers' recordings 0-4 form test_seen",
    )
    parser.add_argument(
        "--speakers",
        help="comma-separated FSDD speakers to use (default: all; a download has six, ../shared four)",
    )
    parser.add_argument(
        "--num-test-seen", type=int, default=DEFAULT_TEST_SEEN, help="test_seen size (with --test-speakers)"
    )
    parser.add_argument("--min-digits", type=int, default=1)
    parser.add_argument("--max-digits", type=int, default=7)
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--extra-kaldi",
        type=Path,
        help="Kaldi data dir whose digit-only utterances join train (../shared/data/speechocean762/train)",
    )
    parser.add_argument("--extra-copies", type=int, default=1, help="copies of each --extra-kaldi utterance")
    parser.add_argument(
        "--extra-text",
        choices=("digits", "all"),
        default="digits",
        help="which --extra-kaldi utterances join train: digit strings only, or all (more voices)",
    )
    parser.add_argument(
        "--train-speed",
        help="LOW,HIGH: play each training recording at a random speed in this range (e.g. 0.85,1.15)",
    )
    parser.add_argument(
        "--download-dir",
        type=Path,
        help=f"where to download FSDD, or where {FSDD_ARCHIVE} was put by hand (default: OUT/download)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    # Resampling short clips gains nothing from threads: the cores are used by --jobs processes.
    torch.set_num_threads(1)
    try:
        fsdd_dir = args.fsdd_dir
        if fsdd_dir is None:
            fsdd_dir = fetch_fsdd(args.download_dir or args.out / "download")
        test_speakers = [s for s in (args.test_speakers or "").split(",") if s]
        counts = {"train": args.num_train, "dev": args.num_dev, "test": args.num_test}
        if test_speakers:
            counts["test_seen"] = args.num_test_seen
        summary = build_corpus(
            fsdd_dir,
            args.out,
            counts,
            min_digits=args.min_digits,
            max_digits=args.max_digits,
            seed=args.seed,
            jobs=args.jobs,
            test_speakers=test_speakers,
            speakers=[s for s in (args.speakers or "").split(",") if s],
            extra_train=(
                kaldi_utterances(args.extra_kaldi, digits_only=args.extra_text == "digits")
                if args.extra_kaldi
                else ()
            ),
            extra_copies=args.extra_copies,
            train_speed=_speed_range(args.train_speed) if args.train_speed else None,
        )
    except AsrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, n in summary.utterances.items():
        hours = summary.seconds[split] / 3600
        print(f"{split:>9}: {n:6d} utterances, {hours:6.2f} h -> {summary.manifests[split]}")
    print(f"skipped {len(summary.skipped)} file(s) not named {{digit}}_{{speaker}}_{{index}}.wav")
    return 0


if __name__ == "__main__":
    sys.exit(main())
