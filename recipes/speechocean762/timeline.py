"""Dev WER and CER after each epoch against training wall time, and the time to a target.

Reads the TensorBoard events that ``asr-s2s train`` writes (``EXP/tensorboard``): each ``dev/*``
scalar carries the wall time at which it was logged. Time 0 is the events file's first record, made
when the trainer starts its logger (after the features are cached and the normalization statistics
computed), so the minutes include the training steps and the dev scoring after every epoch.

    python recipes/speechocean762/timeline.py exp/speechocean762 [--wer 0.45 --cer 0.20]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class EpochPoint:
    """One dev scoring: after ``epoch`` (1-based), at ``step``, ``minutes`` after the start."""

    epoch: int
    step: int
    minutes: float
    wer: float
    cer: float


def timeline(exp: Path) -> list[EpochPoint]:
    """The dev scorings of the run in ``exp``, in order (a resumed run's repeats keep the last)."""
    events = EventAccumulator(str(exp / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    start = events.FirstEventTimestamp()
    wer = events.Scalars("dev/dev_wer")
    cer = {e.step: e.value for e in events.Scalars("dev/dev_cer")}
    by_step = {e.step: e for e in wer}
    return [
        EpochPoint(epoch, e.step, (e.wall_time - start) / 60.0, e.value, cer[e.step])
        for epoch, e in enumerate(sorted(by_step.values(), key=lambda e: e.step), start=1)
    ]


def time_to_target(points: list[EpochPoint], wer: float, cer: float) -> EpochPoint | None:
    """The first scoring with WER <= ``wer`` and CER <= ``cer`` (fractions), or None."""
    return next((p for p in points if p.wer <= wer and p.cer <= cer), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp", type=Path, help="a training output folder (holds tensorboard/)")
    parser.add_argument("--wer", type=float, default=0.45, help="target WER (fraction)")
    parser.add_argument("--cer", type=float, default=0.20, help="target CER (fraction)")
    parser.add_argument("--json", type=Path, help="also write the points and the hit as JSON")
    args = parser.parse_args(argv)
    points = timeline(args.exp)
    print("| epoch | step | minutes | WER | CER |\n|---|---|---|---|---|")
    for p in points:
        print(f"| {p.epoch} | {p.step} | {p.minutes:.1f} | {100 * p.wer:.1f} % | {100 * p.cer:.1f} % |")
    hit = time_to_target(points, args.wer, args.cer)
    target = f"WER <= {100 * args.wer:g} % and CER <= {100 * args.cer:g} %"
    print(f"{target}: " + (f"epoch {hit.epoch}, {hit.minutes:.1f} min" if hit else "not reached"))
    if args.json:
        payload = {"points": [asdict(p) for p in points], "target": asdict(hit) if hit else None}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
