"""Where the time goes: torch.profiler tables of one training step or one batched decode, and the
cost per time step of a packed against a padded ``nn.LSTM`` as sequences grow.

Not part of ``run_all.py`` (a profile is a diagnosis, not a measurement). Examples::

    .venv/bin/python benchmarks/profile_ops.py training --scenario librispeech --threads 1
    .venv/bin/python benchmarks/profile_ops.py inference --beam 5
    .venv/bin/python benchmarks/profile_ops.py lstm --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import benchlib
import numpy as np
import torch
from bench_inference import forced_transcriber, write_waves
from bench_training import build_variants, scenarios
from torch.nn.utils.rnn import pack_padded_sequence
from torch.profiler import ProfilerActivity, profile


def show(name: str, prof: profile, rows: int) -> None:
    """Print the ops with the most self time (time in the op itself, not in ops it calls)."""
    print(f"\n==== {name}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def packed_scaling(rows: int) -> None:
    """CPU time per step of forward + backward through a one-layer LSTM, packed and padded.

    The padded input runs oneDNN's fused kernels; the packed one ATen's step loop, whose backward
    materializes a zero-filled gradient of the whole input projection at every step
    (``slice_backward``), so its cost per step grows with the sequence length. (This is ``nn.LSTM``
    itself: the package's encoder avoids the packed path on CPU, see ``asr_s2s.lstm``.)
    """
    lstm = torch.nn.LSTM(64, 128)
    for steps in (100, 200, 400, 800):
        x = torch.randn(steps, 8, 64)
        lengths = torch.tensor([steps - 3 * i for i in range(8)])  # unequal, as in any real batch
        for mode in ("padded", "packed"):

            def run(mode: str = mode, x: torch.Tensor = x, lengths: torch.Tensor = lengths) -> None:
                inputs = x if mode == "padded" else pack_padded_sequence(x, lengths)
                out, _ = lstm(inputs)
                (out if mode == "padded" else out.data).sum().backward()

            cpu = benchlib.best(benchlib.repeat(run, torch.device("cpu"), 2)).cpu
            print(
                f"{steps:4d} steps, {mode:6s}: {cpu * 1e3:7.1f} ms CPU, {cpu / steps * 1e6:5.0f} us per step"
            )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()  # the packed one, longest
    show("packed, 800 steps: forward + backward", prof, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["training", "inference", "lstm"])
    p.add_argument("--scenario", default="digits", choices=["digits", "librispeech"], help="training's model")
    p.add_argument("--beam", type=int, default=1, help="beam size (inference)")
    p.add_argument("--files", type=int, default=32, help="files decoded (inference)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="bench_training's --quick sizes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.what == "lstm":
        packed_scaling(args.rows)
        return
    if args.what == "training":
        args.scenarios, args.steps, args.max_frames = args.scenario, 1, 0
        (scenario,) = scenarios(args)
        with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
            variants, _ = build_variants(scenario, Path(tmp), device, seed=0)
            for v in variants:
                v.step(v.warmup)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    v.step(v.batches[0])
                show(f"{v.name}: one step, {len(v.batches[0])} utterances", prof, args.rows)
        return
    config, _ = benchlib.digits_config()
    transcriber = forced_transcriber(config, device)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        lengths = [float(s) for s in benchlib.durations("digits", args.files, rng)]
        paths = write_waves(Path(tmp), lengths, 0, "utt")

        def run() -> None:
            list(transcriber.iter_transcriptions(paths, beam_size=args.beam))

        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        show(f"transcribe {args.files} files, beam {args.beam}", prof, args.rows)


if __name__ == "__main__":
    main()
