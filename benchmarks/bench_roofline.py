"""Roofline: the model's FLOPs per audio second, the GFLOP/s achieved in training and inference, and
their fraction of the float32 matrix-multiply peak measured in the same run.

FLOPs are counted analytically, multiply-adds as two: per LSTM step, direction and layer
``2 * 4 * (input + hidden) * hidden``; the CTC head and the output layer ``2 * in * out`` per frame
or character; backward twice the forward, so a training step is three forwards. Gate nonlinearities,
the bridge (once per utterance), losses and the optimizer are left out: they are a few percent at
most. Only useful work counts (real frames and characters, not padding), so padding shows up as
lost efficiency. The decoder runs at :data:`benchlib.CHARS_PER_SECOND` characters per audio second.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import benchlib
import numpy as np
import torch
from bench_inference import forced_decode_config, forced_length_model
from bench_training import Scenario, build_variants, measure

from asr_s2s.config import Config
from asr_s2s.data import pad_features
from asr_s2s.decoding import greedy_search
from asr_s2s.features import LogMel
from asr_s2s.text import Vocabulary

TARGET_FRACTION = 0.40


def lstm_flops(inputs: int, hidden: int) -> float:
    """One step of one LSTM layer in one direction."""
    return 2.0 * 4 * (inputs + hidden) * hidden


def flops_per_audio_second(config: Config, vocab_size: int, ctc: bool) -> dict[str, float]:
    """Forward FLOPs per second of audio, by part."""
    m, f = config.model, config.features
    enc_frames = 1000.0 / f.hop_ms / m.stack_frames
    dirs = 2 if m.bidirectional else 1
    encoder = 0.0
    for layer in range(m.encoder_layers):
        inputs = f.n_mels * m.stack_frames if layer == 0 else m.encoder_hidden * dirs
        encoder += dirs * lstm_flops(inputs, m.encoder_hidden) * enc_frames
    decoder = sum(
        lstm_flops(m.embedding_dim if layer == 0 else m.decoder_hidden, m.decoder_hidden)
        for layer in range(m.decoder_layers)
    )
    parts = {
        "encoder LSTM": encoder,
        "CTC head": 2.0 * m.encoder_hidden * dirs * vocab_size * enc_frames if ctc else 0.0,
        "decoder LSTM": decoder * benchlib.CHARS_PER_SECOND,
        "output layer": 2.0 * m.decoder_hidden * vocab_size * benchlib.CHARS_PER_SECOND,
    }
    parts["forward"] = sum(parts.values())
    return parts


@dataclass
class Measured:
    """Some timed work and its FLOPs."""

    what: str
    flops: float
    time: benchlib.Timing
    audio_s: float | None = None

    @property
    def gflops(self) -> float:
        """Per wall-clock second."""
        return self.flops / self.time.wall / 1e9

    @property
    def gflops_cpu(self) -> float:
        """Per CPU second of this process: what it achieved while it had the cores."""
        return self.flops / self.time.cpu / 1e9


def matmul(
    m: int, k: int, n: int, device: torch.device, dtype: torch.dtype, repeats: int, what: str = ""
) -> Measured:
    """The fastest of ``repeats`` products ``(m, k) @ (k, n)``."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    fastest = benchlib.best(benchlib.repeat(lambda: torch.matmul(a, b), device, repeats))
    return Measured(f"matmul {m}x{k}x{n}{what}", 2.0 * m * k * n, fastest)


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1, help="timed training batches")
    p.add_argument("--utterances", type=int, default=120, help="LibriSpeech-like utterances to batch")
    p.add_argument("--decode-batch", type=int, default=16, help="LibriSpeech-like utterances decoded at once")
    args = p.parse_args()
    quick = args.quick
    if quick:
        args.steps, args.utterances, args.decode_batch = 1, 6, 4
    run = benchlib.start("roofline", args)
    config, source = benchlib.librispeech_config()
    config.train.epochs = 1
    vocab = Vocabulary.build([" ".join(benchlib.LIBRISPEECH_CHARS)])
    flops = flops_per_audio_second(config, len(vocab), ctc=config.train.ctc_weight > 0)
    train_flops = 3 * flops["forward"]
    infer_flops = flops["forward"] - flops["CTC head"]  # decoding never runs the CTC head

    count = benchlib.Table(
        f"FLOPs per audio second, LibriSpeech-size model ({source})", ["part", "forward GFLOP per audio-s"]
    )
    for part, value in flops.items():
        count.add(part, value / 1e9)
    count.add("training step (3x forward)", train_flops / 1e9)

    # The peak, in the precision the model runs in: the best of a few large square products, measured
    # before and again after the model runs, so that a busy spell on a shared machine does not set it.
    dtype = torch.bfloat16 if run.cuda else torch.float32
    sizes = [512, 1024] if quick else [512, 1024, 2048, 3072]

    def squares() -> list[Measured]:
        return [matmul(n, n, n, run.device, dtype, 3 if quick else 5) for n in sizes]

    squares_before = squares()
    # The LSTM's own products: per step and direction (batch, H) @ (H, 4H) for the recurrence; once per
    # layer (batch * time, input) @ (input, 4H) for the inputs.
    batch, hidden, frames = 12, config.model.encoder_hidden, 400
    lstm_shapes = [
        matmul(batch, hidden, 4 * hidden, run.device, dtype, 20, " (LSTM recurrence, batch 12)"),
        matmul(batch * frames, 2 * hidden, 4 * hidden, run.device, dtype, 3, " (LSTM input projection)"),
    ]

    # Training, as bench_training measures it, on LibriSpeech-like batches (lengths shrunk for --quick).
    scenario = Scenario(
        "librispeech", config, source, "librispeech", benchlib.LIBRISPEECH_CHARS, args.utterances, args.steps
    )
    if quick:
        scenario.scale, config.train.max_frames = 0.25, 1000
    with tempfile.TemporaryDirectory(prefix="bench-roofline-") as tmp:
        variants, info = build_variants(scenario, Path(tmp), run.device, args.seed)
        variants = variants[1:]  # ours: the tutorial reference is bench_training's business
        measure(variants, run.device)
    work = [Measured(f"training: {v.name}", train_flops * v.audio_s, v.time, v.audio_s) for v in variants]

    # Inference: batched greedy search on LibriSpeech-like features, forced to transcript length.
    rng = np.random.default_rng(args.seed)
    extractor = LogMel(config.features)
    seconds = (0.25 if quick else 1.0) * benchlib.durations("librispeech", args.decode_batch, rng)
    feats, lengths = pad_features([extractor(torch.from_numpy(benchlib.synth_wave(s, rng))) for s in seconds])
    feats, lengths = feats.to(run.device), lengths.to(run.device)
    model = forced_length_model(config, vocab, run.device)
    cfg = forced_decode_config(config, beam_size=1, batch_size=len(seconds))
    audio_s = float(lengths.sum()) * config.features.hop_ms / 1000

    def decode() -> None:
        with benchlib.autocast(run.device):
            greedy_search(model, feats, lengths, cfg)

    fastest = benchlib.best(benchlib.repeat(decode, run.device, 2))
    work.append(
        Measured(f"greedy decoding, batch {len(seconds)}: ours", infer_flops * audio_s, fastest, audio_s)
    )

    squares_best = [max(pair, key=lambda m: m.gflops) for pair in zip(squares_before, squares())]
    peak = max(m.gflops for m in squares_best)
    # A process's CPU clock counts its other threads' time in scheduler ticks, too coarsely for the
    # millisecond-long 512-cubed product: the CPU-time peak comes from the larger ones.
    peak_cpu = max(m.gflops_cpu for m, n in zip(squares_best, sizes) if n >= 1024)
    table = benchlib.Table(
        f"Achieved {str(dtype).removeprefix('torch.')} throughput, {run.device}, {args.threads} threads; "
        f"peak = best square matmul (before or after the model runs)",
        ["what", "audio-s/s", "GFLOP/s", "% of peak", "GFLOP per CPU-s", "% of peak (CPU s)"],
    )
    for m in [*squares_best, *lstm_shapes, *work]:
        speed = m.audio_s / m.time.wall if m.audio_s else ""
        table.add(
            m.what,
            speed,
            m.gflops,
            100 * m.gflops / peak,
            m.gflops_cpu,
            100 * m.gflops_cpu / peak_cpu,
        )
    targets = [
        benchlib.Target(f"{m.what}: fraction of matmul peak", m.gflops / peak, TARGET_FRACTION)
        for m in work
        if m.what.startswith("training")
    ]
    benchlib.finish(
        run,
        [count, table],
        targets,
        {
            "config_source": source,
            "flops_per_audio_s": flops,
            "training_flops_per_audio_s": train_flops,
            "inference_flops_per_audio_s": infer_flops,
            "measured": [
                {"what": m.what, "flops": m.flops, "time": m.time, "audio_s": m.audio_s, "gflops": m.gflops}
                for m in [*squares_best, *lstm_shapes, *work]
            ],
            "peak_gflops": peak,
            "peak_gflops_per_cpu_s": peak_cpu,
            "training_info": info,
        },
    )


if __name__ == "__main__":
    main()
