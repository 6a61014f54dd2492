"""Peak memory of a training process against corpus size: 1k, 10k and 100k utterances.

Each measurement is a fresh process that builds a ``Trainer`` (manifests, vocabulary, datasets,
normalization statistics, sampler, loader, model) on a synthetic LibriSpeech-like manifest and runs
a few training steps, as ``asr-s2s train`` would. Only the durations matter until a batch is read,
so every line points at one of a few generated WAV files (2-16 s utterances, LibriSpeech's length
distribution; each line reads the first ``duration`` seconds of its file). Reported: the peak RSS of
the training process, the largest peak of its DataLoader workers, and the time to build the data.

Modes: ``on the fly`` (the default for corpora over ``train.cache_max_hours``: features computed in
the workers), ``cached`` (``train.cache_features=true``, the smallest corpus only: every utterance is
decoded), and ``list of Utterance`` (only the manifest read as a Python list, the way training read
it before ``LazyManifest``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
import soundfile as sf

FILES = 4  # distinct WAV files the manifest lines point at
FILE_SECONDS = 16.5  # longer than the longest utterance


def write_corpus(folder: Path, count: int, seed: int) -> tuple[Path, Path]:
    """A training manifest of ``count`` lines and an 8-line dev manifest, over :data:`FILES` files."""
    rng = np.random.default_rng(seed)
    audio = []
    for i in range(FILES):
        path = folder / f"audio{i}.wav"
        sf.write(path, benchlib.synth_wave(FILE_SECONDS, rng), benchlib.SAMPLE_RATE)
        audio.append(path.name)
    durations = benchlib.durations("librispeech", count, rng)
    texts = [benchlib.synth_text(2.0, benchlib.LIBRISPEECH_CHARS, rng) for _ in range(50)]
    train = folder / "train.jsonl"
    with open(train, "w", encoding="utf-8") as handle:
        for i, d in enumerate(durations):
            # The text's length follows the duration (15 characters per second), from a few stems.
            text = (texts[i % 50] + " ") * int(d / 2.0 + 1)
            line = {"audio_filepath": audio[i % FILES], "duration": round(float(d), 4), "id": f"u{i:06d}"}
            handle.write(json.dumps({**line, "text": text.strip()}) + "\n")
    dev = folder / "dev.jsonl"
    with open(dev, "w", encoding="utf-8") as handle:
        for i in range(8):
            line = {"audio_filepath": audio[i % FILES], "duration": 2.0, "id": f"d{i}", "text": texts[i]}
            handle.write(json.dumps(line) + "\n")
    return train, dev


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far (of this process, or of its largest finished child), MiB."""
    return resource.getrusage(who).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now, MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    """One measurement (run in its own process): prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        train, dev = write_corpus(Path(tmp), args.count, args.seed)
        before = current_rss_mb()
        started = time.perf_counter()
        if args.mode == "list":
            from asr_s2s.manifest import read_manifest

            utts = read_manifest(train)
            result = {
                "utterances": len(utts),
                "build_s": time.perf_counter() - started,
                "rss_after_build_mb": current_rss_mb(),
            }
        else:
            from asr_s2s.config import load_config
            from asr_s2s.train import Trainer

            overrides = [
                # A small network: the model's memory does not depend on the corpus, the data path's does.
                "model.encoder_hidden=64",
                "model.encoder_layers=1",
                "model.decoder_hidden=64",
                "model.decoder_layers=1",
                "model.attention_dim=32",
                "train.epochs=1",
                f"train.max_steps={args.steps}",
                "train.max_frames=6000",
                "train.stats_utterances=200",
                "train.num_workers=2",
                "train.average_best=0",
                "augment.speed_prob=0",  # the speed perturbation would resample; memory is the point
                f"train.cache_features={'true' if args.mode == 'cached' else 'false'}",
            ]
            config = load_config(benchlib.REPO / "recipes/librispeech/conf/train_100h.yaml", overrides)
            trainer = Trainer(config, train, dev, Path(tmp) / "exp", progress=False, device="cpu")
            built = time.perf_counter() - started
            after_build = current_rss_mb()
            trainer.fit()
            result = {
                "utterances": len(trainer.train_set),
                "hours": float(trainer.train_set.utterances.durations.sum()) / 3600,
                "build_s": built,
                "rss_after_build_mb": after_build,
                "steps": trainer.step,
            }
        result.update(
            mode=args.mode,
            count=args.count,
            rss_start_mb=before,
            peak_rss_mb=rss_mb(),
            worker_peak_rss_mb=rss_mb(resource.RUSAGE_CHILDREN),
        )
    print(json.dumps(result))


def measure(count: int, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", "--count", str(count), "--mode", mode]
    command += ["--steps", str(args.steps), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(benchlib.REPO)}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} with {count} utterances failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    print(f"{mode:>8}  {count:>7} utterances: peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    return result


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="lazy", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="", help="comma-separated corpus sizes (default 1000,10000,100000)")
    p.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    p.add_argument("--timeout", type=int, default=600, help="seconds per measurement")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    run = benchlib.start("memory", args)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1000, 10000, 100000]
    if args.quick:
        sizes, args.steps = [200, 2000], 1
    results = [measure(n, "lazy", args) for n in sizes]
    results.append(measure(sizes[0], "cached", args))
    results += [measure(n, "list", args) for n in sizes]
    table = benchlib.Table(
        "Peak RSS of one training process (MB) against corpus size, synthetic LibriSpeech-length "
        f"utterances, {args.steps} steps, 2 DataLoader workers",
        ["mode", "utterances", "hours", "build s", "RSS after build", "peak RSS", "largest worker peak"],
    )
    for r in results:
        if r["mode"] == "list":
            continue
        table.add(
            "on the fly" if r["mode"] == "lazy" else "cached",
            r["utterances"],
            r["hours"],
            r["build_s"],
            r["rss_after_build_mb"],
            r["peak_rss_mb"],
            r["worker_peak_rss_mb"],
        )
    lists = benchlib.Table(
        "The manifest alone: a list of Utterance objects (before LazyManifest)",
        ["utterances", "read s", "RSS growth MB", "bytes per utterance"],
    )
    for r in results:
        if r["mode"] == "list":
            growth = r["rss_after_build_mb"] - r["rss_start_mb"]
            lists.add(r["utterances"], r["build_s"], growth, growth * 2**20 / r["utterances"])
    benchlib.finish(run, [table, lists], [], {"results": results})


if __name__ == "__main__":
    main()
