"""Score models (and decoding variants of one model) on the same manifest, side by side.

For each ``NAME=MODEL[:SECTION.OPTION=VALUE,...]`` it decodes the manifest with
:func:`asr_s2s.evaluate.evaluate_manifest` (the options replace the model's ``decode`` settings,
e.g. ``decode.ctc_weight=1.0`` to decode with the CTC head alone) and writes ``OUT/NAME/`` (the
usual evaluation files) plus ``OUT/compare.json`` and ``OUT/compare.md``: WER, CER, audio seconds
decoded per second, and WER by sentence length in words.

    python recipes/speechocean762/compare.py --manifest data/speechocean762/dev.jsonl --out DIR \\
        default=exp/speechocean762/model.pt ctc_head=exp/speechocean762/model.pt:decode.ctc_weight=1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jiwer

from asr_s2s.config import apply_overrides
from asr_s2s.errors import AsrError
from asr_s2s.evaluate import evaluate_manifest
from asr_s2s.transcribe import load_model

# Sentence lengths in words: (label, lowest, highest).
LENGTH_BINS = (("1-3", 1, 3), ("4-6", 4, 6), ("7-9", 7, 9), ("10+", 10, 10**9))


def wer_by_length(per_utterance: Path) -> dict[str, dict[str, float]]:
    """Corpus WER (jiwer) of the utterances in each of ``LENGTH_BINS``, from ``per_utterance.jsonl``."""
    rows = [json.loads(line) for line in per_utterance.read_text(encoding="utf-8").splitlines() if line]
    table: dict[str, dict[str, float]] = {}
    for label, low, high in LENGTH_BINS:
        picked = [r for r in rows if low <= len(r["reference"].split()) <= high]
        if picked:
            wer = jiwer.wer([r["reference"] for r in picked], [r["hypothesis"] for r in picked])
            table[label] = {"wer": wer, "utterances": len(picked)}
    return table


def compare(manifest: Path, out: Path, specs: list[str], num_workers: int = 0) -> list[dict[str, object]]:
    results = []
    for spec in specs:
        name, _, rest = spec.partition("=")
        model_path, _, options = rest.partition(":")
        transcriber = load_model(model_path, device="cpu")
        overrides = [o for o in options.split(",") if o]
        if overrides:
            transcriber.bundle.config = apply_overrides(transcriber.config, overrides)
        report = evaluate_manifest(
            transcriber, manifest, out / name, batch_size=None, progress=False, num_workers=num_workers
        )
        summary = json.loads((out / name / "summary.json").read_text(encoding="utf-8"))
        results.append(
            {
                "name": name,
                "model": model_path,
                "overrides": overrides,
                "decode": dataclasses.asdict(transcriber.config.decode),
                "wer": report.wer,
                "cer": report.cer,
                "audio_s_per_s": summary["audio_seconds"] / max(1e-9, summary["decode_seconds"]),
                "wer_by_length": wer_by_length(out / name / "per_utterance.jsonl"),
            }
        )
    (out / "compare.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    labels = [label for label, _, _ in LENGTH_BINS]
    lines = [
        "| run | WER | CER | audio-s/s | " + " | ".join(f"WER {x} words" for x in labels) + " |",
        "|---|---|---|---|" + "---|" * len(labels),
    ]
    for r in results:
        by_len: dict[str, dict[str, float]] = r["wer_by_length"]  # type: ignore[assignment]
        cells = [
            f"{100 * by_len[x]['wer']:.1f} % ({by_len[x]['utterances']:.0f})" if x in by_len else ""
            for x in labels
        ]
        lines.append(
            f"| {r['name']} | {100 * r['wer']:.1f} % | {100 * r['cer']:.1f} % | {r['audio_s_per_s']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    (out / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("runs", nargs="+", help="NAME=MODEL[:decode.OPTION=VALUE,...]")
    args = parser.parse_args(argv)
    try:
        compare(args.manifest, args.out, args.runs, args.num_workers)
    except AsrError as err:
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 1
    print((args.out / "compare.md").read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
