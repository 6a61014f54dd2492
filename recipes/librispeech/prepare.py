"""Write JSONL manifests for LibriSpeech subsets, optionally downloading them from openslr.org first.

Walks ``<subset>/<speaker>/<chapter>/`` for ``*.flac`` files and ``<speaker>-<chapter>.trans.txt``
transcripts, and writes ``<out>/<subset>.jsonl`` with ids sorted, lowercase text and durations read
from the FLAC headers. Utterances with no audio or no transcript, and malformed transcript lines,
are left out and reported.

    python recipes/librispeech/prepare.py --root DIR --subsets dev-clean test-clean --out OUT
    python recipes/librispeech/prepare.py --download DIR --subsets dev-clean --out OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from asr_s2s.download import download, extract, is_extracted
from asr_s2s.errors import AsrError
from asr_s2s.manifest import Utterance, write_manifest

log = logging.getLogger("recipes.librispeech.prepare")

MIRROR = "https://www.openslr.org/resources/12"
# MD5 sums published in https://www.openslr.org/resources/12/md5sum.txt.
SUBSET_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}

# How many individual problems to print per kind before summarising the rest.
_MAX_LISTED = 20


@dataclass
class SubsetReport:
    """The utterances found in one subset, and what was wrong with the others."""

    subset: str
    utterances: list[Utterance] = field(default_factory=list)
    missing_audio: list[str] = field(default_factory=list)
    missing_transcript: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(u.duration for u in self.utterances)


def find_librispeech_dir(root: str | Path) -> Path:
    """``root/LibriSpeech`` if it exists, else ``root`` itself (which may be the LibriSpeech folder)."""
    root = Path(root)
    return root / "LibriSpeech" if (root / "LibriSpeech").is_dir() else root


def read_transcripts(path: Path, prefix: str, report: SubsetReport) -> dict[str, str]:
    """Id -> lowercase text of a ``.trans.txt`` file; malformed lines go to ``report.malformed``.

    A line is ``<id> <TEXT>`` where the id starts with ``prefix`` (``<speaker>-<chapter>-``).
    """
    texts: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        report.malformed.append(f"{path}: not valid UTF-8 (byte {err.start})")
        return texts
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        utt_id, _, text = line.strip().partition(" ")
        text = " ".join(text.split()).lower()
        if not text:
            report.malformed.append(f"{path}:{lineno}: no transcript after id {utt_id!r}")
        elif not utt_id.startswith(prefix) or utt_id == prefix:
            report.malformed.append(f"{path}:{lineno}: id {utt_id!r} does not start with {prefix!r}")
        elif utt_id in texts:
            report.malformed.append(f"{path}:{lineno}: duplicate id {utt_id!r}")
        else:
            texts[utt_id] = text
    return texts


def scan_subset(librispeech_dir: str | Path, subset: str) -> SubsetReport:
    """Pair the audio and transcripts of ``<librispeech_dir>/<subset>``; sorted by id."""
    subset_dir = Path(librispeech_dir) / subset
    if not subset_dir.is_dir():
        raise AsrError(f"{subset_dir}: subset folder not found")
    report = SubsetReport(subset)
    for speaker_dir in sorted(p for p in subset_dir.iterdir() if p.is_dir()):
        for chapter_dir in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
            _scan_chapter(chapter_dir, speaker_dir.name, report)
    report.utterances.sort(key=lambda u: u.id)
    report.missing_audio.sort()
    report.missing_transcript.sort()
    return report


def _scan_chapter(chapter_dir: Path, speaker: str, report: SubsetReport) -> None:
    prefix = f"{speaker}-{chapter_dir.name}-"
    audio = {p.stem: p for p in chapter_dir.glob("*.flac")}
    texts: dict[str, str] = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        for utt_id, text in read_transcripts(trans, prefix, report).items():
            if utt_id in texts:
                report.malformed.append(f"{trans}: id {utt_id!r} already transcribed in another file")
                continue
            texts[utt_id] = text
    report.missing_audio.extend(sorted(set(texts) - set(audio)))
    report.missing_transcript.extend(str(audio[i]) for i in sorted(set(audio) - set(texts)))
    for utt_id in sorted(set(texts) & set(audio)):
        path = audio[utt_id]
        try:
            # Header only: the duration without decoding the audio.
            duration = sf.info(str(path)).duration
        except (sf.LibsndfileError, RuntimeError) as err:
            report.unreadable.append(f"{path}: {err}")
            continue
        if duration <= 0:
            report.unreadable.append(f"{path}: no audio samples")
            continue
        report.utterances.append(
            Utterance(
                id=utt_id,
                audio_filepath=path.resolve(),
                duration=duration,
                text=texts[utt_id],
                speaker=speaker,
            )
        )


def prepare(root: str | Path, subsets: Sequence[str], out_dir: str | Path) -> list[SubsetReport]:
    """Scan each subset under ``root`` and write ``<out_dir>/<subset>.jsonl``; returns the reports."""
    librispeech_dir = find_librispeech_dir(root)
    reports = []
    for subset in subsets:
        report = scan_subset(librispeech_dir, subset)
        if not report.utterances:
            raise AsrError(f"{librispeech_dir / subset}: no utterances with both audio and transcript")
        write_manifest(Path(out_dir) / f"{subset}.jsonl", report.utterances, relative=True)
        reports.append(report)
    return reports


def download_subsets(subsets: Sequence[str], download_dir: str | Path) -> Path:
    """Download (resuming, MD5-verified) and extract the subsets; returns ``download_dir``.

    A subset already extracted there is skipped, even if its archive was deleted since.
    """
    unknown = [s for s in subsets if s not in SUBSET_MD5]
    if unknown:
        raise AsrError(f"cannot download unknown subset(s) {unknown}; known: {sorted(SUBSET_MD5)}")
    for subset in subsets:
        if is_extracted(f"{subset}.tar.gz", download_dir):
            log.info("%s already downloaded and extracted into %s", subset, download_dir)
            continue
        archive = download(f"{MIRROR}/{subset}.tar.gz", download_dir, md5=SUBSET_MD5[subset])
        extract(archive, download_dir)
    return Path(download_dir)


def _print_report(report: SubsetReport, manifest: Path) -> None:
    print(
        f"{report.subset}: {len(report.utterances)} utterances, {report.seconds / 3600:.2f} h -> {manifest}"
    )
    problems = (
        ("missing audio (in a transcript, no .flac)", report.missing_audio),
        ("missing transcript (.flac with no transcript line)", report.missing_transcript),
        ("malformed transcript lines", report.malformed),
        ("unreadable audio", report.unreadable),
    )
    for label, items in problems:
        if not items:
            continue
        print(f"  {len(items)} {label}:")
        for item in items[:_MAX_LISTED]:
            print(f"    {item}")
        if len(items) > _MAX_LISTED:
            print(f"    ... and {len(items) - _MAX_LISTED} more")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="folder containing LibriSpeech/, or the LibriSpeech folder")
    parser.add_argument("--subsets", nargs="+", required=True, help="e.g. train-clean-100 dev-clean")
    parser.add_argument("--out", type=Path, default=Path("data_manifests/librispeech"))
    parser.add_argument(
        "--download",
        type=Path,
        metavar="DIR",
        help="download and extract the subsets into DIR, then use it as --root",
    )
    args = parser.parse_args(argv)
    if args.root is None and args.download is None:
        parser.error("give --root, or --download DIR")
    if args.root is not None and args.download is not None:
        parser.error("--download DIR is also the root: give only one of --root and --download")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        root = download_subsets(args.subsets, args.download) if args.download else args.root
        reports = prepare(root, args.subsets, args.out)
    except AsrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for report in reports:
        _print_report(report, args.out / f"{report.subset}.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
