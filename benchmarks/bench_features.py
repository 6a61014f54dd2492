"""Log-mel extraction speed: the package's ``LogMel`` against librosa on the same audio and settings.

Speed is audio seconds processed per wall-clock second, one utterance at a time as the dataset
extracts them. Both run in this process, after a check that they compute the same features.
"""

from __future__ import annotations

import benchlib
import numpy as np
import torch

from asr_s2s.config import FeatureConfig
from asr_s2s.features import LogMel

TARGET_X_REALTIME = 500.0


def librosa_logmel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """librosa's log-mel with LogMel's parameters: ``(frames, n_mels)``."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=cfg.n_mels,
        htk=False,
        norm="slaney",
    )
    return np.log(np.maximum(mel, cfg.log_floor)).T


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.utterances, args.repeats = 8, 1
    run = benchlib.start("features", args)
    cfg = FeatureConfig()
    rng = np.random.default_rng(args.seed)
    lengths = rng.uniform(2.0, 15.0, args.utterances)
    waves = [benchlib.synth_wave(s, rng, cfg.sample_rate) for s in lengths]
    audio_s = float(sum(len(w) for w in waves)) / cfg.sample_rate

    extractor = LogMel(cfg).to(run.device)
    tensors = [torch.from_numpy(w) for w in waves]

    def ours() -> None:
        for wave in tensors:
            extractor(wave.to(run.device, non_blocking=True))

    def reference() -> None:
        for wave in waves:
            librosa_logmel(wave, cfg)

    # Same features: compare on the first utterance (values where the power is above the log floor).
    a = extractor(tensors[0].to(run.device)).float().cpu().numpy()
    b = librosa_logmel(waves[0], cfg)
    assert a.shape == b.shape, f"frame counts differ: LogMel {a.shape}, librosa {b.shape}"
    live = b > np.log(cfg.log_floor) + 1
    max_diff = float(np.abs(a - b)[live].max())

    times = {
        "librosa": benchlib.repeat(reference, run.device, args.repeats),
        "LogMel (ours)": benchlib.repeat(ours, run.device, args.repeats),
    }
    if args.threads != 1 and not run.cuda:
        # Short ops in two threads lose much of their time to synchronization when other processes
        # hold the cores; the same work in one thread shows how much.
        torch.set_num_threads(1)
        times["LogMel (ours), 1 thread"] = benchlib.repeat(ours, run.device, args.repeats)
        torch.set_num_threads(args.threads)
    table = benchlib.Table(
        f"Log-mel extraction: {args.utterances} utterances, {audio_s:.0f} s of 16 kHz audio, "
        f"{cfg.n_mels} mels, {run.device}, {args.threads} threads, best of {args.repeats} "
        f"(the two agree to {max_diff:.0e} in log-mel)",
        ["extractor", "time s", "CPU s", "audio-s/s (x real time)", "vs librosa"],
    )
    speed = {name: audio_s / benchlib.best(t).wall for name, t in times.items()}
    for name, t in times.items():
        fastest = benchlib.best(t)
        table.add(name, fastest.wall, fastest.cpu, speed[name], speed[name] / speed["librosa"])
    ours_speed = speed["LogMel (ours)"]
    targets = [benchlib.Target("LogMel x real time", ours_speed, TARGET_X_REALTIME)]
    benchlib.finish(
        run,
        [table],
        targets,
        {
            "audio_seconds": audio_s,
            "times_s": times,
            "audio_s_per_s": speed,
            "ratio_vs_librosa": ours_speed / speed["librosa"],
            "max_abs_logmel_diff": max_diff,
        },
    )


if __name__ == "__main__":
    main()
