"""Where the time goes: torch.profiler tables of one training step or one batched decode.

Not part of ``run_all.py`` (a profile is a diagnosis, not a measurement). Examples::

    .venv/bin/python benchmarks/profile_ops.py training --scenario librispeech --threads 1
    .venv/bin/python benchmarks/profile_ops.py inference --beam 5
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import benchlib
import numpy as np
import torch
from bench_inference import forced_decode_config, forced_length_model, transcribe, write_waves
from bench_training import build_variants, scenarios
from proposed import prototypes
from torch.profiler import ProfilerActivity, profile

from asr_s2s.features import LogMel
from asr_s2s.text import Vocabulary


def show(name: str, prof: profile, rows: int) -> None:
    """Print the ops with the most self time (time in the op itself, not in ops it calls)."""
    print(f"\n==== {name}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["training", "inference"])
    p.add_argument("--scenario", default="digits", choices=["digits", "librispeech"], help="training's model")
    p.add_argument("--beam", type=int, default=1, help="beam size (inference)")
    p.add_argument("--files", type=int, default=32, help="files decoded (inference)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="bench_training's --quick sizes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.what == "training":
        args.scenarios, args.steps, args.max_frames = args.scenario, 1, 0
        (scenario,) = scenarios(args)
        with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
            variants, _ = build_variants(scenario, Path(tmp), device, seed=0, proposed=True)
            for v in variants:
                v.step(v.warmup)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    v.step(v.batches[0])
                show(f"{v.name}: one step, {len(v.batches[0])} utterances", prof, args.rows)
        return
    config, _ = benchlib.digits_config()
    vocab_size = len(Vocabulary.build([" ".join(benchlib.DIGIT_CHARS)]))
    model = forced_length_model(config, vocab_size, device)
    extractor = LogMel(config.features)
    cfg = forced_decode_config(config, args.beam, config.decode.batch_size)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        lengths = [float(s) for s in benchlib.durations("digits", args.files, rng)]
        paths = write_waves(Path(tmp), lengths, 0, "utt")
        encoders = {"ours": contextlib.nullcontext, "ours + proposed.py": lambda: prototypes(model)}
        for name, context in encoders.items():
            with context():
                transcribe(model, extractor, paths, cfg, device)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    transcribe(model, extractor, paths, cfg, device)
            show(f"{name}: decode {args.files} files, beam {args.beam}", prof, args.rows)


if __name__ == "__main__":
    main()
