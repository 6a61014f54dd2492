"""Training throughput of the LibriSpeech recipe's models, and the time per epoch it implies.

Builds a ``Trainer`` from ``recipes/librispeech/conf/train_100h.yaml`` (and ``train_960h.yaml``) on a
synthetic corpus with LibriSpeech's utterance lengths (2-16 s, as ``benchlib.durations``), then times
full training steps (``Trainer.train_step``: SpecAugment, forward, CTC + attention losses, backward,
clipping, AdamW; bf16 autocast and cuDNN LSTMs on CUDA) on the trainer's own bucketed batches, read
through its DataLoader (features and speed perturbation in the workers). Reports audio seconds
trained per second, i.e. audio-hours per device-hour, and the hours one epoch of 100 h / 960 h takes
on one device at that rate (several GPUs: divide by their number, an upper bound on the speed-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
import soundfile as sf
import torch

from asr_s2s.config import load_config
from asr_s2s.train import Trainer

CONFIGS = {
    "100h": benchlib.REPO / "recipes/librispeech/conf/train_100h.yaml",
    "960h": benchlib.REPO / "recipes/librispeech/conf/train_960h.yaml",
}
CORPUS_HOURS = {"100h": 100.6, "960h": 961.1}  # train-clean-100; all three training subsets


def write_corpus(folder: Path, count: int, rng: np.random.Generator) -> tuple[Path, Path]:
    """``count`` WAV files of LibriSpeech lengths with texts at 15 characters per second."""
    lines = []
    for i, seconds in enumerate(benchlib.durations("librispeech", count, rng)):
        path = folder / f"u{i:04d}.wav"
        sf.write(path, benchlib.synth_wave(float(seconds), rng), benchlib.SAMPLE_RATE)
        text = benchlib.synth_text(float(seconds), benchlib.LIBRISPEECH_CHARS, rng)
        duration = sf.info(path).frames / benchlib.SAMPLE_RATE
        lines.append({"audio_filepath": path.name, "duration": duration, "text": text})
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return train, train


def measure(name: str, args: argparse.Namespace, device: torch.device, folder: Path) -> dict:
    overrides = ["train.epochs=1", f"train.num_workers={args.workers}", "train.stats_utterances=8"]
    overrides += [f"train.amp={'true' if device.type == 'cuda' else 'false'}", "train.dev_max_utts=1"]
    if args.max_frames:
        overrides.append(f"train.max_frames={args.max_frames}")
    config = load_config(CONFIGS[name], overrides)
    trainer = Trainer(config, folder / "train.jsonl", folder / "train.jsonl", folder / f"exp-{name}",
                      progress=False, device=str(device))  # fmt: skip
    trainer.sampler.set_epoch(0)
    batches = iter(trainer.loader)
    hop_s = config.features.hop_ms / 1000
    times, audio, sizes = [], [], []
    for i in range(args.warmup + args.steps):
        batch = next(batches).to(device)
        benchlib.sync(device)
        started = time.perf_counter()
        trainer.train_step(batch)
        benchlib.sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
            audio.append(float(batch.feat_lens.sum()) * hop_s)
            sizes.append(len(batch))
    speed = sum(audio) / sum(times)
    params = sum(p.numel() for p in trainer.model.parameters())
    return {
        "config": str(CONFIGS[name].relative_to(benchlib.REPO)),
        "parameters": params,
        "max_frames": config.train.max_frames,
        "attention": config.model.attention,
        "batches": len(times),
        "utterances_per_batch": float(np.mean(sizes)),
        "audio_s": sum(audio),
        "seconds": sum(times),
        "audio_s_per_s": speed,
        "epoch_hours": CORPUS_HOURS[name] / speed,
    }


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--configs", default="", help="comma-separated: 100h, 960h (default: both on CUDA, 100h on CPU)"
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps per config")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument(
        "--max-frames",
        type=int,
        default=0,
        help="override train.max_frames (default: the config's on CUDA, 6000 on CPU)",
    )
    p.add_argument("--utterances", type=int, default=0, help="synthetic corpus size (default: enough)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (train.num_workers)")
    args = p.parse_args()
    run = benchlib.start("recipe", args)
    if args.quick:  # a smoke test: one small step (after a warm-up step on CUDA)
        args.steps, args.warmup = 1, int(run.cuda)
        args.max_frames = args.max_frames or (3000 if run.cuda else 1500)
    elif not run.cuda:  # a 2-core CPU takes minutes per full-size step
        args.max_frames = args.max_frames or 6000
    names = [
        n.strip() for n in (args.configs or ("100h,960h" if run.cuda else "100h")).split(",") if n.strip()
    ]
    rng = np.random.default_rng(args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        folder = Path(tmp)
        frames = args.max_frames or max(load_config(CONFIGS[n]).train.max_frames for n in names)
        # Enough utterances of ~12 s for the timed batches (100 frames per second).
        count = args.utterances or int(frames / 1200 * (args.steps + args.warmup) * 1.5) + 4
        write_corpus(folder, count, rng)
        for name in names:
            print(f"{name}: {count} utterances, building the trainer", flush=True)
            results[name] = measure(name, args, run.device, folder)
    table = benchlib.Table(
        f"Training throughput of the LibriSpeech recipe's models, {run.device}"
        + ("" if run.cuda else f", {args.threads} threads"),
        ["config", "parameters (M)", "max_frames", "utts/batch", "audio s", "time s", "audio-s/s",
         "epoch of the corpus, hours on one device"],
    )  # fmt: skip
    for r in results.values():
        table.add(r["config"], r["parameters"] / 1e6, r["max_frames"], r["utterances_per_batch"],
                  r["audio_s"], r["seconds"], r["audio_s_per_s"], r["epoch_hours"])  # fmt: skip
    benchlib.finish(run, [table], [], results)


if __name__ == "__main__":
    main()
