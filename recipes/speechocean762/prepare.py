"""Prepare speechocean762 manifests: a fixed speaker-disjoint dev split of train, and test when present.

The corpus root holds Kaldi data directories ``train/`` and optionally ``test/`` whose ``wav.scp``
paths are relative to the root (the original layout: ``WAVE/SPEAKERnnnn/<utt>.WAV``, or ``.flac``
in the shared copy). Both are read with :mod:`asr_s2s.kaldi`.

Dev split: the 12 speakers of ``DEV_SPEAKERS`` (about 10 % of train's 125) go to ``dev.jsonl`` and
all their utterances leave ``train.jsonl``. They were chosen once, balanced for gender and age:
train's speakers were grouped by gender x age band (6-12, 13-19, 20+), each group was given its
share of the 12 (largest remainder), and each group's speakers sorted by the SHA-1 of their id
gave the first ones. The list is written out so that the split never changes. Every sentence of
speechocean762 is read once, so dev's sentences are also unseen in train.

    python recipes/speechocean762/prepare.py --corpus DIR [--out data/speechocean762] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from asr_s2s.errors import AsrError
from asr_s2s.kaldi import KaldiImport, read_kaldi_dir, read_table
from asr_s2s.manifest import Utterance, write_manifest

log = logging.getLogger("recipes.speechocean762.prepare")

# 4 adult, 2 child, 1 teen women; 2 adult, 3 child men (train has 4 teenage men: share 0.4, below
# the remainders of the other groups).
DEV_SPEAKERS = (
    "0005", "0026", "0036", "0594", "2089", "2236", "2450", "3049", "3068", "3083", "9613", "9649",
)  # fmt: skip


def age_band(age: int) -> str:
    return "6-12" if age <= 12 else "13-19" if age <= 19 else "20+"


def speaker_groups(data_dir: Path, speakers: set[str]) -> dict[str, Counter[str]]:
    """Counts of ``speakers`` by gender and by age band, from ``spk2gender`` and ``spk2age``."""
    scratch = KaldiImport()
    gender = read_table(data_dir / "spk2gender", scratch) if (data_dir / "spk2gender").is_file() else {}
    age = read_table(data_dir / "spk2age", scratch) if (data_dir / "spk2age").is_file() else {}
    groups: dict[str, Counter[str]] = {"gender": Counter(), "age": Counter()}
    for spk in speakers:
        groups["gender"][gender[spk][0] if spk in gender else "?"] += 1
        try:
            groups["age"][age_band(int(age[spk][0]))] += 1
        except (KeyError, ValueError):
            groups["age"]["?"] += 1
    return {k: Counter(dict(sorted(v.items()))) for k, v in groups.items()}


def _import(data_dir: Path, corpus: Path) -> list[Utterance]:
    result = read_kaldi_dir(data_dir, audio_root=corpus)
    for problem in result.problems[:20]:
        log.warning("skipped: %s", problem)
    log.info("%s: %s", data_dir, result.summary())
    if not result.utterances:
        raise AsrError(f"{data_dir}: no utterance could be imported ({result.summary()})")
    return result.utterances


def prepare(corpus: Path, out: Path, limit: int = 0) -> dict[str, dict[str, object]]:
    """Write ``train.jsonl``, ``dev.jsonl`` (and ``test.jsonl``) under ``out``; returns their statistics.

    ``limit`` > 0 keeps the first ``limit`` utterances of each split (for smoke tests).
    """
    train_all = _import(corpus / "train", corpus)
    speakers = {u.speaker for u in train_all}
    missing = sorted(set(DEV_SPEAKERS) - speakers)
    if missing:
        raise AsrError(f"{corpus / 'train'}: the dev speakers {', '.join(missing)} are not in utt2spk")
    dev_set = set(DEV_SPEAKERS)
    splits = {
        "train": [u for u in train_all if u.speaker not in dev_set],
        "dev": [u for u in train_all if u.speaker in dev_set],
    }
    if (corpus / "test").is_dir():
        splits["test"] = _import(corpus / "test", corpus)
        overlap = {u.speaker for u in splits["test"]} & speakers
        if overlap:
            raise AsrError(f"{corpus / 'test'}: speakers also in train: {', '.join(sorted(overlap))[:200]}")
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, dict[str, object]] = {}
    for name, utts in splits.items():
        if limit:
            utts = utts[:limit]
        write_manifest(out / f"{name}.jsonl", utts)
        spks = {u.speaker for u in utts if u.speaker is not None}
        source = corpus / ("test" if name == "test" else "train")
        stats[name] = {
            "utterances": len(utts),
            "hours": round(sum(u.duration for u in utts) / 3600, 3),
            "speakers": len(spks),
            "words": sum(len(u.text.split()) for u in utts),
            **speaker_groups(source, spks),
        }
    (out / "splits.json").write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="corpus root holding train/ (and test/)")
    parser.add_argument("--out", type=Path, default=Path("data/speechocean762"), help="manifest folder")
    parser.add_argument("--limit", type=int, default=0, help="keep the first N utterances of each split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stats = prepare(args.corpus, args.out, args.limit)
    except AsrError as err:
        print(f"prepare.py: error: {err}", file=sys.stderr)
        return 1
    for name, s in stats.items():
        print(
            f"{name}: {s['utterances']} utterances, {s['hours']} h, {s['speakers']} speakers "
            f"{dict(s['gender'])} {dict(s['age'])} -> {args.out / (name + '.jsonl')}"  # type: ignore[call-overload]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
